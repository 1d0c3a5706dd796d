"""Record the activations of chosen units of any ``torch.nn.Module``.

A unit is one number per input image: a channel of a layer averaged over space, a
channel at one spatial position, one feature of a fully connected layer, or whatever a
callable computes from the layer's output.  :class:`UnitRecorder` attaches forward
hooks to the named layers; each hook computes the selected units from the layer's
output at once, inside the hook, and keeps a copy (a clone where the selection is a
view, and the whole cloned output when raw outputs are asked for), so an in-place ReLU
later in the network cannot overwrite what was recorded. The forward pass stops as soon
as every recorded layer has run, so recording an early layer costs only the layers
before it. Everything runs under ``torch.inference_mode()``.

References
----------
Zeiler, M. D. & Fergus, R. (2014). Visualizing and understanding convolutional
networks. ECCV. doi:10.1007/978-3-319-10590-1_53
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

__all__ = [
    "Units",
    "UnitRecorder",
    "record",
    "as_units",
    "default_device",
    "default_preprocess",
    "layer_names",
    "get_layer",
]


class _StopForward(Exception):
    """Raised from a hook once every recorded layer has run; never escapes."""


def default_device() -> torch.device:
    """Return ``cuda`` when a GPU is available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device) -> torch.device:
    """``None`` -> :func:`default_device`; a string or device -> ``torch.device``."""
    if device is None:
        return default_device()
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be None, 'cpu', 'cuda' or a torch.device, got {device!r}"
        ) from exc


def default_preprocess(images: torch.Tensor) -> torch.Tensor:
    """Turn images in the toolkit's layout into a model batch.

    ``(N, H, W)`` grey images become ``(N, 1, H, W)``; ``(N, H, W, C)`` colour images
    with C in (1, 3, 4) become ``(N, C, H, W)``; a 4-D tensor whose dimension 1 is
    already a channel axis passes through.
    """
    if images.ndim == 3:
        return images.unsqueeze(1)
    if images.ndim == 4 and images.shape[-1] in (1, 3, 4) and images.shape[1] not in (1, 3, 4):
        return images.permute(0, 3, 1, 2)
    return images


def layer_names(model: nn.Module) -> list[str]:
    """Names of every sub-module of ``model`` usable as ``layer`` (``''`` excluded)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Look a layer up by name (as in ``model.named_modules()``) or pass a module.

    Raises
    ------
    ValueError
        If no sub-module has that name; the message lists the valid names.
    """
    if isinstance(layer, nn.Module):
        for name, mod in model.named_modules():
            if mod is layer:
                return name, mod
        raise ValueError("layer is a module that is not part of model")
    modules = dict(model.named_modules())
    if not isinstance(layer, str) or layer not in modules or layer == "":
        valid = layer_names(model)
        raise ValueError(f"layer must be one of {valid}; {layer!r} was provided")
    return layer, modules[layer]


@dataclass(frozen=True)
class Units:
    """Which units of one layer to record.

    Parameters
    ----------
    channels : None, int, slice or sequence of int
        Channels (dimension 1 of the layer output). ``None`` records all of them.
    position : None or (row, col)
        ``None`` averages each channel over its spatial positions; a pair records the
        channel at that position of the feature map (layer pixels, not image pixels).
        Ignored for 2-D outputs ``(N, features)``.

    Examples
    --------
    >>> Units(channels=slice(0, 8), position=(4, 4))  # doctest: +SKIP
    """

    channels: None | int | slice | tuple[int, ...] = None
    position: None | tuple[int, int] = None

    def __post_init__(self):
        ch = self.channels
        if isinstance(ch, (list, np.ndarray, range)):
            object.__setattr__(self, "channels", tuple(int(c) for c in ch))
        elif ch is not None and not isinstance(ch, (int, np.integer, slice, tuple)):
            raise ValueError(
                f"channels must be None, an int, a slice or a sequence of ints, got {ch!r}"
            )
        if self.position is not None:
            pos = tuple(int(p) for p in self.position)
            if len(pos) != 2:
                raise ValueError(f"position must be (row, col), got {self.position!r}")
            object.__setattr__(self, "position", pos)

    def indices(self, n_channels: int, layer: str = "layer") -> np.ndarray:
        """Channel indices selected out of ``n_channels``; out-of-range ones fail."""
        ch = self.channels
        if ch is None:
            return np.arange(n_channels)
        if isinstance(ch, slice):
            idx = np.arange(n_channels)[ch]
            if idx.size == 0:
                raise ValueError(
                    f"units slice {ch} selects no channel of {layer!r}, "
                    f"which has channels 0..{n_channels - 1}"
                )
            return idx
        idx = np.atleast_1d(np.asarray(ch, dtype=np.int64))
        bad = idx[(idx < 0) | (idx >= n_channels)]
        if bad.size:
            raise ValueError(
                f"units must be channel indices in 0..{n_channels - 1} of {layer!r}; "
                f"{bad.tolist()} was provided"
            )
        return idx

    def select(self, out: torch.Tensor, layer: str = "layer") -> torch.Tensor:
        """Reduce a layer output ``(N, C, ...)`` to ``(N, n_units)``."""
        if out.ndim < 2:
            raise ValueError(f"output of {layer!r} has shape {tuple(out.shape)}; need (N, C, ...)")
        idx = self.indices(out.shape[1], layer)
        sel = out[:, torch.as_tensor(idx, device=out.device)]
        if sel.ndim == 2:
            return sel
        if self.position is None:
            return sel.flatten(2).mean(dim=2)
        spatial = tuple(out.shape[2:])
        if len(spatial) != 2 or not all(0 <= p < s for p, s in zip(self.position, spatial)):
            raise ValueError(
                f"position must lie inside the {spatial} feature map of {layer!r}, "
                f"got {self.position}"
            )
        return sel[:, :, self.position[0], self.position[1]]

    def describe(self, n_channels: int) -> list[str]:
        """One name per selected unit, e.g. ``'ch3'`` or ``'ch3@(4, 4)'``."""
        at = "" if self.position is None else f"@{self.position}"
        return [f"ch{i}{at}" for i in self.indices(n_channels)]


def as_units(units) -> Units | Callable:
    """Normalise the ``units`` argument accepted across ``ann_bridge``.

    ``None`` -> all channels spatially averaged; an int, slice or sequence of ints ->
    those channels; a :class:`Units` passes through; a callable ``f(output) -> (N, k)``
    passes through.
    """
    if isinstance(units, Units):
        return units
    channel_types = (int, np.integer, slice, list, tuple, range, np.ndarray)
    if units is None or isinstance(units, channel_types):
        return Units(channels=units)
    if callable(units):
        return units
    raise ValueError(
        "units must be None, an int, a slice, a sequence of ints, a Units or a callable, "
        f"got {units!r}"
    )


class UnitRecorder:
    """Record units of one or more layers in a single, truncated forward pass.

    Parameters
    ----------
    model : torch.nn.Module
        Any module; it is moved to ``device`` and put in eval mode while recording.
    layers : str or mapping of str to units
        One layer name, or ``{layer_name: units}`` to record several layers at once.
    units : see :func:`as_units`
        The units of ``layers`` when it is a single name.
    preprocess : callable, optional
        ``f(batch) -> model input`` applied on the device to a float32 batch of images
        ``(N, H, W)`` (or ``(N, H, W, C)``); default :func:`default_preprocess`.
    device : str or torch.device, optional
        Defaults to ``cuda`` when available, else ``cpu``.

    Examples
    --------
    >>> rec = UnitRecorder(model, "features.3", units=slice(0, 4))  # doctest: +SKIP
    >>> acts = rec(images)        # {'features.3': tensor (N, 4)}  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, layers, units=None, *, preprocess=None, device=None):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(layers, Mapping):
            if units is not None:
                raise ValueError("units must be None when layers is a mapping of layer -> units")
            spec = dict(layers)
        elif isinstance(layers, (str, nn.Module)):
            spec = {layers: units}
        else:
            raise ValueError(
                f"layers must be a layer name or a mapping of names to units, got {layers!r}"
            )
        if not spec:
            raise ValueError("layers must name at least one layer")
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.preprocess = default_preprocess if preprocess is None else preprocess
        if not callable(self.preprocess):
            raise ValueError(f"preprocess must be callable, got {preprocess!r}")
        self.layers: dict[str, tuple[nn.Module, Units | Callable]] = {}
        for layer, sel in spec.items():
            name, module = get_layer(model, layer)
            self.layers[name] = (module, as_units(sel))
        self._out: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ hooks
    def _hook(self, name, reduce):
        def hook(module, inputs, output):
            if name in self._out:  # a shared module called twice: keep the first call
                return
            out = output[0] if isinstance(output, (tuple, list)) else output
            if reduce:
                # the units are computed here, before any later (in-place) layer runs;
                # the result is cloned if it is a view of the layer's output
                r = self._select(name, out)
                if r.untyped_storage().data_ptr() == out.untyped_storage().data_ptr():
                    r = r.clone()
                self._out[name] = r
            else:
                self._out[name] = out.clone()
            if len(self._out) == len(self.layers):
                raise _StopForward
        return hook

    def forward_layers(self, x: torch.Tensor, *, reduce=False) -> dict[str, torch.Tensor]:
        """Run ``model`` on a ready model input; return each layer's recording.

        With ``reduce=False`` the full layer outputs (cloned), with ``reduce=True`` the
        selected units ``(N, n_units)``. The pass stops after the last recorded layer
        has run.
        """
        handles = [m.register_forward_hook(self._hook(n, reduce))
                   for n, (m, _) in self.layers.items()]
        self._out = {}
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                self.model(x)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
            self.model.train(was_training)
        missing = [n for n in self.layers if n not in self._out]
        if missing:
            raise RuntimeError(f"layers {missing} did not run during the forward pass")
        out, self._out = self._out, {}
        return out

    def __call__(self, images) -> dict[str, torch.Tensor]:
        """Record the selected units for one batch of images.

        Parameters
        ----------
        images : array or tensor
            ``(N, H, W)`` (or ``(N, H, W, C)``) float images in [0, 1].

        Returns
        -------
        dict
            layer name -> float tensor ``(N, n_units)`` on the recorder's device.
        """
        x = torch.as_tensor(images, dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            return self.forward_layers(self.preprocess(x), reduce=True)

    def _select(self, name, out):
        sel = self.layers[name][1]
        r = sel.select(out, name) if isinstance(sel, Units) else sel(out)
        r = torch.as_tensor(r)
        if r.ndim == 1:
            r = r[:, None]
        if r.ndim != 2 or r.shape[0] != out.shape[0]:
            raise ValueError(
                f"units callable for {name!r} must return (N, n_units), got {tuple(r.shape)}"
            )
        return r.float()

    def unit_names(self, images) -> dict[str, list[str]]:
        """Names of the recorded units per layer (runs one image through the model)."""
        x = torch.as_tensor(np.asarray(images)[:1], dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            raw = self.forward_layers(self.preprocess(x), reduce=False)
        names = {}
        for name, (_, sel) in self.layers.items():
            if isinstance(sel, Units):
                names[name] = sel.describe(raw[name].shape[1])
            else:
                k = self._select(name, raw[name]).shape[1]
                names[name] = [f"unit{i}" for i in range(k)]
        return names


def record(model, layer, images, units=None, *, preprocess=None, device=None,
           batch_size: int = 256) -> np.ndarray:
    """Activations of the selected units of one layer for a stack of images.

    Parameters
    ----------
    model : torch.nn.Module
    layer : str
        Name of the layer as in ``model.named_modules()``.
    images : array (N, H, W) or (N, H, W, C), float in [0, 1]
    units : see :func:`as_units`
    preprocess : callable, optional
    device : str or torch.device, optional
    batch_size : int
        Images per forward pass.

    Returns
    -------
    numpy.ndarray
        float32 ``(N, n_units)``.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rec = UnitRecorder(model, layer, units, preprocess=preprocess, device=device)
    name = next(iter(rec.layers))
    images = np.asarray(images, dtype=np.float32)
    out = [rec(images[i:i + batch_size])[name].cpu().numpy()
           for i in range(0, len(images), int(batch_size))]
    return np.concatenate(out, axis=0)
