"""The scanner as a lab meets it: the trigger box's '5' and the answers as real key
presses (``xdotool`` on the Xvfb display), read by PsychoPy's keyboard (psychtoolbox
backend) in ``bubbles run --scanner`` without any simulated part."""

import csv
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from .test_x_keys import Driver, _xdotool, xdotool  # noqa: F401 - the fixture
from .conftest import FACES_TOML

pytestmark = pytest.mark.window

TR = 0.5
CONFIG = FACES_TOML + f"""[window]
size = [200, 150]
frame_rate = 60.0
[scanner]
enabled = true
tr = {TR}
dummy_volumes = 1
runs = 1
trials_per_run = 3
stimulus_duration = 0.3
response_window = 1.0
iti_min = 0.5
iti_mean = 0.5
iti_max = 0.5
lead_in = 1.0
lead_out = 1.0
"""
RT = 0.4          # the answer is pressed this long after each planned onset


def test_trigger_key_and_answers_from_the_keyboard(xdotool, tmp_path):  # noqa: F811
    config = tmp_path / "scan.toml"
    config.write_text(CONFIG)
    data = tmp_path / "data"
    drv = Driver(["--config", str(config), "--participant", "X01", "--data-dir",
                  str(data), "--pilot"], data)
    sent = []
    try:
        drv.screen("instructions")
        stem = Path(str(drv.csv_path())[:-4])
        log = Path(f"{stem}.log")
        drv._wait("the wait for the scanner",
                  lambda: log.exists() and "run 1: waiting for" in log.read_text())
        meta = json.loads(Path(f"{stem}.json").read_text())
        sched = meta["scanner"]["schedules"][0]
        mapping = meta["key_mapping"]
        expressions = [sid.split("_")[1] for sid in meta["plan"]]
        n_triggers = 1 + sched["n_volumes"]
        start = time.monotonic() + 0.3
        events = [(start + k * TR, "5") for k in range(n_triggers)]
        t0 = start + 1 * TR                                  # after the one dummy
        events += [(t0 + on + RT, mapping[expressions[k]])
                   for k, on in enumerate(sched["onsets"])]

        def press():
            for when, key in sorted(events):
                time.sleep(max(0.0, when - time.monotonic()))
                sent.append((time.monotonic(), key))
                _xdotool(key)

        thread = threading.Thread(target=press)
        thread.start()
        thread.join(30)
        drv.screen("end")
        code, out, err = drv.finish()
    finally:
        if drv.proc.poll() is None:
            drv.proc.kill()
    assert code == 0, err[-3000:]
    assert "run 1 completed: 3 of 3 trials" in out
    with open(f"{stem}_triggers.tsv", newline="") as f:
        trig = list(csv.DictReader(f, delimiter="\t"))
    assert [t["volume"] for t in trig] == ["n/a"] + [str(v) for v in range(n_triggers - 1)]
    got = np.array([float(t["clock"]) for t in trig])
    pressed = np.array([t for t, key in sent if key == "5"])
    # the logged trigger times follow the presses (their intervals within 50 ms)
    assert np.max(np.abs(np.diff(got) - np.diff(pressed))) < 0.05, (got, pressed)
    with open(f"{stem}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["key"] for r in rows] == [mapping[e] for e in expressions[:3]]
    assert [r["correct"] for r in rows] == ["1"] * 3
    lag = [float(r["onset"]) - float(r["planned_onset"]) for r in rows]
    rt = np.array([float(r["rt"]) for r in rows])
    assert np.all(np.abs(rt + np.array(lag) - RT) < 0.1), (rt, lag)
    assert all(abs(x) < 1 / 60 for x in lag), lag
    print(f"keyboard scanner: rt {rt}, onset lag {lag}, trigger interval error "
          f"{np.max(np.abs(np.diff(got) - np.diff(pressed))):.4f} s")
