"""``bubbles report DIR [--out FILE] [--static]``: one self-contained HTML page of a
results folder.

The page (:func:`analysis.report.build_report`) holds a summary at the top (what was
run, trials, accuracy, one sentence per observer), the diagnostic images with their
significant regions, tables of clusters and comparisons, the fMRI maps (nilearn's
interactive viewer of ``peak_z``, or static slices with ``--static``) and the
parameters, seeds and software versions of every figure. Images are embedded: the file
works offline, opened from anywhere. Default output ``DIR/report.html``; an existing
file is kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.report import build_report

from .common import DataError, prepare_out, run_command

__all__ = ["main", "build_parser"]


def build_parser():
    p = argparse.ArgumentParser(
        prog="bubbles report",
        description="One self-contained HTML page (images embedded, works offline) from "
                    "a results folder: summary, diagnostic images, clusters, "
                    "comparisons, fMRI maps, parameters, seeds and versions.")
    p.add_argument("folder", help="results folder (e.g. results/demo), any subset of "
                   "the toolkit's outputs")
    p.add_argument("--out", default=None, help="HTML file to write (default: "
                   "FOLDER/report.html)")
    p.add_argument("--static", action="store_true",
                   help="fMRI maps as static slices instead of nilearn's interactive "
                        "viewer")
    p.add_argument("--title", default=None, help="page title")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p


def _usage(args):
    if args.out is not None and not args.out.lower().endswith((".html", ".htm")):
        return f"--out must name an .html file, got {args.out!r}"
    return None


def _report(args):
    folder = Path(args.folder)
    if not args.folder or not folder.is_dir():
        raise DataError(f"results folder {args.folder!r} does not exist or is not a folder")
    out = Path(args.out) if args.out else folder / "report.html"
    if out.is_dir():
        raise DataError(f"--out {out} is a folder; give the HTML file to write")
    prepare_out(out.parent, [out.name], force=args.force, create=False)
    report = build_report(folder, static=args.static, title=args.title)
    prepare_out(out.parent, [out.name], force=args.force)
    out.write_text(report.html, encoding="utf-8")
    if not args.quiet:
        for sentence in report.summary:
            print(f"  {sentence}")
        print(f"wrote {out} ({len(report.html.encode()) / 1e6:.1f} MB)")
    return 0


def main(argv=None):
    """Entry point of ``bubbles report``; returns the exit status (0 done, 1 a data
    error, 2 a usage error).

    Examples
    --------
    >>> main(["results/demo"])                                  # doctest: +SKIP
    0
    """
    return run_command("report", build_parser(), _report,
                       sys.argv[1:] if argv is None else argv, usage_check=_usage)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
