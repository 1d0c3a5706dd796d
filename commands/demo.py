"""``bubbles demo``: the whole study on the embedded defaults.

A script of ``bubbles`` commands, in the command layer on top of every package: each
step calls the entry point of the matching subcommand (:mod:`commands.run`,
:mod:`commands.analyze`, :mod:`commands.fmri`, :mod:`commands.ann`,
:mod:`commands.compare`, :mod:`commands.compare_many`, :mod:`commands.report`) with
the arguments a lab would type, imported only when the step runs, so the demo exercises
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
5. ``scanner/``   the simulated person in the scanner: the same task in the scanner mode
   (``bubbles run --scanner --simulate-scanner --speed 20 --simulate template``), 4 runs
   at TR 2 s, the number of bubbles fixed at the QUEST estimate of its behavioural
   session (``--bubbles-from``);
6. ``fmri/``      BOLD runs simulated from that session's own runs and onsets, with a
   frontal region that reads the eyes and an occipital region that reads the mouth
   (``bubbles fmri simulate``, into ``fmri/bids``), then every voxel's and region's
   diagnostic image (``bubbles fmri analyze``, into ``fmri/analysis``); one line says
   whether the two regions were found again (``fmri/findings.json``);
7. ``probe/``     diagnostic images of every channel of two conv layers of the network
   (``features.conv2`` as ``probe/probe_conv2``, ``features.conv3`` as
   ``probe/probe``), from the same BubbleSpec (``bubbles ann probe``);
8. ``attribution/`` occlusion, saliency and integrated gradients (``bubbles ann attribute``);
9. ``compare/``   person vs network observer vs best unit vs attribution maps
   (``bubbles compare``), with the split-half noise ceiling;
10. ``compare_brain/`` every voxel and region against the probed units of two layers
    (``bubbles compare-many``, with the voxels' noise ceilings), and the person against
    the frontal (eye) region's image (``bubbles compare``);
11. ``report``    ``report.html`` in ``--out``: one page of everything above
    (``bubbles report``; skipped when the toolkit has no report command).

Long steps print a line when they start, every step one when it ends (seconds since
the start); the subcommands show their own progress bars.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import bubbles_data
from bubbles import (BubbleSpec, bubble_stimuli, default_faces, render_masks,
                     sample_centers, save_contact_sheet)

from .common import DataError, prepare_out, run_command

STEPS = ("stimuli", "session", "analysis", "stat4ci", "scanner", "fmri", "probe",
         "attribution", "compare", "compare_brain", "report")
OBSERVERS = {"person": "template", "network": "model"}   # participant id -> --simulate
LAYERS = {"probe_conv2": "features.conv2", "probe": "features.conv3"}   # stem -> layer
SCAN_SPEED = 20          # the simulated scanner runs 20 times faster than a real one
SCAN_SESSION = 2         # the person's second session (the behavioural one is 1)
TASK = "demo"            # expName, hence the BIDS task label
#: planted truth label -> (stimulus ROI it reads, the region's name) of the simulator
PLANTED = {1: ("eyes", "frontal"), 2: ("mouth", "occipital")}

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

# The same task in the scanner (on with --scanner): 4 runs at TR 2 s, SOA 6 s on average.
SCANNER_TABLE = """\
[scanner]
tr = 2.0
runs = 4
trials_per_run = {scan_trials}
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


def probe(out_dir, *, n_masks, seed):
    """The units of every layer of :data:`LAYERS`; returns the stem of conv3's."""
    from .ann import main as ann

    for stem, layer in LAYERS.items():
        _check(ann(["probe", "--layer", layer, "--n-masks", str(n_masks), "--sigma", "10",
                    "--n-bubbles", "40", "--bands", "0", "--seed", str(seed), "--device",
                    "cpu", "--name", stem, "--out", str(out_dir), "--force"]),
               f"bubbles ann probe --layer {layer}")
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


def _newest(folder, pattern):
    found = sorted(Path(folder).rglob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _regions(bids):
    """The simulator's planted regions (a label image with its ``.tsv`` of names)."""
    return Path(bids) / "derivatives" / "truth" / f"sub-person_task-{TASK}_regions.nii.gz"


def _fmri_commands():
    """The fMRI subcommand, or a DataError saying which extra it needs."""
    try:
        from .fmri import main as fmri
    except ImportError as err:
        raise DataError(f"the fMRI steps need the fmri extra (pip install "
                        f"'bubbles-toolkit[fmri]'): {err}") from None
    return fmri


def scanner_session(out_dir, behaviour_csv, *, trials, scan_trials, seed,
                    speed=SCAN_SPEED):
    """The simulated person sits the task in the (simulated) scanner, with its bubbles
    fixed at the QUEST estimate of ``behaviour_csv``; returns the session CSV.

    A scanner session refuses to start beside the events files of an earlier one of
    the same participant and session, so a demo run again into the same folder records
    into ``rerun-2/``, ``rerun-3/`` ... (same seeds, same trials)."""
    from .run import run

    out_dir = Path(out_dir)
    config = out_dir / "demo_scan.toml"
    config.write_text(DEMO_TASK.format(trials=trials)
                      + SCANNER_TABLE.format(scan_trials=scan_trials))
    data_dir, k = out_dir, 1
    while (data_dir / "sub-person" / f"ses-{SCAN_SESSION}").exists():
        k += 1
        data_dir = out_dir / f"rerun-{k}"
    before = set(data_dir.glob("person_*.csv"))
    _check(run(["--config", str(config), "--participant", "person", "--session",
                str(SCAN_SESSION), "--simulate", "template", "--scanner",
                "--simulate-scanner", "--speed", f"{speed:g}", "--bubbles-from",
                str(behaviour_csv), "--data-dir", str(data_dir), "--seed", str(seed),
                "--pilot"]), "bubbles run --scanner --simulate template")
    (csv,) = set(data_dir.glob("person_*.csv")) - before
    return csv


def fmri_study(out_dir, scan_csv, *, seed, behaviour=None):
    """``bubbles fmri simulate`` of the scanner session into ``out_dir/bids``, then
    ``bubbles fmri analyze`` (with the simulator's regions as ``--roi``) into
    ``out_dir/analysis``; returns the analysis folder."""
    fmri = _fmri_commands()
    bids, results = Path(out_dir) / "bids", Path(out_dir) / "analysis"
    _check(fmri(["simulate", "--trials", str(scan_csv), "--out", str(bids), "--subject",
                 "person", "--task", TASK, "--seed", str(seed), "--force"]),
           "bubbles fmri simulate")
    regions = _regions(bids)
    extra = ["--behaviour", str(behaviour)] if behaviour else []
    _check(fmri(["analyze", "--bids", str(bids), "--subject", "person", "--task", TASK,
                 "--roi", str(regions), "--out", str(results), "--seed", str(seed),
                 "--force"] + extra), "bubbles fmri analyze")
    return results


def fmri_findings(results, bids, scan_csv=None):
    """Were the planted regions found again? From the outputs of ``bubbles fmri
    analyze`` in ``results`` and the simulator's truth in ``bids``.

    For each planted region (frontal: eyes, occipital: mouth): the mean over its voxels
    of each voxel's mean z inside each stimulus ROI (``roi_<name>_z``), the ROI where
    that is largest, how many of its voxels have significant pixels, and the peak |z|
    of the region's own image (``--roi``) against its threshold. A region is found
    again when its voxels' images are largest on the part it reads and its region image
    is significant. Also: how many null voxels have significant pixels, and (from the
    scanner session ``scan_csv``) how many onsets came more than 1 s after their
    schedule (a pause of the computer, multiplied by the simulated scanner's speed):
    two such trials close together have nearly collinear regressors, hence noisy
    single-trial amplitudes in every voxel.

    Returns
    -------
    dict with 'regions' (one dict per region), 'null' and 'sentence'
    """
    import nibabel as nib

    results, bids = Path(results), Path(bids)
    summary = json.loads((results / "summary.json").read_text())

    def volume(path):
        return np.asarray(nib.load(str(path)).dataobj)

    truth = sorted((bids / "derivatives" / "truth").glob("*_labels.nii.gz"))
    if not truth:
        raise DataError(f"no truth labels under {bids / 'derivatives' / 'truth'}: the "
                        "fMRI study was not simulated by 'bubbles fmri simulate'")
    labels = volume(truth[0])
    brain = volume(summary["mask"]) > 0
    significant = volume(results / "n_significant.nii.gz") > 0
    rois = {name: volume(results / f"roi_{name}_z.nii.gz")
            for name in summary["stimulus_rois"]}
    region_images = {r["name"]: r for r in summary.get("regions") or []}
    threshold = summary.get("regions_threshold")
    found = []
    for label, (part, name) in PLANTED.items():
        voxels = (labels == label) & brain
        means = {roi: float(z[voxels].mean()) for roi, z in rois.items()}
        best = max(means, key=means.get)
        image = region_images.get(name, {})
        found.append({
            "region": name, "reads": part, "n_voxels": int(voxels.sum()),
            "n_significant": int((significant & voxels).sum()),
            "mean_roi_z": means, "strongest_roi": best,
            "region_peak_z": image.get("peak_z"),
            "region_n_significant": image.get("n_significant"),
            "found": bool(best == part and (image.get("n_significant") or 0) > 0)})
    null = (labels == 0) & brain
    n_null = int((significant & null).sum())

    def words(f):
        other = "mouth" if f["reads"] == "eyes" else "eyes"
        z = f["mean_roi_z"]
        head = (f"{f['region']} {f['reads']} region "
                f"{'found again' if f['found'] else 'NOT found again'}")
        peak = ("" if f["region_peak_z"] is None else
                f"; its region image peaks at |z| {f['region_peak_z']:.1f}"
                + ("" if threshold is None else f" (threshold {threshold:.2f})"))
        return (f"{head} (its voxels' images: mean z {z[f['reads']]:.1f} on the "
                f"{f['reads']}, {z[other]:.1f} on the {other}, strongest on the "
                f"{f['strongest_roi']}{peak}; {f['n_significant']} of {f['n_voxels']} "
                "voxels significant alone)")

    late = None
    if scan_csv is not None:
        table = pd.read_csv(scan_csv)
        delay = (table["onset"] - table["planned_onset"]).to_numpy(float)
        late = {"n_trials": len(delay), "over_1s": int((delay > 1.0).sum()),
                "max_s": float(np.nanmax(delay)) if len(delay) else None}
    sentence = ("; ".join(words(f) for f in found)
                + f"; null voxels with significant pixels: {n_null} of {int(null.sum())}")
    if late is not None:
        sentence += (f"; {late['over_1s']} of {late['n_trials']} onsets more than 1 s "
                     f"late (at most {late['max_s']:.1f} s)")
    return {"regions": found, "null": {"n_voxels": int(null.sum()),
                                       "n_significant": n_null}, "late_onsets": late,
            "threshold": summary.get("threshold"), "correction": summary.get("correction"),
            "n_trials": summary.get("n_trials"), "sentence": sentence}


def compare_brain(out_dir, fmri_results, bids, probe_dir, person_ci):
    """Voxels and regions against the probed units (``bubbles compare-many``), and the
    person against the frontal (eye) region (``bubbles compare``); returns the
    compare-many and compare folders."""
    from .compare import main as compare_main
    from .compare_many import main as compare_many

    fmri = _fmri_commands()
    out_dir = Path(out_dir)
    stems = [Path(probe_dir) / stem for stem in LAYERS]
    missing = [str(s) for s in stems if not s.with_suffix(".npz").is_file()]
    if missing:
        raise DataError(f"no probe {missing}: run the 'probe' step first")
    regions = _regions(bids)
    units = out_dir / "units"
    _check(compare_many([str(fmri_results)] + [str(s) for s in stems] +
                        ["--roi", str(regions), "--out", str(units), "--force"]),
           "bubbles compare-many")
    images = {}
    for _, name in PLANTED.values():
        images[name] = out_dir / f"{name}_region"
        _check(fmri(["voxel", str(fmri_results), "--roi", name, "--out",
                     str(images[name]), "--force"]), f"bubbles fmri voxel --roi {name}")
    person = out_dir / "person_vs_frontal"
    _check(compare_main([str(person_ci), str(images["frontal"]), "--out", str(person),
                         "--label-a", "person (simulated)", "--label-b",
                         "frontal region (fMRI)", "--panel",
                         f"occipital region (fMRI)={images['occipital']}", "--force"]),
           "bubbles compare person frontal-region")
    return units, person


def report(out):
    """``bubbles report`` of the results folder into ``out/report.html``; None when the
    toolkit has no report command."""
    if importlib.util.find_spec("commands.report") is None:
        return None
    from .report import main as report_main

    path = Path(out) / "report.html"
    _check(report_main([str(out), "--out", str(path), "--force"]), "bubbles report")
    return path


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
                        help="bubbled images shown to the network's units (per layer)")
    parser.add_argument("--scan-trials", type=int, default=60,
                        help="trials in each of the 4 runs of the scanner session")
    parser.add_argument("--scan-speed", type=float, default=SCAN_SPEED,
                        help="the simulated scanner runs this many times faster than a "
                             "real one; a pause of the computer delays an onset by the "
                             "pause times this in the scanner's seconds")
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
    if not 0 < args.scan_speed <= 1000:
        return f"--scan-speed must be in (0, 1000], got {args.scan_speed:g}"
    if args.scan_trials < 2:
        return (f"--scan-trials must be >= 2 (trials per scanner run), got "
                f"{args.scan_trials}")
    return None


def _demo(args):
    steps = _steps(args)
    out = prepare_out(args.out)
    folders = {step: out / step for step in STEPS if step != "report"}
    for step in steps:
        if step in folders:
            prepare_out(folders[step])
    t0 = time.perf_counter()

    def say(step, text):
        print(f"[{step} {time.perf_counter() - t0:5.0f} s] {text}", flush=True)

    def need(path, what, step):
        if path is None or not Path(path).exists():
            raise DataError(f"no {what} in {folders[step]}: run the '{step}' step first")
        return path

    if "stimuli" in steps:
        say("stimuli", stimuli_sheet(folders["stimuli"], seed=args.seed))
    csvs = {w: max(folders["session"].glob(f"{w}_*.csv"), default=None) for w in OBSERVERS}
    if "session" in steps:
        say("session", f"two observers sit {args.trials} trials each")
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
    scan_csv = _newest(folders["scanner"], "person_*.csv")
    if "scanner" in steps:
        say("scanner", f"the person in the simulated scanner: 4 runs of {args.scan_trials} "
                       f"trials at {args.scan_speed:g} times the speed")
        scan_csv = scanner_session(
            folders["scanner"], need(csvs["person"], "session of the person", "session"),
            trials=args.trials, scan_trials=args.scan_trials, seed=args.seed,
            speed=args.scan_speed)
        say("scanner", scan_csv)
    fmri_results = folders["fmri"] / "analysis"
    if "fmri" in steps:
        person_ci = analyses["person"] / "ci.npz"
        say("fmri", "simulating the BOLD runs of the scanner session, then every voxel's "
                    "diagnostic image")
        fmri_study(folders["fmri"], need(scan_csv, "scanner session", "scanner"),
                   seed=args.seed, behaviour=person_ci if person_ci.is_file() else None)
        findings = fmri_findings(fmri_results, folders["fmri"] / "bids", scan_csv)
        (folders["fmri"] / "findings.json").write_text(json.dumps(findings, indent=2))
        say("fmri", f"fMRI: {findings['sentence']}")
    probe_stem = folders["probe"] / "probe"
    if "probe" in steps:
        say("probe", f"{args.n_masks} bubbled faces shown to the units of "
                     f"{', '.join(LAYERS.values())}")
        probe_stem = probe(folders["probe"], n_masks=args.n_masks, seed=args.seed)
        say("probe", probe_stem)
    if "attribution" in steps:
        stems = attribute(folders["attribution"])
        say("attribution", ", ".join(str(s) for s in stems.values()))
    if "compare" in steps:
        compare(folders["compare"], analyses, probe_stem,
                attribution_stems(folders["attribution"]))
        say("compare", folders["compare"] / "compare.png")
    if "compare_brain" in steps:
        say("compare_brain", "voxels and regions against the units; the person against "
                             "the frontal region")
        units, person = compare_brain(
            folders["compare_brain"], need(fmri_results / "summary.json", "fMRI analysis",
                                           "fmri").parent,
            folders["fmri"] / "bids", folders["probe"],
            need(analyses["person"] / "ci.npz", "analysis of the person", "analysis"))
        say("compare_brain", f"{units / 'regions.tsv'}, {person / 'compare.png'}")
    if "report" in steps:
        say("report", "one HTML page of the results")
        path = report(out)
        say("report", path if path else "skipped: this toolkit has no 'bubbles report'")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; results in {out}/")
    return 0


def main(argv=None):
    """Entry point of ``bubbles demo``; returns the exit status (0 done, 1 a step or
    data error, 2 a usage error)."""
    return run_command("demo", build_parser(), _demo,
                       sys.argv[1:] if argv is None else argv, usage_check=_usage)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
