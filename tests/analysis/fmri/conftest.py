"""Shared simulated fMRI studies (built once per test session) and helpers."""

import json

import numpy as np
import pytest

from analysis import TrialTable
from bubbles import BubbleSpec

pytest.importorskip("nibabel")
pytest.importorskip("nilearn")

from analysis.fmri.simulate import simulate_study  # noqa: E402
from tests.conftest import write_session  # noqa: E402


def _session(folder, n_trials, *, counts=10, seed=11, faces=True):
    """A 64 x 64 session with a fixed number of bubbles (as in the scanner); with
    ``faces`` its sidecar names the embedded faces it showed (id00..id03, happy)."""
    spec = BubbleSpec(shape=(64, 64), sigma=4.0, n_bubbles=10)
    csv = write_session(folder, spec, n_trials, seed=seed,
                        counts=np.full(n_trials, counts))
    if faces:
        side = csv.with_suffix(".json")
        meta = json.loads(side.read_text())
        meta["config"]["stimuli"] = {"source": "faces", "n_identities": 4, "size": 64,
                                     "expressions": ["happy"]}
        side.write_text(json.dumps(meta))
    return csv


@pytest.fixture(scope="session")
def planted(tmp_path_factory):
    """320 trials in 4 runs, 12 x 14 x 12 volume, planted eye / mouth / area voxels."""
    root = tmp_path_factory.mktemp("planted")
    table = TrialTable.read(_session(root / "data", 320))
    return simulate_study(table, root / "bids", n_runs=4, shape=(12, 14, 12), gain=1.0,
                          seed=3)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """60 trials in 2 runs, 8 x 9 x 8 volume: for input checks."""
    root = tmp_path_factory.mktemp("tiny")
    table = TrialTable.read(_session(root / "data", 60, faces=False))
    with pytest.warns(UserWarning):
        sim = simulate_study(table, root / "bids", n_runs=2, shape=(8, 9, 8), seed=5)
    return sim


@pytest.fixture
def labels_of():
    """Truth labels (0 null, 1 eyes, 2 mouth, 3 area) of a study's mask voxels."""
    def get(sim, study):
        import nibabel as nib

        return np.asarray(nib.load(str(sim.labels)).dataobj)[study.mask]
    return get
