import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from threadpoolctl import threadpool_info, threadpool_limits

from bubbles import (BubbleSpec, center_maps, occlusion_masks, occlusion_positions,
                     one_blas_thread, render_masks, rise_masks, sample_centers, seed_sequence,
                     sigma_to_fwhm, trial_rng)


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
    (lambda s: sample_centers(s, -1, 3), "seed must be an integer >= 0, a numpy SeedSequence"),
    (lambda s: sample_centers(s, 1.5, 3), "seed must be an integer >= 0, a numpy SeedSequence"),
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


# -- seeds: one grammar ----------------------------------------------------------------
def test_seed_kinds(spec):
    """An int s and SeedSequence(s) are the same seed; a Generator is drawn from once."""
    by_int = sample_centers(spec, 7, 6)
    assert_array_equal(sample_centers(spec, np.random.SeedSequence(7), 6), by_int)
    child = np.random.SeedSequence(7, spawn_key=(4,))          # trial t: key (4, t)
    assert_array_equal(sample_centers(spec, child, [2]), sample_centers(
        spec, np.random.SeedSequence(7, spawn_key=(4,)), 3)[2:])
    assert not np.array_equal(sample_centers(spec, child, 3), by_int[:3])
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    first = sample_centers(spec, g1, 4)
    assert_array_equal(first, sample_centers(spec, g2, 4))    # same state, same draws
    assert not np.array_equal(sample_centers(spec, g1, 4), first)   # g1 has moved on
    drawn = int(np.random.default_rng(3).integers(2 ** 63))
    assert_array_equal(first, sample_centers(spec, drawn, 4))
    assert seed_sequence(np.random.SeedSequence(5)).entropy == 5
    assert_array_equal(rise_masks((20, 30), 3, np.random.SeedSequence(9)),
                       rise_masks((20, 30), 3, 9))
    a = trial_rng(11, 2, stream=1).random(3)
    assert_array_equal(trial_rng(np.random.SeedSequence(11), 2, stream=1).random(3), a)


@pytest.mark.parametrize("seed", [-1, 1.5, "7", None, True])
def test_bad_seed_is_named(spec, seed):
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0, a numpy "
                                         r"SeedSequence or a numpy Generator, got"):
        sample_centers(spec, seed, 2)


def test_fractional_trials_are_refused_not_truncated(spec):
    with pytest.raises(ValueError, match=r"trials must be .* whole-number trial indices .* "
                                         r"not a whole number >= 0: \[1.7\]"):
        sample_centers(spec, 0, [1.7, 2])
    with pytest.raises(ValueError, match="trials must be"):
        sample_centers(spec, 0, 2.5)
    with pytest.raises(ValueError, match=r"not a whole number >= 0: \[True\]"):
        sample_centers(spec, 0, [True, 2])
    assert_array_equal(sample_centers(spec, 0, np.array([1.0, 2.0])),
                       sample_centers(spec, 0, [1, 2]))
    assert sample_centers(spec, 0, 3.0).shape == (3, 12, 2)


@pytest.mark.parametrize("call, match", [
    (lambda: occlusion_positions((64.7, 64.2), 4), r"shape must be \(H, W\), two whole"),
    (lambda: occlusion_masks((20, 20.5), 4), "shape must be"),
    (lambda: rise_masks((64.7, 64), 2, 0), "shape must be"),
    (lambda: rise_masks((64, 64), 2, 0, grid=(7.5, 7)), r"grid must be \(H, W\), two whole"),
    (lambda: rise_masks((64, 64), 2, 0, p=float("nan")), r"p must be in \(0, 1\]"),
])
def test_bad_shapes_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# -- rendering: threads and BLAS limits never change a value ---------------------------
def _bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(polarity="occlude"),
    dict(aperture="square"),
    dict(overlap="max"),
    dict(aperture="disk", n_bubbles=4),
])
def test_threads_do_not_change_a_single_value(kwargs):
    """Big enough to render on several threads (>= 16 MB): the same bits as one thread,
    as each trial rendered alone, and as a preallocated, reused output."""
    spec = BubbleSpec(shape=(256, 256), sigma=10.0, n_bubbles=20).replace(**kwargs)
    n = 70 if spec.overlap == "clip" and spec.aperture != "disk" else 36
    c = sample_centers(spec, 3, n)
    one = render_masks(spec, c, workers=1)
    assert _bits(one).shape == (n, 256, 256)
    for workers in (2, 3, None):
        assert_array_equal(_bits(render_masks(spec, c, workers=workers)), _bits(one))
    alone = np.concatenate([render_masks(spec, c[[t]], workers=1) for t in (0, n // 2, n - 1)])
    assert_array_equal(_bits(alone), _bits(one[[0, n // 2, n - 1]]))
    out = np.full((n, 256, 256), 7.0, np.float32)
    assert render_masks(spec, c, out=out, workers=2) is out
    assert_array_equal(_bits(out), _bits(one))


def test_threads_do_not_change_multiscale_or_ragged_masks():
    spec = BubbleSpec(shape=(256, 256), sigma=4.0, n_bubbles=60, bands=3)
    c = sample_centers(spec, 1, 24)                        # 24 x 3 x 256 KB = 18 MB
    one = render_masks(spec, c, workers=1)
    assert_array_equal(_bits(render_masks(spec, c, workers=4)), _bits(one))
    assert_array_equal(_bits(render_masks(spec, [b[[5]] for b in c])), _bits(one[[5]]))
    single = BubbleSpec(shape=(256, 256), sigma=6.0, n_bubbles=20)
    ragged = [sample_centers(single.replace(n_bubbles=k), 2, [i])[0]
              for i, k in enumerate([3, 20, 0, 11] * 20)]
    assert_array_equal(_bits(render_masks(single, ragged, workers=3)),
                       _bits(render_masks(single, ragged, workers=1)))


def test_strided_out_gets_the_same_values():
    spec = BubbleSpec(shape=(64, 80), sigma=4.0, n_bubbles=12)
    c = sample_centers(spec, 0, 5)
    big = np.zeros((5, 64, 160), np.float32)
    with pytest.raises(ValueError, match=r"out must be a float32 array of shape \(5, 64, 80\)"):
        render_masks(spec, c, out=big)
    view = big[:, :, ::2]
    render_masks(spec, c, out=view)
    assert_array_equal(_bits(view), _bits(render_masks(spec, c)))


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2"])
def test_bad_workers(spec, workers):
    with pytest.raises(ValueError, match="workers must be None .* or an integer >= 1"):
        render_masks(spec, sample_centers(spec, 0, 1), workers=workers)


def _blas_threads():
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_one_blas_thread_limits_and_restores():
    before = _blas_threads()
    with one_blas_thread():
        assert set(_blas_threads()) == {1}
        with one_blas_thread():                              # nested
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == before
    # overlapping blocks in several threads: limited while all are inside, and BLAS is
    # as it was once they have all left, whichever leaves last
    start, inside = threading.Barrier(4), threading.Barrier(4)
    seen = []

    def hold(k):
        start.wait()
        with one_blas_thread():
            inside.wait()
            seen.append(set(_blas_threads()))
            inside.wait()
            time.sleep(0.01 * k)

    threads = [threading.Thread(target=hold, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [{1}] * 4
    assert _blas_threads() == before
    spec = BubbleSpec(shape=(256, 256), sigma=10.0, n_bubbles=20)
    render_masks(spec, sample_centers(spec, 0, 80), workers=3)
    assert _blas_threads() == before
    # and any thread can still set its own limits afterwards
    limited = []

    def own_limit():
        with threadpool_limits(limits=1, user_api="blas"):
            limited.append(set(_blas_threads()))

    t = threading.Thread(target=own_limit)
    t.start()
    t.join()
    assert limited == [{1}] and _blas_threads() == before


def test_render_in_threads_of_the_caller():
    """render_masks called from several threads at once: the same values."""
    spec = BubbleSpec(shape=(256, 256), sigma=8.0, n_bubbles=15)
    c = sample_centers(spec, 4, 72)
    ref = render_masks(spec, c, workers=1)
    results = [None] * 3

    def run(i):
        results[i] = render_masks(spec, c, workers=2)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert_array_equal(_bits(r), _bits(ref))


def test_an_error_in_a_thread_reaches_the_caller():
    spec = BubbleSpec(shape=(256, 256), sigma=8.0, n_bubbles=15)
    out = np.empty((72, 256, 256), np.float32)
    out.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        render_masks(spec, sample_centers(spec, 0, 72), out=out, workers=2)
