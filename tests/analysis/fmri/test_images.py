"""Voxel diagnostic images: planted clusters recovered, the area confound removed,
family-wise error on null voxels, the Zarr store and the dask path."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from analysis.fmri.images import voxel_images
from analysis.fmri.inputs import load_study
from analysis.fmri.study import analyze_study, create_store, estimate_betas
from analysis.zscore import zscore
from bubbles import BubbleSpec, center_maps, sample_centers

nib = pytest.importorskip("nibabel")


@pytest.fixture(scope="module")
def study(planted):
    return load_study(planted.bold, planted.events, planted.trials, mask=planted.mask,
                      confounds=planted.confounds)


@pytest.fixture(scope="module")
def betas(study):
    return estimate_betas(study)


def test_planted_clusters_are_recovered(planted, study, betas, labels_of):
    res = analyze_study(study, resolution=32, betas=betas)
    lab = labels_of(planted, study)
    s = res.stats
    assert res.z.shape == (study.n_voxels, 32, 32) and res.spec.sigma == 2.0
    eyes, mouth = res.rois["eyes"].ravel(), res.rois["mouth"].ravel()
    r_eyes = np.array([np.corrcoef(z.ravel(), eyes)[0, 1] for z in res.z])
    r_mouth = np.array([np.corrcoef(z.ravel(), mouth)[0, 1] for z in res.z])
    # eye voxels' images correlate with the eye region, mouth voxels' with the mouth
    assert r_eyes[lab == 1].mean() > 0.3 and r_mouth[lab == 1].mean() < 0.05
    assert r_mouth[lab == 2].mean() > 0.3 and r_eyes[lab == 2].mean() < 0.05
    assert (s.n_significant[lab == 1] > 0).mean() > 0.7
    assert (s.n_significant[lab == 2] > 0).mean() > 0.7
    assert s.roi_z["eyes"][lab == 1].mean() > 3 and s.roi_z["mouth"][lab == 2].mean() > 3
    # null and (with the covariates) area voxels: no significant pixel
    assert (s.n_significant[lab == 0] > 0).sum() == 0
    assert (s.n_significant[lab == 3] > 0).sum() == 0


def test_area_confound_is_removed_by_the_covariates(planted, study, betas, labels_of):
    lab = labels_of(planted, study)
    with_cov = analyze_study(study, resolution=32, betas=betas)
    without = analyze_study(study, resolution=32, betas=betas, covariates=())
    truth = np.load(planted.planted)
    area = truth["feature_area"][study.rows]
    amp = betas[0][:, lab == 3]
    # the area voxels' amplitudes follow the revealed area before, not after
    r_before = np.mean([np.corrcoef(a, area)[0, 1] for a in amp.T])
    assert r_before > 0.3
    # ... and their images: with a fixed number of bubbles the area changes with how
    # much of each bubble falls off the image, so an area voxel's image is a
    # centre-minus-edges pattern; the covariate removes it
    edge = np.zeros((32, 32))
    edge[4:-4, 4:-4] = 1
    corr = lambda res: np.mean([np.corrcoef(z.ravel(), edge.ravel())[0, 1]  # noqa: E731
                                for z in res.z[lab == 3]])
    assert corr(without) > 0.2
    assert abs(corr(with_cov)) < 0.1
    assert without.stats.peak_z[lab == 3].mean() > with_cov.stats.peak_z[lab == 3].mean()


def _null_family(spec, maps, n_targets, rng, **kw):
    r = rng.normal(size=(maps.shape[0], n_targets)).astype(np.float32)
    s = voxel_images(spec, maps, r, **kw)
    return bool((s.n_significant > 0).any()), s


def test_family_wise_error_of_null_voxels_is_at_most_5_percent():
    spec = BubbleSpec(shape=(32, 32), sigma=2.5, n_bubbles=10)
    maps = center_maps(spec, sample_centers(spec, 4, 300))
    rng = np.random.default_rng(0)
    hits = [_null_family(spec, maps, 200, rng)[0] for _ in range(40)]
    # 40 null studies of 200 voxels: expected <= 2 with any false positive
    assert sum(hits) <= 4
    # the max-statistic: one shared permutation per iteration
    hits, thresholds = [], []
    for _ in range(12):
        hit, s = _null_family(spec, maps, 50, rng, permutations=20, seed=int(rng.integers(1e6)))
        hits.append(hit)
        thresholds.append(s.threshold)
        assert s.perm_max.shape == (20,) and s.threshold >= np.quantile(s.perm_max, 0.9)
    assert sum(hits) <= 2
    # the permutation threshold is close to the random-field one (both family-wise)
    _, rft = _null_family(spec, maps, 50, rng)
    assert abs(np.median(thresholds) - rft.threshold) < 0.6


def test_zarr_store_is_read_lazily_and_equals_the_in_memory_images(tmp_path, study,
                                                                    betas):
    zarr = pytest.importorskip("zarr")
    mem = analyze_study(study, resolution=32, betas=betas)
    disk = analyze_study(study, resolution=32, betas=betas, store=tmp_path / "v.zarr",
                         chunk_size=128)
    root = zarr.open_group(str(tmp_path / "v.zarr"), mode="r")
    z = root["z"]
    assert z.shape == (study.n_voxels, 32, 32) and z.dtype == np.float32
    assert z.chunks[0] == 64 and root["ijk"].shape == (study.n_voxels, 3)
    assert root.attrs["n_trials"] == len(study.rows) and root.attrs["method"] == "regression"
    assert_allclose(np.asarray(root.attrs["affine"]), study.affine)
    i = int(np.argmax(mem.stats.peak_z))
    assert_allclose(z[i], mem.z[i], atol=1e-6)
    assert_allclose(disk.stats.peak_z, mem.stats.peak_z, atol=1e-5)
    assert_allclose(disk.stats.n_significant, mem.stats.n_significant)


def test_median_split_and_behaviour_correlation(study, betas):
    res = analyze_study(study, resolution=32, betas=betas, method="median_split")
    i = int(np.argmax(res.stats.peak_z))
    from analysis.diagnostic import DiagnosticImage

    person = DiagnosticImage(z=np.kron(res.z[i], np.ones((2, 2))), method="regression",
                             spec=None, n_trials=100, observer="person")
    with pytest.warns(UserWarning, match="resampled"):
        again = analyze_study(study, resolution=32, betas=betas, method="median_split",
                              behaviour=person)
    r = again.stats.behaviour_r
    assert r[i] > 0.95 and np.all(np.abs(r) <= 1 + 1e-6)
    assert_allclose(zscore(r)[i], zscore(r).max())


@pytest.mark.slow
def test_dask_local_cluster_equals_the_local_path(tmp_path, study, betas):
    pytest.importorskip("dask.distributed")
    pytest.importorskip("zarr")
    local = analyze_study(study, resolution=16, betas=betas, store=tmp_path / "a.zarr",
                          chunk_size=256)
    dist = analyze_study(study, resolution=16, betas=betas, store=tmp_path / "b.zarr",
                         chunk_size=256, scheduler="local")
    import zarr

    a = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")["z"][:]
    b = zarr.open_group(str(tmp_path / "b.zarr"), mode="r")["z"][:]
    assert_allclose(a, b, atol=1e-6)
    assert_allclose(local.stats.peak_z, dist.stats.peak_z, atol=1e-6)
    assert_allclose(local.stats.n_significant, dist.stats.n_significant)


def test_store_helper_records_attributes(tmp_path):
    zarr = pytest.importorskip("zarr")
    path = create_store(tmp_path / "s.zarr", 10, (4, 4), attrs={"method": "x",
                                                                "affine": np.eye(4)})
    arr = zarr.open_array(str(path), mode="r")
    assert arr.shape == (10, 4, 4) and float(arr[3].sum()) == 0.0
