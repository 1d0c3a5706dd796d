"""TrialTable: one row per trial (stimulus, response, mask seed) plus the BubbleSpec.

Behaviour, fMRI events and network probes produce or consume this same table. It is
built from arrays (:meth:`TrialTable.from_arrays`) or read from a session's files
(:meth:`TrialTable.read`), whose format is fixed in ``docs/interfaces.md``:

``<stem>.csv``
    one row per trial, appended and fsynced as each trial ends (columns: participant,
    session, trial, block, stimulus_id, identity, expression, key, response, correct,
    rt, n_bubbles, quest_intensity, quest_mean, quest_sd, mask_seed, mask_index,
    frames_shown, dropped_frames, onset, psychopyVersion, frameRate, expName, date).
``<stem>_centers.jsonl``
    one JSON object per trial: ``{"trial": t, "mask_seed": s, "mask_index": i,
    "centers": [[[row, col], ...] per band]}``.
``<stem>.json``
    sidecar with ``"format": "bubbles.session"``, ``"version": 1`` and ``"spec"`` (the
    base spec; trial t used ``spec.replace(n_bubbles=row.n_bubbles)``).

Centres are regenerated from ``(spec, mask_seed, mask_index, n_bubbles)`` with
:func:`bubbles.sample_centers`; when the centres file exists the recorded centres are
checked against them (a mismatch means the spec or the code changed and the masks can
not be trusted).
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["TrialTable", "session_paths"]

SESSION_FORMAT = "bubbles.session"
SESSION_VERSION = 1
_CENTER_MODES = ("auto", "regenerate", "recorded")


def session_paths(csv_path):
    """The session's files from its CSV path: dict with 'csv', 'sidecar', 'centers'."""
    p = Path(csv_path)
    stem = p.with_suffix("") if p.suffix.lower() == ".csv" else p
    return {"csv": stem.with_name(stem.name + ".csv"),
            "sidecar": stem.with_name(stem.name + ".json"),
            "centers": stem.with_name(stem.name + "_centers.jsonl")}


def _read_csv_tolerant(path):
    """Read the CSV; drop a half-written last line (crash mid-write) with a warning."""
    with open(path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    if not text.strip():
        raise ValueError(f"session file {path} is empty")
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    body = [r for r in rows[1:] if r]
    if not body:
        raise ValueError(f"session file {path} has a header but no trials")
    complete_end = text.endswith("\n") or text.endswith("\r")
    last = body[-1]
    if len(last) != len(header) or not complete_end:
        warnings.warn(f"{path}: ignoring a half-written last line (trial interrupted "
                      f"while being written): {','.join(last)[:80]!r}", stacklevel=3)
        body = body[:-1]
    for i, r in enumerate(body):
        if len(r) != len(header):
            raise ValueError(f"{path}: line {i + 2} has {len(r)} fields, the header has "
                             f"{len(header)}; the file is damaged")
    frame = pd.DataFrame(body, columns=header)
    return frame.apply(_convert_column)


def _convert_column(col):
    lowered = col.str.strip().str.lower()
    if lowered.isin(["true", "false"]).all():
        return lowered == "true"
    num = pd.to_numeric(col.replace({"": np.nan}), errors="coerce")
    if num.notna().sum() == col.replace({"": np.nan}).notna().sum():
        return num
    return col


def _read_jsonl_tolerant(path):
    lines = Path(path).read_text(encoding="utf-8").splitlines(keepends=True)
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                warnings.warn(f"{path}: ignoring a half-written last line", stacklevel=3)
                break
            raise ValueError(f"{path}: line {i + 1} is not valid JSON; the file is "
                             "damaged") from None
    return out


@dataclass
class TrialTable:
    """Trials of a bubbles run: a DataFrame, the base spec and the centres.

    Attributes
    ----------
    data : pandas.DataFrame
        One row per trial. ``n_bubbles`` holds the trial's total bubble count.
    spec : BubbleSpec
        Base spec (the trial spec is ``spec.replace(n_bubbles=row.n_bubbles)``).
    centers : list
        One entry per band; each a list of per-trial ``(k_t, 2)`` arrays (ragged).
    sidecar : dict
        The session's sidecar (empty for tables built from arrays).
    path : Path or None
        The CSV the table came from.

    Examples
    --------
    >>> from bubbles import BubbleSpec, sample_centers
    >>> spec = BubbleSpec(shape=(32, 32), sigma=3, n_bubbles=4)
    >>> t = TrialTable.from_arrays(spec, sample_centers(spec, 0, 3), correct=[1, 0, 1])
    >>> len(t), t.responses("correct").tolist()
    (3, [1.0, 0.0, 1.0])
    """

    data: pd.DataFrame
    spec: object
    centers: list
    sidecar: dict = field(default_factory=dict)
    path: Path | None = None

    def __len__(self):
        return len(self.data)

    @property
    def n_trials(self):
        return len(self.data)

    # -- construction ----------------------------------------------------------------
    @classmethod
    def from_arrays(cls, spec, centers, **columns):
        """Build a table from centres (as :func:`bubbles.sample_centers` gives, or ragged
        per band) and equal-length columns (``correct=..., rt=..., stimulus_id=...``)."""
        from bubbles import BubbleSpec

        if not isinstance(spec, BubbleSpec):
            raise TypeError(f"spec must be a bubbles.BubbleSpec, got {type(spec).__name__}")
        per_band = list(centers) if spec.multiscale else [centers]
        if len(per_band) != spec.n_bands:
            raise ValueError(f"centers must have one entry per band ({spec.n_bands}), got "
                             f"{len(per_band)}")
        per_band = [[np.asarray(c, dtype=np.float64).reshape(-1, 2) for c in band]
                    for band in per_band]
        n = len(per_band[0])
        if any(len(b) != n for b in per_band):
            raise ValueError("centers of every band must cover the same number of trials, "
                             f"got {[len(b) for b in per_band]} trials per band")
        data = {}
        for name, values in columns.items():
            values = np.asarray(values)
            if values.ndim != 1 or len(values) != n:
                raise ValueError(f"column {name!r} must have one value per trial ({n}), "
                                 f"got shape {values.shape}")
            data[name] = values
        frame = pd.DataFrame(data, index=pd.RangeIndex(n))
        if "trial" not in frame:
            frame.insert(0, "trial", np.arange(n))
        if "n_bubbles" not in frame:
            frame["n_bubbles"] = [sum(len(b[t]) for b in per_band) for t in range(n)]
        return cls(data=frame, spec=spec, centers=per_band)

    @classmethod
    def read(cls, csv_path, *, centers="auto", stimuli=None):
        """Read a session written by ``experiments`` (see the module docstring).

        Parameters
        ----------
        csv_path : path
            ``<stem>.csv``; the sidecar ``<stem>.json`` and centres
            ``<stem>_centers.jsonl`` are found by stem.
        centers : {'auto', 'regenerate', 'recorded'}
            'regenerate': from the seeds (no centres file needed); 'recorded': from the
            centres file; 'auto' (default): regenerate, and check against the centres
            file when it exists.
        stimuli : StimulusSet, optional
            Checks every stimulus_id is in the set and the image shape matches the spec.

        Returns
        -------
        TrialTable
        """
        from bubbles import BubbleSpec

        if centers not in _CENTER_MODES:
            raise ValueError(f"'centers' must be one of {list(_CENTER_MODES)}. "
                             f"{centers!r} was provided.")
        paths = session_paths(csv_path)
        if not paths["csv"].exists():
            raise FileNotFoundError(f"session file {paths['csv']} does not exist")
        if not paths["sidecar"].exists():
            raise FileNotFoundError(f"session sidecar {paths['sidecar']} does not exist "
                                    f"(it holds the BubbleSpec of {paths['csv'].name})")
        try:
            sidecar = json.loads(paths["sidecar"].read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"session sidecar {paths['sidecar']} is not valid JSON: "
                             f"{exc}") from None
        if sidecar.get("format") != SESSION_FORMAT:
            raise ValueError(f"{paths['sidecar']} must have format {SESSION_FORMAT!r}, got "
                             f"{sidecar.get('format')!r}")
        if sidecar.get("version") != SESSION_VERSION:
            raise ValueError(f"{paths['sidecar']}: session format version "
                             f"{sidecar.get('version')!r} is not supported (reads "
                             f"{SESSION_VERSION})")
        if "spec" not in sidecar:
            raise ValueError(f"{paths['sidecar']} has no 'spec' entry")
        spec = BubbleSpec.from_dict(sidecar["spec"])
        frame = _read_csv_tolerant(paths["csv"])
        needed = ["trial", "n_bubbles", "mask_seed", "mask_index"]
        missing = [c for c in needed if c not in frame]
        if missing:
            raise ValueError(f"{paths['csv']} lacks column(s) {missing}; needed to rebuild "
                             "the masks")
        for col in needed:
            vals = frame[col]
            if vals.dtype.kind not in "iuf" or vals.isna().any() or (vals < 0).any():
                bad = frame.index[pd.to_numeric(vals, errors="coerce").isna()
                                  | (pd.to_numeric(vals, errors="coerce") < 0)]
                raise ValueError(f"{paths['csv']}: column {col!r} must hold integers >= 0;"
                                 f" bad value(s) at trial row(s) {bad[:5].tolist()}")
            frame[col] = vals.astype(np.int64)
        dup = frame["trial"].duplicated()
        if dup.any():
            raise ValueError(f"{paths['csv']}: trial number(s) "
                             f"{frame['trial'][dup].unique()[:5].tolist()} appear more "
                             "than once (a resumed session duplicated trials)")
        recorded = None
        if centers in ("auto", "recorded"):
            if paths["centers"].exists():
                recorded = {int(d["trial"]): d for d in _read_jsonl_tolerant(paths["centers"])}
            elif centers == "recorded":
                raise FileNotFoundError(f"centres file {paths['centers']} does not exist")
        if centers == "recorded":
            per_band = _recorded_centers(frame, recorded, spec, paths["centers"])
        else:
            per_band = _regenerate(frame, spec)
            if recorded is not None:
                _check_recorded(frame, recorded, per_band, spec, paths["centers"])
        table = cls(data=frame.reset_index(drop=True), spec=spec, centers=per_band,
                    sidecar=sidecar, path=paths["csv"])
        if stimuli is not None:
            table.check_stimuli(stimuli)
        return table

    # -- access ----------------------------------------------------------------------
    def responses(self, column="correct"):
        """Column as float64 responses, with clear errors for missing/NaN/non-numeric.

        ``'correct'`` accepts booleans, 0/1 and 'True'/'False'.
        """
        if column not in self.data:
            raise ValueError(f"response column {column!r} is not in the table; columns are "
                             f"{list(self.data.columns)}")
        col = self.data[column]
        if col.dtype == object:
            col = col.replace({"True": 1.0, "False": 0.0, "true": 1.0, "false": 0.0})
        if col.dtype == bool:
            return col.to_numpy(np.float64)
        num = pd.to_numeric(col, errors="coerce")
        bad = num.isna() & col.notna()
        if bad.any():
            rows = self.data.index[bad][:5].tolist()
            raise ValueError(f"response column {column!r} must be numeric; non-numeric "
                             f"value(s) {col[bad].head(3).tolist()} at row(s) {rows}")
        if num.isna().any():
            rows = self.data.index[num.isna()][:5].tolist()
            raise ValueError(f"response column {column!r} has {int(num.isna().sum())} "
                             f"missing value(s) (first rows {rows}); drop them with "
                             f"table.dropna({column!r})")
        return num.to_numpy(np.float64)

    def dropna(self, column):
        """A new table without the trials whose ``column`` is missing."""
        keep = pd.to_numeric(self.data[column], errors="coerce").notna().to_numpy() \
            if self.data[column].dtype != bool else np.ones(len(self), bool)
        return self.select(keep)

    def select(self, rows):
        """A new table with the rows selected by a boolean mask or integer positions."""
        rows = np.asarray(rows)
        idx = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(int)
        if rows.dtype == bool and len(rows) != len(self):
            raise ValueError(f"rows mask must have one value per trial ({len(self)}), got "
                             f"{len(rows)}")
        centers = [[band[i] for i in idx] for band in self.centers]
        return TrialTable(data=self.data.iloc[idx].reset_index(drop=True), spec=self.spec,
                          centers=centers, sidecar=self.sidecar, path=self.path)

    def center_list(self):
        """Centres in the form classification_image takes (ragged; list per band)."""
        return self.centers if self.spec.multiscale else self.centers[0]

    def center_maps(self):
        """Sparse centre maps (csr per band, or one csr for a single-scale spec)."""
        from bubbles import center_maps
        return center_maps(self.spec, self.center_list())

    def mean_stimulus(self):
        """Mean of the images this session showed, rebuilt from its sidecar, or None.

        ``config.stimuli.source`` of the sidecar means what it means for the session
        (:func:`bubbles.load_source`: ``"faces"`` rebuilds the embedded faces with the
        recorded ``n_identities`` / ``size`` / ``expressions``, otherwise a stimulus
        folder, a relative one taken relative to the session CSV's folder). Whenever the
        stimuli cannot be rebuilt for a reason the user can fix (the sidecar records no
        source, the table has no ``stimulus_id`` column, a moved or damaged folder, images
        of another shape than the spec, none of the session's stimulus ids in the set)
        the answer is None with a ``UserWarning`` that says why: figures then have no
        face under the map (give the background explicitly). A table built in memory
        (no sidecar) gives None silently.
        """
        if not self.sidecar:
            return None
        stim = (self.sidecar.get("config") or {}).get("stimuli") or {}
        source = stim.get("source")

        def none(why):
            warnings.warn(f"no mean stimulus for the figure background: {why}; give the "
                          "background explicitly (e.g. --background FILE)", stacklevel=3)
            return None

        if not source:
            return none("the session sidecar records no config.stimuli.source")
        if "stimulus_id" not in self.data:
            return none("the session has no 'stimulus_id' column")
        from bubbles import load_source

        path = getattr(self, "path", None)
        base = Path(path).parent if path is not None else None
        try:
            s = load_source(source, n_identities=stim.get("n_identities", 20),
                            size=stim.get("size", 256),
                            expressions=stim.get("expressions"), base_dir=base)
        except (OSError, ValueError) as exc:
            return none(f"cannot rebuild the session's stimuli {source!r} ({exc})")
        if tuple(s.shape) != tuple(self.spec.shape):
            return none(f"the stimuli {source!r} have shape {tuple(s.shape)}, the session "
                        f"spec {tuple(self.spec.shape)}")
        shown = s.table["stimulus_id"].astype(str).isin(
            set(self.data["stimulus_id"].astype(str)))
        if not shown.any():
            return none(f"none of the session's stimulus ids is in the stimuli {source!r}")
        return s.images[shown.to_numpy()].mean(axis=0)

    def check_stimuli(self, stimuli):
        """Raise if a stimulus_id is unknown to ``stimuli`` or its images do not have the
        spec's shape."""
        images = np.asarray(stimuli.images)
        if images.shape[1:3] != tuple(self.spec.shape):
            raise ValueError(f"the stimulus images have shape {images.shape[1:3]} but the "
                             f"session spec has shape {tuple(self.spec.shape)}")
        if "stimulus_id" not in self.data:
            raise ValueError("the table has no 'stimulus_id' column to check")
        known = set(stimuli.table["stimulus_id"].astype(str))
        ids = self.data["stimulus_id"].astype(str)
        unknown = sorted(set(ids) - known)
        if unknown:
            raise ValueError(f"{len(unknown)} stimulus id(s) are not in the stimulus set: "
                             f"{unknown[:5]}")


def _regenerate(frame, spec):
    """Centres of every row from (spec, mask_seed, mask_index, n_bubbles)."""
    from bubbles import sample_centers

    n = len(frame)
    per_band = [[None] * n for _ in range(spec.n_bands)]
    keys = frame[["n_bubbles", "mask_seed"]].to_numpy()
    positions = {}
    for pos, (k, s) in enumerate(keys):
        positions.setdefault((int(k), int(s)), []).append(pos)
    for (k, s), rows in positions.items():
        try:
            trial_spec = spec.replace(n_bubbles=k)
        except ValueError as exc:
            raise ValueError(f"n_bubbles={k} (row {rows[0]}) is not valid for the session "
                             f"spec: {exc}") from None
        idx = frame["mask_index"].to_numpy()[rows]
        c = sample_centers(trial_spec, s, idx.tolist())
        bands = c if spec.multiscale else [c]
        for b, arr in enumerate(bands):
            for j, pos in enumerate(rows):
                per_band[b][pos] = arr[j]
    return per_band


def _recorded_rows(frame, recorded, path):
    out = []
    for t in frame["trial"]:
        d = recorded.get(int(t))
        if d is None:
            raise ValueError(f"{path} has no centres for trial {int(t)}")
        out.append(d)
    return out


def _recorded_centers(frame, recorded, spec, path):
    rows = _recorded_rows(frame, recorded, path)
    per_band = [[] for _ in range(spec.n_bands)]
    for d in rows:
        bands = d["centers"]
        if len(bands) != spec.n_bands:
            raise ValueError(f"{path}: trial {d['trial']} has {len(bands)} band(s) of "
                             f"centres, the spec has {spec.n_bands}")
        for b, c in enumerate(bands):
            per_band[b].append(np.asarray(c, dtype=np.float64).reshape(-1, 2))
    return per_band


def _check_recorded(frame, recorded, per_band, spec, path):
    """Compare recorded centres with the regenerated ones where both exist."""
    for pos, t in enumerate(frame["trial"]):
        d = recorded.get(int(t))
        if d is None:
            continue   # the centres line was lost in a crash: regenerated ones are used
        bands = d["centers"]
        for b in range(spec.n_bands):
            rec = np.asarray(bands[b] if b < len(bands) else [], float).reshape(-1, 2)
            gen = per_band[b][pos]
            if rec.shape != gen.shape or not np.allclose(rec, gen, atol=1e-6):
                raise ValueError(
                    f"{path}: recorded centres of trial {int(t)} (band {b}) differ from "
                    "those regenerated from mask_seed/mask_index/n_bubbles with the "
                    "sidecar spec; the spec or the sampling code changed. Read with "
                    "centers='recorded' to use the recorded ones.")
