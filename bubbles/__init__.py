"""The stimulus side of the bubbles toolkit: mask specs, sampling, rendering, stimuli.

Everything that decides what an observer (a person, a voxel, a network unit) sees on a
trial. No psychopy or torch here.
"""

from .compose import (apply_bubbles, background_levels, bubble_stimuli, compose_multiscale,
                      laplacian_bands, noise_background)
from .faces import default_faces, face_set, load_source
from .masks import (center_maps, occlusion_masks, occlusion_positions, one_blas_thread,
                    render_masks, rise_masks, sample_centers, seed_sequence, trial_rng)
from .spec import BubbleSpec, fwhm_to_sigma, sigma_to_fwhm
from .stimuli import StimulusSet, load_grey, save_contact_sheet

__version__ = "0.1.0"

__all__ = [
    "BubbleSpec", "background_levels", "sample_centers", "render_masks", "center_maps",
    "occlusion_masks", "occlusion_positions", "rise_masks", "trial_rng", "seed_sequence",
    "one_blas_thread", "apply_bubbles", "bubble_stimuli", "compose_multiscale",
    "laplacian_bands", "noise_background", "fwhm_to_sigma", "sigma_to_fwhm",
    "StimulusSet", "load_grey", "load_source", "save_contact_sheet", "face_set",
    "default_faces",
]
