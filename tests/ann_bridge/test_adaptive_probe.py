"""Adaptive bubbles in the network probe: ``diagnostic_images(..., policy=)`` and
``bubbles ann probe --sampling adaptive``."""
import re

import numpy as np
import pytest
from numpy.testing import assert_allclose

import bubbles
from analysis import DiagnosticImage
from analysis.adaptive import (AdaptivePolicy, AdaptiveSampler, adaptive_image,
                               load_densities)
from ann_bridge.probe import diagnostic_images
from ann_bridge.record import record
from commands.ann import main

FACES = ["--size", "64", "--identities", "1", "--device", "cpu", "--quiet"]


def test_adaptive_probe_matches_the_manual_pipeline(tiny_cnn, images):
    """Blocks of 20 (batches of 7 inside them): the centres replay from the raw
    activations, and the image is the weighted ('map') adaptive image."""
    spec = bubbles.BubbleSpec(shape=(16, 16), sigma=2.0, n_bubbles=4)
    policy = AdaptivePolicy(update_every=20, floor=0.5)
    img = images[0]
    ci = diagnostic_images(spec, tiny_cnn, "relu2", img, 60, seed=9, units=[1, 5],
                           device="cpu", batch_size=7, policy=policy, progress=False)
    dens = ci.info.pop("densities")
    assert dens.shape == (3, 1, 16, 16)
    assert ci.info["sampling"]["policy"] == policy.to_dict()
    assert ci.info["sampling"]["z_scale"] == "map"
    # draw block by block with the recorded densities: every trial comes out the same
    # (float32 activations of other batch sizes round differently, about 1e-7 of the
    # density: the recorded bits, not a replay, regenerate a probe's masks)
    rs = []
    sampler = AdaptiveSampler(spec, 9, policy, recorded=dens, rtol=1e-5)
    for start in range(0, 60, 20):
        c = sampler.centers(range(start, start + 20))
        s = bubbles.bubble_stimuli(spec, img, bubbles.render_masks(spec, c))
        r = record(tiny_cnn, "relu2", s, units=[1, 5], device="cpu").astype(np.float64)
        sampler.tell(range(start, start + 20), r)
        rs.append(r)
    run = sampler.run()
    ref = adaptive_image(spec, run.centers, np.concatenate(rs), run.densities, run.blocks,
                         progress=False)
    assert_allclose(ci.z, ref.z, atol=1e-3)
    assert_allclose(run.densities, dens, rtol=0, atol=0)
    # block 0 is uniform, the later ones follow the units' responses
    assert_allclose(dens[0], 1 / 256)
    assert dens[2].max() / dens[2].min() > 1.2


def test_policy_must_be_an_adaptive_policy(tiny_cnn, images):
    spec = bubbles.BubbleSpec(shape=(16, 16), sigma=2.0, n_bubbles=4)
    with pytest.raises(TypeError, match="policy must be None.*AdaptivePolicy, got dict"):
        diagnostic_images(spec, tiny_cnn, "relu2", images[0], 20, seed=1, device="cpu",
                          policy={"floor": 0.5}, progress=False)


def test_probe_command_adaptive_writes_the_densities(tmp_path, capsys):
    rc = main(["probe", "--layer", "features.relu2", "--units", "0:3", "--n-masks", "40",
               "--sigma", "4", "--n-bubbles", "5", "--seed", "3", "--sampling",
               "adaptive", "--update-every", "15", "--floor", "0.6", "--out",
               str(tmp_path), *FACES])
    assert rc == 0, capsys.readouterr().err
    ci = DiagnosticImage.load(tmp_path / "probe_features_relu2")
    assert ci.z.shape == (3, 64, 64) and ci.n_trials == 40
    assert "densities" not in ci.info
    assert ci.info["sampling"]["policy"]["floor"] == 0.6
    assert ci.info["sampling"]["densities"] == "probe_features_relu2_densities.npz"
    dens, policy = load_densities(tmp_path / "probe_features_relu2_densities.npz")
    assert dens.shape == (3, 1, 64, 64) and policy.update_every == 15
    assert_allclose(dens.sum(axis=(2, 3)), 1.0, rtol=1e-12)
    assert "probe_features_relu2_densities.npz" in capsys.readouterr().out
    # the densities file is an output: not replaced without --force
    rc = main(["probe", "--layer", "features.relu2", "--units", "0:3", "--n-masks", "40",
               "--sigma", "4", "--n-bubbles", "5", "--sampling", "adaptive", "--out",
               str(tmp_path), *FACES])
    assert rc == 1


@pytest.mark.parametrize("extra, match", [
    (["--sampling", "adaptive", "--floor", "0"], r"--floor.*\(0, 1\]"),
    (["--sampling", "adaptive", "--floor", "1.5"], r"--floor.*\(0, 1\]"),
    (["--sampling", "adaptive", "--update-every", "0"], r"--update-every.*>= 1"),
    (["--sampling", "smart"], r"--sampling.*invalid choice"),
    (["--floor", "0.5"], r"--floor apply only with --sampling adaptive"),
])
def test_probe_sampling_usage_errors_exit_2(tmp_path, capsys, extra, match):
    rc = main(["probe", "--layer", "features.relu2", "--n-masks", "40", "--out",
               str(tmp_path), *FACES, *extra])
    assert rc == 2
    assert re.search(match, capsys.readouterr().err)
