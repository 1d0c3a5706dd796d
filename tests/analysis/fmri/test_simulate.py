"""The simulator replays a scanner session's schedule: runs, onsets, durations, TR."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis import TrialTable
from analysis.fmri.glm import event_regressors, frame_times, hrf_kernels
from analysis.fmri.inputs import find_bids, load_study, read_regions
from analysis.fmri.simulate import REGIONS, is_scanner_table, simulate_study
from tests.analysis.fmri.conftest import _session

nib = pytest.importorskip("nibabel")

TR = 1.5
RUNS = (1, 3)                  # run 2 was stopped before its first trigger: no trials
VOLUMES = {1: 80, 3: 20}       # run 3's recorded volumes are too few for its trials


def _scanner_session(folder, n_trials=40, *, tr=TR):
    """A session CSV with the scanner columns (run, planned_onset, duration), irregular
    onsets, and a sidecar recording the TR and each run's volumes."""
    csv = _session(folder, n_trials)
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    rng = np.random.default_rng(7)
    half = n_trials // 2
    onsets, planned = [], []
    for _ in RUNS:
        p = 8.0 + np.concatenate([[0.0], np.cumsum(rng.uniform(4.0, 8.0, half - 1))])
        planned.append(p)
        onsets.append(p + rng.uniform(0.0, 0.03, half))          # flips a little late
    frame["onset"] = [f"{x:.6f}" for x in np.concatenate(onsets)]
    frame["run"] = [str(r) for r in np.repeat(RUNS, half)]
    frame["planned_onset"] = [f"{x:.3f}" for x in np.concatenate(planned)]
    frame["duration"] = [f"{x:.6f}" for x in rng.uniform(0.45, 0.55, n_trials)]
    frame.to_csv(csv, index=False)
    side = csv.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["config"]["scanner"] = {"enabled": True, "tr": tr}
    meta["scanner_runs"] = [{"run": r, "status": "completed", "n_volumes": VOLUMES[r]}
                            for r in RUNS] + [{"run": 2, "status": "not_started"}]
    side.write_text(json.dumps(meta))
    return csv


@pytest.fixture(scope="module")
def scanner_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("scanner")
    table = TrialTable.read(_scanner_session(root / "data"))
    sim = simulate_study(table, root / "bids", shape=(8, 9, 8), seed=2, noise_sd=0.05,
                         trial_sd=0.0, gain=0.0)
    return table, sim


def test_a_scanner_session_is_replayed_as_recorded(scanner_study):
    table, sim = scanner_study
    assert is_scanner_table(table) and sim.schedule == "scanner session"
    assert [p.name for p in sim.bold] == [f"sub-01_task-bubbles_run-{r}_bold.nii.gz"
                                          for r in RUNS]
    data = table.data
    for run, bold, events in zip(RUNS, sim.bold, sim.events):
        img = nib.load(str(bold))
        assert img.header.get_zooms()[3] == pytest.approx(TR)
        assert json.loads(bold.with_name(bold.name.replace(".nii.gz", ".json"))
                          .read_text())["RepetitionTime"] == TR
        ev = pd.read_csv(events, sep="\t")
        rows = data[data["run"] == run]
        assert ev["trial_type"].eq("face").all()                 # no instructions event
        assert ev["trial"].tolist() == rows["trial"].tolist()
        assert ev["onset"].tolist() == rows["onset"].tolist()    # recorded, not planned
        assert ev["duration"].tolist() == rows["duration"].tolist()
        last_end = (rows["onset"] + rows["duration"]).max()
        # run 1: the 80 volumes recorded; run 3: its 20 are extended to hold its events
        expected = max(VOLUMES[run], int(np.floor(last_end / TR)) + 1)
        assert img.shape[3] == expected
        assert img.shape[3] * TR >= last_end
    assert nib.load(str(sim.bold[1])).shape[3] > VOLUMES[3]
    truth = json.loads(sim.truth.read_text())
    assert truth["schedule"] == "scanner session" and truth["t_r"] == TR
    assert [r["run"] for r in truth["runs"]] == list(RUNS) and truth["soa_s"] is None


def test_the_bold_follows_the_recorded_onsets(scanner_study):
    """Every brain voxel responds 1 % per trial (gain 0, no trial noise): the brain's
    mean series matches the regressor of the recorded onsets, not of onsets 3 s off."""
    table, sim = scanner_study
    mask = np.asarray(nib.load(str(sim.mask)).dataobj) > 0
    kernel = hrf_kernels("glover", TR)[0]
    rows = table.data[table.data["run"] == 1]
    y = np.asarray(nib.load(str(sim.bold[0])).dataobj)[mask].mean(axis=0)
    times = frame_times(len(y), TR)

    def r(shift):
        x = event_regressors(rows["onset"] + shift, rows["duration"], times, kernel)
        return np.corrcoef(x.sum(axis=1), y)[0, 1]

    assert r(0.0) > 0.8            # 0.90 here (voxel HRFs vary, drift, noise)
    assert r(0.0) > r(3.0) + 0.3 and r(0.0) > r(-3.0) + 0.3


def test_the_analysis_reads_the_replayed_study(scanner_study):
    table, sim = scanner_study
    found = find_bids(sim.root, "01", "bubbles")
    assert found["trials"] is not None
    study = load_study(found["bold"], found["events"], found["trials"],
                       mask=found["mask"], confounds=found["confounds"])
    names, masks = read_regions(sim.regions, study)
    assert names == list(REGIONS.values())
    labels = np.asarray(nib.load(str(sim.labels)).dataobj)[study.mask]
    for k, m in zip(REGIONS, masks):
        assert np.array_equal(m, labels == k)


def test_options_of_a_simulated_schedule_are_ignored_with_a_warning(tmp_path):
    table = TrialTable.read(_scanner_session(tmp_path / "data", 20))
    with pytest.warns(UserWarning, match=r"n_runs=4, t_r=2\.0, soa=\(3, 6\) ignored: .* "
                                         r"is a scanner session, replayed as recorded "
                                         r"\(2 run\(s\), TR 1\.5 s"):
        sim = simulate_study(table, tmp_path / "bids", n_runs=4, t_r=2.0, soa=(3, 6),
                             shape=(6, 6, 6))
    assert len(sim.bold) == 2
    # values that agree with the session say nothing
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        simulate_study(table, tmp_path / "bids2", n_runs=2, t_r=1.5, shape=(6, 6, 6))


def test_a_scanner_session_without_its_tr_or_with_a_blank_onset_is_refused(tmp_path):
    csv = _scanner_session(tmp_path / "a", 20)
    side = csv.with_suffix(".json")
    meta = json.loads(side.read_text())
    del meta["config"]["scanner"]["tr"]
    side.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"records no TR \(its sidecar's "
                                         r"config\.scanner\.tr\), got None"):
        simulate_study(TrialTable.read(csv), tmp_path / "bids", shape=(6, 6, 6))
    assert not (tmp_path / "bids").exists()
    csv = _scanner_session(tmp_path / "b", 20)
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    frame.loc[5, "onset"] = ""
    frame.to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"no number in column 'onset' for trial 5"):
        simulate_study(TrialTable.read(csv), tmp_path / "bids", shape=(6, 6, 6))


def test_a_behavioural_session_keeps_its_simulated_schedule(tmp_path):
    table = TrialTable.read(_session(tmp_path / "data", 30))
    assert not is_scanner_table(table)
    sim = simulate_study(table, tmp_path / "bids", n_runs=3, t_r=2.5, shape=(6, 6, 6),
                         seed=1)
    assert sim.schedule == "simulated" and len(sim.bold) == 3
    for bold, events in zip(sim.bold, sim.events):
        ev = pd.read_csv(events, sep="\t")
        assert ev["trial_type"].iloc[0] == "instructions" and ev["onset"].iloc[0] == 0
        soa = np.diff(ev["onset"].iloc[1:])
        assert ev["onset"].iloc[1] == 6.0 and soa.min() >= 3.0 and soa.max() <= 6.0
        n_scans = nib.load(str(bold)).shape[3]
        assert n_scans == int(np.ceil((ev["onset"].iloc[-1] + 24.0) / 2.5))
    assert json.loads(sim.truth.read_text())["soa_s"] == [3.0, 6.0]
