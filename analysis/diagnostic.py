"""DiagnosticImage: a z map with the method, spec, trial count and statistics attached.

One format for the diagnostic images of a person, a voxel and a network unit: ``z`` is
``(H, W)`` for one observer, ``(n_targets, H, W)`` for many targets, with a band axis
before ``H, W`` for a multi-scale spec. It saves to ``stem.npz`` (array ``z`` plus
``raw`` / ``observer_maps`` when present) and ``stem.json`` (method, trial count, spec,
info), and draws itself to PNG through :mod:`analysis.figures`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["DiagnosticImage", "to_jsonable"]

FORMAT = "bubbles.DiagnosticImage"
VERSION = 1


def to_jsonable(obj):
    """Convert numpy scalars / arrays / tuples / paths inside ``obj`` to JSON types."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    return obj


def _paths(stem):
    stem = str(stem)
    for suffix in (".npz", ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return Path(stem + ".npz"), Path(stem + ".json")


@dataclass
class DiagnosticImage:
    """A classification image in z units with everything needed to interpret it.

    Attributes
    ----------
    z : ndarray
        ``(H, W)``, ``(bands, H, W)``, ``(n_targets, H, W)`` or
        ``(n_targets, bands, H, W)``; positive = seeing this region raises the response.
    method : str
        'regression', 'proportion', 'median_split' (or 'stouffer' for a group image).
    spec : BubbleSpec or None
    n_trials : int
    info : dict
        JSON-able details: null, kernel, edge handling, target names, statistics ...
    observer_maps : ndarray, optional
        Group level: each observer's z map stacked on axis 0.
    raw : ndarray, optional
        The unstandardised image (proportion plane, mean-mask difference, weighted sum).

    Examples
    --------
    >>> img = DiagnosticImage(z=np.zeros((4, 4)), method="regression", spec=None,
    ...                       n_trials=10)
    >>> img.shape
    (4, 4)
    """

    z: np.ndarray
    method: str
    spec: object
    n_trials: int
    info: dict = field(default_factory=dict)
    observer_maps: np.ndarray | None = None
    raw: np.ndarray | None = None

    @property
    def shape(self):
        return self.z.shape

    @property
    def n_bands(self):
        return 1 if self.spec is None else self.spec.n_bands

    def band(self, b, target=None):
        """The (H, W) map of band ``b`` (of ``target`` for a many-target image)."""
        z = np.asarray(self.z)
        if self.info.get("responses_ndim") == 2:
            if target is None:
                raise ValueError("target must be given for a many-target image (an index "
                                 f"in [0, {z.shape[0]})), got None")
            z = z[target]
        if self.spec is not None and self.spec.multiscale:
            return z[b]
        if b != 0:
            raise ValueError(f"band must be 0 for a single-scale image, got {b!r}")
        return z

    # -- persistence -----------------------------------------------------------------
    def save(self, stem, *, overwrite=False):
        """Write ``stem.npz`` (array ``z``, plus ``raw`` / ``observer_maps``) and
        ``stem.json`` (format, method, n_trials, spec.to_dict(), info, shape).

        Existing files are not replaced unless ``overwrite=True``.
        Returns the two paths.
        """
        npz, js = _paths(stem)
        if not overwrite:
            for path in (npz, js):
                if path.exists():
                    raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        arrays = {"z": np.asarray(self.z)}
        if self.raw is not None:
            arrays["raw"] = np.asarray(self.raw)
        if self.observer_maps is not None:
            arrays["observer_maps"] = np.asarray(self.observer_maps)
        npz.parent.mkdir(parents=True, exist_ok=True)
        with open(npz, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        meta = {"format": FORMAT, "version": VERSION, "method": self.method,
                "n_trials": int(self.n_trials), "shape": list(self.z.shape),
                "spec": None if self.spec is None else self.spec.to_dict(),
                "info": to_jsonable(self.info)}
        js.write_text(json.dumps(meta, indent=2))
        return npz, js

    @classmethod
    def load(cls, stem):
        """Read a DiagnosticImage written by :meth:`save`."""
        npz, js = _paths(stem)
        for path in (npz, js):
            if not path.exists():
                raise FileNotFoundError(f"DiagnosticImage file {path} does not exist")
        meta = json.loads(js.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{js} is not a DiagnosticImage file (format "
                             f"{meta.get('format')!r}, expected {FORMAT!r})")
        spec = None
        if meta.get("spec") is not None:
            from bubbles import BubbleSpec
            spec = BubbleSpec.from_dict(meta["spec"])
        with np.load(npz) as data:
            z = data["z"]
            raw = data["raw"] if "raw" in data else None
            obs = data["observer_maps"] if "observer_maps" in data else None
        return cls(z=z, method=meta["method"], spec=spec, n_trials=int(meta["n_trials"]),
                   info=meta.get("info", {}), observer_maps=obs, raw=raw)

    def to_png(self, path, background=None, *, pixel=None, cluster=None, target=None,
               title=None, vmax=None, overwrite=True, dpi=100):
        """Draw the image (one panel per band) over ``background`` to a PNG file.

        See :func:`analysis.figures.plot_diagnostic_image` for the parameters.
        """
        from .figures import save_diagnostic_png
        return save_diagnostic_png(self, path, background=background, pixel=pixel,
                                   cluster=cluster, target=target, title=title,
                                   vmax=vmax, overwrite=overwrite, dpi=dpi)
