"""What every ``bubbles`` subcommand shares: parsing, exit statuses, messages, outputs.

Exit statuses: 0 done; 1 a data or setup error (a file missing, damaged or in the way,
a value the data cannot take); 2 a usage error (argparse: an unknown or malformed
option). Errors and warnings go to stderr as ``bubbles NAME: error: ...`` and
``bubbles NAME: warning: ...``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path

__all__ = ["DataError", "run_command", "prepare_out", "warn", "integer", "number",
           "bids_label"]

DATA_ERRORS = (ValueError, TypeError, OSError, KeyError)


class DataError(Exception):
    """A problem with the data or the files (exit status 1), raised by a command."""


def warn(name, message):
    print(f"bubbles {name}: warning: {message}", file=sys.stderr)


def run_command(name, parser, handler, argv, *, usage_check=None):
    """Parse ``argv`` with ``parser``, run ``handler(args)``, return the exit status.

    argparse's own exit (a usage error, --help) becomes its status; ``usage_check(args)``
    may return a message for a usage error that argparse cannot see (exit 2). Data
    errors (ValueError, TypeError, OSError, KeyError, :class:`DataError`) print one line
    and exit 1. UserWarnings raised while the handler runs are printed as ``warning:``
    lines after it. ``handler`` returns the status (None is 0).
    """
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:           # argparse printed the message (or --help)
        return int(exc.code or 0)
    problem = usage_check(args) if usage_check else None
    if problem:
        parser.print_usage(sys.stderr)
        print(f"bubbles {name}: error: {problem}", file=sys.stderr)
        return 2
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            status = handler(args)
    except (DataError, *DATA_ERRORS) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"bubbles {name}: error: {message}", file=sys.stderr)
        return 1
    finally:
        seen = set()
        for w in caught:
            text = str(w.message)
            if issubclass(w.category, UserWarning) and text not in seen:
                seen.add(text)
                warn(name, text)
    return int(status or 0)


def prepare_out(out, names=(), *, force=False, option="--out", create=True):
    """Check (and create) the output folder; returns it as a Path.

    Refuses (DataError, exit 1) an ``out`` that is a file, lies under a file or cannot
    be written, and any of ``names`` already in it unless ``force``: nothing recorded is
    replaced by accident. Commands call it with ``create=False`` before any work (so a
    refused run leaves nothing behind) and again when they write.
    """
    if str(out) == "":
        raise DataError(f"{option} must name a folder, got ''")
    out = Path(out)
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            raise DataError(f"{option} {out} cannot be a folder: {parent} is a file")
        if parent.exists():
            break
    if not force:
        for n in names:
            if (out / n).exists():
                raise DataError(f"{out / n} exists; use --force to replace it")
    if not create:
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{option} {out}: cannot create the folder ({exc.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise DataError(f"{option} {out}: the folder is not writable")
    return out


# -- option types: a malformed value is a usage error (exit 2), named by argparse ------
def integer(minimum):
    """argparse type: an integer >= ``minimum``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value
    return parse


def number(low=0.0, high=math.inf, *, low_open=True, what="number"):
    """argparse type: a finite number in ``(low, high]`` (``[low, high]`` when
    ``low_open`` is False), e.g. ``number()`` for a positive number,
    ``number(0, 1, low_open=False, what="grey level")`` for a grey level."""
    left = "(" if low_open else "["
    bounds = ("" if low == -math.inf and high == math.inf else
              f" > {low:g}" if high == math.inf and low_open else
              f" >= {low:g}" if high == math.inf else f" in {left}{low:g}, {high:g}]")

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and value <= high and (
            value > low if low_open else value >= low)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be a finite {what}{bounds}, got {text!r}")
        return value
    return parse


def bids_label(text):
    """argparse type: a BIDS label (letters and digits), as it becomes part of file names."""
    if not (text.isascii() and text.isalnum()):
        raise argparse.ArgumentTypeError(f"must be a BIDS label (letters and digits only), "
                                         f"got {text!r}")
    return text
