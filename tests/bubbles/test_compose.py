import numpy as np
import pytest
from numpy.testing import assert_allclose

from bubbles import (BubbleSpec, apply_bubbles, bubble_stimuli, compose_multiscale,
                     laplacian_bands, render_masks, sample_centers)


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    from scipy.ndimage import gaussian_filter
    return np.clip(gaussian_filter(rng.random((64, 64)), 2) * 2 - 0.5, 0, 1).astype(np.float32)


def test_apply_formula_and_range(image):
    mask = np.random.default_rng(1).random((3, 64, 64)).astype(np.float32)
    stim = apply_bubbles(image, mask, background=0.5)
    assert_allclose(stim, 0.5 + mask * (image - 0.5), atol=1e-6)
    assert stim.min() >= 0 and stim.max() <= 1
    assert_allclose(apply_bubbles(image, np.ones((64, 64))), image, atol=1e-6)
    assert_allclose(apply_bubbles(image, np.zeros((64, 64))), image.mean(), atol=1e-6)


def test_noise_background_per_trial_and_regenerable(image):
    from bubbles import noise_background

    noise = noise_background(image, 3, [0, 1, 2])
    assert noise.shape == (3, 64, 64) and noise.min() >= 0 and noise.max() <= 1
    assert not np.allclose(noise[0], noise[1])             # one field per trial
    assert_allclose(noise_background(image, 3, [2])[0], noise[2])   # trial 2 alone
    assert abs(noise.mean() - image.mean()) < 0.02
    stim = apply_bubbles(image, np.zeros((3, 64, 64)), background=noise)
    assert_allclose(stim, noise)
    spec = BubbleSpec(shape=(64, 64), sigma=3, n_bubbles=5, background="noise")
    masks = render_masks(spec, sample_centers(spec, 3, 3))
    assert_allclose(bubble_stimuli(spec, image, masks, seed=3, trials=[0, 1, 2]),
                    apply_bubbles(image, masks, noise), atol=1e-6)
    with pytest.raises(ValueError, match="needs seed and trials"):
        bubble_stimuli(spec, image, masks)
    with pytest.raises(ValueError, match="needs the noise fields"):
        apply_bubbles(image, np.zeros((64, 64)), background="noise")
    with pytest.raises(ValueError, match="one field per mask"):
        apply_bubbles(image, np.zeros((3, 64, 64)), background=noise[:2])


def test_colour_image():
    rgb = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    stim = apply_bubbles(rgb, np.zeros((2, 16, 16)))
    assert stim.shape == (2, 16, 16, 3)
    assert_allclose(stim[0, 0, 0], rgb.mean(axis=(0, 1)), atol=1e-6)


@pytest.mark.parametrize("n_bands", [1, 3, 5])
def test_pyramid_sums_back(image, n_bands):
    bands = laplacian_bands(image, n_bands)
    assert bands.shape == (n_bands + 1, 64, 64)
    assert np.abs(bands.sum(axis=0) - image).max() < 1e-5
    # band-pass levels carry no mean; the residual is smooth
    assert np.abs(bands[:-1].mean(axis=(1, 2))).max() < 0.02


def test_band_frequencies_descend():
    n = 128
    y, x = np.mgrid[:n, :n]
    # energy of each band peaks at lower frequency for coarser bands
    energies = []
    for cycles in (48, 24, 12, 6):
        img = (0.5 + 0.4 * np.sin(2 * np.pi * cycles * x / n)).astype(np.float32)
        energies.append(np.argmax((laplacian_bands(img, 4)[:-1] ** 2).sum(axis=(1, 2))))
    assert energies == sorted(energies)


def test_compose_all_ones_gives_image(image):
    bands = laplacian_bands(image, 5)
    assert np.abs(compose_multiscale(bands, np.ones((5, 64, 64))) - image).max() < 1e-5
    blank = compose_multiscale(bands, np.zeros((2, 5, 64, 64)))
    assert_allclose(blank[0], np.clip(bands[-1], 0, 1), atol=1e-6)


def test_bubble_stimuli_single_and_multi(image):
    spec = BubbleSpec(shape=(64, 64), sigma=3, n_bubbles=10, background=0.5)
    masks = render_masks(spec, sample_centers(spec, 0, 4))
    stim = bubble_stimuli(spec, image, masks)
    assert_allclose(stim, apply_bubbles(image, masks, 0.5))
    ms = BubbleSpec(shape=(64, 64), sigma=2, n_bubbles=40, bands=3)
    mm = render_masks(ms, sample_centers(ms, 0, 4))
    s2 = bubble_stimuli(ms, image, mm)
    assert s2.shape == (4, 64, 64) and s2.min() >= 0 and s2.max() <= 1
    assert_allclose(s2, compose_multiscale(laplacian_bands(image, 3), mm))


@pytest.mark.parametrize("call, match", [
    (lambda im: apply_bubbles(im, np.ones((10, 10))), r"mask must have shape"),
    (lambda im: apply_bubbles(im * 3, np.ones((64, 64))), r"image values must lie in \[0, 1\]"),
    (lambda im: apply_bubbles(im, np.ones((64, 64)) * 2), r"mask values must lie in \[0, 1\]"),
    (lambda im: apply_bubbles(im, np.ones((64, 64)), background=2.0), "background must be"),
    (lambda im: apply_bubbles(im, np.ones((64, 64)), background="white"), "background must be"),
    (lambda im: laplacian_bands(im, 0), "n_bands must be an integer >= 1"),
    (lambda im: compose_multiscale(laplacian_bands(im, 3), np.ones((2, 64, 64))),
     r"masks must have shape \(3, H, W\)"),
    (lambda im: bubble_stimuli(BubbleSpec(shape=(32, 32)), im, np.ones((1, 32, 32))),
     "does not match spec.shape"),
])
def test_bad_input(image, call, match):
    with pytest.raises(ValueError, match=match):
        call(image)


def test_bubble_stimuli_takes_the_spec_first(image):
    spec = BubbleSpec(shape=(64, 64), sigma=3, n_bubbles=10, background=0.5)
    masks = render_masks(spec, sample_centers(spec, 0, 2))
    with pytest.raises(TypeError, match=r"spec must be a BubbleSpec, got ndarray \(the spec "
                                        r"comes first: bubble_stimuli\(spec, image, masks\)\)"):
        bubble_stimuli(image, spec, masks)


def test_noise_seed_kinds(image):
    from bubbles import noise_background

    by_int = noise_background(image, 3, [0, 4])
    assert np.array_equal(noise_background(image, np.random.SeedSequence(3), [0, 4]), by_int)
    drawn = int(np.random.default_rng(8).integers(2 ** 63))
    assert np.array_equal(noise_background(image, np.random.default_rng(8), 2),
                          noise_background(image, drawn, 2))
    with pytest.raises(ValueError, match=r"trials must be .* not a whole number >= 0: \[0.5\]"):
        noise_background(image, 3, [0.5])
    with pytest.raises(ValueError, match="seed must be an integer >= 0, a numpy SeedSequence"):
        noise_background(image, -3, 1)
