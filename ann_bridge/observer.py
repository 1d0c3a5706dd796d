"""A network as an observer of a bubbles session (``bubbles run --simulate model``).

:class:`NetworkObserver` shows a stimulus to the network and answers with the expression
whose logit is largest among its labels: ``decide(stimulus) -> label`` and
``decide_batch(stimuli) -> list``, the interface of :class:`analysis.simulate.TemplateObserver`.
Optional Gaussian decision noise on the logits (SD ``decision_noise``, in logit units,
seeded) lowers its accuracy towards a person's, so that QUEST settles on a realistic
number of bubbles. ``experiments.responders.ModelResponder`` wraps ``decide`` into the
session's Responder interface (keys, reaction times); this module does not import
``experiments`` (layering: ``ann_bridge`` -> ``analysis`` -> ``bubbles``). The session
files it produces are analysed exactly like a person's.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from .model import load_default_model
from .record import resolve_device

__all__ = ["NetworkObserver"]


class NetworkObserver:
    """Argmax-over-expressions observer with optional decision noise.

    Parameters
    ----------
    model : torch.nn.Module, optional
        Maps grey images ``(N, 1, H, W)`` in [0, 1] to logits and has ``classes`` (the
        label of each logit). Default: :func:`ann_bridge.model.load_default_model`.
    decision_noise : float
        SD of Gaussian noise added to the logits before the argmax (>= 0).
    seed : int, numpy SeedSequence or Generator
        Seed of the decision noise (``numpy.random.default_rng(seed)``).
    device : str or torch.device, optional
        Defaults to cuda when available.
    labels : sequence of str, optional
        Restrict the answers to these classes (default: all of ``model.classes``).

    Examples
    --------
    >>> obs = NetworkObserver(decision_noise=1.0, seed=3)          # doctest: +SKIP
    >>> obs.decide(frame)                                          # doctest: +SKIP
    'happy'
    >>> obs.decide_batch(frames)                                   # doctest: +SKIP
    ['happy', 'neutral', ...]
    """

    def __init__(self, model=None, *, decision_noise=0.0, seed=0, device=None, labels=None):
        if model is None:
            model = load_default_model()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        classes = tuple(getattr(model, "classes", ()) or ())
        if not classes:
            raise ValueError("model must have a 'classes' attribute naming its outputs")
        if isinstance(decision_noise, bool) or not isinstance(decision_noise, numbers.Real):
            raise TypeError(f"decision_noise must be a number >= 0 (logit SD), "
                            f"got {decision_noise!r}")
        if not (math.isfinite(decision_noise) and decision_noise >= 0):
            raise ValueError(f"decision_noise must be a finite number >= 0 (logit SD), "
                             f"got {decision_noise!r}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.classes = classes
        self.labels = self._check_labels(classes if labels is None else labels)
        self.decision_noise = float(decision_noise)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_stimuli(cls, stimuli, labels, *, seed=0, decision_noise=0.0, model=None,
                     device=None):
        """Observer for a session on ``stimuli`` choosing among ``labels``.

        Called by ``experiments.responders.model_responder`` (``--simulate model``).
        ``stimuli`` (the session's StimulusSet) is not needed by the network, which was
        trained beforehand; it is accepted for the interface shared with the template
        observer.
        """
        return cls(model, decision_noise=decision_noise, seed=seed, device=device,
                   labels=list(labels))

    def _check_labels(self, labels):
        labels = tuple(str(x) for x in labels)
        bad = [x for x in labels if x not in self.classes]
        if bad or not labels:
            raise ValueError(f"labels must be among the model's classes {list(self.classes)}, "
                             f"got {list(labels)}")
        return labels

    # -- decisions ------------------------------------------------------------------
    def logits(self, stimuli) -> np.ndarray:
        """Logits ``(N, n_classes)`` for grey stimuli ``(N, H, W)`` (or one ``(H, W)``)."""
        x = np.asarray(stimuli, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3:
            raise ValueError(f"stimulus must be a grey frame (H, W) or a stack (N, H, W), "
                             f"got shape {np.shape(stimuli)}")
        with torch.inference_mode():
            t = torch.from_numpy(np.clip(x, 0.0, 1.0)).to(self.device)
            return self.model(t[:, None]).float().cpu().numpy()

    def decide_batch(self, stimuli, labels=None) -> list:
        """Labels chosen for a stack of stimuli (noise drawn per stimulus, in order)."""
        labels = self.labels if labels is None else self._check_labels(labels)
        cols = [self.classes.index(x) for x in labels]
        z = self.logits(stimuli)[:, cols].astype(np.float64)
        if self.decision_noise > 0:
            z = z + self.rng.normal(0.0, self.decision_noise, size=z.shape)
        return [labels[i] for i in z.argmax(axis=1)]

    def decide(self, stimulus, labels=None) -> str:
        """Label chosen for one stimulus ``(H, W)`` in [0, 1] (the frame drawn).

        ``labels`` (default ``self.labels``) restricts the answer to some of the
        model's classes."""
        return self.decide_batch(np.asarray(stimulus)[None], labels)[0]

    def noise_for_accuracy(self, stimuli, labels, target=0.75, *, seed=0, max_noise=100.0,
                           iterations=20) -> float:
        """Decision noise SD (logit units) that brings accuracy on ``stimuli`` to ``target``.

        Bisection on the noise SD; the logits are computed once and the same seeded
        noise draws are reused for every candidate SD, so accuracy falls monotonically
        with the SD. Set ``obs.decision_noise`` to the result (or pass it to the
        constructor) to make the network about as accurate as a person at that
        difficulty.

        Parameters
        ----------
        stimuli : ndarray (N, H, W)
            Bubbled stimuli of the difficulty of interest.
        labels : sequence of str
            The correct label of each stimulus.
        target : float
            Accuracy wanted, between chance and the noiseless accuracy.

        Returns
        -------
        float
            0.0 when the noiseless accuracy is already at or below ``target``.
        """
        labels = list(labels)
        if len(labels) != len(stimuli):
            raise ValueError(f"labels must give one label per stimulus ({len(stimuli)}), "
                             f"got {len(labels)}")
        chance = 1.0 / len(self.labels)
        if not chance < target < 1.0:
            raise ValueError(f"target must be between chance ({chance:.3f}) and 1, "
                             f"got {target!r}")
        cols = [self.classes.index(x) for x in self.labels]
        z = self.logits(stimuli)[:, cols].astype(np.float64)
        truth = np.array([self.labels.index(x) if x in self.labels else -1 for x in labels])
        eps = np.random.default_rng(seed).normal(size=(64,) + z.shape)

        def acc(sd):
            return float(((z + sd * eps).argmax(axis=2) == truth).mean())

        if acc(0.0) <= target:
            return 0.0
        lo, hi = 0.0, float(max_noise)
        if acc(hi) > target:
            raise ValueError(f"even decision_noise={max_noise} keeps accuracy above "
                             f"{target}; raise max_noise")
        for _ in range(int(iterations)):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if acc(mid) > target else (lo, mid)
        return 0.5 * (lo + hi)

    def accuracy(self, stimuli, labels) -> float:
        """Proportion of ``stimuli`` answered with the matching entry of ``labels``."""
        got = self.decide_batch(stimuli)
        return float(np.mean([g == t for g, t in zip(got, labels)]))
