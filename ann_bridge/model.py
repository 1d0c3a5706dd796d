"""The embedded expression classifier: a small CNN that sees faces the way people do.

:class:`ExpressionCNN` takes grey images ``(N, 1, H, W)`` in [0, 1] of any size,
averages them down to ``input_size`` pixels (area downsampling, differentiable, so
gradients and occluders live in the original image pixels), and classifies the facial
expression. It was trained by :mod:`ann_bridge.train` with bubbles augmentation on the
embedded synthetic face set. The weights ship in ``data/expression_cnn.pt`` (installed
as the package ``bubbles_data``, so a regular ``pip install`` carries them) with a
SHA-256 checksum in ``expression_cnn.sha256`` that :func:`load_default_model` verifies
before loading; nothing is downloaded. Checkpoints are read with
``torch.load(weights_only=True)`` only: a file that is not a checkpoint written by
:func:`save_model` is refused, never unpickled.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

import bubbles_data
from analysis.diagnostic import to_jsonable

from .record import resolve_device

__all__ = ["ExpressionCNN", "load_model", "save_model", "load_default_model",
           "default_weights", "default_checksum", "WEIGHTS_FILE", "sha256"]

#: The embedded weights and their checksum, files of the package ``bubbles_data``.
WEIGHTS_FILE = "expression_cnn.pt"
CHECKSUM_FILE = "expression_cnn.sha256"


def default_weights() -> Path:
    """Path of the embedded weights (``bubbles_data.path``: a clone or a regular
    install); FileNotFoundError naming the file when the installation lacks it."""
    return bubbles_data.path(WEIGHTS_FILE)


def default_checksum() -> Path:
    """Path of the embedded weights' ``.sha256`` file."""
    return bubbles_data.path(CHECKSUM_FILE)


class ExpressionCNN(nn.Module):
    """Four 3x3 convolution blocks, global average pooling and a linear read-out.

    Parameters
    ----------
    classes : sequence of str
        Output labels in order (``model.classes``); the observer and the attribution
        functions use them.
    input_size : int
        Side in pixels to which images are area-averaged before the first convolution.
    width : int
        Channels of the first convolution; they double in blocks 2 and 3.

    Layers (names for :mod:`ann_bridge.record`): ``features.conv1`` .. ``features.conv4``,
    each followed by batch normalisation ``features.bn1..4`` and ``features.relu1..4``,
    ``features.pool1..3`` (2x2 max) after blocks 1-3, ``gap`` (global average),
    ``classifier`` (logits).
    """

    def __init__(self, classes=("happy", "fearful", "neutral"), input_size=64, width=16):
        super().__init__()
        self.classes = tuple(str(c) for c in classes)
        self.input_size = int(input_size)
        self.width = int(width)
        w = self.width
        chans = [1, w, 2 * w, 4 * w, 4 * w]
        layers = OrderedDict()
        for i in range(4):
            layers[f"conv{i + 1}"] = nn.Conv2d(chans[i], chans[i + 1], 3, padding=1,
                                               bias=False)
            layers[f"bn{i + 1}"] = nn.BatchNorm2d(chans[i + 1])
            layers[f"relu{i + 1}"] = nn.ReLU()
            if i < 3:
                layers[f"pool{i + 1}"] = nn.MaxPool2d(2)
        self.resize = nn.AdaptiveAvgPool2d(self.input_size)
        self.features = nn.Sequential(layers)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(chans[-1], len(self.classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, n_classes)`` for grey images ``(N, 1, H, W)`` in [0, 1]."""
        x = (self.resize(x) - 0.5) / 0.25
        x = self.features(x)
        return self.classifier(self.gap(x).flatten(1))

    def config(self) -> dict:
        return {"classes": list(self.classes), "input_size": self.input_size,
                "width": self.width}


def sha256(path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(model: ExpressionCNN, path, *, info=None, checksum=True) -> Path:
    """Save weights + config (+ training info) and, by default, ``<stem>.sha256``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # plain types only (torch.load(weights_only=True) reads them back); the JSON round
    # trip gives fresh objects, so the pickle never shares a string with the config
    # (shared objects change its memo references, and the shipped file is byte-exact)
    info = json.loads(json.dumps(to_jsonable(info or {})))
    torch.save({"format": "ann_bridge.expression_cnn", "version": 1,
                "config": model.config(), "state_dict": state, "info": info}, path)
    if checksum:
        path.with_suffix(".sha256").write_text(f"{sha256(path)}  {path.name}\n")
    return path


def load_model(path, *, checksum=None, device="cpu") -> ExpressionCNN:
    """Load an :class:`ExpressionCNN` saved by :func:`save_model`.

    Parameters
    ----------
    path : path-like
    checksum : path-like, str or None
        A ``.sha256`` file (``sha256sum`` format) or a hex digest to verify the weights
        against before loading; None skips the check.
    device : str or torch.device
        Checked by :func:`ann_bridge.record.resolve_device` (None: cuda when there).

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    ValueError
        If the checksum does not match, or the file is empty, truncated, not a torch
        file or not an ExpressionCNN checkpoint (it is never unpickled beyond
        ``weights_only=True``).
    """
    path = Path(path)
    device = resolve_device(device)
    if not path.is_file():
        raise FileNotFoundError(f"model weights not found: {path}")
    if checksum is not None:
        expected = str(checksum)
        if Path(expected).is_file():
            text = Path(expected).read_text().split()
            if not text:
                raise ValueError(f"checksum file {expected} is empty")
            expected = text[0]
        actual = sha256(path)
        if actual != expected.strip().lower():
            raise ValueError(f"checksum of {path} is {actual}, expected {expected}: "
                             "the weights are corrupt or were replaced")
    not_ckpt = (f"{path} is not an ann_bridge.expression_cnn checkpoint written by "
                "save_model / `bubbles ann train`")
    if path.stat().st_size == 0:
        raise ValueError(f"{not_ckpt} (the file is empty)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # torch's own text may advise an unsafe load: not shown
        raise ValueError(f"{not_ckpt} (torch cannot read it as a weights-only file: "
                         f"{type(exc).__name__}; truncated, damaged or another format)"
                         ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "ann_bridge.expression_cnn":
        raise ValueError(not_ckpt)
    try:
        model = ExpressionCNN(**ckpt["config"])
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{path}: a damaged ann_bridge.expression_cnn checkpoint "
                         f"({type(exc).__name__}: {str(exc)[:200]})") from None
    model.info = dict(ckpt.get("info", {}))
    return model.to(device).eval()


def load_default_model(device="cpu") -> ExpressionCNN:
    """The embedded expression CNN, checksum-verified, from ``bubbles_data`` (offline)."""
    return load_model(default_weights(), checksum=default_checksum(), device=device)
