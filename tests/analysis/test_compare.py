import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from analysis import DiagnosticImage, TrialTable, classification_image
from analysis.compare import (compare, correlate, figure, load_image, main, noise_ceiling,
                              spearman_brown)
from bubbles import BubbleSpec, sample_centers

SPEC = BubbleSpec(shape=(32, 32), sigma=3.0, n_bubbles=6)


def _observer(n, seed=4, region=(slice(8, 14), slice(18, 26)), noise=0.5):
    """Trials whose response depends on how much of a region the bubbles reveal."""
    c = sample_centers(SPEC, seed, n)
    rng = np.random.default_rng(seed)
    rows, cols = c[..., 0], c[..., 1]
    hit = ((rows >= region[0].start - 2) & (rows < region[0].stop + 2)
           & (cols >= region[1].start - 2) & (cols < region[1].stop + 2)).sum(axis=1)
    correct = (hit + noise * rng.normal(size=n) > 0.5).astype(float)
    return c, correct


def _planted_map():
    m = np.zeros((32, 32))
    m[8:14, 18:26] = 1.0
    from scipy.ndimage import gaussian_filter
    return gaussian_filter(m, 3)


def test_correlate_known_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 20))
    assert correlate(a, 3 * a - 1) == (1.0, 1.0)
    assert correlate(a, -a) == (-1.0, -1.0)
    r, rho = correlate(a, np.exp(a))          # monotone: Spearman 1, Pearson < 1
    assert rho == 1.0 and r < 1.0
    stack = np.stack([a, -a, rng.normal(size=(20, 20))])
    r, rho = correlate(a, stack)
    assert_allclose(r[:2], [1, -1])
    region = np.zeros((20, 20), bool)
    region[:10] = True
    b = a.copy()
    b[10:] = rng.normal(size=(10, 20))
    assert correlate(a, b, region=region)[0] == pytest.approx(1.0)
    # smoothing alike: both maps get the same filter
    assert correlate(a, a, sigma=2.0)[0] == pytest.approx(1.0)
    assert correlate(a, b, sigma=2.0)[0] != correlate(a, b)[0]
    with pytest.raises(ValueError, match="b must have the shape of a"):
        correlate(a, np.zeros((5, 5)))
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        correlate(a, a, sigma=-1)


def test_spearman_brown():
    assert spearman_brown(0.5) == pytest.approx(2 / 3)
    assert spearman_brown(1.0) == 1.0


def test_noise_ceiling_grows_with_trials():
    c, r = _observer(1200)
    big = noise_ceiling(SPEC, c, r, n_splits=4, seed=0)
    small = noise_ceiling(SPEC, c[:150], r[:150], n_splits=4, seed=0)
    assert big["r_sb"] == pytest.approx(spearman_brown(big["r_half"]))
    assert big["r_sb"] > small["r_sb"] and big["r_sb"] > 0.6
    with pytest.raises(ValueError, match="at least 4 trials"):
        noise_ceiling(SPEC, c[:3], r[:3])


def test_compare_scores_true_model_above_random():
    c, r = _observer(800)
    human = classification_image(SPEC, c, r, progress=False)
    rng = np.random.default_rng(1)
    units = np.stack([rng.normal(size=(32, 32)), _planted_map(), -_planted_map()])
    model = DiagnosticImage(units, "regression", SPEC, 800,
                            info={"responses_ndim": 2, "targets": ["noise", "good", "bad"]})
    res = compare(human, model, trials=(SPEC, c, r), n_permutations=99, n_splits=4)
    assert res.best_name == "good" and res.pearson[1] > 0.7
    assert res.p_value == pytest.approx(0.01)          # 1 / (1 + 99): beats every shuffle
    assert res.p_values[2] > 0.5
    assert res.ceiling["kind"] == "sqrt"
    assert res.score == pytest.approx(res.pearson[1] / np.sqrt(res.ceiling["r_sb"]))
    res2 = compare(human, model, trials=(SPEC, c, r), n_permutations=0, n_splits=4,
                   ceiling="r_sb")
    assert res2.score == pytest.approx(res2.pearson[1] / res2.ceiling["r_sb"])
    assert res2.p_value is None
    with pytest.raises(ValueError, match="ceiling must be one of"):
        compare(human, model, ceiling="max")
    d = res.to_dict()
    assert d["best"] == "good" and len(d["targets"]) == 3
    json.dumps(d)


def test_compare_without_trials_and_resampling():
    a = _planted_map()
    b = _planted_map()[::2, ::2]               # a coarser grid (e.g. a network's)
    res = compare(a, b)
    assert res.ceiling is None and res.p_value is None
    assert res.pearson[0] > 0.95 and "resampled_b" in res.info
    with pytest.raises(ValueError, match="a must hold one map"):
        compare(DiagnosticImage(np.zeros((2, 32, 32)), "regression", SPEC, 1,
                                info={"responses_ndim": 2}), a)


def test_figure(tmp_path):
    m = _planted_map()
    panels = {"human": m, "model observer": m, "best unit": -m, "occlusion": m,
              "saliency": np.abs(m), "integrated gradients": m}
    fig = figure(panels, tmp_path / "f.png", background=np.full((32, 32), 0.5),
                 titles={"best unit": "r=-1.00"})
    assert len(fig.axes) == 6 and (tmp_path / "f.png").is_file()
    with pytest.raises(ValueError, match="panels"):
        figure({})


def _write_session(folder, c, r):
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / "P01_faces_2026"
    n = len(r)
    pd.DataFrame({"trial": np.arange(n), "n_bubbles": SPEC.n_bubbles, "mask_seed": 4,
                  "mask_index": np.arange(n), "correct": r.astype(int)}).to_csv(
        str(stem) + ".csv", index=False)
    (folder / "P01_faces_2026.json").write_text(json.dumps(
        {"format": "bubbles.session", "version": 1, "spec": SPEC.to_dict()}))
    return str(stem) + ".csv"


def test_command_line(tmp_path, capsys):
    c, r = _observer(400)
    csv = _write_session(tmp_path / "data", c, r)
    table = TrialTable.read(csv)
    assert_allclose(table.center_list()[5], c[5])
    human = classification_image(SPEC, table.center_list(), table.responses("correct"),
                                 progress=False)
    human.save(tmp_path / "human")
    DiagnosticImage(_planted_map(), "regression", SPEC, 0).save(tmp_path / "model")
    # panels with a known r against the reference A (not against B): an affine
    # transform with negative slope (r = -1), and A plus an orthogonal part of the same
    # norm (r = 1 / sqrt(2))
    za = np.asarray(human.z, dtype=np.float64)
    np.savez(tmp_path / "occ.npz", z=1.0 - 2.0 * za)
    d = za - za.mean()
    e = np.random.default_rng(2).normal(size=za.shape)
    e -= e.mean()
    e -= (e * d).sum() / (d * d).sum() * d
    e *= np.linalg.norm(d) / np.linalg.norm(e)
    np.savez(tmp_path / "sal.npz", z=d + e + 3.0)
    rc = main([str(tmp_path / "human"), str(tmp_path / "model.npz"), "--out",
               str(tmp_path / "cmp"), "--trials", csv, "--n-permutations", "19",
               "--n-splits", "2", "--panel", f"occlusion={tmp_path / 'occ.npz'}",
               "--panel", f"saliency={tmp_path / 'sal.npz'}"])
    assert rc == 0
    out = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert out["pearson_best"] > 0.5 and out["p_value"] == pytest.approx(0.05)
    assert out["ceiling"]["r_sb"] > 0 and (tmp_path / "cmp" / "compare.png").is_file()
    assert out["panels"]["occlusion"] == pytest.approx(-1.0, abs=1e-9)
    assert out["panels"]["saliency"] == pytest.approx(2 ** -0.5, abs=1e-9)
    assert "permutation p" in capsys.readouterr().out
    assert load_image(tmp_path / "occ.npz").z.shape == (32, 32)
    again = [str(tmp_path / "human"), str(tmp_path / "model"), "--out", str(tmp_path / "cmp"),
             "--n-permutations", "0"]
    assert main(again) == 1 and "use --force" in capsys.readouterr().err
    assert main(again + ["--force"]) == 0
    rc = main([str(tmp_path / "nothing"), str(tmp_path / "model"), "--out", str(tmp_path)])
    assert rc == 1 and "not found" in capsys.readouterr().err


def test_no_torch_import():
    code = "import sys, analysis.compare; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=root)
    assert out.stdout.strip() == "False"


def test_score_far_above_ceiling_warns(monkeypatch):
    """A model can only exceed sqrt(r_sb) by chance: far above it, the ceiling is noise."""
    import analysis.compare as cmp

    c, r = _observer(200)
    human = classification_image(SPEC, c, r, progress=False)
    monkeypatch.setattr(cmp, "noise_ceiling", lambda *a, **k: {
        "r_half": 0.01, "r_sb": 0.02, "sqrt_r_sb": 0.02 ** 0.5, "splits": [0.01],
        "n_splits": 1})
    with pytest.warns(UserWarning, match="ceiling of a .* too noisy"):
        res = compare(human, _planted_map(), trials=(SPEC, c, r), n_permutations=0)
    assert res.score > 1.25


def test_figure_background_is_the_sessions_mean_face(tmp_path):
    from analysis.compare import _background
    from bubbles.faces import face_set

    c, r = _observer(8)
    csv = _write_session(tmp_path, c, r)
    sidecar = json.loads((tmp_path / "P01_faces_2026.json").read_text())
    sidecar["config"] = {"stimuli": {"source": "faces", "n_identities": 1, "size": 64}}
    sidecar["spec"] = SPEC.replace(shape=(64, 64)).to_dict()       # the faces' grid
    (tmp_path / "P01_faces_2026.json").write_text(json.dumps(sidecar))
    data = pd.read_csv(csv)
    data["stimulus_id"] = "id00_happy"
    data.to_csv(csv, index=False)
    bg = _background(None, TrialTable.read(csv), (64, 64))
    faces = face_set(1, seed=0, size=64)
    assert_allclose(bg, faces.images[faces.index("id00_happy")])
    np.save(tmp_path / "bg.npy", np.zeros((32, 32)))
    assert _background(tmp_path / "bg.npy", None, (32, 32)).shape == (32, 32)
    with pytest.raises(ValueError, match="background .* has shape"):
        _background(tmp_path / "bg.npy", None, (16, 16))


def test_figure_keeps_the_reference_first_then_the_seed_order():
    from analysis.compare import figure

    m = np.zeros((8, 8))
    fig = figure({"person (simulated)": m, "integrated gradients": m, "saliency": m,
                  "model observer": m, "best unit": m})
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["person (simulated)", "model observer", "best unit", "saliency",
                      "integrated gradients"]


# -- review findings: the trials that made A, centre maps once, damaged files --------
def _two_block_session(tmp_path, make_session, n=80, n_practice=20):
    spec = BubbleSpec(shape=(32, 32), sigma=3.0, n_bubbles=6)
    path = make_session(tmp_path / "data", spec, n_trials=n)
    lines = path.read_text().splitlines(keepends=True)
    lines[1:1 + n_practice] = [ln.replace(",main,", ",practice,", 1)
                               for ln in lines[1:1 + n_practice]]
    path.write_text("".join(lines))
    return path, spec


@pytest.mark.parametrize("response", ["correct", "rt"])
def test_compare_uses_the_block_and_response_that_made_a(tmp_path, make_session,
                                                         response):
    from analysis.cli import analyze

    csv, spec = _two_block_session(tmp_path, make_session)
    out = tmp_path / "ana"
    assert analyze([str(csv), "--out", str(out), "--block", "main", "--response",
                    response, "--method", "median_split", "--quiet"]) == 0
    a = load_image(out / "ci.npz")
    assert a.method == "median_split" and a.n_trials == 60
    assert a.info["block"] == "main" and a.info["response"] == response
    assert a.info["session"] == str(csv.resolve()) and a.info["null"] == "analytic"
    with np.load(out / "ci.npz") as data:
        assert_allclose(data["z"], a.z)
    DiagnosticImage(_planted_map(), "regression", spec, 0).save(tmp_path / "model")
    assert main([str(out / "ci.npz"), str(tmp_path / "model"), "--out",
                 str(tmp_path / "cmp"), "--n-permutations", "0", "--n-splits", "3"]) == 0
    got = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    table = TrialTable.read(csv)
    main_trials = table.select((table.data["block"] == "main").to_numpy())
    expect = noise_ceiling(spec, main_trials.center_list(),
                           main_trials.responses(response), n_splits=3, seed=0,
                           method="median_split")
    assert got["info"]["n_trials"] == 60 and got["info"]["block"] == "main"
    assert got["info"]["method"] == "median_split"
    assert got["info"]["response"] == response
    assert got["ceiling"]["splits"] == pytest.approx(expect["splits"], abs=1e-9)


def test_compare_builds_centre_maps_once(monkeypatch):
    import bubbles

    c, r = _observer(300)
    table = TrialTable.from_arrays(SPEC, c, correct=r)
    human = classification_image(SPEC, c, r, progress=False)
    calls = []
    real = bubbles.center_maps

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(bubbles, "center_maps", spy)
    res = compare(human, _planted_map(), trials=table, n_splits=3, n_permutations=250)
    assert len(calls) == 1 and res.ceiling["n_splits"] == 3 and res.p_value is not None


def test_load_image_rejects_a_damaged_json(tmp_path):
    DiagnosticImage(_planted_map(), "regression", SPEC, 10).save(tmp_path / "ci")
    (tmp_path / "ci.json").write_text('{"format": "bubbles.DiagnosticImage", "meth')
    with pytest.raises(ValueError, match="ci.json .* is not valid JSON"):
        load_image(tmp_path / "ci.npz")
    (tmp_path / "ci.json").write_text('{"format": "bubbles.DiagnosticImage"}')
    with pytest.raises(ValueError, match="cannot read the diagnostic image"):
        load_image(tmp_path / "ci")
    rc = main([str(tmp_path / "ci"), str(tmp_path / "ci.npz"), "--out", str(tmp_path / "o")])
    assert rc == 1
    (tmp_path / "ci.json").write_text('{"format": "something.else"}')   # not ours
    assert load_image(tmp_path / "ci.npz").method == "unknown"


def test_compare_figure_draws_with_the_figures_helper(monkeypatch):
    import analysis.figures as figures

    drawn = []
    real = figures._draw_map

    def spy(ax, m, **k):
        drawn.append(m.shape)
        return real(ax, m, **k)

    monkeypatch.setattr(figures, "_draw_map", spy)
    figure({"human": np.zeros((8, 8)), "saliency": np.ones((2, 8, 8))},
           background=np.full((8, 8), 0.5))
    assert drawn == [(8, 8), (8, 8)]


def test_a_map_without_its_session_warns_that_there_is_no_ceiling(tmp_path, capsys):
    z = np.random.default_rng(0).normal(size=(16, 16))
    np.savez(tmp_path / "a.npz", z=z)
    np.savez(tmp_path / "b.npz", z=z + 0.1)
    assert main([str(tmp_path / "a.npz"), str(tmp_path / "b.npz"),
                 "--out", str(tmp_path / "out")]) == 0
    assert "records no session: no noise ceiling" in capsys.readouterr().err
