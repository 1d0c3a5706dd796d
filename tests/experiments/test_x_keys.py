"""The participant's own path: ``bubbles run`` in a real window, driven by X key events.

Nothing is injected into PsychoPy: ``xdotool`` (Debian package ``xdotool``, installed by
``make system-deps``) presses keys on the X display the session runs on, and PsychoPy's
keyboard (psychtoolbox backend) reads them as it reads a person's. The test goes
through the instructions, two practice trials, the practice-done screen, main trials,
a break, Escape in the middle of a trial, then ``--resume``, its instructions, the
last trials and the end screen, and checks the recorded keys, responses, correctness
and reaction times against what was pressed and when.

Synchronisation: a screen is answered once the session's log says it is up (the
session logs and flushes ``screen NAME: waiting for ...`` before it waits); a trial is
answered a chosen delay after the previous row reached the CSV (the stimulus is on
within a few milliseconds of it at these settings), so the recorded reaction times
must follow the delays.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import FACES_TOML

pytestmark = pytest.mark.window

ROOT = Path(__file__).resolve().parents[2]
CONFIG = FACES_TOML + """[trials]
practice = 2
main = 4
break_every = 2
feedback_frames = 1
[timing]
fixation_frames = 1
stimulus_frames = 0
iti_frames = 0
[quest]
start = 12
max_bubbles = 200
[window]
size = [200, 150]
frame_rate = 60.0
"""
DEADLINE = 60.0          # seconds any one step may take before the test gives up


def _xdotool(*keys):
    subprocess.run(["xdotool", "key", *keys], check=True, timeout=10)


class Driver:
    """Presses keys for one ``bubbles run`` process and waits on its files."""

    def __init__(self, argv, data):
        self.data = data
        code = f"import sys; from commands.run import run; sys.exit(run({argv!r}))"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.screens_seen = 0

    def _wait(self, what, ready):
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            got = ready()
            if got:
                return got
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                pytest.fail(f"bubbles run exited ({self.proc.returncode}) while waiting "
                            f"for {what}: {err[-3000:]}")
            time.sleep(0.005)
        pytest.fail(f"timed out waiting for {what}")

    def csv_path(self):
        found = sorted(self.data.glob("X01_*.csv"))
        return found[0] if found else None

    def rows(self):
        path = self.csv_path()
        if path is None:
            return 0
        return path.read_bytes().count(b"\n") - 1

    def _screens(self, name):
        path = self.csv_path()
        log = Path(str(path)[:-4] + ".log") if path else None
        if log is None or not log.exists():
            return 0
        return log.read_text().count(f"screen {name}: waiting for")

    def screen(self, name, seen_before=0, key="space"):
        """Wait for screen ``name`` (its ``seen_before + 1``-th showing), press key."""
        self._wait(f"the {name} screen", lambda: self._screens(name) > seen_before)
        time.sleep(0.3)                       # the session now waits for the key
        _xdotool(key)

    def trial(self, key, delay):
        """Press ``key`` ``delay`` s after the previous row; wait for this row."""
        n = self.rows()
        time.sleep(delay)
        pressed = time.monotonic()
        _xdotool(key)
        self._wait(f"row {n + 1}", lambda: self.rows() > n)
        return time.monotonic() - pressed

    def escape_trial(self, delay):
        n = self.rows()
        time.sleep(delay)
        _xdotool("Escape")
        return n

    def finish(self):
        try:
            out, err = self.proc.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            pytest.fail(f"bubbles run did not end: {err[-3000:]}")
        return self.proc.returncode, out, err


@pytest.fixture
def xdotool():
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (make system-deps installs the Debian "
                    "package xdotool)")
    return shutil.which("xdotool")


def _plan(data):
    """The sidecar of the session being run: its trial plan and key mapping."""
    (sidecar,) = data.glob("X01_*.json")
    meta = json.loads(sidecar.read_text())
    return [sid.split("_")[1] for sid in meta["plan"]], meta["key_mapping"]


def test_a_session_driven_by_x_key_presses(xdotool, tmp_path):
    config = tmp_path / "keys.toml"
    config.write_text(CONFIG)
    data = tmp_path / "data"
    first = Driver(["--config", str(config), "--participant", "X01", "--data-dir",
                    str(data), "--pilot"], data)
    pressed = []                                # (trial, key, delay, wanted correct)
    try:
        first.screen("instructions")
        expressions, mapping = _plan(data)
        wrong = {label: mapping[other] for label, other in
                 zip(mapping, list(mapping)[1:] + list(mapping)[:1])}

        def answer(driver, t, delay, right):
            key = mapping[expressions[t]] if right else wrong[expressions[t]]
            driver.trial(key, delay)
            pressed.append((t, key, delay, int(right)))

        answer(first, 0, 0.3, True)             # practice
        answer(first, 1, 0.9, False)
        first.screen("practice_done")
        answer(first, 2, 0.3, True)             # main block
        answer(first, 3, 0.9, True)
        first.screen("break_message")
        assert first.escape_trial(0.5) == 4     # Escape while trial 4 is on screen
        code, out, err = first.finish()
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
    assert code == 0, err[-3000:]
    assert "Session stopped by escape after 4 of 6 trials" in out
    csv_path = first.csv_path()
    stem = Path(str(csv_path)[:-4])
    assert json.loads(Path(f"{stem}.json").read_text())["status"] == "escaped"

    second = Driver(["--resume", str(csv_path), "--pilot"], data)
    try:
        second.screen("instructions", seen_before=1)   # "Resuming the session ..."
        answer(second, 4, 0.3, False)
        answer(second, 5, 0.9, True)
        second.screen("end")
        code, out, err = second.finish()
    finally:
        if second.proc.poll() is None:
            second.proc.kill()
    assert code == 0, err[-3000:]
    assert "Session complete: 6 trials" in out

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in rows] == list(range(6))
    assert [r["key"] for r in rows] == [key for _, key, _, _ in pressed]
    by_key = {key: label for label, key in mapping.items()}
    assert [r["response"] for r in rows] == [by_key[key] for _, key, _, _ in pressed]
    assert [int(r["correct"]) for r in rows] == [right for _, _, _, right in pressed]
    assert [r["expression"] for r in rows] == expressions[:6]
    assert [r["block"] for r in rows] == ["practice"] * 2 + ["main"] * 4
    # reaction times follow the delays the keys were pressed after (the stimulus is on
    # within milliseconds of the previous row): close to each delay, and 0.6 s apart
    # (measured error about 0.02 s quiet; a loaded machine delays xdotool's presses by up
    # to ~0.15 s, hence the tolerances, which still tell 0.2 s from 0.8 s apart)
    rt = np.array([float(r["rt"]) for r in rows])
    delay = np.array([d for _, _, d, _ in pressed])
    assert np.all(np.abs(rt - delay) < 0.25), (rt, delay)
    assert abs(rt[delay > 0.5].mean() - rt[delay < 0.5].mean() - 0.6) < 0.2, rt
    meta = json.loads(Path(f"{stem}.json").read_text())
    assert meta["status"] == "completed"
    assert [(r["status"], r["first_trial"], r["n_trials"]) for r in meta["runs"]] == \
        [("escaped", 0, 4), ("completed", 4, 2)]
    log = Path(f"{stem}.log").read_text()
    assert "session escaped after 4 trials" in log
    assert "session completed after 6 trials" in log
    beh = (data / "sub-X01" / "ses-1" / "beh"
           / "sub-X01_ses-1_task-bubblesexpressions_beh.tsv")
    assert len(beh.read_text().splitlines()) == 7
