"""Train the embedded expression CNN with bubbles augmentation (``bubbles ann train``).

Data. Training faces are ``face_set(n_identities, seed=face_seed)`` with
``face_seed=1``: identities drawn from another seed than the embedded default set
``face_set(20, seed=0)``, which is kept for testing (held-out identities), together with
a second held-out set ``face_set(20, seed=2)``.

Bubbles augmentation. The network must answer on the stimuli a session shows, so every
training image is drawn, per sample, as one of: the full face (20 %), a single-scale
bubbles stimulus (40 %; Gaussian apertures with sigma 6 to 20 px of the 256 px face,
bubble counts log-uniform from nearly nothing to nearly everything), or a 5-band
multi-scale stimulus as in Gosselin & Schyns (2001) (40 %; finest sigma 5.8 px,
5 to 600 bubbles split across bands as :class:`bubbles.BubbleSpec` does). Backgrounds are
the session's grey of the hidden parts, :func:`bubbles.background_levels` of the 256 px
face (single scale), or the always-visible low-pass residual (multi-scale). Masks and
stimuli are made by the probe's torch backend of the renderer and compositing
(:func:`ann_bridge.probe.aperture_masks`, :func:`~ann_bridge.probe.torch_apply_bubbles`,
:func:`~ann_bridge.probe.torch_compose_multiscale`), the rules of :mod:`bubbles`.

Speed. The network averages its input down to ``input_size`` (64) pixels as its first
step. Training therefore precomputes the faces and their Laplacian bands once at 256 px,
area-averages them to 64 px, and applies masks rendered at 64 px (sigma / 4); averaging
is linear and the apertures are smooth at that scale, so these are the stimuli the
network sees at 256 px up to small rounding. The final accuracy is measured through the
exact 256 px pipeline (``bubbles.render_masks`` + ``bubbles.bubble_stimuli``).

Everything is seeded (numpy ``SeedSequence`` for the faces, a ``torch.Generator`` for
augmentation and batches, ``torch.manual_seed`` for the weights) and runs on
``torch.set_num_threads(threads)`` CPU threads; the same seed on the same torch build
gives the same weights.

References
----------
Gosselin, F. & Schyns, P. G. (2001). Bubbles. Vision Research 41, 2261-2271.
doi:10.1016/S0042-6989(01)00097-9
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bubbles import (BubbleSpec, background_levels, bubble_stimuli, laplacian_bands,
                     render_masks, sample_centers, seed_sequence)
from bubbles.faces import face_set

from .model import ExpressionCNN
from .probe import aperture_masks, torch_apply_bubbles, torch_compose_multiscale
from .record import check_count

__all__ = ["TrainResult", "TrainingFaces", "train", "prepare_faces", "augment", "evaluate",
           "bubbled_accuracy", "heldout_metrics", "checkpoint_info"]

TIMING_KEYS = ("data_seconds", "fit_seconds", "train_seconds", "total_seconds")

FACE_SIZE = 256
N_BANDS = 5
FINEST_SIGMA = 5.8


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : ExpressionCNN
    metrics : dict
        Held-out accuracies, training time (s), loss history, settings.
    """

    model: ExpressionCNN
    metrics: dict = field(default_factory=dict)


def _pool(x: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    lead = t.shape[:-2]
    t = F.adaptive_avg_pool2d(t.reshape(-1, 1, *t.shape[-2:]), size)
    return t.reshape(*lead, size, size).numpy()


@dataclass
class TrainingFaces:
    """What :func:`prepare_faces` returns (arrays at the network's resolution).

    Attributes
    ----------
    images : ndarray (n, s, s)
    bands : ndarray (n, N_BANDS + 1, s, s) or None
    levels : ndarray (n,)
        :func:`bubbles.background_levels` of the 256 px faces ('mean'): the grey of the
        hidden parts of their single-scale stimuli.
    labels : ndarray of int (n,)
    classes : tuple of str
    """

    images: np.ndarray
    bands: np.ndarray | None
    levels: np.ndarray
    labels: np.ndarray
    classes: tuple


def prepare_faces(n_identities, seed, *, input_size=64, bands=True) -> TrainingFaces:
    """Faces, their Laplacian bands, background greys and labels, area-averaged to
    ``input_size``."""
    s = face_set(n_identities, seed=seed, size=FACE_SIZE)
    classes = tuple(s.expressions)
    labels = np.array([classes.index(e) for e in s.table["expression"]], dtype=np.int64)
    imgs = _pool(s.images, input_size)
    b = None
    if bands:
        b = _pool(np.stack([laplacian_bands(im, N_BANDS) for im in s.images]), input_size)
    return TrainingFaces(imgs, b, background_levels(s.images, "mean"), labels, classes)


def augment(images, bands, levels, gen, *, scale=4.0, p_full=0.2, p_single=0.4):
    """Bubbled training stimuli at the network's resolution.

    Parameters
    ----------
    images : tensor (b, s, s)
    bands : tensor (b, N_BANDS + 1, s, s)
    levels : tensor (b,)
        The grey of the hidden parts of each image (:attr:`TrainingFaces.levels`).
    gen : torch.Generator
    scale : float
        Face pixels (256 px) per network pixel; sigmas are divided by it.

    Returns
    -------
    tensor (b, s, s) in [0, 1]
    """
    b, h, w = images.shape
    u = torch.rand(b, generator=gen)
    out = images.clone()
    single = (u >= p_full) & (u < p_full + p_single)
    multi = u >= p_full + p_single
    n1 = int(single.sum())
    if n1:
        sig = 6.0 + 14.0 * torch.rand(n1, generator=gen)                   # 256-px sigma
        # revealed fraction ~ k * 2 pi sigma^2 / 256^2: from ~1 % to ~100 %
        frac = torch.exp(torch.empty(n1).uniform_(math.log(0.01), math.log(1.5), generator=gen))
        k = (frac * FACE_SIZE ** 2 / (2 * math.pi * sig ** 2)).ceil().clamp(1, 300)
        kmax = int(k.max())
        cen = torch.rand(n1, kmax, 2, generator=gen) * torch.tensor([h, w]) - 0.5
        wt = (torch.arange(kmax)[None] < k[:, None]).float()
        m = aperture_masks(cen, (sig / scale)[:, None].expand(n1, kmax), (h, w), weights=wt)
        out[single] = torch_apply_bubbles(images[single], m, levels[single])
    n2 = int(multi.sum())
    if n2:
        total = torch.exp(torch.empty(n2).uniform_(math.log(5), math.log(600), generator=gen))
        sig = torch.tensor([FINEST_SIGMA * 2.0 ** j for j in range(N_BANDS)])
        # BubbleSpec.n_per_band's shares (1 / sigma**2), but the total here is a random
        # real per sample, split by stochastic rounding (draws from gen), not by
        # n_per_band's largest remainder of an integer: using n_per_band would change
        # the augmentation stream and so the shipped weights.
        share = (1 / sig ** 2) / (1 / sig ** 2).sum()
        counts = torch.floor(total[:, None] * share[None] + torch.rand(n2, N_BANDS, generator=gen))
        masks = torch.empty((n2, N_BANDS, h, w))
        for j in range(N_BANDS):
            kj = counts[:, j]
            kmax = max(int(kj.max()), 1)
            cen = torch.rand(n2, kmax, 2, generator=gen) * torch.tensor([h, w]) - 0.5
            wt = (torch.arange(kmax)[None] < kj[:, None]).float()
            masks[:, j] = aperture_masks(cen, torch.full((n2, kmax), float(sig[j]) / scale),
                                         (h, w), weights=wt)
        out[multi] = torch_compose_multiscale(bands[multi], masks)
    return out


def evaluate(model, images, labels, *, batch_size=256) -> float:
    """Accuracy of ``model`` on images ``(n, H, W)`` (any size) with int labels."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = torch.as_tensor(np.asarray(images[i:i + batch_size]), dtype=torch.float32)
            pred = model(x[:, None]).argmax(1).numpy()
            correct += int((pred == np.asarray(labels[i:i + batch_size])).sum())
    return correct / len(images)


def bubbled_accuracy(spec, model, stimulus_set, n_trials, seed=0) -> float:
    """Accuracy on bubbled 256 px stimuli made exactly as a session makes them.

    Trial ``t`` shows image ``t % n`` through ``sample_centers(spec, seed, [t])``;
    ``seed`` is any kind :func:`bubbles.seed_sequence` takes.
    """
    seed = seed_sequence(seed)
    classes = list(model.classes)
    labels = np.array([classes.index(e) for e in stimulus_set.table["expression"]])
    images = stimulus_set.images
    centers = sample_centers(spec, seed, n_trials)
    masks = render_masks(spec, centers)
    which = np.arange(n_trials) % len(images)
    bands = ([laplacian_bands(im, spec.n_bands) for im in images]
             if spec.multiscale else [None] * len(images))
    stims = np.stack([bubble_stimuli(spec, images[j], masks[t:t + 1], bands=bands[j],
                                     seed=seed, trials=[t])[0]
                      for t, j in enumerate(which)])
    return evaluate(model, stims, labels[which])


def train(*, n_identities=200, face_seed=1, seed=0, epochs=30, batch_size=64, lr=3e-3,
          input_size=64, width=16, threads=2, progress=True, log=None) -> TrainResult:
    """Train the expression CNN with bubbles augmentation.

    Parameters
    ----------
    n_identities : int
        Training identities (x 3 expressions) from ``face_set(n_identities,
        seed=face_seed)``.
    face_seed : int
        Seed of the training faces; must differ from 0 and 2 (the held-out sets).
    seed : int, numpy SeedSequence or Generator
        Seed of the weights, the augmentation and the batch order. An int seeds torch
        directly (the embedded weights: 0); a SeedSequence or Generator gives a 63-bit
        int through :func:`bubbles.seed_sequence`.
    epochs, batch_size, lr : training schedule (AdamW, cosine learning-rate decay).
    input_size, width : network size, see :class:`ExpressionCNN`.
    threads : int
        ``torch.set_num_threads`` during training (restored afterwards).
    progress : bool
        Show a tqdm bar.
    log : callable, optional
        ``log(str)`` receives one line per epoch.

    Returns
    -------
    TrainResult
    """
    if face_seed in (0, 2):
        raise ValueError(f"face_seed must not be 0 or 2 (the held-out test sets), got {face_seed}")
    n_identities = check_count("n_identities", n_identities, 2)
    epochs = check_count("epochs", epochs)
    batch_size = check_count("batch_size", batch_size)
    threads = check_count("threads", threads)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    try:
        faces = prepare_faces(n_identities, face_seed, input_size=input_size)
        t_data = time.perf_counter() - t0
        torch_seed = _torch_seed(seed)
        torch.manual_seed(torch_seed)
        gen = torch.Generator().manual_seed(torch_seed)
        model = ExpressionCNN(faces.classes, input_size=input_size, width=width)
        ximg = torch.from_numpy(faces.images)
        xb = torch.from_numpy(faces.bands)
        xl = torch.from_numpy(faces.levels)
        y = torch.from_numpy(faces.labels)
        n = len(y)
        steps = epochs * math.ceil(n / batch_size)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                    pct_start=0.15)
        history = []
        bar = tqdm(total=steps, disable=not progress, desc="train expression CNN")
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(n, generator=gen)
            tot, hits = 0.0, 0
            for i in range(0, n, batch_size):
                idx = order[i:i + batch_size]
                x = augment(ximg[idx], xb[idx], xl[idx], gen, scale=FACE_SIZE / input_size)
                logits = model(x[:, None])
                loss = F.cross_entropy(logits, y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                tot += float(loss.detach()) * len(idx)
                hits += int((logits.argmax(1) == y[idx]).sum())
                bar.update(1)
            history.append({"epoch": epoch + 1, "loss": tot / n, "train_acc": hits / n})
            if log is not None:
                log(f"epoch {epoch + 1}/{epochs}: loss {tot / n:.4f}, "
                    f"bubbled train accuracy {hits / n:.3f}")
        bar.close()
        t_train = time.perf_counter() - t0
        t_fit = t_train - t_data
        model.eval()
        metrics = {
            "train_identities": int(n_identities), "face_seed": int(face_seed),
            "seed": torch_seed, "epochs": int(epochs), "batch_size": int(batch_size),
            "lr": float(lr), "threads": int(threads), "input_size": int(input_size),
            "width": int(width), "torch": str(torch.__version__),
            "data_seconds": round(t_data, 2), "fit_seconds": round(t_fit, 2),
            "train_seconds": round(t_train, 2),
            "history": history,
        }
        metrics.update(heldout_metrics(model))
        metrics["total_seconds"] = round(time.perf_counter() - t0, 2)
    finally:
        torch.set_num_threads(old_threads)
    return TrainResult(model, metrics)


def _torch_seed(seed) -> int:
    """``seed`` as torch's int: an int as it is, a SeedSequence or Generator through
    :func:`bubbles.seed_sequence` (a 63-bit int drawn from it)."""
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        if seed < 0:
            raise ValueError(f"seed must be an integer >= 0, a numpy SeedSequence or a "
                             f"numpy Generator, got {seed!r}")
        return int(seed)
    return int(seed_sequence(seed).generate_state(1, np.uint64)[0] >> np.uint64(1))


def checkpoint_info(metrics: dict) -> dict:
    """The metrics without timings, stored in the checkpoint so that the same seed on
    the same torch build writes a bit-identical file."""
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


def heldout_metrics(model) -> dict:
    """Accuracy on the held-out identities at 256 px, full and bubbled."""
    out = {}
    for seed in (0, 2):
        s = face_set(20, seed=seed, size=FACE_SIZE)
        labels = np.array([list(model.classes).index(e) for e in s.table["expression"]])
        out[f"heldout_seed{seed}_accuracy"] = evaluate(model, s.images, labels)
    s = face_set(20, seed=0, size=FACE_SIZE)
    ms = BubbleSpec(shape=(FACE_SIZE, FACE_SIZE), sigma=FINEST_SIGMA, n_bubbles=60,
                    bands=N_BANDS)
    ss = BubbleSpec(shape=(FACE_SIZE, FACE_SIZE), sigma=10.0, n_bubbles=20)
    out["bubbled_accuracy"] = {
        "multiscale_sigma5.8_60": bubbled_accuracy(ms, model, s, 240, seed=11),
        "multiscale_sigma5.8_20": bubbled_accuracy(ms.replace(n_bubbles=20), model, s, 240,
                                                   seed=12),
        "single_sigma10_20": bubbled_accuracy(ss, model, s, 240, seed=13),
        "single_sigma10_5": bubbled_accuracy(ss.replace(n_bubbles=5), model, s, 240, seed=14),
    }
    return out
