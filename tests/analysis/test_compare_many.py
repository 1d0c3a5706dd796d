"""analysis.compare_many: every target of a against every target of b.

The network side (planted voxels that follow a unit of the embedded CNN, the
random-weights floor) is tested in tests/ann_bridge/test_compare_many_planted.py.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats
from scipy.ndimage import gaussian_filter

from analysis import DiagnosticImage, TrialTable, classification_image
from analysis.compare import compare, correlate
from analysis.compare_many import (ManyComparison, compare_many, layer_volumes, load_stack,
                                   plot_best_pairs, plot_layer_matrix, roi_table,
                                   write_layer_maps)
from bubbles import BubbleSpec, sample_centers

SPEC = BubbleSpec(shape=(32, 32), sigma=3.0, n_bubbles=6)
N = 300


@pytest.fixture(scope="module")
def session():
    """Centres of N trials and a unit-like response per column position (8 'units')."""
    c = sample_centers(SPEC, 0, N)
    rng = np.random.default_rng(1)
    drive = np.stack([(np.abs(c[:, :, 1] - k).min(axis=1) < 5).astype(float)
                      for k in range(2, 32, 4)], axis=1)            # (N, 8)
    return c, drive, rng


def _units(c, drive, names=None):
    names = names or [f"L{k % 2}:ch{k}" for k in range(drive.shape[1])]
    return classification_image(SPEC, c, drive, targets=names, observer="unit",
                                progress=False)


def _stack(z, names, spec=None, observer="voxel"):
    return DiagnosticImage(np.asarray(z), "regression", spec, 0,
                           dims=("target", "y", "x"), targets=names, observer=observer)


def test_one_target_equals_compare(session):
    c, drive, rng = session
    resp = (drive[:, 2] + 0.8 * rng.normal(size=N) > 0.5).astype(float)
    a = classification_image(SPEC, c, resp, progress=False, observer="person")
    b = _units(c, drive + rng.normal(size=drive.shape))
    ref = compare(a, b, trials=(SPEC, c, resp), n_permutations=40, n_splits=5, seed=3)
    res = compare_many(a, b, trials=(SPEC, c, resp), n_permutations=40, n_splits=5,
                       seed=3, reliability_p=None)
    assert isinstance(res, ManyComparison)
    assert_allclose(res.r[0], ref.pearson, atol=1e-5)
    assert res.best[0] == ref.best and res.best_names == [ref.best_name]
    assert_allclose(res.r_half[0], ref.ceiling.r_half, atol=1e-6)
    assert_allclose(res.ceiling[0], ref.ceiling_value, atol=1e-6)
    assert_allclose(res.score[0], ref.score, atol=1e-5)
    assert res.p_best[0] == pytest.approx(ref.p_value)        # the same permutations
    tab = res.table()
    assert list(tab["target"]) == ["person"] and tab["best"][0] == ref.best_name


def test_many_targets_are_every_one_against_all(session):
    c, drive, rng = session
    b = _units(c, drive)
    vox = drive[:, [1, 5, 6]] + 0.7 * rng.normal(size=(N, 3))
    a = classification_image(SPEC, c, vox, targets=["v1", "v5", "v6"], observer="voxel",
                             progress=False)
    res = compare_many(a, b, chunk_size=2)                   # chunks of a do not matter
    one = [compare(a.z[i], b) for i in range(3)]
    for i in range(3):
        assert_allclose(res.r[i], one[i].pearson, atol=1e-5)
    assert res.best_names == ["L1:ch1", "L1:ch5", "L0:ch6"]
    assert res.layers == ["L0", "L1"]
    assert_allclose(res.layer_r[:, 1], np.nanmax(res.r[:, 1::2], axis=1))
    assert list(res.preferred_layer) == [1, 1, 0]


def test_common_grid_and_matched_smoothing(session):
    """A stack at 64 x 64 (sigma 6) against one at 32 x 32 (sigma 2): b is averaged in
    2 x 2 blocks, a is smoothed by sqrt(3^2 - 2^2) px; then r equals compare's
    correlate of the same two maps after those operations."""
    rng = np.random.default_rng(5)
    fine = gaussian_filter(rng.normal(size=(3, 64, 64)), (0, 6, 6))
    coarse = fine.reshape(3, 32, 2, 32, 2).mean(axis=(2, 4))
    a = _stack(gaussian_filter(rng.normal(size=(2, 32, 32)), (0, 2, 2)) + coarse[:2],
               ["v0", "v1"], SPEC.replace(sigma=2.0))
    b = _stack(fine, ["c:0", "c:1", "c:2"], SPEC.replace(shape=(64, 64), sigma=6.0), "unit")
    res = compare_many(a, b, smoothing=1.0)
    assert res.info["common_shape"] == [32, 32]
    assert res.info["extra_sigma_a"] == pytest.approx(np.sqrt(5 + 1))
    assert res.info["extra_sigma_b"] == pytest.approx(1.0)
    for i in range(2):
        za = gaussian_filter(a.z[i], np.sqrt(5), mode="reflect")
        want = correlate(za, coarse, smoothing=1.0).pearson
        assert_allclose(res.r[i], want, atol=1e-5)
    assert res.best_names == ["c:0", "c:1"]
    plain = compare_many(a, b, match_smoothing=False, resolution=16)
    assert plain.info["common_shape"] == [16, 16] and plain.info["extra_sigma_a"] == 0


def test_layer_fit_equals_nested_ridge_of_scikit_learn():
    """The Gram-matrix ridge equals scikit-learn's Ridge fitted on every nested split."""
    from sklearn.linear_model import Ridge

    from analysis.compare_many import ALPHAS, N_FOLDS, _folds

    rng = np.random.default_rng(0)
    u = gaussian_filter(rng.normal(size=(5, 16, 16)), (0, 1.5, 1.5))
    w = rng.normal(size=(5, 2))
    y = np.einsum("uhw,ut->thw", u, w) + gaussian_filter(rng.normal(size=(2, 16, 16)),
                                                         (0, 1, 1))
    a = _stack(y, ["v0", "v1"])
    b = _stack(u, [f"L:{k}" for k in range(5)], observer="unit")
    res = compare_many(a, b, fit_layers=True)
    x = b.z.reshape(5, -1).T
    x = (x - x.mean(0)) / x.std(0)
    folds = _folds((16, 16), None)

    def fit(train, t, alpha):
        xc = x[train] - x[train].mean(0)
        scale = np.linalg.eigvalsh(xc.T @ xc).mean()
        return Ridge(alpha=alpha * scale).fit(x[train], t[train])

    for i in range(2):
        t = y[i].ravel()
        t = (t - t.mean()) / t.std()
        pred = np.empty_like(t)
        for f in range(N_FOLDS):
            outer = [g for g in range(N_FOLDS) if g != f]
            inner_r = []
            for alpha in ALPHAS:
                p, q = [], []
                for g in outer:
                    m = fit(np.isin(folds, [h for h in outer if h != g]), t, alpha)
                    p.append(m.predict(x[folds == g]))
                    q.append(t[folds == g])
                inner_r.append(np.corrcoef(np.concatenate(p), np.concatenate(q))[0, 1])
            m = fit(np.isin(folds, outer), t, ALPHAS[int(np.argmax(inner_r))])
            pred[folds == f] = m.predict(x[folds == f])
        assert res.layer_fit_r[i, 0] == pytest.approx(np.corrcoef(pred, t)[0, 1], abs=5e-5)
    assert res.layer_fit_r.min() > 0.5                        # planted linear mixtures
    assert res.info["fit"]["folds"] == N_FOLDS


def test_null_voxels_p_best_is_uniform_and_they_are_not_scored(session):
    c, drive, _ = session
    rng = np.random.default_rng(11)
    b = _units(c, drive + rng.normal(size=drive.shape))
    noise = rng.normal(size=(N, 60))
    a = classification_image(SPEC, c, noise, targets=[f"n{i}" for i in range(60)],
                             observer="voxel", progress=False)
    res = compare_many(a, b, trials=(SPEC, c, noise), n_permutations=99, n_splits=2,
                       seed=2)
    p = res.p_best
    assert p.min() >= 0.01 and p.max() <= 1
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert np.mean(p <= 0.1) < 0.25
    # not scored: their split-half r is what shuffled responses give
    assert res.scored.mean() < 0.2
    assert np.isnan(res.score[~res.scored]).all()
    assert res.info["r_half_floor"] > 0


def test_planted_targets_are_scored_with_small_p(session):
    c, drive, rng = session
    b = _units(c, drive)
    vox = np.column_stack([drive[:, 3] + 0.5 * rng.normal(size=N), rng.normal(size=N)])
    a = classification_image(SPEC, c, vox, targets=["hit", "null"], observer="voxel",
                             progress=False)
    res = compare_many(a, b, trials=(SPEC, c, vox), n_permutations=50, seed=1)
    assert res.best_names[0] == "L1:ch3" and res.scored[0]
    assert res.p_best[0] == pytest.approx(1 / 51)
    assert 0.8 < res.score[0] < 1.3
    assert res.ceiling[0] > 0.8


def test_voxel_store_input_and_nifti_maps(tmp_path, session):
    zarr = pytest.importorskip("zarr")
    nib = pytest.importorskip("nibabel")
    from analysis.fmri.study import create_store

    c, drive, rng = session
    vox = drive[:, [0, 4, 7, 2]] + 0.5 * rng.normal(size=(N, 4))
    a = classification_image(SPEC, c, vox, progress=False)
    ijk = np.array([[1, 2, 3], [0, 0, 0], [2, 2, 2], [3, 1, 0]])
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    path = create_store(tmp_path / "voxel_ci.zarr", 4, SPEC.shape, ijk=ijk,
                        attrs={"format": "bubbles.voxel_ci", "spec": SPEC.to_dict(),
                               "affine": affine, "volume_shape": [4, 3, 4],
                               "n_trials": N, "method": "regression",
                               "observer": "voxel"})
    zarr.open_array(str(path), mode="r+")[:] = a.z
    b = _units(c, drive)
    res = compare_many(tmp_path, b, chunk_size=3, fit_layers=True)   # the results folder
    mem = compare_many(_stack(a.z, ["1,2,3", "0,0,0", "2,2,2", "3,1,0"], SPEC), b)
    assert res.names_a == mem.names_a
    assert_allclose(res.r, mem.r, atol=1e-6)
    paths = write_layer_maps(res, tmp_path / "maps")
    names = sorted(p.name for p in paths)
    assert {"preferred_layer.nii.gz", "best_r.nii.gz",
            "score_over_ceiling.nii.gz", "preferred_layer_fit.nii.gz"} <= set(names)
    vol = nib.load(str(tmp_path / "maps" / "best_r.nii.gz"))
    assert_allclose(vol.affine, affine)
    data = np.asarray(vol.dataobj)
    assert_allclose(data[tuple(ijk.T)], res.best_r, atol=1e-6)
    assert data.sum() == pytest.approx(res.best_r.sum(), abs=1e-4)
    pref = np.asarray(nib.load(str(tmp_path / "maps" / "preferred_layer.nii.gz")).dataobj)
    assert list(pref[tuple(ijk.T)]) == list(res.preferred_layer + 1)
    # the ROI table: two regions
    tab = roi_table(res, np.array([1, 1, 2, 0]), {1: "front", 2: "back"})
    assert list(tab["region"]) == ["front", "back"]
    assert list(tab["n_targets"]) == [2, 1]
    assert tab.loc[1, "mean_r_L1"] == pytest.approx(res.layer_r[2, 1])


def test_results_tables_volumes_and_figures(session):
    c, drive, rng = session
    b = _units(c, drive)
    a = classification_image(SPEC, c, drive[:, :3] + rng.normal(size=(N, 3)),
                             targets=["x", "y", "z"], observer="roi", progress=False)
    res = compare_many(a, b)
    ctrl = compare_many(a, _units(c, rng.normal(size=drive.shape)))
    vols = layer_volumes(res, ctrl)
    assert_allclose(vols["best_r_over_control"], res.best_r - ctrl.best_r, atol=1e-6)
    assert set(vols) >= {"preferred_layer", "best_r", "score_over_ceiling",
                         "control_best_r"}
    tab = roi_table(res, control=ctrl)
    assert list(tab["region"]) == ["x", "y", "z"]
    assert (tab["mean_r_L0"] > tab["control_mean_r_L0"]).all()
    d = res.to_dict(top=2)
    assert d["n_a"] == 3 and len(d["top"]) == 2 and d["layers"] == ["L0", "L1"]
    fig = plot_layer_matrix(res.layer_r, res.names_a, res.layers, floor=ctrl.layer_r)
    assert len(fig.axes) == 2
    fig = plot_best_pairs(res, a, b, top=3)
    assert len([ax for ax in fig.axes if ax.images]) == 6
    stacked = load_stack([a, b], what="b")
    assert len(stacked) == 3 + 8 and stacked.names[:3] == ["x", "y", "z"]


def test_person_trial_table(tmp_path, session):
    from tests.conftest import write_session

    table = TrialTable.read(write_session(tmp_path, SPEC, 80, seed=3))
    resp = table.responses("correct")
    a = classification_image(SPEC, table.center_maps(), resp, progress=False,
                             observer="person")
    a.info["response"] = "correct"
    c, drive, _ = session
    b = _units(c, drive)
    res = compare_many(a, b, trials=table, n_splits=2)
    ref = compare(a, b, trials=table, n_splits=2, n_permutations=0)
    assert_allclose(res.r_half[0], ref.ceiling.r_half, atol=1e-6)


def test_bad_inputs_fail_by_name(tmp_path, session):
    c, drive, rng = session
    b = _units(c, drive)
    a = classification_image(SPEC, c, drive[:, :2], progress=False)
    with pytest.raises(TypeError, match="a must be a DiagnosticImage"):
        compare_many(np.zeros((2, 32, 32)), b)
    with pytest.raises(TypeError, match="b must be a DiagnosticImage"):
        compare_many(a, 3)
    with pytest.raises(ValueError, match="different aspect ratios"):
        compare_many(a, _stack(np.ones((1, 32, 16)), ["q"]))
    with pytest.raises(ValueError, match="ceiling must be one of"):
        compare_many(a, b, ceiling="foo")
    with pytest.raises(ValueError, match="n_permutations must be an integer >= 0"):
        compare_many(a, b, n_permutations=-1)
    with pytest.raises(ValueError, match="n_splits must be an integer >= 1"):
        compare_many(a, b, n_splits=0)
    with pytest.raises(ValueError, match="resolution must be an integer >= 8"):
        compare_many(a, b, resolution=4)
    with pytest.raises(ValueError, match=r"region must have the common grid's shape"):
        compare_many(a, b, region=np.ones((8, 8), bool))
    with pytest.raises(ValueError, match="reliability_p must be in"):
        compare_many(a, b, reliability_p=2)
    with pytest.raises(ValueError, match=r"responses must have shape \(n_trials, 2\)"):
        compare_many(a, b, trials=(SPEC, c, drive[:, :3]))
    with pytest.raises(ValueError, match="trials are of 16 x 16 images"):
        compare_many(a, b, trials=(SPEC.replace(shape=(16, 16)), c, drive[:, :2]))
    with pytest.raises(TypeError, match="trials must be a TrialTable"):
        compare_many(a, b, trials="session.csv")
    bad = np.array(a.z)
    bad[1, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"map a holds NaN .* first \['1'\]"):
        compare_many(_stack(bad, None), b)
    with pytest.raises(ValueError, match="every map of b is constant"):
        compare_many(a, _stack(np.ones((2, 32, 32)), ["u:0", "u:1"]))
    with pytest.raises(ValueError, match=r"names \['ch'\] more than once"):
        load_stack([_stack(np.ones((1, 32, 32)), ["ch"]), _stack(np.ones((1, 32, 32)),
                                                                  ["ch"])])
    with pytest.raises(FileNotFoundError, match="without a voxel_ci.zarr"):
        compare_many(a, tmp_path)
    with pytest.raises(ValueError, match="must come from a voxel store"):
        write_layer_maps(compare_many(a, b), tmp_path / "maps")


# -- the command, on a simulated fMRI study ---------------------------------------------
def test_command_on_a_simulated_study(tmp_path, capsys):
    """Eye voxels prefer the 'eyes' layer, mouth voxels the 'mouth' layer; the trials
    rebuilt from the results folder remake the stored voxel images."""
    nib = pytest.importorskip("nibabel")
    pytest.importorskip("nilearn")
    zarr = pytest.importorskip("zarr")
    import json as _json

    import pandas as pd

    from analysis.fmri.stimulus import stimulus_rois
    from analysis.fmri.simulate import simulate_study
    from commands.compare_many import main, store_trials
    from commands.fmri import main as fmri
    from tests.conftest import write_session

    spec = BubbleSpec(shape=(64, 64), sigma=4.0, n_bubbles=10)
    csv = write_session(tmp_path / "data", spec, 240, seed=11, counts=np.full(240, 10))
    side = csv.with_suffix(".json")
    meta = _json.loads(side.read_text())
    meta["config"]["stimuli"] = {"source": "faces", "n_identities": 4, "size": 64,
                                 "expressions": ["happy"]}
    side.write_text(_json.dumps(meta))
    table = TrialTable.read(csv)
    sim = simulate_study(table, tmp_path / "bids", n_runs=2, shape=(10, 12, 10), gain=1.2,
                         seed=3)
    res_dir = tmp_path / "res"
    assert fmri(["analyze", "--bids", str(tmp_path / "bids"), "--subject", "01", "--task",
                 "bubbles", "--out", str(res_dir), "--resolution", "32", "--no-figures",
                 "--quiet"]) == 0
    # B: two 'layers' whose units read the eyes and the mouth, at 64 x 64
    rois = stimulus_rois(table, (64, 64))
    from bubbles import render_masks

    masks = render_masks(spec, table.centers[0])
    feats = {k: masks[:, rois[k]].mean(axis=1) for k in ("eyes", "mouth")}
    rng = np.random.default_rng(0)
    units = np.column_stack([feats["eyes"], feats["eyes"] + 0.02 * rng.normal(size=240),
                             feats["mouth"], feats["mouth"] + 0.02 * rng.normal(size=240)])
    b = classification_image(spec, table.center_maps(), units, progress=False,
                             targets=["eyes:ch0", "eyes:ch1", "mouth:ch0", "mouth:ch1"],
                             observer="unit")
    b.save(tmp_path / "probe")
    labels = tmp_path / "labels.nii.gz"
    labels.write_bytes(sim.labels.read_bytes())
    pd.DataFrame({"index": [1, 2, 3], "name": ["frontal", "occipital", "visual"]}).to_csv(
        tmp_path / "labels.tsv", sep="\t", index=False)
    out = tmp_path / "cm"
    code = main([str(res_dir), str(tmp_path / "probe"), "--out", str(out), "--roi",
                 str(labels), "--n-splits", "2", "--quiet", "--control",
                 str(tmp_path / "probe")])
    assert code == 0, capsys.readouterr().err
    for name in ("compare_many.json", "targets.tsv", "regions.tsv", "r.npy",
                 "layer_scores.png", "gallery.png", "preferred_layer.nii.gz",
                 "best_r.nii.gz", "score_over_ceiling.nii.gz", "preferred_layer.png"):
        assert (out / name).is_file(), name
    regions = pd.read_csv(out / "regions.tsv", sep="\t").set_index("region")
    assert regions.loc["frontal", "preferred_layer"] == "eyes"
    assert regions.loc["occipital", "preferred_layer"] == "mouth"
    pref = np.asarray(nib.load(str(out / "preferred_layer.nii.gz")).dataobj)
    lab = np.asarray(nib.load(str(labels)).dataobj)
    assert np.mean(pref[lab == 1] == 1) > 0.7 and np.mean(pref[lab == 2] == 2) > 0.7
    targets = pd.read_csv(out / "targets.tsv", sep="\t")
    assert {"best", "best_r", "ceiling", "scored", "score_over_ceiling",
            "control_best_r"} <= set(targets.columns)
    # the rebuilt trials remake the stored images
    stack = load_stack(res_dir)
    spec32, maps, resp, _ = store_trials(stack)
    z = classification_image(spec32, maps, resp[:, :50], progress=False).z
    assert_allclose(z, zarr.open_group(str(res_dir / "voxel_ci.zarr"))["z"][:50],
                    atol=2e-3)
    # refused: outputs exist; usage errors
    assert main([str(res_dir), str(tmp_path / "probe"), "--out", str(out)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main([str(res_dir), str(tmp_path / "probe"), "--out", str(out),
                 "--top", "40"]) == 2
    assert main([str(tmp_path / "missing"), str(tmp_path / "probe"), "--out",
                 str(tmp_path / "x")]) == 1
    assert "missing" in capsys.readouterr().err
