import numpy as np
import pytest

from ann_bridge.observer import NetworkObserver

CHOICES = {"happy": "f", "fearful": "g", "neutral": "h"}


@pytest.fixture(scope="module")
def faces():
    from bubbles.faces import face_set
    return face_set(2, seed=0, size=128)


def _model_responder_class():
    """experiments.responders.ModelResponder, or skip while experiments lacks it."""
    responders = pytest.importorskip("experiments.responders")
    cls = getattr(responders, "ModelResponder", None)
    if cls is None:
        pytest.skip("experiments.responders.ModelResponder does not exist yet")
    return cls


def test_decide_and_accuracy(faces):
    obs = NetworkObserver(device="cpu")
    assert obs.labels == ("happy", "fearful", "neutral")
    assert obs.decide(faces.images[0]) == "happy"
    assert obs.decide_batch(faces.images) == list(faces.table["expression"])
    assert obs.accuracy(faces.images, list(faces.table["expression"])) == 1.0


def test_observer_does_not_depend_on_experiments():
    """Layering: ann_bridge imports only analysis and bubbles (docs/interfaces.md); the
    Responder interface (keys, rt) is experiments' ModelResponder's job."""
    import ast
    from pathlib import Path

    import ann_bridge

    for path in Path(ann_bridge.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] == "experiments"], path.name
    assert not hasattr(NetworkObserver, "respond")


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


def test_labels_restrict_answers(faces):
    obs = NetworkObserver(device="cpu")
    assert obs.decide(faces.images[0], ["fearful", "neutral"]) in ("fearful", "neutral")
    assert set(obs.decide_batch(faces.images, ["fearful"])) == {"fearful"}
    with pytest.raises(ValueError, match="labels must be among"):
        obs.decide(faces.images[0], ["sad"])


def test_from_stimuli_and_errors(faces):
    obs = NetworkObserver.from_stimuli(faces, ["happy", "neutral"], seed=2, device="cpu",
                                       decision_noise=0.5)
    assert obs.labels == ("happy", "neutral") and obs.decision_noise == 0.5
    assert obs.seed == 2 and obs.decide(faces.images[1]) in ("happy", "neutral")
    with pytest.raises(ValueError, match="labels must be among"):
        NetworkObserver.from_stimuli(faces, ["sad"])
    with pytest.raises(ValueError, match="decision_noise must be"):
        NetworkObserver(decision_noise=-1)
    with pytest.raises(ValueError, match="stimulus must be a grey frame"):
        NetworkObserver(device="cpu").decide(np.zeros((2, 3, 4, 5)))


def test_model_responder_hook(faces):
    """experiments' ``--simulate model`` path wraps our observer's ``decide``."""
    cls = _model_responder_class()
    from experiments.responders import model_responder

    r = model_responder(faces, ["happy", "fearful", "neutral"], seed=0)
    assert isinstance(r, cls) and isinstance(r.observer, NetworkObserver)
    got = r.respond(faces.images[0], CHOICES)
    assert got.label == "happy" and got.key == "f"


def test_simulated_session_with_the_network_is_analysed_like_a_person(tmp_path):
    """``--simulate model``: the session loop (QUEST, files) answered by the network,
    then read back and analysed by the analysis package like a person's session."""
    _model_responder_class()
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
