"""Bubbles for network units: the human session's masks, the human analysis.

:func:`diagnostic_images` draws the bubbles of ``n_masks`` trials from ``(spec, seed)``
exactly as a session does (:func:`bubbles.sample_centers`, trial ``t`` depends only on
``(spec, seed, t)``), shows each bubbled image to the network, records every selected
unit of the layer in the same truncated forward pass, and hands the (trials x units)
response matrix to :func:`analysis.classification_image` -- the function that makes the
human and voxel diagnostic images -- so a unit's map is in the same units and format.

Masks are generated on the model's device: for single-scale Gaussian or square apertures
with the ``'clip'`` overlap rule a torch port of :func:`bubbles.render_masks` (each mask
is one ``(H x k) @ (k x W)`` product; tested equal to the numpy renderer); other specs
render with :mod:`bubbles` and are copied to the device.

References
----------
Gosselin, F. & Schyns, P. G. (2001). Bubbles. Vision Research 41, 2261-2271.
doi:10.1016/S0042-6989(01)00097-9
"""

from __future__ import annotations

import numpy as np
import torch

import bubbles
from bubbles import BubbleSpec, sample_centers

from .record import UnitRecorder, resolve_device

__all__ = ["diagnostic_images", "torch_render_masks", "bubbled_batch"]

RESPONSES = ("activation", "perturbation")


def _torch_renderable(spec: BubbleSpec) -> bool:
    return (not spec.multiscale and spec.aperture in ("gaussian", "square")
            and spec.overlap == "clip")


_CHUNK_PIXELS = 2 ** 20      # masks rendered per step: about 4 MB, stays in cache


def _offsets(c, h, w, dev):
    """Row and column offsets (n, k, H), (n, k, W) of every pixel from centres c."""
    dy = torch.arange(h, device=dev, dtype=torch.float32) - c[:, :, 0:1]
    dx = torch.arange(w, device=dev, dtype=torch.float32) - c[:, :, 1:2]
    return dy, dx


def gaussian_profiles(c, scale, h, w):
    """Row and column Gaussian profiles (n, k, H), (n, k, W) at centres c (n, k, 2).

    ``scale`` is ``-0.5 / sigma**2``: a number, or a tensor broadcasting to
    ``(n, k, 1)`` (one sigma per bubble, as in training). The mask of the bubbles is
    ``fy^T @ fx``; the probe's renderer and :mod:`ann_bridge.train` share this function.
    """
    dy, dx = _offsets(c, h, w, c.device)
    return torch.exp(dy * dy * scale), torch.exp(dx * dx * scale)


def _profiles(spec, c, dev):
    """Row and column profiles (n, k, H), (n, k, W) of the apertures at centres c."""
    h, w = spec.shape
    sigma = spec.sigmas[0]
    if spec.aperture == "gaussian":
        return gaussian_profiles(c.to(dev), -0.5 / sigma ** 2, h, w)
    dy, dx = _offsets(c, h, w, dev)
    half = bubbles.sigma_to_fwhm(sigma) / 2.0
    return (dy.abs() <= half).float(), (dx.abs() <= half).float()


def _render_into(spec, c, out):
    """Masks of centres c (n, k, 2) into ``out`` (n, H, W): one bmm, clip, polarity."""
    fy, fx = _profiles(spec, c, out.device)
    torch.bmm(fy.transpose(1, 2), fx, out=out)
    out.clamp_(max=1.0)
    if spec.polarity == "occlude":
        out.neg_().add_(1.0)
    return out


def _centers_tensor(centers, dev):
    c = torch.as_tensor(np.asarray(centers, dtype=np.float32), device=dev)
    if c.ndim != 3 or c.shape[2] != 2:
        raise ValueError(f"centers must have shape (n, n_bubbles, 2), got {tuple(c.shape)}")
    return c


def torch_render_masks(spec: BubbleSpec, centers, device=None) -> torch.Tensor:
    """Torch port of :func:`bubbles.render_masks` for single-scale product apertures.

    Parameters
    ----------
    spec : BubbleSpec
        Single scale, ``aperture`` 'gaussian' or 'square', ``overlap='clip'``.
    centers : array (n, k, 2)
        As :func:`bubbles.sample_centers` returns.
    device : str or torch.device, optional

    Returns
    -------
    torch.Tensor
        float32 ``(n, H, W)`` in [0, 1] on ``device``.
    """
    if not _torch_renderable(spec):
        raise ValueError("torch_render_masks needs a single-scale spec with aperture "
                         f"'gaussian' or 'square' and overlap 'clip', got {spec!r}")
    dev = resolve_device(device)
    c = _centers_tensor(centers, dev)
    out = torch.empty((c.shape[0],) + tuple(spec.shape), device=dev)
    return _render_into(spec, c, out)


class _Composer:
    """Bubbled stimuli of a fixed image set: the per-image constants, computed once.

    A probe makes one composer and calls it for every batch, so the background and
    ``image - background`` of every image (torch path), the host copy of the images and
    their Laplacian bands (numpy path) are not recomputed per batch.
    """

    def __init__(self, spec, images, *, bands=None, seed=None):
        self.spec = spec
        self.device = images.device
        self.seed = seed
        self.on_device = _torch_renderable(spec) and spec.background != "noise"
        if self.on_device:
            if spec.background == "mean":
                self.bg = images.double().mean(dim=(1, 2)).float()
            else:
                self.bg = torch.full((len(images),), float(spec.background),
                                     device=self.device)
            self.diff = images - self.bg[:, None, None]
        else:
            self.host = images.detach().cpu().numpy()
            if spec.multiscale and bands is None:
                bands = [bubbles.laplacian_bands(im, spec.n_bands) for im in self.host]
            self.bands = bands

    def __call__(self, image_index, centers, *, trials=None, out=None):
        spec = self.spec
        which = np.asarray(image_index)
        if not self.on_device:
            return self._numpy(which, centers, trials)
        dev = self.device
        bg, diff = self.bg, self.diff
        h, w = spec.shape
        c = _centers_tensor(centers, dev)
        if out is None:
            out = torch.empty((len(which), h, w), device=dev)
        elif out.shape[0] < len(which) or tuple(out.shape[1:]) != (h, w):
            raise ValueError(f"out must have at least {len(which)} rows of shape {(h, w)}, "
                             f"got {tuple(out.shape)}")
        out = out[:len(which)]
        step = max(1, _CHUNK_PIXELS // (h * w))
        buf = torch.empty((min(step, len(which)), h, w), device=dev)
        same = bool((which == which[0]).all()) if len(which) else True
        for s in range(0, len(which), step):
            e = min(s + step, len(which))
            m = _render_into(spec, c[s:e], buf[:e - s])
            if same:
                j = int(which[0])
                torch.addcmul(bg[j], m, diff[j], out=out[s:e])
            else:
                idx = torch.as_tensor(which[s:e], device=dev)
                torch.addcmul(bg[idx][:, None, None], m, diff[idx], out=out[s:e])
            out[s:e].clamp_(0.0, 1.0)
        return out

    def _numpy(self, which, centers, trials):
        """bubbles.render_masks + bubbles.bubble_stimuli, one call per image shown."""
        spec = self.spec
        if trials is not None:
            trials = np.asarray(trials)
            if trials.shape != which.shape:
                raise ValueError(f"trials must give one index per stimulus ({len(which)}), "
                                 f"got {trials.shape}")
        masks = bubbles.render_masks(spec, centers)
        stims = np.empty((len(masks),) + spec.shape, np.float32)
        for j in np.unique(which):
            sel = np.flatnonzero(which == j)
            stims[sel] = bubbles.bubble_stimuli(
                self.host[j], spec, masks[sel],
                bands=None if self.bands is None else self.bands[j], seed=self.seed,
                trials=None if trials is None else trials[sel].tolist())
        return torch.from_numpy(stims).to(self.device)


def bubbled_batch(spec, images, image_index, centers, *, seed=None, trials=None, bands=None,
                  out=None) -> torch.Tensor:
    """Bubbled stimuli for a batch of trials, on the device, as a session makes them.

    ``stim = bg + mask * (image - bg)`` (:func:`bubbles.apply_bubbles`), with bg the
    image's mean or the spec's grey level. On the torch path the masks of a few trials
    at a time are rendered into a small buffer and composed straight into the output,
    so each stimulus is written to memory once. Other specs go through
    :func:`bubbles.bubble_stimuli` (one call per image of the batch).

    Parameters
    ----------
    spec : BubbleSpec
    images : torch.Tensor (n_images, H, W) on the device
    image_index : array of int (b,)
        Which image each trial shows.
    centers : array (b, k, 2) or list per band
    seed : int, optional
        The run's mask seed; with ``trials``, needed for ``background='noise'``: trial
        ``t``'s noise is ``bubbles.noise_background(image, seed, [t])``, as in a session.
    trials : array of int (b,), optional
        The trial index of each stimulus (for the noise background).
    bands : list of arrays, optional
        :func:`bubbles.laplacian_bands` per image for multi-scale specs (computed when
        not given).
    out : torch.Tensor, optional
        float32 buffer with at least ``b`` rows of ``(H, W)`` to write into (a probe
        reuses one buffer for every batch; fresh memory costs page faults).

    Returns
    -------
    torch.Tensor
        float32 ``(b, H, W)`` in [0, 1] (a view of ``out`` when given, torch path).
    """
    return _Composer(spec, images, bands=bands, seed=seed)(image_index, centers,
                                                           trials=trials, out=out)


def _slice_centers(centers, start, stop):
    if isinstance(centers, list):
        return [c[start:stop] for c in centers]
    return centers[start:stop]


def diagnostic_images(model, layer, images, spec, n_masks, seed, units=None,
                      batch_size=128, *, preprocess=None, device=None,
                      method="regression", response="activation", progress=True):
    """Diagnostic images of network units from the human session's bubbles.

    Trial ``t`` (``0 <= t < n_masks``) shows ``images[t % n_images]`` through the mask
    of ``sample_centers(spec, seed, [t])`` on the spec's background (a noise background
    is ``bubbles.noise_background(image, seed, [t])``, drawn the way a session draws
    its trial ``t`` with that mask seed, so every trial is regenerable from
    ``(seed, t)``); the
    selected units of ``layer`` are recorded for all trials of a batch in one forward
    pass that stops after ``layer``. With several images, each unit's responses are
    centred per image (the image's own mean activation is not a property of the
    masks). The responses go to :func:`analysis.classification_image` like a person's.

    Parameters
    ----------
    model : torch.nn.Module
    layer : str
        Layer name as in ``model.named_modules()``.
    images : array (H, W) or (n_images, H, W), float in [0, 1]
        Shape must equal ``spec.shape``.
    spec : bubbles.BubbleSpec
    n_masks : int
        Number of bubbled trials.
    seed : int
        Mask seed, as in a session.
    units : see :func:`ann_bridge.record.as_units`
        Default: every channel of the layer, averaged over space.
    batch_size : int
        Trials per forward pass (memory bound).
    preprocess : callable, optional
        Raw batch ``(b, H, W)`` -> model input, applied on the device.
    device : str or torch.device, optional
        Defaults to cuda when available.
    method : str
        Passed to :func:`analysis.classification_image` ('regression' by default).
    response : {'activation', 'perturbation'}
        Regress the activation ``a(X')`` of the bubbled stimulus, or the seed's
        perturbation ``|a(X) - a(X')|`` against the full image X.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    analysis.DiagnosticImage
        ``z`` of shape ``(n_units, H, W)`` (plus a band axis for multi-scale specs);
        ``info`` holds the layer, unit names, seed, image count and response kind.

    Examples
    --------
    >>> spec = BubbleSpec(shape=(256, 256), sigma=10, n_bubbles=20)   # doctest: +SKIP
    >>> ci = diagnostic_images(load_default_model(), "features.conv3", face, spec,
    ...                        n_masks=2000, seed=1)                  # doctest: +SKIP
    >>> ci.z.shape                                                    # doctest: +SKIP
    (64, 256, 256)
    """
    from tqdm.auto import tqdm

    from analysis import classification_image

    if not isinstance(spec, BubbleSpec):
        raise ValueError(f"spec must be a bubbles.BubbleSpec, got {type(spec).__name__}")
    if isinstance(n_masks, bool) or int(n_masks) != n_masks or n_masks < 2:
        raise ValueError(f"n_masks must be an integer >= 2, got {n_masks!r}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if response not in RESPONSES:
        raise ValueError(f"response must be one of {list(RESPONSES)}; {response!r} was provided")
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim == 2:
        imgs = imgs[None]
    if imgs.ndim != 3 or imgs.shape[1:] != tuple(spec.shape):
        raise ValueError(f"images must have shape {tuple(spec.shape)} or (n, "
                         f"{spec.shape[0]}, {spec.shape[1]}) to match spec.shape, got "
                         f"{np.shape(images)}")
    if imgs.min() < 0 or imgs.max() > 1:
        raise ValueError(f"images must have values in [0, 1], got [{imgs.min():g}, "
                         f"{imgs.max():g}]")
    n_masks, batch_size = int(n_masks), int(batch_size)
    n_img = len(imgs)

    rec = UnitRecorder(model, layer, units, preprocess=preprocess, device=device)
    name = next(iter(rec.layers))
    dev = rec.device
    timg = torch.from_numpy(imgs).to(dev)
    centers = sample_centers(spec, seed, n_masks)
    which = np.arange(n_masks) % n_img
    compose = _Composer(spec, timg, seed=seed)       # per-image constants, once
    full = rec(timg)[name] if response == "perturbation" else None

    chunks = []
    buffer = (torch.empty((min(batch_size, n_masks),) + tuple(spec.shape), device=dev)
              if _torch_renderable(spec) else None)
    for start in tqdm(range(0, n_masks, batch_size), disable=not progress,
                      desc=f"bubbles probe {name}", unit="batch"):
        stop = min(n_masks, start + batch_size)
        stim = compose(which[start:stop], _slice_centers(centers, start, stop),
                       trials=np.arange(start, stop), out=buffer)
        r = rec(stim)[name]
        if full is not None:
            r = (r - full[torch.as_tensor(which[start:stop], device=dev)]).abs()
        chunks.append(r)
    responses = torch.cat(chunks).double().cpu().numpy()
    if n_img > 1:
        for j in range(n_img):
            responses[which == j] -= responses[which == j].mean(axis=0)
    names = rec.unit_names(imgs[:1])[name]
    ci = classification_image(spec, centers, responses, method=method,
                              targets=[f"{name}:{u}" for u in names], progress=progress)
    ci.info.update({"observer": "network", "model": type(rec.model).__name__,
                    "layer": name, "units": names, "response": response,
                    "n_images": n_img, "mask_seed": int(seed), "n_masks": n_masks})
    return ci
