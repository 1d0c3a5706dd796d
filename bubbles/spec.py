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
import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["BubbleSpec", "fwhm_to_sigma", "sigma_to_fwhm", "max_bands", "image_shape",
           "SPEC_FORMAT_VERSION"]

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


def _is_number(v):
    """A real number that is not a bool (numpy scalars included)."""
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _whole(v):
    """``v`` as an int when it is a finite whole number (not a bool), else None."""
    if not _is_number(v):
        return None
    if isinstance(v, numbers.Integral):
        return int(v)
    return int(v) if math.isfinite(v) and v == int(v) else None


def _values(value, name, n_bands, what):
    """Normalise a scalar-or-per-band number to a tuple of Python numbers (or None).

    Returns None for a scalar; refuses strings, None and other non-numbers by name.
    """
    if isinstance(value, (str, bytes)) or value is None:
        raise ValueError(f"{name} must be {what} (a number, or one per band), got {value!r}")
    if np.ndim(value) == 0:
        if not _is_number(value):
            raise ValueError(f"{name} must be {what} (a number, or one per band), "
                             f"got {value!r}")
        return None
    items = list(np.asarray(value, dtype=object).ravel())
    if len(items) != n_bands:
        raise ValueError(
            f"{name} must be a scalar or have one value per band ({n_bands}), "
            f"got {len(items)} values")
    for v in items:
        if not _is_number(v):
            raise ValueError(f"{name} must be {what} (a number, or one per band), "
                             f"got {value!r}")
    return tuple(items)


def image_shape(value, name="shape"):
    """``value`` as an image shape ``(H, W)`` of two whole numbers >= 1, or ValueError.

    Fractions are refused, not truncated.

    Examples
    --------
    >>> image_shape([64, 80.0])
    (64, 80)
    """
    message = f"{name} must be (H, W), two whole numbers >= 1 pixels, got {value!r}"
    if isinstance(value, (str, bytes)) or np.ndim(value) != 1:
        raise ValueError(message)
    shape = tuple(_whole(s) for s in value)
    if len(shape) != 2 or None in shape or min(shape) < 1:
        raise ValueError(message)
    return shape


def _region(value, shape):
    """A search region as a bool array: booleans, or numbers that are all 0 or 1."""
    region = np.asarray(value)
    if region.shape != shape:
        raise ValueError(f"search_region must have the image shape {shape}, "
                         f"got {region.shape}")
    if region.dtype == bool:
        return region.copy()
    if not np.issubdtype(region.dtype, np.number):
        raise ValueError(f"search_region must hold booleans or the numbers 0 and 1, got "
                         f"dtype {region.dtype}")
    bad = ~np.isin(region, (0, 1))
    if bad.any():
        values = np.unique(region[bad])[:5].tolist()
        raise ValueError(f"search_region must hold booleans or the numbers 0 and 1 (True "
                         f"where centres may fall), got {int(bad.sum())} other values, "
                         f"e.g. {values}")
    return region.astype(bool)


def max_bands(shape):
    """Most one-octave bands an image of ``shape`` holds: ``floor(log2(min(H, W)))``.

    Band ``k`` of :func:`bubbles.laplacian_bands` keeps the detail between blurs of
    ``2**(k-1)`` and ``2**k`` pixels; past the image's smaller side nothing is left.

    Examples
    --------
    >>> max_bands((64, 64)), max_bands((256, 200))
    (6, 7)
    """
    return int(math.floor(math.log2(min(shape))))


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
        Schyns 2001); a sequence gives the count per band. A trial's centres are distinct
        pixels, so a band holds at most H * W bubbles (or the search region's pixels).
    bands : int or None
        None for a single-scale mask; otherwise the number of one-octave
        spatial-frequency bands of a Laplacian pyramid (plus a low-pass residual that is
        always shown). 5 is the 2001 design. An image holds ``floor(log2(min(H, W)))``
        one-octave bands (:func:`max_bands`); more gives a warning.
    aperture : {'gaussian', 'disk', 'square'}
    polarity : {'reveal', 'occlude'}
        'reveal' shows the image inside the bubbles; 'occlude' hides it there.
    overlap : {'clip', 'max'}
        How overlapping bubbles combine: 'clip' sums then clips to 1 (default, the
        common lab choice); 'max' takes the largest aperture value.
    search_region : ndarray of bool (or of the numbers 0 and 1), shape (H, W), optional
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
        for name in ("sigma", "n_bubbles", "bands", "background"):   # 0-d arrays: scalars
            value = getattr(self, name)
            if isinstance(value, np.ndarray) and value.ndim == 0:
                set_(name, value.item())
        shape = image_shape(self.shape)
        set_("shape", shape)
        if self.bands is not None:
            bands = _whole(self.bands)
            if bands is None or bands < 1:
                raise ValueError(f"bands must be None or an integer >= 1, got {self.bands!r}")
            set_("bands", bands)
        n_bands = self.n_bands

        sigmas = _values(self.sigma, "sigma", n_bands, "> 0 pixels")
        for s in (sigmas if sigmas is not None else (self.sigma,)):
            if not math.isfinite(s) or s <= 0:
                raise ValueError(f"sigma must be > 0 pixels, got {float(s):g}")
        set_("sigma", tuple(float(s) for s in sigmas) if sigmas is not None
             else float(self.sigma))

        counts = _values(self.n_bubbles, "n_bubbles", n_bands, "a whole number >= 0")
        for n in (counts if counts is not None else (self.n_bubbles,)):
            if _whole(n) is None or n < 0:
                raise ValueError(f"n_bubbles must be a whole number >= 0, got {n!r}")
        set_("n_bubbles", tuple(_whole(n) for n in counts) if counts is not None
             else _whole(self.n_bubbles))

        if self.aperture not in APERTURES:
            raise _choice_error("aperture", self.aperture, APERTURES)
        if self.polarity not in POLARITIES:
            raise _choice_error("polarity", self.polarity, POLARITIES)
        if self.overlap not in OVERLAPS:
            raise _choice_error("overlap", self.overlap, OVERLAPS)

        most = max(self.n_per_band)
        if self.search_region is not None:
            region = _region(self.search_region, shape)
            if region.sum() < most:
                raise ValueError(
                    f"search_region has {int(region.sum())} pixels, fewer than the "
                    f"{most} bubbles a trial needs in one band (n_bubbles={self.n_bubbles!r}): "
                    f"a trial draws distinct centre pixels")
            region.setflags(write=False)
            set_("search_region", region)
        elif most > shape[0] * shape[1]:
            raise ValueError(
                f"n_bubbles={self.n_bubbles!r} needs {most} distinct centre pixels in one "
                f"band, more than the {shape[0] * shape[1]} pixels of a {shape[0]} x "
                f"{shape[1]} image")

        bg = self.background
        bg_msg = f"background must be 'mean', 'noise' or a grey level in [0, 1], got {bg!r}"
        if isinstance(bg, str):
            if bg not in ("mean", "noise"):
                raise ValueError(bg_msg)
        elif not (_is_number(bg) and 0.0 <= float(bg) <= 1.0):
            raise ValueError(bg_msg)
        else:
            set_("background", float(bg))

        if self.bands is not None and self.bands > max_bands(shape):
            holds = max_bands(shape)
            warnings.warn(
                f"bands={self.bands} is more than a {shape[0]} x {shape[1]} image holds: "
                f"one-octave bands stop at {holds} (log2 of its smaller side), so bands "
                f"{holds + 1} to {self.bands} carry almost no image content (their "
                f"bubbles have sigma up to {self.sigmas[-1]:g} px); use bands <= {holds}",
                UserWarning, stacklevel=3)

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
            shape = image_shape(d["shape"])
            try:
                bits = np.frombuffer(base64.b64decode(d["search_region"], validate=True),
                                     dtype=np.uint8)
            except (TypeError, ValueError):
                raise ValueError("search_region must be the base64 text of packed bits "
                                 "that to_dict writes") from None
            if bits.size * 8 < shape[0] * shape[1]:
                raise ValueError(f"search_region holds {bits.size * 8} bits, fewer than the "
                                 f"{shape[0] * shape[1]} pixels of shape {shape}")
            kwargs["search_region"] = np.unpackbits(bits)[: shape[0] * shape[1]].reshape(
                shape).astype(bool)
        return cls(**kwargs)

    def to_json(self):
        """Serialise to a JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        """Rebuild a spec from :meth:`to_json` output."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"BubbleSpec JSON is not valid JSON: {err}") from None
        return cls.from_dict(d)

    def save(self, path):
        """Write the spec to a JSON file (:meth:`to_json`); return the path."""
        path = Path(path)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path):
        """Read a spec from a JSON file written by :meth:`save` (or by hand).

        Every error names the file: a missing or unreadable file raises OSError, a file
        that is not a valid spec raises ValueError.

        Examples
        --------
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "spec.json")
        >>> BubbleSpec.load(BubbleSpec(n_bubbles=12).save(path)).n_bubbles
        12
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"spec file {str(path)!r} does not exist or is not a file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"spec file {str(path)!r} is not UTF-8 text: {err}") from None
        try:
            return cls.from_json(text)
        except ValueError as err:
            raise ValueError(f"spec file {str(path)!r}: {err}") from None
