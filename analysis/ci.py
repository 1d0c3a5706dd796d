"""Classification images: from centres and responses to z maps, for any number of targets.

One engine serves one observer's key presses and thousands of voxels or network units:

1. ``C = X.T @ W``: the sparse centre maps ``X`` (trials x pixels, one 1.0 per bubble
   centre) times the dense response weights ``W`` (trials x targets) -- one sparse
   product per chunk of targets;
2. separable smoothing with the aperture profile ``f`` (a Gaussian of the bubble sigma,
   peak 1, so the result is in mask units): ``Kh @ C @ Kw.T``, computed through the
   low-rank factors of the 1-D kernel matrices (a Gaussian kernel matrix has about 45
   singular values above 1e-6 of the largest for 128 px at sigma 5), as BLAS products;
3. analytic z (ZTransSCi, Chauvin et al. 2005) per pixel.

Edges. The smoothing matrices implement **zero padding**, which is exactly what a
mask-based image does (no centre ever lies outside the image), so the weighted sum is
the sum of the masks; the darkening of edge pixels that zero padding causes (a pixel
near the edge has fewer possible centres around it, so its smoothed field is smaller
and less variable) is removed in the z step by dividing each pixel by its own
kernel energy ``e(x) = sum over eligible centre pixels c of f(x - c)^2`` instead of the
global ``sum(f^2)``. Eligible pixels are the spec's search region (else the image).

Varying numbers of bubbles. With QUEST the count ``k_t`` changes from trial to trial and
correlates with the response (more bubbles, more correct). Each trial's centre field is
therefore centred on its own density ``p_t = k_t / N`` and the variance uses the actual
``p_t (1 - p_t)`` of every trial:

``Z(x) = sum_t w_t (Xs_t(x) - p_t s(x)) / sqrt(sum_t w_t^2 p_t (1 - p_t) v(x))``

with ``s(x) = sum_c f(x - c)`` over eligible pixels and
``v(x) = N / (N - 1) (e(x) - s(x)^2 / N)``: each trial has exactly ``k_t`` distinct
centres (sampling without replacement), so the pixel indicators of a trial are
negatively correlated (covariance ``-p (1 - p) / (N - 1)``) and the smoothed field has
slightly less variance than ``p (1 - p) e(x)``. For a fixed count and z-scored responses
this is the ZTransSCi formula of Chauvin et al. (2005) (``v = sum f^2`` away from the
edges) up to that finite-population term, ``(sum f)^2 / N`` against ``sum f^2``: 1 % of
z for 256 x 256 at sigma 10, more for small images or large bubbles. With it the
analytic z agrees with the permutation z. It is invariant to the scale of ``w`` and ``f``.

References
----------
Gosselin, F. & Schyns, P. G. (2001). Bubbles: a technique to reveal the use of
information in recognition tasks. Vision Research 41, 2261-2271.
:doi:`10.1016/S0042-6989(01)00097-9`

Chauvin, A., Worsley, K. J., Schyns, P. G., Arguin, M. & Gosselin, F. (2005).
Accurate statistical tests for smooth classification images. J. Vis. 5(9):1.
:doi:`10.1167/5.9.1`
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from bubbles import BubbleSpec, center_maps, one_blas_thread, sigma_to_fwhm

from .diagnostic import DiagnosticImage
from .zscore import zscore

__all__ = ["classification_image", "group_image", "METHODS", "NULLS"]

METHODS = ("regression", "proportion", "median_split")
NULLS = ("analytic", "permutation")


# -- input checks --------------------------------------------------------------------
def as_center_maps(spec, centers):
    """Centre maps as a list of float32 CSR matrices (one per band)."""
    if not isinstance(spec, BubbleSpec):
        raise TypeError(f"spec must be a bubbles.BubbleSpec, got {type(spec).__name__}")
    h, w = spec.shape
    if sp.issparse(centers) or (isinstance(centers, (list, tuple)) and centers
                                and all(sp.issparse(c) for c in centers)):
        maps = [centers] if sp.issparse(centers) else list(centers)
    else:
        maps = center_maps(spec, centers)
        maps = list(maps) if spec.multiscale else [maps]
    if len(maps) != spec.n_bands:
        raise ValueError(f"centers must give one centre map per band ({spec.n_bands}), "
                         f"got {len(maps)}")
    out = []
    for m in maps:
        if m.ndim != 2 or m.shape[1] != h * w:
            raise ValueError(f"centre maps must have shape (n_trials, {h * w}) for "
                             f"spec.shape {spec.shape}, got {m.shape}")
        out.append(sp.csr_matrix(m, dtype=np.float32))
    counts = [m.shape[0] for m in out]
    if len(set(counts)) > 1:
        raise ValueError("centers of every band must cover the same number of trials, "
                         f"got {counts} trials per band")
    return out


def _check_responses(responses, n_trials):
    r = np.asarray(responses)
    if r.dtype == bool:
        r = r.astype(np.float64)
    if r.dtype.kind not in "iuf":
        raise ValueError(f"responses must be numeric (or boolean), got dtype {r.dtype}")
    r = r.astype(np.float32 if r.dtype == np.float32 else np.float64, copy=False)
    if r.ndim not in (1, 2):
        raise ValueError(f"responses must have shape (n_trials,) or (n_trials, n_targets), "
                         f"got {r.shape}")
    if r.shape[0] != n_trials:
        raise ValueError(f"responses has {r.shape[0]} trials but centers have {n_trials}")
    bad = ~np.isfinite(r)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(f"responses must be finite: {int(bad.sum())} NaN/inf value(s), "
                         f"first at trial(s) {rows[:5].tolist()}")
    return r


# -- kernels and smoothing -----------------------------------------------------------
def _kernel_matrix(n, sigma, aperture):
    d = np.arange(n, dtype=np.float64)
    d = d[:, None] - d[None, :]
    if aperture == "square":
        half = sigma_to_fwhm(sigma) / 2
        k = (np.abs(d) <= half).astype(np.float64)
    else:   # gaussian, and disk approximated by the Gaussian of the same FWHM
        k = np.exp(-d * d / (2 * sigma * sigma))
    return k


@functools.lru_cache(maxsize=32)
def _factors(n, sigma, aperture):
    """Cached kernel matrix and its factors for one axis (read-only arrays)."""
    k = _kernel_matrix(n, sigma, aperture)
    a, bt = _factor(k)
    for arr in (k, a, bt):
        if arr is not None:
            arr.setflags(write=False)
    return k, a, bt


def _factor(k):
    """Low-rank factors ``k ~= a @ bt`` of a kernel matrix, or ``(k, None)``.

    A Gaussian kernel matrix is numerically of low rank (about 45 of 128 rows for
    sigma 5 px at 1e-6 of its largest singular value), so smoothing through the rank-r
    factors costs r/n of the dense product. Kernels that do not compress (boxes, tiny
    sigmas) stay dense.
    """
    u, sv, vt = np.linalg.svd(k)
    r = int((sv > 1e-6 * sv[0]).sum())
    if r > 0.6 * k.shape[0]:
        return k.astype(np.float32), None
    return (u[:, :r] * sv[:r]).astype(np.float32), vt[:r].astype(np.float32)


class _Band:
    """Per-band constants: transposed centre map, kernel factors, trial densities.

    ``smooth`` takes the pixel-major sparse product ``C = X.T @ W`` (H, W, T) and returns
    ``Kh C Kw.T`` as (T, H, W), through the kernels' low-rank factors: contract rows,
    contract columns, one small transpose, expand rows, expand columns (the last product
    writes the target-major output directly).
    """

    def __init__(self, spec, x, sigma, region):
        h, w = spec.shape
        self.h, self.w = h, w
        self.xt = x.T.tocsr()
        kh, self.ah, self.bth = _factors(h, float(sigma), spec.aperture)
        kw, self.aw, self.btw = _factors(w, float(sigma), spec.aperture)
        reg = region.astype(np.float64)
        s = kh @ reg @ kw.T                                      # sum_c f(x - c)
        e = (kh * kh) @ reg @ (kw * kw).T                        # sum_c f(x - c)^2
        n_eligible = reg.sum()
        # exactly k_t distinct centres per trial (sampling without replacement): pixel
        # indicators have covariance -p(1-p)/(N-1), so
        # Var(Xs(x)) = p(1-p) N/(N-1) (e(x) - s(x)^2 / N)
        v = np.maximum(e - s ** 2 / n_eligible, 0) * n_eligible / max(n_eligible - 1, 1)
        with np.errstate(divide="ignore"):
            inv = np.where(v > 1e-12 * v.max(), 1 / np.sqrt(v), 0.0)
        self.s = s.astype(np.float32)
        self.inv_sd = inv.astype(np.float32)
        reg32 = region.astype(np.float32)
        self.region_c = reg32 if self.bth is None else self.bth @ reg32   # (rh, W)
        self.k = np.asarray(x.sum(axis=1)).ravel()
        self.pt = self.k / n_eligible
        self.sign = -1.0 if spec.polarity == "occlude" else 1.0

    def smooth(self, wts, a=None, out=None):
        """Smoothed weighted centre maps (T, H, W) float32.

        With ``a`` (T,), each trial's expected field ``p_t * region`` weighted by
        ``wts`` is removed first: the result is ``sum_t w_t (Xs_t - p_t s)``.
        """
        h, w = self.h, self.w
        wts = np.asarray(wts, dtype=np.float32)
        t = wts.shape[1]
        c = np.asarray(self.xt @ wts, dtype=np.float32).reshape(h, w, t)
        m = c if self.bth is None else (self.bth @ c.reshape(h, w * t)).reshape(-1, w, t)
        if a is not None:
            m = m - self.region_c[:, :, None] * np.asarray(a, np.float32)
        if self.btw is not None:                                  # (rh, rw, T)
            m = np.matmul(self.btw, m)
        rw = m.shape[1]
        n = np.matmul(self.ah, np.ascontiguousarray(m.transpose(2, 0, 1)))  # (T, H, rw)
        if out is not None and out.flags.c_contiguous and out.dtype == np.float32:
            np.matmul(n.reshape(t * h, rw), self.aw.T, out=out.reshape(t * h, w))
            return out
        return (n.reshape(t * h, rw) @ self.aw.T).reshape(t, h, w)

    def scale(self, wts):
        """Per-target factor sign / sqrt(sum_t w_t^2 p_t (1 - p_t)) (0 if no variance)."""
        v = (wts * wts).T @ (self.pt * (1 - self.pt))
        with np.errstate(divide="ignore"):
            return np.where(v > 0, self.sign / np.sqrt(v), 0.0)

    def z(self, wts, out=None):
        """Analytic z maps (T, H, W) for the weights (n, T) (written into ``out``)."""
        ws = wts * self.scale(wts)                                # fold the target scale
        out = self.smooth(ws, ws.T @ self.pt, out=out)
        out *= self.inv_sd
        return out

    def z_from_raw(self, wts, raw):
        """Analytic z from ``raw = sign * smooth(wts)`` (T, H, W)."""
        a = (wts.T @ self.pt).astype(np.float32)
        out = self.sign * raw - self.s * a[:, None, None]
        out *= self.inv_sd
        out *= self.scale(wts).astype(np.float32)[:, None, None]
        return out


def _bands(spec, maps, region=None):
    """One :class:`_Band` per band of the centre maps (built once per call)."""
    if region is None:
        region = (spec.search_region if spec.search_region is not None
                  else np.ones(spec.shape, bool))
    return [_Band(spec, x, s, region) for x, s in zip(maps, spec.sigmas)]


def _permutations(r, n_permutations, seed):
    """(n_trials, n_permutations) matrix whose columns are shuffles of the 1-D ``r``.

    ``seed`` is an int, a SeedSequence or a Generator (used as is, so successive calls
    with one Generator continue its stream). The one permutation helper of
    classification_image, permutation_test and analysis.compare.
    """
    rng = np.random.default_rng(seed)     # returns a Generator unchanged
    r = np.asarray(r)
    return np.stack([rng.permutation(r) for _ in range(int(n_permutations))], axis=1)


def _weights(r, method):
    """Per-trial weights (n, T) for the regression and median-split images."""
    if method == "regression":
        return zscore(r, axis=0)
    med = np.median(np.ascontiguousarray(r.T), axis=1)
    high = r > med
    none = ~high.any(axis=0)
    high[:, none] = r[:, none] >= med[none]
    low = ~high
    nh, nl = high.sum(axis=0), low.sum(axis=0)
    ok = (nh > 0) & (nl > 0)
    w = high / np.where(nh > 0, nh, 1) - low / np.where(nl > 0, nl, 1)
    return np.where(ok, w, 0.0)


def _constant_targets(r):
    return np.flatnonzero(r.std(axis=0) == 0)


def _engine(spec, maps, r, **kwargs):
    """Compute z (T, B, H, W) for responses r (n, T); chunked over targets.

    Runs with BLAS limited to one thread: the engine is many small products, which two
    BLAS threads slow down (1.5-3x) as soon as another process holds a core, and one
    thread costs little on a quiet machine (benchmarks/ci.py measures both). The
    values do not depend on it.
    """
    with one_blas_thread():
        return _engine_chunks(spec, maps, r, **kwargs)


def _engine_chunks(spec, maps, r, *, method, chunk_size, progress, consumer=None,
                   out=None, keep_raw=False, region=None, bands=None):
    """The work of :func:`_engine`.

    With ``consumer(start, z_chunk)`` nothing is kept (used by permutations).
    ``bands``: the :func:`_bands` of ``maps`` when the caller already built them.
    Returns ``(z, raw)`` (raw None unless keep_raw or method is 'proportion').
    """
    h, w = spec.shape
    n_t = r.shape[1]
    if region is None:
        region = (spec.search_region if spec.search_region is not None
                  else np.ones(spec.shape, bool))
    if bands is None:
        bands = _bands(spec, maps, region)
    nb = len(bands)
    z = raw = None
    if consumer is None:
        z = out if out is not None else np.empty((n_t, nb, h, w), np.float32)
        if z.shape != (n_t, nb, h, w):
            raise ValueError(f"out must have shape {(n_t, nb, h, w)}, got {z.shape}")
        if keep_raw or method == "proportion":
            raw = np.empty((n_t, nb, h, w), np.float32)
    if method == "proportion":
        vals = np.unique(r)
        if not np.all(np.isin(vals, (0.0, 1.0))):
            raise ValueError("method 'proportion' needs binary responses (0/1, e.g. "
                             f"correct), got values {vals[:6].tolist()}")
        totals = [b.smooth(np.ones((r.shape[0], 1)))[0] for b in bands]
    if not (isinstance(chunk_size, (int, np.integer)) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be an integer >= 1 (targets per product), got "
                         f"{chunk_size!r}")
    starts = range(0, n_t, chunk_size)
    bar = tqdm(starts, desc="classification image", unit="chunk",
               disable=not progress or len(starts) < 2, leave=False)
    for start in bar:
        rc = r[:, start:start + chunk_size]
        nt = rc.shape[1]
        stop = start + nt
        zc = (np.empty((nt, nb, h, w), np.float32) if consumer is not None
              else z[start:stop])
        if method == "proportion":
            for bi, (b, tot) in enumerate(zip(bands, totals)):
                cor = b.smooth(rc)
                with np.errstate(divide="ignore", invalid="ignore"):
                    prop = np.where(tot > 1e-6 * tot.max(), cor / tot, np.nan)
                raw[start:stop, bi] = prop
                zz = zscore(prop, axis=(1, 2), ddof=1, where=region, omit_nan=True)
                zc[:, bi] = b.sign * np.nan_to_num(zz, nan=0.0)
        else:
            wts = _weights(rc, method)
            for bi, b in enumerate(bands):
                if raw is not None:
                    rw = b.sign * b.smooth(wts)
                    raw[start:stop, bi] = rw
                    zc[:, bi] = b.z_from_raw(wts, rw)
                elif nb == 1 and zc.flags.c_contiguous:
                    b.z(wts, out=zc[:, 0])                       # written in place
                else:
                    zc[:, bi] = b.z(wts)
        if consumer is not None:
            consumer(start, zc)
    return z, raw


def _squeeze(a, dims):
    """(T, B, H, W) -> the axes named by ``dims`` (dropping a singleton target / band)."""
    if a is None:
        return None
    if "target" not in dims:
        a = a[0]
    if "band" not in dims:
        a = a[..., 0, :, :]
    return a


def classification_image(spec, centers, responses, method="regression", *,
                         null="analytic", n_permutations=1000, seed=0, chunk_size=128,
                         targets=None, observer="unknown", keep_raw=False, out=None,
                         progress=True):
    """Diagnostic (classification) image of one observer or of many targets at once.

    Parameters
    ----------
    spec : BubbleSpec
        The base spec of the session (shape, sigmas, bands, aperture, polarity, search
        region). Per-trial bubble counts are read from ``centers``.
    centers : ndarray, list or scipy.sparse matrix
        As :func:`bubbles.sample_centers` returns them ((n, k, 2), one array per band
        for a multi-scale spec), a ragged list of per-trial (k_t, 2) arrays (per band),
        or centre maps from :func:`bubbles.center_maps` (csr, or a list per band).
    responses : array_like, shape (n_trials,) or (n_trials, n_targets)
        Correctness (0/1 or bool), reaction times or any continuous amplitude (voxel
        betas, unit activations). Must be finite.
    method : {'regression', 'proportion', 'median_split'}
        'regression' (default): ``sum_t z(r_t) Xs_t``, z-scored analytically (ZTransSCi).
        'proportion': CorrectPlane / TotalPlane of Gosselin & Schyns (2001), binary
        responses only, z-scored with the mean and SD (ddof=1) of the plane inside the
        search region (not calibrated for the RFT tests; use 'regression' there).
        'median_split': mean mask of trials above the median minus mean mask of the
        others (the usual voxel rule; ties at the median go to the low group, or to
        the high group when nothing lies above the median, as for 0/1 responses);
        its z uses the same analytic variance with the split weights.
    null : {'analytic', 'permutation'}
        'permutation' (1-D responses, regression / median_split): each pixel's statistic
        is standardised by the mean and SD of ``n_permutations`` shuffles of the
        responses instead of the analytic variance.
    n_permutations : int
    seed : int or numpy.random.Generator
        For the permutations.
    chunk_size : int
        Targets (or permutations) per sparse product; memory is about
        ``4 * chunk_size * H * W * 3`` bytes per band.
    targets : sequence of str, optional
        Names of the response columns (2-D responses), the image's ``targets``.
    observer : str
        What responded ('person', 'network', 'voxel', 'roi', 'unit', ...), recorded
        as the image's ``observer``.
    keep_raw : bool
        Also keep the unstandardised image in ``.raw`` (always kept for 'proportion').
    out : ndarray, optional
        Preallocated float32 output (e.g. ``numpy.memmap``) of shape
        ``(n_targets, bands, H, W)`` for very many targets (1 target for 1-D
        responses). It is written in every path (also with ``null='permutation'``) and
        returned as ``.z`` unsqueezed; ``.raw`` (``keep_raw`` or 'proportion') then has
        the same 4-D layout.
    progress : bool
        Show a tqdm bar over chunks.

    Returns
    -------
    DiagnosticImage
        ``z`` of shape (H, W) for 1-D responses, (n_targets, H, W) for 2-D; with a
        band axis before (H, W) for a multi-scale spec; ``dims`` names them
        (``('target', 'band', 'y', 'x')`` at most). Positive z: seeing the region
        (``polarity='occlude'`` is sign-flipped) goes with a higher response.

    Examples
    --------
    >>> from bubbles import BubbleSpec, sample_centers
    >>> spec = BubbleSpec(shape=(32, 32), sigma=3, n_bubbles=5)
    >>> c = sample_centers(spec, 0, 500)
    >>> correct = (np.abs(c[:, :, 0] - 16).min(axis=1) < 4).astype(float)
    >>> ci = classification_image(spec, c, correct, progress=False)
    >>> ci.z.shape, bool(ci.z[16].mean() > ci.z[2].mean())
    ((32, 32), True)

    References
    ----------
    Gosselin & Schyns (2001), :doi:`10.1016/S0042-6989(01)00097-9`;
    Chauvin et al. (2005), :doi:`10.1167/5.9.1`.
    """
    if method not in METHODS:
        raise ValueError(f"'method' must be one of {list(METHODS)}. {method!r} was provided.")
    if null not in NULLS:
        raise ValueError(f"'null' must be one of {list(NULLS)}. {null!r} was provided.")
    maps = as_center_maps(spec, centers)
    n = maps[0].shape[0]
    if n < 2:
        raise ValueError(f"centers must cover at least 2 trials for a classification "
                         f"image, got {n}")
    r = _check_responses(responses, n)
    one = r.ndim == 1
    r2 = r[:, None] if one else r
    if targets is not None:
        targets = [str(t) for t in targets]
        if len(targets) != r2.shape[1]:
            raise ValueError(f"targets must name every response column ({r2.shape[1]}), "
                             f"got {len(targets)} names")
    const = _constant_targets(r2)
    if len(const):
        msg = (f"{len(const)} response column(s) are constant (first: {const[:5].tolist()});"
               f" their z maps are 0")
        if one:
            raise ValueError(f"responses are constant (every trial is {r[0]:g}): a "
                             "classification image needs at least two different "
                             "responses (an all-correct session has no errors to contrast: "
                             "use fewer bubbles, or another response such as rt)")
        warnings.warn(msg, stacklevel=2)
    info = {"null": null, "kernel": spec.aperture if spec.aperture != "disk"
            else "gaussian (same FWHM as the disk)",
            "edges": "zero padding; z divided by each pixel's kernel energy",
            "sigmas": list(spec.sigmas), "n_targets": r2.shape[1],
            "bubbles_per_trial": [float(m.sum(axis=1).mean()) for m in maps],
            "constant_targets": const.tolist()}
    for b, k in enumerate(info["bubbles_per_trial"]):
        if k == 0:
            warnings.warn(f"band {b + 1} of {spec.n_bands} (sigma {spec.sigmas[b]:g} px) "
                          "has no bubbles in any trial (spec.n_per_band "
                          f"{spec.n_per_band}); its z map is 0", stacklevel=2)
    dims = (("target",) if not one else ()) + (("band",) if spec.multiscale else ()) + (
        "y", "x")
    if null == "permutation":
        if not (isinstance(n_permutations, (int, np.integer)) and n_permutations >= 2):
            raise ValueError("n_permutations must be an integer >= 2 for "
                             f"null='permutation', got {n_permutations!r}")
        if not one:
            raise ValueError("null='permutation' needs 1-D responses (one observer); "
                             f"got shape {r.shape}. Use null='analytic' for many targets.")
        if method == "proportion":
            raise ValueError("null='permutation' is available for methods 'regression' "
                             "and 'median_split', not 'proportion'")
        bands = _bands(spec, maps)          # once, for the observed and permuted maps
        z, raw = _engine(spec, maps, r2, method=method, chunk_size=chunk_size,
                         progress=False, keep_raw=keep_raw, out=out, bands=bands)
        perms = _permutations(r, n_permutations, seed)
        acc = {"s": np.zeros(z.shape[1:]), "s2": np.zeros(z.shape[1:])}

        def consume(start, zc):
            acc["s"] += zc.sum(axis=0, dtype=np.float64)
            acc["s2"] += np.square(zc, dtype=np.float64).sum(axis=0)

        _engine(spec, maps, perms, method=method, chunk_size=chunk_size,
                progress=progress, consumer=consume, bands=bands)
        b = perms.shape[1]
        mean = acc["s"] / b
        sd = np.sqrt(np.maximum(acc["s2"] / b - mean ** 2, 0) * b / max(b - 1, 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            z[0] = np.where(sd > 0, (z[0] - mean) / np.where(sd > 0, sd, 1), 0)
        info.update(n_permutations=b, seed=seed if isinstance(seed, int) else None)
    else:
        z, raw = _engine(spec, maps, r2, method=method, chunk_size=chunk_size,
                         progress=progress, keep_raw=keep_raw, out=out)
    if out is not None:     # z is ``out`` itself, (n_targets, bands, H, W); raw alike
        return DiagnosticImage(z=out, method=method, spec=spec, n_trials=n, info=info,
                               raw=raw, dims=("target", "band", "y", "x"),
                               targets=targets, observer=observer)
    return DiagnosticImage(z=_squeeze(z, dims), method=method, spec=spec, n_trials=n,
                           info=info, raw=_squeeze(raw, dims), dims=dims,
                           targets=None if one else targets, observer=observer)


def group_image(images, *, weights=None):
    """Combine observers' diagnostic images with Stouffer's method.

    ``z = sum_i w_i z_i / sqrt(sum_i w_i^2)`` (equal weights by default); each observer's
    map is kept in ``observer_maps`` (stacked on axis 0).

    Parameters
    ----------
    images : sequence of DiagnosticImage
        Same z shape (same spec shape and bands).
    weights : sequence of float, optional
        One per observer (e.g. ``sqrt(n_trials)``).

    Returns
    -------
    DiagnosticImage
        method 'stouffer', ``n_trials`` the total, ``info['methods']`` the inputs'.

    Examples
    --------
    >>> a = DiagnosticImage(np.ones((2, 2)), "regression", None, 10)
    >>> g = group_image([a, a])
    >>> round(float(g.z[0, 0]), 4), g.observer_maps.shape
    (1.4142, (2, 2, 2))
    """
    images = list(images)
    if not images:
        raise ValueError("images must contain at least one DiagnosticImage, got none")
    for i, im in enumerate(images):
        if not isinstance(im, DiagnosticImage):
            raise TypeError(f"images[{i}] must be a DiagnosticImage, got {type(im).__name__}")
    shape = images[0].z.shape
    for i, im in enumerate(images):
        if im.z.shape != shape or im.dims != images[0].dims:
            raise ValueError(f"images[{i}].z has shape {im.z.shape} (dims {im.dims}), "
                             f"expected {shape} (dims {images[0].dims}) like images[0]")
    w = np.ones(len(images)) if weights is None else np.asarray(weights, float)
    if w.shape != (len(images),) or not np.all(np.isfinite(w)) or np.all(w == 0):
        raise ValueError(f"weights must be {len(images)} finite numbers, not all 0, "
                         f"got {weights!r}")
    maps = np.stack([np.asarray(im.z, dtype=np.float64) for im in images])
    z = np.tensordot(w, maps, axes=1) / np.sqrt(np.sum(w * w))
    info = {"combination": "stouffer", "n_observers": len(images),
            "weights": w.tolist(), "methods": [im.method for im in images],
            "n_trials_per_observer": [int(im.n_trials) for im in images]}
    return DiagnosticImage(z=z, method="stouffer", spec=images[0].spec,
                           n_trials=int(sum(im.n_trials for im in images)), info=info,
                           observer_maps=maps, dims=images[0].dims,
                           targets=images[0].targets, observer="group")
