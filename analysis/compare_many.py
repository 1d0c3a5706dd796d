"""Many against many: every voxel, ROI or person against every unit of every layer.

:func:`compare_many` scores two stacks of diagnostic images against each other: ``a``
(the brain side: voxels of a ``bubbles fmri analyze`` store, ROIs, people) and ``b``
(the network side: the units of one or more layers, as ``ann_bridge.diagnostic_images``
writes them). Both are brought to one pixel grid and one smoothness, and the Pearson
correlation of every pair is one matrix product per chunk of ``a``:

* **Common grid.** The coarser of the two grids (or ``resolution`` pixels on the long
  side): a whole-factor reduction averages blocks of pixels, any other one
  interpolates linearly (the rule of ``analysis.fmri.stimulus.resize_map``).
* **Common smoothing.** A classification image is smoothed by its own bubble sigma;
  on the common grid the less smooth stack gets the extra Gaussian
  ``sqrt(s_max^2 - s^2)`` (reflected edges, as :func:`analysis.compare.smooth_maps`)
  so both have the same effective sigma, then ``smoothing`` (SD in common pixels) is
  applied to both. Resampling and smoothing are two small matrices per axis, so a
  chunk of maps is transformed by two matrix products.
* **Scores.** Every map is z-scored over its pixels (inside ``region``), and
  ``r = Z_a Z_b^T / P`` for all pairs; ``best`` is each target's best match in ``b``.
* **Noise ceiling** (with ``trials``, a's trials and each target's responses): the
  trials are split in two at random, each half gives every target's map in one
  many-target call of :func:`analysis.classification_image` (per chunk of targets),
  the halves are correlated on the common grid and Spearman-Brown corrected
  (``r_sb = 2 r / (1 + r)``), as :func:`analysis.compare.noise_ceiling` does for one
  person. The ceiling is ``sqrt(r_sb)`` (the correlation a noiseless model can reach,
  Spearman 1910) or ``r_sb``. A target is marked not scored (``scored`` False,
  ``score`` NaN) when its split-half r is within what shuffled responses give (the
  ``1 - reliability_p`` quantile of their split-half r's) or its ceiling is below
  ``min_ceiling``.
* **p of the best match** (``n_permutations``): a's responses are shuffled across
  trials (one permutation for all targets), a's maps recomputed in many-target calls
  and correlated with every map of ``b``; the null of each target is the maximum over
  ``b``, so picking the best of many units is not free.
* **Layers** (``b``'s targets named ``layer:unit``): each target's best ``r`` per
  layer and its preferred layer; with ``fit_layers`` also the cross-validated
  correlation of a ridge combination of each layer's unit maps (spatial folds,
  nested choice of the ridge penalty), computed from per-fold Gram matrices so that
  every target of a chunk is fitted at once.

The same seed gives the same split halves and permutations as
:func:`analysis.compare.compare` for one target (two independent streams spawned from
it), so a one-target ``a`` reproduces ``compare``'s ceiling and p-value.

References
----------
Spearman, C. (1910). Br. J. Psychol. 3, 271-295. Brown, W. (1910). Br. J. Psychol. 3,
296-322 (split-half reliability).
Adebayo, J. et al. (2018). Sanity checks for saliency maps. NeurIPS 31 (the
random-weights network as the floor of every score).
Schrimpf, M. et al. (2018). Brain-Score. bioRxiv doi:10.1101/407007 (scores over a
noise ceiling, per layer).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from bubbles import BubbleSpec, one_blas_thread

from .ci import METHODS, as_center_maps, classification_image
from .compare import CEILINGS, check_maps, trial_rows, image_trials, spearman_brown
from .diagnostic import DiagnosticImage, load_image, to_jsonable
from .figures import plot_montage
from .trials import TrialTable
from .zscore import zscore

__all__ = ["MapStack", "load_stack", "ManyComparison", "compare_many", "layer_volumes",
           "write_layer_maps", "roi_table", "plot_layer_matrix", "plot_best_pairs",
           "randomization_floor"]


# -- stacks of maps -----------------------------------------------------------------
@dataclass
class MapStack:
    """Diagnostic images of many targets, read chunk by chunk.

    Attributes
    ----------
    names : list of str
        One per target (voxels: ``'i,j,k'``; units: ``'layer:chN'``).
    shape : (H, W)
    n_bands : int
    spec : BubbleSpec or None
    method : str
    n_trials : int
    observer : str
    source : str
    read : callable
        ``read(start, stop)`` -> float32 ``(stop - start, n_bands, H, W)``.
    meta : dict
        For a voxel store: ``affine``, ``volume_shape``, ``ijk`` (n, 3), ``store``.
    info : dict
        The image's ``info`` (its session, layers, ...).
    """

    names: list
    shape: tuple
    n_bands: int
    spec: object
    method: str
    n_trials: int
    observer: str
    source: str
    read: object
    meta: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.names)

    @property
    def sigma(self):
        """The bubble sigma of the maps in their own pixels (None when unknown or
        multi-scale)."""
        if self.spec is None or self.spec.multiscale:
            return None
        s = self.spec.sigma
        return float(np.mean(s)) if isinstance(s, tuple) else float(s)


def _image_stack(img, source):
    maps = img.maps()
    return MapStack(names=list(img.names), shape=tuple(maps.shape[-2:]),
                    n_bands=img.n_bands, spec=img.spec, method=img.method,
                    n_trials=int(img.n_trials), observer=img.observer, source=source,
                    read=lambda s, e: np.asarray(maps[s:e], np.float32),
                    info=dict(img.info or {}))


def _concat(stacks, what):
    first = stacks[0]
    for i, s in enumerate(stacks[1:], 1):
        if s.shape != first.shape or s.n_bands != first.n_bands:
            raise ValueError(f"{what}[{i}] ({s.source}) has maps of {s.shape} with "
                             f"{s.n_bands} band(s), {what}[0] ({first.source}) of "
                             f"{first.shape} with {first.n_bands}: stack images of one "
                             "grid (or compare them separately)")
        if (s.spec is None) != (first.spec is None) or (
                s.spec is not None and s.sigma != first.sigma):
            raise ValueError(f"{what}[{i}] ({s.source}) was made with bubble sigma "
                             f"{s.sigma}, {what}[0] with {first.sigma}: the maps of one "
                             "stack must share their smoothing")
    names = [n for s in stacks for n in s.names]
    seen, dup = set(), []
    for n in names:
        if n in seen:
            dup.append(n)
        seen.add(n)
    if dup:
        raise ValueError(f"{what} names {dup[:5]} more than once: the stacked images "
                         "must have distinct target names (e.g. probe different layers)")
    offsets = np.cumsum([0] + [len(s) for s in stacks])

    def read(start, stop):
        parts = []
        for s, o in zip(stacks, offsets[:-1]):
            lo, hi = max(start, o), min(stop, o + len(s))
            if lo < hi:
                parts.append(s.read(lo - o, hi - o))
        return np.concatenate(parts)

    info = dict(first.info)
    info["sources"] = [s.source for s in stacks]
    return MapStack(names=names, shape=first.shape, n_bands=first.n_bands,
                    spec=first.spec, method=first.method, n_trials=first.n_trials,
                    observer=first.observer, source=" + ".join(s.source for s in stacks),
                    read=read, info=info)


def _zarr_stack(path):
    import zarr

    root = zarr.open_group(str(path), mode="r")
    attrs = dict(root.attrs)
    if attrs.get("format") != "bubbles.voxel_ci" or "z" not in root:
        raise ValueError(f"{path} is not a voxel image store of 'bubbles fmri analyze' "
                         f"(format {attrs.get('format')!r}, expected 'bubbles.voxel_ci')")
    arr = root["z"]
    ijk = np.asarray(root["ijk"][:]) if "ijk" in root else None
    names = ([",".join(map(str, v)) for v in ijk.tolist()] if ijk is not None
             else [str(i) for i in range(arr.shape[0])])
    spec = BubbleSpec.from_dict(attrs["spec"]) if attrs.get("spec") else None
    meta = {"store": str(path), "affine": attrs.get("affine"),
            "volume_shape": attrs.get("volume_shape"), "ijk": ijk}
    return MapStack(names=names, shape=tuple(arr.shape[-2:]), n_bands=1, spec=spec,
                    method=attrs.get("method", "regression"),
                    n_trials=int(attrs.get("n_trials", 0)),
                    observer=attrs.get("observer", "voxel"), source=str(path),
                    read=lambda s, e: np.asarray(arr[s:e], np.float32)[:, None],
                    meta=meta, info=attrs)


def load_stack(source, *, what="a") -> MapStack:
    """A :class:`MapStack` from any of the toolkit's outputs.

    ``source`` may be a :class:`MapStack`; a :class:`DiagnosticImage` (one map or many
    targets); a list of them (stacked, e.g. the probes of several layers; one grid,
    distinct target names); a ``voxel_ci.zarr`` store, or a ``bubbles fmri analyze``
    results folder holding one; or a DiagnosticImage stem / ``.npz`` path
    (:func:`analysis.diagnostic.load_image`). ``what`` names the argument in errors.
    """
    if isinstance(source, MapStack):
        return source
    if isinstance(source, DiagnosticImage):
        return _image_stack(source, source.info.get("source", f"<{what}>")
                            if source.info else f"<{what}>")
    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError(f"{what} must hold at least one diagnostic image, got an "
                             "empty list")
        stacks = [load_stack(s, what=f"{what}[{i}]") for i, s in enumerate(source)]
        return stacks[0] if len(stacks) == 1 else _concat(stacks, what)
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            store = p if (p / "zarr.json").is_file() or (p / ".zgroup").is_file() else (
                p / "voxel_ci.zarr")
            if not store.is_dir():
                raise FileNotFoundError(f"{what} {p} is a folder without a voxel_ci.zarr "
                                        "store (give a DiagnosticImage stem, a "
                                        "voxel_ci.zarr store or a 'bubbles fmri analyze' "
                                        "results folder)")
            return _zarr_stack(store)
        return _image_stack(load_image(p), str(p))
    if isinstance(source, np.ndarray):
        raise TypeError(f"{what} must be a DiagnosticImage (whose dims name its axes), a "
                        f"list of them, a path or a MapStack, got an array of shape "
                        f"{source.shape}")
    raise TypeError(f"{what} must be a DiagnosticImage, a list of them, a path or a "
                    f"MapStack, got {type(source).__name__}")


# -- the common grid ------------------------------------------------------------------
def _resample_matrix(n, m):
    """(m, n) operator taking n samples to m: block means for a whole factor, else the
    linear interpolation of ``analysis.fmri.stimulus.resize_map``."""
    if m == n:
        return np.eye(n)
    if n % m == 0:
        k = n // m
        return np.kron(np.eye(m), np.full((1, k), 1.0 / k))
    return ndimage.zoom(np.eye(n), (m / n, 1), order=1, grid_mode=True, mode="nearest")


def _smooth_matrix(n, sigma):
    """(n, n) operator of a Gaussian of SD ``sigma`` with reflected edges (equal to
    ``scipy.ndimage.gaussian_filter1d(x, sigma, mode='reflect')``)."""
    if not sigma:
        return np.eye(n)
    return ndimage.gaussian_filter1d(np.eye(n), float(sigma), axis=0, mode="reflect")


class _Transform:
    """Maps (k, B, H, W) on their own grid -> z-scored rows (k, P) on the common grid,
    each row divided by sqrt(P) so that a product of two gives Pearson r."""

    def __init__(self, shape, common, sigma, region):
        h, w = common
        self.mh = (_smooth_matrix(h, sigma) @ _resample_matrix(shape[0], h)).astype(
            np.float32)
        self.mwt = (_smooth_matrix(w, sigma) @ _resample_matrix(shape[1], w)).T.astype(
            np.float32)
        self.sel = None if region is None else np.flatnonzero(np.asarray(region).ravel())
        self.shape = tuple(shape)
        self.identity = (tuple(shape) == tuple(common) and not sigma)

    def maps(self, z):
        """(k, B, h, w) on the common grid: two large products (not k small ones)."""
        z = np.asarray(z, np.float32)
        if self.identity:
            return z
        k, nb, hh, ww = z.shape
        h, w = self.mh.shape[0], self.mwt.shape[1]
        y = (z.reshape(-1, ww) @ self.mwt).reshape(k * nb, hh, w)
        y = self.mh @ np.ascontiguousarray(y.transpose(1, 0, 2)).reshape(hh, -1)
        return np.ascontiguousarray(y.reshape(h, k * nb, w).transpose(1, 0, 2)).reshape(
            k, nb, h, w)

    def rows(self, z):
        """z-scored unit rows (k, P) and a bool (k,) marking constant maps."""
        m = self.maps(z)
        flat = m.reshape(len(m), m.shape[1], -1)
        if self.sel is not None:
            flat = flat[:, :, self.sel]
        flat = flat.reshape(len(m), -1)
        const = np.ptp(flat, axis=1) <= 1e-7 * np.maximum(np.abs(flat).max(axis=1), 1e-30)
        zs = zscore(flat, axis=1)
        zs *= np.float32(1 / np.sqrt(flat.shape[1]))
        return zs, const


def _common_shape(sa, sb, resolution):
    """The common (h, w) of grids ``sa`` and ``sb``; their aspect ratios must agree."""
    if abs(sa[0] / sa[1] - sb[0] / sb[1]) > 0.02 * sa[0] / sa[1]:
        raise ValueError(f"the maps of a ({sa[0]} x {sa[1]}) and b ({sb[0]} x {sb[1]}) "
                         "have different aspect ratios: they are not images of one "
                         "stimulus grid")
    if resolution is None:
        return tuple(sa) if sa[0] * sa[1] <= sb[0] * sb[1] else tuple(sb)
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or (
            resolution < 8):
        raise ValueError(f"resolution must be an integer >= 8 pixels (the long side of "
                         f"the common grid) or None (the coarser grid), got {resolution!r}")
    f = resolution / max(sa)
    return (max(1, int(round(sa[0] * f))), max(1, int(round(sa[1] * f))))


# -- result -------------------------------------------------------------------------
@dataclass
class ManyComparison:
    """Every target of ``a`` scored against every target of ``b`` (:func:`compare_many`).

    Attributes
    ----------
    r : ndarray (n_a, n_b) float32
        Pearson r on the common grid (NaN where a map is constant).
    names_a, names_b : list of str
    layers : list of str
        The layers of ``b`` (from target names ``layer:unit``), in order of appearance.
    layer_of : ndarray of int (n_b,)
        Index in ``layers`` of each target of ``b``.
    best : ndarray of int (n_a,)
        Index in ``b`` of each target's best match (-1 when its map is constant).
    best_r : ndarray (n_a,)
    layer_r : ndarray (n_a, n_layers)
        Best r over each layer's units.
    layer_fit_r : ndarray (n_a, n_layers) or None
        Cross-validated r of a ridge combination of each layer's unit maps.
    r_half, r_sb, ceiling : ndarray (n_a,) or None
        Mean split-half r, its Spearman-Brown reliability, and the ceiling the score
        is divided by (``ceiling_kind``: 'sqrt' = ``sqrt(r_sb)``, or 'r_sb').
    scored : ndarray of bool (n_a,) or None
        Ceiling at least ``min_ceiling`` (the others are not scored).
    score : ndarray (n_a,) or None
        ``best_r / ceiling`` (NaN when not scored).
    p_best : ndarray (n_a,) or None
        Permutation p of ``best_r`` against the maximum over ``b``.
    meta : dict
        ``a``'s store metadata (affine, volume shape, ijk) for NIfTI maps.
    info : dict
    """

    r: np.ndarray
    names_a: list
    names_b: list
    layers: list
    layer_of: np.ndarray
    best: np.ndarray
    best_r: np.ndarray
    layer_r: np.ndarray
    layer_fit_r: np.ndarray | None = None
    r_half: np.ndarray | None = None
    r_sb: np.ndarray | None = None
    ceiling: np.ndarray | None = None
    ceiling_kind: str = "sqrt"
    scored: np.ndarray | None = None
    score: np.ndarray | None = None
    p_best: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def n_a(self):
        return len(self.names_a)

    @property
    def best_names(self):
        """Name of each target's best match ('' for a constant map)."""
        return [self.names_b[j] if j >= 0 else "" for j in self.best]

    @property
    def preferred_layer(self):
        """Index of each target's layer with the best unit (-1 when undefined)."""
        return _argmax_rows(self.layer_r)

    @property
    def preferred_layer_fit(self):
        """Index of each target's layer with the best cross-validated fit, or None."""
        return None if self.layer_fit_r is None else _argmax_rows(self.layer_fit_r)

    def table(self) -> pd.DataFrame:
        """One row per target of ``a``: best match, its layer, ceiling, score, p, and
        the best r (and fit r) of every layer."""
        pref = self.preferred_layer
        d = {"target": self.names_a, "best": self.best_names,
             "best_layer": [self.layers[self.layer_of[j]] if j >= 0 else ""
                            for j in self.best],
             "best_r": self.best_r,
             "preferred_layer": [self.layers[i] if i >= 0 else "" for i in pref]}
        if self.layer_fit_r is not None:
            d["preferred_layer_fit"] = [self.layers[i] if i >= 0 else ""
                                        for i in self.preferred_layer_fit]
        for name, v in (("r_half", self.r_half), ("r_sb", self.r_sb),
                        ("ceiling", self.ceiling), ("scored", self.scored),
                        ("score_over_ceiling", self.score), ("p_best", self.p_best)):
            if v is not None:
                d[name] = v
        for k, layer in enumerate(self.layers):
            d[f"r_{layer}"] = self.layer_r[:, k]
            if self.layer_fit_r is not None:
                d[f"fit_r_{layer}"] = self.layer_fit_r[:, k]
        return pd.DataFrame(d)

    def to_dict(self, top=20):
        """A JSON-able summary: settings, counts, and the ``top`` best-matched targets."""
        order = _top(self.best_r, top)
        pref = self.preferred_layer
        d = {"n_a": self.n_a, "n_b": len(self.names_b), "layers": self.layers,
             "ceiling_kind": self.ceiling_kind,
             "preferred_layer_counts": {layer: int((pref == k).sum())
                                        for k, layer in enumerate(self.layers)},
             "median_best_r": _nanmedian(self.best_r),
             "top": [{"target": self.names_a[i], "best": self.best_names[i],
                      "best_r": float(self.best_r[i]),
                      "score_over_ceiling": None if self.score is None
                      else float(self.score[i]),
                      "p_best": None if self.p_best is None else float(self.p_best[i])}
                     for i in order],
             "info": self.info}
        if self.scored is not None:
            d["n_scored"] = int(self.scored.sum())
            d["median_score_over_ceiling"] = _nanmedian(self.score)
        if self.layer_fit_r is not None:
            d["preferred_layer_fit_counts"] = {
                layer: int((self.preferred_layer_fit == k).sum())
                for k, layer in enumerate(self.layers)}
        return to_jsonable(d)


def _argmax_rows(x):
    ok = np.isfinite(x).any(axis=1)
    out = np.full(len(x), -1, np.int64)
    if ok.any():
        out[ok] = np.nanargmax(np.where(np.isfinite(x[ok]), x[ok], -np.inf), axis=1)
    return out


def _nanmedian(x):
    x = np.asarray(x, np.float64)
    return float(np.nanmedian(x)) if np.isfinite(x).any() else None


def _top(values, n):
    v = np.where(np.isfinite(values), values, -np.inf)
    return [int(i) for i in np.argsort(-v, kind="stable")[:n] if np.isfinite(values[i])]


def _layers_of(names):
    """Layer names (order of appearance) and each target's layer index."""
    layers, index = [], []
    for n in names:
        layer = n.rsplit(":", 1)[0] if ":" in n else ""
        if layer not in layers:
            layers.append(layer)
        index.append(layers.index(layer))
    return layers, np.asarray(index, np.int64)


# -- trials -----------------------------------------------------------------------------
def _trials(trials, sa, response):
    """(spec, centre maps, responses (n, n_a), notes) of a's trials, checked."""
    notes = {}
    if isinstance(trials, TrialTable):
        if len(sa) != 1:
            raise ValueError(f"trials is a TrialTable (one response column) but a holds "
                             f"{len(sa)} targets: give (spec, centers, responses (n_trials, "
                             f"{len(sa)})) for many targets")
        table, response, notes = image_trials(trials, sa.info, response)
        spec, centers, r = table.spec, table.center_maps(), table.responses(response)
    elif isinstance(trials, (tuple, list)) and len(trials) == 3:
        spec, centers, r = trials
    else:
        raise TypeError(f"trials must be a TrialTable or (spec, centers, responses), got "
                        f"{type(trials).__name__}")
    if not isinstance(spec, BubbleSpec):
        raise TypeError(f"trials' spec must be a bubbles.BubbleSpec, got "
                        f"{type(spec).__name__}")
    r = np.asarray(r, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    if r.ndim != 2 or r.shape[1] != len(sa):
        raise ValueError(f"trials' responses must have shape (n_trials, {len(sa)}) (one "
                         f"column per target of a, in a's order), got {np.shape(r)}")
    if not np.isfinite(r).all():
        raise ValueError("trials' responses must be finite (no NaN or inf)")
    if tuple(spec.shape) != tuple(sa.shape):
        raise ValueError(f"the trials are of {spec.shape[0]} x {spec.shape[1]} images but "
                         f"a's maps are {sa.shape[0]} x {sa.shape[1]}: give the trials "
                         "(and spec) a was made from")
    if sa.n_trials and len(r) != sa.n_trials:
        raise ValueError(f"a was made from {sa.n_trials} trials but the trials given hold "
                         f"{len(r)}: they are another session's trials")
    maps = as_center_maps(spec, centers)
    if maps[0].shape[0] != len(r):
        raise ValueError(f"trials' centers cover {maps[0].shape[0]} trials but the "
                         f"responses {len(r)}")
    if len(r) < 4:
        raise ValueError(f"trials must cover at least 4 trials for split halves, got "
                         f"{len(r)}")
    return spec, maps, r, notes


def _images(spec, maps, r, method):
    """(T, B, H, W) float32 maps of the responses r (n, T); constant columns give 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        img = classification_image(spec, maps, r, method, chunk_size=256, progress=False)
    return img.maps()


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
            value < minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# -- layers: cross-validated ridge from per-fold Gram matrices ---------------------------
ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)    # times the mean eigenvalue of the Gram matrix
N_FOLDS = 4


def _folds(shape, region):
    """Fold (0..3) of every pixel on the common grid (inside ``region``): a 4 x 4 grid of
    blocks, block (i, j) in fold 2 (i % 2) + (j % 2), so each fold holds four blocks
    spread over the image."""
    h, w = shape
    bi = np.minimum(np.arange(h) * 4 // h, 3)
    bj = np.minimum(np.arange(w) * 4 // w, 3)
    f = (2 * (bi[:, None] % 2) + (bj[None, :] % 2)).ravel()
    return f if region is None else f[np.asarray(region).ravel()]


class _LayerFit:
    """Nested cross-validated ridge of targets' maps on one layer's unit maps.

    ``x`` (P, U): the layer's unit maps (pixels x units) on the common grid. For a chunk
    of targets ``y`` (P, T), per fold ``f``: Gram ``G_f = X_f^T X_f``, ``C_f = X_f^T
    y_f``, sums. Any training set is a sum of folds, so every fit (outer: train on
    three folds, test on the fourth; inner: the penalty of each outer fit chosen by CV
    over its three training folds) is an eigendecomposition of a U x U matrix and
    products with ``C``. The score is the correlation of the pooled out-of-fold
    predictions with the map.
    """

    def __init__(self, x, folds):
        x = np.asarray(x, np.float64)
        self.folds = [np.flatnonzero(folds == f) for f in range(N_FOLDS)]
        self.x = [np.ascontiguousarray(x[i]) for i in self.folds]
        self.g = [xf.T @ xf for xf in self.x]
        self.s = [xf.sum(axis=0) for xf in self.x]
        self.n = [len(i) for i in self.folds]
        self.u = x.shape[1]
        self._eig = {}

    def _solver(self, train):
        """Centred Gram of the folds ``train`` and its eigendecomposition (cached)."""
        key = tuple(train)
        if key not in self._eig:
            n = sum(self.n[f] for f in train)
            g = sum(self.g[f] for f in train)
            s = sum(self.s[f] for f in train)
            gc = g - np.outer(s, s) / n
            e, v = np.linalg.eigh(gc)
            self._eig[key] = (n, s / n, np.maximum(e, 0), v, max(e.mean(), 1e-12))
        return self._eig[key]

    def _fit(self, train, c, ysum, alphas):
        """Ridge weights (len(alphas), U, T) and intercepts (len(alphas), T)."""
        n, xm, e, v, scale = self._solver(train)
        cs = sum(c[f] for f in train)
        ys = sum(ysum[f] for f in train)
        cc = cs - np.outer(xm * n, ys / n)              # centred X^T y
        q = v.T @ cc                                      # (U, T) in the eigenbasis
        ws = np.stack([v @ (q / (e + a * scale)[:, None]) for a in alphas])
        b = ys / n - np.matmul(xm, ws)
        return ws, b

    def _moments(self, test, ws, b, c, ysum):
        """Sums over the folds ``test`` of pred*y, pred^2, pred: (A, T) each."""
        py = pp = ps = 0.0
        for f in test:                          # BLAS products, not einsum loops
            gw = np.matmul(self.g[f], ws)
            py = py + (ws * c[f]).sum(axis=1) + b * ysum[f]
            sw = np.matmul(self.s[f], ws)
            pp = pp + (ws * gw).sum(axis=1) + 2 * b * sw + self.n[f] * b * b
            ps = ps + sw + self.n[f] * b
        return py, pp, ps

    @staticmethod
    def _r(py, pp, ps, yy, ys, n):
        cov = py - ps * ys / n
        vp = pp - ps * ps / n
        vy = yy - ys * ys / n
        with np.errstate(invalid="ignore", divide="ignore"):
            return cov / np.sqrt(np.maximum(vp, 0) * np.maximum(vy, 0))

    def score(self, y):
        """Cross-validated r (T,) of the targets' maps ``y`` (P, T)."""
        y = np.asarray(y, np.float64)
        yf = [y[i] for i in self.folds]
        c = [xf.T @ t for xf, t in zip(self.x, yf)]
        ysum = [t.sum(axis=0) for t in yf]
        yy = [np.einsum("pt,pt->t", t, t) for t in yf]
        all_f = list(range(N_FOLDS))
        t = y.shape[1]
        out = np.zeros((3, t))                 # pooled outer moments: py, pp, ps
        for f in all_f:
            train = [g for g in all_f if g != f]
            inner = np.zeros((3, len(ALPHAS), t))
            for g in train:                     # choose the penalty inside train
                sub = [h for h in train if h != g]
                ws, b = self._fit(sub, c, ysum, ALPHAS)
                inner += np.stack(self._moments([g], ws, b, c, ysum))
            n_in = sum(self.n[g] for g in train)
            ri = self._r(*inner, sum(yy[g] for g in train), sum(ysum[g] for g in train),
                         n_in)
            pick = np.argmax(np.where(np.isfinite(ri), ri, -np.inf), axis=0)   # (T,)
            ws, b = self._fit(train, c, ysum, ALPHAS)
            cols = np.arange(t)
            w1 = ws[pick, :, cols].T[None]       # (1, U, T)
            b1 = b[pick, cols][None]
            out += np.stack(self._moments([f], w1, b1, c, ysum))[:, 0]
        n = sum(self.n)
        return self._r(out[0], out[1], out[2], sum(yy), sum(ysum), n)


# -- the comparison ----------------------------------------------------------------------
def compare_many(a, b, *, trials=None, response=None, resolution=None, smoothing=0.0,
                 match_smoothing=True, region=None, n_splits=4, n_permutations=0,
                 seed=0, method=None, ceiling="sqrt", min_ceiling=0.1,
                 reliability_p=0.05, fit_layers=False, chunk_size=2048, progress=False) -> ManyComparison:
    """Score every target of ``a`` against every target of ``b``.

    Parameters
    ----------
    a : DiagnosticImage, list of them, path or MapStack
        The measured side (voxels, ROIs, people): see :func:`load_stack` (a
        ``voxel_ci.zarr`` store or a ``bubbles fmri analyze`` folder is read chunk by
        chunk).
    b : same kinds
        The models' side, typically the units of one or more layers (targets named
        ``layer:unit``, as ``ann_bridge.diagnostic_images`` names them).
    trials : TrialTable or (spec, centers, responses), optional
        a's trials, for the noise ceiling and ``p_best``: ``responses`` is
        ``(n_trials, n_a)``, one column per target of ``a`` in a's order (a voxel's
        single-trial amplitudes, a person's responses), ``spec`` and ``centers`` as
        :func:`analysis.classification_image` takes them. A TrialTable is one person
        (``a`` of one target), read as :func:`analysis.compare.compare` reads it.
    response : str, optional
        The response column of a TrialTable.
    resolution : int, optional
        Long side of the common grid in pixels (default: the coarser of the two).
    smoothing : float
        SD in common-grid pixels of a Gaussian applied to both stacks (0: none).
    match_smoothing : bool
        Give the less smooth stack the extra Gaussian that makes both equally smooth
        (from their specs' bubble sigmas, scaled to the common grid).
    region : bool ndarray (h, w), optional
        Pixels of the common grid to compare.
    n_splits : int
        Random split halves averaged for each target's ceiling.
    n_permutations : int
        Permutations for ``p_best`` (0: none). Each one recomputes every map of ``a``.
    seed : int, SeedSequence or Generator
        Split halves and permutations draw from two streams spawned from it.
    method : str, optional
        Classification-image method for the halves and the null (default: a's method
        when it is one of classification_image's, else 'regression').
    ceiling : {'sqrt', 'r_sb'}
    min_ceiling : float
        Targets whose ceiling is below it (or undefined) are marked not scored.
    reliability_p : float or None
        Targets are scored only when their split-half r exceeds the ``1 - p`` quantile
        of split-half r's of maps made from shuffled responses (what noise gives at
        this smoothness and trial count; the ``sqrt(r_sb)`` of a null map is often
        0.5 with smooth maps of few independent pixels). None skips this check.
    fit_layers : bool
        Also the cross-validated ridge fit of each layer's unit maps.
    chunk_size : int
        Targets of ``a`` per product (memory: about ``chunk_size * pixels * 16`` bytes).
    progress : bool

    Returns
    -------
    ManyComparison

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> m = rng.normal(size=(3, 16, 16))
    >>> a = DiagnosticImage(m[:2] + 0.1 * rng.normal(size=(2, 16, 16)), "regression",
    ...                     None, 0, dims=("target", "y", "x"), targets=["v1", "v2"])
    >>> b = DiagnosticImage(m, "regression", None, 0, dims=("target", "y", "x"),
    ...                     targets=["conv1:ch0", "conv1:ch1", "conv2:ch0"])
    >>> res = compare_many(a, b)
    >>> res.best_names, res.layers
    (['conv1:ch0', 'conv1:ch1'], ['conv1', 'conv2'])
    """
    if ceiling not in CEILINGS:
        raise ValueError(f"ceiling must be one of {list(CEILINGS)}; {ceiling!r} was provided")
    n_splits = _check_count("n_splits", n_splits, 1)
    n_permutations = _check_count("n_permutations", n_permutations, 0)
    chunk_size = _check_count("chunk_size", chunk_size, 1)
    if not (np.isscalar(smoothing) and np.isfinite(smoothing) and smoothing >= 0):
        raise ValueError(f"smoothing must be a Gaussian SD >= 0 pixels, got {smoothing!r}")
    if not (np.isscalar(min_ceiling) and np.isfinite(min_ceiling)):
        raise ValueError(f"min_ceiling must be a finite number, got {min_ceiling!r}")
    if reliability_p is not None and not (np.isscalar(reliability_p)
                                          and 0 < reliability_p < 1):
        raise ValueError(f"reliability_p must be in (0, 1) or None, got {reliability_p!r}")
    sa, sb = load_stack(a, what="a"), load_stack(b, what="b")
    if sa.n_bands != sb.n_bands:
        raise ValueError(f"a's maps have {sa.n_bands} band(s), b's {sb.n_bands}: compare "
                         "images of the same bands")
    common = _common_shape(sa.shape, sb.shape, resolution)
    if region is not None:
        region = np.asarray(region, bool)
        if region.shape != common:
            raise ValueError(f"region must have the common grid's shape {common}, got "
                             f"{region.shape}")
        if region.sum() < 3:
            raise ValueError(f"region must hold at least 3 pixels, got {int(region.sum())}")
    ea, eb = _extra_sigmas(sa, sb, common, match_smoothing, smoothing)
    ta = _Transform(sa.shape, common, ea, region)
    tb = _Transform(sb.shape, common, eb, region)
    info = {"common_shape": list(common), "smoothing": smoothing,
            "extra_sigma_a": ea, "extra_sigma_b": eb, "a": sa.source, "b": sb.source,
            "observer_a": sa.observer, "observer_b": sb.observer,
            "region": None if region is None else int(region.sum())}
    for what, s in (("a", sa), ("b", sb)):
        if s.shape != common:
            info[f"resampled_{what}"] = f"{s.shape} -> {common}"
    # b: all of it in memory (units: hundreds of maps)
    zb = sb.read(0, len(sb))
    check_maps(zb, "map b", sb.names)
    fb, const_b = tb.rows(zb)
    if const_b.all():
        raise ValueError(f"every map of b is constant ({len(sb)} map(s)): nothing to "
                         "correlate with a")
    if const_b.any():
        info["constant_b"] = [sb.names[i] for i in np.flatnonzero(const_b)][:20]
        warnings.warn(f"{int(const_b.sum())} map(s) of b are constant (first "
                      f"{info['constant_b'][:5]}): they have no correlation (NaN) and "
                      "are never the best match", UserWarning, stacklevel=2)
    layers, layer_of = _layers_of(sb.names)
    fits = None
    if fit_layers:
        folds = _folds(common, region)
        cols = fb * np.sqrt(fb.shape[1])                  # z-scored unit maps
        fits = [_LayerFit(cols[layer_of == k].T, folds) for k in range(len(layers))]
    n_a = len(sa)
    r = np.empty((n_a, len(sb)), np.float32)
    layer_fit = np.full((n_a, len(layers)), np.nan) if fits else None
    const_a = np.zeros(n_a, bool)
    starts = range(0, n_a, chunk_size)
    bar = _bar(starts, progress, "compare_many")
    for start in bar:               # large products: BLAS's own threads pay here
        stop = min(start + chunk_size, n_a)
        za = sa.read(start, stop)
        check_maps(za, "map a", sa.names[start:stop])
        fa, ca = ta.rows(za)
        np.matmul(fa, fb.T, out=r[start:stop])
        const_a[start:stop] = ca
        if fits:
            ya = fa.T * np.sqrt(fa.shape[1])              # (P, T) z-scored maps
            for k, fit in enumerate(fits):
                layer_fit[start:stop, k] = fit.score(ya)
            layer_fit[start:stop][ca] = np.nan
    r[const_a] = np.nan
    r[:, const_b] = np.nan
    if const_a.any():
        info["constant_a"] = [sa.names[i] for i in np.flatnonzero(const_a)][:20]
        warnings.warn(f"{int(const_a.sum())} map(s) of a are constant (first "
                      f"{info['constant_a'][:5]}): they are not scored", UserWarning,
                      stacklevel=2)
    best = _argmax_rows(r)
    best_r = np.where(best >= 0, r[np.arange(n_a), np.maximum(best, 0)], np.nan)
    layer_r = np.full((n_a, len(layers)), np.nan, np.float32)
    for k in range(len(layers)):
        sub = r[:, layer_of == k]
        ok = np.isfinite(sub).any(axis=1)
        layer_r[ok, k] = np.nanmax(sub[ok], axis=1)
    res = ManyComparison(r=r, names_a=list(sa.names), names_b=list(sb.names),
                         layers=layers, layer_of=layer_of, best=best,
                         best_r=best_r.astype(np.float64), layer_r=layer_r,
                         layer_fit_r=layer_fit, ceiling_kind=ceiling, meta=dict(sa.meta),
                         info=info)
    if fits:
        info["fit"] = {"folds": N_FOLDS, "alphas": list(ALPHAS),
                       "penalty": "ridge, alpha x mean eigenvalue of the centred Gram "
                                  "matrix, chosen per target by CV inside each outer "
                                  "training set"}
    if trials is None:
        info["note"] = "no trials for a: noise ceiling and p_best not computed"
        return res
    spec, maps, resp, notes = _trials(trials, sa, response)
    info.update(notes)
    if method is None:
        method = sa.method if sa.method in METHODS else "regression"
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}; {method!r} was provided")
    info.update(method=method, n_trials=len(resp), n_splits=n_splits)
    # compare's two streams first (same splits and permutations), then the shuffles
    split_rng, null_rng, shuffle_rng = np.random.default_rng(seed).spawn(3)
    with one_blas_thread():
        r_half = _split_halves(spec, maps, resp, ta, method, n_splits, split_rng,
                               chunk_size, progress)
        floor = (np.inf if reliability_p is None else _split_half_floor(
            spec, maps, resp, ta, method, reliability_p, shuffle_rng, chunk_size))
    res.r_half = r_half
    res.r_sb = spearman_brown(r_half)
    value = np.sqrt(np.maximum(res.r_sb, 0)) if ceiling == "sqrt" else res.r_sb
    value = np.where(np.isfinite(value), value, np.nan)
    res.ceiling = value
    with np.errstate(invalid="ignore"):
        res.scored = (np.isfinite(value) & (value >= min_ceiling) & np.isfinite(best_r)
                      & ((r_half > floor) if reliability_p is not None else True))
        res.score = np.where(res.scored, best_r / np.where(res.scored, value, 1), np.nan)
    info.update(min_ceiling=min_ceiling, reliability_p=reliability_p,
                r_half_floor=None if reliability_p is None else float(floor))
    if n_permutations:
        with one_blas_thread():
            null = _null_max(spec, maps, resp, ta, fb, const_b, method, n_permutations,
                             null_rng, progress)
        res.p_best = np.where(np.isfinite(best_r),
                              (1 + (null >= best_r[None]).sum(axis=0)) /
                              (1 + n_permutations), np.nan)
        info["n_permutations"] = n_permutations
    return res


def _extra_sigmas(sa, sb, common, match, smoothing):
    """Extra Gaussian SD (common pixels) for a and b."""
    ea = eb = 0.0
    if match and sa.sigma is not None and sb.sigma is not None:
        s_a = sa.sigma * common[0] / sa.shape[0]
        s_b = sb.sigma * common[0] / sb.shape[0]
        top = max(s_a, s_b)
        ea, eb = np.sqrt(max(top ** 2 - s_a ** 2, 0)), np.sqrt(max(top ** 2 - s_b ** 2, 0))
    ea = float(np.sqrt(ea ** 2 + smoothing ** 2))
    eb = float(np.sqrt(eb ** 2 + smoothing ** 2))
    return (ea if ea > 1e-9 else 0.0), (eb if eb > 1e-9 else 0.0)


def _bar(it, progress, desc):
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, unit="chunk", disable=not progress or len(it) < 2,
                leave=False)


def _split_halves(spec, maps, resp, ta, method, n_splits, rng, chunk_size, progress):
    """Mean split-half r of every target (n_a,), NaN where no split had spread in both
    halves; the split sequence is :func:`analysis.compare.noise_ceiling`'s."""
    n, t = resp.shape
    rng = np.random.default_rng(rng)
    total = np.zeros(t)
    count = np.zeros(t)
    for _ in _bar(range(n_splits), progress, "split halves"):
        perm = rng.permutation(n)
        h1, h2 = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
        m1, m2 = trial_rows(maps, h1), trial_rows(maps, h2)
        for start in range(0, t, chunk_size):
            cols = slice(start, min(start + chunk_size, t))
            r1, r2 = resp[h1, cols], resp[h2, cols]
            ok = (np.ptp(r1, axis=0) > 0) & (np.ptp(r2, axis=0) > 0)
            f1, c1 = ta.rows(_images(spec, m1, r1, method))
            f2, c2 = ta.rows(_images(spec, m2, r2, method))
            rr = np.einsum("tp,tp->t", f1, f2, dtype=np.float64)
            ok &= ~c1 & ~c2
            total[cols] += np.where(ok, rr, 0)
            count[cols] += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _split_half_floor(spec, maps, resp, ta, method, p, rng, chunk_size, pooled=400):
    """The ``1 - p`` quantile of split-half r of maps made from shuffled responses.

    The responses are shuffled across trials (their link to the masks is broken) and
    split in two at random; the half maps' r of every target (pooled over targets,
    and over shuffles until at least ``pooled`` values) is what noise alone gives at
    this smoothness and trial count. A target whose mean split-half r does not exceed
    it has no reliable map.
    """
    n, t = resp.shape
    rng = np.random.default_rng(rng)
    values = []
    n_shuffles = int(np.ceil(pooled / t))
    cols = np.arange(t) if t <= 4 * chunk_size else np.sort(
        rng.choice(t, 4 * chunk_size, replace=False))          # a sample of big stacks
    for _ in range(n_shuffles):
        shuffled = resp[rng.permutation(n)][:, cols]
        perm = rng.permutation(n)
        h1, h2 = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
        for start in range(0, len(cols), chunk_size):
            sl = slice(start, start + chunk_size)
            r1, r2 = shuffled[h1, sl], shuffled[h2, sl]
            ok = (np.ptp(r1, axis=0) > 0) & (np.ptp(r2, axis=0) > 0)
            f1, c1 = ta.rows(_images(spec, trial_rows(maps, h1), r1, method))
            f2, c2 = ta.rows(_images(spec, trial_rows(maps, h2), r2, method))
            rr = np.einsum("tp,tp->t", f1, f2, dtype=np.float64)
            values.append(rr[ok & ~c1 & ~c2])
    values = np.concatenate(values)
    return float(np.quantile(values, 1 - p)) if len(values) else np.inf


def _null_max(spec, maps, resp, ta, fb, const_b, method, n_permutations, rng, progress,
              budget=1024):
    """(n_permutations, n_a): for each permutation of the trials, every target's
    maximum r over b. Permutations are stacked as columns of one many-target call
    (``budget`` maps at a time)."""
    n, t = resp.shape
    rng = np.random.default_rng(rng)
    perms = [rng.permutation(n) for _ in range(n_permutations)]  # compare's sequence
    out = np.empty((n_permutations, t))
    fbt = np.ascontiguousarray(fb.T)
    per = max(1, budget // t)                 # permutations per call (small a)
    step = min(t, budget)                     # targets per call (large a)
    jobs = [(k, s) for k in range(0, n_permutations, per) for s in range(0, t, step)]
    for k, s in _bar(jobs, progress, "permutations"):
        ks = range(k, min(k + per, n_permutations))
        cols = slice(s, min(s + step, t))
        r = np.concatenate([resp[perms[i], cols] for i in ks], axis=1)
        f, c = ta.rows(_images(spec, maps, r, method))
        rr = f @ fbt
        rr[:, const_b] = -np.inf
        mx = rr.max(axis=1)
        mx[c] = np.nan
        out[ks.start:ks.stop, cols] = mx.reshape(len(ks), -1)
    return out


# -- layer maps, tables, the random-weights floor ---------------------------------------
def randomization_floor(trained, control):
    """Per target of ``a``: each layer's best r of the trained network minus that of the
    same architecture with random weights (Adebayo et al. 2018), (n_a, n_layers).

    Both results must come from the same ``a`` and layers of the same names.
    """
    if trained.names_a != control.names_a:
        raise ValueError("control must score the same targets of a as trained (same "
                         "names in the same order)")
    if trained.layers != control.layers:
        raise ValueError(f"control's layers {control.layers} must be trained's "
                         f"{trained.layers} (the same architecture, probed alike)")
    return trained.layer_r - control.layer_r


def layer_volumes(result, control=None):
    """Per-target values for brain maps: name -> ndarray (n_a,).

    ``preferred_layer`` (1-based layer index of the best unit; 0 = none),
    ``best_r``, ``score_over_ceiling`` (NaN when not scored or without trials),
    ``scored`` (1 / 0, with trials),
    with ``fit_layers`` ``preferred_layer_fit`` and ``best_fit_r``, and with a
    ``control`` result (random weights) ``control_best_r`` and ``best_r_over_control``
    (the trained best r minus the control's).
    """
    pref = result.preferred_layer
    out = {"preferred_layer": (pref + 1).astype(np.float32),
           "best_r": result.best_r.astype(np.float32),
           "score_over_ceiling": (np.full(result.n_a, np.nan) if result.score is None
                                  else result.score).astype(np.float32)}
    if result.scored is not None:
        out["scored"] = result.scored.astype(np.float32)
    if result.layer_fit_r is not None:
        out["preferred_layer_fit"] = (result.preferred_layer_fit + 1).astype(np.float32)
        out["best_fit_r"] = np.nanmax(np.where(np.isfinite(result.layer_fit_r),
                                               result.layer_fit_r, -np.inf),
                                      axis=1).astype(np.float32)
        out["best_fit_r"][~np.isfinite(out["best_fit_r"])] = np.nan
    if control is not None:
        if control.names_a != result.names_a:
            raise ValueError("control must score the same targets of a as result")
        out["control_best_r"] = control.best_r.astype(np.float32)
        out["best_r_over_control"] = (result.best_r - control.best_r).astype(np.float32)
    return out


def write_layer_maps(result, out, *, control=None):
    """NIfTI maps of :func:`layer_volumes` in the BOLD space of a voxel store.

    ``result`` must come from a ``voxel_ci.zarr`` store (its affine, volume shape and
    voxel indices). Writes ``out/<name>.nii.gz`` (0 outside the mask and where a value
    is undefined); returns the paths.
    """
    import nibabel as nib

    meta = result.meta or {}
    if meta.get("ijk") is None or meta.get("affine") is None:
        raise ValueError("result must come from a voxel store ('bubbles fmri analyze' "
                         "voxel_ci.zarr): it has no voxel indices and affine for NIfTI "
                         "maps")
    ijk = np.asarray(meta["ijk"], np.int64)
    shape = tuple(int(s) for s in meta["volume_shape"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, values in layer_volumes(result, control).items():
        vol = np.zeros(shape, np.float32)
        vol[tuple(ijk.T)] = np.nan_to_num(values, nan=0.0)
        img = nib.Nifti1Image(vol, np.asarray(meta["affine"], np.float64))
        img.header.set_xyzt_units("mm")
        if name.startswith("preferred_layer"):
            img.header["descrip"] = "; ".join(f"{k + 1}={l}" for k, l in
                                              enumerate(result.layers))[:79].encode()
        path = out / f"{name}.nii.gz"
        nib.save(img, str(path))
        paths.append(path)
    return paths


def roi_table(result, labels=None, names=None, *, control=None) -> pd.DataFrame:
    """One row per region: voxels, scored voxels, the layer preferred most often, the
    mean best r of each layer (and of the control network), median score over ceiling.

    Parameters
    ----------
    result : ManyComparison
    labels : ndarray of int (n_a,), optional
        Region of each target of ``a`` (0 = none). Without it every target is its own
        row (``a`` of ROIs or people).
    names : dict int -> str, optional
        Region names (default ``label_<k>``).
    control : ManyComparison, optional
        The same ``a`` against the random-weights network.
    """
    n = result.n_a
    if labels is None:
        groups = [(nm, np.array([i])) for i, nm in enumerate(result.names_a)]
    else:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must give one region per target of a ({n}), got "
                             f"shape {labels.shape}")
        groups = [((names or {}).get(int(k), f"label_{int(k)}"),
                   np.flatnonzero(labels == k)) for k in np.unique(labels) if k != 0]
    rows = []
    pref = result.preferred_layer
    pfit = result.preferred_layer_fit
    for name, idx in groups:
        row = {"region": name, "n_targets": len(idx)}
        if result.scored is not None:
            row["n_scored"] = int(result.scored[idx].sum())
            row["median_score_over_ceiling"] = _nanmedian(result.score[idx])
        mean_r = np.nanmean(np.where(np.isfinite(result.layer_r[idx]),
                                     result.layer_r[idx], np.nan), axis=0) if len(idx) \
            else np.full(len(result.layers), np.nan)
        k = int(np.nanargmax(mean_r)) if np.isfinite(mean_r).any() else -1
        row["preferred_layer"] = result.layers[k] if k >= 0 else ""
        counts = np.bincount(pref[idx][pref[idx] >= 0], minlength=len(result.layers))
        row["most_often_preferred"] = (result.layers[int(np.argmax(counts))]
                                       if counts.sum() else "")
        if pfit is not None:
            fit = np.nanmean(result.layer_fit_r[idx], axis=0)
            row["preferred_layer_fit"] = (result.layers[int(np.nanargmax(fit))]
                                          if np.isfinite(fit).any() else "")
        for j, layer in enumerate(result.layers):
            row[f"mean_r_{layer}"] = float(mean_r[j])
            row[f"share_{layer}"] = float(counts[j] / max(counts.sum(), 1))
            if result.layer_fit_r is not None:
                row[f"mean_fit_r_{layer}"] = float(np.nanmean(result.layer_fit_r[idx, j]))
            if control is not None:
                row[f"control_mean_r_{layer}"] = float(np.nanmean(control.layer_r[idx, j]))
        rows.append(row)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # all-NaN groups
        return pd.DataFrame(rows)


# -- figures --------------------------------------------------------------------------
def plot_layer_matrix(values, rows, layers, *, title="", label="best r", floor=None):
    """Heat map of ``values`` (n_rows, n_layers): targets (or regions) by layers, with
    each cell's value written in it (and the control's floor under it when given).

    Returns a matplotlib Figure (Agg canvas, not registered with pyplot).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    v = np.asarray(values, np.float64)
    if v.shape != (len(rows), len(layers)):
        raise ValueError(f"values must have shape ({len(rows)}, {len(layers)}) (rows x "
                         f"layers), got {v.shape}")
    fig = Figure(figsize=(1.6 + 1.1 * len(layers), 1.2 + 0.32 * len(rows)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    top = float(np.nanmax(np.abs(v))) if np.isfinite(v).any() else 1.0
    im = ax.imshow(v, cmap="RdBu_r", vmin=-top, vmax=top, aspect="auto",
                   interpolation="nearest")
    for (i, j), x in np.ndenumerate(v):
        if np.isfinite(x):
            text = f"{x:.2f}" + ("" if floor is None or not np.isfinite(floor[i, j])
                                 else f"\n({floor[i, j]:.2f})")
            ax.text(j, i, text, ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    fig.colorbar(im, ax=ax, label=label, shrink=0.8)
    cap = title + ("\n(in brackets: the random-weights network)" if floor is not None
                   else "")
    ax.set_title(cap, fontsize=8)
    fig.tight_layout()
    return fig


def plot_best_pairs(result, a, b, *, top=8, background=None, title=""):
    """Gallery of the ``top`` best-matched pairs: each target of ``a`` beside its best
    map of ``b``, both on the common grid (:func:`analysis.figures.plot_montage`)."""
    sa, sb = load_stack(a, what="a"), load_stack(b, what="b")
    common = tuple(result.info["common_shape"])
    ta = _Transform(sa.shape, common, result.info.get("extra_sigma_a", 0.0), None)
    tb = _Transform(sb.shape, common, result.info.get("extra_sigma_b", 0.0), None)
    order = _top(result.best_r, min(int(top), 16))
    maps, names = [], []
    for i in order:
        j = int(result.best[i])
        maps.append(ta.maps(sa.read(i, i + 1))[0].sum(axis=0))
        maps.append(tb.maps(sb.read(j, j + 1))[0].sum(axis=0))
        names += [result.names_a[i], f"{result.names_b[j]} r={result.best_r[i]:.2f}"]
    if not maps:
        raise ValueError("no target of a has a best match to draw")
    bg = None
    if background is not None and np.shape(background) != common:
        bg = ndimage.zoom(np.asarray(background, float),
                          (common[0] / np.shape(background)[0],
                           common[1] / np.shape(background)[1]), order=1)
    elif background is not None:
        bg = np.asarray(background, float)
    return plot_montage(np.stack(maps), names, background=bg, limit=32,
                        title=title or "best-matched pairs (a, then its best map of b)")

