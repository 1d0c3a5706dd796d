"""Centres drawn from a known density (adaptive sampling) and their weighted centre maps."""

import hashlib

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from bubbles import BubbleSpec, center_maps, render_masks, sample_centers


def _digest(arrays):
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes()
                                   for a in arrays)).hexdigest()


def test_default_sampling_bit_identical_to_before():
    # values recorded before the density option existed
    spec = BubbleSpec(shape=(32, 32), sigma=3.0, n_bubbles=5)
    assert sample_centers(spec, 7, 3).astype(int).tolist() == [
        [[9, 23], [25, 14], [1, 22], [26, 2], [6, 16]],
        [[1, 28], [12, 23], [21, 23], [14, 4], [15, 10]],
        [[15, 18], [15, 17], [25, 2], [20, 5], [12, 20]]]
    region = np.zeros((32, 32), bool)
    region[4:20, 8:30] = True
    multi = BubbleSpec(shape=(32, 32), sigma=(2.0, 4.0), n_bubbles=(3, 2), bands=2,
                       search_region=region)
    c = sample_centers(multi, 11, 40)
    assert _digest(c) == "1a3658c26ebd88932a5b0198a6a99e2174031ae93e40c0858e85b7d6c62c0e39"
    assert _digest([m.toarray() for m in center_maps(multi, c)]) == (
        "20de3999e83ab0cc0cdb29f24f46d147a458c0dd8e71861177e7b5c52b717f2a")


def test_centres_follow_the_density():
    spec = BubbleSpec(shape=(16, 16), sigma=2, n_bubbles=4)
    q = np.ones((16, 16))
    q[:, :8] = 3.0                                     # left half: 3 / 4 of the mass
    c = sample_centers(spec, 5, 3000, density=q).astype(int)
    assert c.shape == (3000, 4, 2)
    assert abs((c[..., 1] < 8).mean() - 0.75) < 0.015   # 12,000 draws: SD 0.004
    counts = np.zeros((16, 16))
    np.add.at(counts, (c[..., 0].ravel(), c[..., 1].ravel()), 1)
    expected = 12000 * q / q.sum()
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 255 + 5 * np.sqrt(2 * 255)            # 255 degrees of freedom


def test_trial_alone_and_repeatable_with_density():
    spec = BubbleSpec(shape=(20, 24), sigma=2, n_bubbles=6)
    q = np.random.default_rng(0).random((20, 24)) + 0.1
    a = sample_centers(spec, 9, 12, density=q)
    assert_array_equal(sample_centers(spec, 9, [7, 3], density=q), a[[7, 3]])
    assert_array_equal(sample_centers(spec, 9, 12, density=5 * q), a)   # rescaled
    assert not np.array_equal(sample_centers(spec, 10, 12, density=q), a)
    assert not np.array_equal(sample_centers(spec, 9, 12), a)


def test_with_replacement_counts_exact():
    spec = BubbleSpec(shape=(10, 10), sigma=1, n_bubbles=8)
    q = np.full((10, 10), 1e-3)
    q[5, 5] = 1.0                                      # ~91 % of the mass on one pixel
    c = sample_centers(spec, 1, 50, density=q).astype(int)
    assert c.shape == (50, 8, 2)
    assert ((c[..., 0] == 5) & (c[..., 1] == 5)).sum(axis=1).max() >= 6   # repeats
    m = center_maps(spec, c)                           # coincident centres add up
    assert_array_equal(np.asarray(m.sum(axis=1)).ravel(), 8)


def test_search_region_and_values_outside_ignored():
    region = np.zeros((24, 24), bool)
    region[5:15, 8:20] = True
    spec = BubbleSpec(shape=(24, 24), sigma=2, n_bubbles=5, search_region=region)
    q = np.random.default_rng(1).random((24, 24)) + 0.2
    c = sample_centers(spec, 3, 200, density=q).astype(int)
    assert region[c[..., 0], c[..., 1]].all()
    outside = np.where(region, q, 1e6)
    assert_array_equal(sample_centers(spec, 3, 200, density=outside), c)
    with pytest.raises(ValueError, match="outside the search region"):
        center_maps(spec, [[[0, 0]]], density=q)


def test_weighted_centre_maps_have_uniform_expectation():
    spec = BubbleSpec(shape=(12, 12), sigma=1.5, n_bubbles=5)
    yy, xx = np.mgrid[:12, :12]
    q = np.exp(-((yy - 3) ** 2 + (xx - 8) ** 2) / 18.0) + 0.05
    c = sample_centers(spec, 2, 20000, density=q)
    plain = np.asarray(center_maps(spec, c).mean(axis=0)).reshape(12, 12)
    weighted = np.asarray(center_maps(spec, c, density=q).mean(axis=0)).reshape(12, 12)
    # E[weighted] = k / N at every pixel (SE (k/N) / sqrt(n k q)); plain counts follow q
    se = (5 / 144) / np.sqrt(20000 * 5 * q / q.sum())
    assert np.abs((weighted - 5 / 144) / se).max() < 4.5
    assert np.corrcoef(plain.ravel(), q.ravel())[0, 1] > 0.99
    assert_allclose(weighted.mean(), 5 / 144, rtol=0.02)
    w = center_maps(spec, c[:3], density=q)
    qn = q / q.sum()
    for t in range(3):
        for r, k in c[t].astype(int):
            assert_allclose(w[t, r * 12 + k], np.sum(np.all(c[t] == (r, k), axis=1))
                            / (144 * qn[r, k]), rtol=1e-6)


def test_uniform_density_weights_are_one():
    spec = BubbleSpec(shape=(16, 16), sigma=2, n_bubbles=4)
    c = sample_centers(spec, 0, 30, density=np.ones((16, 16)))
    assert_array_equal(center_maps(spec, c, density=np.ones((16, 16))).toarray(),
                       center_maps(spec, c).toarray())


def test_multiscale_density_per_band():
    spec = BubbleSpec(shape=(32, 32), sigma=2, n_bubbles=(4, 2), bands=2)
    q = np.ones((2, 32, 32))
    q[0, :16] = 9.0                                    # band 0: top; band 1: uniform
    c = sample_centers(spec, 4, 500, density=q)
    assert [x.shape for x in c] == [(500, 4, 2), (500, 2, 2)]
    assert (c[0][..., 0] < 16).mean() > 0.85
    assert 0.4 < (c[1][..., 0] < 16).mean() < 0.6
    shared = sample_centers(spec, 4, 500, density=q[0])  # one (H, W) map for all bands
    assert_array_equal(shared[0], c[0])
    assert (shared[1][..., 0] < 16).mean() > 0.85
    maps = center_maps(spec, c, density=q)
    assert len(maps) == 2 and maps[0].shape == (500, 1024)
    assert_allclose(maps[1].toarray(), center_maps(spec, c)[1].toarray())  # uniform band
    assert render_masks(spec, [c[0][:1], c[1][:1]]).shape == (1, 2, 32, 32)


@pytest.mark.parametrize("density, match", [
    (np.ones((8, 9)), r"density must have shape \(8, 8\) or \(1, 8, 8\).*got shape \(8, 9\)"),
    (np.ones((2, 8, 8)), r"density must have shape"),
    (-np.ones((8, 8)), r"density must be > 0 at every eligible pixel.*64 negative"),
    (np.where(np.eye(8, dtype=bool), 0.0, 1.0), r"density must be > 0.*8 zero"),
    (np.where(np.eye(8, dtype=bool), np.nan, 1.0), r"density must be finite.*8 NaN/inf"),
    ("uniform", r"density must be an array of probabilities"),
])
def test_bad_density_fails_by_name(density, match):
    spec = BubbleSpec(shape=(8, 8), sigma=1, n_bubbles=2)
    with pytest.raises(ValueError, match=match):
        sample_centers(spec, 0, 3, density=density)
    with pytest.raises(ValueError, match=match):
        center_maps(spec, [[[1, 1]]], density=density)
