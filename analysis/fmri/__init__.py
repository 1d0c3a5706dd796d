"""fMRI: from BOLD runs to a diagnostic image for every voxel.

The voxels of a scanner are the third kind of observer: their single-trial amplitudes
are responses to the same masks, turned into diagnostic images by the same engine
(:func:`analysis.classification_image`) as a person's key presses and a network unit's
activations, in the same :class:`analysis.DiagnosticImage` format.

Modules (read top to bottom):

- :mod:`~analysis.fmri.inputs`: runs, events, TR, mask, confounds, BIDS discovery, and
  every input error named by file and line;
- :mod:`~analysis.fmri.glm`: HRFs, regressors, LSS in closed form and LSA, the per-voxel
  HRF library;
- :mod:`~analysis.fmri.stimulus`: the analysis resolution, revealed area, stimulus ROIs;
- :mod:`~analysis.fmri.images`: covariates, voxel images in chunks (locally or as dask
  tasks writing a Zarr store), random-field and permutation statistics;
- :mod:`~analysis.fmri.study`: the whole analysis, its output files, voxel export;
- :mod:`~analysis.fmri.simulate`: a BIDS study with planted eye, mouth, area and null
  voxels.

nibabel, nilearn, zarr and dask (the ``fmri`` extra) are imported inside the functions
that need them; this package is not imported by :mod:`analysis`.
"""

from .glm import choose_hrf, run_design, single_trial_betas, trial_weights
from .images import covariate_matrix, residualize, voxel_images
from .inputs import Study, find_bids, load_study, read_regions, run_data
from .simulate import simulate_study
from .stimulus import analysis_spec, stimulus_rois
from .study import (FmriResult, analyze_study, estimate_betas, read_region_image,
                    read_voxel_image, write_outputs)

__all__ = ["load_study", "find_bids", "read_regions", "run_data", "Study", "run_design",
           "trial_weights", "single_trial_betas", "choose_hrf", "analysis_spec",
           "stimulus_rois", "covariate_matrix", "residualize", "voxel_images",
           "analyze_study", "estimate_betas", "write_outputs", "read_voxel_image",
           "read_region_image", "FmriResult", "simulate_study"]
