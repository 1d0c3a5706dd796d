import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from analysis import DiagnosticImage, classification_image
from analysis.compare import (compare, comparison_panels, correlate, noise_ceiling,
                              spearman_brown)
from analysis.diagnostic import load_image
from analysis.figures import plot_comparison
from bubbles import sample_centers
from tests.planted import SPEC, planted_map, region_observer



def _r(a, b, **kw):
    return float(correlate(a, b, **kw).pearson[0])


def test_correlate_known_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 20))
    c = correlate(a, 3 * a - 1)
    assert c.pearson.shape == (1,)
    assert_allclose([c.pearson[0], c.spearman[0]], [1, 1], atol=1e-12)
    assert_allclose(correlate(a, -a).pearson, [-1], atol=1e-12)
    c = correlate(a, np.exp(a))          # monotone: Spearman 1, Pearson < 1
    assert c.spearman[0] == pytest.approx(1.0) and c.pearson[0] < 0.99
    stack = np.stack([a, -a, rng.normal(size=(20, 20))])
    c = correlate(a, stack)
    assert c.pearson.shape == (3,)
    assert_allclose(c.pearson[:2], [1, -1])
    region = np.zeros((20, 20), bool)
    region[:10] = True
    b = a.copy()
    b[10:] = rng.normal(size=(10, 20))
    assert _r(a, b, region=region) == pytest.approx(1.0)
    # smoothing alike: both maps get the same filter
    assert _r(a, a, smoothing=2.0) == pytest.approx(1.0)
    assert _r(a, b, smoothing=2.0) != _r(a, b)
    with pytest.raises(ValueError, match="b must have the shape of a"):
        correlate(a, np.zeros((5, 5)))
    with pytest.raises(ValueError, match="smoothing must be a Gaussian SD >= 0"):
        correlate(a, a, smoothing=-1)


@pytest.mark.parametrize("make", [
    lambda a: np.where(np.arange(a.size).reshape(a.shape) == 7, np.nan, a),   # one pixel
    lambda a: np.full_like(a, np.nan),                                       # all NaN
    lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0, np.inf, a),
])
def test_nan_maps_are_refused_not_scored(make):
    a = np.random.default_rng(0).normal(size=(16, 16))
    with pytest.raises(ValueError, match="map b holds NaN or infinite values"):
        correlate(a, make(a))
    with pytest.raises(ValueError, match="map a holds NaN or infinite values"):
        correlate(make(a), a)
    with pytest.raises(ValueError, match="NaN or infinite"):
        compare(a, make(a), n_permutations=0)


def test_constant_maps_have_no_correlation():
    a = np.random.default_rng(0).normal(size=(16, 16))
    with pytest.raises(ValueError, match="map a is constant"):
        correlate(np.ones((16, 16)), a)
    assert np.isnan(correlate(a, np.ones((16, 16))).pearson[0])
    with pytest.raises(ValueError, match="every map of b is constant"):
        compare(a, np.zeros((16, 16)), n_permutations=0)
    units = DiagnosticImage(np.stack([np.zeros((16, 16)), a]), "regression", None, 0,
                            dims=("target", "y", "x"), targets=["dead", "alive"])
    with pytest.warns(UserWarning, match="1 map.* of b are constant"):
        res = compare(a, units, n_permutations=0)
    assert res.best_name == "alive" and np.isnan(res.pearson[0])
    assert res.info["constant_targets"] == ["dead"]


def test_spearman_brown():
    assert spearman_brown(0.5) == pytest.approx(2 / 3)
    assert spearman_brown(1.0) == 1.0


def test_noise_ceiling_grows_with_trials():
    c, r = region_observer(1200)
    big = noise_ceiling(SPEC, c, r, n_splits=4, seed=0)
    small = noise_ceiling(SPEC, c[:150], r[:150], n_splits=4, seed=0)
    assert big.r_sb == pytest.approx(spearman_brown(big.r_half))
    assert big.r_sb > small.r_sb and big.r_sb > 0.6
    assert big.sqrt_r_sb == pytest.approx(np.sqrt(big.r_sb)) and big.n_splits == 4
    with pytest.raises(ValueError, match="at least 4 trials"):
        noise_ceiling(SPEC, c[:3], r[:3])


def test_compare_scores_true_model_above_random():
    c, r = region_observer(800)
    human = classification_image(SPEC, c, r, progress=False)
    rng = np.random.default_rng(1)
    units = np.stack([rng.normal(size=(32, 32)), planted_map(), -planted_map()])
    model = DiagnosticImage(units, "regression", SPEC, 800, dims=("target", "y", "x"),
                            targets=["noise", "good", "bad"], observer="unit")
    res = compare(human, model, trials=(SPEC, c, r), n_permutations=99, n_splits=4)
    assert res.best_name == "good" and res.pearson[1] > 0.7
    assert res.p_value == pytest.approx(0.01)          # 1 / (1 + 99): beats every shuffle
    assert res.p_values[2] > 0.5
    assert res.ceiling_kind == "sqrt"
    assert res.score == pytest.approx(res.pearson[1] / np.sqrt(res.ceiling.r_sb))
    res2 = compare(human, model, trials=(SPEC, c, r), n_permutations=0, n_splits=4,
                   ceiling="r_sb")
    assert res2.score == pytest.approx(res2.pearson[1] / res2.ceiling.r_sb)
    assert res2.p_value is None
    with pytest.raises(ValueError, match="ceiling must be one of"):
        compare(human, model, ceiling="max")
    with pytest.raises(ValueError, match="n_permutations must be an integer >= 0"):
        compare(human, model, trials=(SPEC, c, r), n_permutations=-5)
    d = res.to_dict()
    assert d["best"] == "good" and len(d["targets"]) == 3
    assert d["ceiling"]["kind"] == "sqrt" and d["ceiling"]["value"] == res.ceiling_value
    json.dumps(d)


def test_trials_of_another_session_are_refused():
    c, r = region_observer(300)
    human = classification_image(SPEC, c, r, progress=False)
    with pytest.raises(ValueError, match="made from 300 trials but the trials given "
                                         "hold 200"):
        compare(human, planted_map(), trials=(SPEC, c[:200], r[:200]))
    big = SPEC.replace(shape=(64, 64))
    c2 = sample_centers(big, 1, 300)
    with pytest.raises(ValueError, match="trials are of 64 x 64 images but a is 32 x 32"):
        compare(human, planted_map(), trials=(big, c2, r))


def test_compare_without_trials_and_resampling():
    a = planted_map()
    b = planted_map()[::2, ::2]               # a coarser grid (e.g. a network's)
    with pytest.warns(UserWarning, match="b's maps are 16 x 16 pixels, a's 32 x 32: b was "
                                         "resampled"):
        res = compare(a, b)
    assert res.ceiling is None and res.p_value is None
    assert res.pearson[0] > 0.95 and "resampled_b" in res.info
    with pytest.raises(ValueError, match="a must hold one map"):
        compare(DiagnosticImage(np.zeros((2, 32, 32)), "regression", SPEC, 1,
                                dims=("target", "y", "x")), a)
    with pytest.raises(TypeError, match="must be a DiagnosticImage .* or one \\(H, W\\) "
                                        "array"):
        compare(np.zeros((2, 32, 32)), a)


def test_figure(tmp_path):
    m = planted_map()
    panels = {"human": m, "model observer": m, "best unit": -m, "occlusion": m,
              "saliency": np.abs(m), "integrated gradients": m}
    fig = plot_comparison(panels, background=np.full((32, 32), 0.5),
                          titles={"best unit": "r=-1.00"})
    assert len(fig.axes) == 6
    assert fig.axes[2].get_title() == "best unit\nr=-1.00"
    with pytest.raises(ValueError, match="panels"):
        plot_comparison({})


def test_figure_draws_a_multiband_panel_as_its_band_sum():
    bands = np.random.default_rng(0).normal(size=(2, 8, 8))
    fig = plot_comparison({"human": np.zeros((8, 8)), "saliency": bands},
                          background=np.full((8, 8), 0.5))
    drawn = fig.axes[1].images[-1].get_array()          # the map, over the background
    assert_allclose(drawn, bands.sum(axis=0))
    assert len(fig.axes[1].images) == 2


def test_no_torch_import():
    code = "import sys, analysis.compare; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=root)
    assert out.stdout.strip() == "False"


def test_score_far_above_ceiling_warns(monkeypatch):
    """A model can only exceed sqrt(r_sb) by chance: far above it, the ceiling is noise."""
    import analysis.compare as cmp

    c, r = region_observer(200)
    human = classification_image(SPEC, c, r, progress=False)
    monkeypatch.setattr(cmp, "noise_ceiling", lambda *a, **k: cmp.NoiseCeiling(
        0.01, 0.02, 0.02 ** 0.5, [0.01]))
    with pytest.warns(UserWarning, match="ceiling of a .* too noisy"):
        res = compare(human, planted_map(), trials=(SPEC, c, r), n_permutations=0)
    assert res.score > 1.25


def test_figure_keeps_the_reference_first_then_the_seed_order():
    m = np.zeros((8, 8))
    fig = plot_comparison({"person (simulated)": m, "integrated gradients": m, "saliency": m,
                  "model observer": m, "best unit": m})
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["person (simulated)", "model observer", "best unit", "saliency",
                      "integrated gradients"]


# -- damaged files ---------------------------------------------------------------------
def test_load_image_rejects_a_damaged_json(tmp_path):
    DiagnosticImage(planted_map(), "regression", SPEC, 10).save(tmp_path / "ci")
    (tmp_path / "ci.json").write_text('{"format": "bubbles.DiagnosticImage", "meth')
    with pytest.raises(ValueError, match="ci.json .* is not valid JSON"):
        load_image(tmp_path / "ci.npz")
    (tmp_path / "ci.json").write_text('{"format": "bubbles.DiagnosticImage", "version": 2}')
    with pytest.raises(ValueError, match="cannot read the diagnostic image"):
        load_image(tmp_path / "ci")
    (tmp_path / "ci.json").write_text('{"format": "bubbles.DiagnosticImage", "version": 1}')
    with pytest.raises(ValueError, match="format version 1; this toolkit reads version 2"):
        load_image(tmp_path / "ci")
    (tmp_path / "ci.json").write_text('{"format": "something.else"}')   # not ours
    assert load_image(tmp_path / "ci.npz").method == "unknown"




def test_load_image_reads_bare_arrays_by_their_axes(tmp_path):
    np.savez(tmp_path / "one.npz", z=np.zeros((8, 8)))
    np.savez(tmp_path / "many.npz", z=np.zeros((3, 8, 8)))
    np.savez(tmp_path / "bands.npz", z=np.zeros((3, 2, 8, 8)))
    np.savez(tmp_path / "odd.npz", z=np.zeros(8))
    assert load_image(tmp_path / "one.npz").dims == ("y", "x")
    many = load_image(tmp_path / "many.npz")
    assert many.dims == ("target", "y", "x") and many.names == ["0", "1", "2"]
    assert load_image(tmp_path / "bands.npz").n_bands == 2
    with pytest.raises(ValueError, match="must have 2 to 4 axes"):
        load_image(tmp_path / "odd.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="text.npz is not a readable .npz archive"):
        load_image(tmp_path / "text.npz")


def test_comparison_panels_score_each_extra_map_against_a():
    a = DiagnosticImage(planted_map(), "regression", SPEC, 0)
    units = DiagnosticImage(np.stack([np.eye(32), planted_map()]), "regression", SPEC,
                            0, dims=("target", "y", "x"), targets=["u0", "u1"])
    res = compare(a, units, n_permutations=0)
    extra = {"occlusion": DiagnosticImage(1 - 2 * planted_map(), "occlusion", None, 0)}
    panels, titles, r = comparison_panels(a, units, res, extra)
    assert list(panels) == ["human", "best unit", "occlusion"]
    assert_allclose(panels["best unit"], planted_map())
    assert r["occlusion"] == pytest.approx(-1.0) and titles["best unit"] == "u1 r=1.00"
