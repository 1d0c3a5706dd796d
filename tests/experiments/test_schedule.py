"""The scanner schedule: truncated-exponential ITIs, onset files, run length, and the
single-trial suitability of a design (no psychopy needed)."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from experiments.schedule import (MIN_MEAN_SOA, block_schedules, draw_itis, glover_hrf,
                                  hrf_regressors, iti_values, read_onset_file,
                                  run_volumes, suitability)

SC = {"tr": 2.0, "runs": 3, "trials_per_run": 40, "stimulus_duration": 0.5,
      "response_window": 1.5, "iti_min": 3.0, "iti_mean": 4.5, "iti_max": 12.0,
      "lead_in": 10.0, "lead_out": 14.0, "volumes": 0, "dummy_volumes": 0}


@pytest.mark.parametrize("low, mean, high", [(3.0, 4.5, 12.0), (1.0, 2.0, 4.0),
                                             (2.0, 3.0, 20.0), (1.0, 2.5, 4.0)])
def test_itis_are_quantiles_of_the_truncated_exponential_with_the_asked_mean(low, mean,
                                                                              high):
    n = 199
    v = iti_values(n, iti_min=low, iti_mean=mean, iti_max=high)
    assert v.min() >= low and v.max() <= high
    assert abs(v.mean() - mean) < 1e-3                    # rounded to milliseconds
    # the values are the mid-point quantiles of one truncated exponential: their
    # empirical CDF is within 1/(2n) (+ rounding) of it everywhere
    span = high - low
    if mean < (low + high) / 2 - 1e-9:
        from scipy import optimize

        def cdf(x, s):
            return -np.expm1(-s * (x - low) / span) / -np.expm1(-s)

        def mean_of(s):      # mean of the exponential truncated to [low, high]
            lam = s / span
            return low + 1 / lam - span * np.exp(-s) / -np.expm1(-s)

        s = optimize.brentq(lambda s: mean_of(s) - mean, 1e-6, 1e4)
        u = (np.arange(n) + 0.5) / n
        assert np.max(np.abs(cdf(np.sort(v), s) - u)) < 1 / (2 * n) + 2e-3
    else:                                                  # the uniform limit
        assert_allclose(np.sort(v), low + span * (np.arange(n) + 0.5) / n, atol=1e-3)


def test_equal_bounds_give_a_constant_iti_and_bad_means_fail_by_name():
    assert_allclose(iti_values(5, iti_min=2.0, iti_mean=2.0, iti_max=2.0), 2.0)
    with pytest.raises(ValueError, match=r"iti_mean must be in \(1.0, 2.5\]"):
        iti_values(5, iti_min=1.0, iti_mean=3.0, iti_max=4.0)
    with pytest.raises(ValueError, match="iti_mean must be in"):
        iti_values(5, iti_min=1.0, iti_mean=1.0, iti_max=4.0)


def test_draws_are_seeded_permutations_of_one_set():
    a = draw_itis(30, iti_min=1.0, iti_mean=2.0, iti_max=4.0, seed=[5, 0, 11])
    b = draw_itis(30, iti_min=1.0, iti_mean=2.0, iti_max=4.0, seed=[5, 0, 11])
    c = draw_itis(30, iti_min=1.0, iti_mean=2.0, iti_max=4.0, seed=[5, 1, 11])
    assert_allclose(a, b)
    assert not np.allclose(a, c)
    assert_allclose(np.sort(a), np.sort(c))


def test_block_schedules_have_one_length_and_their_own_order():
    sched = block_schedules(SC, order_seed=123)
    assert [s.block for s in sched] == [0, 1, 2]
    slot = 1.5
    for s in sched:
        assert s.onsets[0] == SC["lead_in"]
        assert_allclose(np.diff(s.onsets), slot + s.itis, atol=1e-6)
        # the run ends lead_out after the last trial's slot, rounded up to whole TRs
        assert s.n_volumes == run_volumes(s.onsets[-1], slot, SC["lead_out"], SC["tr"])
        assert (s.n_volumes - 1) * SC["tr"] < s.onsets[-1] + slot + SC["lead_out"] \
            <= s.n_volumes * SC["tr"] + 1e-9
    assert len({s.n_volumes for s in sched}) == 1
    assert not np.allclose(sched[0].itis, sched[1].itis)
    again = block_schedules(SC, order_seed=123)
    assert all(np.array_equal(a.onsets, b.onsets) for a, b in zip(sched, again))


def test_onset_file_is_read_and_checked_line_by_line(tmp_path):
    path = tmp_path / "onsets.tsv"
    path.write_text("run\tonset\n1\t4.0\n1\t8.0\n2\t5.0\n2\t9.5\n")
    got = read_onset_file(path, runs=2, trials_per_run=2, slot=1.5)
    assert_allclose(got[0], [4.0, 8.0])
    assert_allclose(got[1], [5.0, 9.5])
    sched = block_schedules({**SC, "runs": 2, "trials_per_run": 2}, 0, got)
    assert_allclose(sched[1].itis, [4.5 - 1.5])
    path.write_text("run\tonset\n1\t4.0\n1\t5.0\n2\t5.0\n2\t9.5\n")
    with pytest.raises(ValueError, match=r"scanner.onset_file.*line 3: onset 5 s of run "
                                         r"1 comes 1 s after the one on line 2"):
        read_onset_file(path, runs=2, trials_per_run=2, slot=1.5)
    path.write_text("run\tonset\n1\t4.0\n1\t8.0\n2\t5.0\n")
    with pytest.raises(ValueError, match=r"\(2\) onsets for run 2, got 1"):
        read_onset_file(path, runs=2, trials_per_run=2, slot=1.5)
    path.write_text("run,onset\n1,4\n")
    with pytest.raises(ValueError, match="line 1 must be a header with the columns"):
        read_onset_file(path, runs=1, trials_per_run=1, slot=1.5)
    with pytest.raises(ValueError, match="does not exist"):
        read_onset_file(tmp_path / "none.tsv", runs=1, trials_per_run=1, slot=1.5)


def test_glover_hrf_is_nilearns():
    first_level = pytest.importorskip("nilearn.glm.first_level")
    tr, over = 2.0, 50
    theirs = first_level.glover_hrf(tr, over, 32.0)
    t = np.linspace(0, 32.0, len(theirs)) - tr / over     # nilearn shifts by one step
    ours = glover_hrf(t)
    assert np.corrcoef(ours, theirs)[0, 1] > 0.9999
    assert abs(np.argmax(ours) - np.argmax(theirs)) <= 1


def test_regressors_peak_about_5_s_after_each_onset():
    x = hrf_regressors([10.0, 40.0], 0.5, tr=1.0, n_volumes=80)
    assert x.shape == (80, 2)
    assert list(np.argmax(x, axis=0)) in ([15, 45], [16, 46])
    assert abs(x[:10, 0]).max() < 1e-12           # nothing before the onset


def test_suitability_warns_when_trials_come_too_close():
    def regular(soa, n=40):
        on = 10 + soa * np.arange(n)
        return on, run_volumes(on[-1], 1.5, 14.0, 2.0)

    far = suitability(*[regular(8.0)[0]], 0.5, 2.0, regular(8.0)[1])
    assert far.warnings == [] and far.mean_soa == 8.0
    assert far.lsa_vif < 1.5
    close = suitability(regular(3.0)[0], 0.5, 2.0, regular(3.0)[1])
    assert close.lsa_vif > 2 and close.mean_soa < MIN_MEAN_SOA
    assert any("below 5 s" in w for w in close.warnings)
    assert any("inflates each trial's variance" in w for w in close.warnings)
    # bursts of trials 1.6 s apart: a long mean SOA, but neighbours that cannot be told
    # apart
    on = [10.0]
    for k in range(39):
        on.append(on[-1] + (30.0 if (k + 1) % 5 == 0 else 1.6))
    on = np.array(on)
    burst = suitability(on, 0.5, 2.0, run_volumes(on[-1], 1.5, 14.0, 2.0))
    assert burst.mean_soa > MIN_MEAN_SOA
    assert burst.lsa_vif > 10 and len(burst.warnings) == 1
    # the metric itself: each trial against the sum of the others, by hand
    x = hrf_regressors(on, 0.5, 2.0, run_volumes(on[-1], 1.5, 14.0, 2.0))
    x = x - x.mean(axis=0)
    r = [np.corrcoef(x[:, i], x.sum(axis=1) - x[:, i])[0, 1] for i in range(len(on))]
    assert abs(burst.lss_correlation - np.mean(r)) < 1e-4


def test_a_longer_protocol_lengthens_the_run_to_its_volumes():
    need = block_schedules(SC, 0)[0].n_volumes
    longer = block_schedules({**SC, "volumes": need + 10}, 0)
    assert [s.n_volumes for s in longer] == [need + 10] * 3
    assert np.array_equal(longer[0].onsets, block_schedules(SC, 0)[0].onsets)
