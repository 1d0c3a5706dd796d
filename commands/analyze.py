"""``bubbles analyze``: a session (or an existing classification image) to z maps,
statistics and a figure.

::

    bubbles analyze SESSION.csv --out DIR [--method regression] [--response correct]
    bubbles analyze --ci FILE --search-region FILE --sigma 20 --out DIR

Writes ``DIR/ci.npz`` (array ``z``) with ``DIR/ci.json`` beside it (together a
:class:`analysis.DiagnosticImage`, ``DiagnosticImage.load(DIR / "ci")``, whose ``info``
records the session, block, response column, method and null, so that ``bubbles
compare`` recomputes the map from the same trials), ``DIR/summary.json`` (method, trial
count, spec, thresholds, clusters) and ``DIR/ci.png``. Existing files are never
replaced without ``--force``. The work is :func:`analysis.analyze.analyze_session` and
:func:`analysis.analyze.image_tests`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from analysis.analyze import analyze_session, image_tests
from analysis.ci import METHODS, NULLS
from analysis.diagnostic import DiagnosticImage, to_jsonable
from analysis.estimators import ESTIMATORS
from analysis.figures import save_diagnostic_png
from analysis.io import read_background, read_ci, read_search_region, zscore_outside
from analysis.stats import CLUSTER_THRESHOLD_RANGE
from analysis.trials import TrialTable

from .common import prepare_out, run_command, warn

__all__ = ["analyze", "build_parser"]

OUTPUTS = ("ci.npz", "ci.json", "summary.json", "ci.png")


def build_parser():
    p = argparse.ArgumentParser(
        prog="bubbles analyze",
        description="Classification image and Stat4Ci statistics of a bubbles session, "
                    "or tests of an existing classification image.")
    p.add_argument("session", nargs="?", help="session CSV (<stem>.csv) written by "
                   "'bubbles run'; its <stem>.json sidecar must sit beside it")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", default="regression", choices=METHODS + ESTIMATORS,
                   help="regression (default), proportion, median_split, or the estimators "
                        "glm / sparse (fewer trials; permutation inference)")
    p.add_argument("--resolution", type=int, default=None,
                   help="glm / sparse: cells on the long side of the coarse grid (32)")
    p.add_argument("--penalties", type=float, nargs="+", default=None,
                   help="glm / sparse: the penalty grid for cross-validation")
    p.add_argument("--response", default="correct",
                   help="response column: correct, rt or any numeric column "
                        "(default: correct)")
    p.add_argument("--null", default="analytic", choices=NULLS)
    p.add_argument("--n-permutations", type=int, default=None,
                   help="permutations of the null (default 1000; 200 for glm / sparse)")
    p.add_argument("--seed", type=int, default=0, help="seed of the permutations")
    p.add_argument("--block", default=None,
                   help="analyse only the rows whose 'block' column equals this")
    p.add_argument("--drop-missing", action="store_true",
                   help="drop trials whose response is missing instead of failing")
    p.add_argument("--ci", default=None, help="existing classification image to test "
                   "(.npy, .npz with 'z', Stat4Ci packed-RGB TIFF or a grey image)")
    p.add_argument("--search-region", default=None,
                   help="search region image (255 inside) or .npy boolean array")
    p.add_argument("--sigma", type=float, default=None,
                   help="smoothness of the map in pixels, the bubble sigma (required "
                        "with --ci; default for a session: the spec's sigma per band)")
    p.add_argument("--zscore", default="auto", choices=["auto", "outside", "none"],
                   help="with --ci: z-score with the pixels outside the search region "
                        "(Stat4Ci demo; 'auto' does so except for .npy/.npz input)")
    p.add_argument("--background", default=None,
                   help="image drawn under the map in ci.png (e.g. the mean stimulus)")
    p.add_argument("--p", type=float, default=0.05, help="family-wise error rate")
    p.add_argument("--cluster-threshold", type=float, default=2.7,
                   help="cluster-forming z threshold t_C (default 2.7)")
    p.add_argument("--tail", default="upper", choices=["upper", "lower", "both"])
    p.add_argument("--force", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no report")
    return p


def _usage(args):
    """Usage errors argparse cannot see (exit 2)."""
    if (args.session is None) == (args.ci is None):
        return "give either a SESSION.csv or --ci FILE (not both)"
    if args.session is not None and Path(args.session).suffix.lower() == ".json":
        return (f"{args.session} is a session's sidecar: give the session CSV beside it "
                f"({Path(args.session).with_suffix('.csv').name})")
    if args.ci is not None and args.sigma is None:
        return "--sigma is required with --ci (the bubble sigma in pixels)"
    if args.sigma is not None and not (np.isfinite(args.sigma) and args.sigma > 0):
        return f"--sigma must be > 0 pixels, got {args.sigma:g}"
    if not 0 < args.p < 1:
        return f"--p must lie in (0, 1), got {args.p:g}"
    lo, hi = CLUSTER_THRESHOLD_RANGE
    if not lo < args.cluster_threshold <= hi:
        return (f"--cluster-threshold must be a z value in ({lo:g}, {hi:g}] (2.7 in the "
                f"Stat4Ci demo, >= 2.5 recommended), got {args.cluster_threshold:g}")
    if args.n_permutations is None:
        args.n_permutations = 200 if args.method in ESTIMATORS else 1000
    if args.null == "permutation" and args.n_permutations < 2:
        return f"--n-permutations must be >= 2 with --null permutation, got {args.n_permutations}"
    if args.method not in ESTIMATORS and (args.resolution is not None
                                          or args.penalties is not None):
        return "--resolution and --penalties go with --method glm or sparse"
    return None


def _run_ci(args):
    """--ci: the tests of an existing classification image."""
    ci = read_ci(args.ci)
    if ci.ndim != 2:
        raise ValueError(f"--ci must hold one 2-D image, got shape {ci.shape}")
    region = (read_search_region(args.search_region, ci.shape) if args.search_region
              else np.ones(ci.shape, bool))
    mode = args.zscore
    if mode == "auto":
        mode = "none" if Path(args.ci).suffix.lower() in (".npy", ".npz") else "outside"
    if mode == "outside" and args.search_region is None:
        raise ValueError("--zscore outside needs --search-region")
    z = zscore_outside(ci, region) if mode == "outside" else ci
    image = DiagnosticImage(z=z, method="external", spec=None, n_trials=0,
                            info={"source": str(Path(args.ci).resolve()), "zscore": mode,
                                  "sigma": args.sigma})
    tests = image_tests(image, sigmas=[args.sigma], p=args.p,
                        cluster_threshold=args.cluster_threshold, tail=args.tail,
                        search_region=region)
    summary = {"source": str(args.ci), "search_region": args.search_region,
               "zscore": mode, "n_pixels_region": int(region.sum()),
               "sigma": args.sigma, "pixel_test": tests.pixel[0].to_dict(),
               "cluster_test": tests.cluster[0].to_dict(), "warnings": tests.notes}
    bg = read_background(args.background, ci.shape) if args.background else None
    return image, tests, summary, bg, Path(args.ci).name


def _run_session(args):
    table = TrialTable.read(args.session)
    region = (read_search_region(args.search_region, table.spec.shape)
              if args.search_region else None)
    res = analyze_session(table, response=args.response, method=args.method,
                          null=args.null, n_permutations=args.n_permutations,
                          seed=args.seed, block=args.block,
                          drop_missing=args.drop_missing, sigma=args.sigma, p=args.p,
                          cluster_threshold=args.cluster_threshold, tail=args.tail,
                          search_region=region, resolution=args.resolution,
                          penalties=args.penalties, progress=not args.quiet)
    bg = (read_background(args.background, table.spec.shape) if args.background
          else res.table.mean_stimulus())
    title = f"{Path(args.session).stem}: {args.method}, {res.image.n_trials} trials"
    return res.image, res.tests, res.summary, bg, title


def _analyze(args):
    prepare_out(args.out, OUTPUTS, force=args.force, create=False)
    image, tests, summary, bg, title = _run_ci(args) if args.ci else _run_session(args)
    out = prepare_out(args.out, OUTPUTS, force=args.force)
    image.save(out / "ci", overwrite=True)          # ci.npz (array 'z') + ci.json
    (out / "summary.json").write_text(json.dumps(to_jsonable(summary), indent=2))
    save_diagnostic_png(image, out / "ci.png", background=bg, pixel=tests.pixel,
                        cluster=tests.cluster, title=title, overwrite=True)
    if not args.quiet:
        _report(summary, out)
    for note in summary["warnings"]:
        warn("analyze", note)
    return 0


def analyze(argv):
    """Entry point of ``bubbles analyze``; returns the exit status (0 done, 1 a data
    error, 2 a usage error).

    Examples
    --------
    >>> analyze(["--ci", "GenderFG.tiff", "--search-region", "facemask.tiff",
    ...          "--sigma", "20", "--out", "results/gender"])      # doctest: +SKIP
    0
    """
    return run_command("analyze", build_parser(), _analyze, argv, usage_check=_usage)


def _report(summary, out):
    parts = summary.get("bands", [summary])
    for s in parts:
        pix, clu = s["pixel_test"], s["cluster_test"]
        label = (f"band {s['band'] + 1} (sigma {s['sigma']:g} px): "
                 if len(parts) > 1 else "")
        if clu is None:                     # glm / sparse: the permutation threshold
            print(f"{label}permutation max statistic: threshold z = {pix['threshold']:.3f}, "
                  f"{pix['n_significant']} significant pixels ({pix['n_permutations']} "
                  "permutations)")
            continue
        sig = [c for c in clu["clusters"] if c["significant"]]
        print(f"{label}pixel test: threshold z = {pix['threshold']:.3f}, "
              f"{pix['n_significant']} significant pixels; cluster test: min size "
              f"{clu['min_cluster_size']:.1f} px at t_C {clu['threshold']}, "
              f"{len(sig)} significant cluster(s)")
        for c in sig:
            print(f"  cluster: {c['size']} px, peak z {c['peak_z']:.2f} at {c['peak']}, "
                  f"centroid {c['centroid']}")
    print(f"wrote {out / 'ci.npz'} + {out / 'ci.json'}, {out / 'summary.json'}, "
          f"{out / 'ci.png'}")
