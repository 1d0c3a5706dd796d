"""``bubbles plan``: how many trials, which bubbles, how much scanner time, by simulation.

::

    bubbles plan [--observer template|network] [--sigma 7 10 14] [--n-bubbles quest 20 40]
                 [--trials 250 500 1000 2000] [--method regression] --out DIR
    bubbles plan --observer voxel [--tr 2] [--iti 4 6] [--runs 4 6] [--snr 0.5 1]
                 [--trials 400 800] [--sigma 10] [--n-bubbles 40] [--n-voxels 50000] --out DIR

Simulates the experiment over the grid with a planted observer
(:func:`analysis.plan.plan_study`, :func:`analysis.plan.plan_fmri`) and writes
``DIR/plan.json`` (every cell, the recommendation for ``--target-power``, the count
QUEST would settle near, parameters and seeds), ``DIR/plan.csv`` (one row per cell) and
``DIR/power.png`` (power against trials). Existing outputs are kept unless ``--force``.
The network observer (the embedded CNN, ``--observer network``) needs torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys

from analysis.ci import METHODS
from analysis.diagnostic import to_jsonable
from analysis.figures import save_figure
from analysis.plan import plan_fmri, plan_study, plot_power
from analysis.report import software_versions

from .common import DataError, prepare_out, run_command

__all__ = ["main", "build_parser", "NetworkFactory"]

OUTPUTS = ("plan.json", "plan.csv", "power.png")
OBSERVERS = ("template", "network", "voxel")
FMRI_OPTIONS = ("tr", "iti", "runs", "snr", "n_voxels", "voxels", "feature")


class NetworkFactory:
    """The embedded CNN as a planted observer (``ann_bridge.observer.NetworkObserver``
    on the CPU, one torch thread per worker process), with ``decision_noise`` on its
    logits. Picklable: each worker process builds its own network."""

    name = "network"

    def __init__(self, decision_noise=0.0):
        self.decision_noise = float(decision_noise)

    def __call__(self, images, labels, seed):
        import torch

        from ann_bridge.observer import NetworkObserver

        torch.set_num_threads(1)
        return _Answers(NetworkObserver(decision_noise=self.decision_noise, seed=seed,
                                        device="cpu", labels=sorted(set(labels))))


class _Answers:
    """``decide_batch(stimuli, background=...)`` of the simulator over the network's
    ``decide_batch(stimuli)`` (the network sees the frame; the grey is part of it)."""

    def __init__(self, observer):
        self.observer = observer

    def decide_batch(self, stimuli, background=None):
        return self.observer.decide_batch(stimuli)


def _count(text):
    if text == "quest":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of bubbles or 'quest', "
                                         f"got {text!r}") from None
    return value


def build_parser():
    p = argparse.ArgumentParser(
        prog="bubbles plan",
        description="Simulate a study over a grid of settings with a planted observer: "
                    "recovery of its diagnostic region, power of the pixel and cluster "
                    "tests, accuracy (and the count QUEST would hold); recommend settings "
                    "for a target power.")
    p.add_argument("--observer", default="template", choices=OBSERVERS,
                   help="template (linear-template observer, as 'bubbles run --simulate "
                        "template'), network (the embedded CNN) or voxel (fMRI)")
    p.add_argument("--sigma", type=float, nargs="+", default=None,
                   help="bubble sizes, pixels of the 256 px stimulus (default 10; voxel: "
                        "one value)")
    p.add_argument("--n-bubbles", type=_count, nargs="+", default=None,
                   help="bubbles per trial, or 'quest' for the count at which the observer "
                        "is --quest-threshold correct (default quest; voxel: 40)")
    p.add_argument("--trials", type=int, nargs="+", default=None,
                   help="trial numbers (default 250 500 1000 2000; voxel 400 800)")
    p.add_argument("--method", nargs="+", default=["regression"], choices=METHODS,
                   help="analysis methods (voxel: one)")
    p.add_argument("--reps", type=int, default=None,
                   help="replications per cell (default 20; voxel: 8 studies of --voxels "
                        "voxels)")
    p.add_argument("--resolution", type=int, default=None,
                   help="simulated image size in pixels (default 128; network 256; "
                        "voxel 64, the analysis resolution)")
    p.add_argument("--p", type=float, default=0.05, help="family-wise error rate")
    p.add_argument("--cluster-threshold", type=float, default=2.7)
    p.add_argument("--target-power", type=float, default=0.8)
    p.add_argument("--quest-threshold", type=float, default=0.75,
                   help="accuracy QUEST aims at (quest.pThreshold)")
    p.add_argument("--quest-trials", type=int, default=400,
                   help="trials per bubble count of the accuracy sweep that finds the "
                        "count QUEST would hold (0: no sweep)")
    p.add_argument("--decision-noise", type=float, default=0.0,
                   help="network only: SD of the noise on its logits")
    p.add_argument("--tr", type=float, nargs="+", default=None, help="voxel: TR, s")
    p.add_argument("--iti", type=float, nargs="+", default=None,
                   help="voxel: mean onset-to-onset interval, s")
    p.add_argument("--runs", type=int, nargs="+", default=None, help="voxel: runs")
    p.add_argument("--snr", type=float, nargs="+", default=None,
                   help="voxel: effect of the feature (%% signal change per SD) over the "
                        "SD of the voxel's noise")
    p.add_argument("--n-voxels", type=int, default=None,
                   help="voxel: voxels sharing the family-wise rate (Bonferroni; default "
                        "50000, 1 for one region)")
    p.add_argument("--voxels", type=int, default=None,
                   help="voxel: voxels per simulated study (default 16)")
    p.add_argument("--feature", default=None,
                   help="voxel: face part driving the voxel (eyes, brows, nose, mouth)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None,
                   help="processes (default: every core)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    return p


def _usage(args):
    voxel = args.observer == "voxel"
    given = [o for o in FMRI_OPTIONS if getattr(args, o) is not None]
    if given and not voxel:
        return (f"--{given[0].replace('_', '-')} applies to --observer voxel only, got "
                f"--observer {args.observer}")
    if args.seed < 0:
        return f"--seed must be >= 0, got {args.seed}"
    if not 0 < args.p < 1:
        return f"--p must lie in (0, 1), got {args.p:g}"
    if not 0 < args.target_power < 1:
        return f"--target-power must lie in (0, 1), got {args.target_power:g}"
    if args.quest_trials < 0:
        return f"--quest-trials must be >= 0, got {args.quest_trials}"
    if args.workers is not None and args.workers < 1:
        return f"--workers must be >= 1, got {args.workers}"
    if args.reps is not None and args.reps < (1 if voxel else 2):
        return f"--reps must be >= {1 if voxel else 2}, got {args.reps}"
    if voxel:
        for name in ("sigma", "n_bubbles", "method"):
            value = getattr(args, name)
            if value is not None and len(value) != 1:
                return (f"--{name.replace('_', '-')} takes one value with --observer voxel, "
                        f"got {value}")
        if args.n_bubbles and args.n_bubbles[0] == "quest":
            return "--n-bubbles quest needs a behavioural observer; give a count with voxel"
    if args.observer == "network" and args.resolution not in (None, 256):
        return f"--resolution must be 256 with --observer network (the network's input), " \
               f"got {args.resolution}"
    if args.decision_noise != 0 and args.observer != "network":
        return "--decision-noise applies to --observer network only"
    return None


def _plan(args):
    prepare_out(args.out, OUTPUTS, force=args.force, create=False)
    need = {"network": ("torch", "ann"), "voxel": ("nilearn", "fmri")}.get(args.observer)
    if need and importlib.util.find_spec(need[0]) is None:
        raise DataError(f"--observer {args.observer} needs {need[0]}, which is not "
                        f"installed: pip install 'bubbles-toolkit[{need[1]}]'")
    progress = not args.quiet
    if args.observer == "voxel":
        result = plan_fmri(
            t_r=args.tr or [2.0], iti=args.iti or [4.0], runs=args.runs or [4],
            snr=args.snr or [0.5, 1.0], trials=args.trials or [400, 800],
            sigma=(args.sigma or [10.0])[0], n_bubbles=(args.n_bubbles or [40])[0],
            feature=args.feature or "eyes",
            n_voxels=50000 if args.n_voxels is None else args.n_voxels,
            voxels=16 if args.voxels is None else args.voxels, reps=args.reps or 8,
            resolution=64 if args.resolution is None else args.resolution, p=args.p,
            cluster_threshold=args.cluster_threshold, seed=args.seed,
            workers=args.workers, progress=progress)
    else:
        network = args.observer == "network"
        result = plan_study(
            args.sigma or [10.0], args.n_bubbles or (["quest"] if args.quest_trials
                                                     else [10, 20, 40]),
            args.trials or [250, 500, 1000, 2000], args.method,
            observer=NetworkFactory(args.decision_noise) if network else "template",
            reps=args.reps or 20,
            resolution=(256 if network else 128) if args.resolution is None
            else args.resolution,
            p=args.p, cluster_threshold=args.cluster_threshold,
            quest_threshold=args.quest_threshold, quest_trials=args.quest_trials,
            seed=args.seed, workers=args.workers,
            progress=progress)
    out = prepare_out(args.out, OUTPUTS, force=args.force)
    data = result.to_dict(target=args.target_power)
    data = {"format": "bubbles.plan", "version": 1, **data,
            "arguments": vars(args), "versions": software_versions()}
    (out / "plan.json").write_text(json.dumps(to_jsonable(data), indent=2))
    result.to_frame().to_csv(out / "plan.csv", index=False)
    save_figure(plot_power(result, target=args.target_power), out / "power.png")
    if not args.quiet:
        for rec in data["recommendation"]:
            print(rec["text"])
        for sigma, q in result.quest.items():
            if q["n_bubbles"] is not None:
                print(f"sigma {float(sigma):g} px: QUEST at {100 * q['accuracy']:.0f} % "
                      f"correct would settle near {q['n_bubbles']} bubbles")
        print(f"{len(result.cells)} cells in {result.info['seconds']:.0f} s on "
              f"{result.info['workers']} processes; wrote {out / 'plan.json'}, "
              f"{out / 'plan.csv'}, {out / 'power.png'}")
    return 0


def main(argv=None):
    """Entry point of ``bubbles plan``; returns the exit status (0 done, 1 a data
    error, 2 a usage error).

    Examples
    --------
    >>> main(["--sigma", "10", "14", "--trials", "500", "1000",
    ...       "--out", "results/plan"])                         # doctest: +SKIP
    0
    """
    return run_command("plan", build_parser(), _plan,
                       sys.argv[1:] if argv is None else argv, usage_check=_usage)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
