"""Benchmark: per-trial stimulus preparation of a bubbles session.

What a session does in each inter-trial interval: draw the trial's bubble centres,
render the masks, compose the multi-scale stimulus and upload it as a texture. Target:
at most 8 ms median for a 512 x 512, 5-band stimulus so that the ITI never slips.

Two ways are timed in the same run on the same trials (after 5 untimed warm-up trials):

- ``toolkit``: :class:`experiments.trials.StimulusBuilder` (Laplacian bands computed once
  per image, separable batched masks rendered with BLAS on one thread, one preallocated
  mask buffer) and ``ImageStim.image`` (what
  :class:`experiments.presenter.WindowPresenter` does), on a quiet machine and again
  with one core kept busy by another process (``busy.busy_core``: a lab PC runs other
  things);
- ``naive``: what a first lab script does: the pyramid recomputed every trial, each
  bubble a full-image Gaussian added in a Python loop, then the same upload.

Run under a virtual display when there is no screen::

    xvfb-run -a -s "-screen 0 1024x768x24" python benchmarks/session.py

``--no-window`` skips the texture upload (no display needed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PSYCHOPYNOPACKAGES", "1")

from busy import busy_core  # noqa: E402  (benchmarks/busy.py, beside this file)

from bubbles import BubbleSpec, face_set, laplacian_bands, sample_centers  # noqa: E402
from experiments.trials import StimulusBuilder  # noqa: E402


def naive_stimulus(image, spec, centers):
    """Per-bubble full-image Gaussians, bands recomputed: the baseline."""
    h, w = spec.shape
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    bands = laplacian_bands(image, spec.n_bands)
    stim = bands[-1].copy()
    for band, (c, sigma) in enumerate(zip(centers, spec.sigmas)):
        mask = np.zeros((h, w), np.float32)
        for r, q in c[0]:
            mask += np.exp(-((rows - r) ** 2 + (cols - q) ** 2) / (2 * sigma ** 2))
        stim += np.minimum(mask, 1.0) * bands[band]
    return np.clip(stim, 0.0, 1.0)


def _stats(times):
    ms = 1000 * np.asarray(times)
    return f"median {np.median(ms):7.2f} ms   max {ms.max():7.2f} ms   (n={len(ms)})"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python benchmarks/session.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--naive-trials", type=int, default=20,
                   help="trials for the (slow) naive baseline")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--bands", type=int, default=5)
    p.add_argument("--n-bubbles", type=int, default=60,
                   help="total bubbles per trial (QUEST start of the default config)")
    p.add_argument("--sigma", type=float, default=11.6,
                   help="finest band's sigma in pixels (the 2001 design at 512 px)")
    p.add_argument("--no-window", action="store_true", help="skip the texture upload")
    args = p.parse_args(argv)

    faces = face_set(4, size=args.size)
    spec = BubbleSpec(shape=(args.size, args.size), sigma=args.sigma,
                      n_bubbles=args.n_bubbles, bands=args.bands or None)
    builder = StimulusBuilder(faces.images, spec, mask_seed=1)
    t0 = time.perf_counter()
    builder.precompute()
    setup = time.perf_counter() - t0

    upload = None
    if not args.no_window:
        from psychopy import visual
        win = visual.Window((args.size + 64, args.size + 64), units="pix", color=0.0,
                            checkTiming=False, allowGUI=False)
        stim = visual.ImageStim(win, image=np.zeros((args.size, args.size)),
                                size=(args.size, args.size), flipVert=True,
                                interpolate=False, autoLog=False)

        def upload(image):
            stim.image = image * 2.0 - 1.0

    n_images = len(faces.images)
    counts = np.random.default_rng(0).integers(args.n_bubbles // 2,
                                               args.n_bubbles * 2, size=args.trials)

    def timed_trials():
        parts = {"build": [], "upload": [], "total": []}
        for t in range(args.trials):
            t0 = time.perf_counter()
            prepared = builder.build(t % n_images, int(counts[t]), mask_index=t)
            t1 = time.perf_counter()
            if upload is not None:
                upload(prepared.image)
            t2 = time.perf_counter()
            parts["build"].append(t1 - t0)
            parts["upload"].append(t2 - t1)
            parts["total"].append(t2 - t0)
            if upload is not None and t % 10 == 0:
                stim.draw()
                win.flip()
        return parts

    for t in range(5):                        # warm-up (first texture, caches): untimed
        prepared = builder.build(t % n_images, int(counts[t]), mask_index=t)
        if upload is not None:
            upload(prepared.image)
    parts = timed_trials()                    # quiet
    with busy_core():                         # one core taken by another process
        busy = timed_trials()
    naive = []
    for t in range(args.naive_trials):
        trial_spec = spec.replace(n_bubbles=int(counts[t]))
        t0 = time.perf_counter()
        c = sample_centers(trial_spec, 1, [t])
        image = naive_stimulus(faces.images[t % n_images], trial_spec,
                               c if spec.multiscale else [c])
        if upload is not None:
            upload(image)
        naive.append(time.perf_counter() - t0)
        ref = builder.build(t % n_images, int(counts[t]), mask_index=t).image
        if np.abs(ref - image).max() > 1e-3:
            raise RuntimeError(f"naive and toolkit stimuli differ at trial {t}")

    print(f"bubbles session: per-trial stimulus preparation, {args.size} x {args.size}, "
          f"{spec.n_bands} band(s), {args.n_bubbles // 2}-{args.n_bubbles * 2} bubbles "
          f"(sigma {args.sigma:g} px finest)")
    print(f"  one-off: Laplacian bands of {n_images} images  {1000 * setup:.1f} ms")
    print(f"  toolkit build (centres+masks+compose)  {_stats(parts['build'])}")
    if upload is not None:
        print(f"  toolkit texture upload (ImageStim)     {_stats(parts['upload'])}")
    print(f"  toolkit total per trial                {_stats(parts['total'])}")
    print(f"  one core busy: build                   {_stats(busy['build'])}")
    if upload is not None:
        print(f"  one core busy: texture upload          {_stats(busy['upload'])}")
    print(f"  one core busy: total per trial         {_stats(busy['total'])}")
    print(f"  naive total per trial                  {_stats(naive)}")
    ratio = np.median(naive) / np.median(parts["total"])
    target = "met" if np.median(parts["total"]) <= 0.008 else "NOT met"
    loaded = "met" if np.median(busy["total"]) <= 0.008 else "NOT met"
    print(f"  speed-up {ratio:.1f}x; target <= 8 ms median: {target} (quiet), {loaded} "
          f"(one core busy)")
    if upload is not None:
        win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
