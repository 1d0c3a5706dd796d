"""kill -9 in the middle of a session, then ``--resume``: nothing lost, nothing doubled,
and the sidecar accounts for every process that touched the files."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from commands.run import run
from experiments.config import load_config
from experiments.responders import ScriptedResponder
from experiments.session import Session, make_quest
from .conftest import FACES_TOML

ROOT = Path(__file__).resolve().parents[2]
CONFIG = FACES_TOML + """[trials]
practice = 3
main = 150
break_every = 100
feedback_frames = 1
[timing]
fixation_frames = 1
stimulus_frames = 1
iti_frames = 0
[quest]
start = 12
max_bubbles = 200
[window]
size = [160, 120]
fullscreen = false
frame_rate = 60.0
"""


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _count_lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.window
def test_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path):
    config = tmp_path / "fast.toml"
    config.write_text(CONFIG)
    data = tmp_path / "data"
    argv = ["--config", str(config), "--participant", "K01", "--data-dir", str(data),
            "--simulate", "scripted", "--pilot"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = f"import sys; from commands.run import run; sys.exit(run({argv!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    csv_path = None
    try:
        while time.monotonic() < deadline:
            found = sorted(data.glob("K01_*.csv")) if data.exists() else []
            if found and _count_lines(found[0]) > 30:      # header + 30 trials
                csv_path = found[0]
                break
            if proc.poll() is not None:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the session ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL and csv_path is not None
    stem = Path(str(csv_path)[:-4])
    before = _rows(csv_path)
    n_before = len(before)
    assert 30 <= n_before < 153
    assert not (data / "sub-K01").exists()          # no clean end: no BIDS copy yet
    # a torn write on top of whatever the kill left
    with open(csv_path, "a") as f:
        f.write(f"K01,1,{n_before},main,id00_ha")

    assert run(["--resume", str(csv_path), "--simulate", "scripted"]) == 0

    rows = _rows(csv_path)
    assert [int(r["trial"]) for r in rows] == list(range(153))
    assert rows[:n_before] == before                 # finished trials untouched
    assert all(int(r["mask_index"]) == int(r["trial"]) for r in rows)
    centers = [json.loads(x) for x in open(f"{stem}_centers.jsonl")]
    assert [c["trial"] for c in centers] == list(range(153))
    assert len({r["mask_seed"] for r in rows}) == 1
    # QUEST continued from the replayed state: replaying the file reproduces every
    # recorded posterior, across the kill
    cfg = load_config(config)
    quest = make_quest(cfg, 3, 150)
    for r in rows[3:]:
        next(quest)
        quest.addResponse(int(r["correct"]), intensity=float(r["quest_intensity"]))
        assert float(r["quest_mean"]) == pytest.approx(quest.mean(), abs=1e-9)
        assert float(r["quest_intensity"]) == pytest.approx(math.log10(int(r["n_bubbles"])))
    meta = json.loads(open(f"{stem}.json").read())
    assert meta["status"] == "completed" and len(meta["runs"]) == 2
    assert meta["runs"][1]["first_trial"] == n_before
    assert meta["runs"][0]["status"] == "interrupted"           # the killed run
    assert meta["runs"][0]["last_trial"] == n_before - 1
    assert any("half-written" in m for m in meta["runs"][1]["dropped_on_resume"])
    log = open(f"{stem}.log").read()
    assert f"resuming {stem.name} at trial {n_before}" in log
    assert "resume: dropped half-written last line" in log
    assert (data / "sub-K01" / "ses-1" / "beh"
            / "sub-K01_ses-1_task-bubblesexpressions_beh.tsv").is_file()
    # the file cut back was copied first
    assert Path(f"{csv_path}.bak").read_bytes().endswith(f"K01,1,{n_before},main,id00_ha"
                                                         .encode())
    assert f"{csv_path}.bak" in meta["runs"][1]["backups"]


# A session (headless presenter: no display needed) in its own process, killed with
# SIGKILL by its own responder at a chosen moment: on the k-th screen this process shows
# (1: instructions) or when asked for its k-th answer (0: the first trial it runs).
KILLED = """
import json, os, signal, sys
from experiments.config import validate_config
from experiments.responders import ScriptedResponder
from experiments.session import Session

args = json.loads(sys.argv[1])


class Killer(ScriptedResponder):
    screens = 0

    def wait_keys(self, keys, *, clock=None):
        self.screens += 1
        if self.screens == args.get("screen"):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().wait_keys(keys, clock=clock)

    def respond(self, stimulus, choices, *, clock=None):
        if self.n_calls == args.get("answer"):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().respond(stimulus, choices, clock=clock)


responder = Killer(lambda stimulus, choices, n: list(choices)[n % len(choices)])
if args.get("resume"):
    Session(resume=args["resume"], presenter="headless", responder=responder).run()
else:
    Session(validate_config(args["cfg"]), "K02", data_dir=args["data"],
            presenter="headless", responder=responder).run()
"""


def _killed(**args):
    """Run KILLED with ``args``; assert it died of SIGKILL."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", KILLED, json.dumps(args)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]


def _meta(stem):
    return json.loads(Path(f"{stem}.json").read_text())


def _runs(stem):
    return [(r["status"], r["first_trial"], r.get("n_trials"), r.get("last_trial"))
            for r in _meta(stem)["runs"]]


def test_a_kill_after_the_last_row_is_finished_by_resume(fast_cfg, tmp_path, monkeypatch,
                                                         capsys):
    data = tmp_path / "data"
    _killed(cfg=fast_cfg, data=str(data), screen=4)       # on the end screen
    (csv_path,) = data.glob("K02_*.csv")
    stem = Path(str(csv_path)[:-4])
    assert len(_rows(csv_path)) == 8                       # every trial is recorded
    assert _meta(stem)["status"] == "running" and not (data / "sub-K02").exists()
    assert "session completed" not in Path(f"{stem}.log").read_text()
    kept = {p: p.read_bytes() for p in (csv_path, Path(f"{stem}_centers.jsonl"))}
    # the resume only finishes it: no window (none is needed), no trial
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert run(["--resume", str(csv_path)]) == 0
    assert "all 8 trials were already recorded" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in kept} == kept       # data untouched
    meta = _meta(stem)
    assert meta["status"] == "completed"
    assert _runs(stem) == [("interrupted", 0, 8, 7), ("completed", 8, 0, None)]
    bids = (data / "sub-K02" / "ses-1" / "beh"
            / "sub-K02_ses-1_task-bubblesexpressions_beh.tsv")
    assert len(bids.read_text().splitlines()) == 9
    assert meta["runs"][1]["bids"][0] == str(bids)
    log = Path(f"{stem}.log").read_text()
    assert "all 8 trials are recorded: finishing the session" in log
    assert "session completed after 8 trials" in log
    assert run(["--resume", str(csv_path)]) == 1           # now there is nothing left
    assert "nothing to resume" in capsys.readouterr().err


def test_every_killed_process_and_every_backup_is_in_the_sidecar(make_cfg, tmp_path):
    data = tmp_path / "data"
    _killed(cfg=make_cfg(trials__main=8), data=str(data), screen=1)   # before a trial
    (csv_path,) = data.glob("K02_*.csv")
    stem = Path(str(csv_path)[:-4])
    (first,) = _meta(stem)["runs"]                         # written before any trial
    assert (first["status"], first["first_trial"]) == ("running", 0)
    assert first["pid"] > 0
    _killed(resume=str(csv_path), answer=5)                # after 5 trials
    assert len(_rows(csv_path)) == 5
    with open(csv_path, "a") as f:
        f.write("K02,1,5,main,id0")                        # torn by the kill
    _killed(resume=str(csv_path), screen=1)        # after its repair, before a trial
    assert Path(f"{csv_path}.bak").is_file()
    assert _meta(stem)["runs"][-1]["backups"] == [f"{csv_path}.bak"]   # listed at once
    with open(csv_path, "a") as f:
        f.write("K02,1,5,ma")                              # torn again
    result = Session(resume=csv_path, presenter="headless",
                     responder=ScriptedResponder.random(0)).run()
    assert result.completed and [int(r["trial"]) for r in _rows(csv_path)] == \
        list(range(10))
    assert _runs(stem) == [("interrupted", 0, 0, None),    # killed on its first screen
                           ("interrupted", 0, 5, 4),
                           ("interrupted", 5, 0, None),    # killed after its repair
                           ("completed", 5, 5, 9)]
    listed = [b for r in _meta(stem)["runs"] for b in r["backups"]]
    assert sorted(listed) == sorted(str(p) for p in data.glob("*.bak*"))
    assert sorted(Path(b).name for b in listed) == [f"{csv_path.name}.bak",
                                                   f"{csv_path.name}.bak-2"]
    log = Path(f"{stem}.log").read_text()
    assert log.count("resuming ") == 3 and "session completed after 10 trials" in log
