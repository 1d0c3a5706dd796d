"""``bubbles ann`` (commands.ann): outputs, exit statuses (0 done, 1 data, 2 usage)."""

import json
import warnings

import numpy as np
import pytest
import torch

import commands.ann as ann_command
from analysis import DiagnosticImage
from ann_bridge.model import ExpressionCNN, default_checksum, default_weights, sha256
from ann_bridge.train import TrainResult
from commands.ann import main

FACES = ["--size", "64", "--identities", "1", "--device", "cpu", "--quiet"]


def test_probe_command(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # a successful probe warns about nothing
        rc = main(["probe", "--layer", "features.relu2", "--units", "0:4", "--n-masks",
                   "40", "--sigma", "4", "--n-bubbles", "5", "--seed", "3", "--out",
                   str(tmp_path), *FACES])
    assert rc == 0
    ci = DiagnosticImage.load(tmp_path / "probe_features_relu2")
    assert ci.z.shape == (4, 64, 64) and ci.n_trials == 40
    assert ci.dims == ("target", "y", "x") and ci.observer == "unit"
    assert ci.targets == [f"features.relu2:ch{i}" for i in range(4)]
    assert ci.info["stimuli"] == ["id00_happy", "id00_fearful", "id00_neutral"]
    assert (tmp_path / "probe_features_relu2.png").is_file()
    captured = capsys.readouterr()
    assert "strongest units" in captured.out and captured.err == ""


def test_probe_of_the_default_faces_has_no_numpy_warnings(tmp_path, capsys):
    """Fewer masks than faces (the default 60): one warning line, no 'Mean of empty
    slice' from numpy."""
    rc = main(["probe", "--layer", "features.relu1", "--units", "0", "--n-masks", "30",
               "--sigma", "8", "--size", "64", "--device", "cpu", "--quiet",
               "--out", str(tmp_path)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "bubbles ann: warning: n_masks=30 is below the 60 images" in err
    assert "Mean of empty slice" not in err and "RuntimeWarning" not in err


def test_probe_command_multiscale_and_existing_outputs(tmp_path, capsys):
    """A multi-band probe (units, bands, H, W) draws its figure; outputs are not replaced
    without --force, and the refusal comes before the work."""
    args = ["probe", "--layer", "features.relu1", "--units", "0:2", "--n-masks", "12",
            "--sigma", "2", "--n-bubbles", "8", "--bands", "2", "--out", str(tmp_path),
            *FACES]
    assert main(args) == 0
    ci = DiagnosticImage.load(tmp_path / "probe_features_relu1")
    assert ci.z.shape == (2, 2, 64, 64) and ci.dims == ("target", "band", "y", "x")
    assert (tmp_path / "probe_features_relu1.png").is_file()
    capsys.readouterr()
    assert main(args) == 1                              # data error: outputs exist
    assert "exists; use --force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0


@pytest.mark.parametrize("method, extra, target", [
    ("occlusion", ["--occluder", "16", "--stride", "8"], ["predicted class: fearful"]),
    ("saliency", ["--target", "happy"], ["class happy"]),
    ("ig", ["--steps", "16", "--layer", "features.conv3", "--units", "2"],
     ["features.conv3:ch2"]),
])
def test_attribute_command(tmp_path, method, extra, target):
    rc = main(["attribute", "--method", method, "--stimulus", "id00_fearful",
               "--out", str(tmp_path), *extra, *FACES])
    assert rc == 0
    name = {"ig": "integrated_gradients"}.get(method, method)
    di = DiagnosticImage.load(tmp_path / f"{name}_id00_fearful")
    assert di.z.shape == (1, 64, 64) and di.raw.shape == (1, 64, 64)
    assert di.dims == ("target", "y", "x") and di.observer == "network"
    assert di.method == name and di.targets == target
    assert di.info["stimulus"] == "id00_fearful"
    assert np.isfinite(di.z).all() and abs(float(di.z.mean())) < 1e-4
    assert (tmp_path / f"{name}_id00_fearful.png").is_file()


def test_attribute_names_targets_from_one_resolving_pass(tmp_path, monkeypatch):
    """The default faces (one per expression); the targets are resolved by one forward
    pass that the method and the target names share."""
    passes = []
    model = ExpressionCNN()
    model.load_state_dict(ann_command.load_default_model().state_dict())
    model.eval().register_forward_pre_hook(lambda m, x: passes.append(x[0].shape[0]))
    monkeypatch.setattr(ann_command, "load_any_model", lambda text, device="cpu": model)
    assert main(["attribute", "--method", "saliency", "--out", str(tmp_path), *FACES]) == 0
    # one pass resolves the predicted classes, one forward (+ backward) is the saliency
    assert passes == [3, 3]
    (name,) = DiagnosticImage.load(tmp_path / "saliency_id00_neutral").targets
    assert name.split(": ")[0] == "predicted class" and name.split(": ")[1] in model.classes
    passes.clear()
    assert main(["attribute", "--method", "saliency", "--layer", "features.conv3",
                 "--units", "1:3", "--stimulus", "id00_happy", "--out",
                 str(tmp_path / "l"), *FACES]) == 0
    assert len(passes) == 3          # resolving the 2 units + one gradient pass per unit
    assert DiagnosticImage.load(tmp_path / "l" / "saliency_id00_happy").targets == [
        "features.conv3:ch1", "features.conv3:ch2"]


def test_images_from_npy(tmp_path, capsys):
    imgs = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", imgs)
    rc = main(["attribute", "--method", "occlusion", "--images", str(tmp_path / "x.npy"),
               "--occluder", "8", "--out", str(tmp_path / "o"), "--device", "cpu", "--quiet"])
    assert rc == 0
    assert (tmp_path / "o" / "occlusion_image1.npz").is_file()
    # 0-255 values, colour, NaN, a pickle, text, an .npz: exit 1 naming --images
    bad = {"u8.npy": (imgs * 255).astype(np.uint8), "rgb.npy": np.zeros((2, 32, 32, 3)),
           "one_rgb.npy": np.zeros((32, 32, 3)), "nan.npy": imgs * np.nan}
    for name, arr in bad.items():
        np.save(tmp_path / name, arr)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "text.npy").write_text("not numpy")
    np.savez(tmp_path / "arch.npz", x=imgs)
    expected = {"u8.npy": "values in [0, 1] (8-bit images: divide by 255), got [0, 254]",
                "rgb.npy": "holds colour images", "one_rgb.npy": "holds colour images",
                "nan.npy": "must hold finite values", "obj.npy": "not a readable .npy",
                "text.npy": "not a readable .npy", "arch.npz": "is an .npz archive"}
    for name, message in expected.items():
        for command in (["attribute", "--method", "saliency"],
                        ["probe", "--layer", "features.relu1", "--n-masks", "4"]):
            rc = main([*command, "--images", str(tmp_path / name), "--out",
                       str(tmp_path / "bad"), "--device", "cpu", "--quiet"])
            err = capsys.readouterr().err
            assert rc == 1 and f"--images {tmp_path / name}" in err and message in err, err


def test_usage_errors_exit_2(tmp_path, capsys):
    """Malformed values and options that do not go together are usage errors (exit 2),
    named by the option, before any work."""
    out = ["--out", str(tmp_path / "u")]
    cases = [
        (["probe"], "required"),
        (["probe", "--layer", "x", "--n-masks", "1", *out], "--n-masks: must be an integer >= 2"),
        (["probe", "--layer", "x", "--n-masks", "4", "--units", "a:b", *out],
         "argument --units: must be 'all'"),
        (["probe", "--layer", "x", "--n-masks", "4", "--position", "3", *out],
         "argument --position: must be 'row,col'"),
        (["probe", "--layer", "x", "--n-masks", "4", "--sigma", "0", *out],
         "--sigma: must be a finite number > 0"),
        (["probe", "--layer", "x", "--n-masks", "4", "--spec", "s.json", "--sigma", "3", *out],
         "--spec gives the whole spec; --sigma cannot be combined"),
        (["probe", "--layer", "x", "--n-masks", "4", "--images", "x.npy", "--size", "64",
          *out], "--size choose the embedded faces"),
        (["attribute", "--method", "ig", "--baseline", "nan", *out],
         "argument --baseline: must be a finite grey level in [0, 1], got 'nan'"),
        (["attribute", "--method", "occlusion", "--fill", "inf", *out],
         "argument --fill: must be a finite grey level"),
        (["attribute", "--method", "saliency", "--device", "gpu0", *out],
         "argument --device: must be one of ['cpu', 'cuda', 'mps']"),
        (["attribute", "--method", "saliency", "--occluder", "5", *out],
         "--occluder do(es) not apply to --method saliency"),
        (["attribute", "--method", "occlusion", "--steps", "5", *out],
         "--steps do(es) not apply to --method occlusion"),
        (["attribute", "--method", "occlusion", "--occluder", "5", "--stride", "6", *out],
         "--stride 6 must be <= --occluder 5"),
        (["attribute", "--method", "saliency", "--layer", "features.conv1", "--target",
          "happy", *out], "--target picks output classes"),
        (["attribute", "--method", "saliency", "--units", "3", *out], "--units needs --layer"),
        (["train", "--epochs", "0"], "--epochs: must be an integer >= 1"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not (tmp_path / "u").exists()
    assert main(["--help"]) == 0


def test_data_errors_exit_1(tmp_path, capsys, monkeypatch):
    """Data and setup errors exit 1 with a message naming the option and the file."""
    out = ["--out", str(tmp_path / "d")]
    (tmp_path / "text.pt").write_text("hello")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "cut.pt").write_bytes(default_weights().read_bytes()[:5000])
    (tmp_path / "file").write_text("x")
    (tmp_path / "spec.json").write_text("{broken")
    cases = [
        (["probe", "--layer", "nope", "--n-masks", "10", *out, *FACES], "layer must be one of"),
        (["attribute", "--method", "saliency", "--stimulus", "id99_sad", *out, *FACES],
         "--stimulus must name stimuli"),
        (["--list-layers", "--model", str(tmp_path / "none.pt")], "not found"),
        (["probe", "--model", "nosuchmod:build", "--layer", "x", "--n-masks", "4", *out,
          *FACES], "cannot build the model"),
        (["probe", "--layer", "x", "--n-masks", "4", "--spec", str(tmp_path / "spec.json"),
          *out, *FACES], f"--spec: spec file '{tmp_path / 'spec.json'}': BubbleSpec JSON is not valid JSON"),
        (["attribute", "--method", "saliency", "--out", str(tmp_path / "file"), *FACES],
         "cannot be a folder"),
        (["attribute", "--method", "saliency", "--out", str(tmp_path / "file" / "sub"),
          *FACES], "cannot be a folder"),
    ]
    for pt in ("text.pt", "empty.pt", "cut.pt"):
        cases.append((["probe", "--model", str(tmp_path / pt), "--layer", "x", "--n-masks",
                       "4", *out, *FACES], f"--model: {tmp_path / pt} is not"))
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert message in err and "weights_only=False" not in err, (argv, err)
        assert "Traceback" not in err
    # a device this machine does not have (as on a CPU-only torch build)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["attribute", "--method", "saliency", *out, "--size", "64",
                 "--identities", "1", "--device", "cuda", "--quiet"]) == 1
    assert "--device cuda: device 'cuda' is not available" in capsys.readouterr().err


def test_list_layers(capsys):
    assert main(["--list-layers"]) == 0
    assert "features.conv3" in capsys.readouterr().out.split()


def test_train_refuses_existing_outputs_and_the_embedded_weights(tmp_path, capsys,
                                                                  monkeypatch):
    """``train`` checks --out before training: existing outputs need --force, and so does
    the folder of the embedded weights (which it would overwrite)."""
    calls, allowed = [], []

    def fake_train(**kw):
        if not allowed:       # fail before anything is written (never touch data/)
            pytest.fail("train ran although --out had to be refused")
        calls.append(kw)
        metrics = {"heldout_seed0_accuracy": 1.0, "heldout_seed2_accuracy": 1.0,
                   "bubbled_accuracy": {}, "train_seconds": 0.0, "threads": 1,
                   "data_seconds": 0.0, "fit_seconds": 0.0}
        return TrainResult(ExpressionCNN(), metrics)

    monkeypatch.setattr(ann_command, "train", fake_train)
    weights = default_weights()
    before = sha256(weights), default_checksum().read_text()
    for out in (weights.parent, weights.parent / "." / "."):
        assert main(["train", "--out", str(out), "--quiet"]) == 1
        assert "folder of the embedded weights" in capsys.readouterr().err
    assert calls == [] and (sha256(weights), default_checksum().read_text()) == before

    (tmp_path / "metrics.json").write_text("{}")
    assert main(["train", "--out", str(tmp_path), "--quiet"]) == 1
    assert "metrics.json exists; use --force" in capsys.readouterr().err
    assert calls == [] and (tmp_path / "metrics.json").read_text() == "{}"
    (tmp_path / "afile").write_text("x")
    assert main(["train", "--out", str(tmp_path / "afile"), "--quiet"]) == 1
    assert "cannot be a folder" in capsys.readouterr().err
    allowed.append(True)
    assert main(["train", "--out", str(tmp_path), "--quiet", "--force"]) == 0
    assert len(calls) == 1 and (tmp_path / "expression_cnn.pt").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text())["threads"] == 1
    assert main(["train", "--out", str(tmp_path / "new"), "--quiet"]) == 0   # fresh folder


def test_figures_do_not_use_pyplot(tmp_path, monkeypatch):
    """Figures are drawn on a Figure with the Agg canvas (analysis.figures): no pyplot
    global state, no matplotlib.use() at call time."""
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


def test_dispatch_through_bubbles_command(tmp_path):
    """`bubbles ann ...` reaches commands.ann (the dispatcher's 'ann' entry)."""
    from commands.main import main as bubbles_main

    assert bubbles_main(["ann", "attribute", "--method", "saliency", "--stimulus",
                         "id00_happy", "--out", str(tmp_path), *FACES]) == 0
    assert (tmp_path / "saliency_id00_happy.npz").is_file()
