"""Crash-safe files: append + fsync, never overwrite, repair on resume, BIDS copy."""

import csv
import errno
import json
import re

import pytest

from analysis import session_files
from analysis.session_files import COLUMNS
from experiments import datafile
from experiments.datafile import SessionFiles
from experiments.responders import ScriptedResponder
from experiments.session import Session


def _row(t):
    return {"participant": "P01", "session": 1, "trial": t, "block": "main",
            "stimulus_id": f"s{t}", "correct": t % 2, "rt": 0.5, "n_bubbles": 10,
            "mask_seed": 3, "mask_index": t, "quest_intensity": 1.0}


def _centers(t):
    return {"trial": t, "mask_seed": 3, "mask_index": t, "centers": [[[t, 1], [2, 3]]]}


def _write(stem, n):
    files = SessionFiles(stem)
    files.write_sidecar({"format": session_files.SESSION_FORMAT,
                         "version": session_files.SESSION_VERSION,
                         "seeds": {"order_seed": 2, "mask_seed": 3}})
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
    assert rows[0]["quest_intensity"] == "1.0" and rows[1]["correct"] == "1"
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
    assert session_files.stem_of(f"{first}_centers.jsonl") == first
    assert session_files.stem_of(f"{first}.json") == first


def test_a_second_session_the_same_minute_gets_new_names(fast_cfg, tmp_path,
                                                        monkeypatch):
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
    beh = sorted(p.name for p in (tmp_path / "sub-P01" / "ses-1" / "beh").iterdir())
    assert beh == ["sub-P01_ses-1_task-bubblesexpressions_beh.json",
                   "sub-P01_ses-1_task-bubblesexpressions_beh.tsv",
                   "sub-P01_ses-1_task-bubblesexpressions_run-2_beh.json",
                   "sub-P01_ses-1_task-bubblesexpressions_run-2_beh.tsv"]


@pytest.mark.parametrize("pid", ["", "../x", "a/b", ".hidden", "a b", "P_01", "P-01",
                                 "P.01", "P01_", "é1"])
def test_participant_ids_must_be_bids_labels(pid):
    # 'P_01' and 'P01' would both become sub-P01 in the BIDS copy
    with pytest.raises(ValueError, match=r"participant must be a BIDS label: one or more "
                                         r"letters and digits only"):
        datafile.validate_participant(pid)
    with pytest.raises(ValueError, match=r"^--participant must be a BIDS label"):
        datafile.validate_participant(pid, name="--participant")
    assert datafile.validate_participant(" P01 ") == "P01"
    assert datafile.validate_participant("anna2") == "anna2"


def test_session_refuses_a_non_bids_participant_before_writing(fast_cfg, tmp_path):
    with pytest.raises(ValueError, match=r"participant must be a BIDS label"):
        Session(fast_cfg, "P_01", data_dir=tmp_path, presenter="headless")
    assert list(tmp_path.iterdir()) == []


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
    assert len(state.dropped) == 5                # 3 drops + 2 backups
    assert any("half-written last line of s.csv" in m for m in state.dropped)
    assert any("centres of trial 4" in m for m in state.dropped)
    assert any("copied s.csv to s.csv.bak" in m for m in state.dropped)
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
    with pytest.raises(ValueError, match=r"s_centers\.jsonl' line 2 is missing: "
                                         r".*the centres of trial 1 and later are "
                                         r"missing"):
        datafile.open_for_resume(files.csv_path)
    files.sidecar_path.write_text('{"format": "other"}')
    with pytest.raises(ValueError, match=r"is not a bubbles session sidecar"):
        datafile.open_for_resume(files.csv_path)


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _torn(files, n):
    """A session of n trials whose last CSV row and a centres line were cut short."""
    with open(files.csv_path, "a") as f:
        f.write(f"P01,1,{n},main,s{n},,,f,")
    with open(files.centers_path, "a") as f:
        f.write(json.dumps(_centers(n)) + "\n")


@pytest.mark.parametrize("which, bad_line", [("csv", 3), ("centers", 2)])
def test_resume_refuses_damage_before_the_last_line(tmp_path, which, bad_line):
    files = _write(tmp_path / "s", 5)
    files.close()
    path = files.csv_path if which == "csv" else files.centers_path
    lines = path.read_text().splitlines(keepends=True)
    lines[bad_line - 1] = "garbage, not a trial\n"           # damage mid-file
    path.write_text("".join(lines))
    _torn(files, 5)                                          # and a torn end
    before = _snapshot(tmp_path)
    name = "s.csv" if which == "csv" else "s_centers.jsonl"
    with pytest.raises(ValueError, match=rf"cannot resume: '.*{name}' line {bad_line} "
                                         rf".*nothing was changed"):
        datafile.open_for_resume(files.csv_path)
    assert _snapshot(tmp_path) == before                     # later trials kept, no .bak


@pytest.mark.parametrize("line, column, value, expected", [
    (3, "correct", "", "expected 0 or 1"),
    (4, "correct", "yes", "expected 0 or 1"),
    (2, "quest_intensity", "", "expected a finite number"),
    (6, "quest_intensity", "abc", "expected a finite number"),   # the last row
    (5, "quest_intensity", "nan", "expected a finite number"),
    (3, "mask_index", "7", "expected 1"),
    (4, "mask_seed", "4", "expected 3 (the sidecar's seeds.mask_seed)"),
    (2, "block", "mian", "expected 'practice' or 'main'"),
    (4, "n_bubbles", "12.5", "expected a whole number >= 1 (the bubbles shown)"),
    (3, "n_bubbles", "", "expected a whole number >= 1 (the bubbles shown)"),
    (5, "trial", "5", "expected 3 (trials are numbered 0, 1, 2 ... in file order"),
])
def test_resume_refuses_a_garbled_row_before_cutting(tmp_path, line, column, value,
                                                     expected):
    files = _write(tmp_path / "s", 5)
    files.close()
    lines = files.csv_path.read_text().splitlines(keepends=True)
    fields = next(csv.reader([lines[line - 1]]))
    fields[COLUMNS.index(column)] = value
    lines[line - 1] = ",".join(fields) + "\n"
    files.csv_path.write_text("".join(lines))
    _torn(files, 5)                                   # a torn end that would be cut
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=rf"cannot resume: '.*s\.csv' line {line} column "
                                         rf"'{column}' is {re.escape(repr(value))}, "
                                         rf"{re.escape(expected)}.*nothing "
                                         rf"was changed"):
        datafile.open_for_resume(files.csv_path)
    assert _snapshot(tmp_path) == before              # nothing cut, no .bak


def test_resume_refuses_centres_of_another_mask_seed(tmp_path):
    files = _write(tmp_path / "s", 3)
    files.close()
    lines = files.centers_path.read_text().splitlines(keepends=True)
    lines[1] = json.dumps({**_centers(1), "mask_seed": 9}) + "\n"
    files.centers_path.write_text("".join(lines))
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"s_centers\.jsonl' line 2 has mask_seed 9"):
        datafile.open_for_resume(files.csv_path)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("column, value", [("quest_intensity", ""),
                                           ("n_bubbles", "7.5"), ("correct", "2")])
def test_session_resume_refuses_a_garbled_middle_row_before_repair(fast_cfg, tmp_path,
                                                                  column, value):
    answers = ["happy", "neutral", "happy", "neutral", "happy", "escape"]
    result = Session(fast_cfg, "P01", data_dir=tmp_path, presenter="headless",
                     responder=ScriptedResponder(answers)).run()
    assert result.escaped and result.n_trials == 5
    csv_path = tmp_path / f"{result.stem.name}.csv"
    lines = csv_path.read_text().splitlines(keepends=True)
    fields = next(csv.reader([lines[4]]))                # trial 3, a main-block row
    assert fields[COLUMNS.index("block")] == "main"
    fields[COLUMNS.index(column)] = value
    lines[4] = ",".join(fields) + "\n"
    csv_path.write_text("".join(lines) + "P01,1,5,main,id0")   # and a torn last line
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=rf"line 5 column '{column}' is '{value}'"):
        Session(resume=csv_path, presenter="headless",
                responder=ScriptedResponder.random(0)).run()
    assert _snapshot(tmp_path) == before                 # no cut, no .bak, no log


def test_a_csv_cut_in_a_middle_line_is_refused_naming_the_csv(tmp_path):
    files = _write(tmp_path / "s", 8)
    files.close()
    data = files.csv_path.read_bytes()
    starts = [i + 1 for i, b in enumerate(data) if b == ord("\n")]
    files.csv_path.write_bytes(data[: starts[3] + 12])   # cut inside trial 3's row
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"cannot resume: '.*s\.csv' line 5 is cut short "
                                         r"or missing: the CSV ends after 3 complete "
                                         r"trial\(s\) but s_centers\.jsonl records 5 "
                                         r"more \(trials 3 to 7\).*nothing was changed"):
        datafile.open_for_resume(files.csv_path)
    assert _snapshot(tmp_path) == before


def test_resume_drops_an_unparsable_last_line_only(tmp_path):
    files = _write(tmp_path / "s", 3)
    files.close()
    with open(files.csv_path, "a") as f:
        f.write("P01,1,3,main\n")                # complete line, too few fields
    with open(files.centers_path, "a") as f:
        f.write("\x00\x00\x00\n")                   # garbage after the last record
    state = datafile.open_for_resume(files.csv_path)
    assert [r["trial"] for r in state.rows] == ["0", "1", "2"]
    assert len(state.centers) == 3
    assert any("malformed last line of s.csv (line 5" in m for m in state.dropped)
    assert any("malformed last line of s_centers.jsonl (line 4" in m
               for m in state.dropped)


def test_resume_backs_up_before_cutting_and_never_overwrites_a_backup(tmp_path):
    files = _write(tmp_path / "s", 2)
    files.close()
    _torn(files, 2)
    original = files.csv_path.read_bytes(), files.centers_path.read_bytes()
    # checking only changes nothing on disk
    state = datafile.open_for_resume(files.csv_path, repair=False)
    assert (files.csv_path.read_bytes(), files.centers_path.read_bytes()) == original
    assert not list(tmp_path.glob("*.bak*"))
    assert state.repair() == [tmp_path / "s.csv.bak", tmp_path / "s_centers.jsonl.bak"]
    assert (tmp_path / "s.csv.bak").read_bytes() == original[0]
    assert (tmp_path / "s_centers.jsonl.bak").read_bytes() == original[1]
    assert len(files.csv_path.read_text().splitlines()) == 3
    _torn(files, 2)                                          # torn again
    state = datafile.open_for_resume(files.csv_path)
    assert [b.name for b in state.backups] == ["s.csv.bak-2", "s_centers.jsonl.bak-2"]
    assert (tmp_path / "s.csv.bak").read_bytes() == original[0]   # first backup kept
    assert datafile.open_for_resume(files.csv_path).backups == []  # nothing to cut


def test_a_refused_resume_changes_nothing(fast_cfg, tmp_path):
    result = Session(fast_cfg, "P01", data_dir=tmp_path, presenter="headless",
                     responder=ScriptedResponder.random(0)).run()
    assert result.completed
    with open(f"{result.stem}.csv", "a") as f:
        f.write("P01,1,8,main,id0")                           # a torn line after the end
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"nothing to resume"):
        Session(resume=result.stem, presenter="headless")
    assert _snapshot(tmp_path) == before                      # checked before cutting


def test_bids_export_uses_na_and_sessions_and_never_overwrites(tmp_path):
    files = _write(tmp_path / "P01_exp", 2)
    files.close()
    tsv, js = datafile.export_bids(files.csv_path, tmp_path, "P01", "my_task",
                                   session=2)
    assert tsv == (tmp_path / "sub-P01" / "ses-2" / "beh"
                   / "sub-P01_ses-2_task-mytask_beh.tsv")
    assert js == tsv.with_name("sub-P01_ses-2_task-mytask_beh.json")
    lines = tsv.read_text().splitlines()
    assert lines[0].split("\t") == list(COLUMNS)
    assert "n/a" in lines[1].split("\t")
    info = json.loads(js.read_text())
    assert info["TaskName"] == "mytask" and info["rt"]["Units"] == "s"
    assert info["Source"] == "P01_exp.csv"
    other = _write(tmp_path / "P01_exp_2", 1)               # another session CSV
    other.close()
    tsv2, _ = datafile.export_bids(other.csv_path, tmp_path, "P01", "my_task",
                                   session=2)
    assert tsv2.name == "sub-P01_ses-2_task-mytask_run-2_beh.tsv"
    assert tsv.read_text().splitlines() == lines              # never overwritten
    with pytest.raises(ValueError, match=r"session must be an integer >= 0"):
        datafile.export_bids(files.csv_path, tmp_path, "P01", "my_task", session=-1)
    # a participant that is not a BIDS label would be merged with another one
    with pytest.raises(ValueError, match=r"participant must be a BIDS label"):
        datafile.export_bids(files.csv_path, tmp_path, "P_01", "my_task", session=2)


def test_bids_copy_of_a_resumed_session_is_replaced_not_added(tmp_path):
    files = _write(tmp_path / "s", 2)
    files.close()
    tsv, js = datafile.export_bids(files.csv_path, tmp_path, "P01", "t", session=1)
    more = SessionFiles(files.stem, resume=True)             # the session continues
    more.write_trial(_row(2), _centers(2))
    more.close()
    csv_before = files.csv_path.read_bytes()
    again = datafile.export_bids(files.csv_path, tmp_path, "P01", "t", session=1)
    assert again == (tsv, js)                                 # no _run-2
    assert sorted(p.name for p in tsv.parent.iterdir()) == [js.name, tsv.name]
    assert [x.split("\t")[2] for x in tsv.read_text().splitlines()[1:]] == \
        ["0", "1", "2"]                                       # the whole session, once
    assert files.csv_path.read_bytes() == csv_before          # the CSV is not touched


def _full_disk_on_trial(monkeypatch, trial):
    """SessionFiles.write_trial fails as a full disk does once ``trial`` is reached."""
    real = SessionFiles.write_trial

    def write_trial(self, row, centers):
        if row["trial"] >= trial:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, row, centers)
    monkeypatch.setattr(SessionFiles, "write_trial", write_trial)


def test_a_full_disk_ends_as_a_crash_that_resumes(fast_cfg, tmp_path, monkeypatch,
                                                  capsys):
    _full_disk_on_trial(monkeypatch, 3)
    session = Session(fast_cfg, "P01", data_dir=tmp_path, presenter="headless",
                      responder=ScriptedResponder.random(0))
    with pytest.raises(OSError, match="No space left on device"):
        session.run()
    stem = session.files.stem
    err = capsys.readouterr().err
    assert (f"Session interrupted by an error after 3 trials; they are saved in {stem}.*"
            f" (continue with: bubbles run --resume {stem}.csv)") in err
    meta = json.loads(open(f"{stem}.json").read())
    assert meta["status"] == "crashed"
    assert meta["runs"][0]["status"] == "crashed" and meta["runs"][0]["n_trials"] == 3
    assert meta["runs"][0]["last_trial"] == 2
    assert "session crashed after 3 trials" in open(f"{stem}.log").read()
    monkeypatch.undo()                                   # room on the disk again
    again = Session(resume=stem, presenter="headless",
                    responder=ScriptedResponder.random(1)).run()
    assert again.completed and again.n_trials == 8
    with open(f"{stem}.csv", newline="") as f:
        assert [int(r["trial"]) for r in csv.DictReader(f)] == list(range(8))


def test_a_full_disk_that_also_refuses_the_sidecar_still_says_how_to_resume(
        fast_cfg, tmp_path, monkeypatch, capsys):
    _full_disk_on_trial(monkeypatch, 3)
    real = datafile.write_sidecar
    calls = []

    def write_sidecar(path, meta):
        calls.append(meta["status"])
        if meta["status"] != "running":                  # the disk is full by then
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, meta)
    monkeypatch.setattr(datafile, "write_sidecar", write_sidecar)
    session = Session(fast_cfg, "P01", data_dir=tmp_path, presenter="headless",
                      responder=ScriptedResponder.random(0))
    with pytest.raises(OSError, match="No space left on device"):
        session.run()
    stem = session.files.stem
    err = capsys.readouterr().err
    assert "Session interrupted by an error after 3 trials" in err
    assert (f"the sidecar {stem}.json could not be updated ([Errno 28] No space left on "
            f"device): it still says 'running', which --resume handles") in err
    assert f"(continue with: bubbles run --resume {stem}.csv)" in err
    assert calls == ["running", "crashed"]
    assert json.loads(open(f"{stem}.json").read())["status"] == "running"
    assert not list(tmp_path.glob("*.tmp"))             # no half-written sidecar left
    monkeypatch.undo()
    again = Session(resume=stem, presenter="headless",
                    responder=ScriptedResponder.random(1)).run()
    assert again.completed
    runs = json.loads(open(f"{stem}.json").read())["runs"]
    assert [(r["status"], r["first_trial"], r["n_trials"], r["last_trial"])
            for r in runs] == [("interrupted", 0, 3, 2), ("completed", 3, 5, 7)]
