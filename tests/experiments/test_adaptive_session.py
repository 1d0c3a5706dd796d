"""Adaptive sampling in a session (``[bubbles] sampling = "adaptive"``): the sampler draws
the centres, the densities are recorded per block, and a killed session resumed with
``--resume`` regenerates every past trial's centres exactly."""
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.adaptive import AdaptivePolicy, load_densities, replay, save_densities
from experiments.config import ConfigError
from experiments.session import Session
from experiments.trials import spec_from_config

ROOT = Path(__file__).resolve().parents[2]

# a template-observer session (headless) in its own process, killed with SIGKILL when
# its observer is asked for its k-th answer of this run
KILLED = """
import json, os, signal, sys
import experiments.session as session
from experiments.config import validate_config

args = json.loads(sys.argv[1])
make = session.make_responder


def killing(*a, **kw):
    responder = make(*a, **kw)
    respond, calls = responder.respond, [0]

    def wrapped(*ra, **rkw):
        if calls[0] == args.get("answer"):
            os.kill(os.getpid(), signal.SIGKILL)
        calls[0] += 1
        return respond(*ra, **rkw)
    responder.respond = wrapped
    return responder


session.make_responder = killing
if args.get("resume"):
    session.Session(resume=args["resume"], simulate="template",
                    presenter="headless").run()
else:
    session.Session(validate_config(args["cfg"]), "A01", data_dir=args["data"],
                    simulate="template", presenter="headless", pilot=True).run()
"""


def _run(**args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", KILLED, json.dumps(args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _centers(stem):
    with open(f"{stem}_centers.jsonl") as f:
        return [json.loads(line) for line in f]


def _adaptive(make_cfg, **kw):
    return make_cfg(bubbles__sampling="adaptive", bubbles__update_every=3,
                    bubbles__floor=0.5, **kw)


def _replayed(cfg, meta, rows, stem):
    spec = spec_from_config(cfg, (cfg["stimuli"]["size"],) * 2)
    policy = AdaptivePolicy.from_dict(meta["sampling"])
    recorded = load_densities(Path(f"{stem}_densities.npz"))[0]
    return replay(spec, meta["seeds"]["mask_seed"], [float(r["correct"]) for r in rows],
                  policy=policy, n_bubbles=[int(r["n_bubbles"]) for r in rows],
                  recorded=recorded), recorded


def test_killed_and_resumed_adaptive_session_regenerates_every_centre(make_cfg, tmp_path):
    cfg = _adaptive(make_cfg)                     # 2 practice + 6 main, blocks of 3
    data = tmp_path / "data"
    out = _run(cfg=cfg, data=str(data), answer=5)   # killed on its 6th answer
    assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
    (csv_path,) = data.glob("A01_*.csv")
    stem = Path(str(csv_path)[:-4])
    assert len(_rows(csv_path)) == 5
    before = [c["centers"] for c in _centers(stem)[:5]]
    out = _run(resume=str(csv_path))
    assert out.returncode == 0, out.stderr[-2000:]
    rows, meta = _rows(csv_path), json.loads(Path(f"{stem}.json").read_text())
    assert len(rows) == 8 and meta["status"] == "completed"
    assert meta["sampling"] == {"sampling": "adaptive", "update_every": 3, "floor": 0.5,
                                "threshold": None, "target": None, "tail": "upper"}
    assert meta["densities"] == f"{stem.name}_densities.npz"
    shown = [c["centers"] for c in _centers(stem)]
    assert shown[:5] == before                    # the resume rewrote nothing
    run, recorded = _replayed(cfg, meta, rows, stem)
    assert recorded.shape == (3, 2, 64, 64)       # blocks 0, 1, 2 (trials 0-2, 3-5, 6-7)
    np.testing.assert_allclose(recorded.sum(axis=(2, 3)), 1.0, rtol=1e-12)
    spread = recorded[2].max(axis=(1, 2)) / recorded[2].min(axis=(1, 2))
    assert np.all(spread > 5)                     # block 2 followed the answers
    for t in range(8):                            # every trial, both runs, every band
        for band in range(2):
            np.testing.assert_array_equal(np.asarray(shown[t][band], float),
                                          np.asarray(run.centers[band][t], float))
    assert [int(r["n_bubbles"]) for r in rows] == [sum(map(len, s)) for s in shown]


def test_resume_refuses_changed_responses_or_densities(make_cfg, tmp_path):
    cfg = _adaptive(make_cfg)
    data = tmp_path / "data"
    assert _run(cfg=cfg, data=str(data), answer=7).returncode == -signal.SIGKILL
    (csv_path,) = data.glob("A01_*.csv")
    stem = Path(str(csv_path)[:-4])
    dens, policy = load_densities(f"{stem}_densities.npz")
    assert len(dens) == 3
    tampered = dens.copy()
    tampered[1, 0, 10, 10] *= 1.01
    save_densities(f"{stem}_densities.npz", tampered, policy)
    with pytest.raises(ValueError, match="recorded density of block 1 differs"):
        Session(resume=csv_path, simulate="template", presenter="headless")
    save_densities(f"{stem}_densities.npz", dens, policy)
    Session(resume=csv_path, simulate="template",
            presenter="headless")                 # the true record resumes
    text = csv_path.read_text().splitlines()
    header = text[0].split(",")
    col = header.index("correct")
    cells = text[1].split(",")
    cells[col] = str(1 - int(cells[col]))             # a changed answer on trial 0
    csv_path.write_text("\n".join([text[0], ",".join(cells)] + text[2:]) + "\n")
    with pytest.raises(ValueError, match="cannot resume the adaptive session"):
        Session(resume=csv_path, simulate="template", presenter="headless")


def test_uniform_sessions_record_no_policy(make_cfg, tmp_path):
    res = Session(make_cfg(), "U01", data_dir=tmp_path, simulate="template",
                  presenter="headless").run()
    meta = json.loads(Path(f"{res.stem}.json").read_text())
    assert "sampling" not in meta and "densities" not in meta
    assert not Path(f"{res.stem}_densities.npz").exists()
    assert meta["config"]["bubbles"]["sampling"] == "uniform"


@pytest.mark.parametrize("key, value, match", [
    ("bubbles__sampling", "smart", r"bubbles\.sampling.*one of \['uniform', 'adaptive'\]"),
    ("bubbles__floor", 0, r"bubbles\.floor.*\(0, 1\]"),
    ("bubbles__floor", 1.5, r"bubbles\.floor.*\(0, 1\]"),
    ("bubbles__floor", "0.5", r"bubbles\.floor"),
    ("bubbles__update_every", 0, r"bubbles\.update_every.*>= 1"),
    ("bubbles__update_every", 2.5, r"bubbles\.update_every"),
])
def test_bad_sampling_settings_fail_by_name(make_cfg, key, value, match):
    with pytest.raises(ConfigError, match=match):
        make_cfg(**{key: value})


def test_adaptive_sampling_is_refused_in_the_scanner_mode(scanner_cfg):
    with pytest.raises(ConfigError, match=r"bubbles\.sampling.*scanner"):
        scanner_cfg(bubbles__sampling="adaptive")
