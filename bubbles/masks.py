"""Perturbation masks: bubbles centres and masks, centre maps, occluders, RISE grids.

Every mask family that a person, a voxel or a network unit is probed with comes from
this module, in one convention: float32 in [0, 1], where 1 means "the image is visible
here" and 0 means "replaced by the background".

Bubbles are regenerable: trial ``t`` draws its centres from
``numpy.random.SeedSequence(seed, spawn_key=(t,))``, so it depends only on
``(spec, seed, t)`` and can be rebuilt alone, in any order, in any process. Masks are
rendered from centres on demand with separable apertures: a batch of Gaussian masks is a
batched matrix product ``(H x k) @ (k x W)``, never a loop over bubbles on the full image.

References
----------
Gosselin, F. & Schyns, P. G. (2001). Bubbles. Vision Research 41, 2261-2271.
:doi:`10.1016/S0042-6989(01)00097-9`
Petsiuk, V., Das, A. & Saenko, K. (2018). RISE: randomized input sampling for
explanation of black-box models. BMVC. :arxiv:`1806.07421`
Zeiler, M. D. & Fergus, R. (2014). Visualizing and understanding convolutional networks.
ECCV. :doi:`10.1007/978-3-319-10590-1_53`
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.sparse as sp

from .spec import BubbleSpec, sigma_to_fwhm

__all__ = ["sample_centers", "render_masks", "center_maps", "occlusion_positions",
           "occlusion_masks", "rise_masks", "trial_rng"]

_CHUNK_ELEMENTS = 2 ** 24      # elements of a (trials x bubbles x H x W) block, ~64 MB


def trial_rng(seed, index, *, stream=None):
    """Generator for one trial (or mask) ``index`` of a seeded run.

    ``SeedSequence(seed, spawn_key=(index,))`` is exactly the ``index``-th child that
    ``SeedSequence(seed).spawn`` would give, so the stream of trial ``index`` depends on
    nothing but ``(seed, index)``. ``stream`` picks an independent grandchild
    (``spawn_key=(index, stream)``) for other random parts of the same trial, such as
    its noise background.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (masks are regenerated "
                         f"from it), got {seed!r}")
    if isinstance(index, bool) or not isinstance(index, numbers.Integral) or index < 0:
        raise ValueError(f"trial index must be a non-negative integer, got {index!r}")
    key = (int(index),) if stream is None else (int(index), int(stream))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed),
                                                                      spawn_key=key)))


def _trial_indices(trials):
    if isinstance(trials, numbers.Integral) and not isinstance(trials, bool):
        if trials < 0:
            raise ValueError(f"trials must be a count >= 0 or trial indices, got {trials}")
        return range(int(trials))
    message = ("trials must be a count n (trials 0..n-1) or an iterable of non-negative "
               f"integer trial indices, got {trials!r}")
    if isinstance(trials, (str, bytes)):
        raise ValueError(message)
    try:
        indices = [int(t) for t in trials]
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if any(t < 0 for t in indices):
        raise ValueError(message)
    return indices


def sample_centers(spec, seed, trials):
    """Draw bubble centres for some trials of a seeded run.

    Parameters
    ----------
    spec : BubbleSpec
    seed : int
        Non-negative integer seed of the run (a session, a probe).
    trials : int or iterable of int
        A count ``n`` (trials ``0 .. n-1``) or the trial indices to draw.

    Returns
    -------
    centers : ndarray of float64, shape (n, n_bubbles, 2), or list of them
        ``(row, col)`` pixel coordinates; one array per band for a multi-scale spec.
        Exactly ``n_bubbles`` distinct pixels per trial (and band), inside the search
        region when the spec has one. Trial ``t`` depends only on ``(spec, seed, t)``.

    Examples
    --------
    >>> spec = BubbleSpec(shape=(64, 64), sigma=4, n_bubbles=5)
    >>> c = sample_centers(spec, 7, 10)
    >>> c.shape
    (10, 5, 2)
    >>> bool((sample_centers(spec, 7, [5])[0] == c[5]).all())
    True
    """
    if not isinstance(spec, BubbleSpec):
        raise TypeError(f"spec must be a BubbleSpec, got {type(spec).__name__}")
    indices = _trial_indices(trials)
    h, w = spec.shape
    allowed = spec.allowed_pixels
    population = h * w if allowed is None else allowed.size
    counts = spec.n_per_band
    out = [np.empty((len(indices), k, 2)) for k in counts]
    for i, t in enumerate(indices):
        rng = trial_rng(seed, t)
        for band, k in enumerate(counts):
            flat = rng.choice(population, size=k, replace=False)
            if allowed is not None:
                flat = allowed[flat]
            out[band][i, :, 0], out[band][i, :, 1] = np.divmod(flat, w)
    return out if spec.multiscale else out[0]


def _per_band(spec, centers):
    """Split ``centers`` into a list (one entry per band) and check the band count."""
    if not spec.multiscale:
        return [centers]
    if not isinstance(centers, (list, tuple)) or len(centers) != spec.n_bands:
        raise ValueError(f"centers must be a list with one entry per band "
                         f"({spec.n_bands}) for a multi-scale spec")
    return list(centers)


def _padded(centers, shape):
    """Trial centres as one (n, k, 2) array plus (n, k) weights (0 marks padding).

    Accepts an (n, k, 2) array or a ragged sequence of per-trial (k_t, 2) arrays, as a
    session with QUEST produces (the count changes from trial to trial).
    """
    message = "centers must have shape (n_trials, n_bubbles, 2) or be a list of (k, 2) arrays"
    if isinstance(centers, np.ndarray) and centers.dtype != object:
        if centers.ndim != 3 or centers.shape[2] != 2:
            raise ValueError(f"{message}, got shape {centers.shape}")
        arr = centers.astype(np.float32)
        weights = np.ones(arr.shape[:2], np.float32)
    else:
        trials = [np.asarray(c, dtype=np.float32) for c in centers]
        if any(c.size and (c.ndim != 2 or c.shape[1] != 2) for c in trials):
            raise ValueError(message)
        trials = [c.reshape(-1, 2) for c in trials]
        k = max((len(c) for c in trials), default=0)
        arr = np.zeros((len(trials), k, 2), np.float32)
        weights = np.zeros((len(trials), k), np.float32)
        for i, c in enumerate(trials):
            arr[i, :len(c)] = c
            weights[i, :len(c)] = 1.0
    if not np.all(np.isfinite(arr)):
        raise ValueError("centers must be finite pixel coordinates")
    h, w = shape
    live = weights > 0
    if live.any() and (arr[..., 0][live].min() < -0.5 or arr[..., 0][live].max() > h - 0.5
                       or arr[..., 1][live].min() < -0.5 or arr[..., 1][live].max() > w - 0.5):
        raise ValueError(f"centers must lie inside the image of shape {shape}")
    return arr, weights


def _render_band(centers, weights, sigma, spec, out):
    """Render one band's masks into ``out`` (n, H, W), summed or maxed, unclipped."""
    h, w = spec.shape
    n, k, _ = centers.shape
    if k == 0:
        out[...] = 0.0
        return
    rows = np.arange(h, dtype=np.float32)
    cols = np.arange(w, dtype=np.float32)
    half = sigma_to_fwhm(sigma) / 2.0
    product = spec.aperture != "disk" and spec.overlap == "clip"
    per_trial = k * (h + w) if product else k * h * w
    chunk = max(1, min(n, _CHUNK_ELEMENTS // per_trial))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        dy = rows - centers[start:stop, :, 0:1]        # (c, k, H)
        dx = cols - centers[start:stop, :, 1:2]        # (c, k, W)
        wt = weights[start:stop, :, None]
        if spec.aperture == "gaussian":
            scale = np.float32(-0.5 / sigma ** 2)
            fy = np.exp(dy * dy * scale) * wt
            fx = np.exp(dx * dx * scale)
        elif spec.aperture == "square":
            fy = (np.abs(dy) <= half).astype(np.float32) * wt
            fx = (np.abs(dx) <= half).astype(np.float32)
        if product:
            np.matmul(fy.transpose(0, 2, 1), fx, out=out[start:stop])
            continue
        if spec.aperture == "disk":
            block = ((dy * dy)[..., :, None] + (dx * dx)[..., None, :] <= half * half)
            block = block.astype(np.float32) * wt[..., None]
        else:
            block = fy[..., :, None] * fx[..., None, :]
        if spec.overlap == "clip":
            block.sum(axis=1, out=out[start:stop])
        else:
            block.max(axis=1, out=out[start:stop])


def render_masks(spec, centers, *, out=None):
    """Render bubbles masks from centres.

    Parameters
    ----------
    spec : BubbleSpec
    centers : ndarray, shape (n, k, 2), or list
        As returned by :func:`sample_centers` (one array per band for a multi-scale
        spec); a ragged list of per-trial ``(k_t, 2)`` arrays is accepted too.
    out : ndarray of float32, optional
        Preallocated output of the returned shape.

    Returns
    -------
    masks : ndarray of float32, shape (n, H, W) or (n, bands, H, W)
        Values in [0, 1]; 1 = visible. Overlaps follow ``spec.overlap`` and
        ``spec.polarity='occlude'`` returns ``1 - mask``.

    Examples
    --------
    >>> spec = BubbleSpec(shape=(64, 64), sigma=4, n_bubbles=5)
    >>> m = render_masks(spec, sample_centers(spec, 0, 3))
    >>> m.shape, m.dtype, float(m.max()) <= 1.0
    ((3, 64, 64), dtype('float32'), True)
    """
    if not isinstance(spec, BubbleSpec):
        raise TypeError(f"spec must be a BubbleSpec, got {type(spec).__name__}")
    per_band = [_padded(c, spec.shape) for c in _per_band(spec, centers)]
    n = per_band[0][0].shape[0]
    if any(c.shape[0] != n for c, _ in per_band):
        raise ValueError("centers of every band must cover the same number of trials")
    h, w = spec.shape
    shape = (n, spec.n_bands, h, w) if spec.multiscale else (n, h, w)
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {shape}, got {out.dtype} {out.shape}")
    scratch = np.empty((n, h, w), np.float32) if spec.multiscale and n > 1 else None
    for band, ((c, wt), sigma) in enumerate(zip(per_band, spec.sigmas)):
        if scratch is None:
            _render_band(c, wt, sigma, spec, out[:, band] if spec.multiscale else out)
        else:       # matmul into a strided view falls back to a slow loop: render, copy
            _render_band(c, wt, sigma, spec, scratch)
            out[:, band] = scratch
    np.minimum(out, 1.0, out=out)
    if spec.polarity == "occlude":
        np.subtract(1.0, out, out=out)
    return out


def center_maps(spec, centers):
    """Sparse centre maps: one row per trial, 1.0 at each bubble centre.

    This is the design matrix of the regression classification image: the analysis
    engine multiplies its transpose by the (trials x targets) responses and then smooths
    with the aperture sigma.

    Returns
    -------
    maps : scipy.sparse.csr_matrix, shape (n, H * W), float32, or a list per band
        Centres are rounded to the nearest pixel; coincident centres add up.
    """
    if not isinstance(spec, BubbleSpec):
        raise TypeError(f"spec must be a BubbleSpec, got {type(spec).__name__}")
    h, w = spec.shape
    maps = []
    for c in _per_band(spec, centers):
        arr, weights = _padded(c, spec.shape)
        n = arr.shape[0]
        live = weights > 0
        rr = np.clip(np.rint(arr[..., 0]), 0, h - 1).astype(np.int64)
        cc = np.clip(np.rint(arr[..., 1]), 0, w - 1).astype(np.int64)
        trial = np.broadcast_to(np.arange(n)[:, None], live.shape)
        m = sp.csr_matrix((np.ones(int(live.sum()), np.float32),
                           (trial[live], (rr * w + cc)[live])), shape=(n, h * w))
        m.sum_duplicates()
        maps.append(m)
    return maps if spec.multiscale else maps[0]


def occlusion_positions(shape, size, *, stride=None):
    """Top-left corners of a square occluder swept over an image.

    The sweep covers every pixel: positions run ``0, stride, 2 stride, ...`` and a last
    one flush with the far edge is added when needed.

    Parameters
    ----------
    shape : tuple of int
        Image shape (H, W).
    size : int
        Side of the square occluder in pixels (1 <= size <= min(H, W)).
    stride : int, optional
        Step in pixels, 1 <= stride <= size (a larger stride leaves pixels uncovered).
        Defaults to ``size``.

    Returns
    -------
    positions : ndarray of int, shape (n, 2)
    """
    h, w = (int(s) for s in shape)
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or not 1 <= size <= min(h, w):
        raise ValueError(f"size must be an integer from 1 to {min(h, w)} pixels, got {size!r}")
    stride = size if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, numbers.Integral) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    if stride > size:
        raise ValueError(f"stride must be <= size ({size}) or pixels go uncovered, "
                         f"got {stride}")

    def starts(n):
        s = list(range(0, n - size + 1, stride))
        if s[-1] != n - size:
            s.append(n - size)
        return s

    grid = np.array([(r, c) for r in starts(h) for c in starts(w)], dtype=np.int64)
    return grid


def occlusion_masks(shape, size, *, stride=None):
    """Masks of a square occluder swept over the image (0 inside the square).

    See :func:`occlusion_positions` for ``size`` and ``stride``. Every pixel is covered
    by at least one occluder position.

    Examples
    --------
    >>> m = occlusion_masks((8, 8), 4, stride=2)
    >>> m.shape, bool((m.min(axis=0) == 0).all())
    ((9, 8, 8), True)
    """
    positions = occlusion_positions(shape, size, stride=stride)
    masks = np.ones((len(positions),) + tuple(int(s) for s in shape), np.float32)
    for m, (r, c) in zip(masks, positions):
        m[r:r + size, c:c + size] = 0.0
    return masks


def _bilinear_matrix(n_in, n_out):
    """(n_out, n_in) matrix resizing a 1-D signal bilinearly (half-pixel centres)."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (pos - lo).astype(np.float32)
    mat = np.zeros((n_out, n_in), np.float32)
    mat[np.arange(n_out), lo] += 1.0 - frac
    mat[np.arange(n_out), hi] += frac
    return mat


def rise_masks(shape, n_masks, seed, *, grid=(7, 7), p=0.5):
    """RISE random masks: binary grids upsampled bilinearly with a random shift.

    Mask ``i`` draws from ``SeedSequence(seed, spawn_key=(i,))``, like bubbles trials.

    Parameters
    ----------
    shape : tuple of int
        Image shape (H, W).
    n_masks : int
    seed : int
    grid : tuple of int
        Size of the low-resolution grid (Petsiuk et al. use 7 x 7).
    p : float
        Probability that a grid cell is visible, in (0, 1].

    Returns
    -------
    masks : ndarray of float32, shape (n_masks, H, W), in [0, 1]
    """
    h, w = (int(s) for s in shape)
    gh, gw = (int(g) for g in grid)
    if isinstance(n_masks, bool) or not isinstance(n_masks, numbers.Integral) or n_masks < 0:
        raise ValueError(f"n_masks must be an integer >= 0, got {n_masks!r}")
    if min(gh, gw) < 1:
        raise ValueError(f"grid must be two positive integers, got {grid!r}")
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p must be in (0, 1], got {p!r}")
    ch, cw = math.ceil(h / gh), math.ceil(w / gw)
    up_rows = _bilinear_matrix(gh, (gh + 1) * ch)
    up_cols = _bilinear_matrix(gw, (gw + 1) * cw)
    masks = np.empty((int(n_masks), h, w), np.float32)
    for i in range(int(n_masks)):
        rng = trial_rng(seed, i)
        cells = (rng.random((gh, gw)) < p).astype(np.float32)
        dy, dx = rng.integers(0, ch), rng.integers(0, cw)
        big = up_rows @ cells @ up_cols.T
        masks[i] = big[dy:dy + h, dx:dx + w]
    return masks
