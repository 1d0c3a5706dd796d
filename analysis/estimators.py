"""Classification images as penalized generalized linear models: 'glm' and 'sparse'.

The regression image (:func:`analysis.classification_image`) correlates each pixel's
mask with the response: unbiased, but it uses nothing of what is known about
diagnostic images, and it needs thousands of trials. Here the observer is modelled
instead, as a generalized linear model of the response on what each trial revealed
(Knoblauch & Maloney, 2008):

1. **features**: each trial's mask (:func:`bubbles.render_masks`, one block per band of
   a multi-scale spec), area-averaged onto a coarse grid of ``resolution`` cells on the
   long side (:func:`coarse_grid`): ``F[t, c]`` is the revealed fraction of cell ``c``;
2. **model**: ``g(E[r_t]) = b0 + sum_c F[t, c] b[c]`` with the logit link for binary
   responses (logistic regression) and the identity for continuous ones (linear
   regression, response z-scored). The weights are fitted by minimising
   ``mean loss + lambda * P(b)`` (mean negative log-likelihood; half the mean squared
   error for the linear model) with a penalty ``P`` on standardised features:

   - ``'glm'``: a weak ridge penalty ``P = ||b||^2 / 2`` on the cell weights, so that
     the model is identifiable with fewer trials than cells;
   - ``'sparse'``: the weights are ``b = Phi w`` in a smooth multi-scale basis ``Phi``
     (Gaussian bumps at several scales on the coarse grid, :func:`smooth_basis`) and
     ``P = ||w||_1``: a sparse prior in a smooth basis (Mineault, Barthelme & Pack,
     2009), which favours maps made of a few smooth blobs;

   ``lambda`` is chosen by k-fold cross-validation (held-out deviance) over a grid,
   fitted from the strongest penalty to the weakest with warm starts. The solvers are
   scikit-learn's (``LogisticRegression``: lbfgs for the ridge, liblinear for L1;
   ``Ridge``; ``Lasso`` on a precomputed Gram matrix), an optional dependency
   imported only when a map is estimated (``analysis`` imports without it);
3. **map**: the weights of the cells (``b`` divided by each feature's SD, i.e. per
   unit of revealed area) brought back to the spec's pixel grid bilinearly
   (``raw``), positive where seeing a region raises the response;
4. **inference**: a penalized fit has no analytic z. The responses are shuffled
   ``n_permutations`` times and refitted at the chosen penalty; each cell's
   ``z = (b - mean) / sd`` over the observed and the permuted maps, brought to the
   pixel grid bilinearly; the family-wise threshold is the ``(1 - p)`` quantile of the
   permutation maximum of z over the pixels (max statistic, Nichols & Holmes, 2002),
   one-sided (upper), stored in ``info``.

Cost. Each target is one fit with cross-validation plus one refit per permutation; the
time grows linearly with the number of targets (ridge fits of continuous responses share
one solve across a chunk of targets). Above :data:`MANY_TARGETS` targets a warning says
so: thousands of voxels or units belong to ``classification_image(method='regression')``
or ``'median_split'`` (one sparse product for all targets).

References
----------
Knoblauch, K. & Maloney, L. T. (2008). Estimating classification images with
generalized linear and additive models. J. Vis. 8(16):10. :doi:`10.1167/8.16.10`

Mineault, P. J., Barthelme, S. & Pack, C. C. (2009). Improved classification images
with sparse priors in a smooth basis. J. Vis. 9(10):17. :doi:`10.1167/9.10.17`

Nichols, T. E. & Holmes, A. P. (2002). Nonparametric permutation tests for functional
neuroimaging. Human Brain Mapping 15, 1-25. :doi:`10.1002/hbm.1058`
"""

from __future__ import annotations

import math
import numbers
import types
import warnings

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from bubbles import BubbleSpec, one_blas_thread, render_masks, seed_sequence

from .ci import _check_responses, _permutations
from .diagnostic import DiagnosticImage
from .zscore import zscore

__all__ = ["glm_image", "smooth_basis", "coarse_grid", "ESTIMATORS", "FAMILIES",
           "NULLS", "MANY_TARGETS", "DEFAULT_RESOLUTION"]

#: Methods of :func:`glm_image`.
ESTIMATORS = ("glm", "sparse")
#: Response models: 'auto' picks 'logistic' for 0/1 (or boolean) responses.
FAMILIES = ("auto", "logistic", "linear")
#: 'permutation': z from refits on shuffled responses; 'none': no test (see glm_image).
NULLS = ("permutation", "none")
#: Above this many targets :func:`glm_image` warns that its time grows linearly.
MANY_TARGETS = 100
#: Cells on the long side of the coarse grid by default (fewer for smaller images).
DEFAULT_RESOLUTION = 32
_MIN_RESOLUTION = 4
_RIDGE_GRID = np.logspace(-3, 2, 11)       # absolute lambdas (standardised features)
_L1_GRID = np.logspace(0, -2.5, 11)        # fractions of lambda_max


def _sklearn():
    """scikit-learn's solvers, imported when an estimate is made.

    scikit-learn is an optional dependency (the ``estimators`` extra): this module, and
    ``analysis`` with it, import without it; only :func:`glm_image` needs it.
    """
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import Lasso, LogisticRegression, Ridge
        from sklearn.model_selection import KFold, StratifiedKFold
    except ImportError as err:
        raise ImportError("methods 'glm' and 'sparse' need scikit-learn (>= 1.8): pip "
                          "install 'bubbles-toolkit[estimators]'") from err
    return types.SimpleNamespace(
        ConvergenceWarning=ConvergenceWarning, Lasso=Lasso,
        LogisticRegression=LogisticRegression, Ridge=Ridge, KFold=KFold,
        StratifiedKFold=StratifiedKFold)


# -- grids and bases -------------------------------------------------------------------
def coarse_grid(shape, resolution=DEFAULT_RESOLUTION):
    """Cells ``(gh, gw)`` of the coarse grid with ``resolution`` cells on the long side.

    The short side gets ``round(resolution * short / long)`` cells (at least 1), so cells
    are about square.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(H, W)`` in pixels.
    resolution : int
        Cells on the long side, from 4 to ``max(H, W)``.

    Examples
    --------
    >>> coarse_grid((256, 256)), coarse_grid((64, 48), 16)
    ((32, 32), (16, 12))
    """
    h, w = (int(s) for s in shape)
    long = max(h, w)
    if (isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral)
            or not _MIN_RESOLUTION <= resolution <= long):
        raise ValueError(f"resolution must be an integer in [{_MIN_RESOLUTION}, {long}] "
                         f"(cells on the long side of the {h} x {w} image), got "
                         f"{resolution!r}")
    r = int(resolution)
    if h >= w:
        return r, max(1, int(round(r * w / h)))
    return max(1, int(round(r * h / w))), r


def _area_matrix(n_in, n_out):
    """(n_out, n_in) area-averaging matrix: row i averages the pixels under cell i."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    pix = np.arange(n_in)
    lo = np.maximum(edges[:-1, None], pix[None, :])
    hi = np.minimum(edges[1:, None], pix[None, :] + 1)
    a = np.clip(hi - lo, 0, None)
    return a / a.sum(axis=1, keepdims=True)


def _bilinear_matrix(n_cells, n_pixels):
    """(n_pixels, n_cells) bilinear interpolation from cell centres to pixel centres."""
    u = (np.arange(n_pixels) + 0.5) * (n_cells / n_pixels) - 0.5
    u = np.clip(u, 0, n_cells - 1)
    i0 = np.floor(u).astype(int)
    i1 = np.minimum(i0 + 1, n_cells - 1)
    f = u - i0
    m = np.zeros((n_pixels, n_cells))
    np.add.at(m, (np.arange(n_pixels), i0), 1 - f)
    np.add.at(m, (np.arange(n_pixels), i1), f)
    return m


def _default_scales(grid):
    scales, s = [], 1.0
    while s <= max(grid) / 4 or not scales:
        scales.append(s)
        s *= 2
    return tuple(scales)


def smooth_basis(grid, scales=None):
    """A smooth multi-scale basis on a coarse grid: Gaussian bumps at several scales.

    For each scale ``s`` (the bumps' SD, in cells) the bumps' centres lie on a lattice
    of step ``max(1, s)`` cells centred on the grid; each bump
    ``exp(-d^2 / (2 s^2))`` has peak 1. Fine bumps draw small regions, coarse ones
    large smooth blobs; with an L1 penalty on their weights a map is built from as few
    of them as the data ask for (Mineault et al., 2009).

    Parameters
    ----------
    grid : tuple of int
        ``(gh, gw)`` cells (:func:`coarse_grid`).
    scales : sequence of float, optional
        Bump SDs in cells; default ``1, 2, 4, ...`` up to a quarter of the long side.

    Returns
    -------
    ndarray, shape (gh * gw, n_functions)
        One column per bump (row-major cells), finest scale first.

    Examples
    --------
    >>> smooth_basis((16, 16)).shape          # 256 + 64 + 16 bumps at 1, 2, 4 cells
    (256, 336)

    References
    ----------
    Mineault, Barthelme & Pack (2009), J. Vis. 9(10):17. :doi:`10.1167/9.10.17`
    """
    gh, gw = (int(g) for g in grid)
    scales = _default_scales((gh, gw)) if scales is None else tuple(scales)
    if not scales or not all(isinstance(s, numbers.Real) and math.isfinite(s) and s > 0
                             for s in scales):
        raise ValueError(f"basis_scales must be one or more bump SDs > 0 (in cells of "
                         f"the coarse grid), got {scales!r}")
    yy, xx = np.mgrid[0:gh, 0:gw]
    cols = []
    for s in scales:
        step = max(1.0, float(s))

        def centres(n):
            c = np.arange(0.0, n, step)
            return c + ((n - 1) - c[-1]) / 2

        for cy in centres(gh):
            for cx in centres(gw):
                cols.append(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * s * s)))
    return np.stack(cols, axis=-1).reshape(gh * gw, len(cols))


# -- inputs ----------------------------------------------------------------------------
def _as_centers(spec, centers):
    """Centres per band in a form render_masks takes, and the number of trials."""
    if not isinstance(spec, BubbleSpec):
        raise TypeError(f"spec must be a bubbles.BubbleSpec, got {type(spec).__name__}")
    h, w = spec.shape
    if spec.multiscale:
        if not isinstance(centers, (list, tuple)) or len(centers) != spec.n_bands:
            raise ValueError(f"centers must be a list with one entry per band "
                             f"({spec.n_bands}) for a multi-scale spec, got "
                             f"{type(centers).__name__}")
        bands = list(centers)
    else:
        bands = [centers]
    out = []
    for c in bands:
        if sp.issparse(c):                        # centre maps (bubbles.center_maps)
            m = sp.csr_matrix(c)
            if m.ndim != 2 or m.shape[1] != h * w:
                raise ValueError(f"centre maps must have shape (n_trials, {h * w}) for "
                                 f"spec.shape {spec.shape}, got {m.shape}")
            c = [np.column_stack(np.divmod(m.indices[m.indptr[i]:m.indptr[i + 1]], w))
                 .astype(np.float64) for i in range(m.shape[0])]
        out.append(c)
    counts = {len(c) for c in out}
    if len(counts) != 1:
        raise ValueError(f"centers of every band must cover the same number of trials, "
                         f"got {[len(c) for c in out]}")
    return out, counts.pop()


def _features(spec, bands, n, grid, chunk_size=256):
    """Revealed area per cell, (n, n_bands, gh, gw) float64, rendered in chunks."""
    h, w = spec.shape
    gh, gw = grid
    ah = _area_matrix(h, gh).astype(np.float32)
    awt = _area_matrix(w, gw).T.astype(np.float32)
    out = np.empty((n, spec.n_bands, gh, gw))
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        part = [c[start:stop] for c in bands]
        masks = render_masks(spec, part if spec.multiscale else part[0])
        masks = masks.reshape(stop - start, spec.n_bands, h, w)
        out[start:stop] = ah @ masks @ awt
    return out


def _check_penalties(penalties):
    if penalties is None:
        return None
    try:
        grid = np.asarray(penalties, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"penalties must be a sequence of numbers > 0, got "
                         f"{penalties!r}") from None
    if grid.size == 0:
        raise ValueError("penalties must hold at least one penalty weight > 0 (the grid "
                         "that cross-validation chooses from), got an empty grid")
    if not np.all(np.isfinite(grid) & (grid > 0)):
        raise ValueError(f"penalties must be finite numbers > 0, got "
                         f"{grid[:6].tolist()}")
    return np.sort(np.unique(grid))[::-1]            # strongest first (warm starts)


def _family(r, family):
    if family not in FAMILIES:
        raise ValueError(f"'family' must be one of {list(FAMILIES)}. {family!r} was "
                         "provided.")
    binary = bool(np.all((r == 0) | (r == 1)))
    if family == "auto":
        return "logistic" if binary else "linear"
    if family == "logistic" and not binary:
        raise ValueError(f"family 'logistic' needs binary responses (0/1 or boolean), got "
                         f"values {np.unique(r)[:6].tolist()}")
    return family


def _child_rng(root, k):
    """Generator of the k-th independent stream of ``root`` (root is not changed)."""
    child = np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + (k,),
                                   pool_size=root.pool_size)
    return np.random.Generator(np.random.PCG64(child))


# -- one model: solver glue --------------------------------------------------------------
class _Model:
    """Penalized GLM of one family and penalty on a fixed design (glue to scikit-learn).

    ``fit(rows, y, lam, state)`` returns ``(coef, intercept, state)``; ``state`` carries
    a warm start along a path. The objective is ``mean loss + lam * P(w)``; scikit-learn
    spells it ``C = 1 / (lam * n)`` (LogisticRegression), ``alpha = lam * n`` (Ridge)
    and ``alpha = lam`` (Lasso).
    """

    def __init__(self, x, family, l1):
        self.x = x
        self.family, self.l1 = family, l1
        self.sk = _sklearn()

    def fit(self, rows, y, lam, state=None):
        """Fit on the trials ``rows`` (None: all) to ``y`` (those trials' responses)."""
        x = self.x if rows is None else self.x[rows]
        n = len(y)
        sk = self.sk
        if self.family == "logistic":
            est = state
            if est is None:
                if self.l1:        # liblinear: no warm start, but fast on sparse paths
                    # random_state: liblinear's coordinate order, fixed so that no
                    # global random state is read
                    est = sk.LogisticRegression(l1_ratio=1.0, solver="liblinear", tol=1e-4,
                                             intercept_scaling=10.0, max_iter=1000,
                                             random_state=0)
                else:
                    est = sk.LogisticRegression(l1_ratio=0.0, solver="lbfgs", tol=1e-5,
                                             max_iter=1000, warm_start=True)
            est.set_params(C=1.0 / (lam * n))
            est.fit(x, y)
            return est.coef_.ravel().copy(), float(est.intercept_[0]), est
        if self.l1:
            # centred design with its Gram matrix (computed once per design / fold)
            if state is None:
                xm = x.mean(axis=0)
                xc = x - xm
                est = sk.Lasso(fit_intercept=False, precompute=xc.T @ xc, warm_start=True,
                            max_iter=5000, tol=1e-4, selection="cyclic")
                state = (est, xc, xm)
            est, xc, xm = state
            ym = y.mean(axis=0)
            est.set_params(alpha=lam)
            est.fit(xc, y - ym)
            coef = np.atleast_2d(est.coef_)
            icpt = ym - coef @ xm
            if np.ndim(y) == 1:
                return coef.ravel().copy(), float(icpt[0]), state
            return coef.copy(), icpt, state
        est = sk.Ridge(alpha=np.asarray(lam, dtype=np.float64) * n, solver="auto")
        est.fit(x, y)
        return est.coef_.copy(), est.intercept_, None

    def loss(self, rows, y, coef, icpt):
        """Held-out mean deviance (log loss, or squared error), per column of y."""
        x = self.x[rows]
        eta = x @ np.atleast_2d(coef).T + np.atleast_1d(icpt)       # (n, k)
        if np.ndim(y) == 1:
            eta = eta[:, 0]
        if self.family == "logistic":
            # log(1 + exp(eta)) - y * eta, the negative log-likelihood per trial
            return np.mean(np.logaddexp(0.0, eta) - y * eta, axis=0)
        return np.mean((y - eta) ** 2, axis=0)

    def lambda_max(self, y):
        """The smallest L1 penalty with all weights 0 (mean-loss units)."""
        x = self.x
        return float(np.max(np.abs(x.T @ (y - y.mean()))) / len(y))


def _folds(y, family, cv, seed_int):
    sk = _sklearn()
    if family == "logistic":
        counts = np.bincount(y.astype(int), minlength=2)
        if counts.min() < cv:
            raise ValueError(f"responses must hold at least cv={cv} trials of each "
                             f"response for a {cv}-fold cross-validation of the logistic "
                             f"model, got {counts[0]} of 0 and {counts[1]} of 1")
        splitter = sk.StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed_int)
        return list(splitter.split(np.zeros(len(y)), y))
    splitter = sk.KFold(n_splits=cv, shuffle=True, random_state=seed_int)
    return list(splitter.split(np.zeros(len(y))))


def _choose(model, y, grid, folds, patience=2):
    """Cross-validated mean held-out loss per penalty (columns of y: targets).

    The penalties are visited strongest first, every fold warm-started from its fit at
    the previous penalty. For one target the path stops once the mean loss has risen
    ``patience`` times in a row past its minimum (the weakest penalties are the slowest
    fits and cannot win any more); the losses not computed are returned as inf.
    """
    states = [None] * len(folds)
    shape = (len(grid),) + np.shape(y)[1:]
    losses = np.full(shape, np.inf)
    rises = 0
    for k, lam in enumerate(grid):
        fold_losses = []
        for f, (train, test) in enumerate(folds):
            coef, icpt, states[f] = model.fit(train, y[train], lam, states[f])
            fold_losses.append(model.loss(test, y[test], coef, icpt))
        losses[k] = np.mean(fold_losses, axis=0)
        if np.ndim(y) == 1 and k > 0:
            rises = rises + 1 if losses[k] > np.min(losses[:k]) else 0
            if rises >= patience:
                break
    return losses


# -- design --------------------------------------------------------------------------
class _Design:
    """The model's design matrix and the way back from solver weights to cell maps.

    ``x`` (n, p): standardised revealed areas of the live cells ('glm'), or the
    centred features times the smooth basis, standardised ('sparse'). Cells whose
    revealed area never changes (no bubble reaches them) are left out; their weight is
    0. ``to_map`` turns solver weights (k, p) into raw weights per cell (k, cells),
    per unit of revealed area.
    """

    def __init__(self, spec, bands, n, grid, method, basis_scales):
        feats = _features(spec, bands, n, grid).reshape(n, -1)
        self.cells = feats.shape[1]
        sd_f = feats.std(axis=0)
        live = sd_f > 1e-9 * max(float(sd_f.max()), 1e-300)
        self.live = np.flatnonzero(live)
        self.n_basis = None
        if method == "sparse":
            one = smooth_basis(grid, basis_scales)
            self.n_basis = one.shape[1] * spec.n_bands
            basis = sp.block_diag([sp.csr_matrix(one)] * spec.n_bands, format="csr")
            basis = basis[self.live]                                 # live cells only
            centred = feats[:, live] - feats[:, live].mean(axis=0)
            design = np.asarray(basis.T @ centred.T).T               # F Phi
            sd_d = design.std(axis=0)
            keep = np.flatnonzero(sd_d > 1e-9 * max(float(sd_d.max()), 1e-300))
            self.x = design[:, keep] / sd_d[keep]
            self.to_cells = basis[:, keep].multiply(1.0 / sd_d[keep][None, :]).tocsr()
        else:
            self.x = zscore(feats[:, live], axis=0)
            self.to_cells = sp.diags(1.0 / sd_f[live]).tocsr()

    def to_map(self, coefs):
        coefs = np.atleast_2d(coefs)
        out = np.zeros((len(coefs), self.cells))
        out[:, self.live] = np.asarray(self.to_cells @ coefs.T).T
        return out


def _up(a, spec, grid):
    """(k, cells) coarse maps -> (k, bands, H, W) float32, bilinear."""
    h, w = spec.shape
    a = a.reshape(len(a), spec.n_bands, grid[0], grid[1])
    return (_bilinear_matrix(grid[0], h) @ a @ _bilinear_matrix(grid[1], w).T).astype(
        np.float32)


def _fit_cv(model, y, grid_l, method, folds):
    """Choose the penalty by cross-validation and fit all trials at it.

    ``y``: one target (n,) or several (n, k) (ridge only: one solve for all).
    Returns ``(penalty per target, weights (k, p), cv losses, penalty grid)``.
    """
    if grid_l is not None:
        grid = grid_l
    elif method == "sparse":
        grid = model.lambda_max(y) * _L1_GRID
    else:
        grid = _RIDGE_GRID
    losses = _choose(model, y, grid, folds)
    lam = np.atleast_1d(grid[np.argmin(losses, axis=0)])
    coefs = model.fit(None, y, lam if np.ndim(y) == 2 else lam[0])[0]
    return lam, np.atleast_2d(coefs).reshape(len(lam), -1), losses, grid


# -- the estimator ---------------------------------------------------------------------
def _check_int(name, value, least, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"{name} must be an integer >= {least} ({what}), got {value!r}")
    return int(value)


def glm_image(spec, centers, responses, method="glm", *, family="auto", resolution=None,
              penalties=None, cv=5, basis_scales=None, null="permutation",
              n_permutations=200, p=0.05, seed=0, chunk_size=16, targets=None,
              observer="unknown", progress=True):
    """Classification image of a penalized GLM of the response on the revealed image.

    Same inputs as :func:`analysis.classification_image` and a
    :class:`~analysis.diagnostic.DiagnosticImage` out. The masks are area-averaged to a
    coarse grid (``resolution`` cells on the long side), the response is modelled by a
    logistic (binary) or linear (continuous) model of those features with a penalty
    chosen by ``cv``-fold cross-validation over ``penalties``, the weights are brought
    back to the pixel grid bilinearly and z-scored against refits on shuffled responses
    (module docstring).

    Parameters
    ----------
    spec : BubbleSpec
        The session's spec. A multi-scale spec gets one feature block per band (each
        band's masks on the same coarse grid; for 'sparse' one basis per block) and a
        band axis in the map.
    centers : ndarray, list or scipy.sparse matrix
        As :func:`analysis.classification_image` takes them.
    responses : array_like, shape (n_trials,) or (n_trials, n_targets)
        Finite numbers; 0/1 (or boolean) responses are modelled as binary.
    method : {'glm', 'sparse'}
        'glm': logistic / linear regression on the cells with a weak ridge penalty
        (Knoblauch & Maloney, 2008). 'sparse': L1 penalty on the weights of a smooth
        multi-scale basis of Gaussian bumps (:func:`smooth_basis`; Mineault et al.,
        2009).
    family : {'auto', 'logistic', 'linear'}
        'auto': logistic for 0/1 responses, otherwise linear (response z-scored).
    resolution : int, optional
        Cells on the long side of the coarse grid, 4 to ``max(H, W)``; default
        ``min(32, max(H, W))``. The model has ``bands * gh * gw`` weights ('glm') or
        about 1.33 times as many basis functions ('sparse').
    penalties : sequence of float, optional
        The grid of penalty weights ``lambda`` that cross-validation chooses from, in
        the units of ``mean loss + lambda * P(w)`` with standardised features (mean
        negative log-likelihood per trial, or half the mean squared error of the
        z-scored response; ``P = ||w||^2 / 2`` for 'glm', ``||w||_1`` for 'sparse').
        Default: 11 values from 1e-3 to 100 for 'glm'; for 'sparse' 11 values from
        ``lambda_max`` (the smallest penalty with every weight 0, per target) down to
        ``lambda_max / 316``. An empty grid is an error.
    cv : int
        Folds of the cross-validation (stratified for binary responses), >= 2.
    basis_scales : sequence of float, optional
        'sparse' only: bump SDs in coarse cells (default ``1, 2, 4, ...``).
    null : {'permutation', 'none'}
        'permutation': z from ``n_permutations`` refits on shuffled responses at the
        chosen penalty, with the family-wise threshold in ``info``. 'none': no test;
        ``z`` is the weight map z-scored over the coarse cells (ddof=1), for display
        and for comparing maps, not calibrated for any test.
    n_permutations : int
        At least ``1 / p - 1`` (19 for p = .05).
    p : float
        Family-wise error rate of the threshold in ``info['fwe_threshold']``: over the
        pixels (and bands) of each target's map; across many targets correct further
        (e.g. Bonferroni over targets).
    seed : int, numpy.random.SeedSequence or numpy.random.Generator
        Seeds the folds and the permutations.
    chunk_size : int
        Targets per chunk: continuous responses of 'glm' share one ridge solve per
        chunk, the others are fitted target by target; the progress bar counts targets.
    targets : sequence of str, optional
        Names of the response columns (2-D responses).
    observer : str
        What responded ('person', 'voxel', 'unit', ...).
    progress : bool
        Show a tqdm bar (over targets; over permutations for one target).

    Returns
    -------
    DiagnosticImage
        ``method`` 'glm' or 'sparse'; ``z`` and ``raw`` (the weight map per unit of
        revealed area of a cell, in logits or response SDs) on the pixel grid, axes
        named as :func:`analysis.classification_image` names them. ``info``: family,
        grid, the chosen ``penalty`` (per target), ``cv_loss`` and ``penalty_grid``
        (one target; None where the path stopped early), ``null``,
        ``n_permutations``, ``fwe_threshold`` (significant: ``z > fwe_threshold``),
        ``n_significant`` (pixels), ``max_null`` (one target), ``tail`` 'upper',
        ``n_nonzero`` ('sparse': basis functions with a weight), solver notes.

    Warns
    -----
    UserWarning
        Above :data:`MANY_TARGETS` targets (time grows linearly: use
        ``classification_image(method='regression')`` for thousands), for constant
        target columns (their map is 0), and when a solver did not converge.

    Examples
    --------
    >>> from bubbles import BubbleSpec, sample_centers, render_masks
    >>> spec = BubbleSpec(shape=(24, 24), sigma=2, n_bubbles=4)
    >>> c = sample_centers(spec, 0, 400)
    >>> seen = render_masks(spec, c)[:, 6:10, 6:10].mean(axis=(1, 2))
    >>> r = (seen + np.random.default_rng(0).normal(0, 0.1, 400)) > 0.15
    >>> img = glm_image(spec, c, r, "sparse", resolution=12, null="none", progress=False)
    >>> img.z.shape, bool(img.z[8, 8] > img.z[18, 18])
    ((24, 24), True)

    References
    ----------
    Knoblauch & Maloney (2008), :doi:`10.1167/8.16.10`; Mineault et al. (2009),
    :doi:`10.1167/9.10.17`; Nichols & Holmes (2002), :doi:`10.1002/hbm.1058`.
    """
    if method not in ESTIMATORS:
        raise ValueError(f"'method' must be one of {list(ESTIMATORS)}. {method!r} was "
                         "provided.")
    convergence = _sklearn().ConvergenceWarning        # fails early without sklearn
    if null not in NULLS:
        raise ValueError(f"'null' must be one of {list(NULLS)}. {null!r} was provided.")
    bands, n = _as_centers(spec, centers)
    h, w = spec.shape
    grid = coarse_grid(spec.shape, min(DEFAULT_RESOLUTION, max(h, w))
                       if resolution is None else resolution)
    if method != "sparse" and basis_scales is not None:
        raise ValueError("basis_scales applies to method 'sparse' only, got "
                         f"{basis_scales!r} with method {method!r}")
    grid_l = _check_penalties(penalties)
    cv = _check_int("cv", cv, 2, "folds of the cross-validation")
    chunk_size = _check_int("chunk_size", chunk_size, 1, "targets per chunk")
    if isinstance(p, bool) or not (isinstance(p, numbers.Real) and 0 < p < 1):
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    if null == "permutation":
        least = math.ceil(1 / p - 1 - 1e-9)
        _check_int("n_permutations", n_permutations, least,
                   f"for p = {p:g}: with B permutations no p-value is below 1 / (B + 1)")
    if n < 2 * cv:
        raise ValueError(f"centers must cover at least 2 * cv = {2 * cv} trials for a "
                         f"{cv}-fold cross-validation, got {n}")
    r = _check_responses(responses, n).astype(np.float64)
    one = r.ndim == 1
    r2 = r[:, None] if one else r
    n_t = r2.shape[1]
    if targets is not None:
        targets = [str(t) for t in targets]
        if len(targets) != n_t:
            raise ValueError(f"targets must name every response column ({n_t}), got "
                             f"{len(targets)} names")
    fam = _family(r2, family)
    const = np.flatnonzero(r2.std(axis=0) == 0)
    if len(const) and one:
        raise ValueError(f"responses are constant (every trial is {r[0]:g}): a "
                         "classification image needs at least two different responses")
    if len(const):
        warnings.warn(f"{len(const)} response column(s) are constant (first: "
                      f"{const[:5].tolist()}); their maps are 0", stacklevel=2)
    if n_t > MANY_TARGETS:
        warnings.warn(f"glm_image fits each of the {n_t} targets on its own (with "
                      "cross-validation and permutations): its time grows linearly with "
                      f"the number of targets (more than {MANY_TARGETS} here). For "
                      "thousands of voxels or units use classification_image(method="
                      "'regression') or 'median_split', which maps all targets in one "
                      "sparse product", UserWarning, stacklevel=2)
    root = seed_sequence(seed)
    fold_seed = int(_child_rng(root, 0).integers(2 ** 31))
    perm_rng = _child_rng(root, 1)

    design = _Design(spec, bands, n, grid, method, basis_scales)
    model = _Model(design.x, fam, l1=method == "sparse")
    y_all = r2 if fam == "logistic" else zscore(r2, axis=0)
    joint = fam == "linear" and method == "glm"      # ridge: one solve per chunk
    coef_maps = np.zeros((n_t, design.cells))
    z4 = np.zeros((n_t, spec.n_bands, h, w), np.float32)
    chosen = np.full(n_t, np.nan)
    thresholds = np.full(n_t, np.nan)
    n_active = np.zeros(n_t, int)
    details = {}
    skip = set(const.tolist())
    bar = tqdm(total=n_t, desc=f"{method} image", unit="target",
               disable=not progress or n_t < 2, leave=False)
    # many mid-sized products: one BLAS thread (threads collapse on a busy machine)
    with warnings.catch_warnings(record=True) as caught, one_blas_thread():
        warnings.simplefilter("always", convergence)
        for start in range(0, n_t, chunk_size):
            chunk = range(start, min(n_t, start + chunk_size))
            cols = [t for t in chunk if t not in skip]
            for g in ([cols] if joint and cols else [[t] for t in cols]):
                y = y_all[:, g] if joint else y_all[:, g[0]]
                folds = _folds(y[:, 0] if joint else y, fam, cv, fold_seed)
                lam, coefs, losses, lam_grid = _fit_cv(model, y, grid_l, method, folds)
                chosen[g], n_active[g] = lam, np.count_nonzero(coefs, axis=1)
                coef_maps[g] = design.to_map(coefs)
                if one:
                    details.update(cv_loss=np.ravel(losses).tolist(),
                                   penalty_grid=lam_grid.tolist())
                for j, t in enumerate(g):
                    if null == "none":
                        z4[t] = _up(zscore(coef_maps[t][None], ddof=1), spec, grid)[0]
                        continue
                    perms = _permutations(y[:, j] if joint else y, n_permutations,
                                          perm_rng)
                    null_maps = design.to_map(_null_weights(model, perms, lam[j],
                                                            progress=progress and one))
                    z4[t], thresholds[t], mx = _perm_test(coef_maps[t], null_maps, p,
                                                          spec, grid)
                    if one:
                        details["max_null"] = mx.tolist()
            bar.update(len(chunk))
    bar.close()
    n_warn = sum(issubclass(c.category, convergence) for c in caught)
    for c in caught:                                      # pass the others on
        if not issubclass(c.category, convergence):
            warnings.warn_explicit(c.message, c.category, c.filename, c.lineno)
    if n_warn:
        warnings.warn(f"{method} image: the solver did not converge in {n_warn} fit(s) "
                      "(cross-validation, final fit or permutations); the maps may be "
                      "slightly off: try fewer cells (resolution) or stronger penalties",
                      UserWarning, stacklevel=2)

    raw4 = _up(coef_maps, spec, grid)
    dims = (("target",) if not one else ()) + (("band",) if spec.multiscale else ()) + (
        "y", "x")

    def squeeze(a):
        a = a[0] if one else a
        return a if spec.multiscale else a[..., 0, :, :]

    def per_target(a):
        return a[0].item() if one else a.tolist()

    info = {"estimator": ("penalized GLM, ridge penalty on coarse cells (Knoblauch & "
                          "Maloney 2008)") if method == "glm" else
            ("penalized GLM, L1 penalty on a smooth multi-scale basis of Gaussian bumps "
             "(Mineault, Barthelme & Pack 2009)"),
            "family": fam, "link": "logit" if fam == "logistic" else "identity",
            "solver": _solver_name(fam, method),
            "features": "masks area-averaged to the coarse grid, standardised; one "
                        "block per band",
            "grid": list(grid), "resolution": max(grid),
            "n_features": int(design.x.shape[1]), "n_cells": int(design.cells),
            "n_live_cells": int(len(design.live)), "cv": cv,
            "cv_loss_kind": "log loss" if fam == "logistic" else "squared error",
            "penalty": per_target(chosen),
            "penalty_units": "mean loss + penalty * P(w), standardised features",
            "null": null, "n_targets": n_t, "constant_targets": const.tolist(),
            "map_units": "weight per unit of revealed area of a cell (logit or response "
                         "SD), bilinear to pixels",
            "convergence_warnings": int(n_warn),
            "seed": int(seed) if isinstance(seed, numbers.Integral) else None}
    if method == "sparse":
        info.update(basis_scales=list(_default_scales(grid) if basis_scales is None
                                      else basis_scales),
                    n_basis=int(design.n_basis), n_nonzero=per_target(n_active))
    if null == "permutation":
        sig = (z4 > thresholds[:, None, None, None]).sum(axis=(1, 2, 3))
        info.update(n_permutations=int(n_permutations), p=float(p), tail="upper",
                    fwe_threshold=per_target(thresholds), n_significant=per_target(sig),
                    z_grid="z per coarse cell (B + 1 maps), bilinear to pixels",
                    significant="z > fwe_threshold (max statistic over the pixels)")
    else:
        info["z"] = "weight map z-scored over the coarse cells; not a test statistic"
    if grid_l is not None:
        info["penalty_grid"] = grid_l.tolist()
    info.update(details)
    return DiagnosticImage(z=squeeze(z4), method=method, spec=spec, n_trials=n,
                           info=info, raw=squeeze(raw4), dims=dims,
                           targets=None if one else targets, observer=observer)


def _solver_name(family, method):
    if family == "logistic":
        if method == "sparse":
            return "sklearn LogisticRegression(l1_ratio=1, solver='liblinear')"
        return "sklearn LogisticRegression(l1_ratio=0, solver='lbfgs', warm starts)"
    return "sklearn Lasso (precomputed Gram)" if method == "sparse" else "sklearn Ridge"


def _null_weights(model, perms, lam, *, progress):
    """Solver weights (B, p) of refits at ``lam`` on the shuffled responses (n, B)."""
    if model.family == "linear":                 # multi-output: shared solve / Gram
        return np.atleast_2d(model.fit(None, perms, lam)[0])
    out, state = [], None
    for k in tqdm(range(perms.shape[1]), desc="permutations", unit="refit",
                  disable=not progress, leave=False):
        coef, _, state = model.fit(None, perms[:, k], lam, state)
        out.append(coef)
    return np.stack(out)


def _perm_test(obs, null_maps, p, spec, grid, chunk=32):
    """Permutation z map on the pixel grid, the family-wise threshold and the max null.

    Per coarse cell ``z = (b - mean) / sd`` with the mean and SD of the B + 1 weight
    maps (the observed one and the B permutation maps: all are standardised alike, so
    the observed map stays exchangeable with the others under the null; 0 where they
    do not vary). Every z map is brought to the pixel grid bilinearly and the maximum
    taken over its pixels (and bands): the threshold is the ``m + 1``-th largest
    permutation maximum with ``m = floor(p (B + 1)) - 1``, so that a pixel has
    ``z > threshold`` exactly when its corrected p-value
    ``(1 + #{max_b >= z}) / (B + 1)`` is at most ``p`` (Nichols & Holmes, 2002).
    """
    allm = np.vstack([obs[None], null_maps])
    mean = allm.mean(axis=0)
    sd = allm.std(axis=0, ddof=1)
    ok = sd > 1e-12 * max(float(sd.max()), 1e-300)
    safe = np.where(ok, sd, 1.0)
    z = _up(np.where(ok, (obs - mean) / safe, 0.0)[None], spec, grid)[0]
    mx = np.empty(len(null_maps))
    for s in range(0, len(null_maps), chunk):          # bounded memory
        part = np.where(ok, (null_maps[s:s + chunk] - mean) / safe, 0.0)
        mx[s:s + chunk] = _up(part, spec, grid).reshape(len(part), -1).max(axis=1)
    b = len(mx)
    m = int(math.floor(p * (b + 1) + 1e-9)) - 1
    thr = float(np.sort(mx)[::-1][min(max(m, 0), b - 1)])
    return z, thr, mx
