"""GLM and sparse classification images: recovery, trials to r = 0.8, null error, inputs."""

import math
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import ndimage

pytest.importorskip("sklearn")          # the 'estimators' extra

from analysis import classification_image  # noqa: E402
from analysis import estimators  # noqa: E402
from analysis.diagnostic import DiagnosticImage  # noqa: E402
from analysis.estimators import coarse_grid, glm_image, smooth_basis  # noqa: E402
from analysis.simulate import NullObserver  # noqa: E402
from bubbles import BubbleSpec, center_maps, render_masks, sample_centers  # noqa: E402


def _corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _planted(spec, n, seed, *, box=(8, 14, 8, 14), snr=1.0, binary=True):
    """A linear observer of the revealed area in a box, with Gaussian noise.

    Returns centres, responses and the ground truth (the box smoothed with the bubble
    sigma, the scale the apertures sample).
    """
    c = sample_centers(spec, seed, n)
    w = np.zeros(spec.shape)
    y0, y1, x0, x1 = box
    w[y0:y1, x0:x1] = 1.0
    signal = (render_masks(spec, c) * w).sum(axis=(1, 2))
    rng = np.random.default_rng(seed + 1000)
    r = signal + rng.normal(0, signal.std() / snr, n)
    if binary:
        r = (r > np.median(r)).astype(float)
    return c, r, ndimage.gaussian_filter(w, spec.sigma, mode="constant")


@pytest.fixture
def spec32():
    return BubbleSpec(shape=(32, 32), sigma=2.5, n_bubbles=6)


# -- recovery ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["glm", "sparse"])
@pytest.mark.parametrize("binary", [True, False])
def test_recovers_a_planted_template(spec32, method, binary):
    c, r, truth = _planted(spec32, 800, 0, binary=binary)
    img = glm_image(spec32, c, r, method, resolution=16, null="none", progress=False)
    assert img.method == method and img.z.shape == (32, 32) and img.dims == ("y", "x")
    assert img.info["family"] == ("logistic" if binary else "linear")
    assert _corr(img.raw, truth) > 0.85
    assert _corr(img.z, truth) > 0.85
    # the peak lies inside the planted box, the far corner is not positive
    peak = np.unravel_index(np.argmax(img.raw), img.raw.shape)
    assert 7 <= peak[0] <= 14 and 7 <= peak[1] <= 14
    assert img.raw[28, 28] < 0.2 * img.raw.max()


def test_permutation_z_marks_the_planted_region_only(spec32):
    c, r, truth = _planted(spec32, 600, 3)
    img = glm_image(spec32, c, r, "sparse", resolution=16, n_permutations=39, seed=1,
                    progress=False)
    thr = img.info["fwe_threshold"]
    sig = img.z > thr
    assert img.info["n_significant"] == int(sig.sum()) > 0
    assert len(img.info["max_null"]) == 39
    assert truth[sig].min() > 0.2 * truth.max()         # only pixels near the box
    assert np.isfinite(img.z).all()


def test_ridge_path_at_a_huge_penalty_gives_the_regression_image(spec32):
    # lambda -> infinity: ridge weights -> X'y / (n lambda), the reverse-correlation
    # image of the cells (Knoblauch & Maloney 2008); with one bubble per trial it
    # matches the regression image area-averaged to the same cells
    spec = BubbleSpec(shape=(32, 32), sigma=2.5, n_bubbles=1)
    c, r, _ = _planted(spec, 1500, 2, binary=False)
    img = glm_image(spec, c, r, "glm", resolution=32, penalties=[1e6], null="none",
                    progress=False)
    reg = classification_image(spec, c, r, keep_raw=True, progress=False)
    assert _corr(img.raw, reg.raw) > 0.99


# -- trials to r = 0.8 -----------------------------------------------------------------
def _trials_to(ns, rs, target=0.8):
    for k, r in enumerate(rs):
        if r >= target:
            if k == 0:
                return ns[0]
            f = (target - rs[k - 1]) / (r - rs[k - 1])
            return math.exp(math.log(ns[k - 1]) + f * math.log(ns[k] / ns[k - 1]))
    return math.inf


def test_sparse_needs_fewer_trials_than_regression_for_a_small_region():
    spec = BubbleSpec(shape=(32, 32), sigma=2.0, n_bubbles=8)
    grid = (50, 100, 200, 400, 800, 1600)
    need = {"regression": [], "sparse": []}
    for seed in range(3):
        c, r, truth = _planted(spec, max(grid), seed, box=(20, 24, 6, 10), snr=0.7)
        curves = {"regression": [], "sparse": []}
        for n in grid:
            curves["regression"].append(_corr(classification_image(
                spec, c[:n], r[:n], progress=False).z, truth))
            curves["sparse"].append(_corr(glm_image(
                spec, c[:n], r[:n], "sparse", resolution=16, null="none",
                progress=False).raw, truth))
        for k in need:
            need[k].append(_trials_to(grid, curves[k]))
    reg, sparse = np.median(need["regression"]), np.median(need["sparse"])
    assert np.isfinite(reg) and np.isfinite(sparse)
    print("trials to r = 0.8:", need)
    assert sparse < 0.6 * reg, need


# -- family-wise error under a null observer ----------------------------------------------
@pytest.mark.parametrize("method", ["glm", "sparse"])
def test_family_wise_error_under_a_null_observer(method):
    spec = BubbleSpec(shape=(24, 24), sigma=2.0, n_bubbles=5)
    hits, repeats = 0, 20
    for k in range(repeats):
        c = sample_centers(spec, 100 + k, 240)
        truth = np.random.default_rng([k, 1]).integers(2, size=240)
        said = NullObserver([0, 1], seed=k).decide_batch(np.zeros((240, 1, 1)))
        correct = (np.array(said) == truth).astype(float)
        img = glm_image(spec, c, correct, method, resolution=8, n_permutations=19,
                        seed=k, progress=False)
        hits += img.info["n_significant"] > 0
    # 5 % nominal: P(>= 5 of 20 | p = .05) = 0.003
    print(f"{method}: {hits} of {repeats} null sessions with a significant pixel")
    assert hits <= 4, hits


# -- many targets, bands, inputs ---------------------------------------------------------
def test_many_targets_match_one_at_a_time(spec32):
    c, r1, _ = _planted(spec32, 400, 5, binary=False)
    _, r2, _ = _planted(spec32, 400, 6, box=(20, 26, 18, 24), binary=False)
    rr = np.column_stack([r1, r2, np.full(400, 2.0)])
    with pytest.warns(UserWarning, match="constant"):
        many = glm_image(spec32, c, rr, "glm", resolution=8, n_permutations=19,
                         targets=["v1", "v2", "flat"], observer="voxel", chunk_size=2,
                         progress=False)
    assert many.dims == ("target", "y", "x") and many.targets == ["v1", "v2", "flat"]
    assert many.observer == "voxel" and many.z.shape == (3, 32, 32)
    alone = glm_image(spec32, c, r2, "glm", resolution=8, null="none", progress=False)
    assert_allclose(many.raw[1], alone.raw, rtol=1e-4, atol=1e-6)
    assert many.info["penalty"][1] == alone.info["penalty"]
    assert np.all(many.z[2] == 0) and many.info["constant_targets"] == [2]


def test_warns_above_many_targets(spec32, monkeypatch):
    monkeypatch.setattr(estimators, "MANY_TARGETS", 2)
    c, r, _ = _planted(spec32, 200, 1, binary=False)
    rr = np.column_stack([r, r[::-1], np.roll(r, 7)])
    with pytest.warns(UserWarning, match="grows linearly.*regression"):
        glm_image(spec32, c, rr, "glm", resolution=4, null="none", progress=False)


def test_multiscale_spec_gets_one_block_per_band():
    spec = BubbleSpec(shape=(32, 32), sigma=2.0, n_bubbles=(6, 2), bands=2)
    c = sample_centers(spec, 0, 500)
    masks = render_masks(spec, c)                       # (n, 2, H, W)
    r = (masks[:, 1, 16:24, 16:24].mean(axis=(1, 2))
         + np.random.default_rng(0).normal(0, 0.05, 500) > 0.15).astype(float)
    img = glm_image(spec, c, r, "sparse", resolution=8, null="none", progress=False)
    assert img.dims == ("band", "y", "x") and img.z.shape == (2, 32, 32)
    # the coarse band carries the effect, the fine one does not
    assert np.abs(img.raw[1]).max() > 3 * np.abs(img.raw[0]).max()


def test_centre_maps_equal_centre_arrays_and_results_are_seeded(spec32):
    c, r, _ = _planted(spec32, 300, 4)
    a = glm_image(spec32, c, r, "glm", resolution=8, n_permutations=19, seed=3,
                  progress=False)
    b = glm_image(spec32, center_maps(spec32, c), r, "glm", resolution=8,
                  n_permutations=19, seed=3, progress=False)
    assert_allclose(a.z, b.z, atol=1e-6)
    assert a.info["fwe_threshold"] == b.info["fwe_threshold"]


def test_saves_and_loads(spec32, tmp_path):
    c, r, _ = _planted(spec32, 300, 4)
    img = glm_image(spec32, c, r, "sparse", resolution=8, n_permutations=19,
                    progress=False)
    img.save(tmp_path / "m")
    back = DiagnosticImage.load(tmp_path / "m")
    assert back.method == "sparse" and back.info["fwe_threshold"] == pytest.approx(
        img.info["fwe_threshold"])
    assert_allclose(back.z, img.z)


def test_smooth_basis_and_grid():
    b = smooth_basis((16, 12), scales=(1, 2, 4))
    assert b.shape == (16 * 12, 16 * 12 + 8 * 6 + 4 * 3)
    # scale 1: a bump centred on every cell (peak 1); coarser lattices are centred on
    # the grid, so their centres may fall between cells
    assert_allclose(b[:, :16 * 12].max(axis=0), 1.0, atol=1e-12)
    assert b.max(axis=0).min() > 0.75
    assert coarse_grid((256, 256)) == (32, 32)
    assert coarse_grid((48, 64), 16) == (12, 16)
    # a coarse bump is smooth: neighbouring cells differ little
    img = b[:, -1].reshape(16, 12)
    assert np.abs(np.diff(img, axis=0)).max() < 0.2


# -- bad inputs ------------------------------------------------------------------------
def test_bad_inputs_fail_by_name(spec32):
    c, r, _ = _planted(spec32, 100, 0)
    def call(**kw):
        return glm_image(spec32, c, kw.pop("r", r), kw.pop("method", "sparse"),
                         progress=False, **kw)

    with pytest.raises(ValueError, match="penalties must hold at least one"):
        call(penalties=[])
    with pytest.raises(ValueError, match="penalties must be finite numbers > 0"):
        call(penalties=[0.1, -1])
    with pytest.raises(ValueError, match="'method' must be one of \\['glm', 'sparse'\\]"):
        call(method="lasso")
    bad = r.copy()
    bad[7] = np.nan
    with pytest.raises(ValueError, match="responses must be finite.*trial\\(s\\) \\[7\\]"):
        call(r=bad)
    with pytest.raises(ValueError, match="resolution must be an integer in \\[4, 32\\].*"
                                         "got 64"):
        call(resolution=64)
    with pytest.raises(ValueError, match="resolution must be an integer in \\[4, 32\\]"):
        call(resolution=2)
    with pytest.raises(ValueError, match="family 'logistic' needs binary responses"):
        call(r=r + 0.5, family="logistic")
    with pytest.raises(ValueError, match="'family' must be one of"):
        call(family="poisson")
    with pytest.raises(ValueError, match="n_permutations must be an integer >= 19"):
        call(n_permutations=5)
    with pytest.raises(ValueError, match="cv must be an integer >= 2"):
        call(cv=1)
    with pytest.raises(ValueError, match="basis_scales applies to method 'sparse' only"):
        call(method="glm", basis_scales=(1, 2))
    with pytest.raises(ValueError, match="basis_scales must be one or more bump SDs"):
        call(basis_scales=(0,))
    with pytest.raises(ValueError, match="responses are constant"):
        call(r=np.ones(100))
    with pytest.raises(ValueError, match="at least cv=5 trials of each response"):
        call(r=(np.arange(100) < 3).astype(float))
    with pytest.raises(ValueError, match="'null' must be one of"):
        call(null="analytic")
    with pytest.raises(TypeError, match="spec must be a bubbles.BubbleSpec"):
        glm_image("spec", c, r, progress=False)


def test_no_solver_warning_leaks(spec32):
    c, r, _ = _planted(spec32, 300, 8, binary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        glm_image(spec32, c, r, "sparse", resolution=8, n_permutations=19,
                  progress=False)
