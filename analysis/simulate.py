"""Planted observers: answers to bubbled trials from a known strategy, to test recovery.

:class:`TemplateObserver` is a linear-template observer with internal noise: for a
stimulus ``s`` it computes ``score_l = <s - background, template_l> + noise_l`` for each
label ``l`` and answers the label with the highest score. Its diagnostic information is
known (where the templates differ and the images carry them), so the classification
image a session recovers can be compared with the truth. :class:`NullObserver` answers at
random: every significant pixel of its classification image is a false positive.
``experiments`` uses both as simulated responders (``bubbles run --simulate template``).

References
----------
Gosselin, F. & Schyns, P. G. (2001). Bubbles: a technique to reveal the use of
information in recognition tasks. Vision Research 41, 2261-2271.
:doi:`10.1016/S0042-6989(01)00097-9`
"""

from __future__ import annotations

import numpy as np

from bubbles import (background_levels, bubble_stimuli, laplacian_bands, render_masks,
                     sample_centers, trial_rng)

from .adaptive import run_adaptive
from .trials import TrialTable

__all__ = ["TemplateObserver", "NullObserver", "label_templates", "session_plan",
           "simulate_session", "simulate_adaptive_session"]


class TemplateObserver:
    """Linear-template observer with Gaussian internal noise.

    Parameters
    ----------
    templates : dict
        label -> (H, W) float template (for example each class image minus the
        background, or an ROI-weighted version of it).
    internal_noise : float
        Standard deviation of the Gaussian noise added to every score, in score units
        (the dot product of ``stimulus - background`` with a template).
    seed : int or numpy.random.Generator

    Examples
    --------
    >>> t = {"a": np.eye(4), "b": -np.eye(4)}
    >>> obs = TemplateObserver(t, internal_noise=0.0)
    >>> obs.decide(0.5 + 0.1 * np.eye(4))
    'a'
    """

    def __init__(self, templates, *, internal_noise=1.0, seed=0):
        if not isinstance(templates, dict) or len(templates) < 2:
            raise ValueError("templates must be a dict with at least 2 labels -> (H, W) "
                             f"arrays, got {type(templates).__name__} of length "
                             f"{len(templates) if hasattr(templates, '__len__') else '?'}")
        arrays = [np.asarray(v, dtype=np.float64) for v in templates.values()]
        shape = arrays[0].shape
        if len(shape) != 2 or any(a.shape != shape for a in arrays):
            raise ValueError("templates must all be 2-D arrays of one shape, got shapes "
                             f"{[a.shape for a in arrays]}")
        if not (np.isfinite(internal_noise) and internal_noise >= 0):
            raise ValueError(f"internal_noise must be >= 0, got {internal_noise!r}")
        self.labels = list(templates)
        self.templates = np.stack(arrays)
        self.shape = shape
        self.internal_noise = float(internal_noise)
        self.rng = np.random.default_rng(seed)   # a Generator is used as is

    def scores(self, stimuli, background=0.5):
        """Noisy template scores, shape (n, n_labels), for stimuli (n, H, W)."""
        s = np.asarray(stimuli, dtype=np.float64)
        if s.ndim == 2:
            s = s[None]
        if s.shape[1:] != self.shape:
            raise ValueError(f"stimuli must have the templates' shape {self.shape}, got "
                             f"{s.shape[1:]}")
        bg = np.asarray(background, dtype=np.float64)
        if bg.ndim == 1:
            bg = bg[:, None, None]
        x = (s - bg).reshape(len(s), -1)
        out = x @ self.templates.reshape(len(self.labels), -1).T
        if self.internal_noise > 0:
            out += self.rng.normal(0.0, self.internal_noise, out.shape)
        return out

    def decide(self, stimulus, background=0.5):
        """Label chosen for one (H, W) stimulus in [0, 1]."""
        return self.labels[int(np.argmax(self.scores(stimulus, background)[0]))]

    def decide_batch(self, stimuli, background=0.5):
        """Labels chosen for (n, H, W) stimuli; ``background`` scalar, (n,) or array."""
        idx = np.argmax(self.scores(stimuli, background), axis=1)
        return [self.labels[i] for i in idx]


class NullObserver:
    """Answers uniformly at random, ignoring the stimulus.

    Examples
    --------
    >>> NullObserver(["a", "b"], seed=0).decide_batch(np.zeros((3, 2, 2)))
    ['b', 'b', 'b']
    """

    def __init__(self, labels, *, seed=0):
        labels = list(labels)
        if len(labels) < 2:
            raise ValueError(f"labels must hold at least 2 labels, got {labels!r}")
        self.labels = labels
        self.rng = np.random.default_rng(seed)   # a Generator is used as is

    def decide(self, stimulus, background=0.5):
        return self.labels[int(self.rng.integers(len(self.labels)))]

    def decide_batch(self, stimuli, background=0.5):
        idx = self.rng.integers(len(self.labels), size=len(stimuli))
        return [self.labels[i] for i in idx]


def label_templates(images, image_labels, labels=None):
    """label -> template: the mean image of the label minus the mean over the labels
    (the part that tells them apart); what the template observer of ``bubbles run
    --simulate template`` and ``bubbles plan`` match stimuli against.

    Parameters
    ----------
    images : ndarray (n, H, W)
    image_labels : sequence of str, one per image
    labels : sequence of str, optional
        The labels to make templates of (default: every label, in order of appearance).

    Examples
    --------
    >>> t = label_templates(np.array([[[1.0]], [[0.0]]]), ["a", "b"])
    >>> float(t["a"][0, 0]), float(t["b"][0, 0])
    (0.5, -0.5)
    """
    images = np.asarray(images)
    image_labels = np.asarray(image_labels).astype(str)
    if len(image_labels) != len(images):
        raise ValueError(f"image_labels must give one label per image ({len(images)}), got "
                         f"{len(image_labels)}")
    present = list(dict.fromkeys(image_labels.tolist()))
    labels = present if labels is None else [str(label) for label in labels]
    means = {}
    for label in labels:
        sel = image_labels == label
        if not sel.any():
            raise ValueError(f"labels must be labels of the images {present}, got {label!r}")
        means[label] = images[sel].mean(axis=0, dtype=np.float64)
    grand = np.mean(list(means.values()), axis=0)
    return {label: m - grand for label, m in means.items()}


def session_plan(spec, images, labels, n_trials, seed):
    """The checked images (float32), labels and each trial's image index of a simulated
    session: trial t shows image ``stim_idx[t]``, drawn from a stream of ``seed`` that no
    trial's mask uses (shared by :func:`simulate_session` and the adaptive session)."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or images.shape[1:] != tuple(spec.shape):
        raise ValueError(f"images must have shape (n_images, {spec.shape[0]}, "
                         f"{spec.shape[1]}), got {images.shape}")
    labels = list(labels)
    if len(labels) != len(images):
        raise ValueError(f"labels must give one label per image ({len(images)}), got "
                         f"{len(labels)}")
    if isinstance(n_trials, bool) or not (isinstance(n_trials, (int, np.integer))
                                          and n_trials >= 1):
        raise ValueError(f"n_trials must be an integer >= 1, got {n_trials!r}")
    stim_idx = trial_rng(seed, 2 ** 31).integers(len(images), size=n_trials)
    return images, labels, stim_idx


def simulate_session(spec, images, labels, observer, n_trials, seed=0, *,
                     chunk_size=128):
    """Run a simulated bubbles session and return its TrialTable.

    Each trial draws an image uniformly, reveals it through a mask of ``spec`` (centres
    from ``sample_centers(spec, seed, n_trials)``; multi-scale specs compose the bands),
    and asks ``observer.decide_batch``.

    Parameters
    ----------
    spec : BubbleSpec
    images : ndarray, shape (n_images, H, W), values in [0, 1]
    labels : sequence
        The correct label of each image.
    observer : TemplateObserver, NullObserver or any object with ``decide_batch``
    n_trials : int
    seed : int
        Mask seed of the session (stimulus order uses an independent stream).
    chunk_size : int
        Trials rendered at once.

    Returns
    -------
    TrialTable
        Columns: trial, stimulus_index, label, response, correct, n_bubbles, mask_seed,
        mask_index.

    Examples
    --------
    >>> from bubbles import BubbleSpec
    >>> spec = BubbleSpec(shape=(16, 16), sigma=2, n_bubbles=3, background=0.5)
    >>> imgs = np.full((2, 16, 16), 0.5); imgs[0, :8] = 1.0
    >>> t = simulate_session(spec, imgs, ["top", "bottom"],
    ...                      NullObserver(["top", "bottom"]), 10)
    >>> len(t)
    10
    """
    images, labels, stim_idx = session_plan(spec, images, labels, n_trials, seed)
    centers = sample_centers(spec, seed, n_trials)
    bands = ([laplacian_bands(im, spec.n_bands) for im in images] if spec.multiscale
             else [None] * len(images))
    grey = background_levels(images, spec.background)    # what hides the unrevealed parts
    responses = []
    for start in range(0, n_trials, chunk_size):
        stop = min(n_trials, start + chunk_size)
        c = ([b[start:stop] for b in centers] if spec.multiscale
             else centers[start:stop])
        masks = render_masks(spec, c)
        stim = np.empty((stop - start,) + tuple(spec.shape), np.float32)
        bg = np.empty(stop - start)
        for i in np.unique(stim_idx[start:stop]):
            sel = np.flatnonzero(stim_idx[start:stop] == i)
            stim[sel] = bubble_stimuli(spec, images[i], masks[sel], bands=bands[i],
                                       seed=seed, trials=start + sel)
            bg[sel] = grey[i]
        responses.extend(observer.decide_batch(stim, background=bg))
    truth = [labels[i] for i in stim_idx]
    correct = np.array([r == t for r, t in zip(responses, truth)])
    k = spec.total_bubbles
    return TrialTable.from_arrays(
        spec, centers, trial=np.arange(n_trials), stimulus_index=stim_idx,
        label=np.array(truth, dtype=object), response=np.array(responses, dtype=object),
        correct=correct, n_bubbles=np.full(n_trials, k), mask_seed=np.full(n_trials, seed),
        mask_index=np.arange(n_trials))


def simulate_adaptive_session(spec, images, labels, observer, n_trials, seed=0, *,
                              policy=None, chunk_size=128):
    """A simulated adaptive session (:mod:`analysis.adaptive`) with one of these observers.

    Like :func:`analysis.simulate.simulate_session` (the same stimulus order, stimuli
    and columns), but the centres come from an :class:`AdaptiveSampler` driven by the
    trials' correctness.

    Returns
    -------
    AdaptiveRun
        ``responses`` is ``correct`` (0/1); ``columns`` holds trial, stimulus_index,
        label, response, correct, n_bubbles, mask_seed, mask_index.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0 (recorded as mask_seed), got {seed!r}")
    images, labels, stim_idx = session_plan(spec, images, labels, n_trials, seed)
    bands = ([laplacian_bands(im, spec.n_bands) for im in images] if spec.multiscale
             else [None] * len(images))
    grey = background_levels(images, spec.background)
    said = []

    def respond(c, trials):
        out = []
        for start in range(0, len(trials), chunk_size):
            sel_t = trials[start:start + chunk_size]
            cc = ([b[start:start + chunk_size] for b in c] if spec.multiscale
                  else c[start:start + chunk_size])
            masks = render_masks(spec, cc)
            stim = np.empty((len(sel_t),) + tuple(spec.shape), np.float32)
            bg = np.empty(len(sel_t))
            idx = stim_idx[sel_t]
            for i in np.unique(idx):
                sel = np.flatnonzero(idx == i)
                stim[sel] = bubble_stimuli(spec, images[i], masks[sel], bands=bands[i],
                                           seed=seed, trials=sel_t[sel])
                bg[sel] = grey[i]
            got = observer.decide_batch(stim, background=bg)
            said.extend(got)
            out.extend(g == labels[i] for g, i in zip(got, idx))
        return np.array(out, np.float64)

    run = run_adaptive(spec, respond, n_trials, seed, policy=policy)
    truth = [labels[i] for i in stim_idx]
    k = spec.total_bubbles
    run.columns = {"trial": np.arange(n_trials), "stimulus_index": stim_idx,
                   "label": np.array(truth, dtype=object),
                   "response": np.array(said, dtype=object),
                   "correct": run.responses.astype(bool),
                   "n_bubbles": np.full(n_trials, k), "mask_seed": np.full(n_trials, seed),
                   "mask_index": np.arange(n_trials)}
    return run
