"""Networks as observers and units as voxels: the bubbles toolkit's torch side.

* :func:`diagnostic_images` -- bubbles masks of a human session through a network;
  every selected unit of a layer gets a diagnostic image (units x H x W) from
  :func:`analysis.classification_image`, like a person or a voxel.
* :class:`UnitRecorder` / :func:`record` -- unit activations from any ``nn.Module``
  (truncated forward pass, hooks that clone, ``torch.inference_mode()``).
* :class:`NetworkObserver` -- the network as a Responder of a bubbles session.
* :mod:`ann_bridge.attribution` -- occlusion, saliency, integrated gradients for classes
  and units (one result type, :class:`Attribution`, and :func:`attribution_images`),
  and the seed's perturbation measure (:func:`perturbation_effect`).
* :func:`load_default_model` -- the embedded expression CNN (``bubbles_data``,
  checksummed).

Only this package imports torch (and captum, inside the attribution functions).
"""

from .attribution import (Attribution, attribution_images, integrated_gradients, occlusion,
                          perturbation_effect, saliency)
from .model import ExpressionCNN, load_default_model, load_model, save_model
from .observer import NetworkObserver
from .probe import BubbledStimuli, diagnostic_images
from .record import UnitRecorder, Units, image_batch, record

__all__ = ["diagnostic_images", "BubbledStimuli", "UnitRecorder", "Units", "record",
           "image_batch", "NetworkObserver", "Attribution", "attribution_images",
           "occlusion", "saliency", "integrated_gradients", "perturbation_effect",
           "ExpressionCNN", "load_default_model", "load_model", "save_model"]
