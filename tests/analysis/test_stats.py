"""Random-field statistics: the published Stat4Ci numbers and the test objects."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

from analysis.stats import (cluster_size_threshold, cluster_test, pixel_test,
                            pixel_threshold, resels, sigma_to_fwhm)


def test_bonferroni_published_values():
    # Chauvin et al. 2005: N = 100 -> 3.29; N = 65,536 -> 4.808
    assert_allclose(pixel_threshold(100, 1.0)[2], 3.29, atol=5e-3)
    assert_allclose(pixel_threshold(65536, 1.0)[2], 4.808, atol=5e-4)


def test_one_dimensional_published_values():
    # 257 px, FWHM 11.8, p .05, t_C 2.7 -> pixel 3.1, cluster 6.9
    thr, rft, bonf = pixel_threshold(257, 11.8, 0.05, ndim=1)
    assert_allclose(thr, 3.1, atol=0.05)
    assert thr == min(rft, bonf)
    assert_allclose(cluster_size_threshold(257, 11.8, 0.05, cluster_threshold=2.7, ndim=1), 6.9,
                    atol=0.05)


def test_face_region_published_values():
    # 36,798 px, sigma 20 (FWHM 47.0964) -> 3.30 and 861.7 px
    fwhm = sigma_to_fwhm(20)
    assert_allclose(fwhm, 47.0964, atol=1e-4)
    thr, rft, bonf = pixel_threshold(36798, fwhm)
    assert_allclose(thr, 3.30, atol=5e-3)
    assert thr == rft < bonf
    # solved exactly we get 861.06; the paper prints 861.7 (0.07 % apart)
    assert_allclose(cluster_size_threshold(36798, fwhm), 861.7, rtol=1e-3)


def test_threshold_is_smaller_of_rft_and_bonferroni():
    # very rough fields over few pixels: Bonferroni is the tighter bound
    thr, rft, bonf = pixel_threshold(20, 1.0)
    assert bonf < rft
    assert thr == bonf


def test_resels_disk_approximation():
    n, fwhm = 36798, 47.0964
    r = np.sqrt(n / np.pi)
    assert_allclose(resels(n, fwhm, 2), [1, np.pi * r / fwhm, n / fwhm ** 2], rtol=1e-12)


def test_cluster_size_honours_p():
    # the toolbox ignored p (always .05); we do not
    k05 = cluster_size_threshold(36798, 47.0964, 0.05)
    k01 = cluster_size_threshold(36798, 47.0964, 0.01)
    assert k01 > k05


def test_pixel_test_marks_pixels_and_p_values():
    z = np.zeros((64, 64))
    z[10, 10], z[40, 40] = 6.0, 2.0
    res = pixel_test(z, 3.0)
    assert res.significant[10, 10] and not res.significant[40, 40]
    assert res.n_significant == 1
    assert res.p_values[10, 10] < 0.05 < res.p_values[40, 40]
    # at the threshold the corrected p-value is p
    z2 = np.full((64, 64), res.threshold)
    assert_allclose(pixel_test(z2, 3.0).p_values, 0.05, rtol=1e-6)


def test_pixel_test_search_region_and_tails():
    z = np.zeros((64, 64))
    z[5, 5], z[30, 30] = 8.0, -8.0
    region = np.zeros((64, 64), bool)
    region[20:, 20:] = True
    res = pixel_test(z, 3.0, search_region=region)
    assert res.n_significant == 0 and res.n_pixels == 44 * 44
    both = pixel_test(z, 3.0, tail="both")
    assert both.significant[5, 5] and both.significant[30, 30]
    assert both.threshold > pixel_test(z, 3.0).threshold
    assert pixel_test(z, 3.0, tail="lower").significant[30, 30]


def test_cluster_test_finds_cluster_with_properties():
    z = np.zeros((128, 128))
    z[20:50, 30:60] = 3.5
    z[35, 45] = 5.0
    z[100:103, 100:103] = 3.0
    res = cluster_test(z, 5.0, cluster_threshold=2.7)
    assert len(res.clusters) == 2
    big = res.clusters[0]
    assert big.size == 900 and big.significant
    assert big.peak == (35, 45)
    assert_allclose(big.peak_z, 5.0)
    assert_allclose(big.centroid, (34.5, 44.5), atol=1e-9)
    assert not res.clusters[1].significant
    assert res.significant.sum() == 900
    assert res.clusters[0].p_value < 0.05 < res.clusters[1].p_value


def test_cluster_connectivity():
    z = np.zeros((40, 40))
    z[10:15, 10:15] = 3.0
    z[15:20, 15:20] = 3.0   # touches the first block only at a corner
    assert len(cluster_test(z, 2.2, connectivity=8).clusters) == 1
    assert len(cluster_test(z, 2.2, connectivity=4).clusters) == 2


def test_one_dimensional_tests():
    z = np.zeros(257)
    z[100:110] = 3.5
    pix = pixel_test(z, 11.8 / np.sqrt(8 * np.log(2)))
    assert_allclose(pix.threshold, 3.1, atol=0.05)
    assert pix.significant[100:110].all()
    clu = cluster_test(z, 11.8 / np.sqrt(8 * np.log(2)))
    assert_allclose(clu.min_cluster_size, 6.9, atol=0.05)
    assert clu.clusters[0].size == 10 and clu.clusters[0].significant


def test_stacked_maps_are_tested_one_by_one():
    z = np.zeros((3, 64, 64))
    z[1, 20:40, 20:40] = 4.0
    pix = pixel_test(z, 3.0)
    assert pix.significant[1].sum() == 400 and not pix.significant[[0, 2]].any()
    clu = cluster_test(z, 3.0)
    assert [c.map_index for c in clu.clusters] == [(1,)]


@pytest.mark.parametrize("kwargs, match", [
    ({"sigma": -3}, "sigma must be > 0"),
    ({"sigma": 3, "p": 1.5}, "p must be a probability"),
    ({"sigma": 3, "search_region": np.ones((5, 5), bool)}, "search_region must have"),
    ({"sigma": 3, "tail": "left"}, "'tail' must be one of"),
    ({"sigma": 3, "search_region": np.zeros((16, 16), bool)}, "at least one pixel"),
])
def test_pixel_test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pixel_test(np.zeros((16, 16)), **kwargs)


def test_cluster_test_errors():
    with pytest.raises(ValueError, match="'connectivity' must be one of"):
        cluster_test(np.zeros((16, 16)), 3, connectivity=6)
    with pytest.raises(ValueError, match="z must be finite"):
        cluster_test(np.full((16, 16), np.nan), 3)


def test_rft_validity_warnings():
    # REFERENCES section 2: search region > ~3 FWHM across, FWHM > ~5 px
    z = np.zeros((256, 256))
    z[100:140, 100:140] = 3.0
    # the coarsest band of the 2001 design: sigma 92.8 px, FWHM 218.5 px in 256 px
    with pytest.warns(UserWarning, match="spans 1.3 FWHM"):
        pix = pixel_test(z, 92.8)
    assert len(pix.warnings) == 1 and pix.to_dict()["warnings"] == pix.warnings
    with pytest.warns(UserWarning) as record:
        clu = cluster_test(z, 92.8)
    assert [str(w.message) for w in record] == clu.warnings
    assert clu.min_cluster_size == 0.0 and len(clu.warnings) == 2
    assert "critical cluster size is 0 px" in clu.warnings[1]
    with pytest.warns(UserWarning, match="FWHM 3.53 px is below the 5 px"):
        assert len(pixel_test(z, 1.5).warnings) == 1
    # the Stat4Ci face region at sigma 20 and the 1-D example are valid: no warning
    region = np.zeros((256, 256), bool)
    region[20:236, 35:205] = True          # 36,720 px, close to the face's 36,798
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pixel_test(z, 20, search_region=region).warnings == []
        assert cluster_test(z, 20, search_region=region).warnings == []
        assert pixel_test(np.zeros(257), 11.8 / np.sqrt(8 * np.log(2))).warnings == []


def test_sigma_to_fwhm_is_the_bubbles_helper():
    import bubbles
    from analysis import stats

    assert stats.sigma_to_fwhm is bubbles.sigma_to_fwhm


def test_tests_compute_resels_and_cluster_constant_once(monkeypatch):
    from analysis import stats

    calls = {"resels": 0, "ec_density": 0}
    real_resels, real_ec = stats.resels, stats.ec_density

    def resels_spy(*a, **k):
        calls["resels"] += 1
        return real_resels(*a, **k)

    def ec_spy(t, d):
        if np.ndim(t) == 0:            # the cluster constant (not the vectorised p-values)
            calls["ec_density"] += 1
        return real_ec(t, d)

    monkeypatch.setattr(stats, "resels", resels_spy)
    monkeypatch.setattr(stats, "ec_density", ec_spy)
    z = np.zeros((128, 128))
    z[10:20, 10:20] = z[60:70, 60:70] = z[100:110, 20:30] = 4.0
    ref = pixel_threshold(128 * 128, sigma_to_fwhm(3))
    pix = pixel_test(z, 3)
    assert calls["resels"] == 2          # pixel_threshold above, pixel_test once
    assert pix.threshold == pytest.approx(ref[0])
    calls.update(resels=0, ec_density=0)
    clu = cluster_test(z, 3)
    assert len(clu.clusters) == 3
    assert calls == {"resels": 1, "ec_density": 1}
    assert clu.min_cluster_size == pytest.approx(cluster_size_threshold(
        128 * 128, sigma_to_fwhm(3)))


def test_permutation_test_checks_the_search_region_shape(small_spec, small_centers):
    from analysis import permutation_test

    r = np.random.default_rng(0).normal(size=len(small_centers))
    with pytest.raises(ValueError, match=r"search_region must be a boolean array of the "
                                         r"spec's shape \(32, 32\), got shape \(16, 16\)"):
        permutation_test(small_spec, small_centers, r, n_permutations=19,
                         search_region=np.ones((16, 16), bool), progress=False)
