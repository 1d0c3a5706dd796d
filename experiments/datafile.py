"""Crash-safe session files: per-trial CSV and centres, JSON sidecar, log, BIDS export.

A session writes, for the stem ``DIR/<participant>_<expName>_<date>``:

- ``<stem>.csv``: one row per trial (columns :data:`analysis.session_files.COLUMNS`),
  appended, flushed and fsynced as each trial ends, so a crash or ``kill -9`` loses at
  most the trial that was running;
- ``<stem>_centers.jsonl``: one JSON object per trial (its bubble centres per band),
  written the same way and *before* the CSV row;
- ``<stem>.json``: the sidecar (configuration, spec, seeds, key mapping, versions, monitor);
- ``<stem>.log``: the PsychoPy log;
- at the end (and on escape) a BIDS copy
  ``sub-<id>/ses-<n>/beh/sub-<id>_ses-<n>_task-<name>_beh.tsv`` with its ``_beh.json``.

The format (file names, columns, sidecar format and version) and the rules for damaged
files are those of :mod:`analysis.session_files`, the one reader that the analysis
uses too. The session files are never overwritten: a stem that exists gets a suffix.
The BIDS copy is derived data, regenerated from the CSV: a resumed session replaces its
own copy, and a copy of another session gets ``_run-2`` ... :func:`open_for_resume`
repairs an interrupted session: a half-written last line of the CSV or the centres file
is dropped (and reported), as is a centres record whose CSV row never got written, so
that appending continues with the first incomplete trial; any other damage is refused.
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

from analysis.diagnostic import to_jsonable
from analysis.session_files import (COLUMNS, SCANNER_COLUMNS, SUFFIXES, SessionFileError,
                                    read_session, read_sidecar, session_paths, stem_of)

__all__ = ["SCANNER_COLUMNS", "TRIGGER_COLUMNS", "validate_participant", "validate_name",
           "date_string", "unique_stem", "session_columns", "triggers_path",
           "SessionFiles", "TriggerLog", "write_sidecar", "ResumeState",
           "open_for_resume", "export_bids", "bids_label", "events_paths",
           "events_files_of_others", "export_events", "EVENT_COLUMNS"]

#: Columns of a scanner session's CSV: the session's columns, then the run (1, 2, ...),
#: the planned onset (s from the run's first counted trigger; ``onset`` is the actual
#: one) and the stimulus's measured duration on screen (s).
#: Columns of the triggers file ``<stem>_triggers.tsv``: run, trigger (1, 2, ... in the
#: run, dummies included), volume (0 for the first counted trigger, n/a for a dummy),
#: time (s from the run's first counted trigger; dummies negative) and clock (s on the
#: session's clock).
TRIGGER_COLUMNS = ("run", "trigger", "volume", "time", "clock")

#: A participant id is a BIDS label: ASCII letters and digits only, so that it is
#: both a safe file name part and the ``sub-<id>`` of the BIDS copy unchanged (an id
#: with '_', '-' or '.' would be stripped there, and 'P_01' and 'P01' would share
#: ``sub-P01``).
_SAFE_ID = re.compile(r"^[A-Za-z0-9]+$")
#: A name that becomes part of a file name (expName): letters, digits, '_' and '-',
#: starting with a letter or digit; no path separators, dots or spaces.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


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


def validate_name(value, *, name="expName"):
    """Return ``value`` if it can be part of a file name, else raise ValueError.

    Used for ``expName``, which names the session files
    (``<participant>_<expName>_<date>.csv``) and, without its '_' and '-', the BIDS
    task label: letters, digits, '_' and '-', starting with a letter or digit, so that
    no name can reach outside the data folder (``../x``) or into a subfolder (``a/b``).
    """
    if not isinstance(value, str) or not _SAFE_NAME.match(value):
        raise ValueError(f"{name} must be letters, digits, '_' and '-' only, starting "
                         f"with a letter or digit (it names the session files and the "
                         f"BIDS task), got {value!r}")
    return value


def date_string(now=None):
    """PsychoPy's date format, ``2026-11-26_06h32.34.123``."""
    now = now or datetime.now()
    return now.strftime("%Y-%m-%d_%Hh%M.%S.%f")[:-3]


def unique_stem(data_dir, participant, exp_name, date):
    """``data_dir/<participant>_<exp_name>_<date>``, with ``_2``, ``_3`` ... appended
    if any session file of that stem exists already."""
    base = Path(data_dir) / f"{participant}_{exp_name}_{date}"
    stem, k = base, 1
    while any(Path(f"{stem}{s}").exists() for s in (*SUFFIXES.values(), "_triggers.tsv")):
        k += 1
        stem = Path(f"{base}_{k}")
    return stem


def session_columns(cfg):
    """The CSV columns of a session with configuration ``cfg``: :data:`SCANNER_COLUMNS`
    in the scanner mode, else the behavioural ``COLUMNS``."""
    scanner = (cfg or {}).get("scanner") if isinstance(cfg, dict) else None
    return SCANNER_COLUMNS if isinstance(scanner, dict) and scanner.get("enabled") \
        else COLUMNS


def triggers_path(stem):
    """``<stem>_triggers.tsv``: the scanner triggers of every run, beside the CSV."""
    return Path(f"{stem_of(stem)}_triggers.tsv")


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


def write_sidecar(path, meta):
    """Write a sidecar atomically: a temporary file, fsynced, renamed over the old one."""
    tmp = Path(f"{path}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(to_jsonable(meta), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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

    def __init__(self, stem, *, resume=False, columns=COLUMNS):
        self.stem = Path(stem)
        self.columns = tuple(columns)
        paths = session_paths(self.stem)
        self.csv_path = paths["csv"]
        self.centers_path = paths["centers"]
        self.sidecar_path = paths["sidecar"]
        self.log_path = paths["log"]
        self.stem.parent.mkdir(parents=True, exist_ok=True)
        mode = "a" if resume else "x"
        self._csv = open(self.csv_path, mode, newline="", encoding="utf-8")
        self._centers = open(self.centers_path, mode, encoding="utf-8")
        if not resume:
            self._write_csv_line(self.columns)

    def _write_csv_line(self, values):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        _fsync_write(self._csv, buf.getvalue())

    def write_sidecar(self, meta):
        """Write the sidecar (atomically, :func:`write_sidecar`)."""
        write_sidecar(self.sidecar_path, meta)

    def write_trial(self, row, centers):
        """Append one trial: its centres record first, then its CSV row (both fsynced).

        Parameters
        ----------
        row : dict
            Values for the file's columns (missing ones are written empty).
        centers : dict
            ``{"trial", "mask_seed", "mask_index", "centers"}`` with ``centers`` a list
            (one per band) of lists of ``[row, col]``.
        """
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"row has unknown columns {sorted(unknown)}; allowed: "
                             f"{list(self.columns)}")
        _fsync_write(self._centers, json.dumps(centers, separators=(",", ":")) + "\n")
        self._write_csv_line([_format(row.get(c)) for c in self.columns])

    def close(self):
        """Close both files; an error closing one (a full disk) is raised after the
        other was closed too."""
        errors = []
        for f in (self._csv, self._centers):
            if not f.closed:
                try:
                    f.close()
                except OSError as err:
                    errors.append(err)
        if errors:
            raise errors[0]


class TriggerLog:
    """Append-only writer of ``<stem>_triggers.tsv`` (columns :data:`TRIGGER_COLUMNS`).

    :meth:`add` only buffers a trigger (it may arrive a few milliseconds before a
    stimulus onset); :meth:`flush` appends what is buffered and fsyncs, at moments the
    session chooses (after a trial's row, in long fixation periods, at a run's end).
    """

    def __init__(self, path, *, resume=False):
        self.path = Path(path)
        exists = self.path.exists()
        self._f = open(self.path, "a" if resume else "x", encoding="utf-8")
        self._pending = []
        if not (resume and exists):
            _fsync_write(self._f, "\t".join(TRIGGER_COLUMNS) + "\n")

    @property
    def pending(self):
        """Number of triggers buffered and not yet written."""
        return len(self._pending)

    def add(self, run, trigger, volume, time, clock):
        """Buffer one trigger (``volume`` None for a dummy; times in seconds)."""
        self._pending.append("\t".join([
            str(run), str(trigger), "n/a" if volume is None else str(volume),
            f"{time:.6f}", f"{clock:.6f}"]) + "\n")

    def flush(self):
        """Append the buffered triggers and fsync."""
        if self._pending:
            text, self._pending = "".join(self._pending), []
            _fsync_write(self._f, text)

    def close(self):
        try:
            self.flush()
        finally:
            if not self._f.closed:
                self._f.close()


def _torn_tail(path):
    """(path, bytes to keep) when ``path`` ends in a half-written line, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return None
    return path, data.rfind(b"\n") + 1


# -- resume --------------------------------------------------------------------------
@dataclass
class ResumeState:
    """What an interrupted session left behind, and how to repair it.

    :func:`open_for_resume` only reads: ``cuts`` lists the files whose damaged tail
    (a half-written last line, or a centres record whose CSV row never got written)
    must be cut off before appending, and :meth:`repair` does it, after backing each
    file up. A session calls :meth:`repair` only once every check that can refuse the
    resume has passed, and after it recorded in the sidecar which backups it is about
    to make (:meth:`planned_backups`), so that a resume killed half-way leaves no
    backup unaccounted for.
    """

    stem: Path
    meta: dict
    rows: list
    centers: list
    dropped: list = field(default_factory=list)
    cuts: list = field(default_factory=list)      # (path, size to keep)
    backups: list = field(default_factory=list)   # filled by repair()

    def planned_backups(self):
        """The backups :meth:`repair` will make (one per file it cuts)."""
        return [_backup_name(path) for path, size in self.cuts
                if Path(path).stat().st_size != size]

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


def _backup_name(path):
    """``<path>.bak``, or ``.bak-2``, ``.bak-3`` ... when taken."""
    dest, k = Path(f"{path}.bak"), 1
    while dest.exists():
        k += 1
        dest = Path(f"{path}.bak-{k}")
    return dest


def _backup(path):
    """Copy ``path`` to its next free backup name, fsynced; return that name."""
    dest = _backup_name(path)
    with open(path, "rb") as src, open(dest, "xb") as out:
        shutil.copyfileobj(src, out)
        out.flush()
        os.fsync(out.fileno())
    return dest


def _truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())


def open_for_resume(path, *, repair=True):
    """Read an interrupted session and check that it can be appended to.

    The files are read by :func:`analysis.session_files.read_session` with the exact
    header the session writes, so its rules apply: only damage a crash can leave is
    repaired (a half-written or unparsable *last* line of the CSV or of the centres
    file, a centres record whose CSV row never got written); damage anywhere else, or
    a complete row whose ``trial``, ``block``, ``correct``, ``n_bubbles``,
    ``quest_intensity`` (main block), ``mask_index`` or ``mask_seed`` (the sidecar's)
    is not what the session writes, raises, naming the file, the line and the column,
    and changes nothing (the resume replays those rows into QUEST). Every file that is
    cut is first copied to ``<file>.bak`` (``.bak-2`` ... when that exists).

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
    for kind in ("csv", "centers", "sidecar"):
        if not paths[kind].is_file():
            raise FileNotFoundError(f"cannot resume {str(stem)!r}: "
                                    f"{str(paths[kind])!r} is missing")
    try:
        columns = session_columns(read_sidecar(paths["sidecar"]).get("config"))
        found = read_session(stem, columns=columns, centers=True)
    except SessionFileError as err:
        raise ValueError(f"cannot resume: {err}; only a half-written last line can be "
                         f"repaired, so nothing was changed (repair or remove that line "
                         f"by hand)") from None
    except ValueError as err:
        raise ValueError(f"cannot resume: {err}") from None
    if (found.sidecar.get("seeds") or {}).get("mask_seed") is None:
        raise ValueError(f"cannot resume: the sidecar {str(paths['sidecar'])!r} lacks "
                         f"seeds.mask_seed")
    cuts = [(paths[kind], found.sizes[kind]) for kind in ("csv", "centers")
            if found.sizes[kind] != paths[kind].stat().st_size]
    torn = _torn_tail(triggers_path(stem))     # a scanner session's triggers file
    if torn is not None:
        found.dropped.append(f"dropped half-written last line of {torn[0].name}")
        cuts.append(torn)
    state = ResumeState(stem=stem, meta=found.sidecar, rows=found.rows,
                        centers=found.centers, dropped=found.dropped, cuts=cuts)
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
    "onset": "Stimulus onset from the start of this run (scanner mode: from the run's "
             "first counted trigger)",
    "run": "Scanner run (1, 2, ...)",
    "planned_onset": "Onset the schedule planned, from the run's first counted trigger",
    "duration": "Time the stimulus was on screen (onset flip to offset flip)",
}
_UNITS = {"rt": "s", "onset": "s", "frameRate": "Hz", "frames_shown": "frames",
          "dropped_frames": "frames", "planned_onset": "s", "duration": "s"}


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
    task, ses = _bids_label(validate_name(exp_name, name="exp_name")), f"ses-{session}"
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


# -- BIDS events of scanner runs ---------------------------------------------------------
#: Columns of a scanner run's ``_events.tsv``, in order (BIDS: ``onset`` and
#: ``duration`` first; ``trial`` is the session CSV's trial number, the key the fMRI
#: analysis joins the events on).
EVENT_COLUMNS = ("onset", "duration", "trial_type", "trial", "stimulus_id", "expression",
                 "response", "correct", "response_time", "n_bubbles", "mask_seed",
                 "mask_index")
_EVENT_INFO = {
    "onset": {"Description": "Stimulus onset (the flip that showed it), from the run's "
                             "first counted scanner trigger (the first trigger after "
                             "the dummy volumes), as in the session CSV's 'onset'",
              "Units": "s"},
    "duration": {"Description": "Time the stimulus was on screen, measured from its "
                                "onset flip to its offset flip", "Units": "s"},
    "trial_type": {"Description": "Kind of event", "Levels": {
        "face": "A face shown through bubbles (one session trial)"}},
    "trial": {"Description": "Trial number in the session CSV (from 0): the row this "
                             "event joins to"},
    "stimulus_id": {"Description": "Identifier of the image in the stimulus set"},
    "expression": {"Description": "Expression shown (the correct answer)"},
    "response": {"Description": "Expression the participant chose; n/a when no answer "
                                "came within the response window"},
    "correct": {"Description": "1 if response equals expression, else 0", "Levels": {
        "0": "wrong or no answer", "1": "correct"}},
    "response_time": {"Description": "Time from stimulus onset to the answer; n/a "
                                     "without one", "Units": "s"},
    "n_bubbles": {"Description": "Bubbles shown on this trial (all bands); fixed in "
                                 "the scanner unless QUEST was asked for"},
    "mask_seed": {"Description": "Seed of the bubble centres (with mask_index and "
                                 "n_bubbles: the trial's mask, regenerable)"},
    "mask_index": {"Description": "Index of the trial's mask in the seeded sequence"},
}


def bids_label(text):
    """``text`` with everything but letters and digits removed (a BIDS label)."""
    return _bids_label(text)


def events_paths(bids_root, participant, exp_name, session, run):
    """(TSV, JSON) paths of a scanner run's events:
    ``bids_root/sub-<id>/ses-<n>/func/sub-<id>_ses-<n>_task-<task>_run-<r>_events``."""
    sub = validate_participant(participant)
    task = _bids_label(validate_name(exp_name, name="exp_name"))
    folder = Path(bids_root) / f"sub-{sub}" / f"ses-{int(session)}" / "func"
    name = f"sub-{sub}_ses-{int(session)}_task-{task}_run-{int(run)}_events"
    return folder / f"{name}.tsv", folder / f"{name}.json"


def events_files_of_others(bids_root, participant, exp_name, session, source):
    """Events files of this participant, session and task not made from ``source``
    (the session CSV's name): a new scanner session must not meet any."""
    tsv, _ = events_paths(bids_root, participant, exp_name, session, 1)
    prefix = tsv.name[: -len("1_events.tsv")]
    if not tsv.parent.is_dir():
        return []
    found = []
    for path in sorted(tsv.parent.glob(f"{prefix}*_events.*")):
        js = path.with_suffix(".json")
        if _bids_source(js) != source:
            found.append(path)
    return found


def _create(path, text):
    """Write a new file ``path`` (fsynced); never replaces one (FileExistsError)."""
    tmp = Path(f"{path}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def export_events(rows, bids_root, participant, exp_name, *, session, run, source,
                  info=None):
    """Write one scanner run's BIDS ``_events.tsv`` and ``_events.json``.

    Parameters
    ----------
    rows : list of dict
        The run's session CSV rows (as written or as read back).
    source : str
        The session CSV's file name (``Source`` in the JSON).
    info : dict, optional
        Added to the JSON under ``"ScannerRun"`` (TR, dummies, status, late onsets).

    The files are created, never replaced: a file that exists already and was made
    from ``source`` (written at Escape, met again on resume) is kept as it is; one made
    from another session raises FileExistsError.

    Returns
    -------
    (Path, Path)
    """
    tsv, js = events_paths(bids_root, participant, exp_name, session, run)
    tsv.parent.mkdir(parents=True, exist_ok=True)
    if (tsv.exists() or js.exists()) and _bids_source(js) != source:
        raise FileExistsError(f"{tsv} or its JSON exists already and was not made from "
                              f"{source}; events files are never replaced")

    def cell(row, column):
        value = {"trial_type": "face", "response_time": row.get("rt")}.get(
            column, row.get(column))
        text = _format(value) if not isinstance(value, str) else value
        return text if text != "" else "n/a"

    lines = ["\t".join(EVENT_COLUMNS)]
    lines += ["\t".join(cell(row, c) for c in EVENT_COLUMNS) for row in rows]
    meta = {"Source": source, **{c: dict(_EVENT_INFO[c]) for c in EVENT_COLUMNS}}
    if info:
        meta["ScannerRun"] = to_jsonable(info)
    if not js.exists():
        _create(js, json.dumps(meta, indent=2) + "\n")
    if not tsv.exists():
        _create(tsv, "\n".join(lines) + "\n")
    return tsv, js
