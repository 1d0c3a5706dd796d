"""Scanner sessions with a simulated scanner: triggers, timing, BIDS events, resume,
fixed bubbles. Times in the files are scanner seconds (session clock x speed)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from commands import run as cli
from experiments.datafile import EVENT_COLUMNS, SCANNER_COLUMNS
from experiments.responders import ScriptedResponder
from experiments.scanner import ScannerSession
from experiments.session import Session
from experiments.triggers import ScannerClock, SimulatedScanner

from .conftest import SCANNER_TOML

ROOT = Path(__file__).resolve().parents[2]
SPEED = 20
CONFIG = SCANNER_TOML


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _tsv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _meta(stem):
    return json.loads(Path(f"{stem}.json").read_text())


def _files(data, pattern):
    return sorted(Path(data).glob(pattern))


def _check_events_join_the_csv(rows, events_files, n_volumes, tr):
    """Every event joins exactly one CSV row by 'trial', with its onset, and every CSV
    row is in exactly one events file."""
    by_trial = {r["trial"]: r for r in rows}
    seen = []
    for path in events_files:
        ev = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False,
                         dtype={"onset": str, "trial": str})
        assert list(ev.columns) == list(EVENT_COLUMNS)
        js = json.loads(path.with_suffix(".json").read_text())
        assert set(EVENT_COLUMNS) <= set(js) and all("Description" in js[c]
                                                     for c in EVENT_COLUMNS)
        assert js["onset"]["Units"] == "s" and js["response_time"]["Units"] == "s"
        for _, e in ev.iterrows():
            row = by_trial[e["trial"]]
            assert e["onset"] == row["onset"]                    # the CSV's, exactly
            assert e["trial_type"] == "face"
            assert str(e["stimulus_id"]) == row["stimulus_id"]
            assert int(e["mask_index"]) == int(row["mask_index"])
            assert 0 <= float(e["onset"]) and float(e["onset"]) + e["duration"] \
                <= n_volumes * tr
            seen.append(e["trial"])
    assert sorted(seen, key=int) == [r["trial"] for r in rows]   # each row exactly once


@pytest.mark.window
def test_a_simulated_scanner_study_writes_runs_triggers_and_bids_events(tmp_path, capsys):
    n = 4
    config = tmp_path / "scan.toml"
    config.write_text(CONFIG.format(n=n))
    data = tmp_path / "data"
    t_start = time.monotonic()
    speed = 10                                # a 1 s ITI is 100 ms of session clock
    assert cli.run(["--config", str(config), "--participant", "P01", "--data-dir",
                    str(data), "--simulate", "template", "--simulate-scanner",
                    "--speed", str(speed)]) == 0
    wall = time.monotonic() - t_start
    out = capsys.readouterr().out
    assert "each run lasts 9 volumes (18 s) after 2 dummy volume(s): program the " \
           "scanner for 11 volumes per run" in out
    assert "correlation of a trial's regressor with the sum of the others" in out
    (csv_path,) = _files(data, "*.csv")
    stem = Path(str(csv_path)[:-4])
    rows = _csv(csv_path)
    assert list(rows[0]) == list(SCANNER_COLUMNS)
    assert [int(r["trial"]) for r in rows] == list(range(3 * n))
    assert [int(r["run"]) for r in rows] == [1] * n + [2] * n + [3] * n
    assert {r["n_bubbles"] for r in rows} == {"12"}              # fixed, not QUEST's
    meta = _meta(stem)
    runs = meta["scanner_runs"]
    assert [e["status"] for e in runs] == ["completed"] * 3
    frame = speed / 60.0                                           # a frame, scanner s
    err = np.array([float(r["onset"]) - float(r["planned_onset"]) for r in rows])
    dur = np.array([float(r["duration"]) for r in rows])
    # the onsets within a frame of their schedule, the stimulus on for 0.5 s (medians:
    # the machine the tests run on is shared, and a stalled process makes late onsets,
    # which are counted)
    assert np.median(np.abs(err)) < frame / 4, err
    assert np.median(np.abs(dur - 0.5)) < frame / 4, dur
    assert sum(e["late_onsets"] for e in runs) == int(np.sum(err > frame * (1 + 1e-6)))
    for run in (1, 2, 3):
        late = runs[run - 1]["late_onsets"]
        assert f"run {run} completed: {n} of {n} trials; {late} onset(s) more than one " \
               f"frame (16.7 ms) late" in out
    sched = [s["onsets"] for s in meta["scanner"]["schedules"]]
    assert [float(r["planned_onset"]) for r in rows] == sched[0] + sched[1] + sched[2]
    # triggers: 2 dummies then the run's 9 volumes, at the TR, counted from T0
    trig = _tsv(f"{stem}_triggers.tsv")
    for run in (1, 2, 3):
        mine = [t for t in trig if t["run"] == str(run)]
        assert [t["trigger"] for t in mine] == [str(k) for k in range(1, 12)]
        assert [t["volume"] for t in mine] == ["n/a", "n/a"] + [str(v) for v in range(9)]
        times = np.array([float(t["time"]) for t in mine])
        np.testing.assert_allclose(times, 2.0 * (np.arange(11) - 2), atol=1e-6)
        entry = runs[run - 1]
        # the dummies are let pass: the run's clock starts at the third trigger
        assert float(mine[2]["clock"]) == pytest.approx(entry["t0_clock"], abs=1e-6)
        assert entry["volume_triggers"] == 9 and entry["dummy_triggers"] == 2
        assert entry["measured_tr"] == pytest.approx(2.0, abs=1e-6)
    # BIDS events: one file per run, readable, joining the CSV by trial
    events = _files(data, "sub-P01/ses-1/func/*_events.tsv")
    assert [p.name for p in events] == [
        f"sub-P01_ses-1_task-bubblesexpressions_run-{r}_events.tsv" for r in (1, 2, 3)]
    _check_events_join_the_csv(rows, events, 9, 2.0)
    info = json.loads(events[1].with_suffix(".json").read_text())["ScannerRun"]
    assert info["Run"] == 2 and info["RepetitionTime"] == 2.0 and info["DummyVolumes"] == 2
    validator = pytest.importorskip("bids_validator")
    check = validator.BIDSValidator()
    for path in _files(data, "sub-P01/**/*.*"):
        assert check.is_bids("/" + str(path.relative_to(data))), path
    assert wall < 60


def test_the_simulated_scanner_sends_its_triggers_at_the_tr_over_speed():
    scanner = SimulatedScanner(2.0, speed=20)
    scanner.start(10.0, 5)                          # first trigger one TR later
    assert scanner.poll(10.05) == []
    assert scanner.poll(10.1) == [pytest.approx(10.1)]
    assert scanner.poll(10.35) == [pytest.approx(10.2), pytest.approx(10.3)]
    assert scanner.poll(99.0) == [pytest.approx(10.4), pytest.approx(10.5)]
    assert scanner.poll(100.0) == [] and scanner.check_quit() is False
    clock = ScannerClock(lambda: 12.5, onset=12.0, speed=20)
    assert clock.getTime() == pytest.approx(10.0) and clock.since(12.1) == \
        pytest.approx(2.0)


def _headless(cfg, data, responder=None, **kwargs):
    return ScannerSession(cfg, "P01", data_dir=data, presenter="headless",
                          responder=responder or ScriptedResponder.random(0),
                          simulate_scanner=True, **kwargs)


def test_onsets_keep_to_the_schedule_over_a_long_run(scanner_cfg, tmp_path, capsys):
    """120 trials (7 minutes of scanner time) at speed 50: no drift; the CSV keeps
    planned and actual onsets, and the run entry the late count."""
    speed = 50
    cfg = scanner_cfg(scanner__runs=1, scanner__trials_per_run=120)
    result = _headless(cfg, tmp_path, speed=speed).run()
    rows = _csv(result.files["csv"])
    err = np.array([float(r["onset"]) - float(r["planned_onset"]) for r in rows]) / speed
    assert len(err) == 120
    frame = 1 / 60.0
    assert np.median(np.abs(err)) < 0.002                           # session-clock s
    # (a busy machine can stall the process for a second or more: the onsets after it
    # come late until the schedule is caught up, each counted)
    assert np.mean(np.abs(err) <= frame) >= 0.6
    # no drift: the last trials are as close to their schedule as the first
    assert abs(np.median(err[-20:]) - np.median(err[:20])) < 0.002
    entry = _meta(result.stem)["scanner_runs"][0]
    assert entry["late_onsets"] == int(np.sum(err > frame * (1 + 1e-6)))
    assert entry["onset_error_max"] == pytest.approx(err.max() * speed, abs=1e-5)
    assert f"{entry['late_onsets']} onset(s) more than one frame (16.7 ms) late" in \
        capsys.readouterr().out
    print(f"drift over 120 trials: median error first 20 {1000 * np.median(err[:20]):.3f}"
          f" ms, last 20 {1000 * np.median(err[-20:]):.3f} ms; max {1000 * err.max():.2f} ms;"
          f" late {entry['late_onsets']}", file=sys.stderr)


class SlowOnce(ScriptedResponder):
    """Answers at once, except on call ``slow`` where it takes ``delay`` seconds."""

    def __init__(self, slow, delay):
        super().__init__(lambda s, c, n: list(c)[0], rt=0.4)
        self.slow, self.delay = slow, delay

    def respond(self, stimulus, choices, *, clock=None):
        if self.n_calls == self.slow:
            time.sleep(self.delay)
        return super().respond(stimulus, choices, clock=clock)


def test_a_late_onset_is_counted_and_the_next_ones_are_back_on_schedule(scanner_cfg,
                                                                        tmp_path, capsys):
    speed = 10
    cfg = scanner_cfg(scanner__runs=1, scanner__trials_per_run=6, scanner__iti_min=1.0,
                      scanner__iti_mean=1.0, scanner__iti_max=1.0)
    # SOA 2.5 s = 250 ms of session clock, ITI 100 ms; the simulated observer decides
    # in the ITI before each onset, and takes 400 ms before trial 2: trial 2 comes about
    # 300 ms late, trial 3 about 150 ms, trial 4 is planned 100 ms after trial 3's slot
    result = _headless(cfg, tmp_path, SlowOnce(2, 0.4), speed=speed).run()
    rows = _csv(result.files["csv"])
    err = np.array([float(r["onset"]) - float(r["planned_onset"]) for r in rows]) / speed
    late = err > 1 / 60
    assert late[2] and err[2] > 0.2 and not late[5]   # the schedule goes on
    assert err[1] < 1 / 60 and abs(err[5]) < 1 / 60
    entry = _meta(result.stem)["scanner_runs"][0]
    assert entry["late_onsets"] == int(late.sum())
    assert f"run 1 completed: 6 of 6 trials; {late.sum()} onset(s) more than one frame" \
        in capsys.readouterr().out


def test_escape_mid_run_then_resume_repeats_the_run_when_asked(scanner_cfg, tmp_path,
                                                               capsys):
    cfg = scanner_cfg(scanner__repeat_interrupted=True)
    answers = ["happy"] * 5 + ["escape"]                 # escape on run 2's 2nd trial
    first = _headless(cfg, tmp_path, ScriptedResponder(answers), speed=SPEED).run()
    assert first.escaped and first.n_trials == 5
    assert "in run 2 after 5 trials (the run is kept as interrupted; run 3 comes next)" \
        in first.message
    meta = _meta(first.stem)
    assert [(e["run"], e["status"], e["n_trials"]) for e in meta["scanner_runs"]] == \
        [(1, "completed", 4), (2, "interrupted", 1)]
    assert meta["scanner_runs"][1]["reason"] == "stopped with the quit key"
    run2 = Path(meta["scanner_runs"][1]["events"][0])
    assert len(_tsv(run2)) == 1
    before = run2.read_bytes(), run2.stat().st_mtime_ns
    capsys.readouterr()
    result = ScannerSession(resume=first.files["csv"], presenter="headless",
                            responder=ScriptedResponder.random(1), simulate_scanner=True,
                            speed=SPEED).run()
    assert result.completed
    out = capsys.readouterr().out
    assert "run 2 was interrupted (stopped with the quit key): 1 of 4 trials recorded " \
           "(trials 4 to 4)" in out
    assert "continuing with run 3: it plays the trial list of run 2 again " \
           "(scanner.repeat_interrupted)" in out
    meta = _meta(first.stem)
    assert [(e["run"], e["block"], e["status"]) for e in meta["scanner_runs"]] == [
        (1, 0, "completed"), (2, 1, "interrupted"), (3, 1, "completed"),
        (4, 2, "completed")]
    rows = _csv(first.files["csv"])
    assert [int(r["trial"]) for r in rows] == list(range(5 + 8))
    assert [r["run"] for r in rows] == ["1"] * 4 + ["2"] + ["3"] * 4 + ["4"] * 4
    plan = meta["plan"]
    assert [r["stimulus_id"] for r in rows if r["run"] == "3"] == plan[4:8]
    assert rows[4]["stimulus_id"] == plan[4]
    assert (run2.read_bytes(), run2.stat().st_mtime_ns) == before   # never rewritten
    events = _files(tmp_path, "sub-P01/ses-1/func/*_events.tsv")
    assert len(events) == 4
    _check_events_join_the_csv(rows, events, meta["scanner_runs"][0]["n_volumes"], 2.0)


class Never:
    """A scanner that never starts; the operator presses Escape after a while."""

    def start(self, now, n):
        self.polls = 0

    def poll(self, now):
        return []

    def check_quit(self):
        self.polls += 1
        return self.polls > 50


def test_escape_while_waiting_for_the_scanner_plays_the_run_again(scanner_cfg, tmp_path):
    cfg = scanner_cfg(scanner__runs=2)
    first = ScannerSession(cfg, "P01", data_dir=tmp_path, presenter="headless",
                           responder=ScriptedResponder.random(0), triggers=Never()).run()
    assert first.escaped and first.n_trials == 0
    meta = _meta(first.stem)
    assert [(e["run"], e["status"]) for e in meta["scanner_runs"]] == [(1, "not_started")]
    assert "events" not in meta["scanner_runs"][0]
    result = ScannerSession(resume=first.files["csv"], presenter="headless",
                            responder=ScriptedResponder.random(0), simulate_scanner=True,
                            speed=SPEED).run()
    assert result.completed
    meta = _meta(first.stem)
    assert [(e["run"], e["block"], e["status"]) for e in meta["scanner_runs"]] == [
        (1, 0, "not_started"), (2, 0, "completed"), (3, 1, "completed")]
    names = [p.name for p in _files(tmp_path, "sub-P01/ses-1/func/*_events.tsv")]
    assert [n.split("_")[3] for n in names] == ["run-2", "run-3"]


def test_fixed_bubbles_from_an_earlier_behavioural_session(make_cfg, scanner_cfg,
                                                           tmp_path):
    earlier = Session(make_cfg(), "P01", data_dir=tmp_path / "beh", presenter="headless",
                      responder=ScriptedResponder.random(3)).run()
    last = [r for r in _csv(earlier.files["csv"]) if r["block"] == "main"][-1]
    expected = round(10 ** float(last["quest_mean"]))
    cfg = scanner_cfg(scanner__runs=1, bubbles__n_bubbles=30)
    result = _headless(cfg, tmp_path / "scan", bubbles_from=earlier.files["csv"],
                       speed=SPEED).run()
    rows = _csv(result.files["csv"])
    assert {int(r["n_bubbles"]) for r in rows} == {expected}
    assert all(r["quest_mean"] == "" for r in rows)          # QUEST was not running
    source = _meta(result.stem)["scanner"]["bubbles_source"]
    assert source["from"] == "--bubbles-from" and source["n_bubbles"] == expected
    assert source["quest_mean"] == pytest.approx(float(last["quest_mean"]))
    assert source["file"] == str(Path(earlier.files["csv"]).resolve())


def test_quest_in_the_scanner_only_when_asked(scanner_cfg, tmp_path):
    cfg = scanner_cfg(scanner__runs=1, scanner__trials_per_run=6, scanner__quest=True,
                      quest__start=12, quest__max_bubbles=200)
    rows = _csv(_headless(cfg, tmp_path, ScriptedResponder(["happy"] * 6),
                          speed=SPEED).run().files["csv"])
    assert all(r["quest_mean"] != "" for r in rows)
    assert len({r["n_bubbles"] for r in rows}) > 1           # QUEST moved the count


def test_events_files_of_another_session_are_never_replaced(scanner_cfg, tmp_path):
    cfg = scanner_cfg(scanner__runs=1)
    _headless(cfg, tmp_path, speed=SPEED).run()
    with pytest.raises(ValueError, match=r"BIDS events files of participant P01, session "
                                         r"1 and this task exist already"):
        _headless(cfg, tmp_path, speed=SPEED)
    assert _headless(cfg, tmp_path, speed=SPEED, session=2).run().completed


def test_a_completed_scanner_session_is_not_resumed(scanner_cfg, tmp_path):
    done = _headless(scanner_cfg(scanner__runs=1), tmp_path, speed=SPEED).run()
    with pytest.raises(ValueError, match="nothing to resume: all 1 runs"):
        ScannerSession(resume=done.files["csv"], presenter="headless")


def test_the_analysis_reads_what_the_scanner_writes(scanner_cfg, tmp_path):
    from analysis.trials import TrialTable

    result = _headless(scanner_cfg(scanner__runs=2), tmp_path, speed=SPEED).run()
    table = TrialTable.read(result.files["csv"])
    assert len(table.data) == 8
    inputs = pytest.importorskip("analysis.fmri.inputs")
    rows = {int(t): i for i, t in enumerate(table.data["trial"])}
    meta = _meta(result.stem)
    for entry in meta["scanner_runs"]:
        ev = inputs.read_events(entry["events"][0], entry["n_volumes"], 2.0, rows)
        assert list(ev["trial"].astype(int)) == [
            int(r["trial"]) for r in _csv(result.files["csv"])
            if r["run"] == str(entry["run"])]


# -- kill -9 in the middle of run 2, then --resume -------------------------------------
def _count_run_rows(path, run):
    try:
        with open(path, newline="") as f:
            return sum(1 for r in csv.DictReader(f) if r.get("run") == str(run))
    except (FileNotFoundError, csv.Error):
        return 0


@pytest.mark.window
def test_kill_9_in_run_2_then_resume(tmp_path, capsys):
    n = 6
    config = tmp_path / "scan.toml"
    config.write_text(CONFIG.format(n=n))
    data = tmp_path / "data"
    argv = ["--config", str(config), "--participant", "P01", "--data-dir", str(data),
            "--simulate", "scripted", "--simulate-scanner", "--speed", "10"]
    code = f"import sys; from commands.run import run; sys.exit(run({argv!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    csv_path = None
    try:
        while time.monotonic() < deadline:
            found = _files(data, "*.csv")
            csv_path = found[0] if found else None
            if csv_path and _count_run_rows(csv_path, 2) >= 2:
                break
            assert proc.poll() is None, "the session ended before run 2"
            time.sleep(0.01)
        else:
            pytest.fail("run 2 never got 2 trials")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = _csv(csv_path)
    killed_at = _count_run_rows(csv_path, 2)
    assert 2 <= killed_at < n
    assert cli.run(["--resume", str(csv_path), "--simulate", "scripted",
                    "--simulate-scanner", "--speed", str(SPEED)]) == 0
    out = capsys.readouterr().out
    assert f"run 2 was interrupted (killed (the process never recorded the run's end)): " \
           f"{killed_at} of {n} trials recorded" in out
    assert "continuing with run 3: trial list 3 of 3" in out
    rows = _csv(csv_path)
    assert rows[:len(before)] == before                          # nothing changed
    assert [int(r["trial"]) for r in rows] == list(range(len(rows)))   # none lost
    assert [r["run"] for r in rows] == ["1"] * n + ["2"] * killed_at + ["3"] * n
    stem = Path(str(csv_path)[:-4])
    meta = _meta(stem)
    assert [(e["run"], e["status"], e["n_trials"]) for e in meta["scanner_runs"]] == [
        (1, "completed", n), (2, "interrupted", killed_at), (3, "completed", n)]
    assert [r["status"] for r in meta["runs"]] == ["interrupted", "completed"]
    plan = meta["plan"]
    assert [r["stimulus_id"] for r in rows if r["run"] == "3"] == plan[2 * n:3 * n]
    centres = [json.loads(x) for x in Path(f"{stem}_centers.jsonl").read_text().split("\n")
               if x]
    assert [c["trial"] for c in centres] == list(range(len(rows)))
    events = _files(data, "sub-P01/ses-1/func/*_events.tsv")
    assert [len(_tsv(p)) for p in events] == [n, killed_at, n]
    _check_events_join_the_csv(rows, events, meta["scanner_runs"][0]["n_volumes"], 2.0)
    trig = _tsv(f"{stem}_triggers.tsv")
    assert {t["run"] for t in trig} == {"1", "2", "3"}
    assert sum(t["run"] == "3" for t in trig) == 2 + meta["scanner_runs"][2]["n_volumes"]
