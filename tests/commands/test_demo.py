"""`bubbles demo` runs the whole study: stimuli, sessions, analysis, the scanner session,
its fMRI study, probes, comparisons of person, voxels, regions and units, the report."""
import importlib.util
import json
import os

import pandas as pd
import pytest

pytestmark = pytest.mark.window


@pytest.fixture(autouse=True)
def _psychopy_home(tmp_path, monkeypatch):
    if not os.environ.get("DISPLAY"):
        pytest.skip("the demo's session needs an X display: run under xvfb-run")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PSYCHOPYNOPACKAGES", "1")


def test_demo_pipeline_end_to_end(tmp_path, capsys):
    pytest.importorskip("nibabel")
    pytest.importorskip("zarr")
    from commands.demo import main

    out = tmp_path / "demo"
    steps = ("stimuli,session,analysis,scanner,fmri,probe,attribution,compare,"
             "compare_brain,report")
    assert main(["--out", str(out), "--trials", "24", "--n-masks", "128",
                 "--scan-trials", "6", "--scan-speed", "100", "--steps", steps]) == 0
    printed = capsys.readouterr().out
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

    # the scanner session: 4 runs of 6 trials, the bubbles fixed at the person's QUEST
    (scan,) = (out / "scanner").glob("person_*.csv")
    trials = pd.read_csv(scan)
    assert len(trials) == 24 and sorted(set(trials["run"])) == [1, 2, 3, 4]
    sidecar = json.loads(scan.with_suffix(".json").read_text())
    assert trials["n_bubbles"].nunique() == 1
    assert trials["n_bubbles"].iloc[0] == sidecar["scanner"]["n_bubbles"]
    (person_csv,) = (out / "session").glob("person_*.csv")
    source = sidecar["scanner"]["bubbles_source"]
    assert source["from"] == "--bubbles-from" and source["file"] == str(person_csv)
    # its fMRI study follows the session's runs and onsets
    bids = out / "fmri" / "bids"
    truth = json.loads((bids / "derivatives/truth/sub-person_task-demo_truth.json")
                       .read_text())
    assert truth["schedule"] == "scanner session" and truth["n_trials"] == 24
    events = pd.read_csv(bids / "sub-person/func/sub-person_task-demo_run-2_events.tsv",
                         sep="\t")
    assert events["onset"].tolist() == trials.loc[trials["run"] == 2, "onset"].tolist()
    fmri = json.loads((out / "fmri" / "analysis" / "summary.json").read_text())
    assert fmri["n_trials"] == 24 and fmri["n_runs"] == 4
    assert [r["name"] for r in fmri["regions"]] == ["frontal", "occipital",
                                                    "dorsal_occipital"]
    findings = json.loads((out / "fmri" / "findings.json").read_text())
    assert [(f["region"], f["reads"]) for f in findings["regions"]] == [
        ("frontal", "eyes"), ("occipital", "mouth")]
    assert all(f["n_voxels"] > 0 for f in findings["regions"])
    assert findings["null"]["n_voxels"] > 1000 and findings["late_onsets"]["n_trials"] == 24
    assert f"fMRI: {findings['sentence']}" in printed
    # voxels and regions against the units of two layers; the person against a region
    many = json.loads((out / "compare_brain" / "units" / "compare_many.json").read_text())
    assert many["layers"] == ["features.conv2", "features.conv3"]
    assert many["n_b"] == 32 + 64 and many["n_a"] == findings["null"]["n_voxels"] + sum(
        f["n_voxels"] for f in findings["regions"]) + truth["counts"]["area"]
    regions = pd.read_csv(out / "compare_brain" / "units" / "regions.tsv", sep="\t")
    assert regions["region"].tolist() == ["frontal", "occipital", "dorsal_occipital"]
    person = json.loads((out / "compare_brain" / "person_vs_frontal" / "compare.json")
                        .read_text())
    assert -1 <= person["pearson_best"] <= 1 and 0 < person["p_value"] <= 1
    if importlib.util.find_spec("commands.report") is not None:
        html = (out / "report.html").read_text()
        assert "<html" in html.lower() and len(html) > 100_000


def test_demo_rejects_unknown_steps(capsys):
    from commands.demo import main

    assert main(["--steps", "stimuli,plots"]) == 2
    assert "unknown step(s) ['plots']" in capsys.readouterr().err


def test_demo_rejects_a_bad_scanner_option(capsys):
    from commands.demo import main

    assert main(["--scan-trials", "1", "--steps", "scanner"]) == 2
    assert "--scan-trials must be >= 2 (trials per scanner run), got 1" in \
        capsys.readouterr().err
    assert main(["--scan-speed", "0", "--steps", "scanner"]) == 2
    assert "--scan-speed must be in (0, 1000], got 0" in capsys.readouterr().err


def test_demo_says_which_step_to_run_first(tmp_path, capsys):
    from commands.demo import main

    assert main(["--out", str(tmp_path / "demo"), "--steps", "fmri"]) == 1
    err = capsys.readouterr().err
    assert "no scanner session in" in err and "run the 'scanner' step first" in err


def test_demo_refuses_an_out_that_is_a_file(tmp_path, capsys):
    from commands.demo import main

    f = tmp_path / "taken"
    f.write_text("a person's notes")
    assert main(["--out", str(f / "demo"), "--steps", "stimuli"]) == 1
    assert "is a file" in capsys.readouterr().err
    assert f.read_text() == "a person's notes"
