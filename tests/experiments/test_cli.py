"""``bubbles run`` (commands.run): arguments, dialog cancel, clear errors, a simulated
run."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

import experiments.responders as responders
from commands import run as cli
from experiments.session import SessionResult

ROOT = Path(__file__).resolve().parents[2]


def test_help_and_usage_errors(capsys):
    assert cli.run(["--help"]) == 0
    assert "usage: bubbles run" in capsys.readouterr().out
    assert cli.run(["--simulate", "robot"]) == 2
    assert "invalid choice: 'robot'" in capsys.readouterr().err


def test_bad_config_fails_clearly(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DISPLAY", ":99")        # never reached: the config fails first
    bad = tmp_path / "bad.toml"
    bad.write_text("[quest]\npThreshold = 2\n")
    assert cli.run(["--config", str(bad), "--participant", "P1"]) == 1
    err = capsys.readouterr().err
    assert "config key 'quest.pThreshold' must be a number in (0, 1), got 2" in err
    assert cli.run(["--resume", str(tmp_path / "none.csv")]) == 1
    assert "bubbles run: error: cannot resume" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--trials", "-5"], "--trials must be an integer >= 0 (main-block trials), got -5"),
    (["--session", "-1"], "--session must be an integer >= 0, got -1"),
    (["--seed", "-1"], "--seed must be an integer in [0, 2**32 - 1], got -1"),
    (["--seed", str(2 ** 32)],
     "--seed must be an integer in [0, 2**32 - 1], got 4294967296"),
    (["--trials", "x"], "argument --trials: invalid int value: 'x'"),
])
def test_bad_numbers_are_usage_errors(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("DISPLAY", ":99")
    data = tmp_path / "data"
    assert cli.run(["--participant", "P1", "--data-dir", str(data)] + argv) == 2
    err = capsys.readouterr().err
    assert "usage: bubbles run" in err and message in err
    assert not data.exists()


@pytest.mark.parametrize("name", ["../../../x", "a/b", "a b", ".hidden", "x.y", "",
                                  "_lead"])
def test_an_exp_name_that_is_no_file_name_is_refused(name, capsys, monkeypatch,
                                                     tmp_path):
    monkeypatch.setenv("DISPLAY", ":99")
    config = tmp_path / "task.toml"
    config.write_text(f"expName = {name!r}\n".replace("'", '"'))
    data = tmp_path / "data"
    assert cli.run(["--config", str(config), "--participant", "P1",
                    "--data-dir", str(data)]) == 1
    err = capsys.readouterr().err
    assert (f"bubbles run: error: config key 'expName' must be letters, digits, '_' and "
            f"'-' only, starting with a letter or digit (it names the session files and "
            f"the BIDS task), got {name!r}") in err
    assert list(tmp_path.iterdir()) == [config]          # nothing written anywhere


@pytest.mark.parametrize("pid", ["../x", "P_01", "P-01", "P.01"])
def test_bad_participant_fails_clearly(capsys, monkeypatch, tmp_path, pid):
    monkeypatch.setenv("DISPLAY", ":99")
    made = []
    monkeypatch.setattr(cli, "Session",
                        lambda *a, **k: made.append(a) or pytest.fail("session started"))
    data = tmp_path / "data"
    assert cli.run(["--participant", pid, "--trials", "1", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert (f"--participant must be a BIDS label: one or more letters and digits only "
            f"(A-Z, a-z, 0-9; no '_', '-', '.' or spaces), got '{pid}'") in err
    assert made == [] and not data.exists()


@pytest.fixture
def fake_session(tmp_path, monkeypatch):
    """Replace Session by a stand-in; returns the dict of what it was built with."""
    made = {}

    class FakeSession:
        trials_left = 1

        def __init__(self, cfg, participant, **kwargs):
            made.update(kwargs, participant=participant)

        def run(self):
            return SessionResult(tmp_path, 0, True, False)

    monkeypatch.setattr(cli, "Session", FakeSession)
    return made


@pytest.fixture
def dialog(monkeypatch):
    """psychopy.gui.DlgFromDict replaced by a stand-in that 'types' ``answer`` and
    presses OK (or Cancel when ``answer`` is None); the dialog probe says it can open."""
    gui = pytest.importorskip("psychopy.gui")
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(cli, "dialog_problem", lambda: None)
    state = {"answer": None, "shown": []}

    class FakeDlg:
        def __init__(self, dictionary, title="", sortKeys=True, **kwargs):
            state["shown"].append((dict(dictionary), title, sortKeys))
            self.OK = state["answer"] is not None
            if self.OK:
                dictionary.update(state["answer"])

    monkeypatch.setattr(gui, "DlgFromDict", FakeDlg)
    return state


def test_cancelled_dialog_exits_cleanly(tmp_path, capsys, dialog):
    assert cli.run(["--data-dir", str(tmp_path), "--session", "4"]) == 0
    assert "cancelled; nothing was recorded" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    assert dialog["shown"] == [({"participant": "", "session": 4}, "bubbles run", False)]


def test_dialog_answers_reach_the_session(tmp_path, capsys, dialog, fake_session):
    made = fake_session
    dialog["answer"] = {"participant": " P42 ", "session": "3"}
    assert cli.run(["--data-dir", str(tmp_path)]) == 0
    assert (made["participant"], made["session"]) == ("P42", 3)
    dialog["answer"] = {"participant": "P42", "session": "three"}
    assert cli.run(["--data-dir", str(tmp_path)]) == 1
    assert "session must be an integer >= 0, got 'three'" in capsys.readouterr().err
    made.clear()
    dialog["answer"] = {"participant": "P_42", "session": "3"}   # would be sub-P42
    assert cli.run(["--data-dir", str(tmp_path)]) == 1
    assert ("participant (dialog) must be a BIDS label: one or more letters and digits "
            "only") in capsys.readouterr().err
    assert made == {}


def test_session_zero_is_kept_and_negative_sessions_refused(tmp_path, capsys,
                                                            monkeypatch, fake_session):
    monkeypatch.setenv("DISPLAY", ":99")
    made = fake_session
    argv = ["--participant", "P1", "--data-dir", str(tmp_path)]
    assert cli.run(argv + ["--session", "0"]) == 0
    assert made["session"] == 0                       # not turned into session 1
    assert cli.run(argv) == 0 and made["session"] == 1
    made.clear()
    assert cli.run(argv + ["--session", "-1"]) == 2
    assert ("bubbles run: error: --session must be an integer >= 0, got -1"
            in capsys.readouterr().err)
    assert made == {}


def test_a_dialog_that_cannot_open_is_reported(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(cli, "dialog_problem", lambda: "Qt platform plugin 'xcb'")
    assert cli.run(["--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "participant dialog cannot open (Qt platform plugin 'xcb')" in err
    assert "--participant ID" in err and list(tmp_path.iterdir()) == []


REAL_DIALOG = """
import sys
from PyQt6 import QtCore, QtWidgets
from psychopy import gui
from commands.run import ask_participant

def answer():
    shown = [w for w in QtWidgets.QApplication.topLevelWidgets()
             if isinstance(w, gui.DlgFromDict) and w.isVisible()]
    if not shown:                          # not up yet: look again shortly
        QtCore.QTimer.singleShot(20, answer)
        return
    dlg = shown[0]
    if sys.argv[1] == "cancel":
        dlg.reject()
        return
    participant, session = dlg.findChildren(QtWidgets.QLineEdit)
    participant.textEdited.emit("P42")     # what typing does
    session.textEdited.emit("3")
    dlg.accept()

gui.ensureQtApp()
QtCore.QTimer.singleShot(0, answer)
print(repr(ask_participant(2)))
"""


@pytest.mark.parametrize("button, printed", [("ok", "('P42', 3)"), ("cancel", "None")])
def test_the_real_dialog(button, printed, monkeypatch):
    """PsychoPy's own Qt DlgFromDict, answered by a timer (offscreen Qt, own process)."""
    pytest.importorskip("PyQt6")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", REAL_DIALOG, button], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == printed


def test_dialog_probe_runs_qt_in_a_child_process(monkeypatch):
    pytest.importorskip("PyQt6")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")      # always loads
    assert cli.dialog_problem() is None
    monkeypatch.setenv("QT_QPA_PLATFORM", "nosuchplatform")  # Qt aborts the child
    assert "nosuchplatform" in cli.dialog_problem()


def test_no_display_is_reported(monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(cli.sys, "platform", "linux")
    assert cli.run(["--participant", "P1"]) == 1
    assert "xvfb-run" in capsys.readouterr().err


def test_model_without_observer_fails_clearly(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DISPLAY", ":99")

    def no_model(*args, **kwargs):
        raise RuntimeError("--simulate model needs torch, which is not installed")
    monkeypatch.setattr(responders, "model_responder", no_model)
    code = cli.run(["--participant", "M1", "--trials", "1", "--simulate", "model",
                    "--data-dir", str(tmp_path), "--pilot"])
    assert code == 1
    assert "--simulate model needs torch" in capsys.readouterr().err


def test_decision_noise_reaches_the_network_observer(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DISPLAY", ":99")
    seen = {}

    def fake_model(stimuli, labels, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop before the window opens")
    monkeypatch.setattr(responders, "model_responder", fake_model)
    argv = ["--participant", "M2", "--trials", "1", "--data-dir", str(tmp_path), "--pilot"]
    assert cli.run(argv + ["--simulate", "model", "--decision-noise", "1.5"]) == 1
    assert seen["decision_noise"] == 1.5
    seen.clear()
    assert cli.run(argv + ["--simulate", "model"]) == 1
    assert "decision_noise" not in seen                  # the observer's own default
    capsys.readouterr()
    assert cli.run(argv + ["--simulate", "template", "--decision-noise", "1"]) == 2
    assert "--decision-noise applies to --simulate model only" in capsys.readouterr().err
    assert cli.run(argv + ["--simulate", "model", "--decision-noise", "-1"]) == 2
    assert "--decision-noise must be a number >= 0" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.window
def test_simulated_template_run(tmp_path, capsys):
    config = tmp_path / "fast.toml"
    config.write_text("[stimuli]\nn_identities = 2\nsize = 64\n"
                      "[trials]\npractice = 1\nmain = 3\n"
                      "[timing]\nfixation_frames = 1\nstimulus_frames = 1\niti_frames = 0\n"
                      "[window]\nsize = [160, 120]\nframe_rate = 60.0\n")
    code = cli.run(["--config", str(config), "--participant", "T01", "--session", "2",
                    "--data-dir", str(tmp_path / "d"), "--simulate", "template",
                    "--pilot", "--seed", "9"])
    assert code == 0
    assert "Session complete: 4 trials" in capsys.readouterr().out
    (path,) = (tmp_path / "d").glob("T01_bubbles_expressions_*.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["session"] for r in rows] == ["2"] * 4
    assert all(r["response"] in ("happy", "fearful", "neutral") for r in rows)
