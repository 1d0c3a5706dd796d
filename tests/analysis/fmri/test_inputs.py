"""Inputs: BIDS discovery, confounds through nilearn, and every bad input refused by name
(file and line) with nothing written."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from analysis.fmri.inputs import find_bids, load_study, read_confounds, repetition_time
from commands.fmri import main

nib = pytest.importorskip("nibabel")


def test_find_bids_and_fmriprep_confounds(tiny):
    found = find_bids(tiny.root, tiny.subject, tiny.task)
    assert found["bold"] == tiny.bold and found["events"] == tiny.events
    assert found["confounds"] == tiny.confounds and found["mask"] == tiny.mask
    assert found["trials"].name == tiny.trials.name
    study = load_study(found["bold"], found["events"], found["trials"],
                       mask=found["mask"], confounds=found["confounds"])
    run = study.runs[0]
    assert run.t_r == 2.0 and run.n_scans == nib.load(str(tiny.bold[0])).shape[3]
    # nilearn's load_confounds with ('motion', 'wm_csf'), motion 'basic'
    assert sorted(run.confound_names) == sorted(
        ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "csf",
         "white_matter"])
    assert run.confounds.shape == (run.n_scans, 8)
    assert len(study.rows) == 60 and study.n_voxels == int(
        np.asarray(nib.load(str(tiny.mask)).dataobj).sum())
    # the cue event (trial n/a) is kept as an event without a session row
    assert (run.events["row"] == -1).sum() == 1


def test_named_strategy_and_plain_tsv(tiny, tmp_path):
    n = nib.load(str(tiny.bold[0])).shape[3]
    values, names, mask = read_confounds(tiny.confounds[0], n, strategy="simple")
    assert "trans_x" in names and values.shape[0] == n and mask is None
    plain = tmp_path / "motion.tsv"
    pd.read_csv(tiny.confounds[0], sep="\t")[["trans_x", "rot_z_derivative1"]].to_csv(
        plain, sep="\t", index=False, na_rep="n/a")
    values, names, _ = read_confounds(plain, n)
    assert names == ["trans_x", "rot_z_derivative1"]
    assert np.all(np.isfinite(values)) and np.allclose(values.mean(axis=0), 0, atol=1e-3)


def _copy(tiny, tmp_path):
    """A writable copy of the tiny study's files: dict of lists of paths."""
    root = tmp_path / "bids"
    shutil.copytree(tiny.root, root)
    rel = lambda p: root / p.relative_to(tiny.root)  # noqa: E731
    return {"bold": [rel(p) for p in tiny.bold], "events": [rel(p) for p in tiny.events],
            "confounds": [rel(p) for p in tiny.confounds], "mask": rel(tiny.mask),
            "trials": rel(tiny.trials), "root": root}


def _run(files, out, capsys, **change):
    f = {**files, **change}
    argv = ["analyze", "--bold", *map(str, f["bold"]), "--events", *map(str, f["events"]),
            "--trials", str(f["trials"]), "--mask", str(f["mask"]), "--confounds",
            *map(str, f["confounds"]), "--out", str(out), "--resolution", "16", "--quiet",
            "--no-figures"]
    code = main(argv)
    return code, capsys.readouterr().err


def _edit_events(path, line, column, value):
    ev = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    ev.loc[line - 2, column] = value
    ev.to_csv(path, sep="\t", index=False)


def _save_like(path, data, ref, affine=None):
    img = nib.Nifti1Image(data, ref.affine if affine is None else affine, ref.header)
    nib.save(img, str(path))


CASES = ["outside", "tr", "three_d", "mask_shape", "mask_affine", "unknown_trial",
         "two_runs", "nan", "confounds_length"]


@pytest.mark.parametrize("case", CASES)
def test_bad_inputs_fail_by_name_with_nothing_written(tiny, tmp_path, capsys, case):
    files = _copy(tiny, tmp_path)
    out = tmp_path / "out"
    ev0, ev1 = files["events"]
    bold0 = files["bold"][0]
    img = nib.load(str(bold0))
    if case == "outside":
        _edit_events(ev0, 4, "onset", "9999.5")
        expect = [ev0.name, "line 4", "outside its run"]
    elif case == "tr":
        side = bold0.parent / bold0.name.replace(".nii.gz", ".json")
        side.write_text(json.dumps({"RepetitionTime": 2.5}))
        expect = [bold0.name, "header 2 s", "RepetitionTime 2.5 s"]
    elif case == "three_d":
        _save_like(bold0, np.asarray(img.dataobj)[..., 0], img)
        expect = [bold0.name, "3-D image", "must be 4-D"]
    elif case == "mask_shape":
        m = nib.load(str(files["mask"]))
        nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), m.affine), str(files["mask"]))
        expect = [files["mask"].name, "shape (5, 5, 5)", "resample"]
    elif case == "mask_affine":
        m = nib.load(str(files["mask"]))
        aff = m.affine.copy()
        aff[0, 3] += 6
        nib.save(nib.Nifti1Image(np.asarray(m.dataobj), aff), str(files["mask"]))
        expect = [files["mask"].name, "another affine"]
    elif case == "unknown_trial":
        _edit_events(ev1, 3, "trial", "999")
        expect = [ev1.name, "line 3", "trial 999 is not in the session"]
    elif case == "two_runs":
        first = pd.read_csv(ev0, sep="\t", dtype=str)["trial"].iloc[1]
        _edit_events(ev1, 5, "trial", first)
        expect = [f"session trial {first} appears twice", ev0.name, "line 3", ev1.name,
                  "line 5"]
    elif case == "nan":
        data = np.asarray(img.dataobj).astype(np.float32)
        ijk = tuple(int(v) for v in np.argwhere(np.asarray(
            nib.load(str(files["mask"])).dataobj) > 0)[7])
        data[ijk + (3,)] = np.nan
        _save_like(bold0, data, img)
        expect = [bold0.name, "NaN", f"voxel {ijk}", "volume 3"]
    elif case == "confounds_length":
        c = pd.read_csv(files["confounds"][1], sep="\t")
        c.iloc[:-2].to_csv(files["confounds"][1], sep="\t", index=False, na_rep="n/a")
        expect = [files["confounds"][1].name, f"has {len(c) - 2} rows", f"{len(c)} volumes"]
    code, err = _run(files, out, capsys)
    assert code == 1, err
    for text in expect:
        assert text in err, (text, err)
    assert not out.exists()


def test_header_tr_is_used_without_sidecar(tiny, tmp_path):
    files = _copy(tiny, tmp_path)
    b = files["bold"][0]
    (b.parent / b.name.replace(".nii.gz", ".json")).unlink()
    assert repetition_time(b) == 2.0


def test_epi_mask_is_computed_when_none_is_given(planted):
    study = load_study(planted.bold, planted.events, planted.trials)
    truth = np.asarray(nib.load(str(planted.mask)).dataobj) > 0
    overlap = (study.mask & truth).sum() / truth.sum()
    # nilearn's opening (2 voxels) erodes the edge of this small simulated brain
    assert overlap > 0.6 and (study.mask & ~truth).sum() < 0.05 * truth.sum()
    assert "compute_epi_mask" in study.mask_source
