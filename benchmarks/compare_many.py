"""Benchmark: analysis.compare_many, 50,000 voxels x 500 units at 64 x 64.

The voxel maps are read from a ``voxel_ci.zarr`` store on disk (as ``bubbles fmri
analyze`` writes it: chunks of 64 voxels, LZ4), the 500 unit maps (5 layers of 100)
are in memory. Each measurement runs in a fresh process, so its peak resident memory is
its own. Reported: the full comparison (every pair's r, best, best r, best r per
layer), the same with one core kept busy by another process (benchmarks/busy.py), the
same with the cross-validated ridge of every layer (``--fit``), and the baseline, a
loop of :func:`analysis.compare.compare` over pairs (and over voxels, one voxel against
the 500 units per call), timed on a subset and extrapolated.

Targets (issue 13): at most 30 s and 4 GB on 2 cores.

    python benchmarks/compare_many.py            # quiet + busy + baseline
    python benchmarks/compare_many.py --fit      # also the layer fits
    python benchmarks/compare_many.py --voxels 5000   # a quicker run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPE = (64, 64)
SIGMA = 3.0


def _basis(n, seed):
    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.normal(size=(n,) + SHAPE), (0, SIGMA, SIGMA)).astype(
        np.float32)


def make_store(path, n_voxels, seed=0):
    """A voxel store of n_voxels smooth maps (mixtures of 64 smooth maps plus noise)."""
    from analysis.fmri.study import create_store
    from bubbles import BubbleSpec
    import zarr

    spec = BubbleSpec(shape=SHAPE, sigma=SIGMA, n_bubbles=10)
    side = int(np.ceil(n_voxels ** (1 / 3))) + 1
    ijk = np.stack(np.unravel_index(np.arange(n_voxels), (side,) * 3), 1)
    zpath = create_store(path, n_voxels, SHAPE, ijk=ijk, attrs={
        "format": "bubbles.voxel_ci", "spec": spec.to_dict(), "affine": np.eye(4),
        "volume_shape": [side] * 3, "n_trials": 1000, "method": "regression",
        "observer": "voxel"})
    arr = zarr.open_array(str(zpath), mode="r+")
    basis = _basis(64, seed).reshape(64, -1)
    rng = np.random.default_rng(seed + 1)
    for s in range(0, n_voxels, 4096):
        k = min(4096, n_voxels - s)
        z = rng.normal(size=(k, 64)).astype(np.float32) @ basis
        z += 0.3 * rng.normal(size=z.shape).astype(np.float32)
        arr[s:s + k] = z.reshape((k,) + SHAPE)
    return spec


def units(n_units=500, n_layers=5, seed=7):
    from analysis import DiagnosticImage
    from bubbles import BubbleSpec

    spec = BubbleSpec(shape=SHAPE, sigma=SIGMA, n_bubbles=10)
    per = n_units // n_layers
    names = [f"layer{k}:ch{i}" for k in range(n_layers) for i in range(per)]
    return DiagnosticImage(_basis(len(names), seed), "regression", spec, 1000,
                           dims=("target", "y", "x"), targets=names, observer="unit")


def _measure(store, fit, busy):
    """Child process: time compare_many on the store; print JSON."""
    import contextlib

    from analysis.compare_many import compare_many

    b = units()
    ctx = contextlib.nullcontext()
    if busy:
        from busy import busy_core

        ctx = busy_core()
    with ctx:
        t0 = time.perf_counter()
        res = compare_many(store, b, fit_layers=fit, chunk_size=2048)
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(json.dumps({"seconds": seconds, "peak_gb": peak, "n_a": res.n_a,
                      "n_b": len(res.names_b), "median_best_r": float(
                          np.nanmedian(res.best_r))}))


def _baseline(store, n_pairs=200, n_voxels=10):
    """Seconds per pair and per voxel-against-all of a loop of analysis.compare."""
    import warnings

    from analysis.compare import compare
    from analysis.compare_many import load_stack

    sa = load_stack(store)
    b = units()
    maps = sa.read(0, max(n_voxels, 1))[:, 0]
    one = [b.z[j] for j in range(n_pairs)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        for j in range(n_pairs):
            compare(maps[j % len(maps)], one[j])
        per_pair = (time.perf_counter() - t0) / n_pairs
        t0 = time.perf_counter()
        for i in range(n_voxels):
            compare(maps[i], b)
        per_voxel = (time.perf_counter() - t0) / n_voxels
    return per_pair, per_voxel


def _child(store, fit=False, busy=False):
    cmd = [sys.executable, __file__, "--child", str(store)] + (
        ["--fit"] if fit else []) + (["--busy"] if busy else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--voxels", type=int, default=50_000)
    p.add_argument("--fit", action="store_true", help="also time fit_layers=True")
    p.add_argument("--no-busy", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--busy", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _measure(args.child, args.fit, args.busy)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "voxel_ci.zarr"
        t0 = time.perf_counter()
        make_store(store, args.voxels)
        print(f"store of {args.voxels} voxels x {SHAPE[0]} x {SHAPE[1]} written in "
              f"{time.perf_counter() - t0:.1f} s")
        rows = [("quiet", _child(store))]
        if not args.no_busy:
            rows.append(("one core busy", _child(store, busy=True)))
        if args.fit:
            rows.append(("quiet, fit_layers", _child(store, fit=True)))
        per_pair, per_voxel = _baseline(store)
    n_pairs = args.voxels * 500
    print(f"\ncompare_many: {args.voxels} voxels (zarr) x 500 units (5 layers), "
          f"{SHAPE[0]} x {SHAPE[1]}")
    print(f"{'run':<22}{'seconds':>10}{'peak GB':>10}")
    for name, r in rows:
        print(f"{name:<22}{r['seconds']:>10.1f}{r['peak_gb']:>10.2f}")
    quiet = rows[0][1]["seconds"]
    print(f"\nloop of analysis.compare: {per_pair * 1e3:.2f} ms per pair -> "
          f"{per_pair * n_pairs:,.0f} s for {n_pairs:,} pairs ({per_pair * n_pairs / quiet:,.0f}x)")
    print(f"loop of analysis.compare, one voxel against the 500 units per call: "
          f"{per_voxel * 1e3:.1f} ms per voxel -> {per_voxel * args.voxels:,.0f} s "
          f"({per_voxel * args.voxels / quiet:,.0f}x)")
    ok = quiet <= 30 and rows[0][1]["peak_gb"] <= 4
    print(f"target (<= 30 s, <= 4 GB quiet): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
