import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import bubbles_data
from ann_bridge.model import (ExpressionCNN, default_checksum, default_weights,
                              load_default_model, load_model, save_model, sha256)


def test_embedded_weights_small_and_checksummed():
    """The weights are package data of bubbles_data (found by importlib.resources, so a
    regular install carries them), small, and match their checksum."""
    weights = default_weights()
    assert weights.parent == Path(bubbles_data.__file__).resolve().parent
    assert weights.stat().st_size <= 5 * 2 ** 20
    assert default_checksum().read_text().split()[0] == sha256(weights)


@pytest.mark.parametrize("face_seed", [0, 2])
def test_default_model_heldout_accuracy(face_seed):
    """>= 95 % on identities never seen in training (training faces: seed 1): the
    embedded face set (seed 0) and a second set (seed 2), 20 identities x 3, 256 px."""
    from bubbles.faces import face_set

    model = load_default_model()
    assert model.classes == ("happy", "fearful", "neutral")
    assert model.info["face_seed"] not in (0, 2)
    s = face_set(20, seed=face_seed, size=256)
    labels = np.array([model.classes.index(e) for e in s.table["expression"]])
    with torch.inference_mode():
        pred = model(torch.from_numpy(s.images)[:, None]).argmax(1).numpy()
    assert (pred == labels).mean() >= 0.95
    assert model.info[f"heldout_seed{face_seed}_accuracy"] >= 0.95


def test_checksum_mismatch_refused(tmp_path):
    path = tmp_path / "m.pt"
    shutil.copy(default_weights(), path)
    with pytest.raises(ValueError, match="checksum"):
        load_model(path, checksum="0" * 64)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(tmp_path / "missing.pt")


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    m = ExpressionCNN(("a", "b"), input_size=16, width=4).eval()
    path = save_model(m, tmp_path / "x.pt", info={"note": "test"})
    assert (tmp_path / "x.sha256").is_file()
    m2 = load_model(path, checksum=tmp_path / "x.sha256")
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    assert m2.classes == ("a", "b") and m2.info == {"note": "test"}
    torch.save({"x": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not an ann_bridge.expression_cnn checkpoint"):
        load_model(tmp_path / "bad.pt")


def test_unreadable_checkpoints_are_named_never_unpickled(tmp_path):
    """A text, empty, truncated or pickled-object .pt: one message naming the file, and
    never torch's advice to load it with weights_only=False."""
    data = default_weights().read_bytes()
    files = {"text.pt": b"hello, I am not a checkpoint\n", "empty.pt": b"",
             "truncated.pt": data[:len(data) // 3]}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    torch.save({"format": "ann_bridge.expression_cnn", "obj": Path("x")}, tmp_path / "obj.pt")
    for name in [*files, "obj.pt"]:
        with pytest.raises(ValueError, match="is not an ann_bridge.expression_cnn") as info:
            load_model(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
        assert "weights_only=False" not in str(info.value)
    with pytest.raises(ValueError, match="device 'cuda:7' is not available"):
        load_model(default_weights(), device="cuda:7")


def test_augment_is_seeded():
    from ann_bridge.train import augment

    imgs = torch.rand(8, 16, 16)
    bands = torch.rand(8, 6, 16, 16) * 0.1
    levels = imgs.mean(dim=(1, 2))
    a = augment(imgs, bands, levels, torch.Generator().manual_seed(4))
    b = augment(imgs, bands, levels, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and a.shape == (8, 16, 16)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    # hidden parts take each image's grey: an all-hidden single-scale stimulus is flat
    full = augment(imgs, bands, levels, torch.Generator().manual_seed(4), p_full=1.0)
    assert torch.equal(full, imgs)


def test_probe_of_embedded_model_finds_facial_features():
    """The happy and fearful logits' diagnostic images peak on a facial feature."""
    from scipy.ndimage import binary_dilation

    from ann_bridge import diagnostic_images
    from bubbles import BubbleSpec
    from bubbles.faces import face_set

    s = face_set(1, seed=0, size=128)
    spec = BubbleSpec(shape=(128, 128), sigma=5.0, n_bubbles=10)
    ci = diagnostic_images(spec, load_default_model(), "classifier", s.images, 600, seed=0,
                           units=[0, 1], device="cpu", progress=False)
    features = np.zeros((128, 128), bool)
    for roi in s.rois.values():
        features |= roi.any(axis=0)
    features = binary_dilation(features, iterations=5)
    for z in ci.z:
        assert z.max() > 4
        assert features[np.unravel_index(np.argmax(z), z.shape)]


def test_save_model_info_plain_types(tmp_path):
    """Checkpoint info goes through analysis.diagnostic.to_jsonable: numpy numbers and
    arrays, tuples and paths become JSON types (not their str), readable with
    weights_only=True."""
    from pathlib import Path

    info = {"acc": np.float32(0.5), "n": np.int64(3), "arr": np.arange(3),
            "pair": (1, 2), "path": Path("x") / "y", "ok": np.bool_(True)}
    model = load_model(save_model(ExpressionCNN(), tmp_path / "m.pt", info=info))
    assert model.info == {"acc": 0.5, "n": 3, "arr": [0, 1, 2], "pair": [1, 2],
                          "path": str(Path("x") / "y"), "ok": True}


def test_resaving_the_embedded_model_is_byte_identical(tmp_path):
    """save_model writes the shipped checkpoint byte for byte from its weights and info
    (what `bubbles ann train` reproduces): the info conversion does not change the file."""
    model = load_default_model()
    path = save_model(model, tmp_path / "expression_cnn.pt", info=model.info)
    assert sha256(path) == sha256(default_weights())
    assert path.with_suffix(".sha256").read_text() == default_checksum().read_text()
