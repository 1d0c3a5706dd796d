import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from torch import nn

import bubbles
from analysis import DiagnosticImage, classification_image
from ann_bridge.probe import (BubbledStimuli, diagnostic_images, strongest_targets,
                              torch_apply_bubbles, torch_compose_multiscale,
                              torch_render_masks)
from ann_bridge.record import record


class RegionUnit(nn.Module):
    """One unit that sums a known image region (rows 8-13, cols 18-25)."""

    def __init__(self):
        super().__init__()
        self.unit = nn.Identity()
        self.after = nn.Linear(1, 1)

    def forward(self, x):
        r = self.unit(x[:, :, 8:14, 18:26].sum(dim=(1, 2, 3))[:, None])
        return self.after(r)


RENDER_CASES = [{}, {"aperture": "square"}, {"polarity": "occlude"},
                {"aperture": "square", "polarity": "occlude"}, {"bands": 2, "sigma": 1.5},
                {"aperture": "disk"}, {"overlap": "max"}]


@pytest.mark.parametrize("kw", RENDER_CASES)
def test_torch_render_equals_bubbles(kw):
    """The torch backend follows render_masks' rules: profiles, clip, polarity, bands."""
    spec = bubbles.BubbleSpec(shape=(24, 40), **{"sigma": 3.0, "n_bubbles": 6, **kw})
    c = bubbles.sample_centers(spec, 5, 20)
    got = torch_render_masks(spec, c, "cpu").numpy()
    ref = bubbles.render_masks(spec, c)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert_allclose(got, ref, atol=1e-6)


def test_torch_render_ragged_centres_and_checks():
    """Ragged per-trial centres (QUEST changes the count) render as in bubbles, and bad
    centres are refused with bubbles' messages."""
    spec = bubbles.BubbleSpec(shape=(20, 20), sigma=2.0, n_bubbles=3)
    ragged = [np.array([[3.0, 4.0]]), np.zeros((0, 2)), np.array([[10, 10], [15, 2.0]])]
    assert_allclose(torch_render_masks(spec, ragged, "cpu").numpy(),
                    bubbles.render_masks(spec, ragged), atol=1e-6)
    with pytest.raises(ValueError, match="inside the image"):
        torch_render_masks(spec, np.full((1, 2, 2), 30.0), "cpu")
    with pytest.raises(ValueError, match="finite"):
        torch_render_masks(spec, np.full((1, 2, 2), np.nan), "cpu")
    with pytest.raises(TypeError, match="spec must be a bubbles.BubbleSpec"):
        torch_render_masks({"shape": (20, 20)}, ragged, "cpu")


def test_torch_compositing_equals_bubbles():
    """apply_bubbles' arithmetic in its order (bit for bit on the same masks) and
    compose_multiscale's."""
    rng = np.random.default_rng(3)
    imgs = rng.random((4, 16, 16)).astype(np.float32)
    masks = rng.random((4, 16, 16)).astype(np.float32)
    levels = bubbles.background_levels(imgs, "mean")
    got = torch_apply_bubbles(torch.from_numpy(imgs), torch.from_numpy(masks),
                              torch.from_numpy(levels)).numpy()
    ref = np.stack([bubbles.apply_bubbles(im, m) for im, m in zip(imgs, masks)])
    np.testing.assert_array_equal(got, ref)
    bands = bubbles.laplacian_bands(imgs[0], 3)
    mm = rng.random((5, 3, 16, 16)).astype(np.float32)
    got = torch_compose_multiscale(torch.from_numpy(bands), torch.from_numpy(mm)).numpy()
    assert_allclose(got, bubbles.compose_multiscale(bands, mm), atol=1e-6)


@pytest.mark.parametrize("kw", [{}, {"background": 0.3}, {"polarity": "occlude"},
                                {"bands": 2, "sigma": 1.5}, {"background": "noise"},
                                {"aperture": "disk"}])
def test_bubbled_stimuli_equal_bubble_stimuli(kw):
    """A probe's stimuli are a session's (bubble_stimuli), whatever the batching: one
    BubbledStimuli serves every batch, in any order, from the per-image constants
    (background_levels, laplacian_bands) it computed when it was made."""
    spec = bubbles.BubbleSpec(shape=(32, 32), **{"sigma": 3.0, "n_bubbles": 5, **kw})
    imgs = np.random.default_rng(1).random((2, 32, 32)).astype(np.float32)
    c = bubbles.sample_centers(spec, 0, 6)
    which = np.arange(6) % 2
    make = BubbledStimuli(spec, torch.from_numpy(imgs), seed=0)
    if make.levels is not None:
        assert_allclose(make.levels.numpy(), bubbles.background_levels(imgs, spec.background))
    if spec.multiscale:
        assert_allclose(np.asarray(make.bands[1]), bubbles.laplacian_bands(imgs[1], 2))
    masks = bubbles.render_masks(spec, c)
    ref = np.stack([bubbles.bubble_stimuli(spec, imgs[j], masks[t:t + 1], seed=0,
                                           trials=[t])[0] for t, j in enumerate(which)])
    buf = torch.empty((4, 32, 32))
    for sl in (slice(3, 6), slice(0, 3), slice(0, 1), slice(1, 6, 2)):
        cs = [b[sl] for b in c] if spec.multiscale else c[sl]
        got = make(which[sl], cs, trials=np.arange(6)[sl], out=buf).numpy()
        assert_allclose(got, ref[sl], atol=1e-6)


def test_probe_recovers_planted_unit():
    spec = bubbles.BubbleSpec(shape=(32, 32), sigma=2.5, n_bubbles=6, background=0.0)
    img = np.full((32, 32), 0.8, np.float32)
    ci = diagnostic_images(spec, RegionUnit(), "unit", img, 400, seed=3, device="cpu",
                           progress=False)
    assert isinstance(ci, DiagnosticImage)
    assert ci.dims == ("target", "y", "x") and ci.observer == "unit"
    assert ci.targets == ["unit:ch0"] and strongest_targets(ci)[0][0] == "unit:ch0"
    z = ci.z[0]
    assert ci.z.shape == (1, 32, 32) and ci.n_trials == 400
    peak = np.unravel_index(np.argmax(z), z.shape)
    assert 8 <= peak[0] < 14 and 18 <= peak[1] < 26
    inside = np.zeros((32, 32), bool)
    inside[8:14, 18:26] = True
    assert z[inside].mean() > 5 and abs(z[~inside].mean()) < 1
    assert ci.info["layer"] == "unit" and ci.info["mask_seed"] == 3


def test_probe_all_channels_deterministic_and_batch_invariant(tiny_cnn, images):
    spec = bubbles.BubbleSpec(shape=(16, 16), sigma=2.0, n_bubbles=4)
    a = diagnostic_images(spec, tiny_cnn, "conv2", images, 60, seed=1, batch_size=7,
                          device="cpu", progress=False)
    b = diagnostic_images(spec, tiny_cnn, "conv2", images, 60, seed=1, batch_size=64,
                          device="cpu", progress=False)
    c = diagnostic_images(spec, tiny_cnn, "conv2", images, 60, seed=2, device="cpu",
                          progress=False)
    assert a.z.shape == (6, 16, 16)
    assert_allclose(a.z, b.z, atol=1e-4)
    assert not np.allclose(a.z, c.z)
    assert a.targets[0] == "conv2:ch0" and a.info["n_images"] == 3
    # the seed in any of its kinds: a SeedSequence is the int's root; a Generator is
    # drawn from once, and the root it drew is recorded (it regenerates the probe)
    d = diagnostic_images(spec, tiny_cnn, "conv2", images, 60, np.random.SeedSequence(1),
                          device="cpu", progress=False)
    assert_allclose(d.z, a.z, atol=1e-6)
    assert d.info["mask_seed"] == {"entropy": 1, "spawn_key": []}
    e = diagnostic_images(spec, tiny_cnn, "conv2", images, 60, np.random.default_rng(4),
                          device="cpu", progress=False)
    again = diagnostic_images(spec, tiny_cnn, "conv2", images, 60,
                              np.random.SeedSequence(e.info["mask_seed"]["entropy"]),
                              device="cpu", progress=False)
    assert_allclose(e.z, again.z, atol=1e-6)


def test_probe_matches_manual_pipeline(tiny_cnn, images):
    """Same numbers as: bubbles stimuli -> record -> classification_image."""
    spec = bubbles.BubbleSpec(shape=(16, 16), sigma=2.0, n_bubbles=4)
    img = images[0]
    ci = diagnostic_images(spec, tiny_cnn, "relu2", img, 50, seed=9, units=[1, 5],
                           device="cpu", progress=False)
    c = bubbles.sample_centers(spec, 9, 50)
    stims = bubbles.bubble_stimuli(spec, img, bubbles.render_masks(spec, c))
    r = record(tiny_cnn, "relu2", stims, units=[1, 5], device="cpu")
    ref = classification_image(spec, c, r.astype(np.float64), progress=False)
    assert_allclose(ci.z, ref.z, atol=1e-3)
    # response='perturbation' regresses the seed's |a(X) - a(X')| instead
    ci = diagnostic_images(spec, tiny_cnn, "relu2", img, 50, seed=9, units=[1, 5],
                           device="cpu", response="perturbation", progress=False)
    full = record(tiny_cnn, "relu2", img[None], units=[1, 5], device="cpu")
    ref = classification_image(spec, c, np.abs(r - full).astype(np.float64), progress=False)
    assert_allclose(ci.z, ref.z, atol=1e-3)


@pytest.mark.parametrize("kw", [{}, {"aperture": "disk"}])
def test_probe_multiscale_and_perturbation(tiny_cnn, images, kw):
    """Multi-scale probes give the manual pipeline's numbers, with a band axis."""
    spec = bubbles.BubbleSpec(shape=(16, 16), sigma=1.5, n_bubbles=6, bands=2, **kw)
    ci = diagnostic_images(spec, tiny_cnn, "conv1", images[:1], 30, seed=0, units=0,
                           device="cpu", response="perturbation", progress=False)
    assert ci.z.shape == (1, 2, 16, 16) and ci.dims == ("target", "band", "y", "x")
    assert ci.info["response"] == "perturbation"
    c = bubbles.sample_centers(spec, 0, 30)
    stims = bubbles.bubble_stimuli(spec, images[0], bubbles.render_masks(spec, c))
    r = record(tiny_cnn, "conv1", stims, units=0, device="cpu")
    full = record(tiny_cnn, "conv1", images[:1], units=0, device="cpu")
    ref = classification_image(spec, c, np.abs(r - full).astype(np.float64), progress=False)
    assert_allclose(ci.z, ref.z, atol=1e-3)


def test_probe_errors(tiny_cnn, images):
    spec = bubbles.BubbleSpec(shape=(16, 16), sigma=2.0, n_bubbles=4)
    with pytest.raises(ValueError, match="images must have shape"):
        diagnostic_images(spec, tiny_cnn, "conv2", np.zeros((8, 8)), 10, 0)
    with pytest.raises(ValueError, match="n_masks must be an integer >= 2"):
        diagnostic_images(spec, tiny_cnn, "conv2", images, 1, 0)
    with pytest.raises(ValueError, match="response must be one of"):
        diagnostic_images(spec, tiny_cnn, "conv2", images, 10, 0, response="delta")
    with pytest.raises(TypeError, match="spec must be a bubbles.BubbleSpec"):
        diagnostic_images(None, tiny_cnn, "conv2", images, 10, 0)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        diagnostic_images(spec, "net", "conv2", images, 10, 0)
    with pytest.raises(ValueError, match="layer must be one of"):
        diagnostic_images(spec, tiny_cnn, "nope", images, 10, 0, device="cpu")
    with pytest.raises(ValueError, match=r"values in \[0, 1\] \(8-bit images: divide by 255\)"):
        diagnostic_images(spec, tiny_cnn, "conv2", images * 255, 10, 0, device="cpu")
    with pytest.raises(ValueError, match="finite"):
        diagnostic_images(spec, tiny_cnn, "conv2", images * np.nan, 10, 0, device="cpu")
    with pytest.raises(ValueError, match="seed must be"):
        diagnostic_images(spec, tiny_cnn, "conv2", images, 10, -1, device="cpu")
    with pytest.raises(ValueError, match="stimulus_ids must name each of the 3 images"):
        diagnostic_images(spec, tiny_cnn, "conv2", images, 10, 0, stimulus_ids=["a"])


def test_probe_of_fewer_masks_than_images_is_clean(tiny_cnn, images):
    """n_masks below the image count: one warning saying which images are shown, and no
    numpy 'Mean of empty slice' from centring the images that were not shown."""
    spec = bubbles.BubbleSpec(shape=(16, 16), sigma=2.0, n_bubbles=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ci = diagnostic_images(spec, tiny_cnn, "conv2", images, 2, 0, device="cpu",
                               stimulus_ids=["a", "b", "c"], progress=False)
    messages = [str(w.message) for w in caught]
    assert ("n_masks=2 is below the 3 images: trial t shows image t % 3, so only the "
            "first 2 images are shown") in messages
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], messages
    assert ci.info["stimuli"] == ["a", "b"] and ci.info["n_images"] == 2
    assert np.isfinite(ci.z).all()


def test_noise_background_is_the_sessions_trial_noise(tiny_cnn, images):
    """background='noise': trial t's field is bubbles.noise_background(image, seed, [t]),
    the field of a session's trial t with that seed -- regenerable from (seed, t) alone,
    whatever the batch size."""
    spec = bubbles.BubbleSpec(shape=(16, 16), sigma=2.0, n_bubbles=4, background="noise")
    c = bubbles.sample_centers(spec, 6, 20)
    which = np.arange(20) % 3
    masks = bubbles.render_masks(spec, c)
    ref = np.stack([bubbles.bubble_stimuli(spec, images[j], masks[t:t + 1], seed=6,
                                           trials=[t])[0] for t, j in enumerate(which)])
    one = bubbles.apply_bubbles(images[2], masks[5], bubbles.noise_background(images[2], 6, [5]))
    assert_allclose(ref[5], one[0], atol=1e-7)
    got = BubbledStimuli(spec, torch.from_numpy(images), seed=6)(
        which[10:], c[10:], trials=np.arange(10, 20)).numpy()
    assert_allclose(got, ref[10:], atol=1e-7)
    a = diagnostic_images(spec, tiny_cnn, "conv2", images, 20, seed=6, batch_size=3,
                          device="cpu", progress=False)
    b = diagnostic_images(spec, tiny_cnn, "conv2", images, 20, seed=6, batch_size=20,
                          device="cpu", progress=False)
    assert_allclose(a.z, b.z, atol=1e-4)
    r = record(tiny_cnn, "conv2", ref, device="cpu").astype(np.float64)
    for j in range(3):
        r[which == j] -= r[which == j].mean(axis=0)
    assert_allclose(a.z, classification_image(spec, c, r, progress=False).z, atol=1e-3)
