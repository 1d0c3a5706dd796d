"""Crash-safe session files: per-trial CSV and centres, JSON sidecar, log, BIDS export.

A session writes, for the stem ``DIR/<participant>_<expName>_<date>``:

- ``<stem>.csv``: one row per trial (columns :data:`COLUMNS`), appended, flushed and
  fsynced as each trial ends, so a crash or ``kill -9`` loses at most the trial that
  was running;
- ``<stem>_centers.jsonl``: one JSON object per trial (its bubble centres per band),
  written the same way and *before* the CSV row;
- ``<stem>.json``: the sidecar (configuration, spec, seeds, key mapping, versions, monitor);
- ``<stem>.log``: the PsychoPy log;
- at the end (and on escape) a BIDS copy ``sub-<id>/beh/sub-<id>_task-<name>_beh.tsv``
  with its ``_beh.json``.

Nothing is ever overwritten: a stem, or a BIDS file, that exists gets a suffix.
:func:`open_for_resume` repairs an interrupted session: a half-written last line of the
CSV or the centres file is dropped (and reported), as is a centres record whose CSV row
never got written, so that appending continues with the first incomplete trial.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

__all__ = ["COLUMNS", "SIDECAR_FORMAT", "validate_participant", "date_string",
           "unique_stem", "SessionFiles", "ResumeState", "open_for_resume",
           "export_bids", "stem_of"]

#: CSV columns, in order (docs/interfaces.md).
COLUMNS = ("participant", "session", "trial", "block", "stimulus_id", "identity",
           "expression", "key", "response", "correct", "rt", "n_bubbles",
           "quest_intensity", "quest_mean", "quest_sd", "mask_seed", "mask_index",
           "frames_shown", "dropped_frames", "onset", "psychopyVersion", "frameRate",
           "expName", "date")
SIDECAR_FORMAT = "bubbles.session"
_SUFFIXES = (".csv", "_centers.jsonl", ".json", ".log")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def validate_participant(participant):
    """Return ``participant`` as str, or raise if it cannot be part of a file name."""
    pid = str(participant).strip()
    if not _SAFE_ID.match(pid):
        raise ValueError("participant must start with a letter or digit and contain only "
                         f"letters, digits, '_', '-' or '.', got {participant!r}")
    return pid


def date_string(now=None):
    """PsychoPy's date format, ``2026-11-26_06h32.34.123``."""
    now = now or datetime.now()
    return now.strftime("%Y-%m-%d_%Hh%M.%S.%f")[:-3]


def unique_stem(data_dir, participant, exp_name, date):
    """``data_dir/<participant>_<exp_name>_<date>``, with ``_2``, ``_3`` ... appended
    if any session file of that stem exists already."""
    base = Path(data_dir) / f"{participant}_{exp_name}_{date}"
    stem, k = base, 1
    while any(Path(f"{stem}{s}").exists() for s in _SUFFIXES):
        k += 1
        stem = Path(f"{base}_{k}")
    return stem


def stem_of(path):
    """Session stem from any of its files (``.csv``, ``.json``, ``_centers.jsonl``)."""
    text = str(path)
    for suffix in _SUFFIXES:
        if text.endswith(suffix):
            return Path(text[: -len(suffix)])
    return Path(text)


def _format(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def _fsync_write(f, text):
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


class SessionFiles:
    """Append-only writer of one session's CSV and centres files.

    Parameters
    ----------
    stem : Path
        Session stem; the files are ``<stem>.csv``, ``<stem>_centers.jsonl``, ...
    resume : bool
        Append to existing files (after :func:`open_for_resume` repaired them) instead
        of creating new ones; creating never replaces an existing file.
    """

    def __init__(self, stem, *, resume=False):
        self.stem = Path(stem)
        self.csv_path = Path(f"{self.stem}.csv")
        self.centers_path = Path(f"{self.stem}_centers.jsonl")
        self.sidecar_path = Path(f"{self.stem}.json")
        self.log_path = Path(f"{self.stem}.log")
        self.stem.parent.mkdir(parents=True, exist_ok=True)
        mode = "a" if resume else "x"
        self._csv = open(self.csv_path, mode, newline="", encoding="utf-8")
        self._centers = open(self.centers_path, mode, encoding="utf-8")
        if not resume:
            self._write_csv_line(COLUMNS)

    def _write_csv_line(self, values):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        _fsync_write(self._csv, buf.getvalue())

    def write_sidecar(self, meta):
        """Write the sidecar (atomically: a temporary file renamed over the old one)."""
        tmp = Path(f"{self.sidecar_path}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.sidecar_path)

    def write_trial(self, row, centers):
        """Append one trial: its centres record first, then its CSV row (both fsynced).

        Parameters
        ----------
        row : dict
            Values for :data:`COLUMNS` (missing ones are written empty).
        centers : dict
            ``{"trial", "mask_seed", "mask_index", "centers"}`` with ``centers`` a list
            (one per band) of lists of ``[row, col]``.
        """
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"row has unknown columns {sorted(unknown)}; allowed: "
                             f"{list(COLUMNS)}")
        _fsync_write(self._centers, json.dumps(centers, separators=(",", ":")) + "\n")
        self._write_csv_line([_format(row.get(c)) for c in COLUMNS])

    def close(self):
        for f in (self._csv, self._centers):
            if not f.closed:
                f.close()


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to the sidecar")


# -- resume --------------------------------------------------------------------------
@dataclass
class ResumeState:
    """What an interrupted session left behind (after repair)."""

    stem: Path
    meta: dict
    rows: list
    centers: list
    dropped: list = field(default_factory=list)


def _complete_lines(path):
    """(byte offsets of line ends, text of a half-written tail or '')."""
    data = Path(path).read_bytes()
    cut = data.rfind(b"\n") + 1
    return data[:cut], data[cut:].decode("utf-8", errors="replace")


def _truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())


def open_for_resume(path):
    """Read and repair an interrupted session so that it can be appended to.

    Parameters
    ----------
    path : str or Path
        The session's ``.csv``, ``.json`` or ``_centers.jsonl`` file, or its stem.

    Returns
    -------
    ResumeState
        The sidecar, the complete CSV rows (dicts of str) and centres records, and a
        list of messages describing anything dropped.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing files, a sidecar of another format, or files that disagree.
    """
    stem = stem_of(path)
    csv_path, centers_path = Path(f"{stem}.csv"), Path(f"{stem}_centers.jsonl")
    sidecar = Path(f"{stem}.json")
    for p in (csv_path, centers_path, sidecar):
        if not p.is_file():
            raise FileNotFoundError(f"cannot resume {str(stem)!r}: {str(p)!r} is missing")
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    if meta.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{str(sidecar)!r} is not a bubbles session sidecar (format "
                         f"{meta.get('format')!r}, expected {SIDECAR_FORMAT!r})")
    dropped = []

    # CSV: drop a half-written tail, and a last line with the wrong field count.
    good, tail = _complete_lines(csv_path)
    if tail:
        dropped.append(f"dropped half-written last line of {csv_path.name}: {tail!r}")
    lines = good.decode("utf-8").splitlines(keepends=True)
    if not lines or next(csv.reader([lines[0]])) != list(COLUMNS):
        raise ValueError(f"{str(csv_path)!r} does not start with the header "
                         f"{','.join(COLUMNS)}")
    rows, size = [], len(lines[0].encode("utf-8"))
    for line in lines[1:]:
        values = next(csv.reader([line]))
        if len(values) != len(COLUMNS):
            dropped.append(f"dropped malformed line of {csv_path.name}: {line!r}")
            break
        rows.append(dict(zip(COLUMNS, values)))
        size += len(line.encode("utf-8"))
    if size != csv_path.stat().st_size:
        _truncate(csv_path, size)
    trials = [int(r["trial"]) for r in rows]
    if trials != list(range(len(trials))):
        raise ValueError(f"{str(csv_path)!r} trials are not numbered 0, 1, 2, ...: "
                         f"{trials[:10]}")

    # Centres: keep one complete record per CSV row, in order; drop the rest.
    good, tail = _complete_lines(centers_path)
    if tail:
        dropped.append(f"dropped half-written last line of {centers_path.name}: {tail!r}")
    records, size = [], 0
    for line in good.decode("utf-8").splitlines(keepends=True):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            dropped.append(f"dropped malformed line of {centers_path.name}: {line!r}")
            break
        if len(records) == len(rows):
            dropped.append(f"dropped centres of trial {rec.get('trial')} from "
                           f"{centers_path.name}: its CSV row was never written")
            break
        if rec.get("trial") != len(records):
            raise ValueError(f"{str(centers_path)!r} has trial {rec.get('trial')!r} where "
                             f"trial {len(records)} was expected")
        records.append(rec)
        size += len(line.encode("utf-8"))
    if len(records) < len(rows):
        raise ValueError(f"{str(centers_path)!r} has {len(records)} trials but "
                         f"{str(csv_path)!r} has {len(rows)}: the centres of trial "
                         f"{len(records)} are missing")
    if size != centers_path.stat().st_size:
        _truncate(centers_path, size)
    return ResumeState(stem=stem, meta=meta, rows=rows, centers=records, dropped=dropped)


# -- BIDS ----------------------------------------------------------------------------
_COLUMN_INFO = {
    "trial": "Trial number in the session, from 0 (practice trials included)",
    "block": "'practice' (QUEST not updated) or 'main'",
    "stimulus_id": "Identifier of the image in the stimulus set",
    "expression": "Correct answer (expression shown)",
    "key": "Key pressed ('n/a' when the response window ran out)",
    "response": "Expression the pressed key stands for",
    "correct": "1 if response equals expression, else 0",
    "rt": "Reaction time from stimulus onset",
    "n_bubbles": "Total bubbles shown (all bands)",
    "quest_intensity": "log10(n_bubbles) shown, as given to QUEST",
    "quest_mean": "QUEST posterior mean of log10(n_bubbles) after this trial",
    "quest_sd": "QUEST posterior SD (log10 units) after this trial",
    "mask_seed": "Seed of the bubble centres (with mask_index: the trial's mask)",
    "mask_index": "Index of the trial's mask in the seeded sequence",
    "frames_shown": "Video frames the stimulus was on screen",
    "dropped_frames": "Frames dropped while the stimulus was on screen",
    "onset": "Stimulus onset from the start of this run",
}
_UNITS = {"rt": "s", "onset": "s", "frameRate": "Hz", "frames_shown": "frames",
          "dropped_frames": "frames"}


def _bids_label(text):
    return re.sub(r"[^A-Za-z0-9]", "", str(text)) or "x"


def export_bids(csv_path, bids_root, participant, exp_name, *, meta=None):
    """Copy a session CSV to ``bids_root/sub-<id>/beh/sub-<id>_task-<name>_beh.tsv``.

    Empty cells become ``n/a``; a ``_beh.json`` sidecar describes the columns. An
    existing file is never replaced: ``_run-2``, ``_run-3`` ... are added instead.

    Returns
    -------
    (Path, Path)
        The TSV and JSON paths.
    """
    sub, task = _bids_label(participant), _bids_label(exp_name)
    folder = Path(bids_root) / f"sub-{sub}" / "beh"
    folder.mkdir(parents=True, exist_ok=True)
    base, run = f"sub-{sub}_task-{task}", 1
    while True:
        name = base if run == 1 else f"{base}_run-{run}"
        tsv, js = folder / f"{name}_beh.tsv", folder / f"{name}_beh.json"
        if not tsv.exists() and not js.exists():
            break
        run += 1
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    with open(tsv, "x", encoding="utf-8") as f:
        for row in rows:
            f.write("\t".join(v if v != "" else "n/a" for v in row) + "\n")
        f.flush()
        os.fsync(f.fileno())
    info = {"TaskName": task, "Source": Path(csv_path).name}
    if meta:
        info["KeyMapping"] = meta.get("key_mapping")
    for col in rows[0] if rows else ():
        entry = {"Description": _COLUMN_INFO.get(col, col)}
        if col in _UNITS:
            entry["Units"] = _UNITS[col]
        info[col] = entry
    with open(js, "x", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    return tsv, js
