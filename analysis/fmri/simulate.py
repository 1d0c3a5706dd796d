"""A simulated fMRI bubbles study with planted voxel populations, written as BIDS.

From a session's trial table (its masks regenerated from the seeds) the simulator
schedules the trials in runs, gives every voxel of a brain-shaped volume (an ellipsoid
in a box, 3 mm voxels, anterior = +y) a single-trial amplitude and its own HRF, and
writes the BOLD runs:

- a **frontal** cluster (front of the ellipsoid) whose amplitude follows how much of the
  **eyes** the mask revealed;
- an **occipital** cluster (back of the ellipsoid) that follows the **mouth**;
- an **area** cluster (above the occipital one) that follows only the revealed area of
  the whole mask (the confound: visible area alone drives early visual cortex);
- every other voxel is **null** (a constant response plus trial noise).

Amplitude of voxel v on trial t: ``base + gain * zscore(feature_t) + trial_sd * e``,
with ``feature`` the mean mask value inside the ROI ('eyes', 'mouth' of the face set,
:func:`analysis.fmri.stimulus.stimulus_rois`) or over the image ('area'). Each voxel's
HRF is nilearn's Glover HRF shifted by ``U(-1, 2)`` s and stretched by ``U(0.8, 1.25)``
(16 shapes on a 4 x 4 grid of those ranges), scaled so that one event of the canonical
shape peaks at 1: amplitudes are percent signal change. The series is ``100 + signal +
drift + motion + noise``: AR(1) noise, three slow cosines of random weight, the
motion-like confounds (six smoothed random walks, written with their derivatives and
squares as fMRIPrep names them) with small voxel loadings. Voxels outside the brain
hold low values, so that ``nilearn.masking.compute_epi_mask`` finds the brain.

The schedule: a session recorded in the scanner mode (``bubbles run --scanner``; its CSV
has the columns ``run``, ``onset``, ``planned_onset``, ``duration`` of
:data:`analysis.session_files.SCANNER_COLUMNS`) is replayed as it was recorded: its run
numbers, each trial's recorded onset (the onset flip, s from the run's first counted
trigger) and duration, the TR of its sidecar (``config.scanner.tr``) and each run's
number of volumes (``scanner_runs[].n_volumes``, at least enough to hold the run's last
event), so that the BOLD runs line up with the session's own BIDS events files. Any
other session is split in order into ``n_runs`` runs with onsets 6 s after the first
volume and stimulus-onset asynchronies drawn uniformly from ``soa`` (after a 4 s
``instructions`` event at 0 s), each run lasting 24 s past its last onset.

Files, for subject ``S`` and task ``T`` in ``out``::

    dataset_description.json
    sub-S/func/sub-S_task-T_run-R_bold.nii.gz, _bold.json, _events.tsv
    derivatives/fmriprep/sub-S/func/sub-S_task-T_run-R_desc-confounds_timeseries.tsv/.json
    derivatives/fmriprep/sub-S/func/sub-S_task-T_desc-brain_mask.nii.gz
    derivatives/truth/sub-S_task-T_truth.json      classes, parameters, ROI names
    derivatives/truth/sub-S_task-T_labels.nii.gz   0 null, 1 eyes, 2 mouth, 3 area
    derivatives/truth/sub-S_task-T_planted.npz     ijk, label, HRF, amplitudes
    derivatives/truth/sub-S_task-T_regions.nii.gz  the planted clusters as regions
    derivatives/truth/sub-S_task-T_regions.tsv     index, name (frontal, occipital,
                                                   dorsal_occipital): for ``--roi``
    sourcedata/<the session's files>
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bubbles import render_masks, trial_rng

from ..session_files import COLUMNS, SCANNER_COLUMNS, session_paths
from ..zscore import zscore
from .glm import event_regressors, frame_times
from .stimulus import stimulus_rois

__all__ = ["simulate_study", "SimulatedStudy", "LABELS", "REGIONS", "MOTION",
           "is_scanner_table"]

LABELS = {0: "null", 1: "eyes", 2: "mouth", 3: "area"}
#: Where each planted cluster lies (the names of ``_regions.tsv``), by label.
REGIONS = {1: "frontal", 2: "occipital", 3: "dorsal_occipital"}
#: The columns that make a session CSV a scanner session's.
_SCANNER_ONLY = SCANNER_COLUMNS[len(COLUMNS):]
_N_RUNS, _T_R, _SOA, _DURATION = 4, 2.0, (3.0, 6.0), 0.5
_TAIL = 24.0        # s of a simulated schedule's run after its last onset (the HRF)
MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


@dataclass
class SimulatedStudy:
    """Where the simulator wrote what (all paths) and the truth."""

    root: Path
    bold: list
    events: list
    confounds: list
    mask: Path
    trials: Path
    truth: Path
    labels: Path
    planted: Path
    subject: str
    task: str
    regions: Path | None = None
    schedule: str = "simulated"


def _ellipsoid(shape):
    g = np.indices(shape, dtype=float)
    c = [(s - 1) / 2 for s in shape]
    r = [0.46 * s for s in shape]
    return sum(((g[i] - c[i]) / r[i]) ** 2 for i in range(3)) <= 1.0


def _sphere(shape, centre, radius):
    g = np.indices(shape, dtype=float)
    return sum((g[i] - centre[i]) ** 2 for i in range(3)) <= radius ** 2


def _labels(shape, brain, radius):
    """0 null, 1 eyes (front), 2 mouth (back), 3 area (back, above the mouth)."""
    x, y, z = shape
    lab = np.zeros(shape, np.int8)
    spots = {1: (x / 2, 0.80 * (y - 1), 0.55 * (z - 1)),
             2: (x / 2, 0.18 * (y - 1), 0.40 * (z - 1)),
             3: (x / 2, 0.28 * (y - 1), 0.72 * (z - 1))}
    for k, c in spots.items():
        lab[_sphere(shape, c, radius) & brain & (lab == 0)] = k
    return lab


def _hrfs(t_r, shifts, stretches):
    from nilearn.glm.first_level import glover_hrf

    base = glover_hrf(t_r, 50)
    hs = [glover_hrf(t_r / s, 50, 32.0, onset=o) for o, s in zip(shifts, stretches)]
    out = np.zeros((len(hs), max(len(h) for h in hs)))
    for i, h in enumerate(hs):
        out[i, :len(h)] = h * (base.max() / h.max())
    return out


def _random_walks(rng, n, k, scale):
    steps = rng.normal(0, scale, (n, k))
    walk = np.cumsum(steps, axis=0)
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    kernel /= kernel.sum()
    return np.stack([np.convolve(walk[:, i], kernel, mode="same") for i in range(k)], 1)


def _ar1(rng, n, v, rho, sd):
    e = np.empty((n, v), np.float32)
    w = rng.standard_normal((n, v), dtype=np.float32) * np.float32(sd)
    e[0] = w[0]
    a, b = np.float32(rho), np.float32(np.sqrt(1 - rho * rho))
    for t in range(1, n):
        e[t] = a * e[t - 1] + b * w[t]
    return e


def is_scanner_table(table):
    """Whether ``table`` (a TrialTable) is a scanner session's: its data has the columns
    ``run``, ``planned_onset`` and ``duration`` besides ``onset``."""
    return all(c in table.data.columns for c in ("onset",) + _SCANNER_ONLY)


@dataclass
class _Run:
    number: int          # the run's BIDS number
    rows: np.ndarray     # rows of the table shown in it, in order
    onsets: np.ndarray   # s from the first volume
    durations: np.ndarray
    n_scans: int
    simulated: bool      # a simulated schedule: a 4 s 'instructions' event at 0 s


def _numbers(table, column):
    values = pd.to_numeric(table.data[column], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"the scanner session {table.path} has no number in column "
                         f"{column!r} for trial {table.data['trial'].iloc[i]} (got "
                         f"{table.data[column].iloc[i]!r}): its schedule cannot be "
                         "replayed")
    return values


def _scanner_schedule(table, n_runs, t_r, soa, duration):
    """The runs of a scanner session as it recorded them, and its TR."""
    config = (table.sidecar.get("config") or {}).get("scanner") or {}
    try:
        recorded_tr = float(config["tr"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"the scanner session {table.path} records no TR (its sidecar's "
                         f"config.scanner.tr), got {config.get('tr')!r}") from None
    if not recorded_tr > 0:
        raise ValueError(f"the scanner session {table.path} records the TR "
                         f"{recorded_tr!r} (config.scanner.tr), expected a number > 0 s")
    runs_of = _numbers(table, "run").astype(int)
    numbers = sorted(set(runs_of.tolist()))
    given = (("n_runs", n_runs, n_runs == len(numbers)), ("t_r", t_r, t_r == recorded_tr),
             ("soa", soa, False), ("duration", duration, False))
    ignored = [f"{name}={value!r}" for name, value, same in given
               if value is not None and not same]
    if ignored:
        warnings.warn(f"{', '.join(ignored)} ignored: {table.path} is a scanner session, "
                      f"replayed as recorded ({len(numbers)} run(s), TR {recorded_tr:g} s, "
                      "its onsets and durations)", UserWarning, stacklevel=3)
    onsets = _numbers(table, "onset")
    durations = _numbers(table, "duration")
    if (onsets < 0).any() or (durations < 0).any():
        i = int(np.flatnonzero((onsets < 0) | (durations < 0))[0])
        raise ValueError(f"the scanner session {table.path}: trial "
                         f"{table.data['trial'].iloc[i]} has onset {onsets[i]:g} s and "
                         f"duration {durations[i]:g} s, expected both >= 0")
    volumes = {}
    for entry in table.sidecar.get("scanner_runs") or []:
        if isinstance(entry, dict) and entry.get("n_volumes") is not None:
            volumes[int(entry["run"])] = int(entry["n_volumes"])
    runs = []
    for number in numbers:
        rows = np.flatnonzero(runs_of == number)
        rows = rows[np.argsort(onsets[rows], kind="stable")]
        end = float((onsets[rows] + durations[rows]).max())
        need = int(np.floor(end / recorded_tr)) + 1        # the last event ends inside
        runs.append(_Run(number, rows, onsets[rows], durations[rows],
                         max(volumes.get(number, 0), need), simulated=False))
    return runs, recorded_tr


def _simulated_schedule(n, n_runs, t_r, soa, duration, rng):
    """Trials split in order into runs, onsets jittered by ``soa``; yields the runs one
    by one (each run's onsets are drawn from ``rng`` when the run is reached)."""
    bounds = np.linspace(0, n, n_runs + 1).astype(int)
    for r in range(n_runs):
        rows = np.arange(bounds[r], bounds[r + 1])
        onsets = 6.0 + np.concatenate([[0.0], np.cumsum(rng.uniform(*soa, len(rows) - 1))])
        yield _Run(r + 1, rows, onsets, np.full(len(rows), float(duration)),
                   int(np.ceil((onsets[-1] + _TAIL) / t_r)), simulated=True)


def simulate_study(table, out, *, n_runs=None, t_r=None, shape=(20, 24, 20), voxel_mm=3.0,
                   soa=None, duration=None, radius=2.2, base=1.0, gain=0.8,
                   trial_sd=0.3, noise_sd=1.0, ar=0.3, hrf_shift=(-1.0, 2.0),
                   hrf_stretch=(0.8, 1.25), subject="01", task="bubbles", seed=0,
                   compress=True, progress=False):
    """Write a simulated BIDS study of the session ``table`` into ``out``.

    Parameters
    ----------
    table : analysis.TrialTable
        The session (read with ``TrialTable.read``: its files are copied to
        ``sourcedata``). A scanner session is replayed as it was recorded (see the
        module docstring): ``n_runs``, ``t_r``, ``soa`` and ``duration`` are then its
        own, and a value given that differs is ignored with a ``UserWarning``.
    out : path
        The BIDS root (created; existing files of the same names are replaced).
    n_runs : int, optional
        Trials are split in order into this many runs (default 4).
    t_r : float, optional
        Repetition time, s (default 2).
    shape : tuple of 3 int
        Volume of the box; the brain is the ellipsoid inside it.
    voxel_mm : float
    soa : (float, float), optional
        Stimulus-onset asynchrony drawn uniformly in this range, s (default 3 to 6).
    duration : float, optional
        Event duration, s (default 0.5).
    radius : float
        Radius of the planted clusters, voxels.
    base, gain, trial_sd, noise_sd : float
        Amplitude model (see module docstring) and the SD of the AR(1) noise, in
        percent of the baseline 100.
    ar : float
        AR(1) coefficient of the noise.
    hrf_shift, hrf_stretch : (float, float)
        Ranges of every voxel's HRF shift (s) and stretch.
    subject, task : str
        BIDS labels.
    seed : int
    compress : bool
        ``.nii.gz`` (default) or ``.nii``.

    Returns
    -------
    SimulatedStudy

    Examples
    --------
    >>> from analysis import TrialTable                            # doctest: +SKIP
    >>> sim = simulate_study(TrialTable.read("P01_scan.csv"), "bids")  # doctest: +SKIP
    >>> sim.schedule                                                # doctest: +SKIP
    'scanner session'
    """
    import nibabel as nib

    n = len(table)
    scanner = is_scanner_table(table)
    if n_runs is not None and not (isinstance(n_runs, (int, np.integer)) and
                                   1 <= n_runs <= n):
        raise ValueError(f"n_runs must be an integer in [1, {n}] (the session's trials), "
                         f"got {n_runs!r}")
    if t_r is not None and not (isinstance(t_r, (int, float, np.number)) and t_r > 0):
        raise ValueError(f"t_r must be > 0 seconds, got {t_r!r}")
    if soa is not None and not (len(soa) == 2 and 0 < soa[0] <= soa[1]):
        raise ValueError(f"soa must be (low, high) seconds with 0 < low <= high, got "
                         f"{soa!r}")
    if duration is not None and not duration >= 0:
        raise ValueError(f"duration must be >= 0 seconds, got {duration!r}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 6:
        raise ValueError(f"shape must be 3 integers >= 6 (voxels), got {shape}")
    for name, value in (("subject", subject), ("task", task)):
        if not str(value).isalnum():
            raise ValueError(f"{name} must be a BIDS label (letters and digits), got "
                             f"{value!r}")
    rng = np.random.default_rng(trial_rng(seed, 0))
    if scanner:
        runs, t_r = _scanner_schedule(table, n_runs, t_r, soa, duration)
        one_event = float(np.median(np.concatenate([r.durations for r in runs])))
    else:
        one_event = _DURATION if duration is None else float(duration)
        t_r = _T_R if t_r is None else float(t_r)
        runs = _simulated_schedule(n, _N_RUNS if n_runs is None else int(n_runs), t_r,
                                   _SOA if soa is None else tuple(soa),
                                   one_event, rng)
    out = Path(out)
    sub = f"sub-{subject}"
    func = out / sub / "func"
    deriv = out / "derivatives" / "fmriprep" / sub / "func"
    truth_dir = out / "derivatives" / "truth"
    for d in (func, deriv, truth_dir, out / "sourcedata"):
        d.mkdir(parents=True, exist_ok=True)
    (out / "dataset_description.json").write_text(json.dumps(
        {"Name": "bubbles simulated fMRI study", "BIDSVersion": "1.9.0",
         "DatasetType": "raw", "GeneratedBy": [{"Name": "bubbles fmri simulate"}]},
        indent=2))

    # -- features of every trial ----------------------------------------------------
    spec = table.spec
    rois = stimulus_rois(table, spec.shape)
    centers = table.center_list()
    feats = {"eyes": np.empty(n), "mouth": np.empty(n), "area": np.empty(n)}
    for start in range(0, n, 256):
        m = render_masks(spec, centers[start:start + 256])
        stop = start + len(m)
        feats["area"][start:stop] = m.reshape(len(m), -1).mean(axis=1)
        for k in ("eyes", "mouth"):
            feats[k][start:stop] = m[:, rois[k]].mean(axis=1)

    # -- the volume -------------------------------------------------------------------
    brain = _ellipsoid(shape)
    labels = _labels(shape, brain, radius)
    ijk = np.argwhere(brain)
    lab = labels[brain]
    n_vox = len(ijk)
    affine = np.diag([voxel_mm] * 3 + [1.0])
    affine[:3, 3] = -voxel_mm * (np.asarray(shape) - 1) / 2
    shifts = rng.uniform(*hrf_shift, n_vox)
    stretches = rng.uniform(*hrf_stretch, n_vox)
    # per-voxel HRFs on a grid of 4 x 4 shapes (all voxels of a cell share one kernel)
    qs = np.linspace(*hrf_shift, 4)
    qt = np.linspace(*hrf_stretch, 4)
    cell = (np.abs(shifts[:, None] - qs).argmin(1) * 4
            + np.abs(stretches[:, None] - qt).argmin(1))
    shifts, stretches = qs[cell // 4], qt[cell % 4]
    kernels = _hrfs(t_r, np.repeat(qs, 4), np.tile(qt, 4))
    # amplitudes in % signal change at the peak of one event's response
    probe = event_regressors([10.0], [one_event], frame_times(40, t_r), kernels[5])
    kernels /= probe.max()
    amp = np.full((n, n_vox), base, np.float32)
    for k, name in ((1, "eyes"), (2, "mouth"), (3, "area")):
        sel = lab == k
        amp[:, sel] += np.float32(gain) * zscore(feats[name])[:, None].astype(np.float32)
    amp += rng.normal(0, trial_sd, amp.shape).astype(np.float32)

    # -- runs ------------------------------------------------------------------------
    res = dict(bold=[], events=[], confounds=[])
    ext = ".nii.gz" if compress else ".nii"
    done = []
    for run in runs:
        done.append(run)
        rows, onsets, n_scans = run.rows, run.onsets, run.n_scans
        times = frame_times(n_scans, t_r)
        y = np.full((n_scans, n_vox), 100.0, np.float32)
        for c in np.unique(cell):
            v = np.flatnonzero(cell == c)
            x = event_regressors(onsets, run.durations, times,
                                 kernels[c]).astype(np.float32)
            signal = x @ amp[rows][:, v]
            if run.simulated:
                x_cue = event_regressors([0.0], [4.0], times, kernels[c]).astype(np.float32)
                signal = signal + x_cue * np.float32(0.5 * base)
            y[:, v] += signal
        cos = np.cos(np.pi * np.outer(times + t_r / 2, np.arange(1, 4)) / (n_scans * t_r))
        y += (cos @ rng.normal(0, 1.0, (3, n_vox))).astype(np.float32)
        motion = _random_walks(rng, n_scans, 6, 0.05)
        y += (motion @ rng.normal(0, 0.5, (6, n_vox))).astype(np.float32)
        y += _ar1(rng, n_scans, n_vox, ar, noise_sd)
        data = np.full(shape + (n_scans,), 10.0, np.float32)
        data += rng.normal(0, 1.0, data.shape).astype(np.float32)
        data[brain] = y.T
        name = f"{sub}_task-{task}_run-{run.number}"
        img = nib.Nifti1Image(data, affine)
        img.header.set_xyzt_units("mm", "sec")
        img.header.set_zooms((voxel_mm,) * 3 + (t_r,))
        bold = func / f"{name}_bold{ext}"
        nib.save(img, str(bold))
        (func / f"{name}_bold.json").write_text(json.dumps(
            {"RepetitionTime": t_r, "TaskName": task}, indent=2))
        ev = pd.DataFrame({"onset": np.round(onsets, 4) if run.simulated else onsets,
                           "duration": run.durations, "trial_type": "face",
                           "trial": table.data["trial"].to_numpy()[rows].astype(int)})
        if "stimulus_id" in table.data:
            ev["stimulus_id"] = table.data["stimulus_id"].astype(str).to_numpy()[rows]
        if run.simulated:
            cue = pd.DataFrame({"onset": [0.0], "duration": [4.0],
                                "trial_type": ["instructions"], "trial": ["n/a"]})
            ev = pd.concat([cue, ev.astype({"trial": object})], ignore_index=True)
        events = func / f"{name}_events.tsv"
        ev.to_csv(events, sep="\t", index=False, na_rep="n/a")
        conf = pd.DataFrame(motion, columns=MOTION)
        for c in MOTION:
            d = conf[c].diff()
            conf[f"{c}_derivative1"] = d
            conf[f"{c}_power2"] = conf[c] ** 2
            conf[f"{c}_derivative1_power2"] = d ** 2
        conf["csf"] = rng.normal(0, 1, n_scans)
        conf["white_matter"] = rng.normal(0, 1, n_scans)
        conf["global_signal"] = y.mean(axis=1)
        conf["framewise_displacement"] = np.abs(np.diff(motion, axis=0, prepend=motion[:1])
                                                ).sum(axis=1)
        conf.loc[0, "framewise_displacement"] = np.nan
        cpath = deriv / f"{name}_desc-confounds_timeseries.tsv"
        conf.to_csv(cpath, sep="\t", index=False, na_rep="n/a")
        cpath.with_suffix(".json").write_text("{}")
        res["bold"].append(bold)
        res["events"].append(events)
        res["confounds"].append(cpath)

    mask = deriv / f"{sub}_task-{task}_desc-brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), affine), str(mask))
    labels_path = truth_dir / f"{sub}_task-{task}_labels.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine), str(labels_path))
    regions_path = truth_dir / f"{sub}_task-{task}_regions.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine), str(regions_path))
    pd.DataFrame({"index": list(REGIONS), "name": list(REGIONS.values())}).to_csv(
        truth_dir / f"{sub}_task-{task}_regions.tsv", sep="\t", index=False)
    planted = lab > 0
    planted_path = truth_dir / f"{sub}_task-{task}_planted.npz"
    np.savez_compressed(planted_path, ijk=ijk[planted], label=lab[planted],
                        hrf_shift=shifts[planted], hrf_stretch=stretches[planted],
                        amplitudes=amp[:, planted], trial=table.data["trial"].to_numpy(),
                        **{f"feature_{k}": v for k, v in feats.items()})
    truth = {"labels": {str(k): v for k, v in LABELS.items()},
             "counts": {LABELS[k]: int((lab == k).sum()) for k in LABELS},
             "regions": {str(k): v for k, v in REGIONS.items()},
             "n_voxels": n_vox, "n_trials": n, "n_runs": len(done), "t_r": t_r,
             "schedule": "scanner session" if scanner else "simulated",
             "runs": [{"run": r.number, "n_trials": len(r.rows), "n_scans": r.n_scans}
                      for r in done],
             "shape": list(shape), "voxel_mm": voxel_mm, "seed": seed,
             "amplitude": {"base": base, "gain": gain, "trial_sd": trial_sd,
                           "rule": "base + gain * zscore(feature) + trial_sd * N(0, 1)"},
             "noise": {"sd": noise_sd, "ar1": ar}, "hrf_shift_s": list(hrf_shift),
             "hrf_stretch": list(hrf_stretch),
             "soa_s": None if scanner else list(_SOA if soa is None else soa),
             "duration_s": one_event,
             "features": {"eyes": "mean mask inside the eyes ROI",
                          "mouth": "mean mask inside the mouth ROI",
                          "area": "mean mask over the image"}}
    truth_path = truth_dir / f"{sub}_task-{task}_truth.json"
    truth_path.write_text(json.dumps(truth, indent=2))
    trials = table.path
    if trials is not None:
        for p in session_paths(trials).values():
            if Path(p).is_file():
                shutil.copy2(p, out / "sourcedata" / Path(p).name)
        trials = out / "sourcedata" / Path(table.path).name
    return SimulatedStudy(root=out, bold=res["bold"], events=res["events"],
                          confounds=res["confounds"], mask=mask, trials=trials,
                          truth=truth_path, labels=labels_path, planted=planted_path,
                          subject=subject, task=task, regions=regions_path,
                          schedule=truth["schedule"])
