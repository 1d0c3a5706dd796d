"""``bubbles compare A B --out DIR``: score diagnostic image(s) B against the reference A.

Pearson / Spearman, the split-half noise ceiling and a permutation p-value
(:func:`analysis.compare.compare`), written to ``DIR/compare.json``, and a side-by-side
figure ``DIR/compare.png`` (:func:`analysis.figures.plot_comparison`).
"""

from __future__ import annotations

import argparse
import json
import warnings

from analysis.compare import CEILINGS, compare, comparison_panels
from analysis.diagnostic import load_image
from analysis.figures import plot_comparison, save_figure
from analysis.io import read_background
from analysis.trials import TrialTable

from .common import prepare_out, run_command

__all__ = ["main", "build_parser"]

OUTPUTS = ("compare.json", "compare.png")


def build_parser():
    p = argparse.ArgumentParser(
        prog="bubbles compare",
        description="Compare diagnostic image(s) B with the reference A (a person's): "
                    "Pearson / Spearman, split-half noise ceiling, permutation p-value, "
                    "and a side-by-side figure.")
    p.add_argument("a", help="reference DiagnosticImage stem or .npz (e.g. a person's)")
    p.add_argument("b", help="DiagnosticImage stem or .npz to score (one map or many units)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--trials", help="A's session CSV (for the ceiling and p-value); "
                   "default: the session recorded with A, if any")
    p.add_argument("--response", default=None, help="response column of the session "
                   "(default: the one A was made from, recorded in its .json; else "
                   "'correct')")
    p.add_argument("--smoothing", type=float, default=0.0, help="SD in pixels of an extra "
                   "Gaussian smoothing of both maps (0 = none)")
    p.add_argument("--n-permutations", type=int, default=1000,
                   help="permutations for the p-value (0 = no p-value)")
    p.add_argument("--n-splits", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ceiling", default="sqrt", choices=CEILINGS,
                   help="noise ceiling: sqrt(r_sb) (attenuation bound) or r_sb")
    p.add_argument("--panel", action="append", default=[], metavar="NAME=STEM",
                   help="extra figure panel, e.g. occlusion=out/occlusion_id00_happy "
                        "(repeat; model observer, occlusion, saliency, integrated gradients)")
    p.add_argument("--background", help="grey image (H, W) drawn under the maps (.npy or "
                   "an image file); default: the mean of the faces of A's session")
    p.add_argument("--label-a", default="human", help="panel name of A")
    p.add_argument("--label-b", default=None, help="panel name of B (default: 'model "
                   "observer' for one map, 'best unit' for many)")
    p.add_argument("--force", action="store_true", help="replace an existing "
                   "compare.json / compare.png in --out")
    return p


def _usage(args):
    if args.n_permutations < 0:
        return f"--n-permutations must be >= 0 (0 = no p-value), got {args.n_permutations}"
    if args.n_splits < 1:
        return f"--n-splits must be >= 1, got {args.n_splits}"
    if not args.smoothing >= 0:
        return f"--smoothing must be >= 0 pixels, got {args.smoothing}"
    for item in args.panel:
        if "=" not in item:
            return f"--panel must be NAME=STEM, got {item!r}"
    return None


def _background(path, trials, shape):
    """--background file, else the mean of the faces of A's session (as ``bubbles
    analyze`` draws it), else None."""
    if path:
        return read_background(path, shape)
    bg = trials.mean_stimulus() if trials is not None else None
    return bg if bg is not None and bg.shape == tuple(shape) else None


def _compare(args):
    prepare_out(args.out, OUTPUTS, force=args.force, create=False)
    a, b = load_image(args.a), load_image(args.b)
    extra = {}
    for item in args.panel:
        name, _, stem = item.partition("=")
        extra[name] = load_image(stem)
    source = args.trials or (a.info or {}).get("session")
    if not source:
        warnings.warn(f"{args.a} records no session: no noise ceiling or p-value (pass "
                      "--trials SESSION.csv, or run 'bubbles analyze' again to write "
                      "its ci.json record)", stacklevel=2)
    trials = TrialTable.read(source) if source else None
    res = compare(a, b, trials=trials, response=args.response, smoothing=args.smoothing,
                  n_permutations=args.n_permutations, n_splits=args.n_splits,
                  seed=args.seed, ceiling=args.ceiling)
    panels, titles, panel_r = comparison_panels(a, b, res, extra, label_a=args.label_a,
                                                label_b=args.label_b,
                                                smoothing=args.smoothing)
    out = prepare_out(args.out, OUTPUTS, force=args.force)
    summary = res.to_dict()
    summary.update(a=str(args.a), b=str(args.b), trials=source, panels=panel_r,
                   seed=args.seed, n_splits=args.n_splits, smoothing=args.smoothing)
    (out / "compare.json").write_text(json.dumps(summary, indent=2))
    shape = next(iter(panels.values())).shape[-2:]
    fig = plot_comparison(panels, background=_background(args.background, trials, shape),
                          titles=titles,
                          caption=f"reference: {args.a}; red = positive (diagnostic), each "
                                  "panel scaled to its own max |value|; multi-band maps "
                                  "show the sum of their bands; r = Pearson r with the "
                                  "reference")
    save_figure(fig, out / "compare.png")
    line = (f"best: {res.best_name} Pearson {res.pearson[res.best]:.3f}, Spearman "
            f"{res.spearman[res.best]:.3f}")
    if res.ceiling is not None:
        score = "n/a" if res.score is None else f"{res.score:.3f}"
        line += (f"; split-half r {res.ceiling.r_half:.3f}, r_sb {res.ceiling.r_sb:.3f}, "
                 f"ceiling {res.ceiling_value:.3f} ({res.ceiling_kind}); score/ceiling "
                 f"{score}")
    if res.p_value is not None:
        line += f"; permutation p {res.p_value:.4f}"
    print(line)
    print(f"wrote {out / 'compare.json'} and {out / 'compare.png'}")
    return 0


def main(argv) -> int:
    """Entry point of ``bubbles compare``; returns the exit status (0 done, 1 a data
    error, 2 a usage error). Warnings (a missing figure background, a resampled map, a
    score far above the ceiling, a response other than A's) go to stderr as ``bubbles
    compare: warning: ...``."""
    return run_command("compare", build_parser(), _compare, argv, usage_check=_usage)
