"""Classification images: formulas, null calibration, shapes, many targets, errors."""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import ndimage

from analysis import DiagnosticImage, classification_image, group_image
from bubbles import BubbleSpec, center_maps, render_masks, sample_centers


def _gauss_kernel(sigma, radius):
    x = np.arange(-radius, radius + 1)
    k = np.exp(-x * x / (2 * sigma * sigma))
    return k / k.sum()


def test_ztranssci_two_response_formula(rng):
    # REFERENCES section 2: rho = (cCi/nc - iCi/ni) nc ni / n,
    # Z = sqrt(n) rho / sqrt(n sx^2 sum f^2) / sqrt(nc ni / n)   (interior pixels)
    spec = BubbleSpec(shape=(48, 48), sigma=2.5, n_bubbles=6)
    c = sample_centers(spec, 3, 600)
    correct = rng.random(600) < 0.7
    ci = classification_image(spec, c, correct, progress=False)
    x = center_maps(spec, c).toarray().reshape(600, 48, 48)
    sm = ndimage.gaussian_filter(x, (0, 2.5, 2.5), mode="constant", truncate=8)
    n, nc = 600, int(correct.sum())
    ni = n - nc
    rho = (sm[correct].sum(0) / nc - sm[~correct].sum(0) / ni) * nc * ni / n
    p = 6 / (48 * 48)
    k1 = _gauss_kernel(2.5, 20)
    sumf2 = (k1 ** 2).sum() ** 2
    z = np.sqrt(n) * rho / np.sqrt(n * p * (1 - p) * sumf2) / np.sqrt(nc * ni / n)
    inner = (slice(20, 28), slice(20, 28))
    # ours adds the finite-population term of exactly k centres per trial:
    # Var = p(1-p) N/(N-1) (sum f^2 - (sum f)^2 / N); the rest is the same formula
    big_n = 48 * 48
    sumf = k1.sum() ** 2
    factor = np.sqrt(sumf2 / (big_n / (big_n - 1) * (sumf2 - sumf ** 2 / big_n)))
    assert 1.01 < factor < 1.03
    assert_allclose(ci.z[inner], z[inner] * factor, atol=2e-3)


def test_regression_raw_equals_sum_of_masks():
    # one bubble per trial: no overlap, so the mask is exactly the aperture
    spec = BubbleSpec(shape=(24, 28), sigma=2.0, n_bubbles=1)
    c = sample_centers(spec, 0, 300)
    r = np.random.default_rng(1).normal(size=300)
    ci = classification_image(spec, c, r, keep_raw=True, progress=False)
    w = (r - r.mean()) / r.std()
    expected = np.tensordot(w, render_masks(spec, c), axes=1)
    assert_allclose(ci.raw, expected, atol=1e-4)


def test_median_split_raw_is_mean_mask_difference():
    spec = BubbleSpec(shape=(24, 24), sigma=2.0, n_bubbles=1)
    c = sample_centers(spec, 5, 201)
    r = np.random.default_rng(2).normal(size=201)
    ci = classification_image(spec, c, r, method="median_split", keep_raw=True,
                              progress=False)
    m = render_masks(spec, c)
    high = r > np.median(r)
    assert_allclose(ci.raw, m[high].mean(0) - m[~high].mean(0), atol=1e-5)
    # binary responses: the split is correct vs incorrect
    b = (r > 0.5).astype(float)
    ci_b = classification_image(spec, c, b, method="median_split", keep_raw=True,
                                progress=False)
    assert_allclose(ci_b.raw, m[b == 1].mean(0) - m[b == 0].mean(0), atol=1e-5)


def test_analytic_z_is_standard_normal_under_the_null_including_edges(rng):
    spec = BubbleSpec(shape=(40, 40), sigma=2.0, n_bubbles=8)
    c = sample_centers(spec, 1, 1500)
    z = classification_image(spec, c, rng.normal(size=(1500, 300)), progress=False).z
    assert z.shape == (300, 40, 40)
    assert_allclose(z.mean(), 0, atol=0.02)
    assert_allclose(z.std(), 1, atol=0.03)
    # zero padding does not darken the edge: the border rows have unit variance too
    assert_allclose(z[:, 0, :].std(), 1, atol=0.05)
    assert_allclose(z[:, :, -1].std(), 1, atol=0.05)


def test_permutation_null_agrees_with_analytic(small_spec, rng):
    # The permutation SD conditions on the realised centres, the analytic one uses
    # their expectation p(1 - p): they agree when centres per kernel area are many.
    centers = sample_centers(small_spec, 7, 3000)
    r = rng.normal(size=3000) + 0.5 * (np.abs(centers[:, :, 0] - 16) < 4).any(1)
    analytic = classification_image(small_spec, centers, r, progress=False)
    perm = classification_image(small_spec, centers, r, null="permutation",
                                n_permutations=1000, seed=3, progress=False)
    assert perm.info["n_permutations"] == 1000
    assert np.corrcoef(analytic.z.ravel(), perm.z.ravel())[0, 1] > 0.995
    assert_allclose(perm.z, analytic.z, atol=0.1, rtol=0.06)
    assert analytic.z.max() > 4
    assert_allclose(np.abs(perm.z).mean(), np.abs(analytic.z).mean(), rtol=0.05)


def test_varying_bubble_count_is_not_a_signal(rng):
    # QUEST: response tied to the number of bubbles only -> no spatial signal
    spec = BubbleSpec(shape=(32, 32), sigma=3.0, n_bubbles=5)
    counts = rng.integers(2, 15, size=800)
    cents = [sample_centers(spec.replace(n_bubbles=int(k)), 4, [t])[0]
             for t, k in enumerate(counts)]
    correct = (rng.random(800) < counts / 15).astype(float)
    z = classification_image(spec, cents, correct, progress=False).z
    assert abs(z.mean()) < 0.25
    # the ragged list and its centre maps give the same image
    z2 = classification_image(spec, center_maps(spec, cents), correct, progress=False).z
    assert_allclose(z, z2, atol=1e-6)


def test_many_targets_match_single_calls_and_chunking(small_spec, small_centers, rng):
    r = rng.normal(size=(400, 7))
    many = classification_image(small_spec, small_centers, r, chunk_size=3,
                                targets=[f"u{i}" for i in range(7)], progress=False)
    assert many.z.shape == (7, 32, 32) and many.targets[2] == "u2"
    assert many.dims == ("target", "y", "x") and many.n_targets == 7
    for j in (0, 4, 6):
        one = classification_image(small_spec, small_centers, r[:, j], progress=False)
        assert_allclose(many.z[j], one.z, atol=1e-5)
    for method in ("median_split", "proportion"):
        rr = (r > 0).astype(float)
        a = classification_image(small_spec, small_centers, rr, method=method,
                                 chunk_size=2, progress=False)
        b = classification_image(small_spec, small_centers, rr[:, 5], method=method,
                                 progress=False)
        assert_allclose(a.z[5], b.z, atol=1e-5)


def test_multiscale_gives_one_map_per_band(rng):
    spec = BubbleSpec(shape=(32, 32), sigma=1.5, n_bubbles=12, bands=3)
    c = sample_centers(spec, 2, 200)
    ci = classification_image(spec, c, rng.normal(size=200), progress=False)
    assert ci.z.shape == (3, 32, 32)
    assert ci.info["sigmas"] == [1.5, 3.0, 6.0]
    many = classification_image(spec, c, rng.normal(size=(200, 4)), progress=False)
    assert many.z.shape == (4, 3, 32, 32)


def test_band_without_bubbles_warns(rng):
    # the 2001 design with 60 bubbles puts none in the coarsest band: (45, 11, 3, 1, 0)
    spec = BubbleSpec(shape=(32, 32), sigma=1.0, n_bubbles=60, bands=5)
    assert spec.n_per_band[-1] == 0
    c = sample_centers(spec, 0, 50)
    with pytest.warns(UserWarning, match=r"band 5 of 5 \(sigma 16 px\) has no bubbles"):
        ci = classification_image(spec, c, rng.normal(size=50), progress=False)
    assert np.all(ci.z[4] == 0) and np.abs(ci.z[0]).max() > 0
    from analysis.figures import plot_diagnostic_image
    titles = [a.get_title() for a in plot_diagnostic_image(ci).axes[:5]]
    assert titles[4] == "band 5 (sigma 16 px), no bubbles"
    assert not any("no bubbles" in t for t in titles[:4])


def test_occlude_polarity_flips_sign(small_centers, rng):
    r = rng.normal(size=400)
    reveal = BubbleSpec(shape=(32, 32), sigma=3.0, n_bubbles=5)
    occlude = reveal.replace(polarity="occlude")
    a = classification_image(reveal, small_centers, r, progress=False).z
    b = classification_image(occlude, small_centers, r, progress=False).z
    assert_allclose(a, -b, atol=1e-6)


def test_proportion_plane(small_spec, small_centers, rng):
    correct = rng.random(400) < 0.6
    ci = classification_image(small_spec, small_centers, correct, method="proportion",
                              progress=False)
    assert np.nanmin(ci.raw) >= 0 and np.nanmax(ci.raw) <= 1
    assert_allclose(ci.z.mean(), 0, atol=1e-4)
    assert_allclose(ci.z.std(ddof=1), 1, atol=1e-3)
    with pytest.raises(ValueError, match="needs binary responses"):
        classification_image(small_spec, small_centers, rng.normal(size=400),
                             method="proportion")


def test_input_errors(small_spec, small_centers):
    r = np.ones(400)
    r[0] = 0
    with pytest.raises(ValueError, match="'method' must be one of"):
        classification_image(small_spec, small_centers, r, method="mean")
    with pytest.raises(ValueError, match="'null' must be one of"):
        classification_image(small_spec, small_centers, r, null="bootstrap")
    with pytest.raises(ValueError, match="responses has 399 trials but centers have 400"):
        classification_image(small_spec, small_centers, r[:-1])
    bad = r.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match=r"responses must be finite.*\[3\]"):
        classification_image(small_spec, small_centers, bad)
    with pytest.raises(ValueError, match="responses must be numeric"):
        classification_image(small_spec, small_centers, np.array(["a"] * 400))
    with pytest.raises(ValueError, match=r"responses are constant \(every trial is 1\)"
                       ".*all-correct session"):
        classification_image(small_spec, small_centers, np.ones(400))
    with pytest.raises(ValueError, match="null='permutation' needs 1-D responses"):
        classification_image(small_spec, small_centers, np.c_[r, 1 - r],
                             null="permutation")
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        classification_image(small_spec, small_centers, r, chunk_size=0)
    with pytest.raises(ValueError, match="n_permutations must be an integer >= 2"):
        classification_image(small_spec, small_centers, r, null="permutation",
                             n_permutations=0)
    with pytest.raises(ValueError, match="targets must name every response column"):
        classification_image(small_spec, small_centers, np.c_[r, 1 - r], targets=["a"])
    with pytest.raises(TypeError, match="spec must be a bubbles.BubbleSpec"):
        classification_image({"shape": (32, 32)}, small_centers, r)
    with pytest.warns(UserWarning, match="constant"):
        ci = classification_image(small_spec, small_centers, np.c_[r, np.ones(400)],
                                  progress=False)
    assert np.all(ci.z[1] == 0) and ci.info["constant_targets"] == [1]


def test_group_image_stouffer(small_spec):
    a = DiagnosticImage(np.full((4, 4), 2.0), "regression", small_spec, 100)
    b = DiagnosticImage(np.full((4, 4), 1.0), "regression", small_spec, 50)
    g = group_image([a, b])
    assert_allclose(g.z, 3 / np.sqrt(2), atol=1e-12)
    assert g.observer_maps.shape == (2, 4, 4) and g.n_trials == 150
    gw = group_image([a, b], weights=[2, 1])
    assert_allclose(gw.z, 5 / np.sqrt(5), atol=1e-12)
    with pytest.raises(ValueError, match="images\\[1\\].z has shape"):
        group_image([a, DiagnosticImage(np.zeros((3, 3)), "regression", None, 1)])
    with pytest.raises(ValueError, match="at least one"):
        group_image([])


def test_preallocated_output_and_band_access(small_spec, small_centers, rng, tmp_path):
    r = rng.normal(size=(400, 5)).astype(np.float32)
    ref = classification_image(small_spec, small_centers, r, progress=False)
    out = np.lib.format.open_memmap(tmp_path / "z.npy", mode="w+", dtype=np.float32,
                                    shape=(5, 1, 32, 32))
    ci = classification_image(small_spec, small_centers, r, out=out, chunk_size=2,
                              progress=False)
    assert ci.z is out
    assert_allclose(out[:, 0], ref.z, atol=1e-6)
    assert_allclose(ref.band(0, target=3), ref.z[3], atol=0)
    with pytest.raises(ValueError, match="target must be given"):
        ref.band(0)


def test_import_stays_light():
    import subprocess
    import sys
    code = ("import sys, analysis; bad = [m for m in ('torch', 'psychopy', 'matplotlib') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("aperture", ["square", "gaussian"])
def test_raw_matches_masks_for_each_aperture(aperture):
    # square apertures use the (full-rank) box kernel, Gaussians the low-rank factors
    spec = BubbleSpec(shape=(20, 36), sigma=1.5, n_bubbles=1, aperture=aperture)
    c = sample_centers(spec, 9, 150)
    r = np.random.default_rng(3).normal(size=150)
    ci = classification_image(spec, c, r, keep_raw=True, progress=False)
    w = (r - r.mean()) / r.std()
    assert_allclose(ci.raw, np.tensordot(w, render_masks(spec, c), axes=1), atol=1e-4)
    assert ci.info["kernel"] == aperture


# -- review findings: out= in every path, one _Band per band, one permutation helper ----
def test_out_is_written_with_the_permutation_null_and_keeps_raw(small_spec, small_centers,
                                                               rng):
    r = rng.normal(size=400)
    ref = classification_image(small_spec, small_centers, r, null="permutation",
                               n_permutations=20, seed=3, keep_raw=True, progress=False)
    out = np.full((1, 1, 32, 32), np.nan, np.float32)
    ci = classification_image(small_spec, small_centers, r, null="permutation",
                              n_permutations=20, seed=3, keep_raw=True, out=out,
                              progress=False)
    assert ci.z is out and np.isfinite(out).all()
    assert_allclose(out[0, 0], ref.z, atol=1e-5)
    assert ci.raw is not None and ci.raw.shape == (1, 1, 32, 32)
    assert_allclose(ci.raw[0, 0], ref.raw, atol=1e-5)
    # keep_raw and 'proportion' keep raw with out= on the analytic path too
    out = np.empty((1, 1, 32, 32), np.float32)
    ci = classification_image(small_spec, small_centers, r, keep_raw=True, out=out,
                              progress=False)
    assert ci.raw is not None
    assert_allclose(ci.raw[0, 0], classification_image(
        small_spec, small_centers, r, keep_raw=True, progress=False).raw, atol=1e-5)
    correct = (r > 0).astype(float)
    out = np.empty((1, 1, 32, 32), np.float32)
    ci = classification_image(small_spec, small_centers, correct, method="proportion",
                              out=out, progress=False)
    prop = classification_image(small_spec, small_centers, correct, method="proportion",
                                progress=False)
    assert_allclose(out[0, 0], prop.z, atol=1e-5)
    assert_allclose(ci.raw[0, 0], prop.raw, atol=1e-6, equal_nan=True)


def test_permutation_null_standardises_by_the_shuffled_maps(small_spec, small_centers,
                                                             rng):
    """null='permutation' is (z - mean) / sd over the maps of the same shuffles, which a
    many-target call on the shuffled responses gives explicitly."""
    r = rng.normal(size=400)
    got = classification_image(small_spec, small_centers, r, null="permutation",
                               n_permutations=50, seed=3, progress=False)
    shuffle = np.random.default_rng(3)
    perms = np.stack([shuffle.permutation(r) for _ in range(50)], axis=1)
    shuffled = classification_image(small_spec, small_centers, perms, progress=False).z
    observed = classification_image(small_spec, small_centers, r, progress=False).z
    expect = (observed - shuffled.mean(axis=0)) / shuffled.std(axis=0, ddof=1)
    assert_allclose(got.z, expect, atol=2e-3, rtol=1e-3)


def test_permutations_follow_the_seed_everywhere(small_spec, small_centers, rng):
    """An int seed and the Generator it makes give the same null in every function
    that shuffles; another seed gives another."""
    from analysis.compare import permutation_null
    from analysis.permutation import permutation_test

    r = rng.normal(size=400)
    maps = np.zeros((1, 32, 32)) + np.eye(32)
    for run in (lambda s: classification_image(small_spec, small_centers, r,
                                               null="permutation", n_permutations=7,
                                               seed=s, progress=False).z,
                lambda s: permutation_test(small_spec, small_centers, r,
                                           n_permutations=19, seed=s,
                                           progress=False).pixel_threshold,
                lambda s: permutation_null(small_spec, small_centers, r, maps,
                                           n_permutations=5, seed=s)):
        assert_allclose(run(11), run(np.random.default_rng(11)))
        assert not np.allclose(run(11), run(12))
