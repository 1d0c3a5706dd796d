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
    "check_count",
    "default_device",
    "resolve_device",
    "image_batch",
    "default_preprocess",
    "layer_names",
    "get_layer",
]


class _StopForward(Exception):
    """Raised from a hook once every recorded layer has run; never escapes."""


def check_count(name, value, minimum=1):
    """``value`` as an int, refused (ValueError naming ``name``) unless an integer >=
    ``minimum``; the one check of counts across ann_bridge (batch sizes, masks, steps)."""
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer, float))
            or int(value) != value or value < minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def default_device() -> torch.device:
    """Return ``cuda`` when a GPU is available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device) -> torch.device:
    """``None`` -> :func:`default_device`; a string or ``torch.device`` -> a device that
    this torch build can use.

    Raises
    ------
    TypeError
        ``device`` is neither None, a string nor a ``torch.device``.
    ValueError
        A malformed name (``'gpu0'``), a type other than cpu / cuda / mps, or a device
        that is not there (``'cuda'`` on a CPU-only torch build or a machine without a
        GPU, ``'cuda:3'`` with fewer GPUs).
    """
    if device is None:
        return default_device()
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be None, a string such as 'cpu' or 'cuda:0', or a "
                        f"torch.device, got {type(device).__name__} {device!r}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be one of {list(DEVICE_TYPES)} (with an optional "
                         f"':index', e.g. 'cuda:0'); {device!r} was provided") from None
    if dev.type not in DEVICE_TYPES:
        raise ValueError(f"device must be one of {list(DEVICE_TYPES)}; {device!r} was "
                         "provided")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "no GPU is visible to CUDA")
            raise ValueError(f"device {str(dev)!r} is not available: {why} (torch "
                             f"{torch.__version__}); use 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(dev)!r} is not available: "
                             f"{torch.cuda.device_count()} GPU(s) visible")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(dev)!r} is not available on this machine; use 'cpu'")
    return dev


CHANNELS = (1, 3, 4)


def image_batch(images, *, name="images", check_values=True) -> torch.Tensor:
    """Images as a float32 tensor in the toolkit's layout, ``(N, H, W)`` or ``(N, H, W, C)``.

    The one reader of image stacks across ann_bridge (probe, attribution, recorder), so
    no function reads an axis as the wrong one:

    * ``(H, W)`` is one grey image, ``(N, H, W)`` a stack of grey images;
    * a 4-D **torch tensor** is ``(N, C, H, W)`` (torch's layout), with C in 1, 3, 4;
      one channel gives grey ``(N, H, W)``;
    * a 4-D **array** is read as ``(N, H, W, C)`` when only its last axis can hold
      channels and as ``(N, C, H, W)`` when only axis 1 can; when both or neither can,
      it is ambiguous and refused (pass a torch tensor, or a grey ``(N, H, W)`` stack).

    With ``check_values`` the values must be finite and in [0, 1] (the toolkit's
    images; 8-bit images must be divided by 255).

    Parameters
    ----------
    images : array or torch.Tensor
    name : str
        How errors name the argument (a command passes its option, e.g. ``'--images
        x.npy'``).
    check_values : bool

    Returns
    -------
    torch.Tensor
        float32, on the input tensor's device (CPU for arrays); a view where possible.

    Examples
    --------
    >>> image_batch(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 8, 8])
    >>> image_batch(np.zeros((2, 8, 8, 3))).shape
    torch.Size([2, 8, 8, 3])
    """
    is_tensor = torch.is_tensor(images)
    if is_tensor:
        x = images.detach().to(torch.float32)
    else:
        arr = np.asarray(images)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                       or arr.dtype == bool):
            raise TypeError(f"{name} must be a numeric array or a torch tensor, got "
                            f"{arr.dtype} values")
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    shape = tuple(x.shape)
    if x.ndim == 2:
        x = x[None]
    elif x.ndim == 4:
        first, last = shape[1] in CHANNELS, shape[3] in CHANNELS
        if is_tensor:
            if not first:
                raise ValueError(f"{name}: a 4-D torch tensor is read as (N, C, H, W) with "
                                 f"C in {list(CHANNELS)}; got shape {shape}")
            x = x.permute(0, 2, 3, 1)
        elif first == last:
            raise ValueError(f"{name} of shape {shape} is ambiguous: (N, H, W, C) or (N, C, "
                             "H, W)? Pass grey images (N, H, W), or a torch tensor, which "
                             "is read as (N, C, H, W)")
        elif first:
            x = x.permute(0, 2, 3, 1)
        if x.shape[3] == 1:
            x = x[..., 0]
    elif x.ndim != 3:
        raise ValueError(f"{name} must have shape (H, W), (N, H, W) or, for colour, "
                         f"(N, H, W, C) / a torch tensor (N, C, H, W); got {shape}")
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"{name} must hold at least one image of at least 1 x 1 pixels, "
                         f"got shape {shape}")
    if check_values:
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} must hold finite values (no NaN or inf)")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            hint = " (8-bit images: divide by 255)" if hi > 1 and hi <= 255 else ""
            raise ValueError(f"{name} must have values in [0, 1]{hint}, got [{lo:g}, {hi:g}]")
    return x


def default_preprocess(images: torch.Tensor) -> torch.Tensor:
    """Turn a batch in the toolkit's layout (see :func:`image_batch`) into a model batch.

    Grey ``(N, H, W)`` becomes ``(N, 1, H, W)``; colour ``(N, H, W, C)`` becomes
    ``(N, C, H, W)``.
    """
    if images.ndim == 3:
        return images.unsqueeze(1)
    return images.permute(0, 3, 1, 2)


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
            raise TypeError(
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
    raise TypeError(
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
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(layers, Mapping):
            if units is not None:
                raise ValueError("units must be None when layers is a mapping of layer -> units")
            spec = dict(layers)
        elif isinstance(layers, (str, nn.Module)):
            spec = {layers: units}
        else:
            raise TypeError(
                f"layers must be a layer name or a mapping of names to units, got {layers!r}"
            )
        if not spec:
            raise ValueError("layers must name at least one layer")
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.preprocess = default_preprocess if preprocess is None else preprocess
        if not callable(self.preprocess):
            raise TypeError(f"preprocess must be callable, got {preprocess!r}")
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
            Grey ``(N, H, W)`` or colour images in the layouts of :func:`image_batch`
            (a 4-D tensor is ``(N, C, H, W)``); the values are not checked here (the
            probe calls this for every batch of its own stimuli).

        Returns
        -------
        dict
            layer name -> float tensor ``(N, n_units)`` on the recorder's device.
        """
        x = image_batch(images, check_values=False).to(self.device)
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
        x = image_batch(images, check_values=False)[:1].to(self.device)
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
    images : array or tensor, values in [0, 1]
        ``(N, H, W)``, ``(N, H, W, C)`` or a tensor ``(N, C, H, W)``: see
        :func:`image_batch`.
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
    batch_size = check_count("batch_size", batch_size)
    rec = UnitRecorder(model, layer, units, preprocess=preprocess, device=device)
    name = next(iter(rec.layers))
    images = image_batch(images)
    out = [rec(images[i:i + batch_size])[name].cpu().numpy()
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out, axis=0)
