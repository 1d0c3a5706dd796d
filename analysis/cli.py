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
replaced without ``--force``. The ``bubbles`` dispatcher calls :func:`analyze` with the
arguments after ``analyze``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

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
    p.add_argument("--method", default="regression",
                   choices=["regression", "proportion", "median_split"])
    p.add_argument("--response", default="correct",
                   help="response column: correct, rt or any numeric column "
                        "(default: correct)")
    p.add_argument("--null", default="analytic", choices=["analytic", "permutation"])
    p.add_argument("--n-permutations", type=int, default=1000)
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
                   help="bubble sigma in pixels (required with --ci; default for a "
                        "session: the spec's sigma per band)")
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


def _load_region(path, shape):
    from .io import read_search_region
    path = Path(path)
    region = (np.load(path).astype(bool) if path.suffix.lower() == ".npy"
              else read_search_region(path))
    if region.shape != tuple(shape):
        raise ValueError(f"--search-region {path} has shape {region.shape}, the image has "
                         f"{tuple(shape)}")
    return region


def _tests(z, sigma, region, args):
    """Pixel and cluster tests; their RFT validity warnings go to the summary instead."""
    from .stats import cluster_test, pixel_test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pix = pixel_test(z, sigma, args.p, search_region=region, tail=args.tail)
        clu = cluster_test(z, sigma, args.p, threshold=args.cluster_threshold,
                           search_region=region, tail=args.tail)
    return pix, clu


def _notes(pix, clu):
    """The two tests' warnings without repeats."""
    return list(dict.fromkeys(pix.warnings + clu.warnings))


def _run_ci(args, out):
    from .io import read_background, read_ci, zscore_outside
    if args.sigma is None:
        raise ValueError("--sigma is required with --ci (the bubble sigma in pixels)")
    ci = read_ci(args.ci)
    if ci.ndim != 2:
        raise ValueError(f"--ci must hold one 2-D image, got shape {ci.shape}")
    region = (_load_region(args.search_region, ci.shape) if args.search_region
              else np.ones(ci.shape, bool))
    mode = args.zscore
    if mode == "auto":
        mode = "none" if Path(args.ci).suffix.lower() in (".npy", ".npz") else "outside"
    if mode == "outside":
        if args.search_region is None:
            raise ValueError("--zscore outside needs --search-region")
        z = zscore_outside(ci, region)
    else:
        z = ci
    pix, clu = _tests(z, args.sigma, region, args)
    summary = {"source": str(args.ci), "search_region": args.search_region,
               "zscore": mode, "n_pixels_region": int(region.sum()),
               "sigma": args.sigma, "pixel_test": pix.to_dict(),
               "cluster_test": clu.to_dict(), "warnings": _notes(pix, clu)}
    bg = read_background(args.background, ci.shape) if args.background else None
    from .diagnostic import DiagnosticImage
    image = DiagnosticImage(z=z, method="external", spec=None, n_trials=0,
                            info={"source": str(Path(args.ci).resolve()), "zscore": mode,
                                  "sigma": args.sigma})
    _write(out, image, summary, bg, [pix], [clu], title=Path(args.ci).name)
    return summary


def _run_session(args, out):
    from .ci import classification_image
    from .io import read_background
    from .trials import TrialTable
    with warnings.catch_warnings(record=True) as caught:   # kept in summary.json
        warnings.simplefilter("always")
        table = TrialTable.read(args.session)
        blocks = (sorted(table.data["block"].astype(str).unique())
                  if "block" in table.data else [])
        if args.block is not None:
            if "block" not in table.data:
                raise ValueError("--block given but the session has no 'block' column")
            table = table.select((table.data["block"].astype(str) == args.block).to_numpy())
            if len(table) == 0:
                raise ValueError(f"--block {args.block!r} matches no trial; the session's "
                                 f"blocks are {blocks}")
        elif len(blocks) > 1:
            warnings.warn(f"analysing the trials of all blocks {blocks} together; pass "
                          "--block NAME (e.g. --block main) to leave out practice trials")
        if args.drop_missing:
            if args.response not in table.data:
                table.responses(args.response)   # raises the clear error
            table = table.dropna(args.response)
        r = table.responses(args.response)
        spec = table.spec
        ci = classification_image(spec, table.center_list(), r, method=args.method,
                                  null=args.null, n_permutations=args.n_permutations,
                                  seed=args.seed, progress=not args.quiet)
        # what compare needs to recompute this map from the same trials
        ci.info.update(session=str(Path(table.path).resolve()), block=args.block,
                       response=args.response, method=args.method, null=args.null,
                       drop_missing=bool(args.drop_missing))
        bg = (read_background(args.background, spec.shape) if args.background
              else table.mean_stimulus())
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if args.method == "proportion":
        notes.append("method 'proportion' is z-scored across the pixels of the image, not "
                     "against a null: its pixel and cluster tests are descriptive; use "
                     "--method regression for inference")
    region = (_load_region(args.search_region, spec.shape) if args.search_region
              else spec.search_region)
    z = ci.z[None] if not spec.multiscale else ci.z
    sigmas = [args.sigma] * spec.n_bands if args.sigma else list(spec.sigmas)
    pixs, clus = [], []
    for b in range(spec.n_bands):
        pix, clu = _tests(z[b], sigmas[b], region, args)
        pixs.append(pix)
        clus.append(clu)
        label = f"band {b + 1} of {spec.n_bands}: " if spec.multiscale else ""
        notes += [label + note for note in _notes(pix, clu)]
    summary = {"session": str(Path(table.path).resolve()), "method": args.method,
               "response": args.response, "null": args.null, "block": args.block,
               "n_trials": int(ci.n_trials), "spec": spec.to_dict(),
               "accuracy": (float(table.responses("correct").mean())
                            if "correct" in table.data and args.response == "correct"
                            else None),
               "bands": [{"band": b, "sigma": sigmas[b], "pixel_test": pixs[b].to_dict(),
                          "cluster_test": clus[b].to_dict()}
                         for b in range(spec.n_bands)],
               "info": ci.info, "warnings": notes}
    _write(out, ci, summary, bg, pixs, clus,
           title=f"{Path(args.session).stem}: {args.method}, {ci.n_trials} trials")
    return summary


def _write(out, image, summary, background, pixs, clus, *, title):
    """ci.npz + ci.json (the DiagnosticImage ``image``), summary.json and ci.png."""
    from .diagnostic import to_jsonable
    from .figures import save_diagnostic_png
    out.mkdir(parents=True, exist_ok=True)
    image.save(out / "ci", overwrite=True)          # ci.npz (array 'z') + ci.json
    (out / "summary.json").write_text(json.dumps(to_jsonable(summary), indent=2))
    save_diagnostic_png(image, out / "ci.png", background=background, pixel=pixs,
                        cluster=clus, title=title, overwrite=True)


def analyze(argv):
    """Entry point of ``bubbles analyze``; returns the exit status (0 on success).

    Examples
    --------
    >>> analyze(["--ci", "GenderFG.tiff", "--search-region", "facemask.tiff",
    ...          "--sigma", "20", "--out", "results/gender"])      # doctest: +SKIP
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:   # argparse already printed the message
        return int(exc.code or 0)
    if (args.session is None) == (args.ci is None):
        parser.print_usage(sys.stderr)
        print("bubbles analyze: error: give either a SESSION.csv or --ci FILE (not both)",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    existing = [out / name for name in OUTPUTS if (out / name).exists()]
    if existing and not args.force:
        print(f"bubbles analyze: error: {existing[0]} exists; use --force to replace it",
              file=sys.stderr)
        return 1
    try:
        summary = _run_ci(args, out) if args.ci else _run_session(args, out)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"bubbles analyze: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        _report(summary, out)
    for note in summary["warnings"]:
        print(f"bubbles analyze: warning: {note}", file=sys.stderr)
    return 0


def _report(summary, out):
    parts = summary.get("bands", [summary])
    for s in parts:
        pix, clu = s["pixel_test"], s["cluster_test"]
        sig = [c for c in clu["clusters"] if c["significant"]]
        label = (f"band {s['band'] + 1} (sigma {s['sigma']:g} px): "
                 if len(parts) > 1 else "")
        print(f"{label}pixel test: threshold z = {pix['threshold']:.3f}, "
              f"{pix['n_significant']} significant pixels; cluster test: min size "
              f"{clu['min_cluster_size']:.1f} px at t_C {clu['threshold']}, "
              f"{len(sig)} significant cluster(s)")
        for c in sig:
            print(f"  cluster: {c['size']} px, peak z {c['peak_z']:.2f} at {c['peak']}, "
                  f"centroid {c['centroid']}")
    print(f"wrote {out / 'ci.npz'} + {out / 'ci.json'}, {out / 'summary.json'}, "
          f"{out / 'ci.png'}")
