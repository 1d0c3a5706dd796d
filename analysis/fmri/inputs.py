"""The inputs of an fMRI bubbles study, read and checked before any work is done.

A study is one session's trial table (``analysis.TrialTable.read``: its masks are
regenerated from the seeds) and its runs: a 4-D BOLD image (``*_bold.nii[.gz]``), a
BIDS events TSV (``onset``, ``duration``, ``trial_type`` and ``trial``, the session
CSV's trial number, ``n/a`` for events that are not bubbles trials), the repetition time
(from the JSON sidecar ``RepetitionTime`` or the image header), optional confounds (an
fMRIPrep ``desc-confounds_timeseries.tsv`` read by nilearn's ``load_confounds`` /
``load_confounds_strategy``, or any plain TSV whose columns are all used), and one brain
mask (a file, or ``nilearn.masking.compute_epi_mask`` of the first run's mean).
:func:`find_bids` finds them in a BIDS folder.

Every problem is refused by name, with the file and the line where there is one: an
event outside its run, a TR that disagrees between header and sidecar, a 3-D image, a
mask of another shape or affine, an event whose ``trial`` is not in the session, a
session trial in two runs, NaN in the data, a confounds file of another length.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..trials import TrialTable

__all__ = ["Run", "Study", "load_study", "read_events", "read_confounds", "read_regions",
           "repetition_time", "find_bids", "run_data", "CONFOUND_STRATEGIES"]

#: Default strategy for fMRIPrep confounds: the 6 motion parameters, white matter, CSF.
CONFOUND_STRATEGIES = ("motion", "wm_csf")
EVENT_COLUMNS = ("onset", "duration", "trial_type", "trial")


def _nib():
    import nibabel

    return nibabel


def _stem(path):
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return Path(path).parent / name[: -len(suffix)]
    return Path(path).with_suffix("")


@dataclass
class Run:
    """One run: its files, TR, events and confounds (no voxel data).

    Attributes
    ----------
    bold : Path
    events_path : Path
    events : pandas.DataFrame
        ``onset``, ``duration`` (s), ``trial_type`` (str), ``trial`` (float, NaN for
        non-trial events), ``line`` (1-based line of the TSV) and ``row`` (the
        session table row of the trial, -1 otherwise).
    t_r : float
        Seconds.
    n_scans : int
    confounds : ndarray (n_scans, k) or None
    confound_names : list of str
    sample_mask : ndarray of int or None
        Volumes kept by a scrubbing strategy.
    """

    bold: Path
    events_path: Path
    events: pd.DataFrame
    t_r: float
    n_scans: int
    confounds: np.ndarray | None = None
    confound_names: list = field(default_factory=list)
    sample_mask: np.ndarray | None = None
    confounds_path: Path | None = None

    @property
    def rows(self):
        """Session rows of the run's trials, in the order of the events."""
        r = self.events["row"].to_numpy()
        return r[r >= 0]


@dataclass
class Study:
    """A session's trials and its runs, with the brain mask.

    Attributes
    ----------
    table : TrialTable
    runs : list of Run
    mask : ndarray of bool (X, Y, Z)
    affine : ndarray (4, 4)
    mask_source : str
        The mask file, or 'compute_epi_mask(<first run>)'.
    """

    table: TrialTable
    runs: list
    mask: np.ndarray
    affine: np.ndarray
    mask_source: str = ""

    @property
    def ijk(self):
        """Voxel indices (n_voxels, 3) of the mask, in C order."""
        return np.argwhere(self.mask)

    @property
    def n_voxels(self):
        return int(self.mask.sum())

    @property
    def rows(self):
        """Session rows of every estimated trial, runs in order."""
        return np.concatenate([r.rows for r in self.runs])

    @property
    def run_of_trial(self):
        return np.concatenate([np.full(len(r.rows), i) for i, r in enumerate(self.runs)])


def repetition_time(bold, img=None):
    """The run's TR in seconds: the JSON sidecar's ``RepetitionTime`` and the header's
    4th zoom, which must agree (to 1 ms) when both are there."""
    bold = Path(bold)
    img = _nib().load(str(bold)) if img is None else img
    sidecar = Path(str(_stem(bold)) + ".json")
    side = None
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{sidecar}: not valid JSON ({exc})") from None
        if "RepetitionTime" in meta:
            side = meta["RepetitionTime"]
            if not isinstance(side, (int, float)) or not side > 0:
                raise ValueError(f"{sidecar}: RepetitionTime must be a number > 0 "
                                 f"(seconds), got {side!r}")
            side = float(side)
    head = None
    zooms = img.header.get_zooms()
    if len(zooms) >= 4 and zooms[3] > 0:
        unit = img.header.get_xyzt_units()[1]
        head = float(zooms[3]) * {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
    if side is not None and head is not None and abs(side - head) > 1e-3:
        raise ValueError(f"the TR of {bold.name} disagrees: header {head:g} s, sidecar "
                         f"{sidecar.name} RepetitionTime {side:g} s; fix the one that is "
                         "wrong")
    if side is None and head is None:
        raise ValueError(f"{bold}: no TR: the header has no 4th zoom and there is no "
                         f"sidecar {sidecar.name} with RepetitionTime")
    return side if side is not None else head


def read_events(path, n_scans, t_r, trial_rows):
    """A run's events, checked; ``trial_rows`` maps session trial number -> row.

    Returns the events with columns ``onset``, ``duration``, ``trial_type``, ``trial``,
    ``line`` and ``row`` (see :class:`Run`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"events file {path} does not exist")
    try:
        ev = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable TSV ({exc})") from None
    missing = [c for c in EVENT_COLUMNS if c not in ev.columns]
    if missing:
        raise ValueError(f"{path}: events must have the columns {list(EVENT_COLUMNS)} "
                         f"(BIDS, with 'trial' the session trial number); missing "
                         f"{missing}, got {list(ev.columns)}")
    ev = ev.copy()
    ev["line"] = np.arange(len(ev)) + 2
    length = n_scans * t_r
    for col in ("onset", "duration"):
        num = pd.to_numeric(ev[col], errors="coerce")
        bad = num.isna() | ~np.isfinite(num)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{path} line {ev['line'].iloc[i]}: {col} must be a number "
                             f"of seconds, got {ev[col].iloc[i]!r}")
        ev[col] = num.astype(float)
    bad = (ev["duration"] < 0).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path} line {ev['line'].iloc[i]}: duration must be >= 0 s, "
                         f"got {ev['duration'].iloc[i]:g}")
    outside = ((ev["onset"] < 0) | (ev["onset"] + ev["duration"] > length)).to_numpy()
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(f"{path} line {ev['line'].iloc[i]}: the event at onset "
                         f"{ev['onset'].iloc[i]:g} s (duration {ev['duration'].iloc[i]:g}"
                         f" s) lies outside its run, which lasts {length:g} s ({n_scans} "
                         f"volumes of {t_r:g} s)")
    trial = ev["trial"].str.strip()
    none = trial.isin(["", "n/a", "nan", "NaN"])
    num = pd.to_numeric(trial.where(~none), errors="coerce")
    bad = (~none & (num.isna() | (num != np.round(num)))).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path} line {ev['line'].iloc[i]}: trial must be a session "
                         f"trial number or n/a, got {ev['trial'].iloc[i]!r}")
    ev["trial"] = num
    rows = []
    for t, line in zip(ev["trial"], ev["line"]):
        if np.isnan(t):
            rows.append(-1)
        elif int(t) not in trial_rows:
            raise ValueError(f"{path} line {line}: trial {int(t)} is not in the session "
                             f"(its trials are {min(trial_rows)}..{max(trial_rows)})"
                             if trial_rows else f"{path} line {line}: the session has no "
                             "trials")
        else:
            rows.append(trial_rows[int(t)])
    ev["row"] = np.asarray(rows, int)
    ev["trial_type"] = ev["trial_type"].replace({"": "n/a"})
    return ev[["onset", "duration", "trial_type", "trial", "line", "row"]].reset_index(
        drop=True)


def _is_fmriprep(path):
    name = Path(path).name
    return name.endswith(("desc-confounds_timeseries.tsv", "desc-confounds_regressors.tsv"))


def read_confounds(path, n_scans, *, strategy=CONFOUND_STRATEGIES, **options):
    """Confounds of one run: ``(values (n_scans, k), names, sample_mask or None)``.

    An fMRIPrep file (``*_desc-confounds_timeseries.tsv``) is read by nilearn:
    ``strategy`` a tuple of ``load_confounds`` strategies (default ``('motion',
    'wm_csf')`` with ``motion='basic'``), or one name of ``load_confounds_strategy``
    ('simple', 'scrubbing', 'compcor', 'ica_aroma'); ``options`` go to nilearn. Any
    other TSV is used whole: every column, demeaned, ``n/a`` set to 0 after demeaning
    (fMRIPrep's convention for the first row of derivatives).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"confounds file {path} does not exist")
    mask = None
    if _is_fmriprep(path):
        from nilearn.interfaces.fmriprep import load_confounds, load_confounds_strategy

        stem = path.name.rsplit("_desc-confounds", 1)[0]
        img = str(path.parent / f"{stem}_desc-preproc_bold.nii.gz")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                if isinstance(strategy, str):
                    frame, mask = load_confounds_strategy(img, strategy, **options)
                else:
                    opts = {"motion": "basic", **options}
                    frame, mask = load_confounds(img, strategy=tuple(strategy), **opts)
            except ValueError as exc:
                raise ValueError(f"{path}: nilearn's load_confounds refused it with "
                                 f"strategy {strategy!r}: {exc}") from None
        names = list(frame.columns)
        values = frame.to_numpy(float)
    else:
        try:
            frame = pd.read_csv(path, sep="\t", na_values=["n/a"])
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            raise ValueError(f"{path}: not a readable TSV ({exc})") from None
        bad = [c for c in frame.columns if frame[c].dtype.kind not in "fiu"]
        if bad:
            col = bad[0]
            num = pd.to_numeric(frame[col], errors="coerce")
            i = int(np.flatnonzero((num.isna() & frame[col].notna()).to_numpy())[0])
            raise ValueError(f"{path} line {i + 2}: column {col!r} must be numeric (or "
                             f"n/a), got {frame[col].iloc[i]!r}")
        names = list(frame.columns)
        values = frame.to_numpy(float)
        values = values - np.nanmean(values, axis=0)
        values = np.nan_to_num(values, nan=0.0)
    if values.shape[0] != n_scans:
        raise ValueError(f"{path} has {values.shape[0]} rows but its run has {n_scans} "
                         "volumes: the confounds must have one row per volume")
    return values, names, (None if mask is None else np.asarray(mask, int))


def run_data(study, run, *, dtype=np.float32):
    """The run's voxels inside the mask: (n_scans, n_voxels) ``dtype``; NaN refused."""
    img = _nib().load(str(run.bold))
    data = img.get_fdata(dtype=dtype, caching="unchanged")
    y = data[study.mask].T                                  # (n_scans, n_voxels)
    del data
    bad = ~np.isfinite(y)
    if bad.any():
        t, v = np.argwhere(bad)[0]
        i, j, k = study.ijk[v]
        raise ValueError(f"{run.bold}: {int(bad.sum())} NaN/inf value(s) inside the mask, "
                         f"first at voxel ({i}, {j}, {k}) volume {t}: remove them (or "
                         "leave those voxels out of the mask)")
    return np.ascontiguousarray(y, dtype=dtype)


def _load_mask(mask, ref, ref_path):
    nib = _nib()
    path = Path(mask)
    if not path.is_file():
        raise FileNotFoundError(f"mask file {path} does not exist")
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.shape != ref.shape[:3]:
        raise ValueError(f"the mask {path.name} has shape {data.shape}, the BOLD image "
                         f"{Path(ref_path).name} {ref.shape[:3]}: resample the mask to "
                         "the BOLD grid")
    if not np.allclose(img.affine, ref.affine, atol=1e-3):
        raise ValueError(f"the mask {path.name} has another affine than the BOLD image "
                         f"{Path(ref_path).name} (mask {np.round(img.affine, 3).tolist()}, "
                         f"BOLD {np.round(ref.affine, 3).tolist()}): resample the mask")
    m = np.nan_to_num(data.astype(float)) > 0
    if not m.any():
        raise ValueError(f"the mask {path} is empty (no voxel > 0)")
    return m


def load_study(bold, events, trials, *, mask=None, confounds=None,
               confound_strategy=CONFOUND_STRATEGIES, t_r=None, table=None):
    """Read and check every input of a study (the voxel data is read later, by run).

    Parameters
    ----------
    bold, events : sequence of path
        One events TSV per BOLD run, in the same order.
    trials : path
        The session CSV (its sidecar and centres beside it).
    mask : path, optional
        A 3-D brain mask on the BOLD grid; default: nilearn's ``compute_epi_mask`` of
        the first run.
    confounds : sequence of path, optional
        One per run (fMRIPrep or plain TSV, see :func:`read_confounds`).
    confound_strategy : tuple of str or str
    t_r : float, optional
        Overrides header and sidecar (seconds).
    table : TrialTable, optional
        Use this table instead of reading ``trials``.

    Returns
    -------
    Study
    """
    nib = _nib()
    bold = [Path(b) for b in bold]
    events = [Path(e) for e in events]
    if not bold:
        raise ValueError("bold must name at least one BOLD run (*_bold.nii[.gz])")
    if len(events) != len(bold):
        raise ValueError(f"give one events file per BOLD run: {len(bold)} run(s), "
                         f"{len(events)} events file(s)")
    confounds = None if confounds is None else [Path(c) for c in confounds]
    if confounds is not None and len(confounds) != len(bold):
        raise ValueError(f"give one confounds file per BOLD run: {len(bold)} run(s), "
                         f"{len(confounds)} confounds file(s)")
    if table is None:
        table = TrialTable.read(trials)
    if table.spec.multiscale:
        raise ValueError(f"the session {trials} uses a multi-scale spec ({table.spec.n_bands}"
                         " bands); the fMRI path handles single-scale sessions only")
    trial_rows = {int(t): i for i, t in enumerate(table.data["trial"])}
    imgs, runs, seen = [], [], {}
    for r, (b, e) in enumerate(zip(bold, events)):
        if not b.is_file():
            raise FileNotFoundError(f"BOLD file {b} does not exist")
        try:
            img = nib.load(str(b))
        except Exception as exc:                          # nibabel's own errors
            raise ValueError(f"{b}: not a readable NIfTI image ({exc})") from None
        if len(img.shape) != 4:
            raise ValueError(f"{b} is a {len(img.shape)}-D image of shape {img.shape}; a "
                             "BOLD run must be 4-D (x, y, z, time)")
        if imgs and (img.shape[:3] != imgs[0].shape[:3]
                     or not np.allclose(img.affine, imgs[0].affine, atol=1e-3)):
            raise ValueError(f"{b} has another grid ({img.shape[:3]}) or affine than "
                             f"{bold[0]} ({imgs[0].shape[:3]}): runs must be aligned")
        n_scans = int(img.shape[3])
        tr = float(t_r) if t_r is not None else repetition_time(b, img)
        ev = read_events(e, n_scans, tr, trial_rows)
        for t, line in zip(ev["trial"], ev["line"]):
            if np.isnan(t):
                continue
            key = int(t)
            if key in seen:
                f0, l0 = seen[key]
                raise ValueError(f"session trial {key} appears twice: {f0} line {l0} and "
                                 f"{e} line {line}; each trial belongs to one run")
            seen[key] = (e, line)
        if not (ev["row"] >= 0).any():
            raise ValueError(f"{e} has no bubbles trial (no row with a session 'trial' "
                             "number)")
        conf = names = sample_mask = None
        if confounds is not None:
            conf, names, sample_mask = read_confounds(confounds[r], n_scans,
                                                      strategy=confound_strategy)
        imgs.append(img)
        runs.append(Run(bold=b, events_path=e, events=ev, t_r=tr, n_scans=n_scans,
                        confounds=conf, confound_names=names or [],
                        sample_mask=sample_mask,
                        confounds_path=None if confounds is None else confounds[r]))
    missing = len(table) - len(seen)
    if missing > 0:
        warnings.warn(f"{missing} of the session's {len(table)} trials have no event in "
                      "the runs; they are left out", stacklevel=2)
    if mask is not None:
        m = _load_mask(mask, imgs[0], bold[0])
        source = str(mask)
    else:
        from nilearn.image import mean_img
        from nilearn.masking import compute_epi_mask

        m = np.asarray(compute_epi_mask(mean_img(imgs[0], copy_header=True)).dataobj) > 0
        source = f"nilearn.masking.compute_epi_mask(mean of {bold[0].name})"
    return Study(table=table, runs=runs, mask=m, affine=np.asarray(imgs[0].affine),
                 mask_source=source)


def find_bids(root, subject, task, *, derivatives=None):
    """The files of one subject and task in a BIDS folder.

    Raw runs ``sub-<S>/[ses-*/]func/sub-<S>_[ses-*_]task-<T>_[run-*_]bold.nii[.gz]`` with
    their ``_events.tsv``; from ``derivatives`` (default ``<root>/derivatives/fmriprep``
    when it exists) the fMRIPrep confounds of each run and a brain mask
    (``*_desc-brain_mask.nii[.gz]``); the session CSV from ``<root>/sourcedata`` when one
    is there.

    Returns
    -------
    dict with 'bold', 'events', 'confounds' (list or None), 'mask' (path or None),
    'trials' (path or None)
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"BIDS folder {root} does not exist")
    for name, value in (("subject", subject), ("task", task)):
        if not value or not str(value).replace("-", "").isalnum() or "-" in str(value):
            raise ValueError(f"{name} must be a BIDS label (letters and digits), got "
                             f"{value!r}")
    sub = f"sub-{subject}"
    bold = sorted(p for p in root.glob(f"{sub}/**/func/{sub}_*task-{task}_*bold.nii*")
                  if p.name.endswith(("_bold.nii", "_bold.nii.gz")))
    if not bold:
        raise FileNotFoundError(f"no BOLD run for subject {subject!r}, task {task!r} in "
                                f"{root} (expected {sub}/func/{sub}_task-{task}_*bold.nii.gz)")
    events = []
    for b in bold:
        stem = str(_stem(b))[: -len("_bold")]
        e = Path(stem + "_events.tsv")
        if not e.is_file():
            raise FileNotFoundError(f"no events file for {b.name}: expected {e}")
        events.append(e)
    deriv = Path(derivatives) if derivatives else root / "derivatives" / "fmriprep"
    confounds, mask = None, None
    if derivatives and not deriv.is_dir():
        raise FileNotFoundError(f"derivatives folder {deriv} does not exist")
    if deriv.is_dir():
        found = []
        for b in bold:
            entities = _stem(b).name[: -len("_bold")]
            hits = sorted(deriv.glob(f"{sub}/**/func/{entities}_*desc-confounds_timeseries"
                                     ".tsv"))
            found.append(hits[0] if hits else None)
        if all(f is not None for f in found):
            confounds = found
        elif any(f is not None for f in found):
            raise FileNotFoundError("fMRIPrep confounds were found for some runs but not "
                                    f"for {[b.name for b, f in zip(bold, found) if f is None]}")
        masks = sorted(deriv.glob(f"{sub}/**/{sub}_*desc-brain_mask.nii*"))
        mask = masks[0] if masks else None
    sessions = sorted(root.glob("sourcedata/**/*.csv"))
    trials = sessions[0] if len(sessions) == 1 else None
    return {"bold": bold, "events": events, "confounds": confounds, "mask": mask,
            "trials": trials}


def read_regions(path, study):
    """Regions of a label image (3-D integers, 0 = none) or of masks (4-D, one volume
    per region) on the BOLD grid: ``(names, masks (n_regions, n_voxels) bool)``.

    Names come from a BIDS-style lookup table beside the file (``<stem>.tsv`` with
    columns ``index`` and ``name``) when there is one, else ``label_<k>`` /
    ``mask_<k>``. Regions with no voxel inside the brain mask are refused.
    """
    nib = _nib()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ROI file {path} does not exist")
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    if data.shape[:3] != study.mask.shape or not np.allclose(img.affine, study.affine,
                                                             atol=1e-3):
        raise ValueError(f"the ROI file {path.name} has shape {data.shape[:3]} / another "
                         f"affine than the BOLD runs {study.mask.shape}: resample it to "
                         "the BOLD grid")
    lookup = Path(str(_stem(path)) + ".tsv")
    table = None
    if lookup.is_file():
        table = pd.read_csv(lookup, sep="\t")
        if not {"index", "name"} <= set(table.columns):
            raise ValueError(f"{lookup}: a ROI lookup table needs the columns 'index' and "
                             f"'name', got {list(table.columns)}")
        table = dict(zip(table["index"].astype(int), table["name"].astype(str)))
    inside = data[study.mask] if data.ndim == 3 else data[study.mask].T
    if data.ndim == 3:
        values = np.asarray(inside)
        if not np.allclose(values, np.round(values)):
            raise ValueError(f"{path}: a 3-D ROI file must hold integer labels (0 = no "
                             "region)")
        labels = sorted(int(v) for v in np.unique(np.round(values)) if v != 0)
        masks = np.stack([np.round(values) == k for k in labels]) if labels else None
        names = [(table or {}).get(k, f"label_{k}") for k in labels]
    elif data.ndim == 4:
        masks = np.asarray(inside) > 0
        names = [(table or {}).get(k, f"mask_{k}") for k in range(len(masks))]
    else:
        raise ValueError(f"{path}: a ROI file must be a 3-D label image or a 4-D stack "
                         f"of masks, got shape {data.shape}")
    if masks is None or not len(masks):
        raise ValueError(f"{path}: no region inside the brain mask")
    empty = [n for n, m in zip(names, masks) if not m.any()]
    if empty:
        raise ValueError(f"{path}: region(s) {empty} have no voxel inside the brain mask")
    return [str(n) for n in names], masks
