"""kill -9 in the middle of a session, then ``--resume``: nothing lost, nothing doubled."""

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

from experiments.cli import run
from experiments.config import load_config
from experiments.session import make_quest

pytestmark = pytest.mark.window

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
[stimuli]
n_identities = 2
size = 64
[bubbles]
sigma = 3.0
n_bubbles = 12
bands = 2
[trials]
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


def test_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path):
    config = tmp_path / "fast.toml"
    config.write_text(CONFIG)
    data = tmp_path / "data"
    argv = ["--config", str(config), "--participant", "K01", "--data-dir", str(data),
            "--simulate", "scripted", "--pilot"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = f"import sys; from experiments.cli import run; sys.exit(run({argv!r}))"
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
