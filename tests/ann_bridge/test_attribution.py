import warnings

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, Occlusion, Saliency
from numpy.testing import assert_allclose
from torch import nn

from analysis import DiagnosticImage
from ann_bridge.attribution import (OCCLUDER_SIZES, Attribution, Readout,
                                    attribution_images, integrated_gradients, occlusion,
                                    perturbation_effect, saliency)
from ann_bridge.record import Units


class SaturatedRelu(nn.Module):
    """f(x) = 1 - ReLU(1 - 2x) of the single pixel: Sundararajan et al.'s (2017)
    1 - ReLU(1 - x) at x = 2, with the pixel scaled into [0, 1]."""

    def forward(self, x):
        return (1 - torch.relu(1 - 2 * x.flatten(1).sum(1, keepdim=True)))


def ident(x):
    return x


def test_sensitivity_failure_gradient_zero_ig_one():
    x = np.full((1, 1, 1), 1.0, np.float32)
    model = SaturatedRelu()
    with torch.no_grad():
        assert float(model(torch.from_numpy(x))) == 1.0
    grad = saliency(model, x, target=0, preprocess=ident, device="cpu")
    assert isinstance(grad, Attribution) and grad.method == "saliency"
    assert grad.attribution.shape == (1, 1, 1, 1)
    assert grad.attribution.item() == 0.0 and grad.gap is None
    res = integrated_gradients(model, x, target=0, baseline=0.0, n_steps=200,
                               method="riemann_trapezoid", preprocess=ident, device="cpu")
    assert_allclose(res.attribution.item(), 1.0, atol=1e-2)
    assert_allclose(res.difference.item(), 1.0)
    assert abs(res.gap.item()) < 1e-2
    assert res.params == {"baseline": 0.0, "n_steps": 200, "quadrature": "riemann_trapezoid"}


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
    with pytest.raises(ValueError, match=r"internal_batch_size \(None or a count\) must be an"):
        integrated_gradients(tiny_cnn, images, internal_batch_size=0)


def test_saliency_matches_captum_for_class_and_unit(tiny_cnn, images):
    x = torch.from_numpy(images)[:, None].requires_grad_(True)
    res = saliency(tiny_cnn, images, target="neutral", device="cpu")
    assert res.targets == [["class neutral"]] * 3 and res.layer is None
    got = res.attribution
    ref = Saliency(tiny_cnn).attribute(x, target=2, abs=True)[:, 0].numpy()
    assert_allclose(got[:, 0], ref, rtol=1e-5, atol=1e-8)
    res = saliency(tiny_cnn, images, layer="conv2", units=Units(channels=[3]), device="cpu")
    assert res.targets == [["conv2:ch3"]] * 3 and res.layer == "conv2"
    got = res.attribution
    from captum.attr import NeuronGradient
    ref = NeuronGradient(tiny_cnn, tiny_cnn.conv2).attribute(
        x, neuron_selector=lambda out: out[:, 3].mean(dim=(1, 2))).abs()[:, 0].numpy()
    assert_allclose(got[:, 0], ref, rtol=1e-5, atol=1e-8)


def test_default_target_is_predicted_class(tiny_cnn, images):
    pred = tiny_cnn(torch.from_numpy(images)[:, None]).argmax(1).tolist()
    res = saliency(tiny_cnn, images, device="cpu")
    for i, c in enumerate(pred):
        ref = saliency(tiny_cnn, images[i], target=c, device="cpu").attribution
        assert_allclose(res.attribution[i, 0], ref[0, 0], rtol=1e-4, atol=1e-9)
        assert res.targets[i] == [f"predicted class: {tiny_cnn.classes[c]}"]


@pytest.mark.parametrize("size, stride", [(1, 1), (5, 1), (4, 2), (6, 5)])
def test_occlusion_equals_captum_on_outputs(tiny_cnn, images, size, stride):
    # (16 - size) % stride == 0: both sweeps visit the same positions
    got = occlusion(tiny_cnn, images, target=[0, 1], size=size, stride=stride, fill=0.3,
                    device="cpu", batch_size=37).attribution
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
                    device="cpu", progress=False).attribution
    read = Readout(tiny_cnn, device="cpu")
    ref = Occlusion(read).attribute(torch.from_numpy(images), sliding_window_shapes=(size, size),
                                    strides=stride, baselines=0.5, target=2,
                                    perturbations_per_eval=64)
    assert_allclose(got[:, 0], ref.numpy(), rtol=1e-4, atol=1e-7)
    cover = occlusion(tiny_cnn, images, target=2, size=size, stride=stride, device="cpu",
                      progress=False).attribution
    assert np.isfinite(cover).all()
    with pytest.raises(ValueError, match="sweep must be one of"):
        occlusion(tiny_cnn, images, sweep="edge")


def test_occlusion_all_units_equal_captum_per_unit(tiny_cnn, images):
    res = occlusion(tiny_cnn, images[:1], layer="conv2", size=5, stride=1, device="cpu")
    got = res.attribution
    assert got.shape == (1, 6, 16, 16)
    assert res.targets == [[f"conv2:ch{c}" for c in range(6)]]
    assert res.params == {"size": 5, "stride": 1, "fill": 0.5, "sweep": "cover"}
    x = torch.from_numpy(images[:1])
    for c in (0, 4):
        read = Readout(tiny_cnn, "conv2", Units(channels=[c]), device="cpu")
        ref = Occlusion(read).attribute(x, sliding_window_shapes=(5, 5), strides=1,
                                        baselines=0.5, target=0, perturbations_per_eval=64)
        assert_allclose(got[0, c], ref[0].numpy(), rtol=1e-4, atol=1e-7)


def test_occlusion_sizes_and_errors(tiny_cnn, images):
    assert OCCLUDER_SIZES == (1, 5, 10, 15)
    for size in OCCLUDER_SIZES:
        m = occlusion(tiny_cnn, images[:1], size=size, device="cpu").attribution
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
    got = occlusion(RegionSum(), img, target=0, size=1, fill=0.0, device="cpu").attribution[0, 0]
    assert_allclose(got[4:8, 10:14], 1.0)
    got[4:8, 10:14] = 0
    assert_allclose(got, 0.0)


def test_perturbation_effect(tiny_cnn, images):
    d = perturbation_effect(tiny_cnn, images[0], images, layer="conv2", device="cpu")
    assert d.shape == (3, 6)
    assert_allclose(d[0], 0.0, atol=1e-7)
    with torch.no_grad():
        a = tiny_cnn.conv2(tiny_cnn.pool(torch.relu(tiny_cnn.conv1(
            torch.from_numpy(images)[:, None])))).mean(dim=(2, 3))
    assert_allclose(d[2], (a[2] - a[0]).abs().numpy(), rtol=1e-5, atol=1e-7)
    d = perturbation_effect(tiny_cnn, images, images[::-1].copy(), device="cpu")
    assert d.shape == (3, 3)
    assert_allclose(d[1], 0.0, atol=1e-7)
    with pytest.raises(ValueError, match="perturbed must have shape"):
        perturbation_effect(tiny_cnn, images[:2], images)
    with pytest.raises(ValueError, match=r"perturbed must have values in \[0, 1\]"):
        perturbation_effect(tiny_cnn, images[0], images * 255)


METHODS = [("occlusion", {"size": 4}), ("saliency", {}), ("integrated_gradients", {"n_steps": 8})]


def _run(name, model, images, **kw):
    fn = {"occlusion": occlusion, "saliency": saliency,
          "integrated_gradients": integrated_gradients}[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # IG's gap at 8 steps
        return fn(model, images, device="cpu", progress=False, **kw)


@pytest.mark.parametrize("name, kw", METHODS)
def test_torch_layout_is_read_as_nchw(tiny_cnn, images, name, kw):
    """A (N, 1, H, W) tensor -- torch's layout -- gives (N, targets, H, W) maps equal to
    the grey stack's, never a map summed over the wrong axis."""
    x = torch.from_numpy(images[:1])[:, None]                  # (1, 1, 16, 16)
    got = _run(name, tiny_cnn, x, target=0, **kw).attribution
    ref = _run(name, tiny_cnn, images[:1], target=0, **kw).attribution
    assert got.shape == (1, 1, 16, 16)
    assert_allclose(got, ref, rtol=1e-5, atol=1e-7)


def test_colour_layouts_agree():
    """Colour: numpy (N, H, W, 3) and a torch tensor (N, 3, H, W) are the same images;
    an ambiguous 4-D array is refused by name."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten())
    rgb = np.random.default_rng(2).random((2, 12, 12, 3)).astype(np.float32)
    a = saliency(model, rgb, target=1, device="cpu").attribution
    b = saliency(model, torch.from_numpy(rgb).permute(0, 3, 1, 2), target=1,
                 device="cpu").attribution
    assert a.shape == (2, 1, 12, 12)
    assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(ValueError, match=r"images of shape \(2, 3, 4, 3\) is ambiguous"):
        saliency(model, np.zeros((2, 3, 4, 3), np.float32), target=0, device="cpu")
    with pytest.raises(ValueError, match=r"a 4-D torch tensor is read as \(N, C, H, W\)"):
        saliency(model, torch.zeros(2, 12, 12, 3), target=0, device="cpu")


def test_no_nan_maps(tiny_cnn, images):
    """Non-finite or out-of-range inputs are refused by name; a model whose output is
    not finite is refused instead of returning NaN maps."""
    with pytest.raises(ValueError, match="baseline must be a finite grey level"):
        integrated_gradients(tiny_cnn, images, baseline=float("nan"), device="cpu")
    with pytest.raises(ValueError, match="baseline must be a finite grey level"):
        integrated_gradients(tiny_cnn, images, baseline=2.0, device="cpu")
    with pytest.raises(ValueError, match="baseline must hold finite values"):
        integrated_gradients(tiny_cnn, images, baseline=np.full((16, 16), np.nan),
                             device="cpu")
    with pytest.raises(ValueError, match="fill must be a finite grey level"):
        occlusion(tiny_cnn, images, fill=float("nan"), device="cpu")
    with pytest.raises(ValueError, match=r"images must have values in \[0, 1\] \(8-bit"):
        saliency(tiny_cnn, images * 255, device="cpu")
    with pytest.raises(ValueError, match="images must hold finite values"):
        occlusion(tiny_cnn, np.where(images > 0.5, np.nan, images), device="cpu")

    class NaNOut(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :2] * float("nan")

    for name, kw in METHODS:
        with pytest.raises(ValueError, match="attribution holds NaN or inf values"):
            _run(name, NaNOut(), images, target=0, **kw)


def test_wrong_types_are_type_errors(tiny_cnn, images):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        occlusion("net", images)
    with pytest.raises(TypeError, match="preprocess must be callable"):
        saliency(tiny_cnn, images, preprocess=3, device="cpu")
    with pytest.raises(TypeError, match="result must be an Attribution"):
        attribution_images(np.zeros((1, 1, 4, 4)))


def test_attribution_images(tiny_cnn, images):
    """One DiagnosticImage per image: raw = the maps, z = them standardised over pixels,
    targets named, observer 'network', IG's gaps per image in info."""
    res = _run("integrated_gradients", tiny_cnn, images, target=[0, 2], n_steps=8)
    out = attribution_images(res, ["a", "b", "c"])
    assert [type(d) for d in out] == [DiagnosticImage] * 3
    d = out[1]
    assert d.dims == ("target", "y", "x") and d.observer == "network"
    assert d.targets == ["class happy", "class neutral"] and d.method == "integrated_gradients"
    assert_allclose(d.raw, res.attribution[1])
    flat = res.attribution[1].reshape(2, -1).astype(np.float64)
    z = (flat - flat.mean(1, keepdims=True)) / flat.std(1, keepdims=True)
    assert_allclose(d.z.reshape(2, -1), z, rtol=1e-4, atol=1e-5)
    assert d.info["stimulus"] == "b" and d.info["n_steps"] == 8
    assert_allclose(d.info["completeness_gap"], res.gap[1])
    with pytest.raises(ValueError, match="stimulus_ids must name each of the 3 images"):
        attribution_images(res, ["a"])
