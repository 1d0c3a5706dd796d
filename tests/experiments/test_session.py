"""Whole sessions in a PsychoPy window (under xvfb-run): files, drawn frames, escape."""

import csv
import json

import numpy as np
import pytest

from analysis import TrialTable
from analysis.session_files import COLUMNS
from experiments.responders import ScriptedResponder
from experiments.session import Session
from experiments.trials import StimulusBuilder

pytestmark = pytest.mark.window


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_short_simulated_session_writes_every_file(fast_cfg, tmp_path):
    result = Session(fast_cfg, "P01", data_dir=tmp_path,
                     responder=ScriptedResponder.random(0)).run()
    assert result.completed and not result.escaped and result.n_trials == 8
    stem = result.stem
    assert stem.parent == tmp_path and stem.name.startswith("P01_bubbles_expressions_")
    rows = _rows(f"{stem}.csv")
    assert list(rows[0]) == list(COLUMNS)
    assert [r["trial"] for r in rows] == [str(t) for t in range(8)]
    assert [r["block"] for r in rows] == ["practice"] * 2 + ["main"] * 6
    assert all(r["mask_index"] == r["trial"] for r in rows)
    assert all(r["quest_intensity"] == "" for r in rows[:2])
    for r in rows[2:]:
        assert float(r["quest_intensity"]) == pytest.approx(np.log10(int(r["n_bubbles"])))
        assert float(r["quest_sd"]) > 0
    assert {r["frames_shown"] for r in rows} == {"1"}
    assert {r["participant"] for r in rows} == {"P01"}
    assert rows[0]["psychopyVersion"].startswith("2026")
    assert float(rows[0]["frameRate"]) == 60.0
    onsets = [float(r["onset"]) for r in rows]
    assert onsets == sorted(onsets)
    centers = [json.loads(x) for x in open(f"{stem}_centers.jsonl")]
    assert [c["trial"] for c in centers] == list(range(8))
    assert all(len(c["centers"]) == 2 for c in centers)                  # two bands
    meta = json.loads(open(f"{stem}.json").read())
    for key in ("format", "version", "config", "spec", "seed", "key_mapping", "versions",
                "monitor", "expName", "participant"):
        assert key in meta
    assert meta["format"] == "bubbles.session" and meta["status"] == "completed"
    assert set(meta["key_mapping"]) == {"happy", "fearful", "neutral"}
    assert meta["monitor"]["size_pix"] == [160, 120]
    log = open(f"{stem}.log").read()
    assert "trial 7 main" in log and "intervals_ms" in log
    bids = (tmp_path / "sub-P01" / "ses-1" / "beh"
            / "sub-P01_ses-1_task-bubblesexpressions_beh.tsv")
    assert bids.is_file() and bids.with_suffix(".json").is_file()
    assert len(bids.read_text().splitlines()) == 9


def test_analysis_reads_the_session(fast_cfg, tmp_path):
    session = Session(fast_cfg, "P02", data_dir=tmp_path,
                      responder=ScriptedResponder.random(1))
    result = session.run()
    # reading regenerates every trial's centres and checks them against the centres file
    table = TrialTable.read(f"{result.stem}.csv")
    assert len(table) == 8 and table.spec == session.spec


@pytest.mark.parametrize("size_deg", [0.0, 12.0])
def test_drawn_frame_matches_the_stimulus(make_cfg, tmp_path, size_deg):
    cfg = make_cfg(window__stimulus_size_deg=size_deg, window__size=[400, 300])
    responder = ScriptedResponder(lambda s, c, n: list(c)[0], keep_frames=True)
    session = Session(cfg, "P03", data_dir=tmp_path, responder=responder)
    result = session.run()
    rows = _rows(f"{result.stem}.csv")
    builder = StimulusBuilder(session.stimuli.images, session.spec, session.mask_seed)
    assert len(responder.frames) == len(rows) == 8
    for frame, row in zip(responder.frames, rows):
        index = session.stimuli.index(row["stimulus_id"])
        expected = builder.build(index, int(row["n_bubbles"]), int(row["mask_index"])).image
        assert frame.shape == expected.shape
        r = np.corrcoef(frame.ravel(), expected.ravel())[0, 1]
        assert r > 0.99, r
        if size_deg == 0:        # one screen pixel per image pixel: exact up to 8 bits
            assert np.abs(frame - expected).max() <= 1.5 / 255


def test_escape_saves_and_exits_then_resumes(fast_cfg, tmp_path, capsys):
    labels = ["happy", "neutral", "escape"]
    result = Session(fast_cfg, "P04", data_dir=tmp_path,
                     responder=ScriptedResponder(labels)).run()
    assert result.escaped and not result.completed and result.n_trials == 2
    assert "Session stopped by escape after 2 of 8 trials" in capsys.readouterr().out
    assert len(_rows(f"{result.stem}.csv")) == 2
    meta = json.loads(open(f"{result.stem}.json").read())
    assert meta["status"] == "escaped"
    beh = tmp_path / "sub-P04" / "ses-1" / "beh"
    bids = beh / "sub-P04_ses-1_task-bubblesexpressions_beh.tsv"
    assert len(bids.read_text().splitlines()) == 3            # header + 2 trials
    again = Session(resume=f"{result.stem}.csv",
                    responder=ScriptedResponder.random(2)).run()
    assert again.completed and again.stem == result.stem
    rows = _rows(f"{result.stem}.csv")
    assert [int(r["trial"]) for r in rows] == list(range(8))
    assert [r["key"] for r in rows[:2]] != ["", ""]
    meta = json.loads(open(f"{result.stem}.json").read())
    assert [run["status"] for run in meta["runs"]] == ["escaped", "completed"]
    # the BIDS copy is derived from the CSV: the resumed session replaced its own copy
    # (no _run-2 holding the whole session a second time)
    assert sorted(p.name for p in beh.iterdir()) == [
        "sub-P04_ses-1_task-bubblesexpressions_beh.json",
        "sub-P04_ses-1_task-bubblesexpressions_beh.tsv"]
    assert [x.split("\t")[2] for x in bids.read_text().splitlines()[1:]] == \
        [str(t) for t in range(8)]
    assert meta["runs"][0]["bids"] == meta["runs"][1]["bids"] == [
        str(bids), str(bids.with_suffix(".json"))]
    with pytest.raises(ValueError, match=r"nothing to resume: .* already has all 8 trials"):
        Session(resume=result.stem)


def test_escape_on_the_instruction_screen(fast_cfg, tmp_path):
    result = Session(fast_cfg, "P05", data_dir=tmp_path,
                     responder=ScriptedResponder([], screen_keys=["escape"])).run()
    assert result.escaped and result.n_trials == 0
    assert _rows(f"{result.stem}.csv") == []


def test_until_response_and_timeouts(make_cfg, tmp_path):
    cfg = make_cfg(timing__stimulus_frames=0, trials__main=2, trials__practice=0)
    result = Session(cfg, "P06", data_dir=tmp_path,
                     responder=ScriptedResponder([None, "happy"])).run()
    rows = _rows(f"{result.stem}.csv")
    assert [r["key"] for r in rows][0] == "" and rows[0]["correct"] == "0"
    assert rows[0]["rt"] == "" and rows[1]["response"] == "happy"
    assert all(int(r["frames_shown"]) >= 1 for r in rows)


def test_an_error_mid_session_keeps_the_finished_trials(fast_cfg, tmp_path, capsys):
    def answer(stimulus, choices, n):
        if n == 3:
            raise ZeroDivisionError("observer broke")
        return list(choices)[0]

    session = Session(fast_cfg, "P07", data_dir=tmp_path,
                      responder=ScriptedResponder(answer))
    with pytest.raises(ZeroDivisionError, match="observer broke"):
        session.run()
    assert "interrupted by an error after 3 trials" in capsys.readouterr().err
    stem = session.files.stem
    assert len(_rows(f"{stem}.csv")) == 3
    assert json.loads(open(f"{stem}.json").read())["status"] == "crashed"
    result = Session(resume=stem, responder=ScriptedResponder.random(0)).run()
    assert result.completed and len(_rows(f"{stem}.csv")) == 8
