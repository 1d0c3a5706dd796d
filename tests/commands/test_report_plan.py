"""bubbles report and bubbles plan: outputs, no silent overwrite, exit statuses."""

import json

import pandas as pd
import pytest

from commands.analyze import analyze
from commands.plan import main as plan
from commands.report import main as report


@pytest.fixture
def analysed(session_csv, tmp_path):
    out = tmp_path / "results" / "analysis" / "P01"
    assert analyze([str(session_csv), "--out", str(out), "--quiet"]) == 0
    return tmp_path / "results"


def test_report_writes_one_page_and_keeps_it(analysed, capsys):
    assert report([str(analysed)]) == 0
    page = analysed / "report.html"
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and 'id="summary"' in text
    assert "wrote" in capsys.readouterr().out
    before = page.stat().st_mtime_ns
    assert report([str(analysed), "--quiet"]) == 1
    assert "report.html exists; use --force" in capsys.readouterr().err
    assert page.stat().st_mtime_ns == before
    assert report([str(analysed), "--quiet", "--force", "--title", "Lab 3"]) == 0
    assert "<title>Lab 3</title>" in page.read_text()


def test_report_elsewhere_and_refusals(analysed, tmp_path, capsys):
    out = tmp_path / "pages" / "r.html"
    assert report([str(analysed), "--out", str(out), "--static", "--quiet"]) == 0
    assert out.stat().st_size > 10_000
    assert report([str(analysed), "--out", str(tmp_path / "r.txt")]) == 2
    assert "--out must name an .html file" in capsys.readouterr().err
    assert report([str(tmp_path / "missing")]) == 1
    assert "does not exist or is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report([str(tmp_path / "empty")]) == 1
    assert "holds no result of the toolkit" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert report([str(analysed), "--out", str(tmp_path / "file" / "r.html")]) == 1
    assert "is a file" in capsys.readouterr().err


def test_plan_template_grid_then_report(tmp_path, capsys):
    out = tmp_path / "plan"
    args = ["--sigma", "10", "--n-bubbles", "10", "40", "--trials", "60", "120",
            "--reps", "2", "--resolution", "64", "--quest-trials", "100", "--workers", "1",
            "--out", str(out), "--quiet"]
    assert plan(args) == 0
    data = json.loads((out / "plan.json").read_text())
    assert data["format"] == "bubbles.plan" and data["kind"] == "behaviour"
    assert len(data["cells"]) == 4 and data["info"]["resolution"] == 64
    assert [r["test"] for r in data["recommendation"]] == ["pixel", "cluster"]
    assert data["quest"]["10.0"]["sweep"] and data["arguments"]["seed"] == 0
    assert "numpy" in data["versions"]
    cells = pd.read_csv(out / "plan.csv")
    assert list(cells["n_trials"]) == [60, 120, 60, 120]
    assert (out / "power.png").read_bytes()[:4] == b"\x89PNG"
    assert plan(args) == 1
    assert "plan.json exists; use --force" in capsys.readouterr().err
    assert report([str(out), "--quiet"]) == 0
    assert 'id="plans"' in (out / "report.html").read_text()


def test_plan_voxels(tmp_path, capsys):
    out = tmp_path / "fmri_plan"
    assert plan(["--observer", "voxel", "--tr", "2", "--iti", "4", "--runs", "2",
                 "--snr", "1", "--trials", "80", "--reps", "1", "--voxels", "4",
                 "--n-voxels", "10", "--workers", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "at voxel SNR 1" in printed and "1 cells" in printed
    data = json.loads((out / "plan.json").read_text())
    (cell,) = data["cells"]
    assert cell["reps"] == 4 and cell["scan_minutes"] > 5 and 0 <= cell["power_pixel"] <= 1


@pytest.mark.parametrize("args, message", [
    (["--tr", "2"], "--tr applies to --observer voxel only"),
    (["--observer", "network", "--resolution", "128"], "--resolution must be 256"),
    (["--observer", "voxel", "--sigma", "5", "10"], "--sigma takes one value"),
    (["--observer", "voxel", "--n-bubbles", "quest"], "needs a behavioural observer"),
    (["--p", "1.5"], "--p must lie in (0, 1)"),
    (["--reps", "1"], "--reps must be >= 2"),
    (["--decision-noise", "1"], "--decision-noise applies to --observer network only"),
])
def test_plan_usage_errors(tmp_path, capsys, args, message):
    assert plan(args + ["--out", str(tmp_path / "p")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_plan_data_errors(tmp_path, capsys):
    assert plan(["--n-bubbles", "5000", "--resolution", "64", "--quest-trials", "0",
                 "--out", str(tmp_path / "p")]) == 1
    assert "n_bubbles must be at most the 4096 pixels" in capsys.readouterr().err
    assert plan(["--n-bubbles", "x", "--out", str(tmp_path / "p")]) == 2
    assert "must be a whole number of bubbles or 'quest'" in capsys.readouterr().err


def test_plan_network_observer(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "net"
    assert plan(["--observer", "network", "--n-bubbles", "40", "--trials", "40",
                 "--reps", "2", "--quest-trials", "0", "--workers", "1", "--out", str(out),
                 "--quiet"]) == 0
    data = json.loads((out / "plan.json").read_text())
    assert data["observer"] == "network" and data["truth"] == "reference session"
    assert data["info"]["reference_trials"] == 160
    assert 0.3 < data["cells"][0]["accuracy"] <= 1
