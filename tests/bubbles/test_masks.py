import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from bubbles import (BubbleSpec, center_maps, occlusion_masks, occlusion_positions,
                     render_masks, rise_masks, sample_centers, sigma_to_fwhm)


@pytest.fixture
def spec():
    return BubbleSpec(shape=(64, 80), sigma=4.0, n_bubbles=12)


def test_deterministic_and_trial_alone(spec):
    a = sample_centers(spec, 7, 10)
    b = sample_centers(spec, 7, 10)
    assert_array_equal(a, b)
    assert a.shape == (10, 12, 2)
    assert_array_equal(sample_centers(spec, 7, [5])[0], a[5])
    assert_array_equal(sample_centers(spec, 7, [9, 2, 5]), a[[9, 2, 5]])
    assert not np.array_equal(sample_centers(spec, 8, 10), a)


def test_same_in_another_process(spec):
    code = ("import numpy as np; from bubbles import BubbleSpec, sample_centers;"
            "s = BubbleSpec(shape=(64, 80), sigma=4.0, n_bubbles=12);"
            "print(sample_centers(s, 7, [3]).tobytes().hex())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == sample_centers(spec, 7, [3]).tobytes().hex()


def test_exact_count_distinct_and_inside(spec):
    c = sample_centers(spec, 0, 50)
    for trial in c:
        assert len({(r, k) for r, k in trial}) == 12
    assert c[..., 0].min() >= 0 and c[..., 0].max() <= 63
    assert c[..., 1].min() >= 0 and c[..., 1].max() <= 79
    maps = center_maps(spec, c)
    assert maps.shape == (50, 64 * 80)
    assert_array_equal(np.asarray(maps.sum(axis=1)).ravel(), 12)


def test_search_region_respected():
    region = np.zeros((40, 40), bool)
    region[10:20, 25:35] = True
    spec = BubbleSpec(shape=(40, 40), sigma=2, n_bubbles=8, search_region=region)
    c = sample_centers(spec, 3, 200).astype(int)
    assert region[c[..., 0], c[..., 1]].all()


def test_single_bubble_fwhm_within_one_percent():
    sigma = 10.0
    spec = BubbleSpec(shape=(201, 201), sigma=sigma, n_bubbles=1)
    mask = render_masks(spec, np.array([[[100.0, 100.0]]]))[0]
    profile = mask[100].astype(np.float64)
    above = np.flatnonzero(profile >= 0.5)
    # interpolate the half-maximum crossings on both sides
    lo, hi = above[0], above[-1]
    left = lo - 1 + (0.5 - profile[lo - 1]) / (profile[lo] - profile[lo - 1])
    right = hi + (profile[hi] - 0.5) / (profile[hi] - profile[hi + 1])
    assert right - left == pytest.approx(sigma_to_fwhm(sigma), rel=0.01)
    assert mask.max() == pytest.approx(1.0)


def test_matches_full_image_gaussians(spec):
    c = sample_centers(spec, 1, 3)
    rr, cc = np.mgrid[:64, :80]
    naive = np.zeros((3, 64, 80))
    for i, trial in enumerate(c):
        for r, k in trial:
            naive[i] += np.exp(-((rr - r) ** 2 + (cc - k) ** 2) / (2 * 4.0 ** 2))
    assert_allclose(render_masks(spec, c), np.minimum(naive, 1), atol=1e-5)
    spec_max = spec.replace(overlap="max")
    naive_max = np.zeros((3, 64, 80))
    for i, trial in enumerate(c):
        for r, k in trial:
            naive_max[i] = np.maximum(naive_max[i], np.exp(-((rr - r) ** 2 + (cc - k) ** 2) / 32))
    assert_allclose(render_masks(spec_max, c), naive_max, atol=1e-5)


@pytest.mark.parametrize("aperture", ["gaussian", "disk", "square"])
@pytest.mark.parametrize("overlap", ["clip", "max"])
def test_range_polarity_overlap(aperture, overlap):
    spec = BubbleSpec(shape=(48, 48), sigma=3, n_bubbles=30, aperture=aperture,
                      overlap=overlap)
    c = sample_centers(spec, 2, 4)
    m = render_masks(spec, c)
    assert m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1
    occluded = render_masks(spec.replace(polarity="occlude"), c)
    assert_allclose(occluded, 1 - m, atol=1e-6)
    # every centre is fully visible
    r, k = c[0, 0].astype(int)
    assert m[0, r, k] == pytest.approx(1.0)


def test_clip_sums_overlaps_and_max_does_not():
    spec = BubbleSpec(shape=(41, 41), sigma=5, n_bubbles=2)
    c = np.array([[[20.0, 15.0], [20.0, 25.0]]])
    clip = render_masks(spec, c)[0]
    mx = render_masks(spec.replace(overlap="max"), c)[0]
    g = np.exp(-25 / 50)             # each bubble's value at the midpoint (5 px away)
    assert clip[20, 20] == pytest.approx(min(1.0, 2 * g), rel=1e-5)
    assert mx[20, 20] == pytest.approx(g, rel=1e-5)


def test_disk_and_square_sizes():
    spec = BubbleSpec(shape=(61, 61), sigma=10, n_bubbles=1, aperture="disk")
    half = sigma_to_fwhm(10) / 2
    disk = render_masks(spec, np.array([[[30.0, 30.0]]]))[0]
    assert disk.sum() == pytest.approx(np.pi * half ** 2, rel=0.05)
    square = render_masks(spec.replace(aperture="square"), np.array([[[30.0, 30.0]]]))[0]
    side = 2 * np.floor(half) + 1
    assert square.sum() == side ** 2


def test_ragged_centres_render_like_separate_specs():
    spec = BubbleSpec(shape=(32, 32), sigma=3, n_bubbles=5)
    a = sample_centers(spec.replace(n_bubbles=2), 0, [0])[0]
    b = sample_centers(spec.replace(n_bubbles=7), 0, [1])[0]
    both = render_masks(spec, [a, b])
    assert_allclose(both[0], render_masks(spec.replace(n_bubbles=2), a[None])[0])
    assert_allclose(both[1], render_masks(spec.replace(n_bubbles=7), b[None])[0])
    maps = center_maps(spec, [a, b])
    assert_array_equal(np.asarray(maps.sum(axis=1)).ravel(), [2, 7])


def test_multiscale_shapes():
    spec = BubbleSpec(shape=(64, 64), sigma=2, n_bubbles=40, bands=3)
    c = sample_centers(spec, 0, 4)
    assert isinstance(c, list) and [x.shape[1] for x in c] == list(spec.n_per_band)
    m = render_masks(spec, c)
    assert m.shape == (4, 3, 64, 64)
    assert_allclose(m[:, 1], render_masks(BubbleSpec(shape=(64, 64), sigma=4,
                                                     n_bubbles=spec.n_per_band[1]), c[1]))
    maps = center_maps(spec, c)
    assert len(maps) == 3 and maps[0].shape == (4, 64 * 64)


def test_zero_bubbles():
    spec = BubbleSpec(shape=(16, 16), sigma=2, n_bubbles=0)
    m = render_masks(spec, sample_centers(spec, 0, 2))
    assert m.shape == (2, 16, 16) and m.max() == 0


@pytest.mark.parametrize("size, stride", [(1, 1), (5, 3), (10, 10), (15, 7), (7, None)])
def test_occlusion_covers_every_pixel(size, stride):
    masks = occlusion_masks((37, 50), size, stride=stride)
    covered = (masks == 0).any(axis=0)
    assert covered.all()
    assert ((masks == 0).sum(axis=(1, 2)) == size * size).all()


def test_occlusion_errors():
    with pytest.raises(ValueError, match=r"stride must be <= size \(5\)"):
        occlusion_positions((20, 20), 5, stride=6)
    with pytest.raises(ValueError, match="size must be an integer from 1 to 20"):
        occlusion_positions((20, 20), 25)
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        occlusion_positions((20, 20), 5, stride=0)


def test_rise_masks():
    m = rise_masks((50, 60), 20, 3, grid=(7, 7), p=0.5)
    assert m.shape == (20, 50, 60) and m.min() >= 0 and m.max() <= 1
    assert_array_equal(rise_masks((50, 60), 5, 3)[4], m[4])
    assert 0.3 < m.mean() < 0.7
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
        rise_masks((10, 10), 2, 0, p=0)


@pytest.mark.parametrize("call, match", [
    (lambda s: sample_centers(s, -1, 3), "seed must be a non-negative integer"),
    (lambda s: sample_centers(s, 1.5, 3), "seed must be a non-negative integer"),
    (lambda s: sample_centers(s, 0, -2), "trials must be a count >= 0"),
    (lambda s: sample_centers(s, 0, "abc"), "trial indices"),
    (lambda s: render_masks(s, np.zeros((2, 3))), r"centers must have shape \(n_trials"),
    (lambda s: render_masks(s, np.full((1, 1, 2), 500.0)), "centers must lie inside"),
    (lambda s: render_masks(s, np.full((1, 1, 2), np.nan)), "centers must be finite"),
])
def test_bad_input(spec, call, match):
    with pytest.raises(ValueError, match=match):
        call(spec)


def test_spec_type_checked():
    with pytest.raises(TypeError, match="spec must be a BubbleSpec"):
        sample_centers({"sigma": 3}, 0, 1)
