"""TrialTable.read of an adaptive session (sidecar "sampling"): centres replayed from the
seed and the responses, weighted centre maps, and ``analyze_session`` corrected (exact
per-block z for the tests); uniform sessions analyse exactly as before."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from analysis import TrialTable, classification_image
from analysis.adaptive import (AdaptivePolicy, AdaptiveSampler, adaptive_image,
                               load_densities, save_densities, weighted_center_maps)
from analysis.analyze import analyze_session
from bubbles import BubbleSpec, center_maps, render_masks

COLUMNS = ["participant", "session", "trial", "block", "stimulus_id", "identity",
           "expression", "key", "response", "correct", "rt", "n_bubbles",
           "quest_intensity", "quest_mean", "quest_sd", "mask_seed", "mask_index",
           "frames_shown", "dropped_frames", "onset", "psychopyVersion", "frameRate",
           "expName", "date"]
SEED = 21


def _observer(spec):
    """Correct when the masks reveal the top-left corner (plus noise), as 0/1."""
    rng = np.random.default_rng(3)

    def respond(centers, trials):
        m = render_masks(spec, centers)
        signal = m[..., :10, :10].reshape(len(m), -1).mean(axis=1)
        return (signal + 0.05 * rng.standard_normal(len(m)) > 0.08).astype(float)
    return respond


def write_adaptive(folder, spec, n_trials=60, *, policy=None, stem="A01_faces_2026-12-03"):
    """An adaptive session's files as experiments writes them; returns (csv, run)."""
    policy = policy or AdaptivePolicy(update_every=20, floor=0.5)
    counts = np.random.default_rng(0).integers(4, 9, size=n_trials)
    sampler, respond = AdaptiveSampler(spec, SEED, policy), _observer(spec)
    for t in range(n_trials):             # trial by trial, as the session draws them
        sampler.tell(t, respond(sampler.centers(t, int(counts[t])), [t])[0])
    run = sampler.run()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / stem
    save_densities(f"{stem}_densities.npz", run.densities, policy)
    sidecar = {"format": "bubbles.session", "version": 1, "config": {"seed": 1},
               "spec": spec.to_dict(), "seed": 1, "key_mapping": {"happy": "f"},
               "versions": {}, "monitor": {}, "expName": "faces", "participant": "A01",
               "sampling": policy.to_dict(), "densities": f"{stem.name}_densities.npz"}
    Path(f"{stem}.json").write_text(json.dumps(sidecar))
    with open(f"{stem}.csv", "w", newline="") as fh, \
            open(f"{stem}_centers.jsonl", "w") as fc:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for t in range(n_trials):
            k = int(counts[t])
            row = dict.fromkeys(COLUMNS, "")
            row.update(participant="A01", session=1, trial=t, block="main",
                       stimulus_id="id00_happy", identity=0, expression="happy",
                       correct=int(run.responses[t]), rt=0.5, n_bubbles=k,
                       mask_seed=SEED, mask_index=t, frames_shown=1, dropped_frames=0,
                       onset=t, expName="faces", date="2026-12-03",
                       quest_intensity=np.log10(k), quest_mean=0.8, quest_sd=0.2,
                       key="f", response="happy", psychopyVersion="2026.2.5",
                       frameRate=60.0)
            w.writerow([row[c] for c in COLUMNS])
            fc.write(json.dumps({"trial": t, "mask_seed": SEED, "mask_index": t,
                                 "centers": [run.centers[t].tolist()]}) + "\n")
    return Path(f"{stem}.csv"), run


@pytest.fixture
def spec():
    return BubbleSpec(shape=(32, 32), sigma=3.0, n_bubbles=6)


def test_read_replays_an_adaptive_session_and_weights_its_maps(tmp_path, spec):
    path, run = write_adaptive(tmp_path, spec)
    table = TrialTable.read(path)
    assert table.adaptive and table.policy == run.policy
    assert_array_equal(table.densities, run.densities)
    assert table.densities.shape == (3, 1, 32, 32)
    for t in range(60):
        assert_array_equal(table.centers[0][t], run.centers[t])
    assert_array_equal(table.blocks(), np.arange(60) // 20)
    got = table.center_maps()
    want = weighted_center_maps(spec, run.centers, run.densities, run.blocks)
    assert_allclose(got.toarray(), want.toarray(), rtol=0, atol=0)
    # weights 1 / (N q): not the plain counts where the density left the uniform
    plain = center_maps(spec, table.center_list()).toarray()
    assert not np.allclose(got.toarray()[plain > 0], 1.0)
    assert_allclose(got.toarray()[:20], plain[:20], rtol=1e-6)   # block 0 is uniform
    # a selection keeps each row's block and density
    sel = table.select(np.arange(15, 45))
    assert_allclose(sel.center_maps().toarray(), got.toarray()[15:45], rtol=0, atol=0)
    # the recorded centres give the same table
    rec = TrialTable.read(path, centers="recorded")
    assert_allclose(rec.center_maps().toarray(), got.toarray(), rtol=0, atol=0)


def test_uniform_sessions_are_unchanged(session_csv):
    table = TrialTable.read(session_csv)
    assert not table.adaptive and table.densities is None
    assert_allclose(table.center_maps().toarray(),
                    center_maps(table.spec, table.center_list()).toarray(), atol=0)
    with pytest.raises(ValueError, match="blocks.*adaptive"):
        table.blocks()


def test_analyze_uniform_session_is_identical_to_the_centre_list(session_csv):
    table = TrialTable.read(session_csv)
    res = analyze_session(table, progress=False)
    before = classification_image(table.spec, table.center_list(),
                                  table.responses("correct"), progress=False)
    assert_allclose(res.image.z, before.z, rtol=0, atol=0)
    assert "sampling" not in res.summary
    perm = analyze_session(table, null="permutation", n_permutations=50, seed=4,
                           progress=False)
    before = classification_image(table.spec, table.center_list(),
                                  table.responses("correct"), null="permutation",
                                  n_permutations=50, seed=4, progress=False)
    assert_allclose(perm.image.z, before.z, rtol=0, atol=0)


def test_analyze_adaptive_session_tests_the_exact_z(tmp_path, spec):
    path, run = write_adaptive(tmp_path, spec)
    res = analyze_session(TrialTable.read(path), progress=False)
    exact = adaptive_image(spec, run.centers, run.responses, run.densities, run.blocks,
                           scale="exact", progress=False)
    assert_allclose(res.image.z, exact.z, rtol=1e-12, atol=1e-12)
    assert res.summary["sampling"]["z_scale"] == "exact"
    assert res.summary["sampling"]["policy"] == run.policy.to_dict()
    assert res.tests.pixel[0].threshold > 0
    # a permutation null: the weighted maps (corrected), with a warning
    perm = analyze_session(TrialTable.read(path), null="permutation", n_permutations=40,
                           progress=False)
    want = adaptive_image(spec, run.centers, run.responses, run.densities, run.blocks,
                          null="permutation", n_permutations=40, seed=0, progress=False)
    assert_allclose(perm.image.z, want.z, rtol=1e-10, atol=1e-10)
    assert perm.summary["sampling"]["z_scale"] == "map"
    assert any("exact per-block z" in w for w in perm.summary["warnings"])


def test_changed_records_are_refused_by_name(tmp_path, spec):
    path, run = write_adaptive(tmp_path, spec)
    stem = str(path)[:-4]
    dens, policy = load_densities(f"{stem}_densities.npz")
    bad = dens.copy()
    bad[2, 0, 5, 5] *= 1.5
    save_densities(f"{stem}_densities.npz", bad, policy)
    with pytest.raises(ValueError, match="recorded density of block 2 differs"):
        TrialTable.read(path)
    save_densities(f"{stem}_densities.npz", dens, policy)
    lines = path.read_text().splitlines()
    cells = lines[3].split(",")
    col = COLUMNS.index("correct")
    cells[col] = str(1 - int(cells[col]))          # a changed answer on trial 2
    path.write_text("\n".join(lines[:3] + [",".join(cells)] + lines[4:]) + "\n")
    with pytest.raises(ValueError, match="recorded density of block 1 differs"):
        TrialTable.read(path, centers="regenerate")
