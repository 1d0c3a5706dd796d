"""``bubbles fmri``: BOLD runs to a diagnostic image for every voxel.

::

    bubbles fmri simulate --trials SESSION.csv --out DIR [--runs 4] [--tr 2]
    bubbles fmri analyze --bold F... --events F... --trials SESSION.csv --out DIR
                         [--mask FILE] [--confounds F...] [--resolution 64]
                         [--estimator lss|lsa] [--hrf glover|spm|library]
                         [--covariates area n_bubbles run ...]
                         [--method regression|median_split] [--permutations N]
                         [--roi FILE] [--behaviour CI] [--scheduler local|ADDRESS]
    bubbles fmri analyze --bids DIR --subject S --task T [--derivatives DIR] --out DIR
    bubbles fmri voxel DIR --ijk I J K --out STEM     (or --roi NAME)

The work is :mod:`analysis.fmri` (inputs, single-trial amplitudes, voxel images,
simulator); this module parses, calls and writes. Every input is read and checked
before anything is written; existing outputs are kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from analysis.diagnostic import load_image
from analysis.fmri.glm import ESTIMATORS, HRF_MODELS
from analysis.fmri.images import COVARIATES, DEFAULT_COVARIATES
from analysis.fmri.inputs import CONFOUND_STRATEGIES, find_bids, load_study, read_regions
from analysis.fmri.simulate import simulate_study
from analysis.fmri.study import (OUTPUTS, analyze_study, estimate_betas, read_region_image,
                                 read_voxel_image, write_outputs)
from analysis.trials import TrialTable

from .common import DataError, bids_label, integer, number, prepare_out, run_command

__all__ = ["main", "build_parser"]


def build_parser():
    p = argparse.ArgumentParser(prog="bubbles fmri", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="a simulated BIDS study with planted voxels")
    s.add_argument("--trials", required=True, help="session CSV whose trials are shown")
    s.add_argument("--out", required=True, help="BIDS folder to write")
    s.add_argument("--runs", type=integer(1), default=None,
                   help="runs (default 4; a scanner session's own runs)")
    s.add_argument("--tr", type=number(), default=None,
                   help="seconds (default 2; a scanner session's own TR)")
    s.add_argument("--shape", type=integer(6), nargs=3, default=[20, 24, 20],
                   metavar=("X", "Y", "Z"), help="volume in voxels (default 20 24 20)")
    s.add_argument("--gain", type=number(-math.inf, low_open=False), default=0.8,
                   help="planted effect, %% signal change per SD of the feature")
    s.add_argument("--noise", type=number(), default=1.0,
                   help="SD of the AR(1) noise, %% signal change")
    s.add_argument("--subject", type=bids_label, default="01")
    s.add_argument("--task", type=bids_label, default="bubbles")
    s.add_argument("--seed", type=integer(0), default=0)
    s.add_argument("--force", action="store_true", help="replace an existing study")

    a = sub.add_parser("analyze", help="voxel diagnostic images of BOLD runs")
    a.add_argument("--bold", nargs="+", help="4-D BOLD runs (*_bold.nii[.gz])")
    a.add_argument("--events", nargs="+", help="one BIDS events TSV per run")
    a.add_argument("--trials", help="the session CSV (default with --bids: the one "
                   "CSV under DIR/sourcedata)")
    a.add_argument("--mask", help="brain mask on the BOLD grid (default: nilearn's "
                   "compute_epi_mask of the first run; with --bids: fMRIPrep's mask)")
    a.add_argument("--confounds", nargs="+", help="one confounds TSV per run (fMRIPrep "
                   "desc-confounds_timeseries.tsv or a plain TSV)")
    a.add_argument("--confound-strategy", default=",".join(CONFOUND_STRATEGIES),
                   help="fMRIPrep confounds: comma-separated load_confounds strategies "
                        "(default motion,wm_csf) or one load_confounds_strategy name "
                        "(simple, scrubbing, compcor, ica_aroma)")
    a.add_argument("--bids", help="BIDS folder (with --subject and --task)")
    a.add_argument("--subject")
    a.add_argument("--task")
    a.add_argument("--derivatives", help="fMRIPrep derivatives folder (default "
                   "DIR/derivatives/fmriprep when there)")
    a.add_argument("--out", required=True, help="output folder")
    a.add_argument("--resolution", type=integer(8), default=64,
                   help="long side of the voxel images, pixels (default 64)")
    a.add_argument("--estimator", default="lss", choices=ESTIMATORS)
    a.add_argument("--hrf", default="glover", choices=HRF_MODELS)
    a.add_argument("--covariates", nargs="*", default=list(DEFAULT_COVARIATES),
                   choices=COVARIATES, help="regressed out of the amplitudes first "
                   "(default: area n_bubbles run; none: --covariates with no value)")
    a.add_argument("--method", default="regression", choices=["regression",
                                                               "median_split"])
    a.add_argument("--permutations", type=integer(0), default=0,
                   help="0: random field theory with Bonferroni over voxels; N >= 20: "
                        "max-statistic over voxels x pixels")
    a.add_argument("--p", type=float, default=0.05, help="family-wise error rate")
    a.add_argument("--seed", type=integer(0), default=0)
    a.add_argument("--roi", help="regions (3-D label image or 4-D masks on the BOLD "
                   "grid): each region's mean amplitude is one more target")
    a.add_argument("--behaviour", help="a person's DiagnosticImage (stem or .npz) to "
                   "correlate with every voxel's image")
    a.add_argument("--scheduler", help="run the voxel chunks on dask.distributed: "
                   "'local' (a LocalCluster of 2 workers) or a scheduler address")
    a.add_argument("--t-r", type=number(), help="repetition time in s (overrides "
                   "header and sidecar)")
    a.add_argument("--high-pass", type=number(), default=0.01, help="Hz")
    a.add_argument("--chunk-size", type=integer(1), default=1024,
                   help="voxels per task")
    a.add_argument("--no-figures", action="store_true")
    a.add_argument("--force", action="store_true", help="replace existing outputs")
    a.add_argument("--quiet", action="store_true")

    v = sub.add_parser("voxel", help="one voxel's (or region's) DiagnosticImage")
    v.add_argument("folder", help="results folder of 'bubbles fmri analyze'")
    v.add_argument("--ijk", type=int, nargs=3, metavar=("I", "J", "K"))
    v.add_argument("--roi", help="a region name of the analysis' --roi file")
    v.add_argument("--out", required=True, help="output stem (STEM.npz + STEM.json)")
    v.add_argument("--force", action="store_true")
    return p


def _usage(args):
    if args.command == "analyze":
        if args.bids is not None:
            if args.bold or args.events:
                return "give either --bids DIR or --bold/--events, not both"
            if not (args.subject and args.task):
                return "--bids needs --subject and --task"
        else:
            if not args.bold or not args.events:
                return "give --bold F... and --events F... (or --bids DIR)"
            if not args.trials:
                return "--trials SESSION.csv is required with --bold"
        if not 0 < args.p < 1:
            return f"--p must lie in (0, 1), got {args.p:g}"
        if 0 < args.permutations < 20:
            return f"--permutations must be 0 or >= 20, got {args.permutations}"
    if args.command == "voxel" and (args.ijk is None) == (args.roi is None):
        return "give either --ijk I J K or --roi NAME"
    return None


def _simulate(args):
    out = Path(args.out)
    names = (f"sub-{args.subject}", "derivatives", "dataset_description.json")
    prepare_out(out, names, force=args.force, create=False)
    table = TrialTable.read(args.trials)
    prepare_out(out, names, force=args.force)
    sim = simulate_study(table, out, n_runs=args.runs, t_r=args.tr,
                         shape=tuple(args.shape), gain=args.gain, noise_sd=args.noise,
                         subject=args.subject, task=args.task, seed=args.seed)
    print(f"wrote {len(sim.bold)} run(s) of sub-{args.subject} task-{args.task} in {out}; "
          f"truth in {sim.truth}")
    return 0


def _strategy(text):
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if len(parts) == 1 and parts[0] in ("simple", "scrubbing", "compcor", "ica_aroma"):
        return parts[0]
    return tuple(parts)


def _analyze(args):
    out = Path(args.out)
    prepare_out(out, OUTPUTS, force=args.force, create=False)
    if args.bids is not None:
        found = find_bids(args.bids, args.subject, args.task, derivatives=args.derivatives)
        bold, events = found["bold"], found["events"]
        confounds = args.confounds or found["confounds"]
        mask = args.mask or found["mask"]
        trials = args.trials or found["trials"]
        if trials is None:
            raise DataError(f"no session CSV: give --trials (none, or several, under "
                            f"{Path(args.bids) / 'sourcedata'})")
    else:
        bold, events, confounds, mask, trials = (args.bold, args.events, args.confounds,
                                                 args.mask, args.trials)
    study = load_study(bold, events, trials, mask=mask, confounds=confounds,
                       confound_strategy=_strategy(args.confound_strategy), t_r=args.t_r)
    regions = read_regions(args.roi, study) if args.roi else None
    behaviour = load_image(args.behaviour) if args.behaviour else None
    betas = estimate_betas(study, estimator=args.estimator, hrf=args.hrf,
                           high_pass=args.high_pass)          # reads (and checks) the data
    prepare_out(out, OUTPUTS, force=args.force)
    result = analyze_study(study, resolution=args.resolution, estimator=args.estimator,
                           hrf=args.hrf, covariates=args.covariates, method=args.method,
                           p=args.p, permutations=args.permutations, seed=args.seed,
                           regions=regions, behaviour=behaviour,
                           store=out / "voxel_ci.zarr", scheduler=args.scheduler,
                           chunk_size=args.chunk_size, high_pass=args.high_pass,
                           betas=betas, progress=not args.quiet)
    write_outputs(result, out, figures=not args.no_figures)
    if not args.quiet:
        s = result.stats
        print(f"{len(s.peak_z)} voxels x {len(result.rows)} trials at "
              f"{result.spec.shape[0]} x {result.spec.shape[1]} px: "
              f"{int((s.n_significant > 0).sum())} voxel(s) with significant pixels "
              f"(|z| > {s.threshold:.2f}; {s.correction}); wrote {out}")
    return 0


def _voxel(args):
    stem = Path(args.out)
    names = [stem.name + ".npz", stem.name + ".json"]
    prepare_out(stem.parent, names, force=args.force, create=False, option="--out")
    img = (read_voxel_image(args.folder, args.ijk) if args.ijk is not None
           else read_region_image(args.folder, args.roi))
    prepare_out(stem.parent, names, force=args.force, option="--out")
    img.save(stem, overwrite=True)
    print(f"wrote {stem}.npz + {stem}.json ({img.observer} "
          f"{img.info.get('voxel') or img.info.get('region')})")
    return 0


def main(argv=None) -> int:
    """Entry point of ``bubbles fmri``; returns the exit status (0 done, 1 a data or
    setup error, 2 a usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    handlers = {"simulate": _simulate, "analyze": _analyze, "voxel": _voxel}
    return run_command("fmri", build_parser(), lambda args: handlers[args.command](args),
                       argv, usage_check=_usage)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
