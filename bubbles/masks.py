"""Perturbation masks: bubbles centres and masks, centre maps, occluders, RISE grids.

Every mask family that a person, a voxel or a network unit is probed with comes from
this module, in one convention: float32 in [0, 1], where 1 means "the image is visible
here" and 0 means "replaced by the background".

Bubbles are regenerable: trial ``t`` draws its centres from
``numpy.random.SeedSequence(seed, spawn_key=(t,))``, so it depends only on
``(spec, seed, t)`` and can be rebuilt alone, in any order, in any process. Adaptive
sessions draw from a known per-pixel density instead (``density=``); trial ``t`` then
depends on ``(spec, seed, t, density)``, and :func:`center_maps` weights each centre by
the inverse of its probability so that the analysis stays unbiased. Masks are
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
Horvitz, D. G. & Thompson, D. J. (1952). A generalization of sampling without
replacement from a finite universe. JASA 47, 663-685. :doi:`10.1080/01621459.1952.10483446`
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from threadpoolctl import OpenBLASController, ThreadpoolController

from .spec import BubbleSpec, _whole, image_shape, sigma_to_fwhm

__all__ = ["sample_centers", "render_masks", "center_maps", "occlusion_positions",
           "occlusion_masks", "rise_masks", "trial_rng", "seed_sequence", "one_blas_thread"]

_CHUNK_ELEMENTS = 2 ** 22      # elements of a (trials x bubbles x H x W) block, ~16 MB
_TILE_BYTES = 2 ** 20          # output bytes of one separable work item, ~ one L2 cache
_THREAD_BYTES = 2 ** 23        # output bytes per rendering thread, at least (~3 ms)
_MAX_WORKERS = 8               # default thread cap: thread start-up beats the gain past it


# -- BLAS threads and our own ------------------------------------------------------
_blas_lock = threading.Lock()
_blas = {"libraries": None, "saved": None, "depth": 0}


def _release_blas_control():
    """Let any thread change OpenBLAS's thread count again (threadpoolctl >= 3.8).

    threadpoolctl lets one thread at a time change OpenBLAS's process-wide setting and
    silently ignores the others; one_blas_thread changes it under its own lock and hands
    control back at once, so that the last block to leave can restore the setting
    whichever thread it runs in, and the caller's own limits keep working.
    """
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


@contextlib.contextmanager
def one_blas_thread():
    """Limit BLAS to one thread inside the ``with`` block.

    Thousands of small matrix products, such as one ``(H x k) @ (k x W)`` per mask, gain
    nothing from a multi-threaded BLAS and collapse when another process holds a core:
    OpenBLAS splits each product over its threads and waits for the slowest (on two
    shared cores, ``render_masks`` fell from about 6,000 to under 1,000 masks/s). Code
    that runs many small products limits BLAS to one thread here and parallelises over
    chunks of its own work instead. Values do not change, only the speed.

    The limit is set through ``threadpoolctl`` on every BLAS library loaded when it is
    first used, found once (entering costs microseconds, not the third of a millisecond
    of ``threadpool_limits``). BLAS's thread count is process-wide: blocks may nest and
    overlap in several threads; the first to enter sets the limit and the last to leave
    restores the setting found by the first.

    Examples
    --------
    >>> import numpy as np
    >>> with one_blas_thread():
    ...     product = np.ones((4, 2)) @ np.ones((2, 3))
    >>> float(product.sum())
    24.0
    """
    with _blas_lock:
        if _blas["depth"] == 0:
            if _blas["libraries"] is None:
                _blas["libraries"] = ThreadpoolController().select(
                    user_api="blas").lib_controllers
            _release_blas_control()
            try:
                _blas["saved"] = [lib.get_num_threads() for lib in _blas["libraries"]]
                for lib in _blas["libraries"]:
                    lib.set_num_threads(1)
            finally:
                _release_blas_control()
        _blas["depth"] += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas["depth"] -= 1
            if _blas["depth"] == 0:
                _release_blas_control()
                try:
                    for lib, n in zip(_blas["libraries"], _blas["saved"]):
                        if n is not None:
                            lib.set_num_threads(n)
                finally:
                    _release_blas_control()


def _reset_after_fork():
    """A forked child starts outside any block (its BLAS keeps the parent's setting)."""
    global _blas_lock
    _blas_lock = threading.Lock()
    _blas.update(saved=None, depth=0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _n_workers(workers):
    """Threads to use: ``workers`` (an int >= 1) or, for None, the usable cores but one.

    One core is left to the rest of the machine (a PsychoPy window, another process):
    on two shared cores, a second rendering thread made ``render_masks`` up to a quarter
    slower with the other core busy and gained under 10 % with both idle. The default
    is capped at ``_MAX_WORKERS``.
    """
    if workers is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:          # not on Linux
            cores = os.cpu_count() or 1
        return max(1, min(_MAX_WORKERS, cores - 1))
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
        raise ValueError(f"workers must be None (all usable cores) or an integer >= 1, "
                         f"got {workers!r}")
    return int(workers)


def _run_items(function, items, workers):
    """Call ``function(item)`` for every item, on up to ``workers`` threads.

    Each thread takes the next item when it is done with one, so a thread slowed by
    another process simply takes fewer of them; numpy releases the GIL in the products
    and element-wise passes. The first error is raised once every thread has stopped.
    """
    workers = min(workers, len(items))
    if workers <= 1:
        for item in items:
            function(item)
        return
    queue = iter(items)
    lock = threading.Lock()
    failed = threading.Event()

    def work():
        while not failed.is_set():
            with lock:
                item = next(queue, None)
            if item is None:
                return
            try:
                function(item)
            except BaseException:
                failed.set()            # the other threads stop after their item
                raise

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bubbles") as pool:
        futures = [pool.submit(work) for _ in range(workers)]
    for future in futures:
        future.result()


# -- seeds -------------------------------------------------------------------------
def seed_sequence(seed):
    """The root ``numpy.random.SeedSequence`` of a seeded run.

    Every function of :mod:`bubbles` that draws random numbers takes ``seed`` in the same
    three kinds:

    - an integer ``>= 0``: the same as ``SeedSequence(seed)``; record it and any mask,
      noise field or face is regenerable from it;
    - a ``numpy.random.SeedSequence``: used as the root (its children, not its own
      stream, seed the trials);
    - a ``numpy.random.Generator``: drawn from once, one integer below ``2**63`` that
      becomes the root; successive calls with one Generator differ, and the result is
      regenerable only from that drawn integer.

    Examples
    --------
    >>> seed_sequence(7).entropy
    7
    >>> import numpy as np
    >>> seed_sequence(np.random.SeedSequence(7)).entropy
    7
    """
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, np.random.Generator):
        return np.random.SeedSequence(int(seed.integers(2 ** 63)))
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, a numpy SeedSequence or a numpy "
                         f"Generator, got {seed!r}")
    return np.random.SeedSequence(int(seed))


def trial_rng(seed, index, *, stream=None):
    """Generator for one trial (or mask) ``index`` of a seeded run.

    ``SeedSequence(seed, spawn_key=(index,))`` is exactly the ``index``-th child that
    ``SeedSequence(seed).spawn`` would give, so the stream of trial ``index`` depends on
    nothing but ``(seed, index)``. ``stream`` picks an independent grandchild
    (``spawn_key=(index, stream)``) for other random parts of the same trial, such as
    its noise background. ``seed`` is any kind :func:`seed_sequence` takes (a Generator
    is drawn from on every call: convert it once with :func:`seed_sequence` to seed
    several trials of one run).

    Examples
    --------
    >>> import numpy as np
    >>> a = trial_rng(7, 3).random()
    >>> a == trial_rng(np.random.SeedSequence(7), 3).random()
    True
    """
    root = seed_sequence(seed)
    if isinstance(index, bool) or not isinstance(index, numbers.Integral) or index < 0:
        raise ValueError(f"trial index must be an integer >= 0, got {index!r}")
    if stream is not None and (isinstance(stream, bool) or not isinstance(stream, numbers.Integral)
                               or stream < 0):
        raise ValueError(f"stream must be None or an integer >= 0, got {stream!r}")
    key = (int(index),) if stream is None else (int(index), int(stream))
    child = np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + key,
                                   pool_size=root.pool_size)
    return np.random.Generator(np.random.PCG64(child))


def _trial_indices(trials):
    """``trials`` (a count n or trial indices) as a sequence of int; refuses fractions."""
    count = _whole(trials) if np.ndim(trials) == 0 and not isinstance(trials, (str, bytes)) \
        else None
    if count is not None:
        if count < 0:
            raise ValueError(f"trials must be a count >= 0 or trial indices, got {trials}")
        return range(count)
    message = ("trials must be a count n (trials 0..n-1) or an iterable of whole-number "
               f"trial indices >= 0, got {trials!r}")
    if isinstance(trials, (str, bytes)) or np.ndim(trials) == 0:
        raise ValueError(message)
    try:
        values = list(trials)
    except TypeError:
        raise ValueError(message) from None
    indices = [_whole(t) for t in values]
    bad = [v for v, i in zip(values, indices) if i is None or i < 0]
    if bad:
        raise ValueError(f"{message}; not a whole number >= 0: {bad[:5]!r}")
    return indices


def _densities(spec, density):
    """``density`` as one float64 probability vector over the eligible pixels per band.

    Accepts an (H, W) array (the same density for every band) or (n_bands, H, W).
    Values outside the search region are ignored; inside it every pixel needs a
    probability > 0 (the importance weight of a centre is its inverse), and the values
    are rescaled to sum to 1 over the eligible pixels.
    """
    h, w = spec.shape
    shapes = [(h, w), (spec.n_bands, h, w)]
    expected = " or ".join(str(x) for x in shapes)
    try:
        q = np.asarray(density, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"density must be an array of probabilities of shape {expected}, "
                         f"got {type(density).__name__}") from None
    if q.shape not in shapes:
        raise ValueError(f"density must have shape {expected} (spec.shape, one value per "
                         f"pixel), got shape {q.shape}")
    q = q.reshape(-1, h * w)
    allowed = spec.allowed_pixels
    out = []
    for band in range(spec.n_bands):
        row = q[band if len(q) > 1 else 0]
        row = row if allowed is None else row[allowed]
        if not np.all(np.isfinite(row)):
            raise ValueError(f"density must be finite, got {int((~np.isfinite(row)).sum())} "
                             "NaN/inf value(s) at eligible pixels")
        if (row <= 0).any():
            raise ValueError(
                f"density must be > 0 at every eligible pixel (each centre is weighted by "
                f"1 / (N q)), got {int((row < 0).sum())} negative and "
                f"{int((row == 0).sum())} zero value(s), smallest {row.min():g}; mix it "
                "with a uniform floor")
        out.append(row / row.sum())
    return out


def sample_centers(spec, seed, trials, *, density=None):
    """Draw bubble centres for some trials of a seeded run.

    Parameters
    ----------
    spec : BubbleSpec
    seed : int, numpy.random.SeedSequence or numpy.random.Generator
        Seed of the run (a session, a probe); see :func:`seed_sequence`. Record an int to
        regenerate the masks later.
    trials : int or iterable of int
        A count ``n`` (trials ``0 .. n-1``) or the trial indices to draw.
    density : array_like, shape (H, W) or (n_bands, H, W), optional
        Probability of each pixel being a centre (adaptive sampling; one (H, W) map
        serves every band). Rescaled to sum to 1 over the eligible pixels (the search
        region, else the image), where every value must be > 0; values outside the
        search region are ignored. The ``k``
        centres of a trial (and band) are then drawn independently **with replacement**:
        ``u = rng.random(k)`` from :func:`trial_rng` and the pixel whose cumulative
        probability first exceeds ``u``, so a pixel may be drawn twice. Weight the
        centres with ``center_maps(spec, centers, density=density)`` in the analysis.
        Default: uniform without replacement (distinct pixels), as always.

    Returns
    -------
    centers : ndarray of float64, shape (n, n_bubbles, 2), or list of them
        ``(row, col)`` pixel coordinates; one array per band for a multi-scale spec.
        Exactly ``n_bubbles`` centres per trial (and band), inside the search region
        when the spec has one; distinct pixels unless ``density`` is given. Trial ``t``
        depends only on ``(spec, seed, t)`` (and ``density``).

    Examples
    --------
    >>> spec = BubbleSpec(shape=(64, 64), sigma=4, n_bubbles=5)
    >>> c = sample_centers(spec, 7, 10)
    >>> c.shape
    (10, 5, 2)
    >>> bool((sample_centers(spec, 7, [5])[0] == c[5]).all())
    True
    >>> q = np.ones((64, 64)); q[:, :32] = 3.0          # left half three times as likely
    >>> d = sample_centers(spec, 7, 400, density=q)
    >>> bool(0.7 < (d[..., 1] < 32).mean() < 0.8)
    True
    """
    if not isinstance(spec, BubbleSpec):
        raise TypeError(f"spec must be a BubbleSpec, got {type(spec).__name__}")
    indices = _trial_indices(trials)
    root = seed_sequence(seed)
    h, w = spec.shape
    allowed = spec.allowed_pixels
    population = h * w if allowed is None else allowed.size
    counts = spec.n_per_band
    cdfs = None
    if density is not None:
        cdfs = []
        for q in _densities(spec, density):
            cdf = np.cumsum(q)
            cdfs.append(cdf / cdf[-1])
    out = [np.empty((len(indices), k, 2)) for k in counts]
    for i, t in enumerate(indices):
        rng = trial_rng(root, t)
        for band, k in enumerate(counts):
            if cdfs is None:
                flat = rng.choice(population, size=k, replace=False)
            else:
                flat = np.minimum(np.searchsorted(cdfs[band], rng.random(k), side="right"),
                                  population - 1)
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


def _render_chunk(centers, weights, sigma, spec, out, ones):
    """Render the masks of some trials of one band into ``out`` (c, H, W), contiguous.

    Sums ('clip') or maxima ('max') of the apertures, clipped to 1 and flipped for
    ``polarity='occlude'`` while they are still in cache. ``ones`` is a float32 (H * W,)
    row of ones: numpy's minimum of two arrays is vectorised, of an array and a
    scalar it is not (four times slower).
    """
    h, w = spec.shape
    n, k, _ = centers.shape
    if k == 0:
        out[...] = 0.0
    elif spec.aperture == "disk":                       # counts of 0/1: exact in float32
        dy = np.arange(h, dtype=np.float32) - centers[:, :, 0:1]       # (c, k, H)
        dx = np.arange(w, dtype=np.float32) - centers[:, :, 1:2]       # (c, k, W)
        dy[weights == 0] = np.inf                       # padding of ragged trials: outside
        half = sigma_to_fwhm(sigma) / 2.0
        inside = (dy * dy)[..., :, None] + (dx * dx)[..., None, :] <= half * half
        if spec.overlap == "clip":
            np.sum(inside, axis=1, dtype=np.float32, out=out)
        else:
            np.copyto(out, inside.any(axis=1))
    else:
        dy = np.arange(h, dtype=np.float32) - centers[:, :, 0:1]       # (c, k, H)
        dx = np.arange(w, dtype=np.float32) - centers[:, :, 1:2]       # (c, k, W)
        if spec.aperture == "gaussian":                 # exp(-d**2 / (2 sigma**2))
            scale = np.float32(-0.5 / sigma ** 2)
            fy, fx = dy * dy, dx * dx
            fy *= scale
            fx *= scale
            np.exp(fy, out=fy)
            np.exp(fx, out=fx)
        else:                                           # square: |d| <= FWHM / 2
            half = sigma_to_fwhm(sigma) / 2.0
            fy = (np.abs(dy) <= half).astype(np.float32)
            fx = (np.abs(dx) <= half).astype(np.float32)
        if not (weights == 1.0).all():                  # padding of ragged trials
            fy *= weights[:, :, None]
        if spec.overlap == "clip":                      # sum of outer products
            np.matmul(fy.transpose(0, 2, 1), fx, out=out)
        else:
            np.max(fy[..., :, None] * fx[..., None, :], axis=1, out=out)
    flat = out.reshape(n, h * w)
    np.minimum(flat, ones, out=flat)
    if spec.polarity == "occlude":
        np.subtract(ones, flat, out=flat)


def render_masks(spec, centers, *, out=None, workers=None):
    """Render bubbles masks from centres.

    Parameters
    ----------
    spec : BubbleSpec
    centers : ndarray, shape (n, k, 2), or list
        As returned by :func:`sample_centers` (one array per band for a multi-scale
        spec); a ragged list of per-trial ``(k_t, 2)`` arrays is accepted too.
    out : ndarray of float32, optional
        Preallocated output of the returned shape.
    workers : int, optional
        Most threads that render chunks of masks in parallel; default: the usable cores
        but one, at most 8 (one thread on a 2-core machine). A thread is started per
        8 MB of output at most, so small batches render in the calling thread. BLAS is
        limited to one thread meanwhile (:func:`one_blas_thread`), so the speed holds
        when another process holds a core. The masks are bit-identical whatever
        ``workers`` is.

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
    workers = _n_workers(workers)
    per_band = [_padded(c, spec.shape) for c in _per_band(spec, centers)]
    n = per_band[0][0].shape[0]
    if any(c.shape[0] != n for c, _ in per_band):
        raise ValueError("centers of every band must cover the same number of trials")
    h, w = spec.shape
    shape = (n, spec.n_bands, h, w) if spec.multiscale else (n, h, w)
    if out is None:
        out = np.empty(shape, np.float32)
    elif not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be a float32 array of shape {shape}, got "
                         f"{getattr(out, 'dtype', type(out).__name__)} {np.shape(out)}")
    if n == 0:
        return out

    # work items: (band, first trial, last trial + 1), each small enough to stay in cache
    items = []
    for band, (c, _) in enumerate(per_band):
        k = c.shape[1]
        if spec.overlap == "clip" and spec.aperture != "disk":
            size = _TILE_BYTES // (4 * h * w)
        else:                                   # a (trials x k x H x W) block per item
            size = _CHUNK_ELEMENTS // max(1, k * h * w)
        size = max(1, min(n, size))
        items += [(band, s, min(n, s + size)) for s in range(0, n, size)]
    workers = max(1, min(workers, out.nbytes // _THREAD_BYTES))   # ~3 ms of work each
    # matmul into a strided view falls back to a slow loop: a contiguous view or scratch
    direct = out.flags.c_contiguous and (not spec.multiscale or n == 1)
    local = threading.local()
    ones = np.ones(h * w, np.float32)

    def render(item):
        band, start, stop = item
        c, wt = per_band[band]
        if direct:
            target = out[start:stop, band] if spec.multiscale else out[start:stop]
        else:
            scratch = getattr(local, "scratch", None)
            if scratch is None or scratch.shape[0] < stop - start:
                scratch = local.scratch = np.empty((stop - start, h, w), np.float32)
            target = scratch[:stop - start]
        _render_chunk(c[start:stop], wt[start:stop], spec.sigmas[band], spec, target, ones)
        if not direct:
            if spec.multiscale:
                out[start:stop, band] = target
            else:
                out[start:stop] = target

    with one_blas_thread():
        _run_items(render, items, workers)
    return out


def center_maps(spec, centers, *, density=None):
    """Sparse centre maps: one row per trial, 1.0 at each bubble centre.

    This is the design matrix of the regression classification image: the analysis
    engine multiplies its transpose by the (trials x targets) responses and then smooths
    with the aperture sigma.

    Parameters
    ----------
    spec : BubbleSpec
    centers : ndarray, shape (n, k, 2), or list
        As :func:`sample_centers` returns them, or a ragged list of (k_t, 2) arrays.
    density : array_like, shape (H, W) or (n_bands, H, W), optional
        The density the centres were drawn from (``sample_centers(..., density=)``):
        each centre then counts ``1 / (N q(c))`` instead of 1.0 (Horvitz & Thompson
        1952), ``N`` the number of eligible pixels and ``q`` the density rescaled over
        them, so that a row's expected value is ``k / N`` at every pixel, as for uniform
        centres, whatever the density favoured. Centres where the density is 0 (outside
        the search region) are refused.

    Returns
    -------
    maps : scipy.sparse.csr_matrix, shape (n, H * W), float32, or a list per band
        Centres are rounded to the nearest pixel; coincident centres add up.

    Examples
    --------
    >>> spec = BubbleSpec(shape=(8, 8), sigma=1, n_bubbles=2)
    >>> q = np.ones((8, 8)); q[0, 0] = 4.0
    >>> m = center_maps(spec, [[[0, 0], [5, 5]]], density=q)
    >>> float(m[0, 0]), float(m[0, 45])         # 1 / (64 * 4/67), 1 / (64 * 1/67)
    (0.26171875, 1.046875)
    """
    if not isinstance(spec, BubbleSpec):
        raise TypeError(f"spec must be a BubbleSpec, got {type(spec).__name__}")
    h, w = spec.shape
    weights = None
    if density is not None:
        allowed = spec.allowed_pixels
        weights = []
        for q in _densities(spec, density):
            full = np.full(h * w, np.inf)
            full[slice(None) if allowed is None else allowed] = 1.0 / (q.size * q)
            weights.append(full)
    maps = []
    for band, c in enumerate(_per_band(spec, centers)):
        arr, live_w = _padded(c, spec.shape)
        n = arr.shape[0]
        live = live_w > 0
        rr = np.clip(np.rint(arr[..., 0]), 0, h - 1).astype(np.int64)
        cc = np.clip(np.rint(arr[..., 1]), 0, w - 1).astype(np.int64)
        trial = np.broadcast_to(np.arange(n)[:, None], live.shape)
        pixel = (rr * w + cc)[live]
        if weights is None:
            values = np.ones(int(live.sum()), np.float32)
        else:
            values = weights[band][pixel]
            if not np.all(np.isfinite(values)):
                bad = pixel[~np.isfinite(values)][0]
                raise ValueError(f"centers include pixel {divmod(int(bad), w)}, outside "
                                 "the search region, where the density is 0")
            values = values.astype(np.float32)
        m = sp.csr_matrix((values, (trial[live], pixel)), shape=(n, h * w))
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
    h, w = image_shape(shape)
    if (isinstance(size, bool) or not isinstance(size, numbers.Integral)
            or not 1 <= size <= min(h, w)):
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
    masks = np.ones((len(positions),) + image_shape(shape), np.float32)
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
    seed : int, numpy.random.SeedSequence or numpy.random.Generator
        See :func:`seed_sequence`.
    grid : tuple of int
        Size of the low-resolution grid (Petsiuk et al. use 7 x 7).
    p : float
        Probability that a grid cell is visible, in (0, 1].

    Returns
    -------
    masks : ndarray of float32, shape (n_masks, H, W), in [0, 1]
    """
    h, w = image_shape(shape)
    gh, gw = image_shape(grid, name="grid")
    if isinstance(n_masks, bool) or not isinstance(n_masks, numbers.Integral) or n_masks < 0:
        raise ValueError(f"n_masks must be an integer >= 0, got {n_masks!r}")
    if isinstance(p, (bool, str)) or not 0.0 < p <= 1.0:
        raise ValueError(f"p must be in (0, 1], got {p!r}")
    root = seed_sequence(seed)
    ch, cw = math.ceil(h / gh), math.ceil(w / gw)
    up_rows = _bilinear_matrix(gh, (gh + 1) * ch)
    up_cols = _bilinear_matrix(gw, (gw + 1) * cw)
    masks = np.empty((int(n_masks), h, w), np.float32)
    with one_blas_thread():                     # two tiny products per mask
        for i in range(int(n_masks)):
            rng = trial_rng(root, i)
            cells = (rng.random((gh, gw)) < p).astype(np.float32)
            dy, dx = rng.integers(0, ch), rng.integers(0, cw)
            big = up_rows @ cells @ up_cols.T
            masks[i] = big[dy:dy + h, dx:dx + w]
    return masks
