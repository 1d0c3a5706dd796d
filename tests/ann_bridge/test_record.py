import pytest
import torch
from numpy.testing import assert_allclose
from torch import nn

import numpy as np

from ann_bridge.record import (UnitRecorder, Units, as_units, image_batch, layer_names,
                               record, resolve_device)


def _reference(model, x):
    """conv2 output computed by hand, without hooks."""
    t = torch.from_numpy(x)[:, None]
    with torch.no_grad():
        h = model.pool(torch.relu(model.conv1(t)))
        return model.conv2(h)


def test_all_channels_spatially_averaged(tiny_cnn, images):
    got = record(tiny_cnn, "conv2", images, device="cpu")
    ref = _reference(tiny_cnn, images).mean(dim=(2, 3)).numpy()
    assert got.shape == (3, 6)
    assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("units, idx", [(2, [2]), (slice(1, 4), [1, 2, 3]), ([5, 0], [5, 0])])
def test_channel_selection(tiny_cnn, images, units, idx):
    got = record(tiny_cnn, "conv2", images, units=units, device="cpu")
    ref = _reference(tiny_cnn, images).mean(dim=(2, 3)).numpy()[:, idx]
    assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_position_and_callable(tiny_cnn, images):
    ref = _reference(tiny_cnn, images)
    got = record(tiny_cnn, "conv2", images, units=Units(channels=None, position=(3, 5)),
                 device="cpu")
    assert_allclose(got, ref[:, :, 3, 5].numpy(), rtol=1e-5, atol=1e-6)
    got = record(tiny_cnn, "conv2", images, units=lambda out: out[:, 1].amax(dim=(1, 2)),
                 device="cpu")
    assert_allclose(got[:, 0], ref[:, 1].amax(dim=(1, 2)).numpy(), rtol=1e-5)


def test_hook_clones_before_inplace_relu(tiny_cnn, images):
    # relu1 is in place: without a clone conv1's recorded output would be rectified
    got = record(tiny_cnn, "conv1", images, units=Units(position=(0, 0)), device="cpu")
    with torch.no_grad():
        ref = tiny_cnn.conv1(torch.from_numpy(images)[:, None])[:, :, 0, 0].numpy()
    assert (ref < 0).any()
    assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # the case the clone protects: a selection that is a view of conv1's output, while
    # the pass goes on (to conv2) through the in-place relu1
    rec = UnitRecorder(tiny_cnn, {"conv1": lambda out: out[:, :, 0, 0], "conv2": None},
                       device="cpu")
    got = rec(images)["conv1"].numpy()
    assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_forward_stops_after_deepest_layer(tiny_cnn, images):
    calls = []
    h = tiny_cnn.fc.register_forward_hook(lambda *a: calls.append("fc"))
    h2 = tiny_cnn.conv2.register_forward_hook(lambda *a: calls.append("conv2"))
    try:
        rec = UnitRecorder(tiny_cnn, {"conv1": None, "conv2": [0, 1]}, device="cpu")
        out = rec(images)
    finally:
        h.remove()
        h2.remove()
    assert calls == ["conv2"]
    assert out["conv1"].shape == (3, 4) and out["conv2"].shape == (3, 2)
    assert tiny_cnn.conv1._forward_hooks == {} or len(tiny_cnn.conv1._forward_hooks) == 0


def test_batches_and_inference_mode(tiny_cnn, images):
    a = record(tiny_cnn, "relu2", images, device="cpu", batch_size=1)
    b = record(tiny_cnn, "relu2", images, device="cpu", batch_size=3)
    assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    rec = UnitRecorder(tiny_cnn, "relu2", device="cpu")
    assert rec(images)["relu2"].is_inference()


def test_training_flag_restored(tiny_cnn, images):
    tiny_cnn.train()
    record(tiny_cnn, "conv2", images, device="cpu")
    assert tiny_cnn.training


def test_bad_layer_lists_valid_names(tiny_cnn, images):
    with pytest.raises(ValueError, match=r"layer must be one of \['conv1', 'relu1'"):
        record(tiny_cnn, "conv9", images)


def test_bad_unit_index_names_range(tiny_cnn, images):
    with pytest.raises(ValueError, match=r"channel indices in 0\.\.5 of 'conv2'; \[6\]"):
        record(tiny_cnn, "conv2", images, units=[6], device="cpu")
    with pytest.raises(ValueError, match="position must lie inside"):
        record(tiny_cnn, "conv2", images, units=Units(position=(20, 0)), device="cpu")
    with pytest.raises(TypeError, match="units must be"):
        as_units("all")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        record(tiny_cnn, "conv2", images, batch_size=0)
    with pytest.raises(TypeError, match="device must be None, a string"):
        record(tiny_cnn, "conv2", images, device=3.5)


def test_layer_names_and_unit_names(tiny_cnn, images):
    assert layer_names(tiny_cnn)[:2] == ["conv1", "relu1"]
    rec = UnitRecorder(tiny_cnn, "conv2", Units(slice(0, 2), (1, 1)), device="cpu")
    assert rec.unit_names(images) == {"conv2": ["ch0@(1, 1)", "ch1@(1, 1)"]}


def test_fully_connected_layer(images):
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 5), nn.Tanh())
    got = record(model, "1", images, units=[4], device="cpu")
    with torch.no_grad():
        ref = model[1](torch.from_numpy(images).flatten(1))[:, 4:5].numpy()
    assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_resolve_device_names_the_problem(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"device must be one of \['cpu', 'cuda', 'mps'\].*'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)   # a CPU-only machine
    with pytest.raises(ValueError, match="device 'cuda' is not available.*use 'cpu'"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="device 'cuda:1' is not available"):
        resolve_device(torch.device("cuda:1"))


def test_image_batch_layouts():
    """(H, W) and (N, H, W) are grey; a 4-D tensor is (N, C, H, W); a 4-D array is read
    by the one axis that can hold channels, and refused when that is ambiguous."""
    g = np.random.default_rng(0).random((2, 6, 5)).astype(np.float32)
    assert tuple(image_batch(g[0]).shape) == (1, 6, 5)
    assert torch.equal(image_batch(torch.from_numpy(g)[:, None]), torch.from_numpy(g))
    rgb = np.random.default_rng(1).random((2, 6, 5, 3)).astype(np.float32)
    assert torch.equal(image_batch(rgb), torch.from_numpy(rgb))
    assert torch.equal(image_batch(rgb.transpose(0, 3, 1, 2)), torch.from_numpy(rgb))
    assert torch.equal(image_batch(torch.from_numpy(rgb).permute(0, 3, 1, 2)),
                       torch.from_numpy(rgb))
    with pytest.raises(ValueError, match=r"images of shape \(2, 3, 5, 3\) is ambiguous"):
        image_batch(np.zeros((2, 3, 5, 3)))
    with pytest.raises(ValueError, match=r"read as \(N, C, H, W\) with C in \[1, 3, 4\]"):
        image_batch(torch.zeros(2, 6, 5, 3))
    with pytest.raises(ValueError, match=r"must have shape \(H, W\), \(N, H, W\)"):
        image_batch(np.zeros(5))
    with pytest.raises(ValueError, match="at least one image"):
        image_batch(np.zeros((0, 4, 4)))
    with pytest.raises(ValueError, match=r"--images x.npy must have values in \[0, 1\] "
                                         r"\(8-bit images: divide by 255\), got \[0, 255\]"):
        image_batch(np.array([[0, 255]], np.uint8), name="--images x.npy")
    with pytest.raises(TypeError, match="numeric array"):
        image_batch(np.array([["a"]]))
    # a recorder reads the tensor layout too: the same units from (N, 1, H, W)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    rec = UnitRecorder(model, "0", device="cpu")
    assert torch.allclose(rec(g)["0"], rec(torch.from_numpy(g)[:, None])["0"])
