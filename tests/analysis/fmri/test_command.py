"""``bubbles fmri simulate | analyze | voxel`` end to end."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis import TrialTable
from analysis.diagnostic import DiagnosticImage
from commands.fmri import main

nib = pytest.importorskip("nibabel")
pytest.importorskip("zarr")


def test_simulate_analyze_and_export_a_voxel_and_a_region(planted, tmp_path, capsys):
    trials = planted.trials
    bids = tmp_path / "bids"
    assert main(["simulate", "--trials", str(trials), "--out", str(bids), "--runs", "2",
                 "--shape", "10", "12", "10", "--gain", "1.2"]) == 0
    truth = json.loads((bids / "derivatives/truth/sub-01_task-bubbles_truth.json")
                       .read_text())
    assert truth["n_runs"] == 2 and truth["counts"]["eyes"] > 0
    # refused without --force: the study exists
    assert main(["simulate", "--trials", str(trials), "--out", str(bids)]) == 1
    assert "--force" in capsys.readouterr().err
    labels = bids / "derivatives/truth/sub-01_task-bubbles_labels.nii.gz"
    roi = tmp_path / "regions.nii.gz"
    roi.write_bytes(labels.read_bytes())
    pd.DataFrame({"index": [1, 2, 3], "name": ["frontal", "occipital", "visual"]}).to_csv(
        tmp_path / "regions.tsv", sep="\t", index=False)
    out = tmp_path / "res"
    code = main(["analyze", "--bids", str(bids), "--subject", "01", "--task", "bubbles",
                 "--out", str(out), "--resolution", "32", "--roi", str(roi), "--quiet"])
    assert code == 0, capsys.readouterr().err
    for name in ("peak_z.nii.gz", "n_significant.nii.gz", "roi_eyes_z.nii.gz",
                 "roi_mouth_z.nii.gz", "betas.nii.gz", "betas.tsv", "summary.json",
                 "peak_z.png", "roi_eyes_z.png", "gallery.png", "roi_ci.npz", "roi_ci.json"):
        assert (out / name).is_file(), name
    betas = nib.load(str(out / "betas.nii.gz"))
    tsv = pd.read_csv(out / "betas.tsv", sep="\t")
    assert betas.shape[3] == len(tsv) == len(TrialTable.read(trials))
    assert tsv["run"].tolist() == sorted(tsv["run"].tolist())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resolution"] == [32, 32] and summary["n_voxels_significant"] > 0
    assert {r["name"] for r in summary["regions"]} == {"frontal", "occipital", "visual"}
    # the strongest voxel, exported as a DiagnosticImage
    best = summary["strongest_voxels"][0]["ijk"]
    assert main(["voxel", str(out), "--ijk", *map(str, best), "--out",
                 str(tmp_path / "vox")]) == 0
    img = DiagnosticImage.load(tmp_path / "vox")
    assert img.observer == "voxel" and img.z.shape == (32, 32)
    assert img.info["voxel"] == ",".join(map(str, best))
    assert np.abs(img.z).max() == pytest.approx(summary["strongest_voxels"][0]["peak_z"],
                                                rel=1e-5)
    assert main(["voxel", str(out), "--roi", "frontal", "--out",
                 str(tmp_path / "frontal")]) == 0
    region = DiagnosticImage.load(tmp_path / "frontal")
    assert region.observer == "roi" and region.info["region"] == "frontal"
    regions = DiagnosticImage.load(out / "roi_ci")
    assert regions.dims == ("target", "y", "x") and regions.targets == [
        "frontal", "occipital", "visual"]
    # the frontal (eye) region's image lies on the eyes, the occipital on the mouth
    roi_eyes = np.asarray(nib.load(str(out / "roi_eyes_z.nii.gz")).dataobj)
    lab = np.asarray(nib.load(str(labels)).dataobj)
    assert roi_eyes[lab == 1].mean() > 2 > roi_eyes[lab == 2].mean()
    # the exported voxel as a 'behaviour' image: it correlates 1 with itself
    out2 = tmp_path / "res2"
    assert main(["analyze", "--bids", str(bids), "--subject", "01", "--task", "bubbles",
                 "--out", str(out2), "--resolution", "32", "--behaviour",
                 str(tmp_path / "vox"), "--no-figures", "--quiet"]) == 0
    r = np.asarray(nib.load(str(out2 / "behaviour_r.nii.gz")).dataobj)
    assert r[tuple(best)] == pytest.approx(1.0, abs=1e-5)
    # an unknown voxel
    assert main(["voxel", str(out), "--ijk", "0", "0", "0", "--out",
                 str(tmp_path / "none")]) == 1
    assert "not in the brain mask" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["analyze", "--out", "x"], "--bold"),
    (["analyze", "--bids", "d", "--out", "x"], "--subject and --task"),
    (["analyze", "--bold", "a", "--events", "b", "--out", "x"], "--trials"),
    (["analyze", "--bold", "a", "--events", "b", "--trials", "c", "--out", "x",
      "--permutations", "5"], "--permutations"),
    (["voxel", "d", "--out", "x"], "--ijk"),
])
def test_usage_errors_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
