"""Responders without a window: scripted, template, the model hook."""

import importlib.util
import sys

import numpy as np
import pytest

from experiments.responders import (Response, ScriptedResponder, TemplateResponder,
                                    make_responder, model_responder)

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
    with pytest.raises(ValueError, match=r"labels must be expressions of the stimulus"):
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
    observer = make_responder("model", stimuli=small_faces, labels=small_faces.expressions,
                              cfg=fast_cfg, seed=3, decision_noise=2.5)
    assert observer.decision_noise == 2.5 and observer.seed == 3
    assert observer.labels == tuple(small_faces.expressions)
    assert make_responder("model", stimuli=small_faces, labels=small_faces.expressions,
                          cfg=fast_cfg).decision_noise == 0.0


def test_model_hook_builds_the_network_observer(monkeypatch, small_faces):
    import types

    class NetworkObserver:
        @classmethod
        def from_stimuli(cls, stimuli, labels, *, seed=0):
            return ("observer", tuple(labels), seed)

    fake = types.ModuleType("ann_bridge.observer")
    fake.NetworkObserver = NetworkObserver
    monkeypatch.setitem(sys.modules, "ann_bridge.observer", fake)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "torch" else real(name, *a))
    assert model_responder(small_faces, ("happy", "neutral"), seed=4) == \
        ("observer", ("happy", "neutral"), 4)

    def broken(cls, stimuli, labels, *, seed=0):
        raise OSError("weights file missing\nmore")
    NetworkObserver.from_stimuli = classmethod(broken)
    with pytest.raises(RuntimeError, match=r"could not create the network observer: "
                                           r"OSError: weights file missing$"):
        model_responder(small_faces, ("happy", "neutral"))
