import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, Occlusion, Saliency
from numpy.testing import assert_allclose
from torch import nn

from ann_bridge.attribution import (OCCLUDER_SIZES, Readout, integrated_gradients,
                                    occlusion, perturbation, saliency)
from ann_bridge.record import Units


class SaturatedRelu(nn.Module):
    """f(x) = 1 - ReLU(1 - x) of the single pixel (Sundararajan et al. 2017)."""

    def forward(self, x):
        return (1 - torch.relu(1 - x.flatten(1).sum(1, keepdim=True)))


def ident(x):
    return x


def test_sensitivity_failure_gradient_zero_ig_one():
    x = np.full((1, 1, 1), 2.0, np.float32)
    model = SaturatedRelu()
    with torch.no_grad():
        assert float(model(torch.from_numpy(x))) == 1.0
    grad = saliency(model, x, target=0, preprocess=ident, device="cpu")
    assert grad.shape == (1, 1, 1, 1)
    assert grad.item() == 0.0
    res = integrated_gradients(model, x, target=0, baseline=0.0, n_steps=200,
                               method="riemann_trapezoid", preprocess=ident, device="cpu")
    assert_allclose(res.attribution.item(), 1.0, atol=1e-2)
    assert_allclose(res.difference.item(), 1.0)
    attr, gap = res                           # unpacks as (attribution, gap)
    assert abs(gap.item()) < 1e-2


def test_ig_completeness_on_random_cnn(tiny_cnn, images):
    res = integrated_gradients(tiny_cnn, images, target=[0, 2], baseline=0.0, n_steps=256,
                               device="cpu")
    assert res.attribution.shape == (3, 2, 16, 16)
    total = res.attribution.sum(axis=(2, 3))
    assert_allclose(total, res.difference, rtol=0.01, atol=1e-7)
    assert (res.relative_gap < 0.01).all()


def test_ig_matches_captum_and_warns(tiny_cnn, images):
    res = integrated_gradients(tiny_cnn, images, target=1, n_steps=20, device="cpu")
    x = torch.from_numpy(images)[:, None]
    ref = IntegratedGradients(tiny_cnn).attribute(x, baselines=torch.full_like(x, 0.5),
                                                  target=1, n_steps=20)
    assert_allclose(res.attribution[:, 0], ref[:, 0].detach().numpy(), rtol=1e-4, atol=1e-7)
    with pytest.warns(UserWarning, match="completeness gap"):
        integrated_gradients(tiny_cnn, images, target=1, n_steps=2, method="riemann_left",
                             device="cpu")
    with pytest.raises(ValueError, match="n_steps must be an integer >= 2"):
        integrated_gradients(tiny_cnn, images, n_steps=1)


def test_ig_memory_bounded_by_internal_batch_size(tiny_cnn, images):
    """Many steps never run more than internal_batch_size path points at once, and the
    split does not change the result."""
    sizes = []
    h = tiny_cnn.conv1.register_forward_hook(lambda m, i, o: sizes.append(o.shape[0]))
    try:
        res = integrated_gradients(tiny_cnn, images, target=0, n_steps=300, device="cpu")
        assert max(sizes) <= 64                       # the default internal batch size
        sizes.clear()
        one = integrated_gradients(tiny_cnn, images, target=0, n_steps=300, device="cpu",
                                   internal_batch_size=None)
        assert max(sizes) == 3 * 300
    finally:
        h.remove()
    assert_allclose(res.attribution, one.attribution, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="internal_batch_size must be None or an integer"):
        integrated_gradients(tiny_cnn, images, internal_batch_size=0)


def test_saliency_matches_captum_for_class_and_unit(tiny_cnn, images):
    x = torch.from_numpy(images)[:, None].requires_grad_(True)
    got = saliency(tiny_cnn, images, target="neutral", device="cpu")
    ref = Saliency(tiny_cnn).attribute(x, target=2, abs=True)[:, 0].numpy()
    assert_allclose(got[:, 0], ref, rtol=1e-5, atol=1e-8)
    got = saliency(tiny_cnn, images, layer="conv2", units=Units(channels=[3]), device="cpu")
    from captum.attr import NeuronGradient
    ref = NeuronGradient(tiny_cnn, tiny_cnn.conv2).attribute(
        x, neuron_selector=lambda out: out[:, 3].mean(dim=(1, 2))).abs()[:, 0].numpy()
    assert_allclose(got[:, 0], ref, rtol=1e-5, atol=1e-8)


def test_default_target_is_predicted_class(tiny_cnn, images):
    pred = tiny_cnn(torch.from_numpy(images)[:, None]).argmax(1).tolist()
    got = saliency(tiny_cnn, images, device="cpu")
    for i, c in enumerate(pred):
        ref = saliency(tiny_cnn, images[i], target=c, device="cpu")
        assert_allclose(got[i, 0], ref[0, 0], rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("size, stride", [(1, 1), (5, 1), (4, 2), (6, 5)])
def test_occlusion_equals_captum_on_outputs(tiny_cnn, images, size, stride):
    # (16 - size) % stride == 0: both sweeps visit the same positions
    got = occlusion(tiny_cnn, images, target=[0, 1], size=size, stride=stride, fill=0.3,
                    device="cpu", batch_size=37)
    x = torch.from_numpy(images)
    read = Readout(tiny_cnn, device="cpu")
    for j, t in enumerate([0, 1]):
        ref = Occlusion(read).attribute(x, sliding_window_shapes=(size, size),
                                        strides=stride, baselines=0.3, target=t,
                                        perturbations_per_eval=64)
        assert_allclose(got[:, j], ref.numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("size, stride", [(5, 3), (10, 4), (15, 15)])
def test_occlusion_captum_sweep_equals_captum(tiny_cnn, images, size, stride):
    # (16 - size) % stride != 0: captum clips its last window at the edge
    got = occlusion(tiny_cnn, images, target=2, size=size, stride=stride, sweep="captum",
                    device="cpu", progress=False)
    read = Readout(tiny_cnn, device="cpu")
    ref = Occlusion(read).attribute(torch.from_numpy(images), sliding_window_shapes=(size, size),
                                    strides=stride, baselines=0.5, target=2,
                                    perturbations_per_eval=64)
    assert_allclose(got[:, 0], ref.numpy(), rtol=1e-4, atol=1e-7)
    cover = occlusion(tiny_cnn, images, target=2, size=size, stride=stride, device="cpu",
                      progress=False)
    assert np.isfinite(cover).all()
    with pytest.raises(ValueError, match="sweep must be one of"):
        occlusion(tiny_cnn, images, sweep="edge")


def test_occlusion_all_units_equal_captum_per_unit(tiny_cnn, images):
    got = occlusion(tiny_cnn, images[:1], layer="conv2", size=5, stride=1, device="cpu")
    assert got.shape == (1, 6, 16, 16)
    x = torch.from_numpy(images[:1])
    for c in (0, 4):
        read = Readout(tiny_cnn, "conv2", Units(channels=[c]), device="cpu")
        ref = Occlusion(read).attribute(x, sliding_window_shapes=(5, 5), strides=1,
                                        baselines=0.5, target=0, perturbations_per_eval=64)
        assert_allclose(got[0, c], ref[0].numpy(), rtol=1e-4, atol=1e-7)


def test_occlusion_sizes_and_errors(tiny_cnn, images):
    assert OCCLUDER_SIZES == (1, 5, 10, 15)
    for size in OCCLUDER_SIZES:
        m = occlusion(tiny_cnn, images[:1], size=size, device="cpu")
        assert m.shape == (1, 1, 16, 16) and np.isfinite(m).all()
    with pytest.raises(ValueError, match="stride must be <= size"):
        occlusion(tiny_cnn, images, size=5, stride=6)
    with pytest.raises(ValueError, match="fill"):
        occlusion(tiny_cnn, images, fill=2.0)
    with pytest.raises(ValueError, match="target must be a class index"):
        occlusion(tiny_cnn, images, target=7, device="cpu")
    with pytest.raises(ValueError, match=r"one of \['happy', 'fearful', 'neutral'\]"):
        occlusion(tiny_cnn, images, target="sad", device="cpu")
    with pytest.raises(ValueError, match="target must be None when layer"):
        saliency(tiny_cnn, images, target=1, layer="conv2", device="cpu")
    with pytest.raises(ValueError, match="method must be one of"):
        integrated_gradients(tiny_cnn, images, method="simpson")


def test_occlusion_of_region_unit_is_its_region():
    class RegionSum(nn.Module):
        def forward(self, x):
            return x[:, :, 4:8, 10:14].sum(dim=(2, 3))

    img = np.ones((1, 16, 16), np.float32)
    got = occlusion(RegionSum(), img, target=0, size=1, fill=0.0, device="cpu")[0, 0]
    assert_allclose(got[4:8, 10:14], 1.0)
    got[4:8, 10:14] = 0
    assert_allclose(got, 0.0)


def test_perturbation(tiny_cnn, images):
    d = perturbation(tiny_cnn, images[0], images, layer="conv2", device="cpu")
    assert d.shape == (3, 6)
    assert_allclose(d[0], 0.0, atol=1e-7)
    with torch.no_grad():
        a = tiny_cnn.conv2(tiny_cnn.pool(torch.relu(tiny_cnn.conv1(
            torch.from_numpy(images)[:, None])))).mean(dim=(2, 3))
    assert_allclose(d[2], (a[2] - a[0]).abs().numpy(), rtol=1e-5, atol=1e-7)
    d = perturbation(tiny_cnn, images, images[::-1].copy(), device="cpu")
    assert d.shape == (3, 3)
    assert_allclose(d[1], 0.0, atol=1e-7)
    with pytest.raises(ValueError, match="perturbed must have shape"):
        perturbation(tiny_cnn, images[:2], images)
