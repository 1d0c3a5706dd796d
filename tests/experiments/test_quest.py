"""QUEST on log10(n_bubbles): holds a simulated observer near 75% correct.

The long run uses the *headless* presenter: the same Session loop (trial plan, stimulus
building, QUEST, responder, data files), with drawing replaced by handing the responder
the 8-bit-quantised image. The window path is covered by test_session.py.
"""

import csv
import math

import numpy as np
import pytest

from bubbles.faces import face_set
from experiments.responders import ScriptedResponder, TemplateResponder
from experiments.session import Session, make_quest


@pytest.fixture
def no_fsync(monkeypatch):
    """Skip fsync in the long simulated runs (2 fsyncs per trial dominate their time);
    crash safety is tested in test_datafile.py and test_resume.py."""
    monkeypatch.setattr("experiments.datafile.os.fsync", lambda fd: None)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_quest_holds_a_template_observer_near_75_percent(make_cfg, tmp_path, no_fsync):
    # Single-scale masks: with few bubbles the observer falls to chance (multi-scale
    # always shows the low-pass residual, which alone gives ~70% correct here).
    faces = face_set(6, size=64)
    cfg = make_cfg(trials__practice=0, trials__main=240, trials__break_every=0,
                   quest__start=30, bubbles__n_bubbles=30, bubbles__bands=0)
    late_correct = []
    for seed in (5, 6, 7):
        observer = TemplateResponder.from_stimuli(faces, faces.expressions,
                                                  internal_noise=0.3, seed=seed)
        result = Session(cfg, f"Q{seed}", data_dir=tmp_path, responder=observer,
                         presenter="headless", stimuli=faces).run()
        rows = _rows(f"{result.stem}.csv")
        assert len(rows) == 240
        late = rows[120:]
        late_correct += [int(r["correct"]) for r in late]
        # QUEST settled: the count varies around a threshold well inside its bounds
        threshold = 10 ** float(rows[-1]["quest_mean"])
        n = np.array([int(r["n_bubbles"]) for r in late])
        assert 8 < threshold < 60 and 8 < np.median(n) < 60, (threshold, np.median(n))
        assert np.std(np.log10(n)) < 0.15
        assert float(rows[-1]["quest_sd"]) < float(rows[0]["quest_sd"])
    # the observer's psychometric function is shallow (about 65% at 15 bubbles, 80% at
    # 30), so one run's accuracy wanders by several percent around the target
    accuracy = np.mean(late_correct)
    assert 0.68 <= accuracy <= 0.85, accuracy


def test_replaying_recorded_trials_rebuilds_quest(fast_cfg):
    live = make_quest(fast_cfg, 3, 30)
    replay = make_quest(fast_cfg, 3, 30)
    rng = np.random.default_rng(0)
    record = []
    for _ in range(20):
        log_n = next(live)
        n = int(np.clip(round(10 ** log_n), 1, 200))
        correct = int(rng.random() < 0.7)
        live.addResponse(correct, intensity=math.log10(n))
        record.append((correct, math.log10(n)))
    for correct, intensity in record:
        next(replay)
        replay.addResponse(correct, intensity=intensity)
    assert replay.mean() == pytest.approx(live.mean(), abs=1e-12)
    assert replay.sd() == pytest.approx(live.sd(), abs=1e-12)
    assert next(replay) == pytest.approx(next(live), abs=1e-12)


def test_quest_parameters_follow_the_config(make_cfg):
    q = make_quest(make_cfg(quest__beta=3.0, quest__delta=0.02), 3, 10)
    assert q.gamma == pytest.approx(1 / 3)
    assert (q.beta, q.delta, q.pThreshold) == (3.0, 0.02, 0.75)
    q = make_quest(make_cfg(quest__gamma=0.25), 3, 10)
    assert q.gamma == 0.25


def test_headless_session_runs_the_same_loop(fast_cfg, tmp_path):
    result = Session(fast_cfg, "H01", data_dir=tmp_path, presenter="headless",
                     responder=ScriptedResponder.random(3)).run()
    assert result.completed and len(_rows(f"{result.stem}.csv")) == 8
    with pytest.raises(ValueError, match=r"presenter must be 'window' or 'headless'"):
        Session(fast_cfg, "H02", data_dir=tmp_path, presenter="paper",
                responder=ScriptedResponder.random(3)).run()


class WeibullObserver(ScriptedResponder):
    """Correct with QUEST's own psychometric function of log10(n_bubbles shown).

    The 75%-correct point is at ``threshold`` bubbles (3 choices, beta 3.5, delta .01;
    the Weibull function of Watson & Pelli, 1983, Perception & Psychophysics 33,
    113-120, doi:10.3758/BF03202828). It reads the trial's image and bubble count
    from what the session hands every responder before it answers
    (``begin_trial(prepared)``), so it tests the QUEST wiring, not vision.
    """

    stimuli = None  # the session's stimulus set (for the correct answer)

    def __init__(self, threshold, seed, beta=3.5, gamma=1 / 3, delta=0.01):
        super().__init__(self._answer)
        self.rng = np.random.default_rng(seed)
        def p(x):
            return delta * gamma + (1 - delta) * (1 - (1 - gamma)
                                                  * np.exp(-10 ** (beta * x)))
        grid = np.linspace(-1, 1, 200001)
        self.shift = grid[np.argmin(np.abs(p(grid) - 0.75))]   # p(shift) = 0.75
        self.p, self.log_t = p, math.log10(threshold)

    def begin_trial(self, prepared):
        self.prepared = prepared

    def _answer(self, stimulus, choices, n):
        prepared = self.prepared
        truth = self.stimuli.table["expression"].iloc[prepared.stim_index]
        x = math.log10(prepared.spec.total_bubbles) - self.log_t + self.shift
        if self.rng.random() < self.p(x):
            return truth
        return str(self.rng.choice([c for c in choices if c != truth]))


def test_quest_converges_on_a_matching_observer(make_cfg, tmp_path, small_faces,
                                                no_fsync):
    cfg = make_cfg(trials__practice=0, trials__main=120, trials__break_every=0,
                   quest__start=20, quest__start_sd=0.5, quest__max_bubbles=400,
                   bubbles__n_bubbles=20, bubbles__bands=0)
    estimates, late = [], []
    for seed in range(6):
        observer = WeibullObserver(threshold=40, seed=seed)
        observer.stimuli = small_faces
        session = Session(cfg, f"W{seed}", data_dir=tmp_path, presenter="headless",
                          stimuli=small_faces, responder=observer)
        rows = _rows(f"{session.run().stem}.csv")
        estimates.append(10 ** float(rows[-1]["quest_mean"]))
        late += [int(r["correct"]) for r in rows[60:]]
    # a simulation of this set-up gave a median estimate of 40.2 bubbles and 75.2%
    # correct late in the run
    assert 35 < np.median(estimates) < 46, estimates
    assert 0.70 <= np.mean(late) <= 0.81, np.mean(late)
