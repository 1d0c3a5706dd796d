"""Shared seeded fixtures: specs, centres, session files written as experiments writes
them, the embedded Stat4Ci data."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import bubbles_data
from bubbles import BubbleSpec, sample_centers


CSV_COLUMNS = ["participant", "session", "trial", "block", "stimulus_id", "identity",
               "expression", "key", "response", "correct", "rt", "n_bubbles",
               "quest_intensity", "quest_mean", "quest_sd", "mask_seed", "mask_index",
               "frames_shown", "dropped_frames", "onset", "psychopyVersion", "frameRate",
               "expName", "date"]


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def small_spec():
    return BubbleSpec(shape=(32, 32), sigma=3.0, n_bubbles=5)


@pytest.fixture
def small_centers(small_spec):
    return sample_centers(small_spec, 7, 400)


@pytest.fixture
def stat4ci_dir():
    """The embedded Stat4Ci demo files (data/stat4ci, installed with the package)."""
    return bubbles_data.path("stat4ci/GenderFG.tiff").parent


def write_session(folder, spec, n_trials=60, *, seed=11, counts=None, rng_seed=0,
                  stem="P01_faces_2026-11-26_0900"):
    """Write a session as experiments does (CSV + centres JSONL + sidecar); return the
    CSV path. ``counts``: bubbles per trial (QUEST-like variation by default)."""
    rng = np.random.default_rng(rng_seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / stem
    if counts is None:
        counts = rng.integers(max(spec.n_bands, 3), 9, size=n_trials) * spec.n_bands
    sidecar = {"format": "bubbles.session", "version": 1, "config": {"seed": seed},
               "spec": spec.to_dict(), "seed": seed, "key_mapping": {"happy": "f"},
               "versions": {"bubbles": "0.1.0"}, "monitor": {}, "expName": "faces",
               "participant": "P01"}
    Path(str(stem) + ".json").write_text(json.dumps(sidecar))
    with open(str(stem) + ".csv", "w", newline="") as fh, \
            open(str(stem) + "_centers.jsonl", "w") as fc:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for t in range(n_trials):
            k = int(counts[t])
            c = sample_centers(spec.replace(n_bubbles=k), seed, [t])
            bands = c if spec.multiscale else [c]
            correct = int(rng.random() < 0.75)
            row = {"participant": "P01", "session": 1, "trial": t, "block": "main",
                   "stimulus_id": f"id{t % 4:02d}_happy", "identity": t % 4,
                   "expression": "happy", "key": "f", "response": "happy",
                   "correct": correct, "rt": round(0.4 + rng.random(), 4),
                   "n_bubbles": k, "quest_intensity": np.log10(k), "quest_mean": 1.0,
                   "quest_sd": 0.3, "mask_seed": seed, "mask_index": t,
                   "frames_shown": 30, "dropped_frames": 0, "onset": 1.5 * t,
                   "psychopyVersion": "2026.2.5", "frameRate": 60.0, "expName": "faces",
                   "date": "2026-11-26_0900"}
            w.writerow([row[col] for col in CSV_COLUMNS])
            fc.write(json.dumps({"trial": t, "mask_seed": seed, "mask_index": t,
                                 "centers": [b[0].tolist() for b in bands]}) + "\n")
    return Path(str(stem) + ".csv")


@pytest.fixture
def session_csv(tmp_path):
    spec = BubbleSpec(shape=(32, 32), sigma=3.0, n_bubbles=6)
    return write_session(tmp_path / "data", spec)


@pytest.fixture
def make_session():
    """The session writer, for tests that need their own variations."""
    return write_session
