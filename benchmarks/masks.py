"""Mask rendering and multi-scale composition, quiet and with one core kept busy.

    python benchmarks/masks.py [--masks 2000] [--plain 600] [--naive 100] [--rounds 5]

Every figure is measured twice in the same run: on a quiet machine and with one core
kept busy by another process (``busy.busy_core``: a spinning Python process), as on a
lab PC running PsychoPy, a CI runner or a shared server.

(a) 2,000 masks of 256 x 256, 20 bubbles, sigma 10 px: ``render_masks`` in batches of
    200 into one reused buffer (as a network probe consumes them). Two baselines in the
    same run: the naive lab loop (one mask at a time, each bubble a full-image Gaussian
    added in numpy; timed on ``--naive`` masks, reported per mask), and the plain
    batched product (one ``np.matmul`` over the batch with BLAS's own thread pool, the
    renderer before it limited BLAS to one thread and worked in cache-sized chunks;
    timed on the first ``--plain`` masks of each round).
    Median and best of ``--rounds`` interleaved rounds. Targets: >= 8,000 masks/s quiet,
    >= 4,000 masks/s busy, >= 20x the naive loop.
(b) Composing one 512 x 512, 5-band multi-scale stimulus (centres, masks, composition;
    the image's pyramid is computed once per image, outside the loop). Target: median
    <= 5 ms, quiet and busy.
"""

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bubbles import (BubbleSpec, compose_multiscale, laplacian_bands, render_masks,  # noqa: E402
                     sample_centers)
from busy import busy_core  # noqa: E402

CONDITIONS = ("quiet", "busy")


def _condition(name):
    return busy_core() if name == "busy" else contextlib.nullcontext()


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


def plain_batched(spec, centers, out):
    """The batched renderer as it was: one matmul over the batch, BLAS's own threads."""
    h, w = spec.shape
    c = centers.astype(np.float32)
    dy = np.arange(h, dtype=np.float32) - c[:, :, 0:1]
    dx = np.arange(w, dtype=np.float32) - c[:, :, 1:2]
    scale = np.float32(-0.5 / spec.sigma ** 2)
    np.matmul(np.exp(dy * dy * scale).transpose(0, 2, 1), np.exp(dx * dx * scale), out=out)
    np.minimum(out, 1.0, out=out)
    return out


def _rate(render, spec, centers, buf, batch):
    t0 = time.perf_counter()
    for i in range(0, len(centers), batch):
        chunk = centers[i:i + batch]
        render(spec, chunk, buf[:len(chunk)])
    return len(centers) / (time.perf_counter() - t0)


def bench_masks(n_masks, n_plain, n_naive, rounds, batch=200):
    spec = BubbleSpec(shape=(256, 256), sigma=10.0, n_bubbles=20)
    centers = sample_centers(spec, 0, n_masks)
    buf = np.empty((batch, 256, 256), np.float32)
    ours = lambda s, c, out: render_masks(s, c, out=out)  # noqa: E731
    ref = np.empty_like(buf)
    same = np.array_equal(render_masks(spec, centers[:batch], out=buf),      # warm-up
                          plain_batched(spec, centers[:batch], ref))
    print(f"(a) {n_masks} masks 256x256, 20 bubbles, sigma 10, batches of {batch} "
          f"(median / best of {rounds} rounds; masks/s)")
    print(f"    render_masks bit-identical to the plain batched product: {same}")
    result = {}
    for cond in CONDITIONS:
        with _condition(cond):
            r_ours, r_plain = [], []
            for _ in range(rounds):
                r_ours.append(_rate(ours, spec, centers, buf, batch))
                r_plain.append(_rate(plain_batched, spec, centers[:n_plain], buf, batch))
            t0 = time.perf_counter()
            naive_masks(centers[:n_naive], spec.shape, spec.sigma)
            naive = n_naive / (time.perf_counter() - t0)
        result[cond] = (np.median(r_ours), max(r_ours), np.median(r_plain), max(r_plain), naive)
    target = {"quiet": 8000, "busy": 4000}
    for cond, (med, best, p_med, p_best, naive) in result.items():
        print(f"    {cond:5s} render_masks   {med:8.0f} / {best:8.0f}   (target >= "
              f"{target[cond]}: {'met' if med >= target[cond] else 'MISSED'})")
        print(f"    {cond:5s} plain batched  {p_med:8.0f} / {p_best:8.0f}   "
              f"ratio ours / plain {med / p_med:.1f}x")
        print(f"    {cond:5s} naive loop     {naive:8.1f} ({n_naive} masks)     "
              f"ratio ours / naive {med / naive:.0f}x (target >= 20x)")
    quiet, busy = result["quiet"][0], result["busy"][0]
    print(f"    busy / quiet: render_masks {busy / quiet:.2f}, plain batched "
          f"{result['busy'][2] / result['quiet'][2]:.2f}")
    t0 = time.perf_counter()
    render_masks(spec, centers)                              # all at once, fresh memory
    at_once = n_masks / (time.perf_counter() - t0)
    print(f"    quiet render_masks, one fresh array: {at_once:.0f} masks/s (includes "
          f"first-touch page faults of {n_masks * 256 * 256 * 4 / 2**20:.0f} MB)")


def bench_compose(n_trials=200):
    spec = BubbleSpec(shape=(512, 512), sigma=11.6, n_bubbles=120, bands=5)
    rng = np.random.default_rng(0)
    image = rng.random((512, 512)).astype(np.float32)
    bands = laplacian_bands(image, 5)
    print(f"(b) one 512x512 5-band stimulus (sigmas {spec.sigmas[0]:.1f}..{spec.sigmas[-1]:.1f}"
          f" px, {spec.n_bubbles} bubbles; target median <= 5 ms)")
    for cond in CONDITIONS:
        with _condition(cond):
            times = []
            for t in range(n_trials):
                t0 = time.perf_counter()
                masks = render_masks(spec, sample_centers(spec, 0, [t]))
                compose_multiscale(bands, masks[0])
                times.append(time.perf_counter() - t0)
        times = np.array(times[10:]) * 1e3
        print(f"    {cond:5s} median {np.median(times):.2f} ms, max {times.max():.2f} ms "
              f"({'met' if np.median(times) <= 5 else 'MISSED'})")


def describe_machine():
    blas = [f"{i['internal_api']} {i['version']} ({i['num_threads']} threads)"
            for i in threadpool_info() if i["user_api"] == "blas"]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    print(f"machine: {len(os.sched_getaffinity(0))} usable cores, BLAS {', '.join(blas)}"
          f"{', OPENBLAS_CORETYPE=' + coretype if coretype else ''}; load average {load}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=2000)
    parser.add_argument("--plain", type=int, default=600)
    parser.add_argument("--naive", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    describe_machine()
    bench_masks(args.masks, args.plain, args.naive, args.rounds)
    bench_compose()
