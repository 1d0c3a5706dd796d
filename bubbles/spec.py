"""BubbleSpec: every choice that shapes a bubbles mask, frozen and validated.

A spec plus a seed decides everything an observer sees through the masks: image shape,
aperture size (true standard deviation in pixels), number of bubbles, spatial-frequency
bands, aperture shape, polarity, overlap rule, search region and background. It
serialises to JSON with a format version so that a session's sidecar file can rebuild
every mask it showed.

References
----------
Gosselin, F. & Schyns, P. G. (2001). Bubbles: a technique to reveal the use of
information in recognition tasks. Vision Research 41, 2261-2271.
:doi:`10.1016/S0042-6989(01)00097-9`
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["BubbleSpec", "fwhm_to_sigma", "sigma_to_fwhm", "SPEC_FORMAT_VERSION"]

SPEC_FORMAT_VERSION = 1
_FWHM_PER_SIGMA = math.sqrt(8.0 * math.log(2.0))
APERTURES = ("gaussian", "disk", "square")
POLARITIES = ("reveal", "occlude")
OVERLAPS = ("clip", "max")


def sigma_to_fwhm(sigma):
    """Full width at half maximum of a Gaussian of standard deviation ``sigma``.

    ``FWHM = sigma * sqrt(8 ln 2)``; sigma 20 px gives 47.0964 px.

    Examples
    --------
    >>> round(sigma_to_fwhm(20.0), 4)
    47.0964
    """
    return sigma * _FWHM_PER_SIGMA


def fwhm_to_sigma(fwhm):
    """Standard deviation of a Gaussian whose full width at half maximum is ``fwhm``.

    Examples
    --------
    >>> round(fwhm_to_sigma(47.0964), 3)
    20.0
    """
    return fwhm / _FWHM_PER_SIGMA


def _choice_error(name, value, allowed):
    return ValueError(f"'{name}' must be one of {list(allowed)}. {value!r} was provided.")


def _as_tuple(value, name, n_bands, kind):
    """Normalise a scalar-or-per-band parameter to a tuple of length n_bands."""
    if np.ndim(value) == 0:
        return None
    values = tuple(kind(v) for v in np.asarray(value).ravel())
    if len(values) != n_bands:
        raise ValueError(
            f"{name} must be a scalar or have one value per band ({n_bands}), "
            f"got {len(values)} values")
    return values


@dataclass(frozen=True, eq=False)
class BubbleSpec:
    """Every choice that shapes a bubbles mask.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(H, W)`` in pixels.
    sigma : float or sequence of float
        Aperture size: the true standard deviation of the Gaussian in pixels
        (``exp(-r**2 / (2 sigma**2))``; FWHM = sigma * sqrt(8 ln 2)). With ``bands``, a
        scalar is the finest band's sigma and doubles per band (one octave); a sequence
        gives one sigma per band, finest first. For ``aperture='disk'`` the radius and for
        ``'square'`` the half side is FWHM / 2, so all three shapes have the same width
        at half height.
    n_bubbles : int or sequence of int
        Bubbles per trial. With ``bands``, a scalar is the total, split across bands in
        proportion to 1 / sigma**2 so that each band reveals a similar area (Gosselin &
        Schyns 2001); a sequence gives the count per band.
    bands : int or None
        None for a single-scale mask; otherwise the number of one-octave
        spatial-frequency bands of a Laplacian pyramid (plus a low-pass residual that is
        always shown). 5 is the 2001 design.
    aperture : {'gaussian', 'disk', 'square'}
    polarity : {'reveal', 'occlude'}
        'reveal' shows the image inside the bubbles; 'occlude' hides it there.
    overlap : {'clip', 'max'}
        How overlapping bubbles combine: 'clip' sums then clips to 1 (default, the
        common lab choice); 'max' takes the largest aperture value.
    search_region : ndarray of bool, shape (H, W), optional
        Bubble centres are drawn only where it is True.
    background : 'mean', 'noise' or float
        What replaces hidden image parts: the image's mean grey, Gaussian noise around
        it, or a fixed grey level in [0, 1].

    Examples
    --------
    >>> spec = BubbleSpec(shape=(256, 256), sigma=10.0, n_bubbles=20)
    >>> spec.n_bands, spec.sigmas, spec.n_per_band
    (1, (10.0,), (20,))
    >>> BubbleSpec.from_json(spec.to_json()) == spec
    True
    """

    shape: tuple = (256, 256)
    sigma: float | tuple = 10.0
    n_bubbles: int | tuple = 20
    bands: int | None = None
    aperture: str = "gaussian"
    polarity: str = "reveal"
    overlap: str = "clip"
    search_region: np.ndarray | None = field(default=None, repr=False)
    background: str | float = "mean"

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        shape = tuple(int(s) for s in np.asarray(self.shape).ravel())
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"shape must be (H, W) with H, W >= 1 pixels, got {self.shape!r}")
        set_("shape", shape)
        if self.bands is not None:
            if isinstance(self.bands, bool) or int(self.bands) != self.bands or self.bands < 1:
                raise ValueError(f"bands must be None or an integer >= 1, got {self.bands!r}")
            set_("bands", int(self.bands))
        n_bands = self.n_bands

        sigmas = _as_tuple(self.sigma, "sigma", n_bands, float)
        check = sigmas if sigmas is not None else (float(self.sigma),)
        for s in check:
            if not np.isfinite(s) or s <= 0:
                raise ValueError(f"sigma must be > 0 pixels, got {s:g}")
        set_("sigma", sigmas if sigmas is not None else float(self.sigma))

        counts = _as_tuple(self.n_bubbles, "n_bubbles", n_bands, float)
        check = counts if counts is not None else (float(self.n_bubbles),)
        for n in check:
            if not np.isfinite(n) or n != int(n) or n < 0:
                raise ValueError(f"n_bubbles must be a whole number >= 0, got {n!r}")
        set_("n_bubbles", tuple(int(n) for n in counts) if counts is not None
             else int(self.n_bubbles))

        if self.aperture not in APERTURES:
            raise _choice_error("aperture", self.aperture, APERTURES)
        if self.polarity not in POLARITIES:
            raise _choice_error("polarity", self.polarity, POLARITIES)
        if self.overlap not in OVERLAPS:
            raise _choice_error("overlap", self.overlap, OVERLAPS)

        if self.search_region is not None:
            region = np.asarray(self.search_region)
            if region.shape != shape:
                raise ValueError(f"search_region must have the image shape {shape}, "
                                 f"got {region.shape}")
            region = region.astype(bool)
            if region.sum() < max(self.n_per_band):
                raise ValueError(
                    f"search_region has {int(region.sum())} pixels, fewer than the "
                    f"{max(self.n_per_band)} bubbles a trial needs")
            region.setflags(write=False)
            set_("search_region", region)

        bg = self.background
        if isinstance(bg, str):
            if bg not in ("mean", "noise"):
                raise ValueError("background must be 'mean', 'noise' or a grey level in "
                                 f"[0, 1], got {bg!r}")
        elif not (np.isscalar(bg) and 0.0 <= float(bg) <= 1.0):
            raise ValueError(f"background must be 'mean', 'noise' or a grey level in "
                             f"[0, 1], got {bg!r}")
        else:
            set_("background", float(bg))

    # -- derived values ------------------------------------------------------------
    @property
    def n_bands(self):
        """Number of masked bands (1 for a single-scale spec)."""
        return 1 if self.bands is None else self.bands

    @property
    def multiscale(self):
        """True when the spec masks several spatial-frequency bands."""
        return self.bands is not None

    @property
    def sigmas(self):
        """Aperture sigma in pixels per band, finest first."""
        if isinstance(self.sigma, tuple):
            return self.sigma
        return tuple(self.sigma * 2.0 ** k for k in range(self.n_bands))

    @property
    def fwhms(self):
        """Aperture FWHM in pixels per band."""
        return tuple(sigma_to_fwhm(s) for s in self.sigmas)

    @property
    def n_per_band(self):
        """Bubbles per trial in each band.

        A scalar total is split in proportion to 1 / sigma**2 by largest remainder, so
        the counts always add up to ``n_bubbles``.
        """
        if isinstance(self.n_bubbles, tuple):
            return self.n_bubbles
        if self.n_bands == 1:
            return (self.n_bubbles,)
        weights = np.array([1.0 / s ** 2 for s in self.sigmas])
        share = self.n_bubbles * weights / weights.sum()
        counts = np.floor(share).astype(int)
        remainder = self.n_bubbles - counts.sum()
        counts[np.argsort(-(share - counts), kind="stable")[:remainder]] += 1
        return tuple(int(c) for c in counts)

    @functools.cached_property
    def allowed_pixels(self):
        """Flat indices of the pixels a centre may take (None: every pixel)."""
        if self.search_region is None:
            return None
        return np.flatnonzero(self.search_region)

    @property
    def total_bubbles(self):
        """Total bubbles per trial over all bands."""
        return int(sum(self.n_per_band))

    def replace(self, **changes):
        """Return a validated copy with some fields changed.

        Examples
        --------
        >>> BubbleSpec(n_bubbles=20).replace(n_bubbles=35).n_bubbles
        35
        """
        return dataclasses.replace(self, **changes)

    # -- comparison and serialisation ----------------------------------------------
    def __eq__(self, other):
        if not isinstance(other, BubbleSpec):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(self.to_json())

    def to_dict(self):
        """JSON-ready dictionary with a format tag and version."""
        region = None
        if self.search_region is not None:
            packed = np.packbits(self.search_region.ravel())
            region = base64.b64encode(packed.tobytes()).decode("ascii")
        return {
            "format": "bubbles.BubbleSpec",
            "version": SPEC_FORMAT_VERSION,
            "shape": list(self.shape),
            "sigma": list(self.sigma) if isinstance(self.sigma, tuple) else self.sigma,
            "n_bubbles": (list(self.n_bubbles) if isinstance(self.n_bubbles, tuple)
                          else self.n_bubbles),
            "bands": self.bands,
            "aperture": self.aperture,
            "polarity": self.polarity,
            "overlap": self.overlap,
            "search_region": region,
            "background": self.background,
        }

    @classmethod
    def from_dict(cls, d):
        """Rebuild a spec from :meth:`to_dict` output (checks format and version)."""
        if not isinstance(d, dict) or d.get("format") != "bubbles.BubbleSpec":
            raise ValueError("not a BubbleSpec dictionary: expected format "
                             "'bubbles.BubbleSpec'")
        version = d.get("version")
        if version != SPEC_FORMAT_VERSION:
            raise ValueError(f"BubbleSpec format version {version!r} is not supported "
                             f"(this toolkit reads version {SPEC_FORMAT_VERSION})")
        keys = ("shape", "sigma", "n_bubbles", "bands", "aperture", "polarity", "overlap",
                "background")
        missing = [k for k in keys if k not in d]
        if missing:
            raise ValueError(f"BubbleSpec dictionary is missing {missing}")
        kwargs = {k: d[k] for k in keys}
        if d.get("search_region") is not None:
            h, w = d["shape"]
            bits = np.frombuffer(base64.b64decode(d["search_region"]), dtype=np.uint8)
            kwargs["search_region"] = np.unpackbits(bits)[: h * w].reshape(h, w).astype(bool)
        return cls(**kwargs)

    def to_json(self):
        """Serialise to a JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        """Rebuild a spec from :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))
