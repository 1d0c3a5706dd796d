"""Several layers probed with the same masks in one pass over the bubbled stimuli."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from bubbles import BubbleSpec

torch = pytest.importorskip("torch")

from ann_bridge import diagnostic_images  # noqa: E402

SPEC = BubbleSpec(shape=(16, 16), sigma=2, n_bubbles=4)


def _calls(model):
    """Count the forward calls of ``model`` (a forward pre-hook on the whole model)."""
    count = [0]

    def pre(module, inputs):
        count[0] += 1

    return count, model.register_forward_pre_hook(pre)


def test_two_layers_in_one_pass_equal_the_single_layer_probes(tiny_cnn, images):
    kw = dict(n_masks=96, seed=4, batch_size=32, progress=False)
    count, handle = _calls(tiny_cnn)
    both = diagnostic_images(SPEC, tiny_cnn, ["conv1", "conv2"], images, **kw)
    handle.remove()
    # 3 batches of stimuli + 1 pass naming the units: the layers share every pass
    assert count[0] == 3 + 1
    one = diagnostic_images(SPEC, tiny_cnn, "conv1", images, **kw)
    two = diagnostic_images(SPEC, tiny_cnn, "conv2", images, **kw)
    assert both.n_targets == 4 + 6
    assert both.targets == one.targets + two.targets
    assert both.targets[0] == "conv1:ch0" and both.targets[-1] == "conv2:ch5"
    assert_allclose(both.z, np.concatenate([one.z, two.z]), atol=1e-5)
    assert both.info["layers"] == ["conv1", "conv2"]
    assert both.info["units_per_layer"] == [4, 6]
    assert both.info["layer"] == "conv1, conv2"
    assert one.info["layers"] == ["conv1"] and one.info["layer"] == "conv1"


def test_layers_mapping_chooses_units_per_layer(tiny_cnn, images):
    ci = diagnostic_images(SPEC, tiny_cnn, {"conv2": [1, 3], "conv1": slice(0, 2)},
                           images, n_masks=40, seed=1, progress=False)
    assert ci.targets == ["conv2:ch1", "conv2:ch3", "conv1:ch0", "conv1:ch1"]
    ref = diagnostic_images(SPEC, tiny_cnn, "conv2", images, n_masks=40, seed=1,
                            units=[1, 3], progress=False)
    assert_allclose(ci.z[:2], ref.z, atol=1e-5)


def test_perturbation_response_with_two_layers(tiny_cnn, images):
    kw = dict(n_masks=48, seed=2, progress=False, response="perturbation")
    both = diagnostic_images(SPEC, tiny_cnn, ["conv1", "relu2"], images, **kw)
    ref = diagnostic_images(SPEC, tiny_cnn, "relu2", images, **kw)
    assert_allclose(both.z[4:], ref.z, atol=1e-5)


def test_bad_layer_lists_fail_by_name(tiny_cnn, images):
    kw = dict(n_masks=8, seed=0, progress=False)
    with pytest.raises(ValueError, match=r"layer lists \['conv1'\] more than once"):
        diagnostic_images(SPEC, tiny_cnn, ["conv1", "conv1"], images, **kw)
    with pytest.raises(ValueError, match="layer must name at least one layer"):
        diagnostic_images(SPEC, tiny_cnn, [], images, **kw)
    with pytest.raises(ValueError, match="layer must be one of"):
        diagnostic_images(SPEC, tiny_cnn, ["conv1", "conv9"], images, **kw)
    with pytest.raises(TypeError, match="layer must be a name or a sequence of names"):
        diagnostic_images(SPEC, tiny_cnn, ["conv1", 3], images, **kw)
    with pytest.raises(ValueError, match="units must be None when layer is a mapping"):
        diagnostic_images(SPEC, tiny_cnn, {"conv1": None}, images, units=[0], **kw)
    with pytest.raises(TypeError, match="layer must be a layer name"):
        diagnostic_images(SPEC, tiny_cnn, 3, images, **kw)


def test_random_weights_copy(tiny_cnn, images):
    from ann_bridge.probe import random_weights

    state = torch.random.get_rng_state()
    rnd = random_weights(tiny_cnn, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())      # global RNG untouched
    again = random_weights(tiny_cnn, seed=3)
    other = random_weights(tiny_cnn, seed=4)
    for (name, p), q, r, s in zip(tiny_cnn.named_parameters(), rnd.parameters(),
                                  again.parameters(), other.parameters()):
        assert p.shape == q.shape
        assert not torch.equal(p, q), name                        # every weight redrawn
        assert torch.equal(q, r) and not torch.equal(q, s)        # seeded
    assert type(rnd) is type(tiny_cnn) and not rnd.training
    ci = diagnostic_images(SPEC, rnd, "conv2", images, n_masks=40, seed=0, progress=False)
    assert ci.n_targets == 6
    with pytest.raises(TypeError, match="seed must be an int"):
        random_weights(tiny_cnn, seed=1.5)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        random_weights("model")

    class Custom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(3))

    with pytest.raises(ValueError, match=r"no layer can re-initialise \(\['scale'\]\)"):
        random_weights(Custom())
