"""bubbles compare: scores written to compare.json, the figure, exit statuses."""

import json

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from analysis import DiagnosticImage, TrialTable, classification_image
from analysis.compare import noise_ceiling
from analysis.diagnostic import load_image
from bubbles import BubbleSpec
from commands.compare import _background, main
from tests.planted import SPEC, planted_map, region_observer



def _two_block_session(tmp_path, make_session, n=80, n_practice=20):
    spec = BubbleSpec(shape=(32, 32), sigma=3.0, n_bubbles=6)
    path = make_session(tmp_path / "data", spec, n_trials=n)
    lines = path.read_text().splitlines(keepends=True)
    lines[1:1 + n_practice] = [ln.replace(",main,", ",practice,", 1)
                               for ln in lines[1:1 + n_practice]]
    path.write_text("".join(lines))
    return path, spec


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
    c, r = region_observer(400)
    csv = _write_session(tmp_path / "data", c, r)
    table = TrialTable.read(csv)
    assert_allclose(table.center_list()[5], c[5])
    human = classification_image(SPEC, table.center_list(), table.responses("correct"),
                                 progress=False)
    human.save(tmp_path / "human")
    DiagnosticImage(planted_map(), "regression", SPEC, 0).save(tmp_path / "model")
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




def test_figure_background_is_the_sessions_mean_face(tmp_path):
    from bubbles.faces import face_set

    c, r = region_observer(8)
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




def test_a_map_without_its_session_warns_that_there_is_no_ceiling(tmp_path, capsys):
    z = np.random.default_rng(0).normal(size=(16, 16))
    np.savez(tmp_path / "a.npz", z=z)
    np.savez(tmp_path / "b.npz", z=z + 0.1)
    assert main([str(tmp_path / "a.npz"), str(tmp_path / "b.npz"),
                 "--out", str(tmp_path / "out")]) == 0
    assert "records no session: no noise ceiling" in capsys.readouterr().err


@pytest.mark.parametrize("response", ["correct", "rt"])
def test_compare_uses_the_block_and_response_that_made_a(tmp_path, make_session,
                                                         response):
    from commands.analyze import analyze

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
    DiagnosticImage(planted_map(), "regression", spec, 0).save(tmp_path / "model")
    assert main([str(out / "ci.npz"), str(tmp_path / "model"), "--out",
                 str(tmp_path / "cmp"), "--n-permutations", "0", "--n-splits", "3"]) == 0
    got = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    table = TrialTable.read(csv)
    main_trials = table.select((table.data["block"] == "main").to_numpy())
    expect = noise_ceiling(spec, main_trials.center_list(),
                           main_trials.responses(response), n_splits=3,
                           seed=np.random.default_rng(0).spawn(2)[0],
                           method="median_split")
    assert got["info"]["n_trials"] == 60 and got["info"]["block"] == "main"
    assert got["info"]["method"] == "median_split"
    assert got["info"]["response"] == response
    assert got["ceiling"]["splits"] == pytest.approx(expect.splits, abs=1e-9)


def test_bad_options_are_usage_errors(tmp_path, capsys):
    np.savez(tmp_path / "a.npz", z=planted_map())
    base = [str(tmp_path / "a.npz"), str(tmp_path / "a.npz"), "--out", str(tmp_path / "o")]
    for opts, text in ((["--n-permutations", "-5"], "--n-permutations must be >= 0"),
                       (["--n-splits", "0"], "--n-splits must be >= 1"),
                       (["--smoothing", "-1"], "--smoothing must be >= 0"),
                       (["--panel", "occlusion"], "--panel must be NAME=STEM")):
        assert main(base + opts) == 2
        assert text in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_nan_and_resampled_maps_are_named(tmp_path, capsys):
    z = planted_map()
    np.savez(tmp_path / "a.npz", z=z)
    bad = z.copy()
    bad[3, 4] = np.nan
    np.savez(tmp_path / "nan.npz", z=bad)
    assert main([str(tmp_path / "a.npz"), str(tmp_path / "nan.npz"), "--out",
                 str(tmp_path / "o")]) == 1
    assert "map b holds NaN or infinite values" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    np.savez(tmp_path / "big.npz", z=np.kron(z, np.ones((2, 2))))
    assert main([str(tmp_path / "a.npz"), str(tmp_path / "big.npz"), "--out",
                 str(tmp_path / "o")]) == 0
    assert "b was resampled bilinearly" in capsys.readouterr().err


def test_damaged_inputs_and_outputs_fail_by_name(tmp_path, capsys):
    np.savez(tmp_path / "a.npz", z=planted_map())
    (tmp_path / "text.npz").write_text("not an archive")
    assert main([str(tmp_path / "a.npz"), str(tmp_path / "text.npz"), "--out",
                 str(tmp_path / "o")]) == 1
    assert "text.npz is not a readable .npz archive" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main([str(tmp_path / "a.npz"), str(tmp_path / "a.npz"), "--out",
                 str(tmp_path / "file")]) == 1
    assert "is a file" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "x"
