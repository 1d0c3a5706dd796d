import numpy as np
import pytest

from ann_bridge.observer import NetworkObserver

CHOICES = {"happy": "f", "fearful": "g", "neutral": "h"}


@pytest.fixture(scope="module")
def faces():
    from bubbles.faces import face_set
    return face_set(2, seed=0, size=128)


def test_responder_interface_and_accuracy(faces):
    from experiments.responders import Response

    obs = NetworkObserver(device="cpu")
    assert obs.needs_frame
    r = obs.respond(faces.images[0], CHOICES)
    assert isinstance(r, Response) and r.label == "happy" and r.key == "f"
    assert np.isnan(r.rt)
    assert obs.accuracy(faces.images, list(faces.table["expression"])) == 1.0


def test_decision_noise_lowers_accuracy_and_is_seeded(faces):
    labels = list(faces.table["expression"]) * 10
    stims = np.concatenate([faces.images] * 10)
    a = NetworkObserver(decision_noise=50.0, seed=1, device="cpu").decide_batch(stims)
    b = NetworkObserver(decision_noise=50.0, seed=1, device="cpu").decide_batch(stims)
    assert a == b
    assert np.mean([x == y for x, y in zip(a, labels)]) < 0.8


def test_noise_for_accuracy(faces):
    obs = NetworkObserver(device="cpu", seed=5)
    stims = np.concatenate([faces.images] * 20)
    labels = list(faces.table["expression"]) * 20
    sd = obs.noise_for_accuracy(stims, labels, target=0.75)
    assert sd > 0
    obs.decision_noise = sd
    assert obs.accuracy(stims, labels) == pytest.approx(0.75, abs=0.08)
    with pytest.raises(ValueError, match="target must be between chance"):
        obs.noise_for_accuracy(stims, labels, target=0.2)


def test_choices_restrict_answers(faces):
    obs = NetworkObserver(device="cpu", rt=0.3)
    r = obs.respond(faces.images[0], {"fearful": "j", "neutral": "k"})
    assert r.label in ("fearful", "neutral") and r.rt == 0.3
    with pytest.raises(ValueError, match="choices must include"):
        obs.respond(faces.images[0], {"sad": "j"})


def test_from_stimuli_and_errors(faces):
    obs = NetworkObserver.from_stimuli(faces, ["happy", "neutral"], seed=2, device="cpu")
    assert obs.labels == ("happy", "neutral")
    with pytest.raises(ValueError, match="labels must be among"):
        NetworkObserver.from_stimuli(faces, ["sad"])
    with pytest.raises(ValueError, match="decision_noise must be"):
        NetworkObserver(decision_noise=-1)
    with pytest.raises(ValueError, match="stimulus must be a grey frame"):
        NetworkObserver(device="cpu").decide(np.zeros((2, 3, 4, 5)))


def test_model_responder_hook(faces):
    """experiments' ``--simulate model`` path builds our observer."""
    from experiments.responders import model_responder

    r = model_responder(faces, ["happy", "fearful", "neutral"], seed=0)
    assert isinstance(r, NetworkObserver)


def test_simulated_session_with_the_network_is_analysed_like_a_person(tmp_path):
    """``--simulate model``: the session loop (QUEST, files) answered by the network,
    then read back and analysed by the analysis package like a person's session."""
    from analysis import TrialTable, classification_image
    from bubbles.faces import face_set
    from experiments.config import load_config
    from experiments.session import Session

    cfg = load_config(overrides={"trials.practice": 2, "trials.main": 40,
                                 "trials.break_every": 0, "window.fullscreen": False})
    result = Session(cfg, "net01", data_dir=tmp_path, simulate="model",
                     presenter="headless", stimuli=face_set(2, seed=0, size=64)).run()
    assert result.completed and result.n_trials == 42
    table = TrialTable.read(f"{result.stem}.csv")
    correct = table.responses("correct")
    assert 0.3 < correct.mean() <= 1.0
    ci = classification_image(table.spec, table.center_list(), correct, progress=False)
    assert ci.z.shape == (5, 64, 64) and np.isfinite(ci.z).all()
