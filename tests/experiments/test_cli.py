"""``bubbles run``: arguments, dialog cancel, clear errors, a simulated run."""

import csv

import pytest

from experiments import cli


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
    assert cli.run(["--participant", "P1", "--trials", "-5"]) == 1
    assert "'trials.main' must be an integer >= 0, got -5" in capsys.readouterr().err
    assert cli.run(["--resume", str(tmp_path / "none.csv")]) == 1
    assert "cannot resume" in capsys.readouterr().err


def test_bad_participant_fails_clearly(capsys, monkeypatch, fast_cfg):
    monkeypatch.setenv("DISPLAY", ":99")
    assert cli.run(["--participant", "../x", "--trials", "1"]) == 1
    assert "participant must start with a letter or digit" in capsys.readouterr().err


def test_cancelled_dialog_exits_cleanly(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(cli, "ask_participant", lambda session=1: None)
    assert cli.run(["--data-dir", str(tmp_path)]) == 0
    assert "cancelled; nothing was recorded" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_no_display_is_reported(monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(cli.sys, "platform", "linux")
    assert cli.run(["--participant", "P1"]) == 1
    assert "xvfb-run" in capsys.readouterr().err


def test_model_without_observer_fails_clearly(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DISPLAY", ":99")
    import experiments.responders as responders

    def no_model(*args, **kwargs):
        raise RuntimeError("--simulate model needs torch, which is not installed")
    monkeypatch.setattr(responders, "model_responder", no_model)
    code = cli.run(["--participant", "M1", "--trials", "1", "--simulate", "model",
                    "--data-dir", str(tmp_path), "--pilot"])
    assert code == 1
    assert "--simulate model needs torch" in capsys.readouterr().err


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
