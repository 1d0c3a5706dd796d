"""Planning a study by simulation: recovery, power and accuracy over a grid of settings.

Before booking participants or scanner time, :func:`plan_study` simulates the experiment
with a planted observer for every bubble size, bubble count, trial number and analysis
method of a grid, and :func:`plan_fmri` does the same for a voxel in the scanner (TR,
inter-trial interval, runs, voxel SNR). Each cell reports:

- **recovery**: Pearson r of the diagnostic image with the planted truth (the map the
  observer's strategy implies), mean over replications;
- **power** of the pixel and of the cluster test (Stat4Ci, as ``bubbles analyze`` runs
  them, :func:`analysis.analyze.image_tests`): the fraction of replications with at
  least one significant pixel (cluster) inside the diagnostic region, the pixels where
  the truth reaches half its maximum; **coverage**: the mean fraction of that region
  found significant;
- **accuracy** at that bubble count, and for each bubble size the count at which the
  observer is ``quest_threshold`` correct: the count QUEST would settle near (it holds
  that accuracy by design).

:meth:`PlanResult.recommend` picks the cheapest cell that reaches a target power and
:func:`plot_power` draws power against trials.

Simulation. A replication of a behavioural cell is one session of
:func:`analysis.simulate.simulate_session` on the embedded face set (20 identities x 3
expressions) with ``max(trials)`` trials; the map after ``T`` trials is made from its
first ``T`` trials (the trial numbers of one replication are nested, as a lab analysing
a session part way). Sessions run at ``resolution`` pixels (default 128, sigma scaled
with the image and the template observer's internal noise with the pixel count, so the
observer is the one of a 256 px session; 256 simulates the stimulus itself). Every
replication is seeded from ``(seed, sigma, n_bubbles, replication)`` alone, and cells run
in parallel processes: results do not depend on the number of workers.

Truth. For the template observer (:class:`analysis.simulate.TemplateObserver` with the
templates of ``bubbles run --simulate template``) it is analytic: with ``x_i`` image
``i`` minus its grey and ``t_l`` the template of label ``l``, the correct answer's
margin is linear in the mask with weights ``w = mean_i x_i (t_{y_i} - mean_{l != y_i}
t_l)``, and the expected regression image is ``w`` smoothed twice by the aperture, a
Gaussian of ``sigma * sqrt(2)``. Any other observer (a network) gets the regression map
of one independent reference session of ``reference_trials`` trials per (sigma, count).

fMRI. One replication is a study of ``voxels`` voxels driven by the same stimulus
feature (the mean of the mask inside the face's eyes by default), as
:mod:`analysis.fmri.simulate` plants them: single-trial amplitude ``base + snr *
zscore(feature) + trial_sd * e`` (percent signal change at the peak of one event; the
voxel SNR is the feature's effect over the SD of the voxel's time-series noise, 1 %),
trials in ``runs`` runs at jittered intervals around ``iti``, Glover HRF, AR(1) noise,
cosine drift; the amplitudes are estimated by LSS in closed form
(:func:`analysis.fmri.glm.trial_weights`), revealed area and runs regressed out and the
images tested per voxel as ``bubbles fmri analyze`` does (two-tailed RFT pixel test,
Bonferroni over ``n_voxels`` voxels; the cluster test at ``p / n_voxels``).

References
----------
Gosselin, F. & Schyns, P. G. (2001). Vision Research 41, 2261-2271.
:doi:`10.1016/S0042-6989(01)00097-9`
Chauvin, A., Worsley, K. J., Schyns, P. G., Arguin, M. & Gosselin, F. (2005). J. Vis.
5(9):1. :doi:`10.1167/5.9.1`
Watson, A. B. & Pelli, D. G. (1983). QUEST: a Bayesian adaptive psychometric method.
Perception & Psychophysics 33, 113-120. :doi:`10.3758/BF03202828`
Mumford, J. A. et al. (2012). NeuroImage 59, 2636-2643.
:doi:`10.1016/j.neuroimage.2011.08.076`
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import ndimage
from tqdm.auto import tqdm

from bubbles import (BubbleSpec, background_levels, face_set, one_blas_thread,
                     render_masks, sample_centers, trial_rng)

from .analyze import image_tests
from .ci import METHODS, classification_image
from .fmri.glm import event_regressors, frame_times, hrf_kernels, run_design, trial_weights
from .fmri.images import bonferroni_threshold, covariate_matrix, residualize
from .simulate import TemplateObserver, label_templates, simulate_session
from .stats import cluster_test
from .zscore import zscore

__all__ = ["PlanCell", "PlanResult", "plan_study", "plan_fmri", "plot_power",
           "template_truth", "scan_seconds", "wilson", "STIMULUS_SIZE"]

STIMULUS_SIZE = 256           # the embedded faces: sigma and counts are given at this size
REGION_LEVEL = 0.5            # diagnostic region: truth >= half its maximum
TESTS = ("pixel", "cluster")


# -- the planted observer ----------------------------------------------------------------
def template_truth(images, labels, templates, background, sigma):
    """The expected regression image of a template observer (see the module notes):
    ``mean_i x_i (t_{y_i} - mean_{l != y_i} t_l)`` smoothed by a Gaussian of
    ``sigma * sqrt(2)`` pixels (zero outside the image). Shape (H, W)."""
    grey = background_levels(images, background).astype(np.float64)
    names = list(templates)
    t = np.stack([templates[n] for n in names])
    w = np.zeros(images.shape[1:])
    for img, lab, g in zip(images, labels, grey):
        k = names.index(str(lab))
        others = np.delete(t, k, axis=0).mean(axis=0)
        w += (img - g) * (t[k] - others)
    w /= len(images)
    return ndimage.gaussian_filter(w, sigma * math.sqrt(2), mode="constant")


@lru_cache(maxsize=4)
def _faces(resolution):
    s = face_set(20, size=resolution)
    return s.images, tuple(s.table["expression"].astype(str)), s.rois


def _template_observer(images, labels, seed, *, internal_noise, scale):
    return TemplateObserver(label_templates(images, labels),
                            internal_noise=internal_noise * scale, seed=seed)


# -- results ------------------------------------------------------------------------------
def wilson(k, n, z=1.96):
    """95 % Wilson interval of a proportion ``k / n``."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


@dataclass
class PlanCell:
    """One cell of a plan: its settings and what the replications gave.

    Attributes
    ----------
    params : dict
        The settings (behaviour: sigma, n_bubbles, n_trials, method; fMRI: t_r, iti,
        runs, snr, n_trials).
    reps : int
        Replications (fMRI: voxels x studies).
    recovery, recovery_sd : float
        Mean and SD of the Pearson r of the map with the truth.
    power_pixel, power_cluster : float
        Fraction of replications with a significant pixel (cluster) in the region.
    coverage_pixel, coverage_cluster : float
        Mean fraction of the region found significant.
    accuracy : float or None
        Fraction correct at this bubble count (behaviour).
    extra : dict
        Behaviour: ``constant_reps``, replications whose answers were all the same
        (no map: counted as r 0 and no detection). fMRI: ``beta_r`` (single-trial
        amplitudes vs the true ones), ``scan_minutes``.
    """

    params: dict
    reps: int
    recovery: float
    recovery_sd: float
    power_pixel: float
    power_cluster: float
    coverage_pixel: float
    coverage_cluster: float
    accuracy: float | None = None
    extra: dict = field(default_factory=dict)

    def power(self, test):
        if test not in TESTS:
            raise ValueError(f"test must be one of {list(TESTS)}, got {test!r}")
        return self.power_pixel if test == "pixel" else self.power_cluster

    def interval(self, test):
        """95 % Wilson interval of the power of ``test``."""
        return wilson(round(self.power(test) * self.reps), self.reps)

    def to_dict(self):
        d = dict(self.params, reps=self.reps, recovery=self.recovery,
                 recovery_sd=self.recovery_sd, accuracy=self.accuracy)
        for t in TESTS:
            lo, hi = self.interval(t)
            d.update({f"power_{t}": self.power(t), f"power_{t}_low": lo,
                      f"power_{t}_high": hi, f"coverage_{t}": getattr(self, f"coverage_{t}")})
        d.update(self.extra)
        return d


@dataclass
class PlanResult:
    """What :func:`plan_study` / :func:`plan_fmri` return.

    Attributes
    ----------
    kind : {'behaviour', 'fmri'}
    observer : str
    cells : list of PlanCell
    quest : dict
        Behaviour: sigma -> {'n_bubbles': count at ``quest_threshold`` correct (None
        when the swept counts do not reach it), 'accuracy': that threshold, 'sweep':
        [[count, accuracy], ...]}.
    truth : str
        'analytic' or 'reference session'.
    info : dict
        Parameters, seeds, resolution, workers, timings.
    """

    kind: str
    observer: str
    cells: list
    quest: dict
    truth: str
    info: dict = field(default_factory=dict)

    def to_frame(self):
        return pd.DataFrame([c.to_dict() for c in self.cells])

    def recommend(self, target=0.8, test="cluster"):
        """The cheapest cell whose power of ``test`` reaches ``target``: fewest trials
        (fMRI: least scanner time), then highest power, then best recovery.

        Returns
        -------
        list of dict
            One recommendation (behaviour), or one per voxel SNR (fMRI: the SNR is a
            property of the voxel, not a choice): ``test``, ``target``, ``cell`` (the
            chosen cell's :meth:`PlanCell.to_dict`, None when no cell reaches the
            target; ``best`` then holds the most powerful) and ``text``.
        """
        if not 0 < target < 1:
            raise ValueError(f"target must be a power in (0, 1), got {target!r}")
        if test not in TESTS:
            raise ValueError(f"test must be one of {list(TESTS)}, got {test!r}")
        if self.kind == "fmri":
            groups = {}
            for c in self.cells:
                groups.setdefault(c.params["snr"], []).append(c)
            cost = lambda c: c.extra["scan_minutes"]          # noqa: E731
        else:
            groups = {None: self.cells}
            cost = lambda c: c.params["n_trials"]             # noqa: E731
        out = []
        for snr, cells in groups.items():
            where = "" if snr is None else f" at voxel SNR {snr:g}"
            ok = [c for c in cells if c.power(test) >= target]
            if ok:
                best = min(ok, key=lambda c: (cost(c), -c.power(test), -c.recovery))
                out.append({"test": test, "target": target, "cell": best.to_dict(),
                            "text": f"{test} test at power >= {target:g}{where}: "
                                    + _describe(best, self.kind, test)})
                continue
            top = max(cells, key=lambda c: (c.power(test), c.recovery))
            out.append({"test": test, "target": target, "cell": None,
                        "best": top.to_dict(),
                        "text": f"no cell reaches power {target:g} with the {test} test"
                                f"{where}; the best is " + _describe(top, self.kind, test)
                                + (": plan more trials or runs" if self.kind == "fmri"
                                   else ": plan more trials or other bubbles")})
        return out

    def to_dict(self, target=0.8):
        return {"kind": self.kind, "observer": self.observer, "truth": self.truth,
                "cells": [c.to_dict() for c in self.cells], "quest": self.quest,
                "recommendation": [r for t in TESTS for r in self.recommend(target, t)],
                "info": self.info}


def _describe(c, kind, test):
    p = c.params
    lo, hi = c.interval(test)
    if kind == "fmri":
        head = (f"{p['n_trials']} trials in {p['runs']} runs, TR {p['t_r']:g} s, ITI "
                f"{p['iti']:g} s, SNR {p['snr']:g} ({c.extra['scan_minutes']:.0f} min)")
    else:
        head = (f"sigma {p['sigma']:g} px, {p['n_bubbles']} bubbles, {p['n_trials']} "
                f"trials, {p['method']}")
        if c.accuracy is not None:
            head += f" ({100 * c.accuracy:.0f} % correct)"
    return (f"{head}: power {c.power(test):.2f} [{lo:.2f}, {hi:.2f}], recovery r "
            f"{c.recovery:.2f}")


# -- parallel jobs ------------------------------------------------------------------------
def _timed(fn, job):
    t0 = time.process_time()
    out = fn(job)
    return out, time.process_time() - t0


def _run_jobs(fn, jobs, workers, progress, desc, cpu):
    """``[fn(job) for job in jobs]``, over ``workers`` processes when > 1 (forkserver:
    nothing of the parent's threads is copied), in the jobs' order; the processor
    seconds the jobs took are added to ``cpu[0]``."""
    out = [None] * len(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for i, j in enumerate(tqdm(jobs, desc=desc, disable=not progress, leave=False)):
            out[i], t = _timed(fn, j)
            cpu[0] += t
        return out
    ctx = multiprocessing.get_context("forkserver")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx)
    try:
        futures = {pool.submit(_timed, fn, j): i for i, j in enumerate(jobs)}
        for f in tqdm(as_completed(futures), total=len(jobs), desc=desc,
                      disable=not progress, leave=False):
            out[futures[f]], t = f.result()
            cpu[0] += t
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)     # a failure stops the rest
        raise
    pool.shutdown()
    return out


def _workers(workers):
    if workers is None:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1 (processes), got {workers!r}")
    return workers


def _key(seed, *values):
    """The root of one cell's streams: the seed and the cell's values (so a cell's
    numbers do not depend on the rest of the grid)."""
    return np.random.SeedSequence([int(seed)] + [int(round(v * 1000)) for v in values])


def _region_hits(sig, region):
    """(any significant pixel in the region, fraction of the region significant)."""
    hit = sig & region
    return bool(hit.any()), float(hit.sum() / max(1, region.sum()))


def _pearson(a, b):
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    d = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / d) if d > 0 else 0.0


def _observer_for(job, images, labels, seed):
    factory = job["observer"]
    if factory == "template":
        return _template_observer(images, labels, seed, internal_noise=job["internal_noise"],
                                  scale=(job["resolution"] / STIMULUS_SIZE) ** 2)
    return factory(images, labels, seed)


def _session(job, sigma, n_bubbles, n_trials, root):
    """One simulated session (TrialTable) at the job's resolution."""
    images, labels, _ = _faces(job["resolution"])
    f = job["resolution"] / STIMULUS_SIZE
    spec = BubbleSpec(shape=images.shape[1:], sigma=sigma * f, n_bubbles=int(n_bubbles),
                      background=job["background"])
    rng = np.random.default_rng(root)
    mask_seed, obs_seed = (int(x) for x in rng.integers(2 ** 31, size=2))
    observer = _observer_for(job, images, labels, obs_seed)
    return spec, simulate_session(spec, images, labels, observer, int(n_trials),
                                  seed=mask_seed)


def _behaviour_job(job):
    """One replication of one (sigma, n_bubbles): metrics for every (trials, method)."""
    with one_blas_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        root = trial_rng(_key(job["seed"], 1, job["sigma"], job["n_bubbles"]), job["rep"])
        spec, table = _session(job, job["sigma"], job["n_bubbles"], max(job["trials"]),
                               root)
        correct = table.responses("correct")
        centers = table.center_list()
        truth, region = job["truth"], job["region"]
        out = {"accuracy": float(correct.mean()), "cells": {}}
        for n in job["trials"]:
            for method in job["methods"]:
                if correct[:n].min() == correct[:n].max():   # all correct (or wrong)
                    out["cells"][(n, method)] = (0.0, (False, 0.0), (False, 0.0), True)
                    continue
                img = classification_image(spec, centers[:n], correct[:n], method=method,
                                           progress=False)
                tests = image_tests(img, p=job["p"], cluster_threshold=job["threshold"])
                px = _region_hits(tests.pixel[0].significant, region)
                cl = _region_hits(tests.cluster[0].significant, region)
                out["cells"][(n, method)] = (_pearson(img.z, truth), px, cl, False)
        return out


def _reference_job(job):
    """The regression map of a long independent session: the truth of an observer
    without an analytic one."""
    with one_blas_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        root = trial_rng(_key(job["seed"], 2, job["sigma"], job["n_bubbles"]), 0)
        spec, table = _session(job, job["sigma"], job["n_bubbles"], job["n_trials"], root)
        return classification_image(spec, table.center_list(), table.responses("correct"),
                                    progress=False).z


def _accuracy_job(job):
    with one_blas_thread():
        root = trial_rng(_key(job["seed"], 3, job["sigma"], job["n_bubbles"]), 0)
        _, table = _session(job, job["sigma"], job["n_bubbles"], job["n_trials"], root)
        return float(table.responses("correct").mean())


def _threshold_count(counts, acc, level):
    """Count at which accuracy (made monotone) crosses ``level``, interpolated in log
    count; None when the sweep does not reach it."""
    acc = np.maximum.accumulate(np.asarray(acc, float))
    if acc[-1] < level:
        return None
    if acc[0] >= level:
        return int(counts[0])
    i = int(np.argmax(acc >= level))
    x0, x1 = math.log(counts[i - 1]), math.log(counts[i])
    a0, a1 = acc[i - 1], acc[i]
    x = x0 if a1 == a0 else x0 + (level - a0) * (x1 - x0) / (a1 - a0)
    return int(round(math.exp(x)))


# -- behaviour ----------------------------------------------------------------------------
def _check_resolution(resolution):
    if not (isinstance(resolution, int) and 64 <= resolution <= STIMULUS_SIZE):
        raise ValueError(f"resolution must be an integer in [64, {STIMULUS_SIZE}] pixels "
                         f"(the size of the simulated faces), got {resolution!r}")


def _positive(name, values, kind=float, *, zero=False):
    """Sorted distinct values, each a number > 0 (>= 0 with ``zero``); integers for
    ``kind=int``."""
    values = list(values)
    if not values:
        raise ValueError(f"{name} must hold at least one value, got none")
    out = []
    for v in values:
        ok = (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
              and math.isfinite(v) and (v >= 0 if zero else v > 0)
              and (kind is float or float(v).is_integer()))
        if not ok:
            raise ValueError(f"{name} must be {'integers' if kind is int else 'numbers'} "
                             f"{'>=' if zero else '>'} 0, got {v!r}")
        out.append(kind(v))
    return sorted(set(out))


def plan_study(sigmas=(10.0,), n_bubbles=(40,), trials=(250, 500, 1000), methods=(
        "regression",), *, observer="template", reps=20, resolution=128, p=0.05,
        cluster_threshold=2.7, background=0.5, internal_noise=1.0, quest_threshold=0.75,
        quest_trials=400, reference_trials=None, seed=0, workers=None, progress=True):
    """Simulate a behavioural bubbles study over a grid of settings (see the module).

    Parameters
    ----------
    sigmas : sequence of float
        Bubble sizes, pixels of the 256 px stimulus (true SD).
    n_bubbles : sequence of int or 'quest'
        Bubbles per trial; 'quest' adds, per sigma, the count at which the observer is
        ``quest_threshold`` correct (found by a sweep).
    trials : sequence of int
        Trial numbers; each replication runs ``max(trials)`` and is analysed at each.
    methods : sequence of str
        Among :data:`analysis.ci.METHODS`.
    observer : 'template' or callable
        'template': the linear-template observer of ``bubbles run --simulate template``
        (internal noise ``internal_noise`` in 256 px score units). A callable
        ``factory(images, labels, seed)`` returns an object with
        ``decide_batch(stimuli, background=...)``; it must be picklable (a module-level
        function or an instance of a module-level class; its ``name``, else
        ``__name__``, names the observer) and is called in the worker processes.
    reps : int
        Replications per cell.
    resolution : int
        Simulated image size in pixels (sigma scaled by ``resolution / 256``).
    p, cluster_threshold : float
        Of the pixel and cluster tests.
    background : float or 'mean'
        Grey of the hidden parts.
    quest_threshold : float
        Accuracy QUEST aims at (``quest.pThreshold``, 0.75).
    quest_trials : int
        Trials per count of the accuracy sweep (0: no sweep, ``quest`` stays empty).
    reference_trials : int, optional
        Trials of the reference session of an observer without analytic truth
        (default ``4 * max(trials)``).
    seed : int
    workers : int, optional
        Processes (default: every core this process may use).
    progress : bool

    Returns
    -------
    PlanResult

    Examples
    --------
    >>> res = plan_study([10], [30], [100], reps=2, resolution=64,
    ...                  workers=1, progress=False)           # doctest: +SKIP
    >>> res.cells[0].params                                     # doctest: +SKIP
    {'sigma': 10.0, 'n_bubbles': 30, 'n_trials': 100, 'method': 'regression'}
    """
    t0 = time.perf_counter()
    sigmas = _positive("sigmas", sigmas)
    n_bubbles = list(n_bubbles)
    bad = [n for n in n_bubbles if isinstance(n, str) and n != "quest"]
    if bad:
        raise ValueError(f"n_bubbles must be integers or 'quest', got {bad[0]!r}")
    want_quest = "quest" in n_bubbles
    numbers = [n for n in n_bubbles if not isinstance(n, str)]
    counts = _positive("n_bubbles", numbers, int) if numbers or not want_quest else []
    trials = _positive("trials", trials, int)
    methods = list(dict.fromkeys(methods))
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"methods must be among {list(METHODS)}, got {m!r}")
    if not (isinstance(reps, int) and reps >= 2):
        raise ValueError(f"reps must be an integer >= 2 (replications per cell), got {reps!r}")
    _check_resolution(resolution)
    if not 0 < quest_threshold < 1:
        raise ValueError(f"quest_threshold must be an accuracy in (0, 1), got "
                         f"{quest_threshold!r}")
    if not (isinstance(quest_trials, int) and quest_trials >= 0):
        raise ValueError(f"quest_trials must be an integer >= 0 (0: no accuracy sweep), "
                         f"got {quest_trials!r}")
    if want_quest and not quest_trials:
        raise ValueError("n_bubbles 'quest' needs the accuracy sweep: quest_trials must "
                         "be > 0, got 0")
    if observer != "template" and not callable(observer):
        raise ValueError(f"observer must be 'template' or a factory(images, labels, seed), "
                         f"got {observer!r}")
    workers = _workers(workers)
    f = resolution / STIMULUS_SIZE
    images, labels, _ = _faces(resolution)
    n_pix = images.shape[1] * images.shape[2]
    for n in counts:
        if n > n_pix:
            raise ValueError(f"n_bubbles must be at most the {n_pix} pixels of a "
                             f"{resolution} px image, got {n}")
    base = {"observer": observer, "resolution": resolution, "background": background,
            "internal_noise": internal_noise, "seed": seed}

    # QUEST: accuracy against the count, per sigma
    sweep = sorted({int(round(x)) for x in np.geomspace(1, min(400, n_pix // 4), 12)})
    acc_jobs = [dict(base, sigma=s, n_bubbles=n, n_trials=quest_trials)
                for s in sigmas for n in sweep] if quest_trials else []
    cpu = [0.0]
    accs = _run_jobs(_accuracy_job, acc_jobs, workers, progress, "accuracy sweep", cpu)
    quest = {}
    for i, s in enumerate(sigmas if quest_trials else []):
        a = accs[i * len(sweep):(i + 1) * len(sweep)]
        quest[s] = {"n_bubbles": _threshold_count(sweep, a, quest_threshold),
                    "accuracy": quest_threshold,
                    "sweep": [[n, x] for n, x in zip(sweep, a)]}
    pairs = [(s, n) for s in sigmas for n in counts]
    if want_quest:
        missing = [s for s in sigmas if quest[s]["n_bubbles"] is None]
        if missing:
            raise ValueError(f"n_bubbles 'quest': the observer does not reach "
                             f"{quest_threshold:g} correct with up to {sweep[-1]} bubbles "
                             f"at sigma {missing}")
        pairs += [(s, quest[s]["n_bubbles"]) for s in sigmas
                  if (s, quest[s]["n_bubbles"]) not in pairs]
    pairs.sort()

    # the truth of each (sigma, count)
    truths = {}
    if observer == "template":
        templates = label_templates(images, labels)
        for s in sigmas:
            t = template_truth(images, labels, templates, background, s * f)
            for n in {n for s2, n in pairs if s2 == s}:
                truths[(s, n)] = t
        truth_kind = "analytic"
    else:
        ref = reference_trials or 4 * max(trials)
        maps = _run_jobs(_reference_job, [dict(base, sigma=s, n_bubbles=n, n_trials=ref)
                                          for s, n in pairs], workers, progress,
                         "reference sessions", cpu)
        truths = dict(zip(pairs, maps))
        truth_kind = "reference session"

    jobs = []
    for s, n in pairs:
        t = truths[(s, n)]
        region = t >= REGION_LEVEL * t.max()
        jobs += [dict(base, sigma=s, n_bubbles=n, rep=r, trials=trials, methods=methods,
                      truth=t, region=region, p=p, threshold=cluster_threshold)
                 for r in range(reps)]
    results = _run_jobs(_behaviour_job, jobs, workers, progress, "replications", cpu)
    cells = []
    for k, (s, n) in enumerate(pairs):
        mine = results[k * reps:(k + 1) * reps]
        acc = float(np.mean([m["accuracy"] for m in mine]))
        for T in trials:
            for method in methods:
                vals = [m["cells"][(T, method)] for m in mine]
                cells.append(_cell({"sigma": s, "n_bubbles": n, "n_trials": T,
                                    "method": method,
                                    "quest": bool(want_quest and quest[s]["n_bubbles"] == n)},
                                   vals, acc))
    info = {"reps": reps, "resolution": resolution, "stimulus_size": STIMULUS_SIZE,
            "p": p, "cluster_threshold": cluster_threshold, "background": background,
            "internal_noise": internal_noise if observer == "template" else None,
            "quest_threshold": quest_threshold, "quest_trials": quest_trials,
            "reference_trials": None if observer == "template" else (
                reference_trials or 4 * max(trials)),
            "region_level": REGION_LEVEL, "seed": seed, "workers": workers,
            "n_simulated_trials": len(jobs) * max(trials) + len(acc_jobs) * quest_trials,
            "seconds": time.perf_counter() - t0, "cpu_seconds": cpu[0]}
    name = "template" if observer == "template" else (
        getattr(observer, "name", None) or getattr(observer, "__name__", "custom"))
    return PlanResult("behaviour", name, cells, {str(k): v for k, v in quest.items()},
                      truth_kind, info)


def _cell(params, vals, accuracy=None, extra=None):
    r = np.array([v[0] for v in vals])
    px = np.array([v[1] for v in vals])
    cl = np.array([v[2] for v in vals])
    extra = dict(extra or {})
    constant = sum(len(v) > 3 and v[3] for v in vals)
    if any(len(v) > 3 for v in vals):   # behaviour: replications without a map (every
        extra["constant_reps"] = int(constant)     # answer the same), counted as misses
    return PlanCell(params=params, reps=len(vals), recovery=float(r.mean()),
                    recovery_sd=float(r.std(ddof=1)) if len(r) > 1 else 0.0,
                    power_pixel=float(px[:, 0].mean()), power_cluster=float(cl[:, 0].mean()),
                    coverage_pixel=float(px[:, 1].mean()),
                    coverage_cluster=float(cl[:, 1].mean()), accuracy=accuracy,
                    extra=extra)


# -- fMRI ---------------------------------------------------------------------------------
LEAD, TAIL, DURATION = 6.0, 20.0, 0.5     # s before the first trial, after the last; event


def _schedule(n_trials, runs, iti, jitter, rng):
    """Onsets (s) per run: trials split in order, intervals uniform in iti +- jitter;
    each run lasts its expected length (:func:`scan_seconds`), rounded up to a TR by
    the caller."""
    out = []
    for idx in np.array_split(np.arange(n_trials), runs):
        soa = rng.uniform(iti - jitter, iti + jitter, len(idx))
        onsets = LEAD + np.concatenate([[0.0], np.cumsum(soa[:-1])])
        length = max(float(onsets[-1]), (len(idx) - 1) * iti + LEAD) + DURATION + TAIL
        out.append((idx, onsets, length))
    return out


def scan_seconds(n_trials, runs, iti, t_r):
    """Scanner time of a study, s: per run, ``LEAD`` s, the trials every ``iti`` s,
    ``TAIL`` s after the last event, rounded up to a whole TR."""
    sizes = [len(i) for i in np.array_split(np.arange(n_trials), runs)]
    return float(sum(math.ceil(((k - 1) * iti + LEAD + DURATION + TAIL) / t_r) * t_r
                     for k in sizes))


def _fmri_job(job):
    """One simulated study of ``voxels`` voxels: per-voxel metrics."""
    with one_blas_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rng = trial_rng(_key(job["seed"], 4, job["t_r"], job["iti"], job["runs"],
                             job["snr"], job["n_trials"]), job["rep"])
        roi = job["roi"]
        f = job["resolution"] / STIMULUS_SIZE
        spec = BubbleSpec(shape=roi.shape, sigma=job["sigma"] * f,
                          n_bubbles=int(job["n_bubbles"]), background=0.5)
        n, v = job["n_trials"], job["voxels"]
        centers = sample_centers(spec, int(rng.integers(2 ** 31)), n)
        masks = render_masks(spec, centers)
        feature = zscore(masks[:, roi].mean(axis=1))
        area = masks.reshape(n, -1).mean(axis=1)
        amp = (job["base"] + job["snr"] * feature[:, None]
               + job["trial_sd"] * rng.standard_normal((n, v)))
        kernel = hrf_kernels("glover", job["t_r"])[0]
        betas = np.empty((n, v))
        run_of_trial = np.empty(n, int)
        for r, (idx, onsets, length) in enumerate(_schedule(n, job["runs"], job["iti"],
                                                             job["jitter"], rng)):
            n_scans = int(math.ceil(length / job["t_r"]))
            times = frame_times(n_scans, job["t_r"])
            x = event_regressors(onsets, np.full(len(idx), DURATION), times, kernel)
            x /= job["peak"]                   # one event peaks at 1 (% signal change)
            noise = np.empty((n_scans, v))
            e = rng.standard_normal((n_scans, v))
            noise[0] = e[0]
            for t in range(1, n_scans):        # AR(1), unit SD
                noise[t] = job["ar"] * noise[t - 1] + math.sqrt(1 - job["ar"] ** 2) * e[t]
            drift = np.cos(np.pi * np.outer(times, rng.uniform(0.5, 2.0, 3)) / times[-1])
            y = 100 + x @ amp[idx] + noise + drift @ rng.normal(0, 0.5, (3, v))
            events = pd.DataFrame({"onset": onsets, "duration": DURATION,
                                   "trial_type": "bubbles", "trial": idx.astype(float)})
            w = trial_weights(run_design(events, n_scans, job["t_r"]))
            betas[idx] = w @ y
            run_of_trial[idx] = r
        beta_r = np.mean([np.corrcoef(betas[:, i], amp[:, i])[0, 1] for i in range(v)])
        cov, _ = covariate_matrix(["area", "run"], area=area, table_rows=pd.DataFrame(),
                                  run_of_trial=run_of_trial)
        resid = residualize(betas, cov)
        z = classification_image(spec, centers, resid, progress=False).z
        thr = bonferroni_threshold(z[0].size, spec.sigma, job["p"], job["n_voxels"])
        truth, region = job["truth"], job["region"]
        vals = []
        for zi in z:
            px = _region_hits(np.abs(zi) >= thr, region)
            clu = cluster_test(zi, spec.sigma, job["p"] / job["n_voxels"], tail="both",
                               cluster_threshold=job["threshold"])
            vals.append((_pearson(zi, truth), px, _region_hits(clu.significant, region)))
        return vals, float(beta_r)


def plan_fmri(t_r=(2.0,), iti=(4.0,), runs=(4,), snr=(0.5,), trials=(400,), *,
              sigma=10.0, n_bubbles=40, feature="eyes", n_voxels=50000, voxels=16, reps=8,
              resolution=64, p=0.05, cluster_threshold=2.7, jitter=None, trial_sd=0.3,
              ar=0.3, seed=0, workers=None, progress=True):
    """Per-voxel recovery and power of an fMRI bubbles study over a grid (see the module).

    Parameters
    ----------
    t_r : sequence of float
        Repetition times, s.
    iti : sequence of float
        Mean onset-to-onset interval, s (each interval uniform in ``iti +- jitter``).
    runs : sequence of int
    snr : sequence of float
        Voxel SNR: amplitude change per SD of the feature (% signal change at the peak
        of one event) over the SD of the voxel's time-series noise (1 %).
    trials : sequence of int
        Bubbles trials of the whole study.
    sigma, n_bubbles : float, int
        The session's bubbles (pixels of the 256 px stimulus).
    feature : str
        The face ROI whose revealed part drives the voxel: eyes, brows, nose or mouth.
    n_voxels : int
        Voxels the family-wise rate is shared among (Bonferroni; 1 for one region).
    voxels, reps : int
        Voxels per simulated study and studies per cell (``voxels * reps`` replications).
    resolution : int
        Analysis resolution of the voxel images (``bubbles fmri analyze --resolution``).
    p, cluster_threshold : float
    jitter : float, optional
        Default ``iti / 4``.
    trial_sd, ar : float
        Trial-to-trial amplitude noise (%), AR(1) coefficient of the noise.
    seed, workers, progress
        As :func:`plan_study`.

    Returns
    -------
    PlanResult
        Cells with ``params`` (t_r, iti, runs, snr, n_trials) and ``extra`` (beta_r,
        scan_minutes); ``accuracy`` is None.
    """
    t0 = time.perf_counter()
    t_rs, itis = _positive("t_r", t_r), _positive("iti", iti)
    runs_, snrs, trials = _positive("runs", runs, int), _positive("snr", snr, zero=True), _positive(
        "trials", trials, int)
    _check_resolution(resolution)
    _, _, rois = _faces(resolution)
    if feature not in rois:
        raise ValueError(f"feature must be one of {sorted(rois)}, got {feature!r}")
    if not (isinstance(n_voxels, int) and n_voxels >= 1):
        raise ValueError(f"n_voxels must be an integer >= 1, got {n_voxels!r}")
    for name, value in (("voxels", voxels), ("reps", reps)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if voxels * reps < 2:
        raise ValueError(f"voxels * reps must be >= 2 replications, got {voxels * reps}")
    for tr in t_rs:
        for it in itis:
            if it < 1.0:
                raise ValueError(f"iti must be >= 1 s, got {it:g}")
    for T in trials:
        for r in runs_:
            if T < 2 * r:
                raise ValueError(f"trials must give each of the {r} runs at least 2 trials, "
                                 f"got {T}")
    workers = _workers(workers)
    f = resolution / STIMULUS_SIZE
    roi = rois[feature].mean(axis=0) >= 0.5
    truth = ndimage.gaussian_filter(roi.astype(float), sigma * f * math.sqrt(2),
                                    mode="constant")
    region = truth >= REGION_LEVEL * truth.max()
    peak = {tr: float(event_regressors([10.0], [DURATION], frame_times(int(40 / tr) + 1, tr),
                                       hrf_kernels("glover", tr)[0]).max()) for tr in t_rs}
    grid = [(tr, it, r, s, T) for tr in t_rs for it in itis for r in runs_ for s in snrs
            for T in trials]
    jobs = [dict(t_r=tr, iti=it, runs=r, snr=s, n_trials=T, rep=k, sigma=sigma,
                 n_bubbles=n_bubbles, resolution=resolution, roi=roi, truth=truth,
                 region=region, voxels=voxels, base=1.0, trial_sd=trial_sd, ar=ar,
                 jitter=it / 4 if jitter is None else jitter, peak=peak[tr], p=p,
                 n_voxels=n_voxels, threshold=cluster_threshold, seed=seed)
            for tr, it, r, s, T in grid for k in range(reps)]
    cpu = [0.0]
    results = _run_jobs(_fmri_job, jobs, workers, progress, "studies", cpu)
    cells = []
    for i, (tr, it, r, s, T) in enumerate(grid):
        mine = results[i * reps:(i + 1) * reps]
        vals = [v for m in mine for v in m[0]]
        cells.append(_cell({"t_r": tr, "iti": it, "runs": r, "snr": s, "n_trials": T},
                           vals, None,
                           {"beta_r": float(np.mean([m[1] for m in mine])),
                            "scan_minutes": scan_seconds(T, r, it, tr) / 60}))
    info = {"sigma": sigma, "n_bubbles": n_bubbles, "feature": feature,
            "n_voxels": n_voxels, "voxels": voxels, "reps": reps, "resolution": resolution,
            "p": p, "cluster_threshold": cluster_threshold, "trial_sd": trial_sd, "ar": ar,
            "jitter": jitter, "hrf": "glover", "estimator": "lss",
            "covariates": ["area", "run"], "region_level": REGION_LEVEL, "seed": seed,
            "workers": workers, "seconds": time.perf_counter() - t0,
            "cpu_seconds": cpu[0]}
    return PlanResult("fmri", "voxel", cells, {}, "analytic", info)


# -- figure -------------------------------------------------------------------------------
def plot_power(result, *, target=0.8):
    """Power against trials: one panel per test (rows: methods, or SNR for fMRI), one
    line per other setting, with 95 % Wilson intervals and the target as a dashed line.

    Returns
    -------
    matplotlib.figure.Figure
    """
    frame = result.to_frame()
    if result.kind == "fmri":
        rows_key, line_keys = "snr", ["t_r", "iti", "runs"]
    else:
        rows_key, line_keys = "method", ["sigma", "n_bubbles"]
    rows = list(dict.fromkeys(frame[rows_key]))
    colours = sorted(frame[line_keys[0]].unique())
    styles = sorted({tuple(r) for r in frame[line_keys[1:]].itertuples(index=False)})
    fig = Figure(figsize=(9, 3.2 * len(rows) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for i, row in enumerate(rows):
        sub = frame[frame[rows_key] == row]
        for j, test in enumerate(TESTS):
            ax = axes[i, j]
            for key, g in sub.groupby(line_keys, sort=True):
                g = g.sort_values("n_trials")
                label = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in zip(line_keys, key))
                y = g[f"power_{test}"].to_numpy()
                err = np.vstack([y - g[f"power_{test}_low"], g[f"power_{test}_high"] - y])
                c, m = colours.index(key[0]), styles.index(key[1:])  # colour: 1st key
                ax.errorbar(g["n_trials"], y, yerr=np.clip(err, 0, None),
                            color=f"C{c % 10}", ls=("-", "--", ":", "-.")[m % 4],
                            marker="osD^vP"[m % 6], ms=3, capsize=2, lw=1, label=label)
            ax.axhline(target, color="k", ls="--", lw=0.8)
            ax.set_ylim(-0.02, 1.02)
            ticks = sorted(sub["n_trials"].unique())
            if len(ticks) > 1:
                ax.set_xscale("log")
                ax.minorticks_off()
            ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
            ax.set_xlabel("trials")
            ax.set_ylabel("power")
            what = f"{rows_key} {row:g}" if isinstance(row, float) else str(row)
            ax.set_title(f"{test} test, {what}", fontsize=9)
            if i == 0 and j == 1:
                ax.legend(fontsize=6, loc="lower right")
    fig.suptitle(f"{result.observer} observer: power to find the diagnostic region "
                 f"(dashed: target {target:g}; bars: 95 % intervals, {_reps(result)})",
                 fontsize=9)
    return fig


def _reps(result):
    reps = {c.reps for c in result.cells}
    return f"{reps.pop()} replications per cell" if len(reps) == 1 else "replications vary"
