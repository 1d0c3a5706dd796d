"""Benchmark of the classification-image engine (analysis.classification_image).

(a) one observer: 10,000 trials of 256 x 256 (target < 1 s);
(b) 2,000 targets (voxels / units) x 1,000 trials of 128 x 128, median split, against a
    per-target loop as lab scripts do it (for each target: mean mask of the trials above
    the median minus mean mask of the others, masks rendered once beforehand). The loop
    is timed on a subset of targets and extrapolated per target (stated in the output).
    Targets: at least 50x faster, peak memory at most 2 GB.

Every engine time is measured on a quiet machine and with one core kept busy by another
process (``busy.busy_core``). The engine limits BLAS to one thread itself (thousands of
small products with two BLAS threads collapse when another process holds a core:
1.5-3x slower busy when this was measured); the loop baseline runs with BLAS's own
thread pool, as a lab script would, and is timed in both conditions too.

Run: ``.venv/bin/python benchmarks/ci.py [--loop-targets 40] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import classification_image  # noqa: E402
from bubbles import (BubbleSpec, center_maps, one_blas_thread, render_masks,  # noqa: E402
                     sample_centers)
from busy import busy_core  # noqa: E402

CONDITIONS = ("quiet", "busy")
BLAS = ("as shipped",)


def _condition(name):
    return busy_core() if name == "busy" else contextlib.nullcontext()


def _blas(name):
    return contextlib.nullcontext()


def _times(fn, repeats):
    """Median and best seconds of ``fn()`` for each (condition, BLAS setting).

    Settings alternate inside each condition so that a change in the machine's load
    touches all of them alike.
    """
    out = {}
    for cond in CONDITIONS:
        with _condition(cond):
            runs = {b: [] for b in BLAS}
            for _ in range(repeats):
                for b in BLAS:
                    with _blas(b):
                        t0 = time.perf_counter()
                        fn()
                        runs[b].append(time.perf_counter() - t0)
        for b in BLAS:
            out[cond, b] = (float(np.median(runs[b])), min(runs[b]))
    return out


def _print_times(times, label, target=None):
    for (cond, b), (med, best) in times.items():
        note = "" if target is None else f"   (target < {target:g} s)"
        print(f"    {cond:5s} {b:15s} {label}: median {med:.3f} s, best {best:.3f} s{note}")
    quiet, busy = (times[c, BLAS[0]][0] for c in CONDITIONS)
    print(f"    busy / quiet (medians): {busy / quiet:.2f}")


def _peak_mb(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    return out, dt, peak


def bench_one_observer(repeats):
    spec = BubbleSpec(shape=(256, 256), sigma=10.0, n_bubbles=20)
    centers = sample_centers(spec, 1, 10_000)
    maps = center_maps(spec, centers)
    rng = np.random.default_rng(0)
    correct = (rng.random(10_000) < 0.75).astype(float)
    print("(a) one observer, 10,000 trials x 256 x 256, sigma 10, 20 bubbles/trial "
          f"(median / best of {repeats})")
    t_c = _times(lambda: classification_image(spec, centers, correct, progress=False),
                 repeats)
    _print_times(t_c, "from centre arrays (incl. sparse centre maps)", target=1.0)
    t_m = _times(lambda: classification_image(spec, maps, correct, progress=False), repeats)
    _print_times(t_m, "from precomputed centre maps")
    return max(med for med, _ in t_c.values())


def bench_many_targets(n_loop, repeats):
    n_trials, n_targets = 1000, 2000
    spec = BubbleSpec(shape=(128, 128), sigma=5.0, n_bubbles=15)
    centers = sample_centers(spec, 2, n_trials)
    rng = np.random.default_rng(1)
    # voxel-like amplitudes: noise plus a weak dependence on a region
    near = (np.hypot(centers[:, :, 0] - 40, centers[:, :, 1] - 70) < 12).any(axis=1)
    resp = (rng.normal(size=(n_trials, n_targets))
            + rng.uniform(0, 1, n_targets) * near[:, None]).astype(np.float32)

    def ours():
        return classification_image(spec, centers, resp, method="median_split",
                                    progress=False)

    ci, _, peak_ours = _peak_mb(ours)           # first call: memory (traced) + warm-up
    rss_ours = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with one_blas_thread():
        same = np.array_equal(ours().z, ci.z)
    times = _times(ours, repeats)

    t0 = time.perf_counter()
    masks = render_masks(spec, centers)
    t_render = time.perf_counter() - t0
    med = np.median(resp, axis=0)
    loop = np.empty((n_loop, 128, 128), np.float32)
    t_loop = {}
    for cond in CONDITIONS:
        with _condition(cond):
            t0 = time.perf_counter()
            for j in range(n_loop):
                high = resp[:, j] > med[j]
                loop[j] = masks[high].mean(axis=0) - masks[~high].mean(axis=0)
            t_loop[cond] = (time.perf_counter() - t0) / n_loop
    sub = classification_image(spec, centers, resp[:, :n_loop], method="median_split",
                               keep_raw=True, progress=False)
    r_raw = np.corrcoef(sub.raw.ravel(), loop.ravel())[0, 1]
    print(f"(b) {n_targets} targets x {n_trials} trials x 128 x 128, sigma 5, 15 bubbles, "
          f"median split (median / best of {repeats})")
    _print_times(times, "engine, z maps of all targets")
    print(f"    z maps bit-identical with one BLAS thread and with BLAS's threads: {same}")
    print(f"    engine peak traced memory {peak_ours:.0f} MB (process max RSS so far "
          f"{rss_ours:.0f} MB; output alone {ci.z.nbytes / 2 ** 20:.0f} MB)")
    speedup = {}
    for cond in CONDITIONS:
        best_engine = min(times[cond, b][0] for b in BLAS)
        speedup[cond] = t_loop[cond] * n_targets / best_engine
        print(f"    {cond:5s} per-target loop: {t_loop[cond] * 1e3:.2f} ms/target measured on "
              f"{n_loop} targets -> {t_loop[cond] * n_targets:.1f} s extrapolated to "
              f"{n_targets} targets; speed-up {speedup[cond]:.0f}x (faster engine setting; "
              f"target >= 50x)")
    print(f"    (+ {t_render:.2f} s to render the masks once for the loop, not counted); "
          f"peak memory target <= 2048 MB")
    print(f"    agreement with the loop (raw maps of the {n_loop} looped targets): "
          f"r = {r_raw:.4f} (differs only where bubbles overlap and the masks clip at 1)")
    return min(speedup.values()), peak_ours


def describe_machine():
    blas = [f"{i['internal_api']} {i['version']} ({i['num_threads']} threads)"
            for i in threadpool_info() if i["user_api"] == "blas"]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {len(os.sched_getaffinity(0))} usable cores, BLAS {', '.join(blas)}; "
          f"load average {load}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loop-targets", type=int, default=40,
                   help="targets timed in the per-target loop (extrapolated)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed calls per condition and BLAS setting")
    args = p.parse_args(argv)
    describe_machine()
    t_a = bench_one_observer(args.repeats)
    speedup, peak = bench_many_targets(args.loop_targets, args.repeats)
    verdict = {"(a) < 1 s, quiet and busy": t_a < 1.0,
               "(b) >= 50x, quiet and busy": speedup >= 50,
               "(b) peak <= 2 GB": peak <= 2048}
    print("targets: " + "; ".join(f"{k} {'met' if ok else 'MISSED'}"
                                  for k, ok in verdict.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
