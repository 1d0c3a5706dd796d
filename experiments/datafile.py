"""Crash-safe session files: per-trial CSV and centres, JSON sidecar, log, BIDS export.

A session writes, for the stem ``DIR/<participant>_<expName>_<date>``:

- ``<stem>.csv``: one row per trial (columns :data:`COLUMNS`), appended, flushed and
  fsynced as each trial ends, so a crash or ``kill -9`` loses at most the trial that
  was running;
- ``<stem>_centers.jsonl``: one JSON object per trial (its bubble centres per band),
  written the same way and *before* the CSV row;
- ``<stem>.json``: the sidecar (configuration, spec, seeds, key mapping, versions, monitor);
- ``<stem>.log``: the PsychoPy log;
- at the end (and on escape) a BIDS copy
  ``sub-<id>/ses-<n>/beh/sub-<id>_ses-<n>_task-<name>_beh.tsv`` with its ``_beh.json``.

The session files are never overwritten: a stem that exists gets a suffix. The BIDS copy
is derived data, regenerated from the CSV: a resumed session replaces its own copy, and
a copy of another session gets ``_run-2`` ... :func:`open_for_resume` repairs an
interrupted session: a half-written last line of the CSV or the centres file is dropped
(and reported), as is a centres record whose CSV row never got written, so that
appending continues with the first incomplete trial; any other damage is refused.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

# The session format is defined once, by its reader (experiments -> analysis).
from analysis.diagnostic import to_jsonable
from analysis.trials import SESSION_FORMAT, SESSION_VERSION, session_paths

__all__ = ["COLUMNS", "SESSION_FORMAT", "SESSION_VERSION", "validate_participant",
           "date_string", "unique_stem", "SessionFiles", "ResumeState",
           "open_for_resume", "export_bids", "stem_of"]

#: CSV columns, in order (docs/interfaces.md).
COLUMNS = ("participant", "session", "trial", "block", "stimulus_id", "identity",
           "expression", "key", "response", "correct", "rt", "n_bubbles",
           "quest_intensity", "quest_mean", "quest_sd", "mask_seed", "mask_index",
           "frames_shown", "dropped_frames", "onset", "psychopyVersion", "frameRate",
           "expName", "date")
#: File name endings of a session's files: those analysis.trials.session_paths names,
#: plus the PsychoPy log (written by experiments only).
_SUFFIXES = tuple(p.name[len("x"):] for p in session_paths("x").values()) + (".log",)
#: A participant id is a BIDS label: ASCII letters and digits only, so that it is
#: both a safe file name part and the ``sub-<id>`` of the BIDS copy unchanged (an id
#: with '_', '-' or '.' would be stripped there, and 'P_01' and 'P01' would share
#: ``sub-P01``).
_SAFE_ID = re.compile(r"^[A-Za-z0-9]+$")


def validate_participant(participant, *, name="participant"):
    """Return ``participant`` as str, or raise if it is not a BIDS label.

    ``name`` is how the caller calls the parameter (``--participant`` on the command
    line); the error names it and the allowed characters.
    """
    pid = str(participant).strip()
    if not _SAFE_ID.match(pid):
        raise ValueError(f"{name} must be a BIDS label: one or more letters and digits "
                         f"only (A-Z, a-z, 0-9; no '_', '-', '.' or spaces), got "
                         f"{participant!r}")
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
        paths = session_paths(self.stem)
        self.csv_path = paths["csv"]
        self.centers_path = paths["centers"]
        self.sidecar_path = paths["sidecar"]
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
            json.dump(to_jsonable(meta), f, indent=2)
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


# -- resume --------------------------------------------------------------------------
@dataclass
class ResumeState:
    """What an interrupted session left behind, and how to repair it.

    :func:`open_for_resume` only reads: ``cuts`` lists the files whose damaged tail
    (a half-written last line, or a centres record whose CSV row never got written)
    must be cut off before appending, and :meth:`repair` does it, after backing each
    file up. A session calls :meth:`repair` only once every check that can refuse the
    resume has passed.
    """

    stem: Path
    meta: dict
    rows: list
    centers: list
    dropped: list = field(default_factory=list)
    cuts: list = field(default_factory=list)      # (path, size to keep)
    backups: list = field(default_factory=list)   # filled by repair()

    def repair(self):
        """Cut the files back to their complete trials (each copied to ``.bak`` first).

        Returns the list of backup paths; does nothing when nothing needs cutting.
        """
        for path, size in self.cuts:
            if Path(path).stat().st_size == size:
                continue
            backup = _backup(path)
            self.backups.append(backup)
            self.dropped.append(f"copied {Path(path).name} to {backup.name} before "
                                f"cutting it back to {size} bytes")
            _truncate(path, size)
        self.cuts = []
        return list(self.backups)


def _backup(path):
    """Copy ``path`` to ``<path>.bak`` (``.bak-2``, ``.bak-3`` ... if taken), fsynced."""
    path = Path(path)
    dest, k = Path(f"{path}.bak"), 1
    while dest.exists():
        k += 1
        dest = Path(f"{path}.bak-{k}")
    with open(path, "rb") as src, open(dest, "xb") as out:
        shutil.copyfileobj(src, out)
        out.flush()
        os.fsync(out.fileno())
    return dest


def _split_lines(path):
    """(complete lines as bytes each ending in a newline, half-written tail bytes)."""
    data = Path(path).read_bytes()
    cut = data.rfind(b"\n") + 1
    return data[:cut].splitlines(keepends=True), data[cut:]


def _truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())


def _damaged(path, lineno, problem):
    return ValueError(f"cannot resume: {str(path)!r} line {lineno} {problem}; only a "
                      f"half-written last line can be repaired, so nothing was changed "
                      f"(repair or remove that line by hand)")


def _row_problem(values, trial, mask_seed):
    """What is wrong with the values of a complete CSV row (None if nothing): the
    columns a resume replays or continues from must hold what the session wrote."""
    row = dict(zip(COLUMNS, values))
    if row["trial"] != str(trial):
        return f"has trial {row['trial']!r} where trial {trial} was expected"
    if row["block"] not in ("practice", "main"):
        return f"column 'block' is {row['block']!r}, expected 'practice' or 'main'"
    if row["correct"] not in ("0", "1"):
        return f"column 'correct' is {row['correct']!r}, expected 0 or 1"
    if row["block"] == "main":
        try:
            ok = math.isfinite(float(row["quest_intensity"]))
        except ValueError:
            ok = False
        if not ok:
            return (f"column 'quest_intensity' is {row['quest_intensity']!r}, expected "
                    f"a finite number (log10 of the bubbles shown) in a main-block row")
    if row["mask_index"] != str(trial):
        return (f"column 'mask_index' is {row['mask_index']!r}, expected {trial} (the "
                f"trial number)")
    if mask_seed is not None and row["mask_seed"] != str(mask_seed):
        return (f"column 'mask_seed' is {row['mask_seed']!r}, expected {mask_seed} (the "
                f"sidecar's seeds.mask_seed)")
    return None


def _read_csv_rows(csv_path, dropped, mask_seed=None):
    """Complete rows of the CSV and the byte size they take (header included).

    Every complete row is checked (:func:`_row_problem`): a bad one raises, naming the
    line and the column, before anything is cut."""
    lines, tail = _split_lines(csv_path)
    if tail:
        dropped.append(f"dropped half-written last line of {csv_path.name}: "
                       f"{tail.decode('utf-8', errors='replace')!r}")
    try:
        header = next(csv.reader([lines[0].decode("utf-8")])) if lines else None
    except (UnicodeDecodeError, csv.Error):
        header = None
    if header != list(COLUMNS):
        raise ValueError(f"{str(csv_path)!r} does not start with the header "
                         f"{','.join(COLUMNS)}")
    rows, size = [], len(lines[0])
    last = len(lines) - 1
    for i, raw in enumerate(lines[1:], start=1):
        problem = None
        try:
            values = next(csv.reader([raw.decode("utf-8")]))
        except (UnicodeDecodeError, csv.Error, StopIteration) as err:
            values, problem = None, f"cannot be parsed ({err})"
        if problem is None and len(values) != len(COLUMNS):
            problem = f"has {len(values)} fields instead of {len(COLUMNS)}"
        if problem is not None:
            if i == last and not tail:           # a torn last line: drop it
                dropped.append(f"dropped malformed last line of {csv_path.name} "
                               f"(line {i + 1}, {problem}): "
                               f"{raw.decode('utf-8', errors='replace')!r}")
                break
            raise _damaged(csv_path, i + 1, problem)
        problem = _row_problem(values, len(rows), mask_seed)   # a complete row
        if problem is not None:
            raise _damaged(csv_path, i + 1, problem)
        rows.append(dict(zip(COLUMNS, values)))
        size += len(raw)
    return rows, size


def _read_centers(centers_path, n_rows, dropped, mask_seed=None):
    """One centres record per CSV row, and the byte size they take."""
    lines, tail = _split_lines(centers_path)
    if tail:
        dropped.append(f"dropped half-written last line of {centers_path.name}: "
                       f"{tail.decode('utf-8', errors='replace')!r}")
    records, size, last = [], 0, len(lines) - 1
    for i, raw in enumerate(lines):
        try:
            rec = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            problem = f"is not valid JSON ({err})"
            if i == last and not tail and len(records) >= n_rows:
                dropped.append(f"dropped malformed last line of {centers_path.name} "
                               f"(line {i + 1}, {problem})")
                break
            if i == last and not tail:
                problem += (f", and the CSV has the row of its trial {len(records)}, so "
                            f"it cannot be dropped")
            raise _damaged(centers_path, i + 1, problem) from None
        if not isinstance(rec, dict) or rec.get("trial") != len(records):
            got = rec.get("trial") if isinstance(rec, dict) else rec
            raise _damaged(centers_path, i + 1, f"has trial {got!r} where trial "
                           f"{len(records)} was expected")
        if len(records) < n_rows and (rec.get("mask_index") != len(records) or (
                mask_seed is not None and rec.get("mask_seed") != mask_seed)):
            raise _damaged(centers_path, i + 1, f"has mask_seed "
                           f"{rec.get('mask_seed')!r} and mask_index "
                           f"{rec.get('mask_index')!r} where {mask_seed} (the sidecar's "
                           f"seeds.mask_seed) and {len(records)} were expected")
        if len(records) == n_rows:
            # the trial was cut short between its centres and its CSV row: at most
            # one such record, and only at the end
            if i != last:
                raise _damaged(centers_path, i + 2, f"follows the centres of trial "
                               f"{rec.get('trial')}, whose CSV row was never written")
            dropped.append(f"dropped centres of trial {rec.get('trial')} from "
                           f"{centers_path.name}: its CSV row was never written")
            break
        records.append(rec)
        size += len(raw)
    return records, size


def open_for_resume(path, *, repair=True):
    """Read an interrupted session and check that it can be appended to.

    Only damage a crash can leave is repaired: a half-written (or unparsable) *last*
    line of the CSV or of the centres file, and a centres record whose CSV row never
    got written. Damage anywhere else raises, naming the file and line, and changes
    nothing; so does a complete row whose ``trial``, ``block``, ``correct``,
    ``quest_intensity`` (main block), ``mask_index`` or ``mask_seed`` (the sidecar's)
    is not what the session writes (the error names the column), since the resume
    replays those rows into QUEST. Every file that is cut is first copied to
    ``<file>.bak`` (``.bak-2`` ... when that exists).

    Parameters
    ----------
    path : str or Path
        The session's ``.csv``, ``.json`` or ``_centers.jsonl`` file, or its stem.
    repair : bool
        Cut the files back at once (after every check here passed). With False nothing
        on disk changes; call :meth:`ResumeState.repair` once the caller's own checks
        passed too.

    Returns
    -------
    ResumeState
        The sidecar, the complete CSV rows (dicts of str) and centres records, and a
        list of messages describing anything dropped.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing files, a sidecar of another format or version, damage before the last
        line, or files that disagree.
    """
    stem = stem_of(path)
    paths = session_paths(stem)
    csv_path, centers_path, sidecar = paths["csv"], paths["centers"], paths["sidecar"]
    for p in (csv_path, centers_path, sidecar):
        if not p.is_file():
            raise FileNotFoundError(f"cannot resume {str(stem)!r}: {str(p)!r} is missing")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot resume: the sidecar {str(sidecar)!r} is not valid "
                         f"JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != SESSION_FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{str(sidecar)!r} is not a bubbles session sidecar (format "
                         f"{fmt!r}, expected {SESSION_FORMAT!r})")
    if meta.get("version") != SESSION_VERSION:
        raise ValueError(f"cannot resume: {str(sidecar)!r} has session format version "
                         f"{meta.get('version')!r}; this toolkit writes {SESSION_VERSION}")
    try:
        mask_seed = int(meta["seeds"]["mask_seed"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"cannot resume: the sidecar {str(sidecar)!r} lacks or garbles "
                         f"seeds.mask_seed") from None
    dropped = []
    rows, csv_size = _read_csv_rows(csv_path, dropped, mask_seed)
    records, centers_size = _read_centers(centers_path, len(rows), dropped,
                                          mask_seed)
    if len(records) < len(rows):
        raise ValueError(f"{str(centers_path)!r} has {len(records)} trials but "
                         f"{str(csv_path)!r} has {len(rows)}: the centres of trial "
                         f"{len(records)} are missing")
    cuts = [(p, size) for p, size in ((csv_path, csv_size), (centers_path, centers_size))
            if size != p.stat().st_size]
    state = ResumeState(stem=stem, meta=meta, rows=rows, centers=records,
                        dropped=dropped, cuts=cuts)
    if repair:
        state.repair()
    return state


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


def _bids_source(js):
    """The session CSV a BIDS ``_beh.json`` was made from (None if unreadable)."""
    try:
        return json.loads(Path(js).read_text(encoding="utf-8")).get("Source")
    except (OSError, ValueError, AttributeError):
        return None


def _write_replacing(path, text):
    """Write ``path`` through a temporary file renamed over it (fsynced)."""
    tmp = Path(f"{path}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def export_bids(csv_path, bids_root, participant, exp_name, *, session=1, meta=None):
    """Copy a session CSV to
    ``bids_root/sub-<id>/ses-<n>/beh/sub-<id>_ses-<n>_task-<name>_beh.tsv``.

    Empty cells become ``n/a``; a ``_beh.json`` sidecar describes the columns and
    names the CSV it was made from (``Source``). The BIDS copy is derived data: a
    second export of the same session CSV (the end of a resumed session) replaces
    the copy it made before, so the file holds the whole session once. A copy of a
    *different* session CSV with the same participant, session and task is never
    replaced: ``_run-2``, ``_run-3`` ... are added instead.

    Returns
    -------
    (Path, Path)
        The TSV and JSON paths.
    """
    if isinstance(session, bool) or not isinstance(session, int) or session < 0:
        raise ValueError(f"session must be an integer >= 0, got {session!r}")
    # the participant is used as the BIDS label unchanged (never stripped: 'P_01'
    # would become the 'P01' of another participant)
    sub = validate_participant(participant)
    task, ses = _bids_label(exp_name), f"ses-{session}"
    folder = Path(bids_root) / f"sub-{sub}" / ses / "beh"
    folder.mkdir(parents=True, exist_ok=True)
    source = Path(csv_path).name
    base, run = f"sub-{sub}_{ses}_task-{task}", 1
    while True:
        name = base if run == 1 else f"{base}_run-{run}"
        tsv, js = folder / f"{name}_beh.tsv", folder / f"{name}_beh.json"
        if not tsv.exists() and not js.exists():
            break                                   # a free name
        if js.exists() and _bids_source(js) == source:
            break                                   # this session's own copy: replace
        run += 1
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    _write_replacing(tsv, "".join("\t".join(v if v != "" else "n/a" for v in row) + "\n"
                                  for row in rows))
    info = {"TaskName": task, "Source": source}
    if meta:
        info["KeyMapping"] = meta.get("key_mapping")
    for col in rows[0] if rows else ():
        entry = {"Description": _COLUMN_INFO.get(col, col)}
        if col in _UNITS:
            entry["Units"] = _UNITS[col]
        info[col] = entry
    _write_replacing(js, json.dumps(info, indent=2) + "\n")
    return tsv, js
