"""``bubbles demo``: the whole pipeline on the embedded defaults.

Part of the command-line layer (like :mod:`bubbles.cli`): each step imports the package
it drives only when it runs, and calls the same function as the matching ``bubbles``
subcommand, so the demo exercises exactly what a lab runs.

Steps, each writing into its own folder under ``--out``:

1. ``stimuli/``  contact sheet of the face set, bubbled faces and their masks;
2. ``session/``  the embedded network sits the PsychoPy session as a participant
   (``bubbles run --simulate model``), QUEST holding it near 75% correct;
3. ``analysis/`` its diagnostic image with the Stat4Ci tests (``bubbles analyze``);
4. ``probe/``    diagnostic images of every channel of a conv layer (``bubbles ann probe``);
5. ``attribution/`` occlusion, saliency and integrated gradients on one face;
6. ``compare/``  the model's behavioural image against its best unit and the
   attribution maps (``bubbles compare``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

STEPS = ("stimuli", "session", "analysis", "probe", "attribution", "compare")


def stimuli_sheet(out_dir, *, seed=0):
    """Contact sheet: faces (row 1), bubbled faces (row 2) and their masks (row 3)."""
    from bubbles import (BubbleSpec, bubble_stimuli, default_faces, render_masks,
                         sample_centers, save_contact_sheet)

    faces = default_faces()
    picks = [0, 4, 8, 9, 13, 17]      # two identities per expression, in order
    spec = BubbleSpec(shape=faces.shape, sigma=10.0, n_bubbles=30, background=0.5)
    masks = render_masks(spec, sample_centers(spec, seed, len(picks)))
    bubbled = np.stack([bubble_stimuli(faces.images[i], spec, m[None])[0]
                        for i, m in zip(picks, masks)])
    multi = BubbleSpec(shape=faces.shape, sigma=5.8, n_bubbles=80, bands=5)
    mmasks = render_masks(multi, sample_centers(multi, seed, len(picks)))
    multibubbled = np.stack([bubble_stimuli(faces.images[i], multi, m[None])[0]
                             for i, m in zip(picks, mmasks)])
    labels = list(faces.table["stimulus_id"].iloc[picks])
    rows = np.concatenate([faces.images[picks], bubbled, masks, multibubbled])
    names = labels + [f"bubbled {k}" for k in range(len(picks))] + \
        [f"mask {k}" for k in range(len(picks))] + \
        [f"5-band {k}" for k in range(len(picks))]
    path = Path(out_dir) / "stimuli.png"
    save_contact_sheet(rows, path, ncols=len(picks), labels=names)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="bubbles demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/demo", help="output folder")
    parser.add_argument("--steps", default=",".join(STEPS),
                        help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"--steps: unknown step(s) {unknown}; expected some of {list(STEPS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if "stimuli" in steps:
        (out / "stimuli").mkdir(exist_ok=True)
        print(f"[stimuli] {stimuli_sheet(out / 'stimuli', seed=args.seed)}")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; results in {out}/")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
