"""The ``[scanner]`` table: validated key by key and across keys when the configuration
is loaded, and bad scanner setups refused by name before any window opens."""

import re

import pytest

from commands import run as cli
from experiments.config import ConfigError, default_config, load_config, validate_config
from experiments.responders import ScriptedResponder
from experiments.scanner import ScannerSession
from experiments.session import Session

from .conftest import FAST, SCANNER, SCANNER_TOML


def _load(**overrides):
    return load_config(overrides={**FAST, **SCANNER,
                                  **{k.replace("__", "."): v for k, v in overrides.items()}})


def test_the_default_scanner_table_is_off_and_valid():
    cfg = load_config()
    assert cfg["scanner"]["enabled"] is False
    assert cfg["scanner"]["trigger_key"] == "5"
    on = load_config(overrides={"scanner.enabled": True})
    assert on["scanner"]["tr"] == 2.0


@pytest.mark.parametrize("key, value, message", [
    ("scanner__tr", 0, "config key 'scanner.tr' must be a number > 0, got 0"),
    ("scanner__tr", -2.0, "config key 'scanner.tr' must be a number > 0, got -2.0"),
    ("scanner__trigger_key", "f", "config key 'scanner.trigger_key' must be a key that "
                                  "is not a response key"),
    ("scanner__trigger_key", "escape", "config key 'scanner.trigger_key' must be a key "
                                       r"other than responses.quit_key \('escape'\)"),
    ("scanner__trigger_key", "space", r"other than responses.continue_key \('space'\)"),
    ("scanner__volumes", 5, "config key 'scanner.volumes' must be at least the 9 volumes "
                            "the runs need"),
    ("scanner__iti_mean", 3.0, r"config key 'scanner.iti_mean' must be in \(1, 2.5\]"),
    ("scanner__iti_max", 0.5, "config key 'scanner.iti_max' must be a number >= 0.1, "
                              "got 0.5|at least scanner.iti_min"),
    ("scanner__iti_min", 0.0, "config key 'scanner.iti_min' must be a number >= 0.1"),
    ("scanner__dummy_volumes", -1, "config key 'scanner.dummy_volumes' must be an "
                                   "integer >= 0, got -1"),
    ("scanner__runs", 0, "config key 'scanner.runs' must be an integer >= 1, got 0"),
    ("scanner__trials_per_run", 2.5, "config key 'scanner.trials_per_run' must be an "
                                     "integer >= 1, got 2.5"),
    ("scanner__stimulus_duration", 0, "config key 'scanner.stimulus_duration' must be a "
                                      "number > 0"),
    ("scanner__lead_in", -1.0, "config key 'scanner.lead_in' must be a number >= 0"),
    ("scanner__quest", "yes", "config key 'scanner.quest' must be true or false"),
    ("scanner__n_bubbles", 10 ** 6, "config key 'scanner.n_bubbles' must be a count "
                                    "that puts at most 4096 bubbles in each band"),
    ("scanner__onset_file", "missing.tsv", "config key 'scanner.onset_file'.*does not "
                                           "exist"),
])
def test_bad_scanner_values_fail_by_name_at_load(key, value, message):
    with pytest.raises(ConfigError, match=message):
        _load(**{key: value})


def test_trials_that_do_not_fit_the_run_fail_at_load_with_the_volumes_needed():
    with pytest.raises(ConfigError) as err:
        _load(scanner__volumes=8)
    text = str(err.value)
    assert "at least the 9 volumes the runs need (lead_in 2 s, 4 trials of 1.5 s with " \
           "their ITIs, lead_out 4 s, at TR 2 s): the trials do not fit the run, got 8" \
        in text
    assert _load(scanner__volumes=9)["scanner"]["volumes"] == 9


def test_cross_key_checks_wait_until_the_mode_is_on():
    cfg = load_config(overrides={**FAST, "scanner.trigger_key": "f"})
    assert cfg["scanner"]["enabled"] is False
    with pytest.raises(ConfigError, match="not a response key"):
        load_config(overrides={**FAST, "scanner.trigger_key": "f",
                               "scanner.enabled": True})


def test_an_onset_file_is_read_relative_to_the_config_file(tmp_path):
    (tmp_path / "onsets.tsv").write_text(
        "run\tonset\n" + "".join(f"{r}\t{o}\n" for r in (1, 2, 3)
                                 for o in (2.0, 6.0, 10.0, 14.0)))
    toml = tmp_path / "task.toml"
    toml.write_text('[scanner]\nenabled = true\nonset_file = "onsets.tsv"\n'
                    'trials_per_run = 4\nruns = 3\n')
    cfg = load_config(toml, overrides=FAST)
    assert cfg["scanner"]["onset_file"] == str(tmp_path / "onsets.tsv")
    toml.write_text('[scanner]\nenabled = true\nonset_file = "onsets.tsv"\n'
                    'trials_per_run = 5\nruns = 3\n')
    with pytest.raises(ConfigError, match=r"scanner.trials_per_run \(5\) onsets for run "
                                          r"1, got 4"):
        load_config(toml, overrides=FAST)


def test_a_recorded_configuration_without_the_scanner_table_still_validates():
    cfg = default_config()
    del cfg["scanner"]
    del cfg["text"]["scanner_wait"], cfg["text"]["run_done"]
    out = validate_config(cfg)
    assert out["scanner"]["enabled"] is False and "run_done" in out["text"]
    del cfg["quest"]["beta"]                     # other keys still must be there
    with pytest.raises(ConfigError, match="config key 'quest.beta' is missing"):
        validate_config(cfg)


def test_the_session_classes_refuse_the_other_mode(make_cfg, small_faces, tmp_path):
    with pytest.raises(ValueError, match="run it with experiments.scanner.ScannerSession"):
        Session(_load(), "P01", data_dir=tmp_path, stimuli=small_faces)
    sc = ScannerSession(make_cfg(), "P01", data_dir=tmp_path, stimuli=small_faces)
    assert sc.cfg["scanner"]["enabled"] is True            # switched on by the class
    with pytest.raises(ValueError, match="speed applies to a simulated scanner only"):
        ScannerSession(_load(), "P01", data_dir=tmp_path, speed=5)
    with pytest.raises(ValueError, match="speed must be a number > 0"):
        ScannerSession(_load(), "P01", data_dir=tmp_path, simulate_scanner=True, speed=0)
    assert list(tmp_path.iterdir()) == []


def _toml(tmp_path, extra=""):
    text = SCANNER_TOML.format(n=4) + extra
    path = tmp_path / "scan.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("extra, message", [
    ("tr = 0\n", "config key 'scanner.tr' must be a number > 0, got 0"),
    ("trigger_key = \"g\"\n", "config key 'scanner.trigger_key' must be a key that is "
                              "not a response key"),
    ("volumes = 3\n", "the trials do not fit the run, got 3"),
])
def test_the_command_refuses_a_bad_scanner_config_before_anything_opens(
        tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(cli, "ScannerSession", lambda *a, **k: pytest.fail("opened"))
    config = _toml(tmp_path)
    config.write_text(config.read_text().replace("tr = 2.0\n", "") + extra
                      if extra.startswith("tr") else config.read_text() + extra)
    data = tmp_path / "data"
    assert cli.run(["--config", str(config), "--participant", "P01", "--data-dir",
                    str(data), "--simulate", "scripted", "--simulate-scanner"]) == 1
    err = capsys.readouterr().err
    assert "bubbles run: error: " in err and re.search(message, err), err
    assert not data.exists()


def test_scanner_usage_errors(capsys, tmp_path):
    assert cli.run(["--participant", "P01", "--speed", "10"]) == 2
    assert "--speed applies to --simulate-scanner only" in capsys.readouterr().err
    assert cli.run(["--participant", "P01", "--simulate-scanner", "--speed", "-1"]) == 2
    assert "--speed must be a number > 0" in capsys.readouterr().err
    assert cli.run(["--participant", "P01", "--bubbles-from", "x.csv", "--data-dir",
                    str(tmp_path / "d")]) == 1
    assert "--bubbles-from applies to the scanner mode only" in capsys.readouterr().err


def _behavioural(make_cfg, tmp_path, participant="P01", **overrides):
    cfg = make_cfg(**overrides)
    return Session(cfg, participant, data_dir=tmp_path / "beh", presenter="headless",
                   responder=ScriptedResponder.random(3)).run()


def test_bubbles_from_another_participant_fails_before_any_window(
        make_cfg, tmp_path, capsys, monkeypatch):
    earlier = _behavioural(make_cfg, tmp_path, participant="P02")
    monkeypatch.setenv("DISPLAY", ":99")
    data = tmp_path / "data"
    config = _toml(tmp_path)
    assert cli.run(["--config", str(config), "--participant", "P01", "--data-dir",
                    str(data), "--simulate", "scripted", "--simulate-scanner",
                    "--bubbles-from", str(earlier.files["csv"])]) == 1
    err = capsys.readouterr().err
    assert (f"--bubbles-from '{earlier.files['csv']}' is a session of participant "
            f"'P02', not of 'P01'") in err
    assert not data.exists()
    # the same participant, but another aperture: the threshold does not transfer
    other = _behavioural(make_cfg, tmp_path, participant="P01", bubbles__sigma=4.0)
    assert cli.run(["--config", str(config), "--participant", "P01", "--data-dir",
                    str(data), "--simulate-scanner", "--bubbles-from",
                    str(other.files["csv"])]) == 1
    assert "used another BubbleSpec (sigma: 4.0 there, 3.0 here)" in \
        capsys.readouterr().err
    assert not data.exists()
