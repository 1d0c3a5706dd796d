"""Crash-safe files: append + fsync, never overwrite, repair on resume, BIDS copy."""

import csv
import json

import pytest

from experiments import datafile
from experiments.datafile import COLUMNS, SessionFiles


def _row(t):
    return {"participant": "P01", "session": 1, "trial": t, "block": "main",
            "stimulus_id": f"s{t}", "correct": t % 2, "rt": 0.5, "n_bubbles": 10,
            "mask_seed": 3, "mask_index": t, "quest_intensity": None}


def _centers(t):
    return {"trial": t, "mask_seed": 3, "mask_index": t, "centers": [[[t, 1], [2, 3]]]}


def _write(stem, n):
    files = SessionFiles(stem)
    files.write_sidecar({"format": datafile.SIDECAR_FORMAT, "version": 1})
    for t in range(n):
        files.write_trial(_row(t), _centers(t))
    return files


def test_rows_are_on_disk_as_soon_as_written(tmp_path):
    files = _write(tmp_path / "P01_x_date", 3)
    # still open: another reader sees every finished trial
    with open(files.csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["trial"] for r in rows] == ["0", "1", "2"]
    assert list(rows[0]) == list(COLUMNS)
    assert rows[0]["quest_intensity"] == "" and rows[1]["correct"] == "1"
    lines = files.centers_path.read_text().splitlines()
    assert [json.loads(x)["trial"] for x in lines] == [0, 1, 2]
    files.close()
    with pytest.raises(ValueError, match=r"row has unknown columns \['nope'\]"):
        SessionFiles(tmp_path / "other").write_trial({"nope": 1}, _centers(0))


def test_names_are_never_reused(tmp_path):
    first = datafile.unique_stem(tmp_path, "P01", "exp", "2026-01-01_10h00.00.000")
    _write(first, 1).close()
    second = datafile.unique_stem(tmp_path, "P01", "exp", "2026-01-01_10h00.00.000")
    assert second != first and second.name.endswith("_2")
    with pytest.raises(FileExistsError):
        SessionFiles(first)          # creating never replaces an existing file
    assert datafile.stem_of(f"{first}_centers.jsonl") == first
    assert datafile.stem_of(f"{first}.json") == first


def test_a_second_session_the_same_minute_gets_new_names(fast_cfg, tmp_path,
                                                        monkeypatch):
    from experiments.responders import ScriptedResponder
    from experiments.session import Session

    monkeypatch.setattr(datafile, "date_string", lambda now=None: "2026-01-01_10h00.00.000")

    def run():
        return Session(fast_cfg, "P01", data_dir=tmp_path, presenter="headless",
                       responder=ScriptedResponder.random(0)).run()

    first = run()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    second = run()
    assert first.stem.name == "P01_bubbles_expressions_2026-01-01_10h00.00.000"
    assert second.stem.name == first.stem.name + "_2"
    assert {p: p.read_bytes() for p in before} == before        # nothing rewritten
    beh = sorted(p.name for p in (tmp_path / "sub-P01" / "beh").iterdir())
    assert beh == ["sub-P01_task-bubblesexpressions_beh.json",
                   "sub-P01_task-bubblesexpressions_beh.tsv",
                   "sub-P01_task-bubblesexpressions_run-2_beh.json",
                   "sub-P01_task-bubblesexpressions_run-2_beh.tsv"]


@pytest.mark.parametrize("pid", ["", "../x", "a/b", ".hidden", "a b"])
def test_participant_ids_must_be_file_safe(pid):
    with pytest.raises(ValueError, match=r"participant must start with a letter or "
                                         r"digit"):
        datafile.validate_participant(pid)


def test_resume_drops_half_written_lines(tmp_path):
    files = _write(tmp_path / "s", 4)
    files.close()
    with open(files.csv_path, "a") as f:
        f.write("P01,1,4,main,s4,,,f,")          # killed while writing trial 4's row
    with open(files.centers_path, "a") as f:
        f.write(json.dumps(_centers(4)) + "\n")  # its centres made it
        f.write('{"trial": 5, "mask_se')          # and half of a line after that
    state = datafile.open_for_resume(files.csv_path)
    assert [r["trial"] for r in state.rows] == ["0", "1", "2", "3"]
    assert [c["trial"] for c in state.centers] == [0, 1, 2, 3]
    assert len(state.dropped) == 3
    assert any("half-written last line of s.csv" in m for m in state.dropped)
    assert any("centres of trial 4" in m for m in state.dropped)
    # the files are cut back to whole trials, ready to be appended to
    assert files.csv_path.read_text().endswith("\n")
    assert len(files.centers_path.read_text().splitlines()) == 4
    again = SessionFiles(files.stem, resume=True)
    again.write_trial(_row(4), _centers(4))
    again.close()
    state = datafile.open_for_resume(files.stem)
    assert [r["trial"] for r in state.rows] == ["0", "1", "2", "3", "4"]
    assert state.dropped == []


def test_resume_refuses_inconsistent_files(tmp_path):
    files = _write(tmp_path / "s", 2)
    files.close()
    with pytest.raises(FileNotFoundError, match=r"cannot resume .* is missing"):
        datafile.open_for_resume(tmp_path / "nothing.csv")
    lines = files.centers_path.read_text().splitlines(keepends=True)
    files.centers_path.write_text(lines[0])
    with pytest.raises(ValueError, match=r"the centres of trial 1 are missing"):
        datafile.open_for_resume(files.csv_path)
    files.sidecar_path.write_text('{"format": "other"}')
    with pytest.raises(ValueError, match=r"is not a bubbles session sidecar"):
        datafile.open_for_resume(files.csv_path)


def test_bids_export_uses_na_and_never_overwrites(tmp_path):
    files = _write(tmp_path / "P-01_exp", 2)
    files.close()
    tsv, js = datafile.export_bids(files.csv_path, tmp_path, "P-01", "my_task")
    assert tsv == tmp_path / "sub-P01" / "beh" / "sub-P01_task-mytask_beh.tsv"
    lines = tsv.read_text().splitlines()
    assert lines[0].split("\t") == list(COLUMNS)
    assert "n/a" in lines[1].split("\t")
    info = json.loads(js.read_text())
    assert info["TaskName"] == "mytask" and info["rt"]["Units"] == "s"
    tsv2, _ = datafile.export_bids(files.csv_path, tmp_path, "P-01", "my_task")
    assert tsv2.name == "sub-P01_task-mytask_run-2_beh.tsv"
    assert tsv.read_text().splitlines() == lines
