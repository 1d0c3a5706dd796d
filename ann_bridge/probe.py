"""Bubbles for network units: the human session's masks, the human analysis.

:func:`diagnostic_images` draws the bubbles of ``n_masks`` trials from ``(spec, seed)``
exactly as a session does (:func:`bubbles.sample_centers`, trial ``t`` depends only on
``(spec, seed, t)``), shows each bubbled image to the network, records every selected
unit of the layer in the same truncated forward pass, and hands the (trials x units)
response matrix to :func:`analysis.classification_image` -- the function that makes the
human and voxel diagnostic images -- so a unit's map is in the same units and format.

This module is also the torch backend of :mod:`bubbles`' renderer and compositing, so
that masks and stimuli are made on the model's device by the same rules:

* :func:`aperture_masks` -- the masks of one band: Gaussian (or square) profiles at the
  centres, one ``(H x k) @ (k x W)`` product per mask, overlaps summed and clipped at 1
  (``overlap='clip'``), as :func:`bubbles.render_masks`;
* :func:`torch_render_masks` -- :func:`bubbles.render_masks` for any spec: bands,
  polarity; disk apertures and the ``'max'`` overlap rule are rendered by
  :mod:`bubbles` and copied to the device;
* :func:`torch_apply_bubbles` and :func:`torch_compose_multiscale` --
  :func:`bubbles.apply_bubbles` (``level + mask * (image - level)``, clipped, the level
  from :func:`bubbles.background_levels`) and :func:`bubbles.compose_multiscale`;
* :class:`BubbledStimuli` -- a probe's stimuli, as :func:`bubbles.bubble_stimuli` makes
  a session's, with the per-image constants computed once.

The embedded network's training (:mod:`ann_bridge.train`) renders and composes its
augmentation with the same functions.

References
----------
Gosselin, F. & Schyns, P. G. (2001). Bubbles. Vision Research 41, 2261-2271.
doi:10.1016/S0042-6989(01)00097-9
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

import bubbles
from analysis import DiagnosticImage, classification_image
from analysis.adaptive import AdaptivePolicy, AdaptiveSampler, adaptive_image
from bubbles import BubbleSpec, background_levels, sample_centers, seed_sequence

from .record import UnitRecorder, check_count, image_batch, resolve_device

__all__ = ["diagnostic_images", "aperture_masks", "torch_render_masks",
           "torch_apply_bubbles", "torch_compose_multiscale", "BubbledStimuli",
           "strongest_targets", "random_weights", "RESPONSES"]

RESPONSES = ("activation", "perturbation")

_CHUNK_PIXELS = 2 ** 20      # masks rendered per step: about 4 MB, stays in cache


def _on_device(spec: BubbleSpec) -> bool:
    """Whether the torch backend renders ``spec`` itself (product apertures, clip)."""
    return spec.aperture in ("gaussian", "square") and spec.overlap == "clip"


# -- masks -----------------------------------------------------------------------------
def _centers_tensor(centers, shape, dev):
    """Centres ``(n, k, 2)`` (or a ragged list of ``(k_t, 2)``) as a tensor plus
    ``(n, k)`` weights (0 marks padding; None when no trial is padded), checked as
    :func:`bubbles.render_masks` checks them."""
    message = "centers must have shape (n_trials, n_bubbles, 2) or be a list of (k, 2) arrays"
    weights = None
    if torch.is_tensor(centers) or (isinstance(centers, np.ndarray) and centers.dtype != object):
        c = torch.as_tensor(centers, dtype=torch.float32, device=dev)
        if c.ndim != 3 or c.shape[2] != 2:
            raise ValueError(f"{message}, got shape {tuple(c.shape)}")
    else:
        trials = [np.asarray(t, dtype=np.float32).reshape(-1, 2) if np.size(t) else
                  np.zeros((0, 2), np.float32) for t in centers]
        k = max((len(t) for t in trials), default=0)
        arr = np.zeros((len(trials), k, 2), np.float32)
        wt = np.zeros((len(trials), k), np.float32)
        for i, t in enumerate(trials):
            arr[i, :len(t)], wt[i, :len(t)] = t, 1.0
        c = torch.from_numpy(arr).to(dev)
        if not wt.all():
            weights = torch.from_numpy(wt).to(dev)
    live = c if weights is None else c[weights > 0]
    if not bool(torch.isfinite(live).all()):
        raise ValueError("centers must be finite pixel coordinates")
    h, w = shape
    if live.numel() and (float(live[..., 0].min()) < -0.5 or float(live[..., 0].max()) > h - 0.5
                         or float(live[..., 1].min()) < -0.5
                         or float(live[..., 1].max()) > w - 0.5):
        raise ValueError(f"centers must lie inside the image of shape {tuple(shape)}")
    return c, weights


def aperture_masks(centers, sigma, shape, *, weights=None, aperture="gaussian", out=None):
    """Masks of bubbles at ``centers``: summed apertures clipped at 1 (``overlap='clip'``).

    Each mask is ``min(1, sum_i f_i)`` with ``f_i`` the aperture of bubble ``i``, a
    product of a row and a column profile (Gaussian ``exp(-d**2 / (2 sigma**2))``, or
    square: 1 within half a FWHM), so a batch of masks is one batched matrix product
    ``(H x k) @ (k x W)``, as in :func:`bubbles.render_masks`.

    Parameters
    ----------
    centers : torch.Tensor (n, k, 2)
        ``(row, col)`` pixel coordinates.
    sigma : float or torch.Tensor
        Aperture SD in pixels: one number, or a tensor broadcasting to ``(n, k)`` (one
        sigma per bubble, as the network's training draws them).
    shape : (H, W)
    weights : torch.Tensor (n, k), optional
        Multiplies each bubble (0 drops a padded bubble when counts vary by trial).
    aperture : {'gaussian', 'square'}
    out : torch.Tensor (n, H, W), optional

    Returns
    -------
    torch.Tensor
        float32 ``(n, H, W)`` in [0, 1] (before any polarity) on ``centers``' device.
    """
    h, w = shape
    dev = centers.device
    dy = torch.arange(h, device=dev, dtype=torch.float32) - centers[:, :, 0:1]
    dx = torch.arange(w, device=dev, dtype=torch.float32) - centers[:, :, 1:2]
    s = sigma[..., None] if torch.is_tensor(sigma) else float(sigma)
    if aperture == "gaussian":
        scale = -0.5 / s ** 2
        fy, fx = torch.exp(dy * dy * scale), torch.exp(dx * dx * scale)
    elif aperture == "square":
        half = bubbles.sigma_to_fwhm(s) / 2.0
        fy, fx = (dy.abs() <= half).float(), (dx.abs() <= half).float()
    else:
        raise ValueError(f"aperture must be 'gaussian' or 'square' (products of two "
                         f"profiles); {aperture!r} was provided")
    if weights is not None:
        fy = fy * weights[..., None]
    if out is None:
        out = torch.bmm(fy.transpose(1, 2), fx)
    else:
        torch.bmm(fy.transpose(1, 2), fx, out=out)
    return out.clamp_(max=1.0)


def _render_into(spec, centers, weights, out):
    """Masks of one chunk into ``out`` ((n, H, W) single scale, (n, bands, H, W)
    multi-scale): every band, clip, polarity. ``centers``/``weights`` per band."""
    for band, sigma in enumerate(spec.sigmas):
        dst = out[:, band] if spec.multiscale else out
        m = aperture_masks(centers[band], sigma, spec.shape, weights=weights[band],
                           aperture=spec.aperture, out=None if spec.multiscale else dst)
        if spec.multiscale:
            dst.copy_(m)
    if spec.polarity == "occlude":
        out.neg_().add_(1.0)
    return out


def _band_list(spec, centers):
    if not spec.multiscale:
        return [centers]
    if not isinstance(centers, (list, tuple)) or len(centers) != spec.n_bands:
        raise ValueError(f"centers must be a list with one entry per band "
                         f"({spec.n_bands}) for a multi-scale spec")
    return list(centers)


def torch_render_masks(spec: BubbleSpec, centers, device=None) -> torch.Tensor:
    """:func:`bubbles.render_masks` on a torch device.

    Gaussian and square apertures with ``overlap='clip'`` (single- or multi-scale) are
    rendered on the device by :func:`aperture_masks`; other specs (disk apertures, the
    'max' overlap rule) by :func:`bubbles.render_masks`, then copied. Same rules, same
    values (up to float rounding of the products), same shapes.

    Parameters
    ----------
    spec : BubbleSpec
    centers : array (n, k, 2), a ragged list of (k_t, 2) arrays, or a list per band
        As :func:`bubbles.sample_centers` returns them.
    device : str or torch.device, optional

    Returns
    -------
    torch.Tensor
        float32 ``(n, H, W)`` or ``(n, bands, H, W)`` in [0, 1] on ``device``;
        ``polarity='occlude'`` gives ``1 - mask``.

    Examples
    --------
    >>> spec = BubbleSpec(shape=(32, 32), sigma=3, n_bubbles=4)
    >>> c = sample_centers(spec, 0, 2)
    >>> m = torch_render_masks(spec, c, "cpu")
    >>> bool(torch.allclose(m, torch.from_numpy(bubbles.render_masks(spec, c)), atol=1e-6))
    True
    """
    if not isinstance(spec, BubbleSpec):
        raise TypeError(f"spec must be a bubbles.BubbleSpec, got {type(spec).__name__}")
    dev = resolve_device(device)
    if not _on_device(spec):
        return torch.from_numpy(bubbles.render_masks(spec, centers)).to(dev)
    per_band = [_centers_tensor(c, spec.shape, dev) for c in _band_list(spec, centers)]
    n = per_band[0][0].shape[0]
    if any(c.shape[0] != n for c, _ in per_band):
        raise ValueError("centers of every band must cover the same number of trials")
    shape = (n, spec.n_bands) + spec.shape if spec.multiscale else (n,) + spec.shape
    out = torch.empty(shape, device=dev)
    return _render_into(spec, [c for c, _ in per_band], [w for _, w in per_band], out)


# -- stimuli ---------------------------------------------------------------------------
def _compose(levels, masks, diffs, out):
    """``out = levels + masks * diffs`` clipped to [0, 1]: the arithmetic of
    :func:`bubbles.apply_bubbles` (``diffs = image - level``), in its order."""
    torch.mul(masks, diffs, out=out)
    out.add_(levels)
    return out.clamp_(0.0, 1.0)


def torch_apply_bubbles(images, masks, levels, *, out=None) -> torch.Tensor:
    """:func:`bubbles.apply_bubbles` on the device: ``level + mask * (image - level)``.

    Parameters
    ----------
    images : torch.Tensor (n, H, W)
        Grey images in [0, 1], one per mask.
    masks : torch.Tensor (n, H, W)
        Values in [0, 1]; 1 = image visible.
    levels : torch.Tensor (n,)
        The grey of the hidden parts of each stimulus, from
        :func:`bubbles.background_levels`.
    out : torch.Tensor (n, H, W), optional

    Returns
    -------
    torch.Tensor
        float32 ``(n, H, W)``, clipped to [0, 1].
    """
    lv = levels.reshape(-1, 1, 1)
    diffs = images - lv
    return _compose(lv, masks, diffs, torch.empty_like(diffs) if out is None else out)


def torch_compose_multiscale(bands, masks, *, out=None) -> torch.Tensor:
    """:func:`bubbles.compose_multiscale` on the device: ``sum_b mask_b * band_b`` plus
    the always-visible residual, clipped to [0, 1].

    Parameters
    ----------
    bands : torch.Tensor (n, n_bands + 1, H, W) or (n_bands + 1, H, W)
        :func:`bubbles.laplacian_bands` of each stimulus' image (finest first, then the
        residual); one set broadcasts to every mask.
    masks : torch.Tensor (n, n_bands, H, W)
    out : torch.Tensor (n, H, W), optional
    """
    nb = masks.shape[1]
    if bands.shape[-3] != nb + 1:
        raise ValueError(f"bands must hold {nb} bands plus the residual to match masks "
                         f"{tuple(masks.shape)}, got {tuple(bands.shape)}")
    if bands.ndim == 3:
        bands = bands[None]
    if out is None:
        out = torch.empty((masks.shape[0],) + tuple(masks.shape[2:]), device=masks.device)
    torch.mul(masks[:, 0], bands[:, 0], out=out)
    for b in range(1, nb):
        out.addcmul_(masks[:, b], bands[:, b])
    out.add_(bands[:, nb])
    return out.clamp_(0.0, 1.0)


class BubbledStimuli:
    """Bubbled stimuli of a fixed image set, made as a session makes them.

    Constructing it computes what depends only on the images, once: the grey of the
    hidden parts (:func:`bubbles.background_levels`) and ``image - level``, or the
    Laplacian bands of a multi-scale spec; calling it makes the stimuli of a batch of
    trials. A probe makes one and calls it for every batch.

    Trial ``t`` showing image ``j`` through mask ``m_t`` is
    ``bubbles.bubble_stimuli(spec, images[j], m_t)``: on the device for single-scale
    Gaussian and square apertures with the 'clip' rule and a grey or mean background
    (:func:`aperture_masks` into a small buffer, composed straight into the output by
    the arithmetic of :func:`torch_apply_bubbles`); other specs (multi-scale, a noise
    background, disk apertures, the 'max' rule) go through :mod:`bubbles` (one
    :func:`bubbles.bubble_stimuli` call per image of a batch) and are copied to the
    device. (Multi-scale on the device was measured slower on CPU than bubbles'
    threaded renderer: five bands per stimulus and a gather of every image's bands.)

    Parameters
    ----------
    spec : BubbleSpec
    images : torch.Tensor (n_images, H, W)
        Grey images in [0, 1] on the device where the stimuli are wanted.
    seed : int, numpy SeedSequence or Generator, optional
        The run's mask seed; needed for ``background='noise'``: trial ``t``'s noise is
        ``bubbles.noise_background(image, seed, [t])``, as in a session.

    Attributes
    ----------
    levels : torch.Tensor (n_images,) or None
        The background grey of each image (on the device; None on the bubbles path).
    bands : ndarray (n_images, bands + 1, H, W) or None
        The Laplacian bands of each image (multi-scale).

    Examples
    --------
    >>> spec = BubbleSpec(shape=(16, 16), sigma=2, n_bubbles=3)
    >>> make = BubbledStimuli(spec, torch.full((2, 16, 16), 0.8))
    >>> make([0, 1, 1], sample_centers(spec, 0, 3)).shape
    torch.Size([3, 16, 16])
    """

    def __init__(self, spec, images, *, seed=None):
        if not isinstance(spec, BubbleSpec):
            raise TypeError(f"spec must be a bubbles.BubbleSpec, got {type(spec).__name__}")
        if not torch.is_tensor(images) or images.ndim != 3 or tuple(images.shape[1:]) != spec.shape:
            raise ValueError(f"images must be a tensor (n_images, {spec.shape[0]}, "
                             f"{spec.shape[1]}) matching spec.shape, got "
                             f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}")
        self.spec = spec
        self.device = images.device
        self.seed = None if seed is None else seed_sequence(seed)
        self.on_device = (_on_device(spec) and not spec.multiscale
                          and spec.background != "noise")
        self.levels = self.bands = None
        self.host = images.detach().cpu().numpy()
        if spec.multiscale:
            self.bands = np.stack([bubbles.laplacian_bands(im, spec.n_bands)
                                   for im in self.host])
        elif self.on_device:
            self.levels = torch.from_numpy(background_levels(self.host, spec.background)).to(
                self.device)
            self.diffs = images - self.levels[:, None, None]

    def __call__(self, image_index, centers, *, trials=None, out=None) -> torch.Tensor:
        """Stimuli ``(b, H, W)`` of a batch: trial ``i`` shows ``images[image_index[i]]``
        through the mask of ``centers[i]`` (a list per band for a multi-scale spec).

        ``trials`` (b,) gives each stimulus' trial index (for a noise background);
        ``out`` is a float32 buffer of at least ``b`` rows to write into (a probe reuses
        one for every batch); the result is then a view of it.
        """
        spec = self.spec
        which = np.asarray(image_index, dtype=np.int64).reshape(-1)
        if not self.on_device:
            return self._numpy(which, centers, trials)
        dev = self.device
        h, w = spec.shape
        c, weights = _centers_tensor(centers, spec.shape, dev)
        if c.shape[0] != len(which):
            raise ValueError(f"centers must cover the {len(which)} stimuli of image_index")
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
            m = _render_into(spec, [c[s:e]], [None if weights is None else weights[s:e]],
                             buf[:e - s])
            idx = (slice(int(which[0]), int(which[0]) + 1) if same
                   else torch.as_tensor(which[s:e], device=dev))
            _compose(self.levels[idx][:, None, None], m, self.diffs[idx], out[s:e])
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
                spec, self.host[j], masks[sel],
                bands=None if self.bands is None else self.bands[j], seed=self.seed,
                trials=None if trials is None else trials[sel].tolist())
        return torch.from_numpy(stims).to(self.device)


def _slice_centers(centers, start, stop):
    if isinstance(centers, list):
        return [c[start:stop] for c in centers]
    return centers[start:stop]


def _batches(n, batch_size, policy):
    """(start, stop) of each forward pass: batches of ``batch_size`` trials, cut at
    the adaptive blocks' edges (a block's density needs every trial before it)."""
    block = n if policy is None else policy.update_every
    return [(s, min(s + batch_size, b + block, n)) for b in range(0, n, block)
            for s in range(b, min(b + block, n), batch_size)]


def _seed_record(seed, root):
    """The mask seed as written to ``info``: the int, or the SeedSequence's entropy and
    spawn key (what regenerates the masks)."""
    if isinstance(seed, numbers.Integral):
        return int(seed)
    return {"entropy": int(root.entropy), "spawn_key": [int(k) for k in root.spawn_key]}


def _layer_units(layer, units):
    """``layer`` (a name, a module, a sequence of names or a mapping name -> units) as
    the ``{layer: units}`` mapping of :class:`UnitRecorder`; duplicates refused."""
    if isinstance(layer, Mapping):
        if units is not None:
            raise ValueError("units must be None when layer is a mapping of layer -> "
                             f"units, got units={units!r}")
        return dict(layer)
    if isinstance(layer, (str, torch.nn.Module)):
        return {layer: units}
    if isinstance(layer, (list, tuple)):
        if not layer:
            raise ValueError("layer must name at least one layer, got an empty "
                             f"{type(layer).__name__}")
        bad = [x for x in layer if not isinstance(x, str)]
        if bad:
            raise TypeError(f"layer must be a name or a sequence of names, got "
                            f"{bad[0]!r} in it")
        dup = sorted({x for x in layer if list(layer).count(x) > 1})
        if dup:
            raise ValueError(f"layer lists {dup} more than once; each layer is recorded "
                             "once per pass")
        return {x: units for x in layer}
    raise TypeError(f"layer must be a layer name, a sequence of names or a mapping of "
                    f"names to units, got {type(layer).__name__} {layer!r}")


def _joined(recorded, layers):
    """One (N, units of all layers) tensor, layer after layer."""
    parts = [recorded[name] for name in layers]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def diagnostic_images(spec, model, layer, images, n_masks, seed, *, units=None,
                      batch_size=128, preprocess=None, device=None, method="regression",
                      response="activation", stimulus_ids=None, policy=None,
                      progress=True) -> DiagnosticImage:
    """Diagnostic images of network units from the human session's bubbles.

    Trial ``t`` (``0 <= t < n_masks``) shows ``images[t % n_images]`` through the mask
    of ``sample_centers(spec, seed, [t])`` on the spec's background (a noise background
    is ``bubbles.noise_background(image, seed, [t])``, drawn the way a session draws its
    trial ``t`` with that mask seed, so every trial is regenerable from ``(seed, t)``);
    the selected units of ``layer`` (or of several layers, with the same masks) are
    recorded for all trials of a batch in one forward pass that stops after the last
    of them. With several images, each unit's responses
    are centred per image (the image's own mean activation is not a property of the
    masks). The responses go to :func:`analysis.classification_image` like a person's.

    Parameters
    ----------
    spec : bubbles.BubbleSpec
    model : torch.nn.Module
    layer : str, sequence of str, or mapping of str to units
        Layer name as in ``model.named_modules()``; several names (or ``{name: units}``)
        record every listed layer in the same pass over the same bubbled stimuli, and
        the image then holds the units of all of them, layer after layer.
    images : array (H, W) or (n_images, H, W), float in [0, 1]
        Shape must equal ``spec.shape`` (see :func:`ann_bridge.record.image_batch`).
    n_masks : int
        Number of bubbled trials (>= 2).
    seed : int, numpy SeedSequence or Generator
        Mask seed, as in a session (a Generator is drawn from once).
    units : see :func:`ann_bridge.record.as_units`
        Default: every channel of the layer, averaged over space; with several layers
        the same selection is applied to each (a mapping ``layer`` chooses per layer,
        and ``units`` must then be None).
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
    stimulus_ids : sequence of str, optional
        Names of the images, recorded in ``info['stimuli']``.
    policy : analysis.adaptive.AdaptivePolicy, optional
        Adaptive bubbles: the trials run in blocks of ``policy.update_every`` (batches
        inside a block), block ``b``'s centres drawn from a density that follows the
        raw responses of the trials before it (:class:`analysis.adaptive.
        AdaptiveSampler`; ``policy.target`` picks the unit columns that drive it); the
        image is :func:`analysis.adaptive.adaptive_image` (``scale='map'``, centres
        weighted ``1 / (N q)``). ``info['densities']`` then holds the densities
        (n_blocks, n_bands, H, W): GPU activations are not bit-reproducible, so they,
        not a replay, regenerate the masks; pop them before saving the image and write
        them with :func:`analysis.adaptive.save_densities`. Default None: uniform.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    analysis.DiagnosticImage
        ``z`` of shape ``(n_units, H, W)`` (``dims`` ``('target', 'y', 'x')``, plus a
        ``'band'`` axis for multi-scale specs), ``targets`` ``'layer:unit'``,
        ``observer='unit'``; ``info`` holds the model, ``layer`` (the name; for several
        layers their names joined by ``', '``), ``layers`` (the list of names, in the
        order of the targets) and ``units_per_layer``, the response kind, mask seed,
        image count and stimuli.

    Examples
    --------
    >>> spec = BubbleSpec(shape=(256, 256), sigma=10, n_bubbles=20)   # doctest: +SKIP
    >>> ci = diagnostic_images(spec, load_default_model(), "features.conv3", face,
    ...                        n_masks=2000, seed=1)                  # doctest: +SKIP
    >>> ci.z.shape, ci.targets[0]                                     # doctest: +SKIP
    ((64, 256, 256), 'features.conv3:ch0')
    >>> two = diagnostic_images(spec, model, ["features.conv2", "features.conv3"], face,
    ...                         n_masks=2000, seed=1)                 # doctest: +SKIP
    >>> two.n_targets, two.info["layers"]                             # doctest: +SKIP
    (96, ['features.conv2', 'features.conv3'])
    """
    if not isinstance(spec, BubbleSpec):
        raise TypeError(f"spec must be a bubbles.BubbleSpec, got {type(spec).__name__}")
    n_masks = check_count("n_masks", n_masks, 2)
    batch_size = check_count("batch_size", batch_size)
    if response not in RESPONSES:
        raise ValueError(f"response must be one of {list(RESPONSES)}; {response!r} was provided")
    imgs = image_batch(images)
    if imgs.ndim != 3 or tuple(imgs.shape[1:]) != tuple(spec.shape):
        raise ValueError(f"images must have shape {tuple(spec.shape)} or (n, "
                         f"{spec.shape[0]}, {spec.shape[1]}) to match spec.shape, got "
                         f"{tuple(np.shape(images))}")
    n_img = len(imgs)
    if n_masks < n_img:
        warnings.warn(f"n_masks={n_masks} is below the {n_img} images: trial t shows image "
                      f"t % {n_img}, so only the first {n_masks} images are shown",
                      UserWarning, stacklevel=2)
    if stimulus_ids is not None:
        stimulus_ids = [str(s) for s in stimulus_ids]
        if len(stimulus_ids) != n_img:
            raise ValueError(f"stimulus_ids must name each of the {n_img} images, got "
                             f"{len(stimulus_ids)}")
    if policy is not None and not isinstance(policy, AdaptivePolicy):
        raise TypeError(f"policy must be None (uniform bubbles) or an analysis.adaptive."
                        f"AdaptivePolicy, got {type(policy).__name__}")
    root = seed_sequence(seed)
    rec = UnitRecorder(model, _layer_units(layer, units), preprocess=preprocess,
                       device=device)
    dev = rec.device
    layers = list(rec.layers)
    timgs = imgs.to(dev)
    sampler = None if policy is None else AdaptiveSampler(spec, root, policy)
    centers = sample_centers(spec, root, n_masks) if sampler is None else None
    which = np.arange(n_masks) % n_img
    full = _joined(rec(timgs), layers) if response == "perturbation" else None
    compose = BubbledStimuli(spec, timgs, seed=root)
    buffer = torch.empty((min(batch_size, n_masks),) + tuple(spec.shape), device=dev)
    chunks = []
    for start, stop in tqdm(_batches(n_masks, batch_size, policy), disable=not progress,
                            desc=f"bubbles probe {', '.join(layers)}", unit="batch"):
        trials = np.arange(start, stop)
        c = (_slice_centers(centers, start, stop) if sampler is None
             else sampler.centers(trials))
        stim = compose(which[start:stop], c, trials=trials, out=buffer)
        r = _joined(rec(stim), layers)
        if full is not None:
            r = (r - full[torch.as_tensor(which[start:stop], device=dev)]).abs()
        r = r.double().cpu()
        if sampler is not None:       # raw responses: the per-image centring is global
            sampler.tell(trials, r.numpy())
        chunks.append(r)
    responses = torch.cat(chunks).numpy()
    if n_img > 1:                    # only the images shown (n_masks may be < n_images)
        for j in range(min(n_img, n_masks)):
            responses[which == j] -= responses[which == j].mean(axis=0)
    per_layer = rec.unit_names(timgs[:1])
    targets = [f"{name}:{u}" for name in layers for u in per_layer[name]]
    if sampler is None:
        ci = classification_image(spec, centers, responses, method=method,
                                  targets=targets, observer="unit", progress=progress)
    else:
        run = sampler.run()
        ci = adaptive_image(spec, run.centers, responses, run.densities, run.blocks,
                            method, scale="map", targets=targets, observer="unit",
                            progress=progress)
        ci.info["sampling"].update(policy=policy.to_dict())
        ci.info["densities"] = run.densities
    ci.info.update({"model": type(rec.model).__name__, "layer": ", ".join(layers),
                    "layers": layers,
                    "units_per_layer": [len(per_layer[name]) for name in layers],
                    "response": response, "n_images": min(n_img, n_masks),
                    "mask_seed": _seed_record(seed, root), "n_masks": n_masks})
    if stimulus_ids is not None:
        ci.info["stimuli"] = stimulus_ids[:n_masks]
    return ci


def random_weights(model, seed=0):
    """A copy of ``model`` with the same architecture and freshly initialised weights.

    Every sub-module with a ``reset_parameters`` method (convolutions, linear layers,
    normalisation layers, whose running statistics are reset too) is re-initialised
    with torch's default initialisation, drawn from ``seed`` without touching torch's
    global random state. The control network of the randomisation test of Adebayo et
    al. (2018): a map that survives random weights says more about the architecture and
    the stimuli than about what the network learned. ``model`` itself is unchanged.

    Parameters
    ----------
    model : torch.nn.Module
    seed : int

    Returns
    -------
    torch.nn.Module
        In eval mode, on ``model``'s device.

    Raises
    ------
    TypeError
        ``model`` is not an ``nn.Module`` or ``seed`` not an int.
    ValueError
        A parameter belongs to a module that cannot re-initialise it (a custom
        ``nn.Parameter`` outside standard layers): the copy would not be random.

    References
    ----------
    Adebayo, J. et al. (2018). Sanity checks for saliency maps. NeurIPS 31.
    """
    import copy

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    clone = copy.deepcopy(model)
    fixed = set()
    devices = [p.device for p in clone.parameters() if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices})):
        torch.manual_seed(int(seed))
        for module in clone.modules():
            if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
                module.reset_parameters()
                fixed |= {id(p) for p in module.parameters(recurse=False)}
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    left = [name for name, p in clone.named_parameters() if id(p) not in fixed]
    if left:
        raise ValueError(f"model has parameters that no layer can re-initialise "
                         f"({left[:5]}): random_weights cannot make a random copy of it")
    return clone.eval()


def strongest_targets(image: DiagnosticImage, n=5) -> list:
    """The ``n`` targets of ``image`` with the largest max |z| (over bands and pixels),
    strongest first, as ``(name, max |z|)`` pairs.

    Examples
    --------
    >>> img = DiagnosticImage(z=np.array([[[1.0]], [[-3.0]]]), method="regression",
    ...                       spec=None, n_trials=2, dims=("target", "y", "x"))
    >>> strongest_targets(img, 1)
    [('1', 3.0)]
    """
    peak = np.abs(image.maps()).reshape(image.n_targets, -1).max(axis=1)
    order = np.argsort(-peak, kind="stable")[:n]
    return [(image.names[i], float(peak[i])) for i in order]
