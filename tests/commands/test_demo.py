"""`bubbles demo` runs the whole pipeline: stimuli, sessions, analysis, probe, compare."""
import json
import os

import pytest

pytestmark = pytest.mark.window


@pytest.fixture(autouse=True)
def _psychopy_home(tmp_path, monkeypatch):
    if not os.environ.get("DISPLAY"):
        pytest.skip("the demo's session needs an X display: run under xvfb-run")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PSYCHOPYNOPACKAGES", "1")


def test_demo_pipeline_end_to_end(tmp_path):
    from commands.demo import main

    out = tmp_path / "demo"
    assert main(["--out", str(out), "--trials", "24", "--n-masks", "128",
                 "--steps", "stimuli,session,analysis,probe,attribution,compare"]) == 0
    assert (out / "stimuli" / "stimuli.png").stat().st_size > 10_000
    for who in ("person", "network"):
        (csv,) = (out / "session").glob(f"{who}_*.csv")
        assert len(csv.read_text().splitlines()) == 1 + 3 + 24     # header, practice, main
        summary = json.loads((out / "analysis" / who / "summary.json").read_text())
        assert summary["n_trials"] == 24
    assert (out / "probe" / "probe.npz").is_file()
    result = json.loads((out / "compare" / "compare.json").read_text())
    assert result["best"].startswith("features.conv3:ch")
    assert -1 <= result["pearson_best"] <= 1 and 0 < result["p_value"] <= 1
    assert (out / "compare" / "compare.png").stat().st_size > 10_000


def test_demo_rejects_unknown_steps(capsys):
    from commands.demo import main

    assert main(["--steps", "stimuli,plots"]) == 2
    assert "unknown step(s) ['plots']" in capsys.readouterr().err


def test_demo_refuses_an_out_that_is_a_file(tmp_path, capsys):
    from commands.demo import main

    f = tmp_path / "taken"
    f.write_text("a person's notes")
    assert main(["--out", str(f / "demo"), "--steps", "stimuli"]) == 1
    assert "is a file" in capsys.readouterr().err
    assert f.read_text() == "a person's notes"
