import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from torch import nn

import bubbles
from analysis import DiagnosticImage
from ann_bridge.probe import bubbled_batch, diagnostic_images, torch_render_masks


class RegionUnit(nn.Module):
    """One unit that sums a known image region (rows 8-13, cols 18-25)."""

    def __init__(self):
        super().__init__()
        self.unit = nn.Identity()
        self.after = nn.Linear(1, 1)

    def forward(self, x):
        r = self.unit(x[:, :, 8:14, 18:26].sum(dim=(1, 2, 3))[:, None])
        return self.after(r)


@pytest.mark.parametrize("kw", [{}, {"aperture": "square"}, {"polarity": "occlude"}])
def test_torch_render_equals_bubbles(kw):
    spec = bubbles.BubbleSpec(shape=(24, 40), sigma=3.0, n_bubbles=6, **kw)
    c = bubbles.sample_centers(spec, 5, 20)
    assert_allclose(torch_render_masks(spec, c, "cpu").numpy(),
                    bubbles.render_masks(spec, c), atol=1e-6)


def test_bubbled_batch_equals_bubble_stimuli():
    spec = bubbles.BubbleSpec(shape=(32, 32), sigma=3.0, n_bubbles=5)
    imgs = np.random.default_rng(1).random((2, 32, 32)).astype(np.float32)
    c = bubbles.sample_centers(spec, 0, 6)
    which = np.arange(6) % 2
    got = bubbled_batch(spec, torch.from_numpy(imgs), which, c).numpy()
    masks = bubbles.render_masks(spec, c)
    ref = np.stack([bubbles.bubble_stimuli(imgs[j], spec, masks[t:t + 1])[0]
                    for t, j in enumerate(which)])
    assert_allclose(got, ref, atol=1e-6)


def test_probe_recovers_planted_unit():
    spec = bubbles.BubbleSpec(shape=(32, 32), sigma=2.5, n_bubbles=6, background=0.0)
    img = np.full((32, 32), 0.8, np.float32)
    ci = diagnostic_images(RegionUnit(), "unit", img, spec, 400, seed=3, device="cpu",
                           progress=False)
    assert isinstance(ci, DiagnosticImage)
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
    a = diagnostic_images(tiny_cnn, "conv2", images, spec, 60, seed=1, batch_size=7,
                          device="cpu", progress=False)
    b = diagnostic_images(tiny_cnn, "conv2", images, spec, 60, seed=1, batch_size=64,
                          device="cpu", progress=False)
    c = diagnostic_images(tiny_cnn, "conv2", images, spec, 60, seed=2, device="cpu",
                          progress=False)
    assert a.z.shape == (6, 16, 16)
    assert_allclose(a.z, b.z, atol=1e-4)
    assert not np.allclose(a.z, c.z)
    assert a.info["targets"][0] == "conv2:ch0" and a.info["n_images"] == 3


def test_probe_matches_manual_pipeline(tiny_cnn, images):
    """Same numbers as: bubbles stimuli -> record -> classification_image."""
    from analysis import classification_image
    from ann_bridge.record import record

    spec = bubbles.BubbleSpec(shape=(16, 16), sigma=2.0, n_bubbles=4)
    img = images[0]
    ci = diagnostic_images(tiny_cnn, "relu2", img, spec, 50, seed=9, units=[1, 5],
                           device="cpu", progress=False)
    c = bubbles.sample_centers(spec, 9, 50)
    stims = bubbles.bubble_stimuli(img, spec, bubbles.render_masks(spec, c))
    r = record(tiny_cnn, "relu2", stims, units=[1, 5], device="cpu")
    ref = classification_image(spec, c, r.astype(np.float64), progress=False)
    assert_allclose(ci.z, ref.z, atol=1e-3)
    # response='perturbation' regresses the seed's |a(X) - a(X')| instead
    ci = diagnostic_images(tiny_cnn, "relu2", img, spec, 50, seed=9, units=[1, 5],
                           device="cpu", response="perturbation", progress=False)
    full = record(tiny_cnn, "relu2", img[None], units=[1, 5], device="cpu")
    ref = classification_image(spec, c, np.abs(r - full).astype(np.float64), progress=False)
    assert_allclose(ci.z, ref.z, atol=1e-3)


def test_probe_multiscale_and_perturbation(tiny_cnn, images):
    spec = bubbles.BubbleSpec(shape=(16, 16), sigma=1.5, n_bubbles=6, bands=2)
    ci = diagnostic_images(tiny_cnn, "conv1", images[:1], spec, 30, seed=0, units=0,
                           device="cpu", response="perturbation", progress=False)
    assert ci.z.shape == (1, 2, 16, 16)
    assert ci.info["response"] == "perturbation"


def test_probe_errors(tiny_cnn, images):
    spec = bubbles.BubbleSpec(shape=(16, 16), sigma=2.0, n_bubbles=4)
    with pytest.raises(ValueError, match="images must have shape"):
        diagnostic_images(tiny_cnn, "conv2", np.zeros((8, 8)), spec, 10, 0)
    with pytest.raises(ValueError, match="n_masks must be an integer >= 2"):
        diagnostic_images(tiny_cnn, "conv2", images, spec, 1, 0)
    with pytest.raises(ValueError, match="response must be one of"):
        diagnostic_images(tiny_cnn, "conv2", images, spec, 10, 0, response="delta")
    with pytest.raises(ValueError, match="spec must be"):
        diagnostic_images(tiny_cnn, "conv2", images, None, 10, 0)
    with pytest.raises(ValueError, match="layer must be one of"):
        diagnostic_images(tiny_cnn, "nope", images, spec, 10, 0, device="cpu")


def test_noise_background_is_the_sessions_trial_noise(tiny_cnn, images):
    """background='noise': trial t's field is bubbles.noise_background(image, seed, [t]),
    the field of a session's trial t with that seed -- regenerable from (seed, t) alone,
    whatever the batch size."""
    from analysis import classification_image
    from ann_bridge.record import record

    spec = bubbles.BubbleSpec(shape=(16, 16), sigma=2.0, n_bubbles=4, background="noise")
    c = bubbles.sample_centers(spec, 6, 20)
    which = np.arange(20) % 3
    masks = bubbles.render_masks(spec, c)
    ref = np.stack([bubbles.bubble_stimuli(images[j], spec, masks[t:t + 1], seed=6,
                                           trials=[t])[0] for t, j in enumerate(which)])
    one = bubbles.apply_bubbles(images[2], masks[5], bubbles.noise_background(images[2], 6, [5]))
    assert_allclose(ref[5], one[0], atol=1e-7)
    got = bubbled_batch(spec, torch.from_numpy(images), which[10:], c[10:], seed=6,
                        trials=np.arange(10, 20)).numpy()
    assert_allclose(got, ref[10:], atol=1e-7)
    a = diagnostic_images(tiny_cnn, "conv2", images, spec, 20, seed=6, batch_size=3,
                          device="cpu", progress=False)
    b = diagnostic_images(tiny_cnn, "conv2", images, spec, 20, seed=6, batch_size=20,
                          device="cpu", progress=False)
    assert_allclose(a.z, b.z, atol=1e-4)
    r = record(tiny_cnn, "conv2", ref, device="cpu").astype(np.float64)
    for j in range(3):
        r[which == j] -= r[which == j].mean(axis=0)
    assert_allclose(a.z, classification_image(spec, c, r, progress=False).z, atol=1e-3)


@pytest.mark.parametrize("kw", [{}, {"background": "noise"}, {"bands": 2, "sigma": 1.5}])
def test_probe_prepares_the_images_once(tiny_cnn, images, monkeypatch, kw):
    """The per-image constants (background, image - background; host copy and bands on
    the numpy path) are computed once per probe, not per batch."""
    import ann_bridge.probe as probe

    made, band_calls = [], []
    real_init, real_bands = probe._Composer.__init__, bubbles.laplacian_bands
    monkeypatch.setattr(probe._Composer, "__init__",
                        lambda self, *a, **k: made.append(1) or real_init(self, *a, **k))
    monkeypatch.setattr(bubbles, "laplacian_bands",
                        lambda *a, **k: band_calls.append(1) or real_bands(*a, **k))
    spec = bubbles.BubbleSpec(shape=(16, 16), **{"sigma": 2.0, "n_bubbles": 4, **kw})
    diagnostic_images(tiny_cnn, "conv2", images, spec, 40, seed=1, batch_size=4,
                      device="cpu", progress=False)
    assert len(made) == 1
    assert len(band_calls) == (3 if spec.multiscale else 0)
