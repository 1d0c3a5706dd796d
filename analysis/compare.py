"""Compare diagnostic images: human vs model, human vs voxel, unit vs voxel.

Scoring, as model-brain benchmarks score a model against a noisy human measurement:

* Pearson and Spearman correlation of the two maps over pixels (all bands flattened
  together; optionally inside a region), after smoothing both alike with the same
  Gaussian (``smoothing``: its SD in pixels; 0 = as they are -- classification images
  are already smoothed with the bubble sigma). Maps must be finite, and a map with no
  spread (constant) has no correlation: both are refused by name.
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
best-matching one reported. No torch here: the maps come from files or arrays
(:func:`analysis.diagnostic.load_image`); ``bubbles compare`` is the command.

References
----------
Spearman, C. (1910). Correlation calculated from faulty data. Br. J. Psychol. 3, 271-295.
Brown, W. (1910). Some experimental results in the correlation of mental abilities.
Br. J. Psychol. 3, 296-322.
Nili, H. et al. (2014). A toolbox for representational similarity analysis. PLoS
Comput. Biol. 10(4):e1003553. doi:10.1371/journal.pcbi.1003553
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter, zoom
from scipy.stats import rankdata

from .analyze import select_trials
from .ci import METHODS, _permutations, as_center_maps, classification_image
from .diagnostic import DiagnosticImage, to_jsonable
from .trials import TrialTable
from .zscore import zscore

__all__ = ["smooth_maps", "correlate", "Correlation", "spearman_brown", "noise_ceiling",
           "NoiseCeiling", "permutation_null", "Comparison", "compare",
           "comparison_panels"]


# -- scores --------------------------------------------------------------------------
def smooth_maps(z, smoothing) -> np.ndarray:
    """Gaussian smoothing (SD ``smoothing`` pixels) over the last two axes; 0 = unchanged.

    Edges are reflected so that they are not darkened.
    """
    z = np.asarray(z, dtype=np.float64)
    if smoothing is None or smoothing == 0:
        return z
    if not (np.isscalar(smoothing) and np.isfinite(smoothing) and smoothing > 0):
        raise ValueError(f"smoothing must be a Gaussian SD >= 0 pixels, got {smoothing!r}")
    s = (0,) * (z.ndim - 2) + (float(smoothing), float(smoothing))
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


def _pearson(a, b):
    """Correlations of every row of a (1, P) with every row of b (T, P) -> (T,);
    NaN for a row without spread."""
    za, zb = zscore(a, axis=1), zscore(b, axis=1)
    r = zb @ za[0] / a.shape[1]
    flat = (np.ptp(b, axis=1) == 0) | (np.ptp(a[0]) == 0)
    return np.where(flat, np.nan, r)


def _ranks(x):
    return np.stack([rankdata(row) for row in x])


def check_maps(z, what, names=None):
    """Refuse non-finite maps, naming the map (and its first bad targets)."""
    bad = ~np.isfinite(z).reshape(len(z), -1).all(axis=1)
    if bad.any():
        idx = np.flatnonzero(bad)
        which = [names[i] if names else str(i) for i in idx[:5]]
        count = int((~np.isfinite(z[idx[0]])).sum())
        raise ValueError(f"{what} holds NaN or infinite values ({len(idx)} map(s), first "
                         f"{which}, {count} bad pixel(s) there): a correlation with it "
                         "means nothing; make the map again (e.g. an attribution with a "
                         "finite baseline)")


@dataclass
class Correlation:
    """Correlations of a reference map with one or more maps.

    Attributes
    ----------
    pearson, spearman : ndarray (T,)
        One value per map of B (T = 1 for one map); NaN for a constant map.
    """

    pearson: np.ndarray
    spearman: np.ndarray


def correlate(a, b, *, smoothing=0.0, region=None) -> Correlation:
    """Pearson and Spearman correlation of map ``a`` with map(s) ``b``.

    Parameters
    ----------
    a : ndarray (H, W) or (bands, H, W)
    b : ndarray shaped like ``a``, or a stack ``(T, ...)`` of such maps
    smoothing : float
        SD of the Gaussian applied to both, in pixels.
    region : bool ndarray (H, W), optional
        Pixels to compare.

    Returns
    -------
    Correlation
        Arrays of shape (T,) (T = 1 when ``b`` is one map). Maps holding NaN or inf,
        and a constant ``a``, are refused (ValueError); a constant map of ``b`` gets NaN.

    Examples
    --------
    >>> a = np.random.default_rng(0).normal(size=(16, 16))
    >>> c = correlate(a, 2 * a + 1)
    >>> c.pearson.round(6), c.spearman.round(6)
    (array([1.]), array([1.]))
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if b.shape == a.shape:
        b = b[None]
    if b.shape[1:] != a.shape:
        raise ValueError(f"b must have the shape of a {a.shape} or (T, *{a.shape}), got "
                         f"{b.shape}")
    check_maps(a[None], "map a")
    check_maps(b, "map b")
    fa = _flat(smooth_maps(a[None], smoothing), region)
    fb = _flat(smooth_maps(b, smoothing), region)
    if np.ptp(fa) == 0:
        raise ValueError(f"map a is constant ({fa[0, 0]:g} everywhere"
                         f"{' in the region' if region is not None else ''}): it has no "
                         "correlation with anything")
    return Correlation(_pearson(fa, fb), _pearson(_ranks(fa), _ranks(fb)))


def spearman_brown(r):
    """Reliability of the full data from a split-half correlation: ``2 r / (1 + r)``."""
    r = np.asarray(r, dtype=np.float64)
    return 2 * r / (1 + r)


def trial_rows(maps, idx):
    """The trials ``idx`` of csr centre maps (row slices, no re-rendering)."""
    return [m[idx] for m in maps]


def image_trials(table, info, response):
    """The trials, response column and notes that made image A (``info`` from
    ``bubbles analyze``): the same block, the same dropped missing responses, chosen by
    :func:`analysis.analyze.select_trials` as when A was made."""
    recorded = info.get("response")
    if response is None:
        response = recorded or "correct"
    elif recorded and response != recorded:
        warnings.warn(f"response {response!r} differs from the column {recorded!r} that a "
                      "was made from: the noise ceiling and p-value then describe another "
                      "map", UserWarning, stacklevel=3)
    block = info.get("block")
    table = select_trials(table, block=block, response=response,
                          drop_missing=bool(info.get("drop_missing")), warn_blocks=False)
    notes = {"response": response}
    if block is not None:
        notes["block"] = block
    return table, response, notes


@dataclass
class NoiseCeiling:
    """Split-half reliability of a classification image (:func:`noise_ceiling`).

    Attributes
    ----------
    r_half : float
        Mean split-half Pearson r.
    r_sb : float
        Spearman-Brown of ``r_half``: the reliability of the full map.
    sqrt_r_sb : float
        The highest correlation a noiseless model can reach.
    splits : list of float
        Every split's r.
    """

    r_half: float
    r_sb: float
    sqrt_r_sb: float
    splits: list

    @property
    def n_splits(self):
        return len(self.splits)

    def value(self, kind="sqrt"):
        """The ceiling a score is divided by: ``sqrt_r_sb`` ('sqrt') or ``r_sb``."""
        if kind not in CEILINGS:
            raise ValueError(f"kind must be one of {list(CEILINGS)}; {kind!r} was provided")
        return self.sqrt_r_sb if kind == "sqrt" else self.r_sb

    def to_dict(self):
        return {"r_half": self.r_half, "r_sb": self.r_sb, "sqrt_r_sb": self.sqrt_r_sb,
                "splits": list(self.splits), "n_splits": self.n_splits}


def noise_ceiling(spec, centers, responses, *, n_splits=20, seed=0, smoothing=0.0,
                  region=None, method="regression") -> NoiseCeiling:
    """Split-half reliability of a classification image, Spearman-Brown corrected.

    Parameters
    ----------
    spec : BubbleSpec
    centers : as :func:`analysis.classification_image` takes them
    responses : ndarray (n_trials,)
    n_splits : int
        Random half splits averaged.
    seed : int, SeedSequence or Generator
    smoothing, region : as :func:`correlate`
    method : str

    Returns
    -------
    NoiseCeiling
    """
    r = np.asarray(responses, dtype=np.float64)
    n = len(r)
    if n < 4:
        raise ValueError(f"responses must cover at least 4 trials for split halves, got {n}")
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or (
            n_splits < 1):
        raise ValueError(f"n_splits must be an integer >= 1, got {n_splits!r}")
    maps = as_center_maps(spec, centers)          # once; each half is a csr row slice
    rng = np.random.default_rng(seed)
    rs = []
    for _ in range(int(n_splits)):
        perm = rng.permutation(n)
        h1, h2 = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
        if np.ptp(r[h1]) == 0 or np.ptp(r[h2]) == 0:
            continue
        z1 = classification_image(spec, trial_rows(maps, h1), r[h1], method=method,
                                  progress=False).z
        z2 = classification_image(spec, trial_rows(maps, h2), r[h2], method=method,
                                  progress=False).z
        rs.append(float(correlate(z1, z2, smoothing=smoothing, region=region).pearson[0]))
    if not rs:
        raise ValueError("every split half had constant responses; need more trials")
    r_half = float(np.mean(rs))
    r_sb = float(spearman_brown(r_half))
    return NoiseCeiling(r_half, r_sb, float(np.sqrt(max(r_sb, 0.0))), rs)


def permutation_null(spec, centers, responses, maps, *, n_permutations=1000, seed=0,
                     smoothing=0.0, region=None, method="regression", chunk_size=100):
    """Correlations of permuted-response human maps with ``maps``: (n_permutations, T).

    Each permutation shuffles ``responses`` across trials; a chunk of permutations is one
    many-target call of :func:`analysis.classification_image`.
    """
    if isinstance(n_permutations, bool) or not isinstance(
            n_permutations, (int, np.integer)) or n_permutations < 1:
        raise ValueError(f"n_permutations must be an integer >= 1, got {n_permutations!r}")
    r = np.asarray(responses, dtype=np.float64)
    rng = np.random.default_rng(seed)
    xs = as_center_maps(spec, centers)            # once for every chunk
    fm = zscore(_flat(smooth_maps(maps, smoothing), region), axis=1)
    out = []
    left = int(n_permutations)
    while left > 0:
        k = min(chunk_size, left)
        perms = _permutations(r, k, rng)       # the generator continues across chunks
        z = classification_image(spec, xs, perms, method=method, progress=False).z
        z = z.reshape((k,) + maps.shape[1:])
        fz = zscore(_flat(smooth_maps(z, smoothing), region), axis=1)
        out.append(fz @ fm.T / fm.shape[1])
        left -= k
    return np.concatenate(out)


CEILINGS = ("sqrt", "r_sb")


@dataclass
class Comparison:
    """Scores of B's maps against the reference (human) map A.

    Attributes
    ----------
    pearson, spearman : ndarray (T,)
        One value per target of B (NaN for a constant map).
    names : list of str
    best : int
        Index of the best-matching target (largest Pearson r).
    ceiling : NoiseCeiling or None
        :func:`noise_ceiling` of A (needs A's trials).
    ceiling_kind : {'sqrt', 'r_sb'}
        Which ceiling ``score`` is divided by.
    score : float or None
        Best Pearson r over the ceiling.
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
    ceiling: NoiseCeiling | None = None
    ceiling_kind: str = "sqrt"
    score: float | None = None
    p_value: float | None = None
    p_values: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    @property
    def best_name(self):
        return self.names[self.best]

    @property
    def ceiling_value(self):
        return None if self.ceiling is None else self.ceiling.value(self.ceiling_kind)

    def to_dict(self):
        ceiling = None
        if self.ceiling is not None:
            ceiling = dict(self.ceiling.to_dict(), value=self.ceiling_value,
                           kind=self.ceiling_kind)
        pv = self.p_values if self.p_values is not None else [None] * len(self.names)
        d = {"best": self.best_name, "best_index": self.best,
             "pearson_best": float(self.pearson[self.best]),
             "spearman_best": float(self.spearman[self.best]),
             "ceiling": ceiling, "score_over_ceiling": self.score,
             "p_value": self.p_value,
             "targets": [{"name": n, "pearson": float(p), "spearman": float(s),
                          "p_value": None if v is None else float(v)}
                         for n, p, s, v in zip(self.names, self.pearson, self.spearman, pv)],
             "info": self.info}
        return to_jsonable(d)


def _resample(z, shape):
    f = (1,) * (z.ndim - 2) + (shape[0] / z.shape[-2], shape[1] / z.shape[-1])
    return zoom(z, f, order=1)


def _as_image(x, what):
    if isinstance(x, DiagnosticImage):
        return x
    z = np.asarray(x)
    if z.ndim == 2:
        return DiagnosticImage(z, "unknown", None, 0)
    raise TypeError(f"{what} must be a DiagnosticImage (whose dims name its axes) or one "
                    f"(H, W) array, got an array of shape {z.shape}")


def _one_map(img, what):
    """(bands, H, W) of a one-target image; its bands dropped to (H, W) when single."""
    if img.n_targets != 1:
        raise ValueError(f"{what} must hold one map (a person's image), got "
                         f"{img.n_targets} targets")
    return img.maps()[0] if img.n_bands > 1 else img.maps()[0, 0]


def _stack(img):
    """(T, bands, H, W), or (T, H, W) for a single-band image."""
    m = img.maps()
    return m if img.n_bands > 1 else m[:, 0]


def compare(a, b, *, trials=None, response=None, smoothing=0.0, region=None,
            n_permutations=1000, n_splits=20, seed=0, method=None,
            ceiling="sqrt") -> Comparison:
    """Score diagnostic image(s) ``b`` against the reference ``a``.

    Parameters
    ----------
    a : DiagnosticImage or ndarray (H, W)
        The reference (usually a person's image), one map.
    b : DiagnosticImage or ndarray (H, W)
        One map or many targets (units, voxels), same pixel grid: a map of another size
        is resampled bilinearly to A's grid, with a warning, and recorded in ``info``.
    trials : TrialTable or (spec, centers, responses), optional
        A's trials: needed for the noise ceiling and the permutation p-value. For a
        TrialTable the trials that made A are used: when ``a.info`` records a ``block``
        (``bubbles analyze --block``) only that block, and trials with a missing
        response are left out when A was made with ``--drop-missing``. Trials of another
        session (another image size, or another trial count than A records) are refused.
    response : str, optional
        Response column when ``trials`` is a TrialTable (default: the one recorded in
        ``a.info['response']``, else 'correct'; a different one warns).
    smoothing, region : see :func:`correlate`
    n_permutations, n_splits : int
        0 permutations skips the p-value.
    seed : int, SeedSequence or Generator
        The split halves and the permutations draw from two independent streams of it.
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
    if isinstance(n_permutations, bool) or not isinstance(
            n_permutations, (int, np.integer)) or n_permutations < 0:
        raise ValueError(f"n_permutations must be an integer >= 0 (0 skips the p-value), "
                         f"got {n_permutations!r}")
    ia, ib = _as_image(a, "a"), _as_image(b, "b")
    za = _one_map(ia, "a")
    zb, names = _stack(ib), ib.names
    info = {"smoothing": smoothing,
            "region": None if region is None else int(np.sum(region))}
    if zb.shape[-2:] != za.shape[-2:]:
        info["resampled_b"] = f"{zb.shape[-2:]} -> {za.shape[-2:]}"
        warnings.warn(f"b's maps are {zb.shape[-2]} x {zb.shape[-1]} pixels, a's "
                      f"{za.shape[-2]} x {za.shape[-1]}: b was resampled bilinearly to "
                      "a's grid before scoring", UserWarning, stacklevel=2)
        zb = _resample(zb, za.shape[-2:])
    if zb.shape[1:] != za.shape:
        raise ValueError(f"b's maps {zb.shape[1:]} must match a's {za.shape} (same bands)")
    check_maps(zb, "map b", names)
    corr = correlate(za, zb, smoothing=smoothing, region=region)
    pear, spear = corr.pearson, corr.spearman
    flat = np.isnan(pear)
    if flat.all():
        raise ValueError(f"every map of b is constant ({len(pear)} map(s)): nothing to "
                         "correlate with a")
    if flat.any():
        info["constant_targets"] = [names[i] for i in np.flatnonzero(flat)]
        warnings.warn(f"{int(flat.sum())} map(s) of b are constant (first "
                      f"{info['constant_targets'][:5]}): they have no correlation (NaN) "
                      "and are never the best match", UserWarning, stacklevel=2)
    best = int(np.nanargmax(pear))
    res = Comparison(pear, spear, names, best, ceiling_kind=ceiling, info=info)
    if trials is None:
        info["note"] = "no trials for A: noise ceiling and p-value not computed"
        return res
    if isinstance(trials, TrialTable):          # the trials that made A
        table, response, notes = image_trials(trials, ia.info or {}, response)
        info.update(notes)
        spec, centers, r = table.spec, table.center_maps(), table.responses(response)
    else:
        spec, centers, r = trials
        r = np.asarray(r, dtype=np.float64)
    if tuple(spec.shape) != tuple(za.shape[-2:]):
        raise ValueError(f"the trials are of {spec.shape[0]} x {spec.shape[1]} images but "
                         f"a is {za.shape[-2]} x {za.shape[-1]}: they are another "
                         "session's trials (give the session a was made from)")
    if ia.n_trials and len(r) != ia.n_trials:
        raise ValueError(f"a was made from {ia.n_trials} trials but the trials given hold "
                         f"{len(r)}: they are another session's (or another block's) trials")
    centers = as_center_maps(spec, centers)   # csr once: every split and chunk slices it
    if method is None:
        method = ia.method if ia.method in METHODS else "regression"
    info.update(method=method, n_trials=len(r))
    split_rng, null_rng = np.random.default_rng(seed).spawn(2)   # two independent streams
    res.ceiling = noise_ceiling(spec, centers, r, n_splits=n_splits, seed=split_rng,
                                smoothing=smoothing, region=region, method=method)
    value = res.ceiling_value
    res.score = float(pear[best] / value) if value > 0 else None
    if ceiling == "sqrt" and res.score is not None and res.score > 1.25:   # ~1: true model
        warnings.warn(
            f"score over ceiling is {res.score:.2f}, well above 1: the split-half ceiling "
            f"of a (r_half {res.ceiling.r_half:.3f} from {len(r)} trials) is too noisy "
            "to bound the score; smooth maps (coarse bands) have few independent pixels. "
            "Collect more trials or compare inside a region / band by band",
            UserWarning, stacklevel=2)
    if n_permutations:
        null = permutation_null(spec, centers, r, zb, n_permutations=n_permutations,
                                seed=null_rng, smoothing=smoothing, region=region,
                                method=method)
        n = len(null)
        with np.errstate(invalid="ignore"):
            res.p_values = np.where(flat, np.nan,
                                    (1 + (null >= pear[None]).sum(axis=0)) / (1 + n))
        res.p_value = float((1 + (null.max(axis=1) >= pear[best]).sum()) / (1 + n))
        info["n_permutations"] = n
    return res


# -- figure panels -------------------------------------------------------------------
def comparison_panels(a, b, result, extra=None, *, label_a="human", label_b=None,
                      smoothing=0.0):
    """The maps of a comparison figure, their titles, and each extra panel's r with A.

    Parameters
    ----------
    a, b : DiagnosticImage
        As given to :func:`compare`; B's best-matching target is drawn.
    result : Comparison
    extra : dict, optional
        name -> DiagnosticImage of more maps to show (attribution maps, a model
        observer); each is scored against A (its band sum against a multi-band A).
    label_a, label_b : str
        Panel names (default for B: 'model observer' for one map, 'best unit' for many).
    smoothing : float
        As for :func:`correlate`.

    Returns
    -------
    panels : dict name -> ndarray, titles : dict name -> str, panel_r : dict name -> float
    """
    za = _one_map(a, "a")
    zb = _stack(b)
    if zb.shape[-2:] != za.shape[-2:]:          # drawn on a's grid, as it was scored
        zb = _resample(zb, za.shape[-2:])
    label = label_b or ("model observer" if len(zb) == 1 else "best unit")
    best = result.best
    panels = {label_a: za, label: zb[best]}
    titles = {label: f"{b.names[best] if len(zb) > 1 else ''} "
                     f"r={result.pearson[best]:.2f}".strip()}
    panel_r = {}
    for name, img in (extra or {}).items():
        zp = _one_map(img, f"panel {name!r}")
        if zp.shape[-2:] != za.shape[-2:]:
            warnings.warn(f"panel {name!r} is {zp.shape[-2]} x {zp.shape[-1]} pixels: "
                          f"resampled to a's {za.shape[-2]} x {za.shape[-1]}",
                          UserWarning, stacklevel=2)
            zp = _resample(zp, za.shape[-2:])
        panels[name] = zp
        if zp.shape == za.shape:
            panel_r[name] = float(correlate(za, zp, smoothing=smoothing).pearson[0])
            titles[name] = f"r={panel_r[name]:.2f}"
        elif zp.ndim == 2:          # a one-scale map against a multi-band one
            panel_r[name] = float(correlate(za.sum(axis=0), zp,
                                            smoothing=smoothing).pearson[0])
            titles[name] = f"r={panel_r[name]:.2f} (with the band sum)"
    return panels, titles, panel_r
