"""compare_many on the network side: planted voxels that follow a unit of the embedded
CNN on the bubbled stimuli, two layers probed in one pass, the random-weights floor."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from analysis import classification_image  # noqa: E402
from analysis.compare_many import compare_many, roi_table  # noqa: E402
from ann_bridge import UnitRecorder, diagnostic_images, load_default_model  # noqa: E402
from ann_bridge.probe import random_weights  # noqa: E402
from bubbles import (BubbleSpec, bubble_stimuli, render_masks, sample_centers,  # noqa: E402
                     seed_sequence)
from bubbles.faces import face_set  # noqa: E402

SPEC = BubbleSpec(shape=(64, 64), sigma=4, n_bubbles=10)
LAYERS = ["features.relu2", "features.relu3"]
N, SEED = 800, 7


@pytest.fixture(scope="module")
def study():
    """Two layers of the trained network probed in one pass; 3 voxels planted on
    chosen units (z-scored activation + noise of SD 1 per trial), 12 null voxels."""
    torch.set_num_threads(2)
    model = load_default_model()
    face = face_set(1, size=64, expressions=("happy",)).images[0]
    b = diagnostic_images(SPEC, model, LAYERS, face, N, SEED, progress=False)
    c = sample_centers(SPEC, seed_sequence(SEED), N)          # the probe's trials
    stim = bubble_stimuli(SPEC, face, render_masks(SPEC, c))
    rec = UnitRecorder(model, {name: None for name in LAYERS})
    acts = np.concatenate([np.concatenate([v.cpu().numpy() for v in rec(stim[i:i + 200])
                                           .values()], axis=1)
                           for i in range(0, N, 200)])
    peak = np.abs(b.z).reshape(b.n_targets, -1).max(axis=1)
    n2 = b.info["units_per_layer"][0]
    chosen = [int(np.argmax(peak[:n2])), n2 + int(np.argsort(-peak[n2:])[0]),
              n2 + int(np.argsort(-peak[n2:])[5])]
    rng = np.random.default_rng(0)
    act = acts[:, chosen]
    amp = np.column_stack([(act - act.mean(0)) / act.std(0) + rng.normal(size=(N, 3)),
                           rng.normal(size=(N, 12))])
    a = classification_image(SPEC, c, amp, targets=[f"v{i}" for i in range(15)],
                             observer="voxel", progress=False)
    control = diagnostic_images(SPEC, random_weights(model, seed=1), LAYERS, face, N,
                                SEED, progress=False)
    return dict(a=a, b=b, control=control, trials=(SPEC, c, amp), chosen=chosen)


def test_planted_voxels_name_their_unit_and_layer(study):
    a, b, chosen = study["a"], study["b"], study["chosen"]
    res = compare_many(a, b, trials=study["trials"], n_permutations=30, n_splits=2,
                       fit_layers=True)
    bz = b.z.reshape(b.n_targets, -1)
    for i, unit in enumerate(chosen):
        j = res.best[i]
        assert j == unit or np.corrcoef(bz[j], bz[unit])[0, 1] > 0.9
        assert res.layers[res.preferred_layer[i]] == b.targets[unit].split(":")[0]
        assert res.scored[i] and res.p_best[i] == pytest.approx(1 / 31)
        assert res.best_r[i] > 0.9
    assert res.layers == LAYERS
    assert res.scored[3:].sum() <= 2                   # null voxels: mostly not scored
    assert np.isfinite(res.layer_fit_r[:3]).all() and (res.layer_fit_r[:3] > 0.8).all()


def test_random_weights_network_scores_below_the_trained_one(study):
    a, b, control = study["a"], study["b"], study["control"]
    trained = compare_many(a, b)
    floor = compare_many(a, control)
    assert (floor.best_r[:3] < trained.best_r[:3] - 0.05).all()
    tab = roi_table(trained, control=floor)           # one row per voxel here
    for i, unit in enumerate(study["chosen"]):        # the planted unit's own layer
        layer = study["b"].targets[unit].split(":")[0]
        assert tab[f"mean_r_{layer}"][i] > tab[f"control_mean_r_{layer}"][i] + 0.05
