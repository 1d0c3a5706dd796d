"""Configuration loading and validation: bad values fail naming the key."""

import json
from pathlib import Path

import pytest

from experiments.config import (DEFAULT_CONFIG, ConfigError, default_config, load_config,
                                validate_config)


def test_default_config_loads_and_validates():
    cfg = load_config()
    assert cfg["quest"]["pThreshold"] == 0.75
    assert cfg["quest"]["beta"] == 3.5
    assert cfg["quest"]["delta"] == 0.01
    assert cfg["bubbles"]["bands"] == 5
    assert DEFAULT_CONFIG.name == "expression_task.toml"
    assert validate_config(default_config()) == cfg


def test_user_file_merges_over_defaults(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('expName = "mine"\n[trials]\nmain = 40\n')
    cfg = load_config(path, {"seed": 7})
    assert (cfg["expName"], cfg["trials"]["main"], cfg["seed"]) == ("mine", 40, 7)
    assert cfg["trials"]["practice"] == default_config()["trials"]["practice"]


@pytest.mark.parametrize("overrides, match", [
    ({"quest.pThreshold": 1.5},
     r"'quest\.pThreshold' must be a number in \(0, 1\), got 1\.5"),
    ({"quest.beta": -1}, r"'quest\.beta' must be a number > 0, got -1"),
    ({"trials.main": -3}, r"'trials\.main' must be an integer >= 0, got -3"),
    ({"trials.main": 2.5}, r"'trials\.main' must be an integer"),
    ({"window.size": [800]}, r"'window\.size' must be \[width, height\]"),
    ({"window.fullscreen": "yes"}, r"'window\.fullscreen' must be true or false"),
    ({"bubbles.aperture": "star"}, r"'bubbles\.aperture' must be one of \['gaussian'"),
    ({"bubbles.sigma": 0}, r"'bubbles\.sigma' must be a number > 0"),
    ({"bubbles.background": "grey"}, r"'bubbles\.background' must be 'mean', 'noise'"),
    ({"responses.keys": ["f"]}, r"'responses\.keys' must be a list of at least 2 key"),
    ({"responses.keys": ["f", "f"]}, r"'responses\.keys' must be a list of distinct"),
    ({"responses.keys": ["f", "escape"]}, r"keys other than responses\.quit_key"),
    ({"quest.min_bubbles": 50, "quest.max_bubbles": 10},
     r"'quest\.max_bubbles' must be greater than quest\.min_bubbles"),
    ({"quest.start": 1000}, r"'quest\.start' must be between quest\.min_bubbles"),
    ({"trials.practice": 0, "trials.main": 0}, r"'trials\.main' must be at least 1"),
    ({"stimuli.expressions": ["happy", "sad", "x", "y", "z", "w", "v"]},
     r"'responses\.keys' must be at least one key per expression"),
    ({"bubbles.bands": 2, "bubbles.sigma": [1.0, 2.0, 3.0]},
     r"'bubbles\.sigma' must be a scalar or one value per band \(2\)"),
    ({"seed": -1}, r"'seed' must be an integer in \[0, "),
    ({"stimuli.expressions": ["happy"], "quest.gamma": 0.5},
     r"'stimuli\.expressions' must be at least 2 labels"),
])
def test_bad_values_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=overrides)


def test_unknown_keys_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'trials\.mian'"):
        load_config(overrides={"trials.mian": 3})
    path = tmp_path / "typo.toml"
    path.write_text("[quest]\npthreshold = 0.8\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'quest\.pthreshold'.*"
                                          r"pThreshold"):
        load_config(path)
    path.write_text("[nosuch]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'nosuch'"):
        load_config(path)


def test_unreadable_files_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[quest\nbeta = ")
    with pytest.raises(ConfigError, match=r"is not valid TOML"):
        load_config(bad)
    bad.write_text("quest = 3\n")
    with pytest.raises(ConfigError, match=r"'quest' must be a table"):
        load_config(bad)


def test_per_band_counts_reach_the_spec(small_faces):
    from experiments.trials import spec_from_config

    cfg = load_config(overrides={"bubbles.n_bubbles": [3, 0], "bubbles.bands": 2})
    spec = spec_from_config(cfg, small_faces.shape)
    assert spec.n_per_band == (3, 0)


def test_bubble_choices_are_those_of_bubblespec(monkeypatch):
    import bubbles.spec

    for key, allowed in (("aperture", bubbles.spec.APERTURES),
                         ("polarity", bubbles.spec.POLARITIES),
                         ("overlap", bubbles.spec.OVERLAPS)):
        for value in allowed:                               # every one BubbleSpec takes
            assert load_config(overrides={f"bubbles.{key}": value})["bubbles"][key] == \
                value
        with pytest.raises(ConfigError, match=rf"'bubbles\.{key}' must be one of "
                                              rf"{list(allowed)}".replace("[", "\\[")):
            load_config(overrides={f"bubbles.{key}": "nope"})


def test_a_relative_source_folder_becomes_absolute(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "task.toml").write_text('[stimuli]\nsource = "images/set"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # set in a file: relative to the file's folder, not the working directory
    cfg = load_config(conf / "task.toml")
    assert cfg["stimuli"]["source"] == str(conf / "images" / "set")
    cfg = load_config(Path("..") / "conf" / "task.toml")        # a relative file path
    assert cfg["stimuli"]["source"] == str(conf / "images" / "set")
    # an override (or a hand-made config): relative to the working directory
    cfg = load_config(conf / "task.toml", {"stimuli.source": "other"})
    assert cfg["stimuli"]["source"] == str(elsewhere / "other")
    assert validate_config({**cfg, "stimuli": {**cfg["stimuli"], "source": "x/../y"}}
                           )["stimuli"]["source"] == str(elsewhere / "y")
    # the embedded faces and absolute folders are kept as given
    assert load_config()["stimuli"]["source"] == "faces"
    assert load_config(overrides={"stimuli.source": "/abs/set"})["stimuli"]["source"] \
        == "/abs/set"


def test_sidecar_records_an_absolute_source_and_resume_works_elsewhere(
        tmp_path, monkeypatch, small_faces):
    from experiments.responders import ScriptedResponder
    from experiments.session import Session

    small_faces.to_folder(tmp_path / "conf" / "images")
    (tmp_path / "conf" / "task.toml").write_text('[stimuli]\nsource = "images"\n')
    monkeypatch.chdir(tmp_path)
    overrides = {"bubbles.sigma": 3.0, "bubbles.n_bubbles": 12, "bubbles.bands": 2,
                 "trials.practice": 2, "trials.main": 6, "quest.start": 12,
                 "quest.max_bubbles": 200}
    cfg = load_config(Path("conf") / "task.toml", overrides)
    answers = ["happy", "neutral", "happy", "escape"]
    result = Session(cfg, "P01", data_dir=tmp_path / "data", presenter="headless",
                     responder=ScriptedResponder(answers)).run()
    assert result.escaped and result.n_trials == 3
    meta = json.loads(Path(f"{result.stem}.json").read_text())
    assert meta["config"]["stimuli"]["source"] == str(tmp_path / "conf" / "images")
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)                 # a resume from another directory
    again = Session(resume=result.stem, presenter="headless",
                    responder=ScriptedResponder.random(1)).run()
    assert again.completed and again.n_trials == 8
