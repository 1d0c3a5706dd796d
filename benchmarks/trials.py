"""Trials needed for a good diagnostic image: regression vs GLM vs sparse estimators.

For planted observers whose diagnostic information is known, each estimator's map is
correlated (Pearson r, all pixels) with the planted ground truth on the first n trials
of a session, for n on a trial grid; the number of trials to reach r = 0.8 is
interpolated (linearly in log n between the grid points that bracket the first
crossing) per seed, and its median over seeds is compared with today's regression
image. A null observer gives the family-wise error of each method's own test at
p = .05: the random-field pixel test of the regression z (Chauvin et al. 2005, what
``bubbles analyze`` runs), the permutation max-statistic threshold of the GLM and
sparse maps (analysis.estimators).

Planted observers (faces of bubbles.face_set, happy vs fearful, grey background 0.5):

* ``template``: analysis.simulate.TemplateObserver with the two class means (minus the
  background) as templates; response = correct (binary); internal noise set for 75 %
  correct at the spec's bubble count. Ground truth: each pixel's expected push towards
  the right answer per unit revealed, ``g = mean_i s_i (img_i - bg) (t_happy -
  t_fearful)`` (``s_i`` +1 for happy images, -1 for fearful), smoothed with the bubble
  sigma (the finest scale the apertures sample).
* ``voxel``: a linear target, ``response = <revealed image, W> + noise`` with the
  revealed image ``mask * (img - bg)`` and ``W`` a small receptive field over the eyes
  (Gaussian-smoothed eye ROI); noise SD twice the signal SD (R^2 = 0.2, a good fMRI
  voxel). Ground truth: ``W * mean_i (img_i - bg)``, smoothed with the bubble sigma.
* ``network`` (when torch is installed; ``--no-network`` leaves it out):
  ann_bridge.observer.NetworkObserver with decision noise for 75 % correct. It has no
  planted truth: the reference is the regression image of an independent 20,000-trial
  session, which favours regression (it is that method's own limit); reported for
  completeness.

Columns are (sampling, estimator) pairs; sampling is 'uniform' (bubbles.sample_centers)
or 'adaptive' (analysis.adaptive's default policy, analysed with the correction for its
unequal sampling: the unbiased map for r, the per-block exact z for the null). A session
is a function ``(spec, planted, n, seed, *, null=False) -> (centers, responses,
sampling record or None)`` in ``SESSIONS``; ``COLUMNS`` pairs it with an estimator. A causal policy's first n trials are a
session of n trials, so the trial grid is read off prefixes of one session per seed.

Default run (about 5 minutes on 2 shared cores, 2 without the network): 64 x 64 faces,
sigma 3 px, 10 bubbles, coarse grid of 16 cells, 10 seeds, trial grid 100 ... 3200 (each
method stops at its first grid point past r = 0.8), family-wise error from 20 null
sessions of 400 trials with 39 permutations each (a coarse estimate: its 95 % interval
is printed). ``--full``: 128 x 128 faces, sigma 6 px, grid of 32 cells, 20 seeds, trials
up to 6400, 100 null sessions with 99 permutations (about an hour).

Run: ``.venv/bin/python benchmarks/trials.py [--full] [--no-network] [--seeds 10]``
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage, stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import classification_image, pixel_test  # noqa: E402
from analysis.adaptive import adaptive_image, run_adaptive  # noqa: E402
from analysis.estimators import glm_image  # noqa: E402
from analysis.simulate import NullObserver, TemplateObserver  # noqa: E402
from bubbles import (BubbleSpec, bubble_stimuli, face_set, render_masks,  # noqa: E402
                     sample_centers, trial_rng)

TARGET_R = 0.8
LABELS = ("happy", "fearful")
BG = 0.5


@dataclass
class Config:
    size: int = 64
    sigma: float = 3.0
    n_bubbles: int = 10
    resolution: int = 16
    seeds: int = 10
    grid: tuple = (100, 200, 400, 800, 1600, 3200)
    null_repeats: int = 20
    null_trials: int = 400
    permutations: int = 39
    identities: int = 10


FULL = Config(size=128, sigma=6.0, n_bubbles=10, resolution=32, seeds=20,
              grid=(100, 200, 400, 800, 1600, 3200, 6400), null_repeats=100,
              null_trials=800, permutations=99, identities=10)


# -- planted observers -----------------------------------------------------------------
@dataclass
class Planted:
    """An observer of the face task with its ground truth.

    ``respond(masks, seed, start)`` answers the trials ``start, start + 1, ...`` shown
    through ``masks`` (n, H, W); the image of trial t is drawn from ``(seed, t)`` alone,
    so an adaptive session that renders trial by trial gets the same images.
    """

    name: str
    kind: str                      # 'binary' or 'continuous'
    truth: np.ndarray              # (H, W), or None
    respond: object
    null: object                   # null version: same signature


def _images(n_images, seed, start, n):
    """Image index of trials start .. start + n - 1, each drawn from (seed, trial)."""
    return np.array([trial_rng(seed, start + t, stream=7).integers(n_images)
                     for t in range(n)])


def _face_data(cfg):
    faces = face_set(cfg.identities, size=cfg.size, expressions=LABELS)
    return faces.images.astype(np.float64), np.array(faces.table.expression), faces


def _stimuli(spec, images, idx, masks):
    stim = np.empty(masks.shape, np.float32)
    for i in np.unique(idx):
        sel = np.flatnonzero(idx == i)
        stim[sel] = bubble_stimuli(spec, images[i], masks[sel])
    return stim


def template_observer(cfg, spec):
    images, labels, _ = _face_data(cfg)
    t = {lab: images[labels == lab].mean(axis=0) - BG for lab in LABELS}
    sign = np.where(labels == LABELS[0], 1.0, -1.0)
    g = np.mean(sign[:, None, None] * (images - BG), axis=0) * (t[LABELS[0]] - t[LABELS[1]])
    truth = ndimage.gaussian_filter(g, cfg.sigma, mode="constant")
    # internal noise for 75 % correct at this bubble count (calibration trials)
    masks = render_masks(spec, sample_centers(spec, 10 ** 6, 2000))
    idx = _images(len(images), 10 ** 6, 0, 2000)
    x = (masks * (images[idx] - BG)).reshape(len(idx), -1)
    d = sign[idx] * (x @ (t[LABELS[0]] - t[LABELS[1]]).ravel())
    lo, hi = 0.0, 10 * d.std()
    for _ in range(40):                       # P(correct) = mean Phi(d / (s sqrt 2))
        mid = (lo + hi) / 2
        acc = stats.norm.cdf(d / (mid * math.sqrt(2))).mean()
        lo, hi = (mid, hi) if acc > 0.75 else (lo, mid)
    noise = (lo + hi) / 2

    def respond(masks, seed, start):
        idx = _images(len(images), seed, start, len(masks))
        obs = TemplateObserver(t, internal_noise=noise, seed=trial_rng(seed, start,
                                                                       stream=8))
        said = obs.decide_batch(_stimuli(spec, images, idx, masks), background=BG)
        return (np.array(said) == labels[idx]).astype(float)

    def null(masks, seed, start):
        idx = _images(len(images), seed, start, len(masks))
        said = NullObserver(LABELS, seed=trial_rng(seed, start, stream=8)).decide_batch(
            masks)
        return (np.array(said) == labels[idx]).astype(float)

    return Planted("template", "binary", truth, respond, null)


def voxel_observer(cfg, spec):
    images, _, faces = _face_data(cfg)
    eyes = faces.rois["eyes"].any(axis=0).astype(np.float64)
    rf = ndimage.gaussian_filter(eyes, cfg.sigma / 2)
    rf /= rf.max()
    contrast = images - BG
    truth = ndimage.gaussian_filter(rf * contrast.mean(axis=0), cfg.sigma, mode="constant")
    masks = render_masks(spec, sample_centers(spec, 10 ** 6, 2000))
    idx = _images(len(images), 10 ** 6, 0, 2000)
    noise_sd = 2.0 * np.std((masks * contrast[idx] * rf).sum(axis=(1, 2)))

    def respond(masks, seed, start):
        idx = _images(len(images), seed, start, len(masks))
        signal = (masks * contrast[idx] * rf).sum(axis=(1, 2))
        return signal + trial_rng(seed, start, stream=9).normal(0, noise_sd, len(masks))

    def null(masks, seed, start):
        return trial_rng(seed, start, stream=9).normal(0, noise_sd, len(masks))

    return Planted("voxel", "continuous", truth, respond, null)


def network_observer(cfg, spec):
    from ann_bridge.observer import NetworkObserver    # imports torch: only here

    images, labels, _ = _face_data(cfg)
    obs = NetworkObserver(labels=LABELS, seed=0)
    masks = render_masks(spec, sample_centers(spec, 10 ** 6, 1000))
    idx = _images(len(images), 10 ** 6, 0, 1000)
    obs.decision_noise = obs.noise_for_accuracy(_stimuli(spec, images, idx, masks),
                                                labels[idx], 0.75)

    def respond(masks, seed, start):
        idx = _images(len(images), seed, start, len(masks))
        obs.rng = trial_rng(seed, start, stream=8)
        said = obs.decide_batch(_stimuli(spec, images, idx, masks))
        return (np.array(said) == labels[idx]).astype(float)

    planted = Planted("network", "binary", None, respond, None)
    ref = uniform_session(spec, planted, 20_000, seed=10 ** 7)
    planted.truth = classification_image(spec, ref[0], ref[1], progress=False).z
    return planted


# -- sessions (columns: sampling x estimator) ----------------------------------------
def uniform_session(spec, planted, n, seed, *, null=False):
    """Centres from bubbles.sample_centers and the observer's responses, in chunks."""
    centers = sample_centers(spec, seed, n)
    respond = planted.null if null else planted.respond
    out = np.empty(n)
    for start in range(0, n, 500):
        stop = min(n, start + 500)
        out[start:stop] = respond(render_masks(spec, centers[start:stop]), seed, start)
    return centers, out, None


def adaptive_session(spec, planted, n, seed, *, null=False):
    """An adaptive session (analysis.adaptive, its default policy): each block's centres
    drawn from the density the trials before it give; the sampling record (densities
    and each trial's block) is the third element, for the corrected estimator."""
    respond = planted.null if null else planted.respond

    def block(centers, trials):
        return respond(render_masks(spec, centers), seed, int(trials[0]))

    run = run_adaptive(spec, block, n, seed)
    return run.centers, run.responses, (run.densities, run.blocks)


SESSIONS = {"uniform": uniform_session, "adaptive": adaptive_session}


def _no_weights(weights):
    if weights is not None:
        raise ValueError("this estimator does not take per-trial sampling weights; pair "
                         "an adaptive session with an estimator that corrects for them")


def est_regression(spec, centers, r, cfg, *, weights=None, test=False, seed=0):
    _no_weights(weights)
    img = classification_image(spec, centers, r, progress=False)
    if not test:
        return img.z
    return pixel_test(img.z, cfg.sigma, p=0.05).n_significant > 0


def _est_glm(method):
    def est(spec, centers, r, cfg, *, weights=None, test=False, seed=0):
        _no_weights(weights)
        img = glm_image(spec, centers, r, method, resolution=cfg.resolution,
                        null="permutation" if test else "none",
                        n_permutations=cfg.permutations, seed=seed, progress=False)
        return img.info["n_significant"] > 0 if test else img.raw
    return est


def est_adaptive(spec, centers, r, cfg, *, weights=None, test=False, seed=0):
    """Regression corrected for the adaptive sampling: the unbiased map, and for the
    test the per-block exact z (analysis.adaptive.adaptive_image)."""
    densities, blocks = weights
    img = adaptive_image(spec, centers, r, densities, blocks, "regression",
                         scale="exact" if test else "map", progress=False)
    if not test:
        return img.z
    return pixel_test(img.z, cfg.sigma, p=0.05).n_significant > 0


ESTIMATORS = {"regression": est_regression, "glm": _est_glm("glm"),
              "sparse": _est_glm("sparse"), "adaptive": est_adaptive}
# (column name, session, estimator); the first column is the baseline of the ratios
COLUMNS = [("regression", "uniform", "regression"), ("glm", "uniform", "glm"),
           ("sparse", "uniform", "sparse"), ("adaptive", "adaptive", "adaptive")]


# -- measurement -----------------------------------------------------------------------
def crossing(ns, rs, target=TARGET_R):
    """Trials at which r first reaches ``target``, interpolated in log n (inf: never).

    >>> round(crossing([100, 400], [0.6, 1.0]), 1)
    200.0
    """
    for k, r in enumerate(rs):
        if r >= target:
            if k == 0:
                return float(ns[0])
            f = (target - rs[k - 1]) / (r - rs[k - 1])
            return float(ns[k - 1] * (ns[k] / ns[k - 1]) ** f)
    return math.inf


def corr(a, b):
    a, b = np.ravel(a) - np.mean(a), np.ravel(b) - np.mean(b)
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else 0.0


def trials_to_target(spec, planted, cfg, columns):
    """Per column: r curves per seed, crossings per seed, seconds per fit."""
    out = {name: {"r": [], "n": [], "cross": [], "sec": []} for name, _, _ in columns}
    n_max = max(cfg.grid)
    for seed in range(cfg.seeds):
        sessions = {}
        for name, session, est in columns:
            if session not in sessions:
                sessions[session] = SESSIONS[session](spec, planted, n_max, seed)
            centers, r, wts = sessions[session]
            ns, rs = [], []
            for n in cfg.grid:          # the first n trials (a causal policy's prefix)
                t0 = time.perf_counter()
                m = ESTIMATORS[est](spec, centers[:n], r[:n], cfg, seed=seed,
                                    weights=None if wts is None else
                                    (wts[0], wts[1][:n]))
                out[name]["sec"].append((n, time.perf_counter() - t0))
                ns.append(n)
                rs.append(corr(m, planted.truth))
                if rs[-1] >= TARGET_R:
                    break
            out[name]["r"].append(rs)
            out[name]["n"].append(ns)
            out[name]["cross"].append(crossing(ns, rs))
        print(f"    seed {seed}: " + ", ".join(
            f"{name} {out[name]['cross'][-1]:.0f}" for name, _, _ in columns), flush=True)
    return out


def null_fwer(spec, planted, cfg, columns):
    """Per column: sessions of a null observer with any significant pixel, out of R."""
    hits = {name: 0 for name, _, _ in columns}
    for k in range(cfg.null_repeats):
        sessions = {}
        for name, session, est in columns:
            if session not in sessions:
                sessions[session] = SESSIONS[session](spec, planted, cfg.null_trials,
                                                      10_000 + k, null=True)
            centers, r, wts = sessions[session]
            hits[name] += bool(ESTIMATORS[est](spec, centers, r, cfg, test=True, seed=k,
                                               weights=wts))
    return hits


def _ci(k, n):
    lo = stats.beta.ppf(0.025, k, n - k + 1) if k > 0 else 0.0
    hi = stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return lo, hi


def report(planted, cfg, res, hits, columns):
    base = np.median(res[columns[0][0]]["cross"])
    n_max = max(cfg.grid)
    print(f"\n  {planted.name}: trials to r = {TARGET_R} (median over {cfg.seeds} seeds), "
          f"ratio to {columns[0][0]}, null family-wise error at p = .05")
    print(f"  {'method':12s} {'trials':>9s} {'IQR':>15s} {'ratio':>6s} {'reached':>8s} "
          f"{'r@1st n':>7s} {'FWER':>13s} {'95% CI':>13s} {'s/fit@n':>12s}")
    for name, _, _ in columns:
        c = np.array(res[name]["cross"])
        med = np.median(c)
        q1, q3 = np.quantile(c, [0.25, 0.75], method="inverted_cdf")
        fmt = lambda v: f"{v:.0f}" if np.isfinite(v) else f">{n_max}"     # noqa: E731
        ratio = med / base if np.isfinite(med) and np.isfinite(base) else float("nan")
        r0 = np.median([rs[0] for rs in res[name]["r"]])
        secs = res[name]["sec"]
        n_big = max(n for n, _ in secs)
        s_big = np.median([s for n, s in secs if n == n_big])
        fw = ""
        if hits is not None:
            lo, hi = _ci(hits[name], cfg.null_repeats)
            k, reps = hits[name], cfg.null_repeats
            fw = f"{k:3d}/{reps:<3d} {k / reps:4.0%}  [{lo:.2f}, {hi:.2f}]"
        print(f"  {name:12s} {fmt(med):>9s} {fmt(q1) + '-' + fmt(q3):>15s} {ratio:6.2f} "
              f"{int(np.isfinite(c).sum()):3d}/{len(c):<4d} {r0:7.2f} {fw:>27s} "
              f"{s_big:6.2f}@{n_big}")
    return base


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the bigger run (about an hour)")
    p.add_argument("--no-network", action="store_true",
                   help="leave out the embedded network as observer (needs torch)")
    p.add_argument("--seeds", type=int, help="seeds per observer (default 10, full 20)")
    p.add_argument("--null-repeats", type=int, help="null sessions for the FWER")
    p.add_argument("--observers", default="template,voxel,network",
                   help="comma-separated: template, voxel, network (default: all)")
    args = p.parse_args(argv)
    cfg = FULL if args.full else Config()
    if args.seeds:
        cfg.seeds = args.seeds
    if args.null_repeats is not None:
        cfg.null_repeats = args.null_repeats
    spec = BubbleSpec(shape=(cfg.size, cfg.size), sigma=cfg.sigma, n_bubbles=cfg.n_bubbles,
                      background=BG)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {len(os.sched_getaffinity(0))} usable cores, load average {load}")
    print(f"faces {cfg.size} x {cfg.size} ({2 * cfg.identities} images, {LABELS}), sigma "
          f"{cfg.sigma:g} px, {cfg.n_bubbles} bubbles; coarse grid {cfg.resolution} cells; "
          f"trial grid {list(cfg.grid)}; {cfg.seeds} seeds; null: {cfg.null_repeats} "
          f"sessions x {cfg.null_trials} trials, {cfg.permutations} permutations")
    makers = {"template": template_observer, "voxel": voxel_observer,
              "network": network_observer}
    names = [s.strip() for s in args.observers.split(",") if s.strip()]
    if "network" in names and (args.no_network or not importlib.util.find_spec("torch")):
        names.remove("network")
        print("network observer left out" + ("" if args.no_network else
                                             " (torch is not installed)"))
    bad = [s for s in names if s not in makers]
    if bad:
        p.error(f"--observers: unknown {bad}; choose from {list(makers)}")
    observers = [makers[s](cfg, spec) for s in names]
    t_all = time.perf_counter()
    for planted in observers:
        t0 = time.perf_counter()
        print(f"\n{planted.name} ({planted.kind} responses)")
        res = trials_to_target(spec, planted, cfg, COLUMNS)
        hits = None
        if planted.null is not None and cfg.null_repeats > 0:
            hits = null_fwer(spec, planted, cfg, COLUMNS)
        report(planted, cfg, res, hits, COLUMNS)
        print(f"  ({time.perf_counter() - t0:.0f} s)")
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s. Goal: half the trials of "
          "regression or fewer (ratio <= 0.5) with FWER <= 5 %.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
