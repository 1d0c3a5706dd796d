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
    assert main(args) == 2
    assert "exists; use --force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    assert main(["probe", "--layer", "features.relu1", "--units", "a:b", "--n-masks", "4",
                 "--out", str(tmp_path / "x"), *FACES]) == 2
    assert "--units must be" in capsys.readouterr().err
    assert main(["probe", "--layer", "features.relu1", "--position", "3", "--n-masks", "4",
                 "--out", str(tmp_path / "x"), *FACES]) == 2
    assert "--position must be 'row,col'" in capsys.readouterr().err


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
    rc = main(["probe", "--layer", "nope", "--n-masks", "10", "--out", str(tmp_path), *FACES])
    assert rc == 2
    assert "layer must be one of" in capsys.readouterr().err
    rc = main(["attribute", "--method", "saliency", "--stimulus", "id99_sad",
               "--out", str(tmp_path), *FACES])
    assert rc == 2
    assert "--stimulus must name stimuli" in capsys.readouterr().err


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
                 "--out", "unused"]) == 2
    assert "cannot build the model" in capsys.readouterr().err


def test_dispatch_through_bubbles_command(tmp_path):
    from bubbles.cli import main as bubbles_main

    assert bubbles_main(["ann", "attribute", "--method", "saliency", "--stimulus",
                         "id00_happy", "--out", str(tmp_path), *FACES]) == 0
    assert (tmp_path / "saliency_id00_happy.npz").is_file()
