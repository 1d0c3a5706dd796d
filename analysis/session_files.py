"""A bubbles session's files: their format, and the one reader of them.

``experiments`` writes a session, ``analysis`` reads it; both use this module, so there
is one definition of the format and one set of rules for damaged files. For the stem
``DIR/<participant>_<expName>_<date>`` (docs/interfaces.md):

``<stem>.csv``
    one row per trial, appended and fsynced as each trial ends (columns :data:`COLUMNS`);
``<stem>_centers.jsonl``
    one JSON object per trial, ``{"trial": t, "mask_seed": s, "mask_index": i,
    "centers": [[[row, col], ...] per band]}``, written just *before* the trial's row;
``<stem>.json``
    the sidecar, ``{"format": "bubbles.session", "version": 1, "spec": ..., ...}``;
``<stem>.log``
    the PsychoPy log.

Rules for damage (:func:`read_session`). A crash or ``kill -9`` can only leave a
half-written last line, or the centres record of a trial whose CSV row never got
written: those are dropped, and the messages saying so are returned. Anything else is
refused with an error that names the file, the line and, for a CSV row, the column:
a line that does not parse, a row whose values are not what the session writes
(:func:`check_row`: trial numbers 0, 1, 2 ... in file order, ``mask_index`` equal to
the trial, ``correct`` 0 or 1, ``n_bubbles`` a whole number >= 1, ...), a centres
record of another trial or mask seed, a centres file with trials missing, or a CSV
that lost trials the centres file recorded (a file cut in the middle).

Examples
--------
>>> session_paths("data/P01_task_2026-11-26_10h00.00.000.csv")["centers"].name
'P01_task_2026-11-26_10h00.00.000_centers.jsonl'
>>> check_row({"trial": "3", "correct": "2"}, 3)
"column 'correct' is '2', expected 0 or 1"
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SESSION_FORMAT", "SESSION_VERSION", "COLUMNS", "MASK_COLUMNS",
           "SessionFileError", "session_paths", "stem_of", "read_sidecar",
           "sidecar_mask_seed", "check_row", "SessionRead", "read_session"]

SESSION_FORMAT = "bubbles.session"
SESSION_VERSION = 1
#: CSV columns, in the order the session writes them.
COLUMNS = ("participant", "session", "trial", "block", "stimulus_id", "identity",
           "expression", "key", "response", "correct", "rt", "n_bubbles",
           "quest_intensity", "quest_mean", "quest_sd", "mask_seed", "mask_index",
           "frames_shown", "dropped_frames", "onset", "psychopyVersion", "frameRate",
           "expName", "date")
#: A scanner session's CSV (``bubbles run --scanner``): the run, the onset planned from
#: the run's first trigger, and the stimulus duration, after the behavioural columns.
SCANNER_COLUMNS = COLUMNS + ("run", "planned_onset", "duration")
#: The columns every session CSV needs: a trial's mask is
#: ``sample_centers(spec.replace(n_bubbles=n_bubbles), mask_seed, [mask_index])``.
MASK_COLUMNS = ("trial", "n_bubbles", "mask_seed", "mask_index")
#: File name endings of a session's files, by kind.
SUFFIXES = {"csv": ".csv", "sidecar": ".json", "centers": "_centers.jsonl", "log": ".log"}
BLOCKS = ("practice", "main")
_WHOLE = re.compile(r"^[0-9]+$")


class SessionFileError(ValueError):
    """A session file is damaged where a crash cannot have damaged it.

    Attributes ``path``, ``line`` (1-based) and ``problem`` say where and what; the
    message is ``'<path>' line <line> <problem>``.
    """

    def __init__(self, path, line, problem):
        self.path, self.line, self.problem = Path(path), line, problem
        super().__init__(f"{str(path)!r} line {line} {problem}")


def stem_of(path):
    """The session stem from any of its files (``.csv``, ``.json``,
    ``_centers.jsonl``, ``.log``) or from the stem itself."""
    text = str(path)
    for suffix in sorted(SUFFIXES.values(), key=len, reverse=True):
        if text.endswith(suffix):
            return Path(text[: -len(suffix)])
    return Path(text)


def session_paths(path):
    """The session's files from any of them (or its stem): dict with 'csv', 'sidecar',
    'centers' and 'log'."""
    stem = stem_of(path)
    return {kind: Path(f"{stem}{suffix}") for kind, suffix in SUFFIXES.items()}


def read_sidecar(path):
    """The sidecar as a dict, after checking that it is a bubbles session sidecar of a
    version this toolkit reads.

    Raises
    ------
    FileNotFoundError
        No sidecar.
    ValueError
        Not JSON, not a session sidecar, or another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"session sidecar {str(path)!r} does not exist (it holds "
                                f"the BubbleSpec and the seeds of the session)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"session sidecar {str(path)!r} is not valid JSON ({err})") \
            from None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt != SESSION_FORMAT:
        raise ValueError(f"{str(path)!r} is not a bubbles session sidecar: it must have "
                         f"format {SESSION_FORMAT!r}, got {fmt!r}")
    if meta.get("version") != SESSION_VERSION:
        raise ValueError(f"{str(path)!r} has session format version "
                         f"{meta.get('version')!r}; this toolkit reads version "
                         f"{SESSION_VERSION}")
    return meta


def sidecar_mask_seed(meta, path="the sidecar"):
    """The sidecar's ``seeds.mask_seed`` as an int, None if it records no seeds.

    Raises ValueError for a seed that is there but is not a whole number >= 0.
    """
    seeds = meta.get("seeds")
    if seeds is None:
        return None
    value = seeds.get("mask_seed") if isinstance(seeds, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{str(path)!r}: seeds.mask_seed must be a whole number >= 0, "
                         f"got {value!r}")
    return value


def _whole(text, least=0):
    """``text`` as an int if it is a whole number >= least written as digits, else None."""
    if not _WHOLE.match(text):
        return None
    value = int(text)
    return value if value >= least else None


def check_row(row, trial, *, mask_seed=None):
    """What is wrong with one CSV row, or None.

    Parameters
    ----------
    row : dict
        Column -> text, as read; only the columns present are checked.
    trial : int
        The row's position among the trials (0 for the first row): its ``trial`` and
        ``mask_index`` must equal it.
    mask_seed : int, optional
        The session's mask seed (the sidecar's ``seeds.mask_seed``).

    Returns
    -------
    str or None
        ``"column 'NAME' is 'VALUE', expected ..."``.
    """
    def bad(column, expected):
        return f"column {column!r} is {row[column]!r}, expected {expected}"

    if "trial" in row and _whole(row["trial"]) != trial:
        return bad("trial", f"{trial} (trials are numbered 0, 1, 2 ... in file order: a "
                            f"row is missing, repeated or out of order)")
    if "block" in row and row["block"] not in BLOCKS:
        return bad("block", "'practice' or 'main'")
    if "correct" in row and row["correct"] not in ("0", "1"):
        return bad("correct", "0 or 1")
    if "n_bubbles" in row and _whole(row["n_bubbles"], 1) is None:
        return bad("n_bubbles", "a whole number >= 1 (the bubbles shown)")
    if row.get("block") == "main" and "quest_intensity" in row:
        try:
            ok = math.isfinite(float(row["quest_intensity"]))
        except ValueError:
            ok = False
        if not ok:
            return bad("quest_intensity", "a finite number (log10 of the bubbles shown) "
                                          "in a main-block row")
    if "mask_index" in row and _whole(row["mask_index"]) != trial:
        return bad("mask_index", f"{trial} (the trial number)")
    if "mask_seed" in row:
        seed = _whole(row["mask_seed"])
        if seed is None:
            return bad("mask_seed", "a whole number >= 0 (the session's mask seed)")
        if mask_seed is not None and seed != mask_seed:
            return bad("mask_seed", f"{mask_seed} (the sidecar's seeds.mask_seed)")
    return None


@dataclass
class SessionRead:
    """What :func:`read_session` found.

    Attributes
    ----------
    paths : dict
        :func:`session_paths` of the session.
    sidecar : dict
    header : list of str
        The CSV's columns.
    rows : list of dict
        The complete, checked CSV rows (column -> text).
    centers : list of dict or None
        One centres record per row (None when the centres file was not read).
    sizes : dict
        ``{'csv': bytes, 'centers': bytes}`` taken by the header and the complete trials;
        a file longer than that has a damaged tail that a resume cuts off.
    dropped : list of str
        What was dropped, one message each (half-written last lines, the centres of a
        trial whose row was never written).
    """

    paths: dict
    sidecar: dict
    header: list
    rows: list
    centers: list | None
    sizes: dict = field(default_factory=dict)
    dropped: list = field(default_factory=list)


def _lines(path, dropped):
    """(complete lines as bytes, each ending in a newline; whether a tail without its
    newline was dropped, which is reported in ``dropped``)."""
    data = Path(path).read_bytes()
    cut = data.rfind(b"\n") + 1
    tail = data[cut:]
    if tail:
        dropped.append(f"dropped half-written last line of {Path(path).name}: "
                       f"{tail.decode('utf-8', errors='replace')!r}")
    return [line + b"\n" for line in data[:cut].split(b"\n")[:-1]], bool(tail)


def _parse_csv_line(raw):
    try:
        return next(csv.reader([raw.decode("utf-8")])), None
    except (UnicodeDecodeError, csv.Error, StopIteration) as err:
        return None, f"cannot be parsed ({err or 'an empty line'})"


def _read_csv(path, dropped, *, columns, required, mask_seed):
    lines, torn = _lines(path, dropped)
    if not lines:
        raise SessionFileError(path, 1, "is missing: the file has no header line")
    header, problem = _parse_csv_line(lines[0])
    if problem:
        raise SessionFileError(path, 1, f"(the header) {problem}")
    if columns is not None and header != list(columns):
        raise SessionFileError(path, 1, f"is not the header {','.join(columns)}")
    missing = [c for c in required if c not in header]
    if missing:
        raise SessionFileError(path, 1, f"(the header) lacks the column(s) {missing}, "
                                        f"needed to rebuild the masks")
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise SessionFileError(path, 1, f"(the header) names the column(s) {twice} more "
                                        f"than once")
    rows, size, last = [], len(lines[0]), len(lines) - 1
    for i, raw in enumerate(lines[1:], start=1):
        values, problem = _parse_csv_line(raw)
        if problem is None and len(values) != len(header):
            problem = f"has {len(values)} fields instead of {len(header)}"
        if problem is not None:
            if i == last and not torn:           # a torn last line: drop it
                dropped.append(f"dropped malformed last line of {Path(path).name} "
                               f"(line {i + 1}, {problem}): "
                               f"{raw.decode('utf-8', errors='replace')!r}")
                break
            raise SessionFileError(path, i + 1, problem)
        row = dict(zip(header, values))
        problem = check_row(row, len(rows), mask_seed=mask_seed)   # a complete row
        if problem is not None:
            raise SessionFileError(path, i + 1, problem)
        rows.append(row)
        size += len(raw)
    return header, rows, size


def _read_centers(path, rows, dropped, csv_path):
    n_rows = len(rows)
    lines, torn = _lines(path, dropped)
    records, size, last = [], 0, len(lines) - 1
    for i, raw in enumerate(lines):
        try:
            rec = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            problem = f"is not valid JSON ({err})"
            if i == last and not torn and len(records) >= n_rows:
                dropped.append(f"dropped malformed last line of {Path(path).name} "
                               f"(line {i + 1}, {problem})")
                break
            if i == last and not torn:
                problem += (f", and the CSV has the row of its trial {len(records)}, so "
                            f"it cannot be dropped")
            raise SessionFileError(path, i + 1, problem) from None
        if not isinstance(rec, dict) or rec.get("trial") != len(records):
            got = rec.get("trial") if isinstance(rec, dict) else rec
            raise SessionFileError(path, i + 1, f"has trial {got!r} where trial "
                                                f"{len(records)} was expected")
        if len(records) == n_rows:
            if i != last:
                # more than one trial recorded after the CSV's last row: the CSV lost
                # rows a crash cannot lose (it was cut), the centres file is fine
                later = len(lines) - i
                raise SessionFileError(
                    csv_path, n_rows + 2,
                    f"is cut short or missing: the CSV ends after {n_rows} complete "
                    f"trial(s) but {Path(path).name} records {later} more (trials "
                    f"{n_rows} to {n_rows + later - 1}); a crash loses at most the trial "
                    f"being written, so the CSV was cut or damaged")
            # the trial was cut short between its centres and its CSV row
            dropped.append(f"dropped centres of trial {rec.get('trial')} from "
                           f"{Path(path).name}: its CSV row was never written")
            break
        row = rows[len(records)]
        want_seed = int(row["mask_seed"]) if "mask_seed" in row else rec.get("mask_seed")
        want_index = int(row["mask_index"]) if "mask_index" in row else len(records)
        if rec.get("mask_index") != want_index or rec.get("mask_seed") != want_seed:
            raise SessionFileError(path, i + 1, f"has mask_seed {rec.get('mask_seed')!r} "
                                                f"and mask_index {rec.get('mask_index')!r}"
                                                f" where the CSV row of trial "
                                                f"{len(records)} has {want_seed} and "
                                                f"{want_index}")
        records.append(rec)
        size += len(raw)
    if len(records) < n_rows:
        raise SessionFileError(path, len(lines) + 1,
                               f"is missing: {Path(path).name} has the centres of "
                               f"{len(records)} trial(s) but {Path(csv_path).name} has "
                               f"{n_rows} rows; the centres of trial {len(records)} and "
                               f"later are missing")
    return records, size


def read_session(path, *, columns=None, required=MASK_COLUMNS, centers=True):
    """Read a session's sidecar, CSV and centres file by the rules of this module.

    Nothing is changed on disk: a damaged tail is only reported (``dropped``) and
    measured (``sizes``).

    Parameters
    ----------
    path : str or Path
        Any of the session's files, or its stem.
    columns : sequence of str, optional
        The exact header the CSV must have (a resume appends rows in this order);
        None accepts any header holding ``required``.
    required : sequence of str
        Columns the CSV must have.
    centers : bool or None
        True: the centres file must exist and hold one record per row; None: read it
        when it exists; False: do not read it.

    Returns
    -------
    SessionRead

    Raises
    ------
    FileNotFoundError
        The CSV, the sidecar or (``centers=True``) the centres file is missing.
    ValueError
        A sidecar of another format or version; :class:`SessionFileError` (a
        ValueError) for damage a crash cannot leave, naming file, line and column.
    """
    paths = session_paths(path)
    if not paths["csv"].is_file():
        raise FileNotFoundError(f"session file {str(paths['csv'])!r} does not exist")
    sidecar = read_sidecar(paths["sidecar"])
    mask_seed = sidecar_mask_seed(sidecar, paths["sidecar"])
    dropped = []
    header, rows, csv_size = _read_csv(paths["csv"], dropped, columns=columns,
                                       required=required, mask_seed=mask_seed)
    sizes = {"csv": csv_size}
    records = None
    if centers is True and not paths["centers"].is_file():
        raise FileNotFoundError(f"centres file {str(paths['centers'])!r} does not exist")
    if centers is True or (centers is None and paths["centers"].is_file()):
        records, sizes["centers"] = _read_centers(paths["centers"], rows, dropped,
                                                  paths["csv"])
    return SessionRead(paths=paths, sidecar=sidecar, header=header, rows=rows,
                       centers=records, sizes=sizes, dropped=dropped)
