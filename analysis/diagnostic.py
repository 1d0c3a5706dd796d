"""DiagnosticImage: a z map with the method, spec, trial count and statistics attached.

One format for the diagnostic images of a person, a voxel, a region and a network unit:
``z`` has named axes (``dims``, a sub-sequence of ``('target', 'band', 'y', 'x')``):
``(H, W)`` for one observer, ``(n_targets, H, W)`` for many targets (with their names
in ``targets``), with a band axis before ``H, W`` for a multi-scale spec. It saves to ``stem.npz`` (array ``z`` plus
``raw`` / ``observer_maps`` when present) and ``stem.json`` (method, trial count, spec,
info, dims, targets, observer); :func:`analysis.figures.save_diagnostic_png` draws it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bubbles import BubbleSpec

__all__ = ["DiagnosticImage", "load_image", "read_npz", "to_jsonable"]

FORMAT = "bubbles.DiagnosticImage"
VERSION = 2


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


DIMS = ("target", "band", "y", "x")   # the axes a z map may have, in this order


def _check_dims(dims, shape):
    """``dims`` as a tuple, checked against the z shape (explicit, never guessed)."""
    if dims is None:
        if len(shape) != 2:
            raise TypeError(f"dims must be given for a {len(shape)}-D z of shape {shape} "
                            f"(a sub-sequence of {DIMS} ending in ('y', 'x')); only a "
                            "2-D z defaults to ('y', 'x')")
        return ("y", "x")
    dims = tuple(str(d) for d in dims)
    order = [DIMS.index(d) if d in DIMS else -1 for d in dims]
    if (-1 in order or order != sorted(set(order)) or dims[-2:] != ("y", "x")):
        raise ValueError(f"dims must be an ordered sub-sequence of {DIMS} ending in "
                         f"('y', 'x'), got {dims}")
    if len(dims) != len(shape):
        raise ValueError(f"dims {dims} must name every axis of z, whose shape is {shape}")
    return dims


@dataclass
class DiagnosticImage:
    """A classification image in z units with everything needed to interpret it.

    Attributes
    ----------
    z : ndarray
        Axes named by ``dims``; positive = seeing this region raises the response.
    method : str
        'regression', 'proportion', 'median_split' (or 'stouffer' for a group image,
        an attribution method for a network's attribution map).
    spec : BubbleSpec or None
    n_trials : int
    info : dict
        JSON-able details: null, kernel, edge handling, statistics ...
    observer_maps : ndarray, optional
        Group level: each observer's z map stacked on axis 0 (axes ``('observer',) +
        dims``).
    raw : ndarray, optional
        The unstandardised image (proportion plane, mean-mask difference, weighted sum),
        shaped like ``z``.
    dims : tuple of str
        The axes of ``z``: an ordered sub-sequence of ``('target', 'band', 'y', 'x')``
        ending in ``('y', 'x')``, given by every producer (only a 2-D ``z`` may leave it
        out). A ``'target'`` axis holds many observers of one kind (voxels, ROIs, units,
        permutations); a ``'band'`` axis the spatial-frequency bands of a multi-scale
        spec.
    targets : list of str or None
        One name per entry of the ``'target'`` axis (default ``'0'``, ``'1'``, ...);
        None without that axis.
    observer : str
        What responded: 'person', 'network', 'unit', 'voxel', 'roi', ... ('unknown'
        when a bare array was read).

    Examples
    --------
    >>> img = DiagnosticImage(z=np.zeros((3, 4, 4)), method="regression", spec=None,
    ...                       n_trials=10, dims=("target", "y", "x"), observer="unit")
    >>> img.n_targets, img.targets, img.maps().shape
    (3, ['0', '1', '2'], (3, 1, 4, 4))
    """

    z: np.ndarray
    method: str
    spec: object
    n_trials: int
    info: dict = field(default_factory=dict)
    observer_maps: np.ndarray | None = None
    raw: np.ndarray | None = None
    dims: tuple | None = None
    targets: list | None = None
    observer: str = "unknown"

    def __post_init__(self):
        self.dims = _check_dims(self.dims, np.shape(self.z))
        if "target" in self.dims:
            n = np.shape(self.z)[0]
            names = [str(i) for i in range(n)] if self.targets is None else [
                str(t) for t in self.targets]
            if len(names) != n:
                raise ValueError(f"targets must name each of the {n} targets of z, got "
                                 f"{len(names)} names")
            self.targets = names
        elif self.targets is not None:
            raise ValueError(f"targets are given ({len(self.targets)}) but z has no "
                             f"'target' axis (dims {self.dims})")
        if "band" in self.dims and self.spec is not None and (
                np.shape(self.z)[self.dims.index("band")] != self.spec.n_bands):
            raise ValueError(f"the 'band' axis of z has {np.shape(self.z)[self.dims.index('band')]} "
                             f"entries but the spec has {self.spec.n_bands} bands")

    @property
    def shape(self):
        return self.z.shape

    @property
    def n_targets(self):
        """Entries of the 'target' axis (1 without it)."""
        return np.shape(self.z)[0] if "target" in self.dims else 1

    @property
    def n_bands(self):
        """Entries of the 'band' axis (1 without it)."""
        return np.shape(self.z)[self.dims.index("band")] if "band" in self.dims else 1

    @property
    def names(self):
        """Target names, one per map of :meth:`maps` (``[observer]`` for one map)."""
        return list(self.targets) if self.targets is not None else [self.observer]

    def maps(self, array=None):
        """``z`` (or ``array``, shaped like it, e.g. ``raw``) as (targets, bands, H, W).

        A view with singleton axes added where ``dims`` has none; the one reader of
        the layout for figures, comparisons and exports.
        """
        a = np.asarray(self.z if array is None else array)
        if a.shape != np.shape(self.z):
            raise ValueError(f"array must have z's shape {np.shape(self.z)}, got {a.shape}")
        if "target" not in self.dims:
            a = a[None]
        if "band" not in self.dims:
            a = a[:, None]
        return a

    def band(self, b, target=None):
        """The (H, W) map of band ``b`` (of ``target`` for a many-target image)."""
        if "target" in self.dims and target is None:
            raise ValueError("target must be given for a many-target image (an index "
                             f"in [0, {self.n_targets})), got None")
        t = 0 if target is None else int(target)
        if not 0 <= t < self.n_targets:
            raise ValueError(f"target must be in [0, {self.n_targets}), got {target!r}")
        if not 0 <= int(b) < self.n_bands:
            raise ValueError(f"band must be in [0, {self.n_bands}), got {b!r}")
        return self.maps()[t, int(b)]

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
                "dims": list(self.dims), "targets": self.targets,
                "observer": self.observer,
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
        if meta.get("version") != VERSION:
            raise ValueError(f"{js} is a DiagnosticImage of format version "
                             f"{meta.get('version')!r}; this toolkit reads version "
                             f"{VERSION} (which names the axes of z): make it again with "
                             "the command that wrote it")
        spec = None if meta.get("spec") is None else BubbleSpec.from_dict(meta["spec"])
        arrays = read_npz(npz)
        if "z" not in arrays:
            raise ValueError(f"{npz} must hold an array 'z', has {sorted(arrays)}")
        z, raw, obs = arrays["z"], arrays.get("raw"), arrays.get("observer_maps")
        return cls(z=z, method=meta["method"], spec=spec, n_trials=int(meta["n_trials"]),
                   info=meta.get("info", {}), observer_maps=obs, raw=raw,
                   dims=tuple(meta["dims"]), targets=meta.get("targets"),
                   observer=meta.get("observer", "unknown"))


def read_npz(path):
    """Every array of the ``.npz`` file ``path`` (a dict); the one .npz reader.

    Never unpickles. A file that is missing or not a numpy archive is an error naming
    the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected a .npz file)")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("it holds a single array (.npy), not an archive")
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable .npz archive of numeric arrays "
                         f"({exc})") from None


def load_image(path) -> DiagnosticImage:
    """A DiagnosticImage from a stem (``stem.npz`` + ``stem.json``) or a bare ``.npz``.

    The one reader of saved maps. With a DiagnosticImage JSON beside the ``.npz`` it is
    :meth:`DiagnosticImage.load` (a JSON that is not valid, or not readable, is an
    error: never silently ignored). A bare ``.npz`` (no ``.json``, or a JSON of another
    format) gives its array ``z`` (or its only array), read by this documented rule
    since a bare array has no names: 2-D is one map ``('y', 'x')``, 3-D a stack of
    targets ``('target', 'y', 'x')``, 4-D ``('target', 'band', 'y', 'x')``; no trials
    are attached.
    """
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
    js, npz = stem.with_suffix(".json"), stem.with_suffix(".npz")
    if js.is_file() and npz.is_file():
        try:
            meta = json.loads(js.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"diagnostic image {js} (beside {npz.name}) is not valid "
                             f"JSON ({exc}); the file is damaged: rewrite it (e.g. run "
                             "'bubbles analyze' again) or remove it to read the .npz "
                             "alone") from None
        if isinstance(meta, dict) and meta.get("format") == FORMAT:
            try:
                return DiagnosticImage.load(stem)
            except (KeyError, TypeError) as exc:
                raise ValueError(f"cannot read the diagnostic image {stem} "
                                 f"({js.name} + {npz.name}): {exc!r}") from None
    npz = p if p.suffix == ".npz" else npz
    if not npz.is_file():
        raise FileNotFoundError(f"diagnostic image {path} not found (expected a stem with "
                                f".npz/.json or an .npz file)")
    arrays = read_npz(npz)
    key = "z" if "z" in arrays else (next(iter(arrays)) if len(arrays) == 1 else None)
    if key is None:
        raise ValueError(f"{npz} must hold an array 'z' (or exactly one array), has "
                         f"{sorted(arrays)}")
    z = arrays[key]
    bare = {2: ("y", "x"), 3: ("target", "y", "x"), 4: ("target", "band", "y", "x")}
    if z.ndim not in bare:
        raise ValueError(f"{npz}: array {key!r} must have 2 to 4 axes (H, W), (targets, "
                         f"H, W) or (targets, bands, H, W), got shape {z.shape}")
    return DiagnosticImage(z=z, method="unknown", spec=None, n_trials=0,
                           info={"source": str(npz)}, dims=bare[z.ndim])
