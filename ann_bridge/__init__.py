"""Networks as observers and units as voxels: the bubbles toolkit's torch side.

* :func:`diagnostic_images` -- bubbles masks of a human session through a network;
  every selected unit of a layer gets a diagnostic image (units x H x W) from
  :func:`analysis.classification_image`, like a person or a voxel.
* :class:`UnitRecorder` / :func:`record` -- unit activations from any ``nn.Module``
  (truncated forward pass, hooks that clone, ``torch.inference_mode()``).
* :class:`NetworkObserver` -- the network as a Responder of a bubbles session.
* :mod:`ann_bridge.attribution` -- perturbation, occlusion, saliency, integrated
  gradients for classes and units.
* :func:`load_default_model` -- the embedded expression CNN (``data/``, checksummed).

Only this package imports torch (and captum, inside the attribution functions).
"""

from .attribution import integrated_gradients, occlusion, perturbation, saliency
from .model import ExpressionCNN, load_default_model, load_model, save_model
from .observer import NetworkObserver
from .probe import diagnostic_images
from .record import UnitRecorder, Units, record

__all__ = ["diagnostic_images", "UnitRecorder", "Units", "record", "NetworkObserver",
           "occlusion", "saliency", "integrated_gradients", "perturbation",
           "ExpressionCNN", "load_default_model", "load_model", "save_model"]
