"""The seed lecture's attribution methods, for an output class or an internal unit.

* :func:`perturbation` -- ``|a(X) - a(X')|`` for any unit when the input is altered.
* :func:`occlusion` -- a grey square swept over the image (Zeiler & Fergus 2014); the
  map at a pixel is the mean drop ``a(X) - a(X_occluded)`` over the occluder positions
  covering it. Our own batched sweep: every selected unit (all channels of a layer, all
  classes) in one truncated forward pass per batch, under ``torch.inference_mode()``.
  It equals ``captum.attr.Occlusion`` (``sweep='captum'`` takes captum's positions).
* :func:`saliency` -- ``|dS_c/dX|`` of the unnormalised score (Simonyan et al. 2014),
  max over colour channels; ``captum.attr.Saliency``.
* :func:`integrated_gradients` -- ``captum.attr.IntegratedGradients`` from a baseline,
  with the completeness gap ``sum(IG) - (F(x) - F(x'))`` reported and a warning above
  5 % of ``|F(x) - F(x')|`` (Sundararajan et al. 2017).

A target is an output class (``target``: index or class label) or, with ``layer``, units
of an internal layer (``units``, as in :mod:`ann_bridge.record`). The model is moved to
``device`` and put in eval mode (batch norm uses its running statistics). For a unit, captum's
class methods run on a forward function that returns the unit (this is what captum's
``Neuron*`` variants compute, and ``IntegratedGradients`` reports the convergence delta
that ``NeuronIntegratedGradients`` does not).

Every function takes images ``(N, H, W)`` (or one ``(H, W)`` image) in [0, 1] and returns
float32 maps ``(N, n_targets, H, W)``.

References
----------
Zeiler, M. D. & Fergus, R. (2014). Visualizing and understanding convolutional networks.
ECCV. doi:10.1007/978-3-319-10590-1_53
Simonyan, K., Vedaldi, A. & Zisserman, A. (2014). Deep inside convolutional networks.
ICLR workshop. arXiv:1312.6034
Sundararajan, M., Taly, A. & Yan, Q. (2017). Axiomatic attribution for deep networks.
ICML. arXiv:1703.01365
Ancona, M., Ceolini, E., Oztireli, C. & Gross, M. (2018). Towards better understanding of
gradient-based attribution methods for deep neural networks. ICLR. arXiv:1711.06104
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from bubbles import occlusion_positions

from .record import (UnitRecorder, Units, _StopForward, as_units, default_preprocess,
                     get_layer, resolve_device)

__all__ = [
    "OCCLUDER_SIZES",
    "Readout",
    "IGResult",
    "perturbation",
    "occlusion",
    "saliency",
    "integrated_gradients",
]

#: Occluder sides in pixels compared by Ancona et al. (2018).
OCCLUDER_SIZES = (1, 5, 10, 15)


def _as_images(images) -> np.ndarray:
    arr = np.asarray(images.detach().cpu() if torch.is_tensor(images) else images,
                     dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim not in (3, 4):
        raise ValueError(f"images must have shape (H, W), (N, H, W) or (N, H, W, C), "
                         f"got {arr.shape}")
    return arr


class Readout:
    """A model's output classes or one layer's units as a function of raw images.

    Parameters
    ----------
    model : torch.nn.Module
    layer : str, optional
        ``None`` reads the model output (one column per class); a layer name reads that
        layer's ``units``.
    units : see :func:`ann_bridge.record.as_units`
    preprocess : callable, optional
        Raw image batch -> model input (differentiable for gradient methods).
    device : str or torch.device, optional

    Calling a readout on a float tensor of raw images ``(N, H, W)`` returns ``(N, k)``
    (differentiable; the forward pass stops after ``layer``).
    """

    def __init__(self, model, layer=None, units=None, *, preprocess=None, device=None):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.preprocess = default_preprocess if preprocess is None else preprocess
        self.layer = None
        if layer is not None:
            self.layer, self.module = get_layer(model, layer)
            self.units = as_units(units)
        elif units is not None:
            raise ValueError("units needs layer; for output classes use target")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer is None:
            return self.model(self.preprocess(x))
        return self._select(self._layer_output(x))

    def _layer_output(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's whole output for raw images ``x`` (the pass stops there)."""
        z = self.preprocess(x)
        store = {}

        def hook(module, inputs, output):
            store["out"] = output[0] if isinstance(output, (tuple, list)) else output
            raise _StopForward

        handle = self.module.register_forward_hook(hook)
        try:
            self.model(z)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return store["out"]

    def _select(self, out: torch.Tensor) -> torch.Tensor:
        if isinstance(self.units, Units):
            r = self.units.select(out, self.layer)
        else:
            r = self.units(out)
        return r[:, None] if r.ndim == 1 else r

    def recorder(self):
        """An inference-only :class:`UnitRecorder` for the same layer (None for outputs)."""
        if self.layer is None:
            return None
        return UnitRecorder(self.model, self.layer, self.units,
                            preprocess=self.preprocess, device=self.device)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, k)`` under ``torch.inference_mode()``, truncated after the layer."""
        if self.layer is None:
            with torch.inference_mode():
                return self.model(self.preprocess(x))
        if not hasattr(self, "_rec"):
            self._rec = self.recorder()
        return self._rec(x)[self.layer]

    def columns(self, target, x: torch.Tensor) -> list:
        """Resolve ``target`` to a list of column selections.

        Each entry is an int (a column for every image) or a per-image list of ints
        (``target=None`` on outputs: each image's predicted class).
        """
        if self.layer is not None:
            if target is not None:
                raise ValueError("target must be None when layer is given; choose the "
                                 "unit(s) with units")
            with torch.inference_mode():
                raw = self._layer_output(x[:1])
            self.n_channels = int(raw.shape[1]) if raw.ndim > 1 else 1
            k = self._select(raw).shape[1]
            return list(range(k))
        if target is None:
            pred = self.infer(x).argmax(dim=1).tolist()
            return [pred]
        targets = [target] if isinstance(target, (int, np.integer, str)) else list(target)
        classes = list(getattr(self.model, "classes", []) or [])
        k = self.infer(x[:1]).shape[1]
        cols = []
        for t in targets:
            if isinstance(t, str):
                if t not in classes:
                    raise ValueError(f"target must be a class index in 0..{k - 1} or one "
                                     f"of {classes}; {t!r} was provided")
                t = classes.index(t)
            t = int(t)
            if not 0 <= t < k:
                raise ValueError(f"target must be a class index in 0..{k - 1}, got {t}")
            cols.append(t)
        return cols


    def target_names(self, cols, n_images) -> list:
        """Per image, a name for each column of :meth:`columns` (no forward pass): the
        layer's unit (``'layer:ch3'``), the class (``'class happy'``) or the predicted
        class (``'predicted class: happy'``)."""
        if self.layer is not None:
            if isinstance(self.units, Units) and hasattr(self, "n_channels"):
                units = self.units.describe(self.n_channels)
            else:
                units = [f"unit{k}" for k in range(len(cols))]
            return [[f"{self.layer}:{u}" for u in units] for _ in range(n_images)]
        classes = list(getattr(self.model, "classes", []) or [])

        def label(k):
            return classes[k] if k < len(classes) else f"output {k}"

        if len(cols) == 1 and isinstance(cols[0], list):
            return [[f"predicted class: {label(k)}"] for k in cols[0]]
        return [[f"class {label(k)}" for k in cols] for _ in range(n_images)]


def _bar(items, progress, desc):
    """tqdm over the targets when there are several (one pass of captum each)."""
    from tqdm.auto import tqdm

    return tqdm(items, disable=not progress or len(items) < 2, desc=desc, unit="target",
                leave=False)


def _pick(out: torch.Tensor, col) -> torch.Tensor:
    if isinstance(col, list):
        rows = torch.arange(out.shape[0], device=out.device)
        return out[rows, torch.as_tensor(col, device=out.device)]
    return out[:, col]


def perturbation(model, images, perturbed, *, layer=None, units=None, preprocess=None,
                 device=None, batch_size=256) -> np.ndarray:
    """The seed's perturbation measure ``|a_i(X) - a_i(X')|`` for every unit ``i``.

    Parameters
    ----------
    model : torch.nn.Module
    images : array (H, W) or (N, H, W)
        Original images X; one image is compared with every perturbed one.
    perturbed : array (P, H, W)
        Altered images X' (P == N when several originals are given).
    layer, units : optional
        An internal layer and its units; default: the model outputs.

    Returns
    -------
    numpy.ndarray
        float32 ``(P, n_units)``.

    Examples
    --------
    >>> d = perturbation(model, img, apply_bubbles(img, masks))  # doctest: +SKIP
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    x = _as_images(images)
    xp = _as_images(perturbed)
    if x.shape[0] not in (1, xp.shape[0]) or x.shape[1:] != xp.shape[1:]:
        raise ValueError(f"perturbed must have shape (P, ...) matching images {x.shape}, "
                         f"got {xp.shape}")
    read = Readout(model, layer, units, preprocess=preprocess, device=device)
    dev = read.device
    a0 = read.infer(torch.from_numpy(x).to(dev))
    out = []
    for i in range(0, len(xp), batch_size):
        a = read.infer(torch.from_numpy(xp[i:i + batch_size]).to(dev))
        ref = a0 if a0.shape[0] == 1 else a0[i:i + batch_size]
        out.append((a - ref).abs().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


SWEEPS = ("cover", "captum")


def _captum_positions(shape, size, stride):
    """captum.attr.Occlusion's window corners: ``ceil((n - size) / stride) + 1`` steps
    per axis from 0; the last window may run past the edge (it is clipped)."""
    occlusion_positions(shape, size, stride=stride)          # same checks and errors
    stride = size if stride is None else stride
    starts = [np.arange(int(np.ceil((n - size) / stride)) + 1) * stride for n in shape]
    return np.array([(r, c) for r in starts[0] for c in starts[1]], dtype=np.int64)


def occlusion(model, images, target=None, *, layer=None, units=None, size=10,
              stride=None, fill=0.5, sweep="cover", preprocess=None, device=None,
              batch_size=256, progress=True, columns=None) -> np.ndarray:
    """Occlusion maps (Zeiler & Fergus 2014) for output classes or internal units.

    A ``size`` x ``size`` square of grey ``fill`` slides over the image by ``stride``
    (positions from :func:`bubbles.occlusion_positions`, which cover every pixel). The
    map at a pixel is the mean of ``a(X) - a(X_occluded)`` over the positions covering
    it: positive where hiding the pixel lowers the unit.

    Parameters
    ----------
    model : torch.nn.Module
    images : array (H, W) or (N, H, W)
        Floats in [0, 1].
    target : None, int, str or sequence
        Output classes (index or label in ``model.classes``); ``None`` = each image's
        predicted class. Must be None when ``layer`` is given.
    layer : str, optional
        Internal layer; then ``units`` picks the units (all channels by default).
    size : int
        Occluder side in pixels; Ancona et al. (2018) compare 1, 5, 10 and 15.
    stride : int, optional
        Step in pixels, at most ``size`` (a larger stride leaves pixels uncovered and
        is rejected). Defaults to ``size``.
    fill : float
        Grey level of the occluder, in [0, 1].
    sweep : {'cover', 'captum'}
        'cover' (default): :func:`bubbles.occlusion_positions`, whose last window per
        axis sits flush with the far edge; 'captum': the positions of
        ``captum.attr.Occlusion`` (``ceil((H - size) / stride) + 1`` steps, the last
        window clipped at the edge). Both cover every pixel; they coincide when
        ``(H - size) % stride == 0``.
    batch_size : int
        Occluded images per forward pass.
    progress : bool
        Show a tqdm bar per image.
    columns : list, optional
        ``target`` already resolved by :meth:`Readout.columns` for these images (a
        caller that also names the targets, like ``bubbles ann attribute``, resolves
        them once); skips the forward pass that resolves them.

    Returns
    -------
    numpy.ndarray
        float32 ``(N, n_targets, H, W)``.
    """
    x = _as_images(images)
    if not 0.0 <= float(fill) <= 1.0:
        raise ValueError(f"fill must be a grey level in [0, 1], got {fill!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    h, w = x.shape[1:3]
    if sweep not in SWEEPS:
        raise ValueError(f"sweep must be one of {list(SWEEPS)}; {sweep!r} was provided")
    pos = (occlusion_positions((h, w), size, stride=stride) if sweep == "cover"
           else _captum_positions((h, w), size, stride))
    read = Readout(model, layer, units, preprocess=preprocess, device=device)
    dev = read.device
    xt = torch.from_numpy(x).to(dev)
    cols = read.columns(target, xt) if columns is None else list(columns)
    from tqdm.auto import tqdm

    result = np.zeros((len(x), len(cols), h, w), np.float32)
    rows = torch.arange(h, device=dev)
    cc = torch.arange(w, device=dev)
    for n in range(len(x)):
        img = xt[n:n + 1]
        base = read.infer(img)                                   # (1, k_all)
        attr = None
        count = torch.zeros(h, w, device=dev)
        sel = [c[n] if isinstance(c, list) else c for c in cols]
        idx = torch.as_tensor(sel, device=dev)
        for start in tqdm(range(0, len(pos), batch_size), disable=not progress,
                          desc=f"occlusion image {n}", leave=False):
            p = torch.as_tensor(pos[start:start + batch_size], device=dev)
            inr = (rows[None, :] >= p[:, :1]) & (rows[None, :] < p[:, :1] + size)
            inc = (cc[None, :] >= p[:, 1:]) & (cc[None, :] < p[:, 1:] + size)
            win = (inr[:, :, None] & inc[:, None, :]).float()     # (b, H, W), 1 = hidden
            wimg = win.reshape(win.shape + (1,) * (img.ndim - 3))
            occ = img * (1 - wimg) + float(fill) * wimg
            delta = (base - read.infer(occ))[:, idx]              # (b, k)
            part = torch.einsum("bk,bhw->khw", delta, win)
            attr = part if attr is None else attr + part
            count += win.sum(0)
        result[n] = (attr / count.clamp_min(1)).cpu().numpy()
    return result


def saliency(model, images, target=None, *, layer=None, units=None, preprocess=None,
             device=None, progress=True, columns=None) -> np.ndarray:
    """Gradient saliency ``|dS/dX|`` (Simonyan et al. 2014) via ``captum.attr.Saliency``.

    Parameters are those of :func:`occlusion`; the score S is the unnormalised class
    score (logit) or the unit's activation. Colour images take the max over channels.
    ``progress`` shows a tqdm bar over the targets (one backward pass each).
    ``columns`` as in :func:`occlusion`.

    Returns
    -------
    numpy.ndarray
        float32 ``(N, n_targets, H, W)``.
    """
    from captum.attr import Saliency

    x = _as_images(images)
    read = Readout(model, layer, units, preprocess=preprocess, device=device)
    xt = torch.from_numpy(x).to(read.device)
    cols = read.columns(target, xt) if columns is None else list(columns)
    sal = Saliency(read)
    maps = []
    for col in _bar(cols, progress, "saliency"):
        t = torch.as_tensor(col, device=read.device) if isinstance(col, list) else col
        a = sal.attribute(xt.clone().requires_grad_(True), target=t, abs=True).detach()
        if a.ndim == 4:
            a = a.amax(dim=-1)
        maps.append(a.cpu().numpy())
    return np.stack(maps, axis=1).astype(np.float32)


@dataclass
class IGResult:
    """Integrated gradients with their completeness check.

    Attributes
    ----------
    attribution : ndarray (N, n_targets, H, W)
    gap : ndarray (N, n_targets)
        ``sum(attribution) - (F(x) - F(x'))`` (captum's convergence delta).
    relative_gap : ndarray (N, n_targets)
        ``|gap| / |F(x) - F(x')|``.
    difference : ndarray (N, n_targets)
        ``F(x) - F(x')``.

    Unpacks as ``attribution, gap = integrated_gradients(...)``.
    """

    attribution: np.ndarray
    gap: np.ndarray
    relative_gap: np.ndarray = field(repr=False)
    difference: np.ndarray = field(repr=False)

    def __iter__(self):
        return iter((self.attribution, self.gap))


def integrated_gradients(model, images, target=None, *, layer=None, units=None,
                         baseline=0.5, n_steps=50, method="gausslegendre",
                         internal_batch_size=64, preprocess=None, device=None,
                         tolerance=0.05, progress=True, columns=None) -> IGResult:
    """Integrated gradients (Sundararajan et al. 2017) via captum, with completeness.

    ``IG_i = (x_i - x'_i) * integral_0^1 dF(x' + a (x - x'))/dx_i da``; completeness
    says ``sum_i IG_i = F(x) - F(x')``. The gap is reported for every image and target
    and a ``UserWarning`` is issued when it exceeds ``tolerance`` times
    ``|F(x) - F(x')|`` (raise ``n_steps`` then).

    Parameters
    ----------
    model, images, target, layer, units : see :func:`occlusion`
    baseline : float or array
        The reference input x': a grey level (default 0.5, the mid grey) or an array
        shaped like one image or like ``images``.
    n_steps : int
        Points of the path integral (>= 2).
    method : str
        'gausslegendre' (default), 'riemann_trapezoid', 'riemann_left', 'riemann_right'
        or 'riemann_middle'.
    internal_batch_size : int or None
        Path points per forward/backward pass (captum splits the ``N * n_steps``
        points into passes of this size), so memory stays bounded at many steps;
        default 64. None runs all points in one pass (fastest, memory grows with
        ``N * n_steps``).
    tolerance : float
        Relative completeness gap above which to warn.
    progress : bool
        Show a tqdm bar over the targets (one path integral each).
    columns : list, optional
        As in :func:`occlusion`.

    Returns
    -------
    IGResult
    """
    from captum.attr import IntegratedGradients

    methods = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right",
               "riemann_middle")
    if method not in methods:
        raise ValueError(f"method must be one of {list(methods)}; {method!r} was provided")
    if isinstance(n_steps, bool) or int(n_steps) != n_steps or n_steps < 2:
        raise ValueError(f"n_steps must be an integer >= 2, got {n_steps!r}")
    ibs = internal_batch_size
    if ibs is not None and (isinstance(ibs, bool) or int(ibs) != ibs or ibs < 1):
        raise ValueError(f"internal_batch_size must be None or an integer >= 1, got "
                         f"{internal_batch_size!r}")
    x = _as_images(images)
    read = Readout(model, layer, units, preprocess=preprocess, device=device)
    xt = torch.from_numpy(x).to(read.device)
    if np.isscalar(baseline):
        base = torch.full_like(xt, float(baseline))
    else:
        b = torch.as_tensor(np.asarray(baseline, dtype=np.float32), device=read.device)
        try:
            base = b.expand_as(xt).contiguous()
        except RuntimeError:
            raise ValueError(f"baseline must be a float or shaped like one image "
                             f"{x.shape[1:]} or like images {x.shape}, got "
                             f"{tuple(b.shape)}") from None
    cols = read.columns(target, xt) if columns is None else list(columns)
    ig = IntegratedGradients(read)
    maps, gaps, diffs = [], [], []
    for col in _bar(cols, progress, "integrated gradients"):
        t = torch.as_tensor(col, device=read.device) if isinstance(col, list) else col
        a, delta = ig.attribute(xt, baselines=base, target=t, n_steps=int(n_steps),
                                method=method, internal_batch_size=internal_batch_size,
                                return_convergence_delta=True)
        with torch.no_grad():
            diff = _pick(read(xt), col) - _pick(read(base), col)
        a = a.detach()
        if a.ndim == 4:   # colour: sum over channels keeps completeness
            a = a.sum(dim=-1)
        maps.append(a.cpu().numpy())
        gaps.append(delta.detach().cpu().numpy())
        diffs.append(diff.cpu().numpy())
    gap = np.stack(gaps, axis=1).astype(np.float64)
    diff = np.stack(diffs, axis=1).astype(np.float64)
    rel = np.abs(gap) / np.maximum(np.abs(diff), 1e-12)
    if np.any(rel > tolerance):
        warnings.warn(
            f"integrated gradients: completeness gap up to {rel.max():.1%} of "
            f"|F(x) - F(x')| (tolerance {tolerance:.0%}); raise n_steps (now {n_steps})",
            UserWarning, stacklevel=2)
    return IGResult(np.stack(maps, axis=1).astype(np.float32), gap, rel, diff)
