"""bubbles analyze: session and existing-CI modes, outputs, no silent overwrite."""

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose

from commands.analyze import analyze
from bubbles import BubbleSpec

NO_FACE = "no mean stimulus for the figure background"


def _notes(path):
    """summary.json warnings, less the one about the missing figure background (the
    test sessions record no stimuli source: their 32 px grid has no faces)."""
    return [w for w in json.loads(path.read_text())["warnings"] if not w.startswith(NO_FACE)]


def test_analyze_session_writes_outputs(session_csv, tmp_path, capsys):
    out = tmp_path / "res"
    assert analyze([str(session_csv), "--out", str(out), "--quiet"]) == 0
    with np.load(out / "ci.npz") as data:
        assert data["z"].shape == (32, 32)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "regression" and summary["n_trials"] == 60
    assert BubbleSpec.from_dict(summary["spec"]).shape == (32, 32)
    band = summary["bands"][0]
    assert band["pixel_test"]["threshold"] > 2 and "min_cluster_size" in band["cluster_test"]
    assert isinstance(band["cluster_test"]["clusters"], list)
    assert (out / "ci.png").stat().st_size > 1000


def test_analyze_refuses_to_overwrite(session_csv, tmp_path, capsys):
    out = tmp_path / "res"
    assert analyze([str(session_csv), "--out", str(out), "--quiet"]) == 0
    assert analyze([str(session_csv), "--out", str(out), "--quiet"]) == 1
    assert "ci.npz exists; use --force" in capsys.readouterr().err
    assert analyze([str(session_csv), "--out", str(out), "--quiet", "--force",
                    "--method", "median_split", "--response", "rt"]) == 0
    assert json.loads((out / "summary.json").read_text())["method"] == "median_split"


def test_analyze_proportion_says_its_tests_are_descriptive(session_csv, tmp_path):
    out = tmp_path / "p"
    assert analyze([str(session_csv), "--out", str(out), "--method", "proportion",
                    "--quiet"]) == 0
    warned = _notes(out / "summary.json")
    assert len(warned) == 1
    assert warned[0].startswith("method 'proportion' is z-scored across the pixels")


def test_analyze_multiscale_session(tmp_path, make_session):
    spec = BubbleSpec(shape=(32, 32), sigma=1.5, n_bubbles=12, bands=3)
    path = make_session(tmp_path, spec, n_trials=30)
    assert analyze([str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    with np.load(tmp_path / "o" / "ci.npz") as data:
        assert data["z"].shape == (3, 32, 32)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert [b["sigma"] for b in summary["bands"]] == [1.5, 3.0, 6.0]


def test_analyze_reports_rft_validity_and_blocks(tmp_path, make_session, capsys):
    # 48 px at sigma 2 / 4 / 8: band 1 has FWHM 4.71 < 5 px, band 3 spans 2.9 FWHM < 3
    spec = BubbleSpec(shape=(48, 48), sigma=2.0, n_bubbles=12, bands=3)
    path = make_session(tmp_path, spec, n_trials=40)
    text = path.read_text().replace(",main,", ",practice,", 5)   # first 5 trials
    path.write_text(text)
    assert analyze([str(path), "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    assert "band 1 (sigma 2 px): pixel test" in captured.out
    warned = _notes(tmp_path / "o" / "summary.json")
    assert len(warned) == 3 and captured.err.count("bubbles analyze: warning:") == 4
    assert f"bubbles analyze: warning: {NO_FACE}: the session sidecar records no" \
        in captured.err
    assert warned[0].startswith("analysing the trials of all blocks ['main', 'practice']")
    assert warned[1].startswith("band 1 of 3: FWHM 4.71 px is below the 5 px")
    assert warned[2].startswith("band 3 of 3: the search region (2304 px, about 54 px "
                                "across) spans 2.9 FWHM")
    out = tmp_path / "main"
    assert analyze([str(path), "--out", str(out), "--block", "main", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_trials"] == 35 and not any("blocks" in w for w in summary["warnings"])
    assert analyze([str(path), "--out", str(tmp_path / "x"), "--block", "mian"]) == 1
    assert "blocks are ['main', 'practice']" in capsys.readouterr().err


def test_analyze_errors(session_csv, tmp_path, capsys):
    assert analyze(["--out", str(tmp_path / "x")]) == 2
    assert "either a SESSION.csv or --ci" in capsys.readouterr().err
    assert analyze([str(session_csv), "--out", str(tmp_path / "x"),
                    "--response", "nope", "--quiet"]) == 1
    assert "response column 'nope' is not in the table" in capsys.readouterr().err
    assert analyze([str(session_csv), "--out", str(tmp_path / "x"),
                    "--method", "mean"]) == 2
    np.save(tmp_path / "z.npy", np.zeros((16, 16)))
    assert analyze(["--ci", str(tmp_path / "z.npy"), "--out", str(tmp_path / "y")]) == 2
    assert "--sigma is required" in capsys.readouterr().err


@pytest.mark.parametrize("opts, text", [
    (["--sigma", "0"], "--sigma must be > 0 pixels, got 0"),
    (["--sigma", "-2"], "--sigma must be > 0 pixels"),
    (["--cluster-threshold", "0"], "--cluster-threshold must be a z value in (0, 10]"),
    (["--cluster-threshold", "50"], "--cluster-threshold must be a z value in (0, 10]"),
    (["--cluster-threshold", "-1"], "--cluster-threshold must be a z value"),
    (["--p", "1.5"], "--p must lie in (0, 1)"),
    (["--null", "permutation", "--n-permutations", "-5"], "--n-permutations must be >= 2"),
])
def test_bad_options_are_usage_errors_and_write_nothing(session_csv, tmp_path, capsys,
                                                        opts, text):
    out = tmp_path / "x"
    assert analyze([str(session_csv), "--out", str(out), "--quiet"] + opts) == 2
    assert text in capsys.readouterr().err
    assert not out.exists()


def test_analyze_tests_with_the_sigma_given(session_csv, tmp_path, capsys):
    out = tmp_path / "s"
    assert analyze([str(session_csv), "--out", str(out), "--quiet", "--sigma", "6"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bands"][0]["sigma"] == 6
    assert any("testing with sigma 6 px, not the session's bubble sigma [3.0]" in w
               for w in summary["warnings"])


def test_analyze_names_the_file_mistakes(session_csv, tmp_path, capsys):
    sidecar = session_csv.with_suffix(".json")
    assert analyze([str(sidecar), "--out", str(tmp_path / "x")]) == 2
    assert f"is a session's sidecar: give the session CSV beside it ({session_csv.name})" \
        in capsys.readouterr().err
    (tmp_path / "f").write_text("keep")
    assert analyze([str(session_csv), "--out", str(tmp_path / "f" / "o")]) == 1
    assert "is a file" in capsys.readouterr().err
    (tmp_path / "t.npz").write_text("text, not numbers")
    assert analyze(["--ci", str(tmp_path / "t.npz"), "--sigma", "3", "--out",
                    str(tmp_path / "y")]) == 1
    assert "t.npz is not a readable .npz archive" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_analyze_existing_ci_npy(tmp_path):
    z = np.zeros((64, 64))
    z[20:40, 20:40] = 4.0
    np.save(tmp_path / "z.npy", z)
    out = tmp_path / "o"
    assert analyze(["--ci", str(tmp_path / "z.npy"), "--sigma", "3", "--out", str(out),
                    "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["zscore"] == "none"
    from analysis import DiagnosticImage
    img = DiagnosticImage.load(out / "ci")            # ci.npz + ci.json
    assert img.method == "external" and img.info["source"].endswith("z.npy")
    assert_allclose(img.z, z)
    assert s["cluster_test"]["clusters"][0]["size"] == 400
    assert s["cluster_test"]["clusters"][0]["significant"]


def test_analyze_stat4ci_gender(stat4ci_dir, tmp_path, capsys):
    out = tmp_path / "gender"
    code = analyze(["--ci", str(stat4ci_dir / "GenderFG.tiff"), "--search-region",
                    str(stat4ci_dir / "facemask.tiff"), "--sigma", "20", "--out",
                    str(out), "--background", str(stat4ci_dir / "w1H.jpg")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "threshold z = 3.302" in printed and "2 significant cluster(s)" in printed
    s = json.loads((out / "summary.json").read_text())
    assert s["n_pixels_region"] == 36798
    assert_allclose(s["pixel_test"]["threshold"], 3.30, atol=5e-3)
    assert_allclose(s["cluster_test"]["min_cluster_size"], 861.7, rtol=1e-3)
    sizes = [c["size"] for c in s["cluster_test"]["clusters"] if c["significant"]]
    assert sizes == [993, 932]


def test_session_figure_background_is_the_mean_shown_face():
    from types import SimpleNamespace

    import pandas as pd

    from analysis.trials import TrialTable
    from bubbles import BubbleSpec, face_set

    faces = face_set(20, seed=0, size=256)
    ids = list(faces.table["stimulus_id"][:6])
    table = SimpleNamespace(
        sidecar={"config": {"stimuli": {"source": "faces", "n_identities": 20, "size": 256}}},
        data=pd.DataFrame({"stimulus_id": ids * 2}), spec=BubbleSpec(shape=(256, 256)))
    np.testing.assert_allclose(TrialTable.mean_stimulus(table),
                               faces.images[:6].mean(axis=0), atol=1e-6)
    table.sidecar = {}
    assert TrialTable.mean_stimulus(table) is None


@pytest.mark.parametrize("method", ["glm", "sparse"])
def test_analyze_with_the_estimators(session_csv, tmp_path, capsys, method):
    out = tmp_path / method
    assert analyze([str(session_csv), "--out", str(out), "--method", method,
                    "--resolution", "8", "--n-permutations", "19"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    band = summary["bands"][0]
    assert band["cluster_test"] is None and band["pixel_test"]["n_permutations"] == 19
    assert band["pixel_test"]["test"].startswith("permutation max statistic")
    assert any("not random field theory" in w for w in summary["warnings"])
    assert "permutation max statistic: threshold z" in capsys.readouterr().out
    assert (out / "ci.png").is_file()
    with np.load(out / "ci.npz") as data:
        assert data["z"].shape == (32, 32) and np.isfinite(data["z"]).all()
    assert analyze([str(session_csv), "--out", str(tmp_path / "x"), "--resolution",
                    "8"]) == 2
    assert "--resolution and --penalties go with --method glm or sparse" in \
        capsys.readouterr().err
