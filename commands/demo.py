"""``bubbles demo``: the whole pipeline on the embedded defaults.

A script of ``bubbles`` commands, in the command layer on top of every package: each
step calls the entry point of the matching subcommand (:mod:`commands.run`,
:mod:`commands.analyze`, :mod:`commands.ann`, :mod:`commands.compare`) with the
arguments a lab would type, imported only when the step runs, so the demo exercises
exactly what a lab runs and works without torch until a network step.

Steps, each writing into its own folder under ``--out``:

1. ``stimuli/``   contact sheet of the face set, bubbled faces and their masks;
2. ``session/``   two observers sit the same PsychoPy session (window under Xvfb when
   there is no display), QUEST holding each near 75% correct: a simulated person (the
   linear-template observer of ``analysis.simulate``, standing in for a participant)
   and the embedded network (``bubbles run --simulate template|model``);
3. ``analysis/``  their diagnostic images with the Stat4Ci tests (``bubbles analyze``);
4. ``stat4ci/``   the published tests on the real 2001 classification images shipped
   in ``data/stat4ci`` (``bubbles analyze --ci``);
5. ``probe/``     diagnostic images of every channel of a conv layer of the network,
   from the same BubbleSpec (``bubbles ann probe``);
6. ``attribution/`` occlusion, saliency and integrated gradients (``bubbles ann attribute``);
7. ``compare/``   person vs network observer vs best unit vs attribution maps
   (``bubbles compare``), with the split-half noise ceiling.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import bubbles_data
from bubbles import (BubbleSpec, bubble_stimuli, default_faces, render_masks,
                     sample_centers, save_contact_sheet)

from .common import DataError, prepare_out, run_command

STEPS = ("stimuli", "session", "analysis", "stat4ci", "probe", "attribution", "compare")
OBSERVERS = {"person": "template", "network": "model"}   # participant id -> --simulate

# The session every observer sits: single-scale bubbles (sigma 10 px) so that one map per
# observer compares directly with the network's units; short frames (nobody watches).
DEMO_TASK = """\
expName = "demo"
seed = 2001
[bubbles]
sigma = 10.0
n_bubbles = 40
bands = 0
background = 0.5
[trials]
practice = 3
main = {trials}
break_every = 0
feedback_practice = false
[timing]
fixation_frames = 1
stimulus_frames = 1
iti_frames = 1
[quest]
start = 40
max_bubbles = 400
[window]
fullscreen = false
"""


def _check(code, what):
    if code:
        raise DataError(f"demo step failed: {what} (exit status {code})")


def run_sessions(out_dir, *, trials, seed):
    """Both observers sit the demo session; returns {observer: session CSV path}."""
    from .run import run

    config = Path(out_dir) / "demo_task.toml"
    config.write_text(DEMO_TASK.format(trials=trials))
    csvs = {}
    for who, kind in OBSERVERS.items():
        before = set(Path(out_dir).glob(f"{who}_*.csv"))
        _check(run(["--config", str(config), "--participant", who, "--simulate", kind,
                    "--data-dir", str(out_dir), "--seed", str(seed), "--pilot"]),
               f"bubbles run --simulate {kind}")
        (csvs[who],) = set(Path(out_dir).glob(f"{who}_*.csv")) - before
    return csvs


def analyze_sessions(csvs, out_dir):
    """Each session's main block into ``out_dir/<observer>/``."""
    from .analyze import analyze

    for who, csv in csvs.items():
        _check(analyze([str(csv), "--out", str(Path(out_dir) / who), "--block", "main",
                        "--force"]), f"bubbles analyze {csv}")


def stat4ci(out_dir):
    from .analyze import analyze

    def data(name):
        return str(bubbles_data.path(f"stat4ci/{name}"))

    for task in ("Gender", "Exnex"):
        _check(analyze(["--ci", data(f"{task}FG.tiff"),
                        "--search-region", data("facemask.tiff"),
                        "--sigma", "20", "--background", data("w1H.jpg"),
                        "--out", str(Path(out_dir) / task.lower()), "--force"]),
               f"bubbles analyze --ci {task}FG.tiff")


def probe(out_dir, *, n_masks, seed, layer="features.conv3"):
    from .ann import main as ann

    _check(ann(["probe", "--layer", layer, "--n-masks", str(n_masks), "--sigma", "10",
                "--n-bubbles", "40", "--bands", "0", "--seed", str(seed), "--device", "cpu",
                "--name", "probe", "--out", str(out_dir), "--force"]), "bubbles ann probe")
    return Path(out_dir) / "probe"


def attribute(out_dir, *, stimulus="id00_happy"):
    from .ann import main as ann

    for method in ("occlusion", "saliency", "ig"):
        _check(ann(["attribute", "--method", method, "--stimulus", stimulus, "--device",
                    "cpu", "--out", str(Path(out_dir) / method), "--force"]),
               f"bubbles ann attribute --method {method}")
    return attribution_stems(out_dir, stimulus)


def attribution_stems(out_dir, stimulus="id00_happy"):
    """{method: stem} of the attribution maps of ``stimulus`` under ``out_dir``."""
    stems = {}
    for method in ("occlusion", "saliency", "ig"):
        found = sorted((Path(out_dir) / method).glob(f"*_{stimulus}.npz"))
        if not found:
            raise DataError(f"no {method} map of {stimulus} in {out_dir}: run the "
                               f"'attribution' step first")
        stems[method] = found[0].with_suffix("")
    return stems


def compare(out_dir, analyses, probe_stem, attributions):
    from .compare import main as compare_main

    person, network = (analyses[w] / "ci.npz" for w in ("person", "network"))
    names = {"occlusion": "occlusion", "saliency": "saliency",
             "ig": "integrated gradients"}
    panels = [f"model observer={network}"] + \
        [f"{names[m]}={stem}" for m, stem in attributions.items()]
    _check(compare_main([str(person), str(probe_stem), "--out", str(out_dir), "--force",
                         "--label-a", "person (simulated)"]
                        + [x for p in panels for x in ("--panel", p)]),
           "bubbles compare person probe")
    _check(compare_main([str(person), str(network), "--force",
                         "--out", str(Path(out_dir) / "person_vs_network_observer"),
                         "--label-a", "person (simulated)"]),
           "bubbles compare person network")


def stimuli_sheet(out_dir, *, seed=0):
    """Contact sheet: faces, bubbled faces, their masks, 5-band bubbled faces (rows)."""
    faces = default_faces()
    picks = [0, 4, 8, 9, 13, 17]      # two identities per expression, in order
    spec = BubbleSpec(shape=faces.shape, sigma=10.0, n_bubbles=30, background=0.5)
    masks = render_masks(spec, sample_centers(spec, seed, len(picks)))
    bubbled = np.stack([bubble_stimuli(spec, faces.images[i], m[None])[0]
                        for i, m in zip(picks, masks)])
    multi = BubbleSpec(shape=faces.shape, sigma=5.8, n_bubbles=80, bands=5)
    mmasks = render_masks(multi, sample_centers(multi, seed, len(picks)))
    multibubbled = np.stack([bubble_stimuli(multi, faces.images[i], m[None])[0]
                             for i, m in zip(picks, mmasks)])
    labels = list(faces.table["stimulus_id"].iloc[picks])
    rows = np.concatenate([faces.images[picks], bubbled, masks, multibubbled])
    names = labels + [f"bubbled {k}" for k in range(len(picks))] + \
        [f"mask {k}" for k in range(len(picks))] + \
        [f"5-band {k}" for k in range(len(picks))]
    path = Path(out_dir) / "stimuli.png"
    save_contact_sheet(rows, path, ncols=len(picks), labels=names)
    return path


def build_parser():
    parser = argparse.ArgumentParser(
        prog="bubbles demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/demo", help="output folder")
    parser.add_argument("--steps", default=",".join(STEPS),
                        help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--trials", type=int, default=1500,
                        help="main-block trials of each simulated session")
    parser.add_argument("--n-masks", type=int, default=4000,
                        help="bubbled images shown to the network's units")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _steps(args):
    return [s.strip() for s in args.steps.split(",") if s.strip()]


def _usage(args):
    unknown = sorted(set(_steps(args)) - set(STEPS))
    if unknown:
        return f"--steps: unknown step(s) {unknown}; expected some of {list(STEPS)}"
    if args.trials < 1 or args.n_masks < 1:
        return f"--trials and --n-masks must be >= 1, got {args.trials} and {args.n_masks}"
    return None


def _demo(args):
    steps = _steps(args)
    out = prepare_out(args.out)
    folders = {step: out / step for step in STEPS}
    for step in steps:
        prepare_out(folders[step])
    t0 = time.perf_counter()

    def say(step, text):
        print(f"[{step} {time.perf_counter() - t0:5.0f} s] {text}", flush=True)

    if "stimuli" in steps:
        say("stimuli", stimuli_sheet(folders["stimuli"], seed=args.seed))
    csvs = {w: max(folders["session"].glob(f"{w}_*.csv"), default=None) for w in OBSERVERS}
    if "session" in steps:
        csvs = run_sessions(folders["session"], trials=args.trials, seed=args.seed)
        say("session", ", ".join(str(c) for c in csvs.values()))
    analyses = {w: folders["analysis"] / w for w in OBSERVERS}
    if "analysis" in steps:
        missing = [w for w, c in csvs.items() if c is None]
        if missing:
            raise DataError(f"no session of {missing} in {folders['session']}: run the "
                            "'session' step first")
        analyze_sessions(csvs, folders["analysis"])
        say("analysis", ", ".join(str(d / "ci.png") for d in analyses.values()))
    if "stat4ci" in steps:
        stat4ci(folders["stat4ci"])
        say("stat4ci", folders["stat4ci"])
    probe_stem = folders["probe"] / "probe"
    if "probe" in steps:
        probe_stem = probe(folders["probe"], n_masks=args.n_masks, seed=args.seed)
        say("probe", probe_stem)
    if "attribution" in steps:
        stems = attribute(folders["attribution"])
        say("attribution", ", ".join(str(s) for s in stems.values()))
    if "compare" in steps:
        compare(folders["compare"], analyses, probe_stem,
                attribution_stems(folders["attribution"]))
        say("compare", folders["compare"] / "compare.png")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; results in {out}/")
    return 0


def main(argv=None):
    """Entry point of ``bubbles demo``; returns the exit status (0 done, 1 a step or
    data error, 2 a usage error)."""
    return run_command("demo", build_parser(), _demo,
                       sys.argv[1:] if argv is None else argv, usage_check=_usage)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
