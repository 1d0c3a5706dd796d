"""Single-trial amplitudes: LSS in closed form and LSA, for every voxel of a run at once.

A run's design for trial ``i`` of condition ``c`` (the beta-series recipe of Mumford et
al. 2012, nilearn's "plot_beta_series" example) has the trial's own regressor ``x_i``,
one regressor ``s_i`` for all the other trials of ``c``, and nuisance columns ``N``
(cosine drift with its constant, the other conditions, confounds). By the
Frisch-Waugh-Lovell theorem, with ``M`` the projection that removes ``N``,
``x~ = M x_i`` and ``s~ = M s_i``, the trial's OLS amplitude is

``beta_i = (d x~ - b s~) . Y / (a d - b^2)``, ``a = x~.x~``, ``b = x~.s~``, ``d = s~.s~``

so the rows ``W_i = (d x~ - b s~) / (a d - b^2)`` form a (trials x time) matrix built
once per run, and the amplitudes of all voxels are the one product ``B = W Y``
(``Y`` time x voxels), taken in float32 over chunks of voxels. LSA is one design with a
regressor per trial: ``W = (X~' X~)^-1 X~'``.

Regressors are sampled exactly as ``nilearn.glm.first_level.compute_regressor`` samples
them (events on a grid oversampled 50 times, convolved with nilearn's ``glover_hrf`` /
``spm_hrf`` kernel, linearly interpolated at the frame times) but for all events of a
run at once: the convolution of a boxcar with the kernel is a difference of the kernel's
cumulative sum, read at the frames only. The drift is nilearn's cosine basis
(``nilearn.signal.create_cosine_drift``, high-pass 0.01 Hz by default).

``hrf='library'`` chooses, per voxel, one of a small family of HRFs (the Glover HRF
shifted by -1, 0, +1, +2 s and stretched by 0.8, 1, 1.25; GLMsingle's idea, Prince et
al. 2022) by the leave-one-run-out fit of a model with one amplitude for all trials:
with the amplitude fitted on the other runs, the shape whose prediction of the left-out
run has the smallest squared error wins (with one run: the smallest in-sample error,
every shape having one parameter).

References
----------
Mumford, J. A., Turner, B. O., Ashby, F. G. & Poldrack, R. A. (2012). Deconvolving BOLD
activation in event-related designs for multivoxel pattern classification analyses.
NeuroImage 59, 2636-2643. :doi:`10.1016/j.neuroimage.2011.08.076`

Prince, J. S. et al. (2022). Improving the accuracy of single-trial fMRI response
estimates using GLMsingle. eLife 11, e77599. :doi:`10.7554/eLife.77599`
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["HRF_MODELS", "ESTIMATORS", "hrf_kernels", "event_regressors", "frame_times",
           "RunDesign", "run_design", "trial_weights", "SingleTrialFit",
           "single_trial_betas", "choose_hrf"]

HRF_MODELS = ("glover", "spm", "library")
ESTIMATORS = ("lss", "lsa")
OVERSAMPLING = 50
MIN_ONSET = -24.0
#: The HRF family of ``hrf='library'``: (shift in s, stretch factor) of the Glover HRF.
LIBRARY = tuple((shift, stretch) for stretch in (0.8, 1.0, 1.25)
                for shift in (-1.0, 0.0, 1.0, 2.0))


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"'{name}' must be one of {list(allowed)}. {value!r} was provided.")


def frame_times(n_scans, t_r):
    """Acquisition times of the volumes in seconds (``t_r * arange(n_scans)``, slice time
    reference 0, as nilearn's ``FirstLevelModel`` default)."""
    return float(t_r) * np.arange(int(n_scans), dtype=np.float64)


def hrf_kernels(hrf, t_r, *, oversampling=OVERSAMPLING):
    """HRF kernels sampled every ``t_r / oversampling`` seconds, one row per shape.

    ``'glover'`` and ``'spm'`` are nilearn's kernels (1 row). ``'library'`` gives the
    Glover HRF at each (shift, stretch) of :data:`LIBRARY` (12 rows, zero-padded to one
    length), scaled to the canonical kernel's peak so that amplitudes share a unit.

    Returns
    -------
    ndarray, shape (n_shapes, n_samples), float64
    """
    from nilearn.glm.first_level import glover_hrf, spm_hrf

    _choice("hrf", hrf, HRF_MODELS)
    if hrf == "spm":
        return spm_hrf(t_r, oversampling)[None]
    base = glover_hrf(t_r, oversampling)
    if hrf == "glover":
        return base[None]
    shapes = []
    for shift, stretch in LIBRARY:
        h = glover_hrf(t_r / stretch, oversampling, 32.0, onset=shift)
        shapes.append(h * (base.max() / h.max()))
    out = np.zeros((len(shapes), max(len(h) for h in shapes)))
    for i, h in enumerate(shapes):
        out[i, :len(h)] = h
    return out


def _high_res_grid(times, min_onset, oversampling):
    """The oversampled time grid of nilearn's ``_sample_condition`` (same formula)."""
    n = times.size
    lo, hi = times.min(), times.max()
    n_hr = (n - 1) / (hi - lo) * (hi * (1 + 1.0 / (n - 1)) - lo - min_onset) * oversampling
    return np.linspace(lo + min_onset, hi * (1 + 1.0 / (n - 1)), int(np.rint(n_hr + 1)))


def event_regressors(onsets, durations, times, kernel, *, oversampling=OVERSAMPLING,
                     min_onset=MIN_ONSET):
    """HRF-convolved regressors of single events, sampled at ``times``.

    Equal (to rounding) to ``nilearn.glm.first_level.compute_regressor([[onset],
    [duration], [1]], kernel's model, times)`` called once per event, computed for all
    events together.

    Parameters
    ----------
    onsets, durations : array_like, shape (n_events,)
        Seconds from the first volume.
    times : ndarray, shape (n_scans,)
        Frame times in seconds (:func:`frame_times`).
    kernel : ndarray, shape (n_samples,) or (n_shapes, n_samples)
        From :func:`hrf_kernels`.

    Returns
    -------
    ndarray, shape (n_scans, n_events) (or (n_shapes, n_scans, n_events)), float64
    """
    onsets = np.asarray(onsets, np.float64).ravel()
    durations = np.asarray(durations, np.float64).ravel()
    single = np.ndim(kernel) == 1
    kernel = np.atleast_2d(np.asarray(kernel, np.float64))
    times = np.asarray(times, np.float64)
    grid = _high_res_grid(np.asarray(times, np.float64), min_onset, oversampling)
    tmax = grid.size
    on = np.minimum(np.searchsorted(grid, onsets), tmax - 1)
    off = np.minimum(np.searchsorted(grid, onsets + durations), tmax - 1)
    off = np.where((off == on) & (on < tmax - 1), off + 1, off)
    # linear interpolation at the frame times (scipy's interp1d rule)
    idx = np.clip(np.searchsorted(grid, times), 1, tmax - 1)
    lo, hi = idx - 1, idx
    frac = (times - grid[lo]) / (grid[hi] - grid[lo])
    out = np.empty((kernel.shape[0], len(times), len(onsets)))
    for k, h in enumerate(kernel):
        cum = np.concatenate([[0.0], np.cumsum(h)])      # cum[m] = sum(h[:m])

        def box(j):   # (frames, events): sum_{m=on}^{off-1} h[j - m]
            a = np.clip(j[:, None] - on[None, :] + 1, 0, len(h))
            b = np.clip(j[:, None] - off[None, :] + 1, 0, len(h))
            return cum[a] - cum[b]

        y_lo, y_hi = box(lo), box(hi)
        out[k] = y_lo + (y_hi - y_lo) * frac[:, None]
    return out[0] if single else out


@dataclass
class RunDesign:
    """Everything of one run's model except the data.

    Attributes
    ----------
    trial_regressors : ndarray (n_shapes, n_scans, n_trials)
        One regressor per trial with a session trial number, per HRF shape.
    conditions : ndarray of str (n_trials,)
        Each trial's ``trial_type``.
    other : ndarray (n_shapes, n_scans, n_other)
        Regressors of the events without a trial number, one per ``trial_type``.
    nuisance : ndarray (n_scans, p)
        Cosine drift (with its constant) and confounds.
    keep : ndarray of bool (n_scans,)
        Volumes kept (a confounds strategy may censor some; all True otherwise).
    """

    trial_regressors: np.ndarray
    conditions: np.ndarray
    other: np.ndarray
    nuisance: np.ndarray
    keep: np.ndarray
    names: list = field(default_factory=list)


def run_design(events, n_scans, t_r, *, hrf="glover", high_pass=0.01, confounds=None,
               sample_mask=None):
    """The design of one run from its events table.

    Parameters
    ----------
    events : pandas.DataFrame
        Columns ``onset``, ``duration``, ``trial_type`` and ``trial`` (the session trial
        number, NaN for events that are not bubbles trials), as
        :func:`analysis.fmri.inputs.read_events` returns them.
    n_scans : int
    t_r : float
        Repetition time in seconds.
    hrf : {'glover', 'spm', 'library'}
    high_pass : float
        Cut-off of the cosine drift in Hz.
    confounds : ndarray (n_scans, k), optional
    sample_mask : ndarray of int, optional
        Volumes to keep (from a scrubbing confounds strategy).
    """
    from nilearn.signal import create_cosine_drift

    times = frame_times(n_scans, t_r)
    kernel = hrf_kernels(hrf, t_r)
    is_trial = events["trial"].notna().to_numpy()
    trials = events[is_trial]
    regs = event_regressors(trials["onset"], trials["duration"], times, kernel)
    others = events[~is_trial]
    cols = []
    for name in sorted(others["trial_type"].astype(str).unique()):
        sel = others[others["trial_type"].astype(str) == name]
        cols.append(event_regressors(sel["onset"], sel["duration"], times,
                                     kernel).sum(axis=2))
    other = (np.stack(cols, axis=2) if cols
             else np.zeros((kernel.shape[0], n_scans, 0)))
    drift = create_cosine_drift(high_pass, times)
    nuis = drift if confounds is None else np.hstack([np.asarray(confounds, float),
                                                      drift])
    keep = np.ones(n_scans, bool)
    if sample_mask is not None:
        keep[:] = False
        keep[np.asarray(sample_mask, int)] = True
    return RunDesign(trial_regressors=regs,
                     conditions=trials["trial_type"].astype(str).to_numpy(),
                     other=other, nuisance=nuis, keep=keep)


def _residual_basis(n):
    """Orthonormal basis of the column space of ``n`` (rank by SVD, as ``pinv``)."""
    if n.shape[1] == 0:
        return np.zeros((n.shape[0], 0))
    u, s, _ = np.linalg.svd(n, full_matrices=False)
    tol = s.max() * max(n.shape) * np.finfo(float).eps if s.size else 0
    return u[:, s > tol]


def trial_weights(design, *, estimator="lss", shape=0):
    """The (n_trials, n_kept_scans) matrix ``W`` with ``betas = W @ Y[keep]``.

    Parameters
    ----------
    design : RunDesign
    estimator : {'lss', 'lsa'}
    shape : int
        Which HRF shape of the design (0 unless hrf='library').
    """
    _choice("estimator", estimator, ESTIMATORS)
    keep = design.keep
    x = design.trial_regressors[shape][keep]
    other = design.other[shape][keep]
    nuis = design.nuisance[keep]
    n_t = x.shape[1]
    w = np.zeros((n_t, int(keep.sum())))
    conds = design.conditions
    if estimator == "lsa":
        q = _residual_basis(np.hstack([other, nuis]))
        xt = x - q @ (q.T @ x)
        w[:] = np.linalg.pinv(xt)
        return w
    for c in np.unique(conds):
        mine = conds == c
        rest = [x[:, ~mine & (conds == c2)].sum(axis=1, keepdims=True)
                for c2 in np.unique(conds[~mine])]
        q = _residual_basis(np.hstack([other, nuis] + rest))
        xt = x[:, mine] - q @ (q.T @ x[:, mine])          # M x_i
        st = xt.sum(axis=1, keepdims=True) - xt             # M s_i
        a = np.einsum("ti,ti->i", xt, xt)
        b = np.einsum("ti,ti->i", xt, st)
        d = np.einsum("ti,ti->i", st, st)
        det = a * d - b * b
        alone = d <= 1e-12 * np.maximum(a, 1e-300)          # no other trial of c
        with np.errstate(divide="ignore", invalid="ignore"):
            rows = np.where(alone, xt / np.where(a > 0, a, 1),
                            (d * xt - b * st) / np.where(det > 0, det, 1))
        w[mine] = rows.T
    return w


@dataclass
class SingleTrialFit:
    """Single-trial amplitudes of the voxels of one run.

    Attributes
    ----------
    betas : ndarray float32 (n_trials, n_voxels)
    hrf_index : ndarray of int (n_voxels,) or None
        The library shape chosen per voxel (hrf='library').
    """

    betas: np.ndarray
    hrf_index: np.ndarray | None = None


def _scale(y, scaling):
    if scaling is None:
        return y
    mean = np.maximum(y.mean(axis=0), 1)       # nilearn's mean_scaling rule
    return 100.0 * (y / mean - 1.0)


def single_trial_betas(design, y, *, estimator="lss", hrf_index=None, chunk_size=8192,
                       scaling=None):
    """``B = W Y`` for one run, in float32, over chunks of voxels.

    Parameters
    ----------
    design : RunDesign
    y : ndarray (n_scans, n_voxels)
        The run's masked data (float32).
    estimator : {'lss', 'lsa'}
    hrf_index : ndarray of int (n_voxels,), optional
        The design's HRF shape per voxel (hrf='library'); shape 0 for all by default.
    chunk_size : int
        Voxels per product.
    scaling : {None, 'percent'}
        'percent': each voxel's series as percent signal change of its mean before the
        fit (nilearn's ``signal_scaling=0``).

    Returns
    -------
    ndarray float32 (n_trials, n_voxels)
    """
    if scaling not in (None, "percent"):
        raise ValueError(f"'scaling' must be one of [None, 'percent']. {scaling!r} was "
                         "provided.")
    if not (isinstance(chunk_size, (int, np.integer)) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be an integer >= 1 (voxels per product), got "
                         f"{chunk_size!r}")
    y = np.asarray(y)
    n_vox = y.shape[1]
    n_shapes = design.trial_regressors.shape[0]
    idx = np.zeros(n_vox, int) if hrf_index is None else np.asarray(hrf_index, int)
    out = np.empty((design.trial_regressors.shape[2], n_vox), np.float32)
    keep = design.keep
    y = np.asarray(y, np.float32)
    if not keep.all():
        y = y[keep]
    for s in range(n_shapes):
        cols = np.flatnonzero(idx == s)
        if not cols.size:
            continue
        w = trial_weights(design, estimator=estimator, shape=s).astype(np.float32)
        whole = cols.size == n_vox                     # contiguous column slices
        for start in range(0, cols.size, chunk_size):
            c = (slice(start, min(start + chunk_size, n_vox)) if whole
                 else cols[start:start + chunk_size])
            out[:, c] = w @ _scale(y[:, c], scaling)
    return out


def choose_hrf(designs, ys, *, scaling=None):
    """Per voxel, the library shape with the best cross-validated fit (see module).

    Parameters
    ----------
    designs : list of RunDesign
        Built with ``hrf='library'``.
    ys : list of ndarray (n_scans, n_voxels)
        The runs' data.

    Returns
    -------
    ndarray of int (n_voxels,)
        Index into :data:`LIBRARY`.
    """
    n_shapes = designs[0].trial_regressors.shape[0]
    n_vox = ys[0].shape[1]
    num = np.zeros((len(designs), n_shapes, n_vox))
    den = np.zeros((len(designs), n_shapes))
    for r, (des, y) in enumerate(zip(designs, ys)):
        keep = des.keep
        yk = _scale(np.asarray(y, np.float32), scaling)[keep].astype(np.float64)
        nuis = des.nuisance[keep]
        for s in range(n_shapes):
            x = des.trial_regressors[s][keep].sum(axis=1, keepdims=True)
            q = _residual_basis(np.hstack([des.other[s][keep], nuis]))
            xt = (x - q @ (q.T @ x))[:, 0]
            num[r, s] = xt @ yk
            den[r, s] = xt @ xt
    if len(designs) == 1:
        amp = num[0] / den[0][:, None]
        err = -2 * amp * num[0] + amp ** 2 * den[0][:, None]
    else:
        tot_n, tot_d = num.sum(axis=0), den.sum(axis=0)
        err = np.zeros((n_shapes, n_vox))
        for r in range(len(designs)):
            amp = (tot_n - num[r]) / (tot_d - den[r])[:, None]
            err += -2 * amp * num[r] + amp ** 2 * den[r][:, None]
    return np.argmin(err, axis=0)
