"""The seed lecture's attribution methods, for an output class or an internal unit.

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

All three take images ``(N, H, W)`` (or one ``(H, W)`` image, or the layouts of
:func:`ann_bridge.record.image_batch`: a 4-D torch tensor is ``(N, C, H, W)``) in [0, 1]
and return one result type, :class:`Attribution`: maps ``(N, n_targets, H, W)``, the
name of every target, the method's settings and, for integrated gradients, the
completeness gap. :func:`attribution_images` turns it into one
:class:`analysis.DiagnosticImage` per image, the format of every map of the toolkit.
No function returns NaN maps: non-finite images, baselines or grey levels are refused,
and so is a model whose outputs are not finite.

:func:`perturbation_effect` is not a map: it is the seed lecture's perturbation measure
``|a(X) - a(X')|`` of every unit for each altered image X', ``(P, n_targets)`` -- the
response that :func:`ann_bridge.diagnostic_images` (``response='perturbation'``)
regresses on the bubbles masks to make maps.

A target is an output class (``target``: index or class label) or, with ``layer``, units
of an internal layer (``units``, as in :mod:`ann_bridge.record`). The model is moved to
``device`` and put in eval mode (batch norm uses its running statistics). For a unit,
captum's class methods run on a forward function that returns the unit (this is what
captum's ``Neuron*`` variants compute, and ``IntegratedGradients`` reports the
convergence delta that ``NeuronIntegratedGradients`` does not).

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

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from analysis import DiagnosticImage
from analysis.zscore import zscore
from bubbles import occlusion_positions

from .record import (UnitRecorder, Units, _StopForward, as_units, check_count,
                     default_preprocess, get_layer, image_batch, resolve_device)

__all__ = [
    "OCCLUDER_SIZES",
    "METHODS",
    "Readout",
    "Attribution",
    "occlusion",
    "saliency",
    "integrated_gradients",
    "attribution_images",
    "perturbation_effect",
]

#: Occluder sides in pixels compared by Ancona et al. (2018).
OCCLUDER_SIZES = (1, 5, 10, 15)

#: Each attribution method and what its values are (figure labels).
METHODS = {"occlusion": "drop a(X) - a(X occluded)", "saliency": "|dS/dX|",
           "integrated_gradients": "IG attribution"}


def _grey(name, value):
    """A finite grey level in [0, 1] (occluder fill, IG baseline), refused otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a grey level in [0, 1], got {value!r}") from None
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"{name} must be a finite grey level in [0, 1], got {value!r}")
    return v


def _finite(maps, method):
    """Refuse non-finite maps: they come from a model whose outputs are not finite."""
    if not np.isfinite(maps).all():
        raise ValueError(f"{method}: the attribution holds NaN or inf values: the model's "
                         "outputs (or gradients) are not finite for these images")
    return maps


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

    Calling a readout on a float tensor of raw images in the toolkit's layout
    (``(N, H, W)`` or ``(N, H, W, C)``, see :func:`ann_bridge.record.image_batch`)
    returns ``(N, k)`` (differentiable; the forward pass stops after ``layer``).
    """

    def __init__(self, model, layer=None, units=None, *, preprocess=None, device=None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if preprocess is not None and not callable(preprocess):
            raise TypeError(f"preprocess must be callable, got {preprocess!r}")
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
    return tqdm(items, disable=not progress or len(items) < 2, desc=desc, unit="target",
                leave=False)


def _pick(out: torch.Tensor, col) -> torch.Tensor:
    if isinstance(col, list):
        rows = torch.arange(out.shape[0], device=out.device)
        return out[rows, torch.as_tensor(col, device=out.device)]
    return out[:, col]


@dataclass
class Attribution:
    """Attribution maps of one method for a stack of images and their targets.

    Attributes
    ----------
    method : str
        'occlusion', 'saliency' or 'integrated_gradients' (a key of :data:`METHODS`).
    attribution : ndarray (N, n_targets, H, W)
        float32 maps in the method's own units (:attr:`measure`).
    targets : list of list of str
        Per image, the name of each target: ``'class happy'``, ``'predicted class:
        happy'`` (each image's own prediction) or ``'layer:ch3'``.
    layer : str or None
        The internal layer of the units, None for output classes.
    params : dict
        The method's settings (JSON-able), e.g. occluder size, stride, fill and sweep;
        IG baseline, steps and quadrature.
    gap, relative_gap, difference : ndarray (N, n_targets) or None
        Integrated gradients only: the completeness gap ``sum(IG) - (F(x) - F(x'))``
        (captum's convergence delta), ``|gap| / |F(x) - F(x')|`` and ``F(x) - F(x')``.
    """

    method: str
    attribution: np.ndarray
    targets: list
    layer: str | None = None
    params: dict = field(default_factory=dict)
    gap: np.ndarray | None = None
    relative_gap: np.ndarray | None = field(default=None, repr=False)
    difference: np.ndarray | None = field(default=None, repr=False)

    @property
    def measure(self) -> str:
        """What the values are, e.g. ``'|dS/dX|'`` (figure labels)."""
        return METHODS[self.method]


def attribution_images(result: Attribution, stimulus_ids=None) -> list:
    """One :class:`analysis.DiagnosticImage` per image of an :class:`Attribution`.

    Each image's ``raw`` holds its maps ``(n_targets, H, W)`` and ``z`` the same maps
    standardised over pixels (:func:`analysis.zscore.zscore`, population SD; a constant
    map is 0), ``dims`` ``('target', 'y', 'x')``, ``targets`` the target names and
    ``observer='network'``, so that ``bubbles compare`` reads them like any map.
    ``info`` holds the method, the stimulus, the layer, the settings and, for
    integrated gradients, the image's completeness gaps.

    Parameters
    ----------
    result : Attribution
    stimulus_ids : sequence of str, optional
        A name per image (default ``'image0'``, ``'image1'``, ...).

    Returns
    -------
    list of DiagnosticImage
    """
    if not isinstance(result, Attribution):
        raise TypeError(f"result must be an Attribution, got {type(result).__name__}")
    n = len(result.attribution)
    ids = [f"image{i}" for i in range(n)] if stimulus_ids is None else [
        str(s) for s in stimulus_ids]
    if len(ids) != n:
        raise ValueError(f"stimulus_ids must name each of the {n} images, got {len(ids)}")
    images = []
    for i, sid in enumerate(ids):
        raw = result.attribution[i]
        info = {"attribution": result.method, "stimulus": sid, "layer": result.layer,
                "z": "attribution standardised over pixels; raw holds the attribution",
                "measure": result.measure, **result.params}
        if result.gap is not None:
            info.update({"completeness_gap": result.gap[i], "relative_gap":
                         result.relative_gap[i], "difference": result.difference[i]})
        images.append(DiagnosticImage(
            z=zscore(raw, axis=(-2, -1)), method=result.method, spec=None, n_trials=0,
            info=info, raw=raw, dims=("target", "y", "x"), targets=result.targets[i],
            observer="network"))
    return images


def perturbation_effect(model, images, perturbed, *, layer=None, units=None,
                        preprocess=None, device=None, batch_size=256) -> np.ndarray:
    """The seed's perturbation measure ``|a_i(X) - a_i(X')|`` for every unit ``i``.

    Not a map: one row per altered image. Regressed on the bubbles masks it makes the
    maps of :func:`ann_bridge.diagnostic_images` with ``response='perturbation'``.

    Parameters
    ----------
    model : torch.nn.Module
    images : array (H, W) or (N, H, W), values in [0, 1]
        Original images X; one image is compared with every perturbed one.
    perturbed : array (P, H, W), values in [0, 1]
        Altered images X' (P == N when several originals are given).
    layer, units : optional
        An internal layer and its units; default: the model outputs.
    batch_size : int
        Perturbed images per forward pass.

    Returns
    -------
    numpy.ndarray
        float32 ``(P, n_targets)``.

    Examples
    --------
    >>> d = perturbation_effect(model, img, apply_bubbles(img, masks))  # doctest: +SKIP
    """
    batch_size = check_count("batch_size", batch_size)
    x = image_batch(images)
    xp = image_batch(perturbed, name="perturbed")
    if x.shape[0] not in (1, xp.shape[0]) or x.shape[1:] != xp.shape[1:]:
        raise ValueError(f"perturbed must have shape (P, ...) matching images "
                         f"{tuple(x.shape)}, got {tuple(xp.shape)}")
    read = Readout(model, layer, units, preprocess=preprocess, device=device)
    dev = read.device
    a0 = read.infer(x.to(dev))
    out = []
    for i in range(0, len(xp), batch_size):
        a = read.infer(xp[i:i + batch_size].to(dev))
        ref = a0 if a0.shape[0] == 1 else a0[i:i + batch_size]
        out.append((a - ref).abs().cpu().numpy())
    return _finite(np.concatenate(out).astype(np.float32), "perturbation_effect")


SWEEPS = ("cover", "captum")


def _captum_positions(shape, size, stride):
    """captum.attr.Occlusion's window corners: ``ceil((n - size) / stride) + 1`` steps
    per axis from 0; the last window may run past the edge (it is clipped)."""
    occlusion_positions(shape, size, stride=stride)          # same checks and errors
    stride = size if stride is None else stride
    starts = [np.arange(int(np.ceil((n - size) / stride)) + 1) * stride for n in shape]
    return np.array([(r, c) for r in starts[0] for c in starts[1]], dtype=np.int64)


def _setup(model, images, target, layer, units, preprocess, device):
    """The readout, the images on its device and the resolved targets with their names."""
    read = Readout(model, layer, units, preprocess=preprocess, device=device)
    xt = image_batch(images).to(read.device)
    cols = read.columns(target, xt)
    return read, xt, cols, read.target_names(cols, len(xt))


def occlusion(model, images, target=None, *, layer=None, units=None, size=10,
              stride=None, fill=0.5, sweep="cover", preprocess=None, device=None,
              batch_size=256, progress=True) -> Attribution:
    """Occlusion maps (Zeiler & Fergus 2014) for output classes or internal units.

    A ``size`` x ``size`` square of grey ``fill`` slides over the image by ``stride``
    (positions from :func:`bubbles.occlusion_positions`, which cover every pixel). The
    map at a pixel is the mean of ``a(X) - a(X_occluded)`` over the positions covering
    it: positive where hiding the pixel lowers the unit.

    Parameters
    ----------
    model : torch.nn.Module
    images : array (H, W) or (N, H, W), or a tensor (N, C, H, W)
        Floats in [0, 1] (see :func:`ann_bridge.record.image_batch`).
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
        Grey level of the occluder, finite, in [0, 1].
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

    Returns
    -------
    Attribution
        ``attribution`` float32 ``(N, n_targets, H, W)``; ``params`` size, stride,
        fill, sweep.
    """
    fill = _grey("fill", fill)
    batch_size = check_count("batch_size", batch_size)
    if sweep not in SWEEPS:
        raise ValueError(f"sweep must be one of {list(SWEEPS)}; {sweep!r} was provided")
    read, xt, cols, names = _setup(model, images, target, layer, units, preprocess, device)
    dev = read.device
    h, w = xt.shape[1:3]
    pos = (occlusion_positions((h, w), size, stride=stride) if sweep == "cover"
           else _captum_positions((h, w), size, stride))
    result = np.zeros((len(xt), len(cols), h, w), np.float32)
    rows = torch.arange(h, device=dev)
    cc = torch.arange(w, device=dev)
    for n in range(len(xt)):
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
            occ = img * (1 - wimg) + fill * wimg
            delta = (base - read.infer(occ))[:, idx]              # (b, k)
            part = torch.einsum("bk,bhw->khw", delta, win)
            attr = part if attr is None else attr + part
            count += win.sum(0)
        result[n] = (attr / count.clamp_min(1)).cpu().numpy()
    params = {"size": int(size), "stride": int(size if stride is None else stride),
              "fill": fill, "sweep": sweep}
    return Attribution("occlusion", _finite(result, "occlusion"), names, read.layer, params)


def saliency(model, images, target=None, *, layer=None, units=None, preprocess=None,
             device=None, progress=True) -> Attribution:
    """Gradient saliency ``|dS/dX|`` (Simonyan et al. 2014) via ``captum.attr.Saliency``.

    Parameters are those of :func:`occlusion`; the score S is the unnormalised class
    score (logit) or the unit's activation. Colour images take the max over channels.
    ``progress`` shows a tqdm bar over the targets (one backward pass each).

    Returns
    -------
    Attribution
        ``attribution`` float32 ``(N, n_targets, H, W)``.
    """
    from captum.attr import Saliency

    read, xt, cols, names = _setup(model, images, target, layer, units, preprocess, device)
    sal = Saliency(read)
    maps = []
    for col in _bar(cols, progress, "saliency"):
        t = torch.as_tensor(col, device=read.device) if isinstance(col, list) else col
        a = sal.attribute(xt.clone().requires_grad_(True), target=t, abs=True).detach()
        if a.ndim == 4:
            a = a.amax(dim=-1)
        maps.append(a.cpu().numpy())
    result = np.stack(maps, axis=1).astype(np.float32)
    return Attribution("saliency", _finite(result, "saliency"), names, read.layer)


IG_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right",
              "riemann_middle")


def integrated_gradients(model, images, target=None, *, layer=None, units=None,
                         baseline=0.5, n_steps=50, method="gausslegendre",
                         internal_batch_size=64, preprocess=None, device=None,
                         tolerance=0.05, progress=True) -> Attribution:
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
        shaped like one image or like ``images``; finite, in [0, 1].
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

    Returns
    -------
    Attribution
        ``attribution`` float32 ``(N, n_targets, H, W)``, ``gap``, ``relative_gap`` and
        ``difference`` ``(N, n_targets)``; ``params`` baseline (a grey level, or
        'array'), n_steps, quadrature.
    """
    from captum.attr import IntegratedGradients

    if method not in IG_METHODS:
        raise ValueError(f"method must be one of {list(IG_METHODS)}; {method!r} was provided")
    n_steps = check_count("n_steps", n_steps, 2)
    if internal_batch_size is not None:
        internal_batch_size = check_count("internal_batch_size (None or a count)",
                                          internal_batch_size)
    read, xt, cols, names = _setup(model, images, target, layer, units, preprocess, device)
    if np.ndim(baseline) == 0 and not torch.is_tensor(baseline):
        level = _grey("baseline", baseline)
        base = torch.full_like(xt, level)
    else:
        level = "array"
        b = image_batch(baseline, name="baseline").to(read.device)
        try:
            base = b.expand_as(xt).contiguous()
        except RuntimeError:
            raise ValueError(f"baseline must be a grey level or shaped like one image "
                             f"{tuple(xt.shape[1:])} or like images {tuple(xt.shape)}, got "
                             f"{tuple(np.shape(baseline))}") from None
    ig = IntegratedGradients(read)
    maps, gaps, diffs = [], [], []
    for col in _bar(cols, progress, "integrated gradients"):
        t = torch.as_tensor(col, device=read.device) if isinstance(col, list) else col
        a, delta = ig.attribute(xt, baselines=base, target=t, n_steps=n_steps,
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
    result = _finite(np.stack(maps, axis=1).astype(np.float32), "integrated gradients")
    gap = np.stack(gaps, axis=1).astype(np.float64)
    diff = np.stack(diffs, axis=1).astype(np.float64)
    rel = np.abs(gap) / np.maximum(np.abs(diff), 1e-12)
    if np.any(rel > tolerance):
        warnings.warn(
            f"integrated gradients: completeness gap up to {rel.max():.1%} of "
            f"|F(x) - F(x')| (tolerance {tolerance:.0%}); raise n_steps (now {n_steps})",
            UserWarning, stacklevel=2)
    params = {"baseline": level, "n_steps": n_steps, "quadrature": method}
    return Attribution("integrated_gradients", result, names, read.layer, params,
                       gap=gap, relative_gap=rel, difference=diff)
