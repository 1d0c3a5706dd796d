"""TrialTable: one row per trial (stimulus, response, mask seed) plus the BubbleSpec.

Behaviour, fMRI events and network probes produce or consume this same table. It is
built from arrays (:meth:`TrialTable.from_arrays`) or read from a session's files
(:meth:`TrialTable.read`), whose format and rules for damaged lines are those of
:mod:`analysis.session_files` (docs/interfaces.md): the CSV (one row per trial), the
centres file (one JSON record per trial) and the sidecar (``"format":
"bubbles.session"``, ``"version": 1`` and ``"spec"``, the base spec; trial t used
``spec.replace(n_bubbles=row.n_bubbles)``).

Centres are regenerated from ``(spec, mask_seed, mask_index, n_bubbles)`` with
:func:`bubbles.sample_centers`; when the centres file exists the recorded centres are
checked against them (a mismatch means the spec or the code changed and the masks can
not be trusted).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bubbles import BubbleSpec, center_maps, load_source, sample_centers

from .session_files import MASK_COLUMNS, read_session, session_paths

__all__ = ["TrialTable"]

_CENTER_MODES = ("auto", "regenerate", "recorded")


def _convert_column(col):
    lowered = col.str.strip().str.lower()
    if lowered.isin(["true", "false"]).all():
        return lowered == "true"
    num = pd.to_numeric(col.replace({"": np.nan}), errors="coerce")
    if num.notna().sum() == col.replace({"": np.nan}).notna().sum():
        return num
    return col


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

        The files are read by :func:`analysis.session_files.read_session`: a
        half-written last line (a crash while a trial was being written) is dropped
        with a ``UserWarning``; any other damage is refused naming the file, the line
        and the column (a ``correct`` other than 0 or 1, trial numbers that skip or
        repeat, a ``n_bubbles`` that is not a whole number, a CSV cut in the middle,
        centres missing for recorded trials ...).

        Parameters
        ----------
        csv_path : path
            ``<stem>.csv`` (or any file of the session); the sidecar ``<stem>.json`` and
            centres ``<stem>_centers.jsonl`` are found by stem.
        centers : {'auto', 'regenerate', 'recorded'}
            'regenerate': from the seeds (the centres file is not read); 'recorded':
            from the centres file; 'auto' (default): regenerate, and check against the
            centres file when it exists.
        stimuli : StimulusSet, optional
            Checks every stimulus_id is in the set and the image shape matches the spec.

        Returns
        -------
        TrialTable
        """
        if centers not in _CENTER_MODES:
            raise ValueError(f"'centers' must be one of {list(_CENTER_MODES)}. "
                             f"{centers!r} was provided.")
        paths = session_paths(csv_path)
        if not paths["csv"].is_file():
            raise FileNotFoundError(f"session file {str(paths['csv'])!r} does not exist"
                                    f" (give the session's .csv)")
        found = read_session(paths["csv"], required=MASK_COLUMNS,
                             centers={"auto": None, "regenerate": False,
                                      "recorded": True}[centers])
        for message in found.dropped:
            warnings.warn(f"{message} (in {paths['csv'].parent}; the trial interrupted "
                          f"while being written is left out)", stacklevel=2)
        if not found.rows:
            raise ValueError(f"session file {str(paths['csv'])!r} has a header but no "
                             f"complete trial")
        sidecar = found.sidecar
        if "spec" not in sidecar:
            raise ValueError(f"{str(paths['sidecar'])!r} has no 'spec' entry")
        spec = BubbleSpec.from_dict(sidecar["spec"])
        frame = pd.DataFrame(found.rows, columns=found.header, dtype=object)
        frame = frame.astype(str).apply(_convert_column)
        for col in MASK_COLUMNS:        # whole numbers, checked by the reader
            frame[col] = frame[col].astype(np.int64)
        if centers == "recorded":
            per_band = _recorded_centers(found.centers, spec, paths["centers"])
        else:
            per_band = _regenerate(frame, spec)
            if found.centers is not None:
                _check_recorded(frame, found.centers, per_band, spec, paths["centers"])
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


def _recorded_centers(records, spec, path):
    """Centres per band from the centres records (one per row, in row order)."""
    per_band = [[] for _ in range(spec.n_bands)]
    for d in records:
        bands = d.get("centers")
        if not isinstance(bands, list) or len(bands) != spec.n_bands:
            got = len(bands) if isinstance(bands, list) else bands
            raise ValueError(f"{str(path)!r}: trial {d['trial']} has {got!r} band(s) of "
                             f"centres, the spec has {spec.n_bands}")
        for b, c in enumerate(bands):
            per_band[b].append(np.asarray(c, dtype=np.float64).reshape(-1, 2))
    return per_band


def _check_recorded(frame, records, per_band, spec, path):
    """Compare the recorded centres with the regenerated ones, trial by trial."""
    for pos, d in enumerate(records):
        bands = d.get("centers") or []
        for b in range(spec.n_bands):
            rec = np.asarray(bands[b] if b < len(bands) else [], float).reshape(-1, 2)
            gen = per_band[b][pos]
            if rec.shape != gen.shape or not np.allclose(rec, gen, atol=1e-6):
                raise ValueError(
                    f"{path}: recorded centres of trial {int(d['trial'])} (band {b}) "
                    "differ from those regenerated from mask_seed/mask_index/n_bubbles "
                    "with the sidecar spec; the spec or the sampling code changed. Read "
                    "with centers='recorded' to use the recorded ones.")
