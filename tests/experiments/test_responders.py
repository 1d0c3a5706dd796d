"""Responders without a window: scripted, template, the model hook."""

import csv
import importlib.util
import json
import sys
import types

import numpy as np
import pytest

import experiments.session as session_mod
from bubbles import BubbleSpec, bubble_stimuli
from experiments.responders import (ModelResponder, Response, ScriptedResponder,
                                    TemplateResponder, make_responder, model_responder)
from experiments.session import Session, responder_seed
from experiments.trials import Prepared, load_stimuli

CHOICES = {"happy": "f", "fearful": "g", "neutral": "h"}


def test_scripted_answers_in_order_then_fails_clearly():
    r = ScriptedResponder(["happy", None, "escape"], rt=0.25)
    assert r.respond(None, CHOICES) == Response("f", "happy", 0.25)
    assert r.respond(None, CHOICES) == Response(None, None, None)       # timeout
    assert r.respond(None, CHOICES).key == "escape"
    with pytest.raises(RuntimeError, match=r"ran out of answers after 3 trials"):
        r.respond(None, CHOICES)
    with pytest.raises(ValueError, match=r"answer must be one of the choice labels"):
        ScriptedResponder(["sad"]).respond(None, CHOICES)
    with pytest.raises(ValueError, match=r"rt must be a number of seconds >= 0"):
        ScriptedResponder([], rt=-1)


def test_scripted_callable_random_and_screens():
    r = ScriptedResponder(lambda s, c, n: list(c)[n % 3], keep_frames=True)
    assert [r.respond(np.zeros((2, 2)), CHOICES).label for _ in range(4)] == \
        ["happy", "fearful", "neutral", "happy"]
    assert r.needs_frame and len(r.frames) == 4
    a = ScriptedResponder.random(seed=1)
    b = ScriptedResponder.random(seed=1)
    assert [a.respond(None, CHOICES) for _ in range(5)] == \
        [b.respond(None, CHOICES) for _ in range(5)]
    s = ScriptedResponder([], screen_keys=["escape"])
    assert s.wait_keys(["space", "escape"]) == "escape"
    assert s.wait_keys(["space", "escape"]) == "space"


def test_template_responder_uses_the_observer(small_faces):
    class Fixed:
        def decide(self, stimulus, background=0.5):
            self.seen = (stimulus.shape, background)
            return "neutral"

    obs = Fixed()
    r = TemplateResponder(obs, background=0.4, rt=0.3)
    assert r.needs_frame
    assert r.respond(np.zeros((8, 8)), CHOICES) == Response("h", "neutral", 0.3)
    assert obs.seen == ((8, 8), 0.4)
    with pytest.raises(ValueError, match=r"observer must have a decide"):
        TemplateResponder(object())


def test_template_from_stimuli_sees_the_faces(small_faces):
    r = TemplateResponder.from_stimuli(small_faces, small_faces.expressions,
                                       internal_noise=0.0, background=0.5)
    labels = small_faces.table.expression
    got = [r.respond(img, CHOICES).label for img in small_faces.images]
    assert np.mean(np.array(got) == labels.to_numpy()) == 1.0   # full view, no noise
    with pytest.raises(ValueError, match=r"labels must be labels of the images"):
        TemplateResponder.from_stimuli(small_faces, ["happy", "sad"])


def test_model_hook_fails_clearly_without_torch(monkeypatch, small_faces):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(RuntimeError, match=r"--simulate model needs torch"):
        model_responder(small_faces, small_faces.expressions)


def test_model_hook_fails_clearly_without_observer(monkeypatch, small_faces):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    monkeypatch.setitem(sys.modules, "ann_bridge.observer", None)   # import fails
    with pytest.raises(RuntimeError, match=r"needs ann_bridge\.observer\.NetworkObserver"):
        model_responder(small_faces, small_faces.expressions)


def test_make_responder_kinds(fast_cfg, small_faces):
    labels = small_faces.expressions
    assert isinstance(make_responder("scripted", stimuli=small_faces, labels=labels,
                                     cfg=fast_cfg), ScriptedResponder)
    assert isinstance(make_responder("template", stimuli=small_faces, labels=labels,
                                     cfg=fast_cfg), TemplateResponder)
    with pytest.raises(ValueError, match=r"simulate must be one of"):
        make_responder("person", stimuli=small_faces, labels=labels, cfg=fast_cfg)
    with pytest.raises(ValueError, match=r"decision_noise applies to simulate='model' "
                                         r"only, got simulate='template'"):
        make_responder("template", stimuli=small_faces, labels=labels, cfg=fast_cfg,
                       decision_noise=1.0)


def test_model_responder_gets_the_decision_noise(fast_cfg, small_faces):
    pytest.importorskip("torch")
    responder = make_responder("model", stimuli=small_faces,
                               labels=small_faces.expressions, cfg=fast_cfg, seed=3,
                               decision_noise=2.5)
    assert isinstance(responder, ModelResponder) and responder.needs_frame
    observer = responder.observer
    assert observer.decision_noise == 2.5 and observer.seed == 3
    assert responder.labels == observer.labels == tuple(small_faces.expressions)
    assert make_responder("model", stimuli=small_faces, labels=small_faces.expressions,
                          cfg=fast_cfg).observer.decision_noise == 0.0
    answer = responder.respond(small_faces.images[0], CHOICES)
    assert answer.label in CHOICES and answer.key == CHOICES[answer.label]


def test_model_hook_builds_the_network_observer(monkeypatch, small_faces):
    class Observer(tuple):
        def decide(self, stimulus):
            return self[1][0]

    class NetworkObserver:
        @classmethod
        def from_stimuli(cls, stimuli, labels, *, seed=0):
            return Observer(("observer", tuple(labels), seed))

    fake = types.ModuleType("ann_bridge.observer")
    fake.NetworkObserver = NetworkObserver
    monkeypatch.setitem(sys.modules, "ann_bridge.observer", fake)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "torch" else real(name, *a))
    got = model_responder(small_faces, ("happy", "neutral"), seed=4)
    assert isinstance(got, ModelResponder)
    assert got.observer == ("observer", ("happy", "neutral"), 4)

    def broken(cls, stimuli, labels, *, seed=0):
        raise OSError("weights file missing\nmore")
    NetworkObserver.from_stimuli = classmethod(broken)
    with pytest.raises(RuntimeError, match=r"could not create the network observer: "
                                           r"OSError: weights file missing$"):
        model_responder(small_faces, ("happy", "neutral"))


def test_model_responder_wraps_any_decide_observer():
    class Fixed:
        labels = ("happy", "neutral")

        def decide(self, stimulus):
            self.seen = np.shape(stimulus)
            return "neutral"

    obs = Fixed()
    r = ModelResponder(obs, rt=0.2)
    assert r.needs_frame and r.labels == ("happy", "neutral")
    assert r.respond(np.zeros((8, 8)), CHOICES) == Response("h", "neutral", 0.2)
    assert obs.seen == (8, 8)
    with pytest.raises(ValueError, match=r"observer must have a decide\(stimulus\)"):
        ModelResponder(object())


def test_network_observer_in_a_model_responder(small_faces):
    """The real ann_bridge observer through ModelResponder (skipped without torch)."""
    pytest.importorskip("torch")
    from ann_bridge.observer import NetworkObserver

    labels = small_faces.expressions
    r = model_responder(small_faces, labels, seed=1)
    assert isinstance(r.observer, NetworkObserver)
    answer = r.respond(small_faces.images[0], CHOICES)
    assert answer.label in labels and answer.key == CHOICES[answer.label]


def _shown(stimuli, index, spec=None):
    return Prepared(stimuli.images[index], [], spec, index, 0)


@pytest.mark.parametrize("background", ["mean", "noise", 0.3])
def test_template_observer_gets_the_shown_images_background(fast_cfg, small_faces,
                                                            background):
    """A fully hidden stimulus shows only the background: the template observer must
    then find no evidence for any label, whatever the image (apply_bubbles fills the
    hidden parts with *each* image's mean, or the grey level)."""
    cfg = dict(fast_cfg, bubbles=dict(fast_cfg["bubbles"], background=background,
                                      bands=0))
    r = make_responder("template", stimuli=small_faces, labels=small_faces.expressions,
                       cfg=cfg, seed=0)
    r.observer.internal_noise = 0.0
    spec = BubbleSpec(shape=small_faces.shape, sigma=3.0, n_bubbles=1,
                      background=background)
    hidden = np.zeros((1,) + small_faces.shape, np.float32)
    means = small_faces.images.mean(axis=(1, 2))
    assert np.ptp(means) > 1e-3                  # the images' means differ
    seen = []
    for i, image in enumerate(small_faces.images):
        stim = bubble_stimuli(spec, image, hidden, seed=5, trials=[i])[0]
        r.begin_trial(_shown(small_faces, i, spec))
        bg = r.current_background()
        scores = r.observer.scores(stim, bg)[0]
        if background != "noise":                # exactly the background: no evidence
            np.testing.assert_allclose(scores, 0.0, atol=1e-6)
        expected = means[i] if isinstance(background, str) else background
        assert bg == pytest.approx(expected, abs=1e-6)
        seen.append(r.respond(stim, CHOICES).label)
    if background != "noise":
        assert len(set(seen)) == 1, seen        # the decision ignores the image
    with pytest.raises(RuntimeError, match=r"needs begin_trial"):
        TemplateResponder.from_stimuli(small_faces, small_faces.expressions).respond(
            small_faces.images[0], CHOICES)


def test_session_hands_the_template_observer_each_shown_images_mean(make_cfg, tmp_path):
    """Through a whole (headless) session: the background the template observer
    subtracts is the mean grey of the image shown on that trial, as apply_bubbles
    filled it in, not one grey for every image."""
    cfg = make_cfg(bubbles__bands=0, bubbles__background="mean")
    stimuli, labels = load_stimuli(cfg)
    r = make_responder("template", stimuli=stimuli, labels=labels, cfg=cfg, seed=0)
    seen = []
    decide = r.observer.decide

    def spy(stimulus, background=0.5):
        seen.append(background)
        return decide(stimulus, background=background)
    r.observer.decide = spy
    result = Session(cfg, "B01", data_dir=tmp_path, presenter="headless",
                     responder=r).run()
    with open(f"{result.stem}.csv", newline="") as f:
        shown = [stimuli.index(row["stimulus_id"]) for row in csv.DictReader(f)]
    expected = [float(stimuli.images[i].mean(dtype=np.float64)) for i in shown]
    assert len(seen) == len(expected) == 8
    np.testing.assert_allclose(seen, expected, atol=1e-6)


def test_a_resumed_simulation_draws_fresh_noise(fast_cfg, tmp_path, monkeypatch):
    """The simulated observer's seed depends on the run's first trial: a resume does
    not replay the noise of the first run (and a responder that cannot start on
    resume still leaves the files untouched)."""
    seeds = []

    def fake_make_responder(kind, *, seed, **kwargs):
        seeds.append(seed)
        if len(seeds) == 1:      # the first run stops after 3 trials
            return ScriptedResponder(["happy", "neutral", "happy", "escape"])
        if len(seeds) == 2:
            raise RuntimeError("observer cannot start")
        return ScriptedResponder.random(seed)

    monkeypatch.setattr(session_mod, "make_responder", fake_make_responder)
    first = Session(fast_cfg, "P01", data_dir=tmp_path, simulate="scripted",
                    presenter="headless").run()
    assert first.escaped and first.n_trials == 3
    with open(f"{first.stem}.csv", "a") as f:
        f.write("P01,1,3,main,id0")                      # a torn line to repair
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    with pytest.raises(RuntimeError, match="observer cannot start"):
        Session(resume=first.stem, simulate="scripted", presenter="headless").run()
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*"))
            if p.is_file()} == before                    # nothing cut, nothing written
    again = Session(resume=first.stem, simulate="scripted", presenter="headless").run()
    assert again.completed and again.n_trials == 8
    meta = json.loads(open(f"{first.stem}.json").read())
    order, mask = meta["seeds"]["order_seed"], meta["seeds"]["mask_seed"]
    assert seeds[0] == responder_seed(order, mask, 0)
    assert seeds[1] == seeds[2] == responder_seed(order, mask, 3)
    assert seeds[0] != seeds[2]                          # fresh draws on resume
    assert [r["responder_seed"] for r in meta["runs"]] == [seeds[0], seeds[2]]
