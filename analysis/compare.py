"""Compare diagnostic images: human vs model, human vs voxel, unit vs voxel.

Scoring follows REFERENCES section 4:

* Pearson and Spearman correlation of the two maps over pixels (all bands flattened
  together; optionally inside a region), after smoothing both alike with the same
  Gaussian (``sigma`` pixels; 0 = as they are -- classification images are already
  smoothed with the bubble sigma).
* Noise ceiling: the human trials are split at random into halves, a classification
  image is made from each half and the two are correlated (``r``); Spearman-Brown
  ``r_sb = 2 r / (1 + r)`` estimates the reliability of the full-data map. A noiseless
  model can correlate at most ``sqrt(r_sb)`` with a map of reliability ``r_sb``
  (Spearman's correction for attenuation), so the default ceiling is ``sqrt(r_sb)``;
  ``ceiling='r_sb'`` divides by the reliability itself, as some benchmarks do (scores
  above 1 are then possible with a noisy human map). The score is the model
  correlation over the ceiling.
* Permutation p-value: the human responses are shuffled across trials, the human map
  recomputed (one call of :func:`analysis.classification_image` for a chunk of
  permutations at once) and correlated with the model maps; with many model maps
  (units) the best-matching one is tested against the maximum over units of each
  permutation, which corrects for picking the best.

B may hold many targets (the units of a layer, voxels): every target is scored and the
best-matching one reported. No torch here: the maps come from files or arrays.

References
----------
Spearman, C. (1910). Correlation calculated from faulty data. Br. J. Psychol. 3, 271-295.
Brown, W. (1910). Some experimental results in the correlation of mental abilities.
Br. J. Psychol. 3, 296-322.
Nili, H. et al. (2014). A toolbox for representational similarity analysis. PLoS
Comput. Biol. 10(4):e1003553. doi:10.1371/journal.pcbi.1003553
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.stats import rankdata

from .diagnostic import FORMAT as DIAGNOSTIC_FORMAT
from .diagnostic import DiagnosticImage, to_jsonable

__all__ = ["load_image", "smooth_maps", "correlate", "spearman_brown", "noise_ceiling",
           "permutation_null", "Comparison", "compare", "figure", "main"]


# -- loading -------------------------------------------------------------------------
def load_image(path) -> DiagnosticImage:
    """A DiagnosticImage from a stem (``stem.npz`` + ``stem.json``) or a bare ``.npz``.

    ``bubbles analyze`` writes ``ci.npz`` + ``ci.json``: a DiagnosticImage whose ``info``
    records the session, block, response column and method, which :func:`compare` uses
    to recompute the map from the same trials. A ``stem.json`` beside the ``.npz`` that
    is not valid JSON, or a DiagnosticImage JSON that cannot be read, is an error (it is
    never silently ignored). A bare ``.npz`` (no ``.json``, or a JSON of another
    format) gives its array ``z`` (or its only array), with no trials attached.
    """
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
    js, npz_stem = stem.with_suffix(".json"), stem.with_suffix(".npz")
    if js.is_file() and npz_stem.is_file():
        try:
            meta = json.loads(js.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"diagnostic image {js} (beside {npz_stem.name}) is not valid "
                             f"JSON ({exc}); the file is damaged: rewrite it (e.g. run "
                             "'bubbles analyze' again) or remove it to read the .npz "
                             "alone") from None
        if isinstance(meta, dict) and meta.get("format") == DIAGNOSTIC_FORMAT:
            try:
                return DiagnosticImage.load(stem)
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"cannot read the diagnostic image {stem} "
                                 f"({js.name} + {npz_stem.name}): {exc!r}") from None
    npz = p if p.suffix == ".npz" else npz_stem
    if not npz.is_file():
        raise FileNotFoundError(f"diagnostic image {path} not found (expected a stem with "
                                f".npz/.json or an .npz file)")
    with np.load(npz) as data:
        names = list(data.keys())
        key = "z" if "z" in names else (names[0] if len(names) == 1 else None)
        if key is None:
            raise ValueError(f"{npz} must hold an array 'z' (or exactly one array), has "
                             f"{names}")
        z = data[key]
    return DiagnosticImage(z=z, method="unknown", spec=None, n_trials=0,
                           info={"source": str(npz)})


def _targets(img: DiagnosticImage) -> tuple[np.ndarray, list[str]]:
    """(T, ...) stack of maps and their names (T = 1 for one observer)."""
    z = np.asarray(img.z, dtype=np.float64)
    info = img.info or {}
    many = info.get("responses_ndim") == 2 or (
        z.ndim == 3 and img.spec is not None and not img.spec.multiscale) or (
        z.ndim == 4)
    if z.ndim == 2 or not many:
        z = z[None]
    names = info.get("targets")
    if not names or len(names) != len(z):
        names = [str(i) for i in range(len(z))]
    return z, [str(n) for n in names]


# -- scores --------------------------------------------------------------------------
def smooth_maps(z, sigma) -> np.ndarray:
    """Gaussian smoothing (``sigma`` pixels) over the last two axes; 0 = unchanged.

    Edges are reflected so that they are not darkened.
    """
    z = np.asarray(z, dtype=np.float64)
    if sigma is None or sigma == 0:
        return z
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0 pixels, got {sigma}")
    s = (0,) * (z.ndim - 2) + (float(sigma), float(sigma))
    return gaussian_filter(z, s, mode="reflect")


def _flat(z, region):
    """(T, P) pixels inside ``region`` (all bands together)."""
    z = np.asarray(z, dtype=np.float64)
    if region is not None:
        region = np.asarray(region, bool)
        if region.shape != z.shape[-2:]:
            raise ValueError(f"region must have the maps' shape {z.shape[-2:]}, got "
                             f"{region.shape}")
        z = z[..., region]
    return z.reshape(z.shape[0], -1)


def _standardise(x):
    x = x - x.mean(axis=1, keepdims=True)
    sd = np.sqrt((x * x).mean(axis=1, keepdims=True))
    return np.where(sd > 0, x / np.where(sd > 0, sd, 1), 0.0)


def _pearson(a, b):
    """Correlations of every row of a (1, P) with every row of b (T, P) -> (T,)."""
    return (_standardise(b) @ _standardise(a)[0]) / a.shape[1]


def _ranks(x):
    return np.stack([rankdata(row) for row in x])


def correlate(a, b, *, sigma=0.0, region=None):
    """Pearson and Spearman correlation of map ``a`` with map(s) ``b``.

    Parameters
    ----------
    a : ndarray (H, W) or (bands, H, W)
    b : ndarray shaped like ``a``, or a stack ``(T, ...)`` of such maps
    sigma : float
        Gaussian smoothing applied to both, in pixels.
    region : bool ndarray (H, W), optional
        Pixels to compare.

    Returns
    -------
    pearson, spearman : ndarray (T,) or float for one map

    Examples
    --------
    >>> a = np.random.default_rng(0).normal(size=(16, 16))
    >>> correlate(a, 2 * a + 1)
    (1.0, 1.0)
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    single = b.shape == a.shape
    if single:
        b = b[None]
    if b.shape[1:] != a.shape:
        raise ValueError(f"b must have the shape of a {a.shape} or (T, *{a.shape}), got "
                         f"{b.shape}")
    fa = _flat(smooth_maps(a[None], sigma), region)
    fb = _flat(smooth_maps(b, sigma), region)
    r = _pearson(fa, fb)
    rho = _pearson(_ranks(fa), _ranks(fb))
    if single:
        return float(np.round(r[0], 12)), float(np.round(rho[0], 12))
    return r, rho


def spearman_brown(r):
    """Reliability of the full data from a split-half correlation: ``2 r / (1 + r)``."""
    r = np.asarray(r, dtype=np.float64)
    return 2 * r / (1 + r)


def _center_maps(spec, centers):
    """Centre maps as a list of csr (one per band), built once per comparison."""
    from .ci import _as_center_maps
    return _as_center_maps(spec, centers)


def _rows(maps, idx):
    """The trials ``idx`` of csr centre maps (row slices, no re-rendering)."""
    return [m[idx] for m in maps]


def _select_trials(table, info, response):
    """The trials, response column and notes that made image A (``info`` from
    ``bubbles analyze``): the same block, the same dropped missing responses."""
    notes = {}
    block = info.get("block")
    if block is not None:
        if "block" not in table.data:
            raise ValueError(f"a was made from block {block!r} but the trials have no "
                             "'block' column")
        keep = (table.data["block"].astype(str) == str(block)).to_numpy()
        if not keep.any():
            blocks = sorted(table.data["block"].astype(str).unique())
            raise ValueError(f"a was made from block {block!r}, which matches no trial; "
                             f"the trials' blocks are {blocks}")
        table = table.select(keep)
        notes["block"] = block
    recorded = info.get("response")
    if response is None:
        response = recorded or "correct"
    elif recorded and response != recorded:
        warnings.warn(f"response {response!r} differs from the column {recorded!r} that a "
                      "was made from: the noise ceiling and p-value then describe another "
                      "map", UserWarning, stacklevel=3)
    if info.get("drop_missing"):
        table = table.dropna(response)
    notes["response"] = response
    return table, response, notes


def noise_ceiling(spec, centers, responses, *, n_splits=20, seed=0, sigma=0.0,
                  region=None, method="regression"):
    """Split-half reliability of a classification image, Spearman-Brown corrected.

    Parameters
    ----------
    spec : BubbleSpec
    centers : as :func:`analysis.classification_image` takes them
    responses : ndarray (n_trials,)
    n_splits : int
        Random half splits averaged.
    seed : int
    sigma, region : as :func:`correlate`
    method : str

    Returns
    -------
    dict
        ``r_half`` (mean split-half Pearson r), ``r_sb`` (Spearman-Brown of ``r_half``,
        the reliability of the full map), ``sqrt_r_sb`` (the highest correlation a
        noiseless model can reach), ``splits`` (every split's r).
    """
    from .ci import classification_image

    r = np.asarray(responses, dtype=np.float64)
    n = len(r)
    if n < 4:
        raise ValueError(f"responses must cover at least 4 trials for split halves, got {n}")
    if int(n_splits) < 1:
        raise ValueError(f"n_splits must be >= 1, got {n_splits}")
    maps = _center_maps(spec, centers)          # once; each half is a csr row slice
    rng = np.random.default_rng(seed)
    rs = []
    for _ in range(int(n_splits)):
        perm = rng.permutation(n)
        h1, h2 = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
        if np.ptp(r[h1]) == 0 or np.ptp(r[h2]) == 0:
            continue
        z1 = classification_image(spec, _rows(maps, h1), r[h1], method=method,
                                  progress=False).z
        z2 = classification_image(spec, _rows(maps, h2), r[h2], method=method,
                                  progress=False).z
        rs.append(correlate(z1, z2, sigma=sigma, region=region)[0])
    if not rs:
        raise ValueError("every split half had constant responses; need more trials")
    r_half = float(np.mean(rs))
    r_sb = float(spearman_brown(r_half))
    return {"r_half": r_half, "r_sb": r_sb, "sqrt_r_sb": float(np.sqrt(max(r_sb, 0.0))),
            "splits": rs, "n_splits": len(rs)}


def permutation_null(spec, centers, responses, maps, *, n_permutations=1000, seed=0,
                     sigma=0.0, region=None, method="regression", chunk=100):
    """Correlations of permuted-response human maps with ``maps``: (n_permutations, T).

    Each permutation shuffles ``responses`` across trials; a chunk of permutations is one
    many-target call of :func:`analysis.classification_image`.
    """
    from .ci import _permutations, classification_image

    r = np.asarray(responses, dtype=np.float64)
    rng = np.random.default_rng(seed)
    xs = _center_maps(spec, centers)            # once for every chunk
    fm = _standardise(_flat(smooth_maps(maps, sigma), region))
    out = []
    left = int(n_permutations)
    while left > 0:
        k = min(chunk, left)
        perms = _permutations(r, k, rng)       # the generator continues across chunks
        z = classification_image(spec, xs, perms, method=method, progress=False).z
        z = z.reshape((k,) + maps.shape[1:])
        fz = _standardise(_flat(smooth_maps(z, sigma), region))
        out.append(fz @ fm.T / fm.shape[1])
        left -= k
    return np.concatenate(out)


@dataclass
class Comparison:
    """Scores of B's maps against the reference (human) map A.

    Attributes
    ----------
    pearson, spearman : ndarray (T,)
        One value per target of B.
    names : list of str
    best : int
        Index of the best-matching target (largest Pearson r).
    ceiling : dict or None
        :func:`noise_ceiling` of A (needs A's trials), plus ``value`` (the ceiling used)
        and ``kind`` ('sqrt' or 'r_sb').
    score : float or None
        Best Pearson r over ``ceiling['value']``.
    p_value : float or None
        Permutation p of the best target (max over targets in the null).
    p_values : ndarray (T,) or None
        Uncorrected permutation p per target.
    info : dict
    """

    pearson: np.ndarray
    spearman: np.ndarray
    names: list
    best: int
    ceiling: dict | None = None
    score: float | None = None
    p_value: float | None = None
    p_values: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    @property
    def best_name(self):
        return self.names[self.best]

    def to_dict(self):
        d = {"best": self.best_name, "best_index": self.best,
             "pearson_best": float(self.pearson[self.best]),
             "spearman_best": float(self.spearman[self.best]),
             "ceiling": self.ceiling, "score_over_ceiling": self.score,
             "p_value": self.p_value,
             "targets": [{"name": n, "pearson": float(p), "spearman": float(s),
                          "p_value": None if self.p_values is None else float(pv)}
                         for n, p, s, pv in zip(self.names, self.pearson, self.spearman,
                                                self.p_values if self.p_values is not None
                                                else [None] * len(self.names))],
             "info": self.info}
        return to_jsonable(d)


def _resample(z, shape):
    from scipy.ndimage import zoom
    f = (1,) * (z.ndim - 2) + (shape[0] / z.shape[-2], shape[1] / z.shape[-1])
    return zoom(z, f, order=1)


CEILINGS = ("sqrt", "r_sb")


def compare(a, b, *, trials=None, response=None, sigma=0.0, region=None,
            n_permutations=1000, n_splits=20, seed=0, method=None,
            ceiling="sqrt") -> Comparison:
    """Score diagnostic image(s) ``b`` against the reference ``a``.

    Parameters
    ----------
    a : DiagnosticImage or ndarray
        The reference (usually a person's image), one map.
    b : DiagnosticImage or ndarray
        One map or many targets (units, voxels), same pixel grid (resampled bilinearly
        to A's grid if it differs; recorded in ``info``).
    trials : TrialTable or (spec, centers, responses), optional
        A's trials: needed for the noise ceiling and the permutation p-value. For a
        TrialTable the trials that made A are used: when ``a.info`` records a ``block``
        (``bubbles analyze --block``) only that block, and trials with a missing
        response are left out when A was made with ``--drop-missing``.
    response : str, optional
        Response column when ``trials`` is a TrialTable (default: the one recorded in
        ``a.info['response']``, else 'correct'; a different one warns).
    sigma, region : see :func:`correlate`
    n_permutations, n_splits, seed : int
        0 permutations skips the p-value.
    method : str, optional
        Classification-image method for the ceiling and the null (default: A's method
        (``a.method``) when it is one of classification_image's, else 'regression').
    ceiling : {'sqrt', 'r_sb'}
        Divide by ``sqrt(r_sb)`` (default: the attenuation bound) or by ``r_sb``.

    Returns
    -------
    Comparison
    """
    if ceiling not in CEILINGS:
        raise ValueError(f"ceiling must be one of {list(CEILINGS)}; {ceiling!r} was provided")
    ia, ib = (x if isinstance(x, DiagnosticImage)
              else DiagnosticImage(np.asarray(x), "unknown", None, 0) for x in (a, b))
    za, _ = _targets(ia)
    if len(za) != 1:
        raise ValueError(f"a must hold one map (a person's image), got {len(za)} targets")
    za = za[0]
    zb, names = _targets(ib)
    info = {"sigma": sigma, "region": None if region is None else int(np.sum(region))}
    if zb.shape[-2:] != za.shape[-2:]:
        info["resampled_b"] = f"{zb.shape[-2:]} -> {za.shape[-2:]}"
        zb = _resample(zb, za.shape[-2:])
    if zb.shape[1:] != za.shape:
        raise ValueError(f"b's maps {zb.shape[1:]} must match a's {za.shape} (same bands)")
    pear, spear = correlate(za, zb, sigma=sigma, region=region)
    pear, spear = np.atleast_1d(pear), np.atleast_1d(spear)
    best = int(np.nanargmax(pear))
    res = Comparison(pear, spear, names, best, info=info)
    if trials is None:
        info["note"] = "no trials for A: noise ceiling and p-value not computed"
        return res
    from .ci import METHODS

    if hasattr(trials, "center_list"):          # a TrialTable: the trials that made A
        table, response, notes = _select_trials(trials, ia.info or {}, response)
        info.update(notes)
        spec, centers, r = table.spec, table.center_maps(), table.responses(response)
    else:
        spec, centers, r = trials
        r = np.asarray(r, dtype=np.float64)
    centers = _center_maps(spec, centers)     # csr once: every split and chunk slices it
    if method is None:
        method = ia.method if ia.method in METHODS else "regression"
    info.update(method=method, n_trials=len(r))
    res.ceiling = noise_ceiling(spec, centers, r, n_splits=n_splits, seed=seed, sigma=sigma,
                                region=region, method=method)
    value = res.ceiling["sqrt_r_sb"] if ceiling == "sqrt" else res.ceiling["r_sb"]
    res.ceiling.update(value=value, kind=ceiling)
    res.score = float(pear[best] / value) if value > 0 else None
    if ceiling == "sqrt" and res.score is not None and res.score > 1.25:   # ~1: true model
        warnings.warn(
            f"score over ceiling is {res.score:.2f}, well above 1: the split-half ceiling "
            f"of a (r_half {res.ceiling['r_half']:.3f} from {len(r)} trials) is too noisy "
            "to bound the score; smooth maps (coarse bands) have few independent pixels. "
            "Collect more trials or compare inside a region / band by band",
            UserWarning, stacklevel=2)
    if n_permutations:
        null = permutation_null(spec, centers, r, zb, n_permutations=n_permutations,
                                seed=seed + 1, sigma=sigma, region=region, method=method)
        n = len(null)
        res.p_values = (1 + (null >= pear[None]).sum(axis=0)) / (1 + n)
        res.p_value = float((1 + (null.max(axis=1) >= pear[best]).sum()) / (1 + n))
        info["n_permutations"] = n
    return res


# -- figure --------------------------------------------------------------------------
PANEL_ORDER = ("human", "model observer", "best unit", "occlusion", "saliency",
               "integrated gradients")


def figure(panels, path=None, *, background=None, titles=None, caption=None, dpi=100):
    """Maps side by side: human, model observer, best unit, occlusion, saliency, IG.

    Parameters
    ----------
    panels : dict
        name -> (H, W) map (a multi-band map shows its band sum). The first entry (the
        reference, e.g. the human map) is drawn first; the others follow PANEL_ORDER,
        unknown names last.
    path : path-like, optional
        PNG to write.
    background : ndarray (H, W), optional
        Grey image drawn under every map.
    titles : dict, optional
        name -> extra line (e.g. the correlation with the human map).
    caption : str, optional
        A line under the panels (what the colours mean).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("panels must hold at least one map")
    rank = {name: i for i, name in enumerate(PANEL_ORDER)}
    first, *rest = panels.items()           # the reference (the human map) stays first
    panels = dict([first] + sorted(rest, key=lambda kv: rank.get(kv[0], len(rank))))
    n = len(panels)
    fig = Figure(figsize=(2.6 * n, 3.4))
    FigureCanvasAgg(fig)
    from .figures import _draw_map

    for i, (name, m) in enumerate(panels.items()):
        m = np.asarray(m, dtype=np.float64)
        while m.ndim > 2:
            m = m.sum(axis=0)
        ax = fig.add_subplot(1, n, i + 1)
        ax.axis("off")
        v = float(np.nanmax(np.abs(m))) or 1.0
        _draw_map(ax, m, background=background, vmax=v, alpha=0.7)
        extra = (titles or {}).get(name)
        ax.set_title(name if not extra else f"{name}\n{extra}", fontsize=8)
    if caption:
        fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.05 if caption else 0, 1, 1))
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def _background(path, trials, shape):
    """--background file, else the mean of the faces of A's session (as ``bubbles
    analyze`` draws it), else None."""
    from .io import read_background

    if path:
        return read_background(path, shape)
    bg = trials.mean_stimulus() if trials is not None else None
    return bg if bg is not None and bg.shape == tuple(shape) else None


# -- command line --------------------------------------------------------------------
def _parser():
    p = argparse.ArgumentParser(
        prog="bubbles compare",
        description="Compare diagnostic image(s) B with the reference A (a person's): "
                    "Pearson / Spearman, split-half noise ceiling, permutation p-value, "
                    "and a side-by-side figure.")
    p.add_argument("a", help="reference DiagnosticImage stem or .npz (e.g. a person's)")
    p.add_argument("b", help="DiagnosticImage stem or .npz to score (one map or many units)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--trials", help="A's session CSV (for the ceiling and p-value); "
                   "default: the session recorded with A, if any")
    p.add_argument("--response", default=None, help="response column of the session "
                   "(default: the one A was made from, recorded in its .json; else "
                   "'correct')")
    p.add_argument("--sigma", type=float, default=0.0, help="extra Gaussian smoothing of "
                   "both maps, pixels (0 = none)")
    p.add_argument("--n-permutations", type=int, default=1000)
    p.add_argument("--n-splits", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ceiling", default="sqrt", choices=CEILINGS,
                   help="noise ceiling: sqrt(r_sb) (attenuation bound) or r_sb")
    p.add_argument("--panel", action="append", default=[], metavar="NAME=STEM",
                   help="extra figure panel, e.g. occlusion=out/occlusion_id00_happy "
                        "(repeat; model observer, occlusion, saliency, integrated gradients)")
    p.add_argument("--background", help="grey image (H, W) drawn under the maps (.npy or "
                   "an image file); default: the mean of the faces of A's session")
    p.add_argument("--label-a", default="human", help="panel name of A")
    p.add_argument("--label-b", default=None, help="panel name of B (default: 'model "
                   "observer' for one map, 'best unit' for many)")
    p.add_argument("--force", action="store_true", help="replace an existing "
                   "compare.json / compare.png in --out")
    return p


def _run(args, out):
    """The work of :func:`main`: scores, compare.json and compare.png."""
    a, b = load_image(args.a), load_image(args.b)
    trials = None
    source = args.trials or (a.info or {}).get("session")
    if not source:
        warnings.warn(f"{args.a} records no session: no noise ceiling or p-value (pass "
                      "--trials SESSION.csv, or run 'bubbles analyze' again to write "
                      "its ci.json record)", stacklevel=2)
    if source:
        from .trials import TrialTable
        trials = TrialTable.read(source)
    res = compare(a, b, trials=trials, response=args.response, sigma=args.sigma,
                  n_permutations=args.n_permutations, n_splits=args.n_splits,
                  seed=args.seed, ceiling=args.ceiling)
    za = _targets(a)[0][0]
    zb, names = _targets(b)
    label = args.label_b or ("model observer" if len(zb) == 1 else "best unit")
    panels = {args.label_a: za, label: zb[res.best]}
    titles = {label: f"{names[res.best] if len(zb) > 1 else ''} "
                     f"r={res.pearson[res.best]:.2f}".strip()}
    panel_r = {}                    # Pearson r of each extra panel with A
    for item in args.panel:
        name, sep, stem = item.partition("=")
        if not sep:
            raise ValueError(f"--panel must be NAME=STEM, got {item!r}")
        zp = _targets(load_image(stem))[0][0]
        if zp.shape[-2:] != za.shape[-2:]:
            zp = _resample(zp, za.shape[-2:])
        panels[name] = zp
        if zp.shape == za.shape:
            panel_r[name] = correlate(za, zp, sigma=args.sigma)[0]
            titles[name] = f"r={panel_r[name]:.2f}"
        elif zp.ndim == 2:          # a one-scale map against a multi-band one
            panel_r[name] = correlate(za.sum(axis=0), zp, sigma=args.sigma)[0]
            titles[name] = f"r={panel_r[name]:.2f} (with the band sum)"
    out.mkdir(parents=True, exist_ok=True)
    summary = res.to_dict()
    summary.update(a=str(args.a), b=str(args.b), trials=source, panels=panel_r)
    (out / "compare.json").write_text(json.dumps(summary, indent=2))
    bg = _background(args.background, trials, za.shape[-2:])
    figure(panels, out / "compare.png", background=bg, titles=titles,
           caption=f"reference: {args.a}; red = positive (diagnostic), each panel "
                   "scaled to its own max |value|; multi-band maps show the sum of "
                   "their bands; r = Pearson r with the reference")
    return res


def main(argv=None) -> int:
    """Entry point of ``bubbles compare A B --out DIR``; returns the exit code.

    Warnings (a missing figure background, a score far above the ceiling, a response
    other than A's) are printed to stderr as ``bubbles compare: warning: ...``.
    """
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:          # argparse printed the message (or --help)
        return int(exc.code or 0)
    out = Path(args.out)
    existing = [out / f for f in ("compare.json", "compare.png") if (out / f).exists()]
    if existing and not args.force:
        print(f"bubbles compare: error: {existing[0]} exists; use --force to replace it",
              file=sys.stderr)
        return 1
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = _run(args, out)
    except (ValueError, FileNotFoundError) as exc:
        print(f"bubbles compare: error: {exc}", file=sys.stderr)
        return 1
    finally:
        for w in caught:
            if issubclass(w.category, UserWarning):
                print(f"bubbles compare: warning: {w.message}", file=sys.stderr)
    line = (f"best: {res.best_name} Pearson {res.pearson[res.best]:.3f}, Spearman "
            f"{res.spearman[res.best]:.3f}")
    if res.ceiling is not None:
        score = "n/a" if res.score is None else f"{res.score:.3f}"
        line += (f"; split-half r {res.ceiling['r_half']:.3f}, r_sb "
                 f"{res.ceiling['r_sb']:.3f}, ceiling {res.ceiling['value']:.3f} "
                 f"({res.ceiling['kind']}); score/ceiling {score}")
    if res.p_value is not None:
        line += f"; permutation p {res.p_value:.4f}"
    print(line)
    print(f"wrote {out / 'compare.json'} and {out / 'compare.png'}")
    return 0
