"""Configuration loading and validation: bad values fail naming the key."""

import json
import re
from pathlib import Path

import pytest

import bubbles.spec
from experiments.config import (DEFAULT_CONFIG, TEXT_FIELDS, ConfigError,
                                check_bubble_counts, default_config, load_config,
                                validate_config)
from experiments.responders import ScriptedResponder
from experiments.session import Session
from experiments.trials import spec_from_config


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
    cfg = load_config(overrides={"bubbles.n_bubbles": [3, 0], "bubbles.bands": 2})
    spec = spec_from_config(cfg, small_faces.shape)
    assert spec.n_per_band == (3, 0)


def test_bubble_choices_are_those_of_bubblespec():
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


@pytest.mark.parametrize("key, text, placeholder", [
    ("instructions", "Press {contnue_key} to start.", "{contnue_key}"),
    ("end", "Done: {don} trials.", "{don}"),
    ("end", "{done} of {total}", "{done}"),          # only the break screen counts
    ("practice_done", "Press {continue_key} {0}", None),
    ("break_message", "Rest. } Press {continue_key}.", None),
    ("break_message", "Rest {", None),
])
def test_text_placeholders_are_checked_when_loaded(key, text, placeholder):
    allowed = ", ".join("{" + f + "}" for f in TEXT_FIELDS[key])
    if placeholder:
        match = (rf"config key 'text\.{key}' uses the placeholder "
                 rf"{re.escape(placeholder)}, which this screen does not fill; "
                 rf"placeholders allowed here: {re.escape(allowed)}")
    else:
        match = (rf"config key 'text\.{key}' is not a valid text: .*; placeholders "
                 rf"allowed here: {re.escape(allowed)} \(write {{{{ and }}}} for a "
                 rf"literal brace\)")
    with pytest.raises(ConfigError, match=match):
        load_config(overrides={f"text.{key}": text})


def test_every_placeholder_a_screen_fills_is_accepted():
    cfg = load_config(overrides={
        "text.break_message": "{done}/{total} {{braces}} {mapping} {continue_key}",
        "text.end": "Bye ({continue_key})"})
    assert cfg["text"]["end"] == "Bye ({continue_key})"


@pytest.mark.parametrize("overrides, key, got", [
    ({"bubbles.n_bubbles": 5000, "quest.start": 60}, "bubbles.n_bubbles", 5000),
    ({"quest.max_bubbles": 10 ** 6}, "quest.max_bubbles", 10 ** 6),
    ({"trials.practice_bubbles": 70000}, "trials.practice_bubbles", 70000),
])
def test_bubble_counts_above_the_pixels_are_refused_when_loaded(overrides, key, got):
    base = {"stimuli.size": 64, "bubbles.bands": 0, "bubbles.sigma": 3.0}
    with pytest.raises(ConfigError, match=rf"config key '{re.escape(key)}' must be a "
                                          rf"count that puts at most 4096 bubbles in "
                                          rf"each band \(the 64 x 64 images have 4096 "
                                          rf"pixels.*got {got}"):
        load_config(overrides={**base, **overrides})
    # one bubble per pixel is the most a band can hold
    cfg = load_config(overrides={**base, "quest.max_bubbles": 4096})
    check_bubble_counts(cfg, (64, 64))
    with pytest.raises(ConfigError, match=r"the 32 x 32 images have 1024 pixels"):
        check_bubble_counts(cfg, (32, 32))          # a folder of smaller images


def test_stimuli_size_names_the_key_and_the_faces_minimum():
    with pytest.raises(ConfigError, match=r"config key 'stimuli\.size' must be an "
                                          r"integer in \[64, 4096\], got 32"):
        load_config(overrides={"stimuli.size": 32})
    assert load_config(overrides={"stimuli.size": 64})["stimuli"]["size"] == 64


@pytest.mark.parametrize("name", ["../../../x", "a/b", "a\\b", "x.y", "a b", "-x", ""])
def test_exp_name_must_be_a_file_name_part(name):
    with pytest.raises(ConfigError, match=r"config key 'expName' must be letters, digits, "
                                          r"'_' and '-' only"):
        load_config(overrides={"expName": name})
    assert load_config(overrides={"expName": "face_task-2"})["expName"] == "face_task-2"


def test_a_folder_of_small_images_is_checked_before_anything_opens(tmp_path, small_faces,
                                                                   make_cfg):
    small_faces.to_folder(tmp_path / "set")             # 64 x 64 images
    cfg = make_cfg(stimuli__source=str(tmp_path / "set"), quest__max_bubbles=5000,
                   bubbles__bands=0)
    with pytest.raises(ConfigError, match=r"'quest\.max_bubbles' must be a count that "
                                          r"puts at most 4096 bubbles"):
        Session(cfg, "P01", data_dir=tmp_path / "data", presenter="headless")
    assert not (tmp_path / "data").exists()


def test_a_resume_whose_recorded_config_is_invalid_says_how_to_recover(fast_cfg,
                                                                       tmp_path):
    answers = ["happy", "neutral", "escape"]
    result = Session(fast_cfg, "P01", data_dir=tmp_path, presenter="headless",
                     responder=ScriptedResponder(answers)).run()
    sidecar = Path(f"{result.stem}.json")
    meta = json.loads(sidecar.read_text())
    meta["config"]["text"]["end"] = "Bye {don}"          # a config of an older release
    sidecar.write_text(json.dumps(meta))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=rf"cannot resume '{re.escape(str(result.stem))}"
                                          rf"': the configuration recorded in its sidecar "
                                          rf".*\.json is not valid: config key 'text\.end' "
                                          rf"uses the placeholder {{don}}.*Nothing was "
                                          rf"changed. To continue, correct that value in "
                                          rf"the sidecar \(its \"config\" holds"):
        Session(resume=result.stem, presenter="headless")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    meta["config"]["text"]["end"] = "Bye {continue_key}"  # the recovery it names
    sidecar.write_text(json.dumps(meta))
    again = Session(resume=result.stem, presenter="headless",
                    responder=ScriptedResponder.random(0)).run()
    assert again.completed and again.n_trials == 8
