"""Diagnostic images for any observer: trial tables -> classification images -> statistics.

The same engine turns a person's key presses, a voxel's single-trial amplitudes or a
network unit's activations into z maps (:func:`classification_image`), tests them with
the random-field statistics of the Stat4Ci toolbox (:func:`pixel_test`,
:func:`cluster_test`) or by permutation, and draws them. No psychopy or torch here.

References
----------
Gosselin, F. & Schyns, P. G. (2001). Vision Research 41, 2261-2271.
:doi:`10.1016/S0042-6989(01)00097-9`
Chauvin, A., Worsley, K. J., Schyns, P. G., Arguin, M. & Gosselin, F. (2005). J. Vis.
5(9):1. :doi:`10.1167/5.9.1`
"""

from .ci import classification_image, group_image
from .diagnostic import DiagnosticImage
from .permutation import permutation_test
from .stats import cluster_test, pixel_test
from .trials import TrialTable

__all__ = ["DiagnosticImage", "classification_image", "group_image", "TrialTable",
           "pixel_test", "cluster_test", "permutation_test"]
