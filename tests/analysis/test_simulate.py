"""Planted observers: recovery of a known template, family-wise error under the null."""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import ndimage

from analysis import classification_image, cluster_test, permutation_test, pixel_test
from analysis.simulate import NullObserver, TemplateObserver, simulate_session
from bubbles import BubbleSpec, sample_centers

H = 64


@pytest.fixture
def planted():
    """Two images that differ only at two 'eyes' (opposite contrast)."""
    yy, xx = np.mgrid[:H, :H]
    blob = lambda r, c: np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 3.0 ** 2))  # noqa
    d = blob(24, 20) - blob(24, 44)
    return np.stack([0.5 + 0.3 * d, 0.5 - 0.3 * d]), d


def test_template_observer_basics():
    t = {"a": np.eye(3), "b": -np.eye(3)}
    obs = TemplateObserver(t, internal_noise=0.0, seed=0)
    assert obs.decide(0.5 + 0.2 * np.eye(3)) == "a"
    assert obs.decide_batch(np.stack([0.5 + 0.2 * np.eye(3), 0.5 - 0.2 * np.eye(3)])) \
        == ["a", "b"]
    # the background is subtracted: a uniform stimulus at the background is a tie
    # broken by the noise, so with noise both answers occur
    noisy = TemplateObserver(t, internal_noise=1.0, seed=0)
    assert set(noisy.decide_batch(np.full((50, 3, 3), 0.5))) == {"a", "b"}
    with pytest.raises(ValueError, match="at least 2 labels"):
        TemplateObserver({"a": np.eye(3)})
    with pytest.raises(ValueError, match="one shape"):
        TemplateObserver({"a": np.eye(3), "b": np.eye(4)})
    with pytest.raises(ValueError, match="stimuli must have the templates' shape"):
        obs.decide(np.zeros((4, 4)))


def test_recovery_of_planted_template(planted):
    images, d = planted
    spec = BubbleSpec(shape=(H, H), sigma=4.0, n_bubbles=8, background=0.5)
    obs = TemplateObserver({"a": images[0] - 0.5, "b": images[1] - 0.5},
                           internal_noise=1.0, seed=1)
    table = simulate_session(spec, images, ["a", "b"], obs, 1000, seed=3)
    acc = table.responses("correct").mean()
    assert 0.65 < acc < 0.9
    ci = classification_image(spec, table.center_list(), table.responses("correct"),
                              progress=False)
    # the planted weight map is d^2 (the observer's use of each pixel); a centre
    # reveals it through the aperture and the CI smooths again: sigma * sqrt(2)
    truth = ndimage.gaussian_filter(d ** 2, 4.0 * np.sqrt(2), mode="constant")
    r = np.corrcoef(ci.z.ravel(), truth.ravel())[0, 1]
    assert r >= 0.8, f"recovery r = {r:.3f} at 1000 trials"
    res = pixel_test(ci.z, 4.0)
    assert res.significant[24, 20] and res.significant[24, 44]
    assert not res.significant[55:, :].any()


@pytest.fixture(scope="module")
def null_experiments():
    """200 simulated null experiments sharing one mask sequence (1500 trials each)."""
    spec = BubbleSpec(shape=(H, H), sigma=3.0, n_bubbles=10, background=0.5)
    n, k = 1500, 200
    centers = sample_centers(spec, 21, n)
    truth = np.random.default_rng(5).integers(2, size=n)
    obs = NullObserver([0, 1], seed=9)
    answers = np.stack([obs.decide_batch(np.zeros((n, 1, 1))) for _ in range(k)], axis=1)
    correct = (answers == truth[:, None]).astype(float)
    return spec, centers, correct


def test_family_wise_error_rft_under_null(null_experiments):
    spec, centers, correct = null_experiments
    z = classification_image(spec, centers, correct, progress=False).z
    assert z.shape == (200, H, H)
    res = pixel_test(z, 3.0, 0.05)
    fwer = res.significant.reshape(200, -1).any(axis=1).mean()
    # 0.05 plus two binomial standard errors over 200 experiments
    assert fwer <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 200), f"RFT FWER {fwer}"
    clu = cluster_test(z, 3.0, 0.05, cluster_threshold=2.7)
    fwer_c = clu.significant.reshape(200, -1).any(axis=1).mean()
    assert fwer_c <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 200), f"cluster FWER {fwer_c}"


def test_family_wise_error_permutation_under_null(null_experiments):
    spec, centers, correct = null_experiments
    hits = 0
    for j in range(200):
        res = permutation_test(spec, centers, correct[:, j], n_permutations=99, seed=j,
                               progress=False)
        hits += bool(res.significant.any())
    fwer = hits / 200
    assert fwer <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 200), f"permutation FWER {fwer}"


def test_permutation_test_detects_signal(small_spec, rng):
    c = sample_centers(small_spec, 2, 600)
    near = (np.hypot(c[:, :, 0] - 16, c[:, :, 1] - 16) < 5).any(axis=1)
    r = rng.normal(size=600) + 1.5 * near
    res = permutation_test(small_spec, c, r, n_permutations=199, seed=1, progress=False)
    assert res.significant[16, 16]
    assert res.p_values[16, 16] <= 0.01
    assert res.clusters[0].significant and res.cluster_significant[16, 16]
    assert res.max_null.shape == (199,)
    assert_allclose(res.z, classification_image(small_spec, c, r, progress=False).z,
                    atol=1e-6)
    with pytest.raises(ValueError, match="responses must be 1-D"):
        permutation_test(small_spec, c, np.c_[r, r])
    with pytest.raises(ValueError, match=r"n_permutations must be an integer >= 19 for "
                       r"p = 0.05 .*got 10"):
        permutation_test(small_spec, c, r, n_permutations=10)
    assert permutation_test(small_spec, c, r, 0.1, n_permutations=9,
                            progress=False).max_null.shape == (9,)


def test_simulate_session_errors(planted):
    images, _ = planted
    spec = BubbleSpec(shape=(H, H), sigma=4.0, n_bubbles=8)
    obs = NullObserver(["a", "b"])
    with pytest.raises(ValueError, match="labels must give one label per image"):
        simulate_session(spec, images, ["a"], obs, 10)
    with pytest.raises(ValueError, match=r"images must have shape \(n_images, 64, 64\)"):
        simulate_session(spec, images[:, :32], ["a", "b"], obs, 10)
    with pytest.raises(ValueError, match="n_trials must be an integer >= 1"):
        simulate_session(spec, images, ["a", "b"], obs, 0)


def test_noise_background_is_regenerable_per_trial(planted):
    """Each trial's noise field comes from (seed, trial), not one field per chunk."""
    from bubbles import apply_bubbles, noise_background, render_masks

    images, _ = planted
    spec = BubbleSpec(shape=(H, H), sigma=3.0, n_bubbles=4, background="noise")
    seen = []

    class Recorder:
        def decide_batch(self, stimuli, background=0.5):
            seen.extend(np.asarray(stimuli))
            return ["left"] * len(stimuli)

    table = simulate_session(spec, images, ["left", "right"], Recorder(), 6, seed=9,
                             chunk_size=4)
    centers = sample_centers(spec, 9, 6)
    for t in range(6):
        i = int(table.data["stimulus_index"][t])
        expect = apply_bubbles(images[i].astype(np.float32),
                               render_masks(spec, centers[t:t + 1])[0],
                               noise_background(images[i].astype(np.float32), 9, [t])[0])
        assert_allclose(seen[t], expect, atol=1e-6)
    assert not np.allclose(seen[0], seen[1])
