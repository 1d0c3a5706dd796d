"""Single-trial amplitudes: regressors, LSS / LSA against nilearn's FirstLevelModel."""

import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from analysis.fmri.glm import (LIBRARY, event_regressors, frame_times, hrf_kernels,
                               run_design, single_trial_betas, trial_weights)
from analysis.fmri.inputs import load_study
from analysis.fmri.study import estimate_betas

nib = pytest.importorskip("nibabel")
first_level = pytest.importorskip("nilearn.glm.first_level")


@pytest.mark.parametrize("hrf", ["glover", "spm"])
def test_regressors_equal_nilearn_compute_regressor(hrf):
    rng = np.random.default_rng(0)
    times = frame_times(90, 2.0)
    onsets = np.sort(rng.uniform(0, 170, 25))
    durations = np.where(np.arange(25) < 3, 0.0, 0.5)
    ours = event_regressors(onsets, durations, times, hrf_kernels(hrf, 2.0)[0])
    ref = np.stack([first_level.compute_regressor([[o], [d], [1.0]], hrf, times)[0][:, 0]
                    for o, d in zip(onsets, durations)], axis=1)
    assert ours.shape == (90, 25)
    assert_allclose(ours, ref, atol=1e-12)


def test_library_shapes_share_the_canonical_peak():
    k = hrf_kernels("library", 2.0)
    assert k.shape[0] == len(LIBRARY) == 12
    assert_allclose(k.max(axis=1), hrf_kernels("glover", 2.0).max(), rtol=1e-12)
    # the shifted shapes peak at different times
    assert len(set(np.argmax(k, axis=1).tolist())) >= 8


def _toy_run(rng, n_scans=110, t_r=2.0):
    onsets = np.sort(rng.uniform(4, 190, 18))
    ev = pd.DataFrame({"onset": onsets, "duration": 0.5, "trial_type": "face",
                       "trial": np.arange(18.0)})
    ev.loc[[2, 5, 11], "trial_type"] = "house"          # a second condition
    cues = pd.DataFrame({"onset": [0.0, 95.0], "duration": [3.0, 3.0],
                         "trial_type": "cue", "trial": np.nan})
    ev = pd.concat([ev, cues], ignore_index=True)
    data = (100 + rng.normal(size=(3, 3, 2, n_scans))).astype(np.float32)
    conf = rng.normal(size=(n_scans, 3))
    return ev, data, conf


def _nilearn_lss(ev, data, conf, t_r, signal_scaling):
    """The beta-series recipe: one FirstLevelModel per trial, that trial relabelled."""
    img = nib.Nifti1Image(data, np.eye(4))
    mask = nib.Nifti1Image(np.ones(data.shape[:3], np.int8), np.eye(4))
    out = []
    for i in np.flatnonzero(ev["trial"].notna()):
        e = ev[["onset", "duration", "trial_type"]].copy()
        e.loc[i, "trial_type"] = "this_trial"
        model = first_level.FirstLevelModel(
            t_r=t_r, hrf_model="glover", drift_model="cosine", high_pass=0.01,
            noise_model="ols", signal_scaling=signal_scaling, mask_img=mask)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(img, events=e, confounds=pd.DataFrame(conf, columns=["a", "b", "c"]))
            beta = model.compute_contrast("this_trial", output_type="effect_size")
        out.append(beta.get_fdata().ravel())
    return np.array(out)


def test_lss_equals_nilearn_first_level_model_per_trial():
    rng = np.random.default_rng(1)
    ev, data, conf = _toy_run(rng)
    design = run_design(ev, data.shape[3], 2.0, confounds=conf)
    ours = single_trial_betas(design, data.reshape(-1, data.shape[3]).T)
    ref = _nilearn_lss(ev, data, conf, 2.0, signal_scaling=False)
    assert ours.dtype == np.float32 and ours.shape == (18, 18)
    assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    # percent signal change: nilearn's default signal_scaling=0
    ours_pct = single_trial_betas(design, data.reshape(-1, data.shape[3]).T,
                                  scaling="percent")
    ref_pct = _nilearn_lss(ev, data, conf, 2.0, signal_scaling=0)
    assert_allclose(ours_pct, ref_pct, rtol=1e-4, atol=1e-4 * np.abs(ref_pct).max())


def test_lsa_equals_nilearn_one_model_with_a_regressor_per_trial():
    rng = np.random.default_rng(2)
    ev, data, conf = _toy_run(rng)
    design = run_design(ev, data.shape[3], 2.0, confounds=conf)
    ours = single_trial_betas(design, data.reshape(-1, data.shape[3]).T, estimator="lsa")
    e = ev[["onset", "duration", "trial_type"]].copy()
    trials = np.flatnonzero(ev["trial"].notna())
    e.loc[trials, "trial_type"] = [f"t{i:02d}" for i in trials]
    model = first_level.FirstLevelModel(t_r=2.0, noise_model="ols", signal_scaling=False,
                                        mask_img=nib.Nifti1Image(np.ones((3, 3, 2),
                                                                         np.int8), np.eye(4)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(nib.Nifti1Image(data, np.eye(4)), events=e,
                  confounds=pd.DataFrame(conf, columns=["a", "b", "c"]))
        ref = np.array([model.compute_contrast(f"t{i:02d}", output_type="effect_size")
                        .get_fdata().ravel() for i in trials])
    assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_lss_weights_recover_noise_free_amplitudes_and_ignore_drift():
    rng = np.random.default_rng(3)
    ev, _, _ = _toy_run(rng)
    design = run_design(ev, 110, 2.0)
    amp = rng.normal(2.0, 1.0, 18)
    x = design.trial_regressors[0]
    y = x @ amp + design.nuisance @ rng.normal(0, 5, design.nuisance.shape[1])
    y += design.other[0] @ np.array([3.0])
    assert_allclose(trial_weights(design, estimator="lsa") @ y, amp, atol=1e-8)
    # LSS is exact when every trial of a condition has one amplitude (its model holds)
    const = np.where(design.conditions == "face", 1.5, -0.7)
    y = x @ const + design.nuisance @ rng.normal(0, 5, design.nuisance.shape[1])
    assert_allclose(trial_weights(design, estimator="lss") @ y, const, atol=1e-8)


def test_library_hrf_beats_the_canonical_when_voxels_differ(planted):
    study = load_study(planted.bold, planted.events, planted.trials, mask=planted.mask,
                       confounds=planted.confounds)
    truth = np.load(planted.planted)
    index = {tuple(v): i for i, v in enumerate(study.ijk)}
    cols = [index[tuple(v)] for v in truth["ijk"]]
    far = np.abs(truth["hrf_shift"]) >= 1.0           # voxels whose HRF is shifted
    scores = {}
    for hrf in ("glover", "library"):
        betas, idx = estimate_betas(study, hrf=hrf)
        est = betas[:, cols]
        r = np.array([np.corrcoef(est[:, i], truth["amplitudes"][:, i])[0, 1]
                      for i in range(len(cols))])
        scores[hrf] = r
    assert scores["library"][far].mean() > scores["glover"][far].mean() + 0.05
    assert scores["library"].mean() > scores["glover"].mean()
