import json

import numpy as np
import pytest

from analysis import DiagnosticImage
from ann_bridge.cli import main

FACES = ["--size", "64", "--identities", "1", "--device", "cpu", "--quiet"]


def test_probe_command(tmp_path, capsys):
    rc = main(["probe", "--layer", "features.relu2", "--units", "0:4", "--n-masks", "40",
               "--sigma", "4", "--n-bubbles", "5", "--seed", "3", "--out", str(tmp_path),
               *FACES])
    assert rc == 0
    ci = DiagnosticImage.load(tmp_path / "probe_features_relu2")
    assert ci.z.shape == (4, 64, 64) and ci.n_trials == 40
    assert ci.info["stimuli"] == ["id00_happy", "id00_fearful", "id00_neutral"]
    assert (tmp_path / "probe_features_relu2.png").is_file()
    assert "strongest units" in capsys.readouterr().out


def test_probe_command_multiscale_and_existing_outputs(tmp_path, capsys):
    """A multi-band probe (units, bands, H, W) draws its figure; outputs are not replaced
    without --force, and the refusal comes before the work."""
    args = ["probe", "--layer", "features.relu1", "--units", "0:2", "--n-masks", "12",
            "--sigma", "2", "--n-bubbles", "8", "--bands", "2", "--out", str(tmp_path),
            *FACES]
    assert main(args) == 0
    ci = DiagnosticImage.load(tmp_path / "probe_features_relu1")
    assert ci.z.shape == (2, 2, 64, 64)
    assert (tmp_path / "probe_features_relu1.png").is_file()
    assert main(args) == 1                              # data error: outputs exist
    assert "exists; use --force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    assert main(["probe", "--layer", "features.relu1", "--units", "a:b", "--n-masks", "4",
                 "--out", str(tmp_path / "x"), *FACES]) == 2      # usage error
    assert "argument --units: must be 'all'" in capsys.readouterr().err
    assert main(["probe", "--layer", "features.relu1", "--position", "3", "--n-masks", "4",
                 "--out", str(tmp_path / "x"), *FACES]) == 2
    assert "argument --position: must be 'row,col'" in capsys.readouterr().err


@pytest.mark.parametrize("method, extra", [
    ("occlusion", ["--occluder", "16", "--stride", "8"]),
    ("saliency", ["--target", "happy"]),
    ("ig", ["--steps", "16", "--layer", "features.conv3", "--units", "2"]),
])
def test_attribute_command(tmp_path, method, extra):
    rc = main(["attribute", "--method", method, "--stimulus", "id00_fearful",
               "--out", str(tmp_path), *extra, *FACES])
    assert rc == 0
    name = {"ig": "integrated_gradients"}.get(method, method)
    di = DiagnosticImage.load(tmp_path / f"{name}_id00_fearful")
    assert di.z.shape == (64, 64) and di.raw.shape == (64, 64)
    assert di.method == name
    meta = json.loads((tmp_path / f"{name}_id00_fearful.json").read_text())
    assert meta["info"]["stimulus"] == "id00_fearful"
    assert meta["info"]["targets"] == {"occlusion": ["predicted class: fearful"],
                                       "saliency": ["class happy"],
                                       "ig": ["features.conv3:ch2"]}[method]


def test_errors_name_the_option(tmp_path, capsys):
    """Data errors exit 1 (as elsewhere in the toolkit), usage errors 2 (argparse)."""
    rc = main(["probe", "--layer", "nope", "--n-masks", "10", "--out", str(tmp_path), *FACES])
    assert rc == 1
    assert "layer must be one of" in capsys.readouterr().err
    rc = main(["attribute", "--method", "saliency", "--stimulus", "id99_sad",
               "--out", str(tmp_path), *FACES])
    assert rc == 1
    assert "--stimulus must name stimuli" in capsys.readouterr().err
    assert main(["--list-layers", "--model", str(tmp_path / "none.pt")]) == 1
    assert "not found" in capsys.readouterr().err


def test_list_layers(capsys):
    assert main(["--list-layers"]) == 0
    assert "features.conv3" in capsys.readouterr().out.split()


def test_images_from_npy(tmp_path):
    imgs = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", imgs)
    rc = main(["attribute", "--method", "occlusion", "--images", str(tmp_path / "x.npy"),
               "--occluder", "8", "--out", str(tmp_path / "o"), "--device", "cpu", "--quiet"])
    assert rc == 0
    assert (tmp_path / "o" / "occlusion_image1.npz").is_file()


def test_help_and_bad_options_return_codes(capsys):
    assert main(["--help"]) == 0
    assert main(["probe"]) == 2                       # --layer, --n-masks, --out missing
    assert "required" in capsys.readouterr().err
    assert main(["probe", "--model", "nosuchmod:build", "--layer", "x", "--n-masks", "4",
                 "--out", "unused"]) == 1
    assert "cannot build the model" in capsys.readouterr().err


def test_dispatch_through_bubbles_command(tmp_path):
    from bubbles.cli import main as bubbles_main

    assert bubbles_main(["ann", "attribute", "--method", "saliency", "--stimulus",
                         "id00_happy", "--out", str(tmp_path), *FACES]) == 0
    assert (tmp_path / "saliency_id00_happy.npz").is_file()


def test_train_refuses_existing_outputs_and_the_embedded_weights(tmp_path, capsys,
                                                                  monkeypatch):
    """``train`` checks --out before training: existing outputs need --force, and so does
    the folder of the embedded weights (which it would overwrite)."""
    import ann_bridge.train
    from ann_bridge.model import DEFAULT_CHECKSUM, DEFAULT_WEIGHTS, ExpressionCNN, sha256
    from ann_bridge.train import TrainResult

    calls, allowed = [], []

    def fake_train(**kw):
        if not allowed:       # fail before anything is written (never touch data/)
            pytest.fail("train ran although --out had to be refused")
        calls.append(kw)
        metrics = {"heldout_seed0_accuracy": 1.0, "heldout_seed2_accuracy": 1.0,
                   "bubbled_accuracy": {}, "train_seconds": 0.0, "threads": 1,
                   "data_seconds": 0.0, "fit_seconds": 0.0}
        return TrainResult(ExpressionCNN(), metrics)

    monkeypatch.setattr(ann_bridge.train, "train", fake_train)
    before = sha256(DEFAULT_WEIGHTS), DEFAULT_CHECKSUM.read_text()
    for out in (DEFAULT_WEIGHTS.parent, DEFAULT_WEIGHTS.parent / "." / "."):
        assert main(["train", "--out", str(out), "--quiet"]) == 1
        assert "folder of the embedded weights" in capsys.readouterr().err
    assert calls == [] and (sha256(DEFAULT_WEIGHTS), DEFAULT_CHECKSUM.read_text()) == before

    (tmp_path / "metrics.json").write_text("{}")
    assert main(["train", "--out", str(tmp_path), "--quiet"]) == 1
    assert "metrics.json exists; use --force" in capsys.readouterr().err
    assert calls == [] and (tmp_path / "metrics.json").read_text() == "{}"
    allowed.append(True)
    assert main(["train", "--out", str(tmp_path), "--quiet", "--force"]) == 0
    assert len(calls) == 1 and (tmp_path / "expression_cnn.pt").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text())["threads"] == 1
    assert main(["train", "--out", str(tmp_path / "new"), "--quiet"]) == 0   # fresh folder


def test_figures_do_not_use_pyplot(tmp_path, monkeypatch):
    """Figures are drawn on a Figure with the Agg canvas (as analysis.figures does): no
    pyplot global state, no matplotlib.use() at call time."""
    import sys

    import matplotlib

    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)   # import would fail
    monkeypatch.setattr(matplotlib, "use", lambda *a, **k: pytest.fail("matplotlib.use"))
    assert main(["attribute", "--method", "occlusion", "--stimulus", "id00_happy",
                 "--occluder", "16", "--out", str(tmp_path), *FACES]) == 0
    assert main(["probe", "--layer", "features.relu2", "--units", "0:3", "--n-masks", "8",
                 "--sigma", "4", "--n-bubbles", "5", "--out", str(tmp_path), *FACES]) == 0
    assert (tmp_path / "occlusion_id00_happy.png").stat().st_size > 1000
    assert (tmp_path / "probe_features_relu2.png").stat().st_size > 1000


def test_attribute_builds_faces_once_and_names_targets_without_extra_passes(
        tmp_path, monkeypatch):
    """The default faces (one per expression) come from one face_set; the targets are
    resolved by one forward pass that the method and the target names share."""
    import bubbles.faces
    import ann_bridge.cli as cli
    from ann_bridge.model import load_default_model

    built = []
    real_face_set = bubbles.faces.face_set
    monkeypatch.setattr(bubbles.faces, "face_set",
                        lambda *a, **k: built.append(a) or real_face_set(*a, **k))
    passes = []
    model = load_default_model()
    model.register_forward_pre_hook(lambda m, x: passes.append(x[0].shape[0]))
    monkeypatch.setattr(cli, "load_any_model", lambda spec, device="cpu": model)
    assert main(["attribute", "--method", "saliency", "--out", str(tmp_path), *FACES]) == 0
    assert len(built) == 1
    # one pass resolves the predicted classes, one forward (+ backward) is the saliency
    assert passes == [3, 3]
    meta = json.loads((tmp_path / "saliency_id00_neutral.json").read_text())
    (name,) = meta["info"]["targets"]
    assert name.split(": ")[0] == "predicted class" and name.split(": ")[1] in model.classes

    passes.clear()
    assert main(["attribute", "--method", "saliency", "--layer", "features.conv3",
                 "--units", "1:3", "--stimulus", "id00_happy", "--out",
                 str(tmp_path / "l"), *FACES]) == 0
    assert len(passes) == 3          # resolving the 2 units + one gradient pass per unit
    meta = json.loads((tmp_path / "l" / "saliency_id00_happy.json").read_text())
    assert meta["info"]["targets"] == ["features.conv3:ch1", "features.conv3:ch2"]
