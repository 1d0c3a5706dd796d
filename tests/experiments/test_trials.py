"""Trial planning, key counterbalancing and stimulus building (no window)."""

from collections import Counter

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from bubbles import (BubbleSpec, apply_bubbles, bubble_stimuli, laplacian_bands,
                     load_source, noise_background, render_masks, sample_centers)
from experiments import trials


def test_key_mapping_is_counterbalanced_across_participants():
    labels, keys = ("happy", "fearful", "neutral"), ["f", "g", "h", "j"]
    maps = [trials.key_mapping(labels, keys, f"P{p:02d}", seed=0)[0] for p in range(6)]
    # 3 rotations x 2 orders: six participants get six different mappings ...
    assert len({tuple(m.values()) for m in maps}) == 6
    # ... in which each label meets each of the first three keys equally often
    for label in labels:
        assert Counter(m[label] for m in maps) == {"f": 2, "g": 2, "h": 2}
    again = trials.key_mapping(labels, keys, "P03", seed=0)
    assert again == trials.key_mapping(labels, keys, "P03", seed=0)
    fixed, index = trials.key_mapping(labels, keys, "P03", seed=0, counterbalance=False)
    assert (fixed, index) == ({"happy": "f", "fearful": "g", "neutral": "h"}, 0)


def test_participant_number_and_seeds():
    assert trials.participant_number("P07") == 7
    assert trials.participant_number("anna") == trials.participant_number("anna")
    a = trials.session_seeds(1, "P01", 1)
    assert a == trials.session_seeds(1, "P01", 1)
    assert a != trials.session_seeds(1, "P01", 2) != trials.session_seeds(1, "P02", 1)


def test_trial_plan_cycles_through_every_stimulus(small_faces):
    labels = small_faces.expressions
    plan = trials.trial_plan(small_faces, labels, 15, order_seed=3)
    n = len(small_faces)
    assert sorted(plan[:n]) == list(range(n))
    assert plan == trials.trial_plan(small_faces, labels, 15, order_seed=3)
    only = trials.trial_plan(small_faces, ("happy",), 4, order_seed=3)
    assert set(small_faces.table.expression[only]) == {"happy"}


@pytest.mark.parametrize("bands", [None, 2])
def test_builder_regenerates_from_seed_and_index(small_faces, bands):
    spec = BubbleSpec(shape=small_faces.shape, sigma=3.0, n_bubbles=15, bands=bands)
    builder = trials.StimulusBuilder(small_faces.images, spec, mask_seed=11)
    p = builder.build(stim_index=2, n_bubbles=9, mask_index=7)
    trial_spec = spec.replace(n_bubbles=9)
    c = sample_centers(trial_spec, 11, [7])
    masks = render_masks(trial_spec, c)
    img = small_faces.images[2]
    band_arrays = laplacian_bands(img, 2) if bands else None
    expected = bubble_stimuli(trial_spec, img, masks, bands=band_arrays)[0]
    assert_allclose(p.image, expected, atol=1e-6)
    assert p.image.dtype == np.float32 and p.image.min() >= 0 and p.image.max() <= 1
    per_band = c if bands else [c]
    recorded = p.centers_json()
    assert len(recorded) == spec.n_bands
    for rec, arr in zip(recorded, per_band):
        assert_array_equal(np.asarray(rec).reshape(-1, 2), arr[0])
    assert sum(len(b) for b in recorded) == 9


def test_noise_background_is_regenerable_per_trial(small_faces):
    spec = BubbleSpec(shape=small_faces.shape, sigma=3.0, n_bubbles=6,
                      background="noise")
    builder = trials.StimulusBuilder(small_faces.images, spec, mask_seed=11)
    p = builder.build(stim_index=1, n_bubbles=6, mask_index=4)
    # trial 4 alone, from (mask_seed, mask_index): centres and noise field
    trial_spec = spec.replace(n_bubbles=6)
    masks = render_masks(trial_spec, sample_centers(trial_spec, 11, [4]))
    img = small_faces.images[1]
    expected = apply_bubbles(img, masks, noise_background(img, 11, [4]))[0]
    assert_allclose(p.image, expected, atol=1e-6)
    other = builder.build(stim_index=1, n_bubbles=6, mask_index=5).image
    assert not np.allclose(other, p.image)           # a new field for another trial
    again = trials.StimulusBuilder(small_faces.images, spec, mask_seed=11)
    assert_array_equal(again.build(1, 6, 4).image, p.image)


def test_load_stimuli_uses_the_one_meaning_of_source(make_cfg, small_faces, tmp_path):
    # "faces": the embedded faces with the configured count and size, as the analysis
    # rebuilds them from a sidecar (bubbles.load_source)
    stimuli, labels = trials.load_stimuli(make_cfg())
    same = load_source("faces", n_identities=2, size=64)
    assert stimuli.shape == (64, 64) and labels == same.expressions
    assert_array_equal(stimuli.images, same.images)
    assert list(stimuli.table["stimulus_id"]) == list(same.table["stimulus_id"])
    # anything else: a folder, read the same way
    small_faces.to_folder(tmp_path / "set")
    stimuli, _ = trials.load_stimuli(make_cfg(stimuli__source=str(tmp_path / "set")))
    assert_allclose(stimuli.images, load_source(str(tmp_path / "set")).images, atol=0)
    assert_allclose(stimuli.images, small_faces.images, atol=1 / 255)


def test_load_stimuli_checks_expressions(make_cfg):
    stimuli, labels = trials.load_stimuli(make_cfg(stimuli__expressions=["neutral",
                                                                          "happy"]))
    assert labels == ("neutral", "happy")
    assert set(stimuli.table.expression) == {"neutral", "happy"}
    with pytest.raises(ValueError, match=r"'stimuli\.expressions' must list expressions "
                                         r"of the embedded faces"):
        trials.load_stimuli(make_cfg(stimuli__expressions=["sad", "happy"]))
    one = make_cfg()
    one["stimuli"]["expressions"] = ["happy"]   # (load_config refuses this already)
    with pytest.raises(ValueError, match=r"at least 2 expressions"):
        trials.load_stimuli(one)
    with pytest.raises(ValueError, match=r"config key 'stimuli\.source' must be \"faces\" "
                                         r"or a folder .*got '/no/such/folder': "
                                         r".*does not exist"):
        trials.load_stimuli(make_cfg(stimuli__source="/no/such/folder"))


def test_spec_from_config_reports_bad_specs(make_cfg, small_faces):
    spec = trials.spec_from_config(make_cfg(bubbles__bands=0), small_faces.shape)
    assert spec.bands is None and spec.shape == small_faces.shape
    with pytest.raises(ValueError, match=r"\[bubbles\] does not make a valid BubbleSpec"):
        trials.spec_from_config(make_cfg(), (1, 0))
