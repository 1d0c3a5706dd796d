"""Diagnostic images of many voxels (or regions), their statistics, on one machine or many.

The single-trial amplitudes ``B`` (trials x voxels) first lose what the nuisance
covariates explain (``R = B - C C^+ B``, ``C`` with an intercept: revealed area, number
of bubbles, run dummies, optionally correctness and reaction time: visible area alone
drives visual cortex everywhere). Each voxel's column of ``R`` is then a response of
:func:`analysis.classification_image`'s many-target path (regression, or the median
split), computed in chunks of voxels: each chunk is one task that writes its slice of
the Zarr array ``z`` (voxels x H x W) and returns per-voxel summaries, so that the same
function runs in a loop here or as dask.distributed tasks on a cluster.

Statistics. Within a voxel, the random-field pixel test of Chauvin et al. (2005) (two
tails) with the family-wise rate ``p`` divided among the voxels (Bonferroni): the
threshold solves ``P(max |Z| > t) = p / n_voxels`` for the smoothed field. With
``permutations=N``: family-wise control over voxels x pixels by the maximum statistic:
each iteration permutes the trials once for all voxels (the rows of ``R``), recomputes
every voxel's image and keeps ``max |z|`` over voxels and pixels; the threshold is the
``1 - p`` quantile of the N maxima (the observed maximum counted among them).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from bubbles import one_blas_thread, sigma_to_fwhm

from ..ci import classification_image
from ..stats import pixel_threshold, rft_warnings
from ..zscore import zscore

__all__ = ["COVARIATES", "covariate_matrix", "residualize", "VoxelStats",
           "voxel_images", "bonferroni_threshold", "chunk_task"]

COVARIATES = ("area", "n_bubbles", "run", "correct", "rt")
DEFAULT_COVARIATES = ("area", "n_bubbles", "run")


def covariate_matrix(names, *, area, table_rows, run_of_trial):
    """The nuisance design (n_trials, k) with an intercept, and its column names.

    Parameters
    ----------
    names : sequence of str
        Among :data:`COVARIATES`.
    area : ndarray (n,)
        Revealed fraction of each trial.
    table_rows : pandas.DataFrame
        The session rows of the trials, in order (for n_bubbles, correct, rt).
    run_of_trial : ndarray of int (n,)
    """
    cols, labels = [np.ones(len(area))], ["intercept"]
    for name in names:
        if name not in COVARIATES:
            raise ValueError(f"covariates must be among {list(COVARIATES)}, got {name!r}")
        if name == "area":
            cols.append(np.asarray(area, float))
            labels.append("area")
        elif name == "run":
            for r in np.unique(run_of_trial)[1:]:
                cols.append((run_of_trial == r).astype(float))
                labels.append(f"run_{r + 1}")
        else:
            if name not in table_rows:
                raise ValueError(f"covariate {name!r} is not a column of the session "
                                 f"(columns: {list(table_rows.columns)})")
            v = np.asarray(table_rows[name], dtype=float)
            if not np.all(np.isfinite(v)):
                bad = np.flatnonzero(~np.isfinite(v))[:5].tolist()
                raise ValueError(f"covariate {name!r} has missing values at trials "
                                 f"{bad}: it cannot be regressed out")
            cols.append(v)
            labels.append(name)
    return np.column_stack(cols), labels


def residualize(b, c):
    """``b - c pinv(c) b`` in float32 (b: trials x targets)."""
    b = np.asarray(b, np.float32)
    if c is None or c.shape[1] == 0:
        return b
    coef = np.linalg.pinv(c) @ b.astype(np.float64)
    return (b - (c @ coef)).astype(np.float32)


def bonferroni_threshold(n_pixels, sigma, p, n_targets):
    """Two-tailed RFT pixel threshold at family-wise ``p / n_targets`` per map."""
    return pixel_threshold(int(n_pixels), sigma_to_fwhm(sigma), p / n_targets / 2)[0]


@dataclass
class VoxelStats:
    """Per-target summaries of the diagnostic images.

    Attributes
    ----------
    peak_z : ndarray (n,)
        Largest |z| of each target inside the search region.
    n_significant : ndarray of int (n,)
        Pixels beyond the threshold.
    roi_z : dict name -> ndarray (n,)
        Mean z inside each stimulus ROI.
    behaviour_r : ndarray (n,) or None
        Pearson correlation with the behavioural image over the search region.
    threshold : float
    perm_max : ndarray (N,) or None
        Maximum |z| over targets and pixels of each permutation.
    """

    peak_z: np.ndarray
    n_significant: np.ndarray
    roi_z: dict
    behaviour_r: np.ndarray | None
    threshold: float
    correction: str
    perm_max: np.ndarray | None = None
    info: dict = field(default_factory=dict)


def _maps_z(spec, maps, r, method, names=None, observer="voxel"):
    """(targets, H, W) float32 z of the responses r (n, targets)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # constant targets: z = 0
        img = classification_image(spec, maps, r, method, chunk_size=256, targets=names,
                                   observer=observer, progress=False)
    return np.asarray(img.z, np.float32)


def chunk_task(spec, maps, r, start, *, method, region, rois, behaviour, threshold,
               store=None, perms=None):
    """One chunk of targets: z maps, written to ``store[start:...]`` when given.

    Returns ``(start, peak (n,), n_sig (n,), roi (k, n), beh (n,) or None, z or None,
    perm_max (N,) or None)``; z is returned only without a store.
    """
    with one_blas_thread():          # many small products: one BLAS thread is faster
        return _chunk(spec, maps, r, start, method, region, rois, behaviour, threshold,
                      store, perms)


def _chunk(spec, maps, r, start, method, region, rois, behaviour, threshold, store, perms):
    z = _maps_z(spec, maps, r, method)
    flat = z.reshape(len(z), -1)
    inside = flat if region.all() else flat[:, region.ravel()]     # (n, n_region)
    a = np.abs(inside)
    peak = a.max(axis=1)
    n_sig = (a > threshold).sum(axis=1) if threshold is not None else None
    del a
    roi = np.zeros((0, len(z)))
    if rois:                                 # mean z inside each ROI: one product
        w = np.stack([m.ravel() / m.sum() for m in rois], axis=1).astype(np.float32)
        roi = (flat @ w).T
    beh = None
    if behaviour is not None:
        zb = zscore(behaviour[region].astype(np.float32))
        zv = zscore(inside, axis=1)
        beh = (zv @ zb / np.float32(zb.size)).astype(np.float64)
    if store is not None:
        import zarr

        arr = zarr.open_array(store, mode="r+")
        arr[start:start + len(z)] = z
    pmax = None
    if perms is not None:
        pmax = np.empty(len(perms))
        sel = None if region.all() else region.ravel()
        for i, p in enumerate(perms):
            zp = _maps_z(spec, maps, r[p], method).reshape(len(z), -1)
            pmax[i] = np.abs(zp if sel is None else zp[:, sel]).max()
    return start, peak, n_sig, roi, beh, (None if store is not None else z), pmax


def voxel_images(spec, maps, responses, *, method="regression", p=0.05, permutations=0,
                 seed=0, rois=None, behaviour=None, store=None, chunk_size=1024,
                 scheduler=None, progress=False, out=None):
    """Diagnostic images of every column of ``responses`` and their statistics.

    Parameters
    ----------
    spec : BubbleSpec
        The analysis spec (:func:`analysis.fmri.stimulus.analysis_spec`).
    maps : scipy.sparse matrix (n_trials, H * W)
        Centre maps on the analysis grid (:func:`bubbles.center_maps`).
    responses : ndarray (n_trials, n_targets)
        Residualised amplitudes.
    method : {'regression', 'median_split'}
    p : float
        Family-wise error rate over targets (and pixels).
    permutations : int
        0: RFT pixel test with Bonferroni over targets; N >= 20: max-statistic.
    seed : int
    rois : dict name -> (H, W) bool, optional
    behaviour : ndarray (H, W), optional
    store : path, optional
        A Zarr array of shape (n_targets, H, W) float32 to write (created by the
        caller, chunked so that ``chunk_size`` is a multiple of its voxel chunk).
    chunk_size : int
        Targets per task.
    scheduler : None, 'local' or an address
        None: in this process. 'local': a dask.distributed LocalCluster of 2 workers;
        an address ('tcp://host:8786'): that scheduler. Tasks write ``store`` directly.
    out : ndarray (n_targets, H, W), optional
        Filled with the z maps when there is no store.

    Returns
    -------
    VoxelStats
    """
    if method not in ("regression", "median_split"):
        raise ValueError(f"'method' must be one of ['regression', 'median_split']. "
                         f"{method!r} was provided.")
    if not (isinstance(permutations, (int, np.integer)) and (permutations == 0
                                                            or permutations >= 20)):
        raise ValueError(f"permutations must be 0 (random field theory) or an integer >= "
                         f"20, got {permutations!r}")
    if not (0 < p < 1):
        raise ValueError(f"p must lie in (0, 1), got {p!r}")
    r = np.asarray(responses, np.float32)
    n, n_t = r.shape
    region = (spec.search_region if spec.search_region is not None
              else np.ones(spec.shape, bool))
    names = list(rois or {})
    masks = [np.asarray(rois[k], bool) for k in names]
    thr = None if permutations else bonferroni_threshold(region.sum(), spec.sigma, p, n_t)
    if thr is not None:
        # random field theory's conditions, and the Gaussian tail the analytic z needs at a
        # Bonferroni threshold this high: said, never silently assumed
        for note in rft_warnings(int(region.sum()), sigma_to_fwhm(spec.sigma)):
            warnings.warn(f"voxel images: {note} (or --permutations N)", UserWarning,
                          stacklevel=2)
        if thr > 4.5 and n < 1000:
            warnings.warn(f"voxel images: the threshold z {thr:.2f} (random field theory, "
                          f"Bonferroni over {n_t} voxels) lies far in the tail, where the "
                          f"analytic z of {n} trials is not Gaussian enough to trust; use "
                          "--permutations N (max statistic over voxels x pixels)",
                          UserWarning, stacklevel=2)
    perms = None
    if permutations:
        rng = np.random.default_rng(seed)
        perms = np.stack([rng.permutation(n) for _ in range(int(permutations))])
    starts = list(range(0, n_t, chunk_size))
    kw = dict(method=method, region=region, rois=masks, behaviour=behaviour,
              threshold=thr, store=None if store is None else str(store), perms=perms)
    results = []
    if scheduler is None:
        from tqdm.auto import tqdm

        for s in tqdm(starts, desc="voxel images", unit="chunk", leave=False,
                      disable=not progress or len(starts) < 2):
            results.append(chunk_task(spec, maps, r[:, s:s + chunk_size], s, **kw))
    else:
        results = _run_dask(scheduler, spec, maps, r, starts, chunk_size, kw)
    results.sort(key=lambda t: t[0])
    peak = np.concatenate([t[1] for t in results])
    roi_z = {k: np.concatenate([t[3][i] for t in results]) for i, k in enumerate(names)}
    beh = (np.concatenate([t[4] for t in results]) if behaviour is not None else None)
    if out is not None and store is None:
        for t in results:
            out[t[0]:t[0] + len(t[5])] = t[5]
    pmax = None
    if permutations:
        pmax = np.max(np.stack([t[6] for t in results]), axis=0)
        allmax = np.concatenate([pmax, [peak.max()]])
        thr = float(np.quantile(allmax, 1 - p, method="higher"))
        n_sig = _count_beyond(results, store, region, thr, out)
        correction = f"max-statistic over {n_t} targets x pixels, {permutations} permutations"
    else:
        n_sig = np.concatenate([t[2] for t in results])
        correction = (f"random field theory per map, Bonferroni over {n_t} targets "
                      f"(two-tailed, p {p:g})")
    return VoxelStats(peak_z=peak, n_significant=n_sig.astype(np.int64), roi_z=roi_z,
                      behaviour_r=beh, threshold=float(thr), correction=correction,
                      perm_max=pmax, info={"n_pixels": int(region.sum()),
                                           "fwhm": sigma_to_fwhm(spec.sigma)})


def _count_beyond(results, store, region, thr, out):
    """Pixels beyond ``thr`` per target, read back from the store (or ``out``)."""
    if store is None:
        return np.concatenate([(np.abs(t[5][:, region]) > thr).sum(axis=1)
                               for t in results])
    import zarr

    arr = zarr.open_array(str(store), mode="r")
    counts = []
    step = arr.chunks[0] * max(1, 1024 // arr.chunks[0])
    for s in range(0, arr.shape[0], step):
        z = arr[s:s + step]
        counts.append((np.abs(z[:, region]) > thr).sum(axis=1))
    return np.concatenate(counts)


def _run_dask(scheduler, spec, maps, r, starts, chunk_size, kw):
    """The chunk tasks on dask.distributed (a LocalCluster of 2 workers for 'local')."""
    from dask.distributed import Client, LocalCluster

    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout=30)
        except OSError as exc:
            raise OSError(f"--scheduler {scheduler}: cannot reach the dask scheduler "
                          f"({exc})") from None
    try:
        shared = client.scatter([spec, maps], broadcast=True)
        perms = kw.pop("perms")
        perms_f = client.scatter(perms, broadcast=True) if perms is not None else None
        futures = [client.submit(chunk_task, shared[0], shared[1],
                                 r[:, s:s + chunk_size], s, perms=perms_f,
                                 pure=False, **kw)
                   for s in starts]
        return client.gather(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
