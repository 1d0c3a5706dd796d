"""Mask rendering and multi-scale composition, against a naive loop in the same run.

    python benchmarks/masks.py [--masks 2000] [--naive 100]

(a) 2,000 masks of 256 x 256, 20 bubbles, sigma 10 px: ``render_masks`` in batches of
    200 into one reused buffer (as a network probe consumes them), against the naive
    lab loop (one mask at a time, each bubble a full-image Gaussian added in numpy),
    timed on ``--naive`` masks and reported per mask. Targets: >= 5,000 masks/s and
    >= 20x the naive loop.
(b) Composing one 512 x 512, 5-band multi-scale stimulus (centres, masks, composition;
    the image's pyramid is computed once per image, outside the loop). Target: median
    <= 5 ms.
"""

import argparse
import time

import numpy as np

from bubbles import (BubbleSpec, compose_multiscale, laplacian_bands, render_masks,
                     sample_centers)


def naive_masks(centers, shape, sigma):
    h, w = shape
    rr, cc = np.mgrid[:h, :w]
    out = []
    for trial in centers:
        mask = np.zeros(shape)
        for r, c in trial:
            mask += np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma ** 2))
        out.append(np.minimum(mask, 1.0))
    return out


def bench_masks(n_masks, n_naive, batch=200):
    spec = BubbleSpec(shape=(256, 256), sigma=10.0, n_bubbles=20)
    centers = sample_centers(spec, 0, n_masks)
    buf = np.empty((batch, 256, 256), np.float32)
    render_masks(spec, centers[:batch], out=buf)            # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(0, n_masks, batch):
            chunk = centers[i:i + batch]
            render_masks(spec, chunk, out=buf[:len(chunk)])
        times.append(time.perf_counter() - t0)
    ours = n_masks / min(times)
    t0 = time.perf_counter()
    naive_masks(centers[:n_naive], spec.shape, spec.sigma)
    naive = n_naive / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    render_masks(spec, centers)                              # all at once, fresh memory
    at_once = n_masks / (time.perf_counter() - t0)
    print(f"(a) {n_masks} masks 256x256, 20 bubbles, sigma 10")
    print(f"    render_masks, batches of {batch}: {ours:10.0f} masks/s   (target >= 5000)")
    print(f"    render_masks, one fresh array:   {at_once:10.0f} masks/s   "
          f"(includes first-touch page faults of {n_masks * 256 * 256 * 4 / 2**20:.0f} MB)")
    print(f"    naive loop ({n_naive} masks):        {naive:10.1f} masks/s")
    print(f"    ratio ours / naive: {ours / naive:.0f}x   (target >= 20x)")


def bench_compose(n_trials=200):
    spec = BubbleSpec(shape=(512, 512), sigma=11.6, n_bubbles=120, bands=5)
    rng = np.random.default_rng(0)
    image = rng.random((512, 512)).astype(np.float32)
    bands = laplacian_bands(image, 5)
    times = []
    for t in range(n_trials):
        t0 = time.perf_counter()
        masks = render_masks(spec, sample_centers(spec, 0, [t]))
        compose_multiscale(bands, masks[0])
        times.append(time.perf_counter() - t0)
    times = np.array(times[10:]) * 1e3
    print(f"(b) one 512x512 5-band stimulus (sigmas {spec.sigmas[0]:.1f}..{spec.sigmas[-1]:.1f}"
          f" px, {spec.n_bubbles} bubbles): median {np.median(times):.2f} ms, "
          f"max {times.max():.2f} ms   (target median <= 5 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=2000)
    parser.add_argument("--naive", type=int, default=100)
    args = parser.parse_args()
    bench_masks(args.masks, args.naive)
    bench_compose()
