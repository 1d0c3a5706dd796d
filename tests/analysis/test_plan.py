"""analysis.plan: cells against brute-force repeated simulation, the planted truth,
QUEST's count, seeds independent of the workers, fMRI per voxel, recommendations."""

import numpy as np
import pytest

from analysis.analyze import analyze_session
from analysis.ci import classification_image
from analysis.plan import (PlanCell, PlanResult, STIMULUS_SIZE,
                           plan_fmri, plan_study, plot_power, scan_seconds, template_truth,
                           wilson)
from analysis.simulate import TemplateObserver, label_templates, simulate_session
from bubbles import BubbleSpec, face_set

RES = 64                      # simulated faces of 64 px: sigma and noise scaled to them
F = RES / STIMULUS_SIZE


@pytest.fixture(scope="module")
def faces():
    s = face_set(20, size=RES)
    labels = list(s.table["expression"].astype(str))
    return s.images, labels, label_templates(s.images, labels)


def _brute_force(faces, sigma, n_bubbles, n_trials, reps, seed):
    """The plain way: ``reps`` independent sessions of exactly ``n_trials`` trials,
    each analysed by the library of ``bubbles analyze``; (r, pixel hit, cluster hit)."""
    images, labels, templates = faces
    truth = template_truth(images, labels, templates, 0.5, sigma * F)
    region = truth >= 0.5 * truth.max()
    spec = BubbleSpec(shape=images.shape[1:], sigma=sigma * F, n_bubbles=n_bubbles,
                      background=0.5)
    out = []
    for k in range(reps):
        observer = TemplateObserver(templates, internal_noise=F ** 2, seed=[seed, k])
        table = simulate_session(spec, images, labels, observer, n_trials,
                                 seed=seed * 1000 + k)
        res = analyze_session(table, progress=False)
        z = res.image.z
        out.append((np.corrcoef(z.ravel(), truth.ravel())[0, 1],
                    (res.tests.pixel[0].significant & region).any(),
                    (res.tests.cluster[0].significant & region).any()))
    return np.array(out, float)


def test_cell_agrees_with_brute_force_simulation(faces):
    reps = 30
    plan = plan_study([10], [10], [250], reps=reps, resolution=RES, quest_trials=0,
                      seed=3, workers=2, progress=False)
    (cell,) = plan.cells
    brute = _brute_force(faces, 10, 10, 250, reps, seed=77)
    # recovery: the means of two independent samples of the same r
    se = np.hypot(cell.recovery_sd, brute[:, 0].std(ddof=1)) / np.sqrt(reps)
    assert abs(cell.recovery - brute[:, 0].mean()) < 4 * se + 0.01
    # power: two binomial proportions of the same cell (here between 0.2 and 0.8)
    for k, test in ((1, "pixel"), (2, "cluster")):
        p1, p2 = cell.power(test), brute[:, k].mean()
        se = np.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / reps)
        assert abs(p1 - p2) <= 3 * se + 0.05, (test, p1, p2)
    assert 0.1 < cell.power("cluster") < 0.95     # a cell where power is informative
    assert 0.55 < cell.accuracy < 0.85


def test_analytic_truth_is_what_a_long_session_recovers(faces):
    images, labels, templates = faces
    spec = BubbleSpec(shape=images.shape[1:], sigma=10 * F, n_bubbles=10, background=0.5)
    observer = TemplateObserver(templates, internal_noise=F ** 2, seed=1)
    table = simulate_session(spec, images, labels, observer, 6000, seed=5)
    z = classification_image(spec, table.center_list(), table.responses("correct"),
                             progress=False).z
    truth = template_truth(images, labels, templates, 0.5, 10 * F)
    assert np.corrcoef(z.ravel(), truth.ravel())[0, 1] > 0.85


def test_cells_do_not_depend_on_workers_and_grow_with_trials():
    kw = dict(reps=4, resolution=RES, quest_trials=0, seed=11, progress=False)
    one = plan_study([10], [10, 30], [100, 400], **kw, workers=1)
    two = plan_study([10], [10, 30], [100, 400], **kw, workers=2)
    a, b = one.to_frame(), two.to_frame()
    assert a.equals(b)
    assert list(a["n_trials"]) == [100, 400, 100, 400]
    for n in (10, 30):
        sub = a[a["n_bubbles"] == n].sort_values("n_trials")
        assert sub["recovery"].iloc[1] > sub["recovery"].iloc[0]
    # more bubbles, more correct answers (the same accuracy at every trial number)
    assert a[a["n_bubbles"] == 30]["accuracy"].iloc[0] > a[a["n_bubbles"] == 10][
        "accuracy"].iloc[0]
    assert one.info["cpu_seconds"] > 0 and one.truth == "analytic"


def test_quest_count_holds_the_threshold_accuracy(faces):
    plan = plan_study([10], ["quest"], [200], reps=2, resolution=RES, quest_trials=300,
                      seed=2, workers=1, progress=False)
    q = plan.quest["10.0"]
    sweep = np.array(q["sweep"])
    lo = sweep[sweep[:, 1] < 0.75, 0].max()
    hi = sweep[np.maximum.accumulate(sweep[:, 1]) >= 0.75, 0].min()
    assert lo <= q["n_bubbles"] <= hi
    (cell,) = plan.cells
    assert cell.params["n_bubbles"] == q["n_bubbles"] and cell.params["quest"]
    # an independent session at that count is about 75 % correct
    images, labels, templates = faces
    spec = BubbleSpec(shape=images.shape[1:], sigma=10 * F, n_bubbles=q["n_bubbles"],
                      background=0.5)
    table = simulate_session(spec, images, labels, TemplateObserver(
        templates, internal_noise=F ** 2, seed=9), 1500, seed=9)
    assert abs(table.responses("correct").mean() - 0.75) < 0.07


def test_all_correct_sessions_count_as_misses():
    plan = plan_study([14], [300], [60], reps=2, resolution=RES, quest_trials=0,
                      workers=1, progress=False)
    (cell,) = plan.cells
    assert cell.extra["constant_reps"] == 2
    assert cell.power_pixel == cell.power_cluster == 0 and cell.recovery == 0


def test_fmri_plan_per_voxel():
    plan = plan_fmri(t_r=[2.0], iti=[4.0], runs=[2], snr=[0.0, 1.5], trials=[240],
                     n_voxels=100, voxels=8, reps=2, seed=1, workers=1, progress=False)
    null, strong = plan.cells
    assert null.reps == strong.reps == 16
    assert null.power_pixel <= 0.1 and abs(null.recovery) < 0.15
    assert strong.power_pixel >= 0.8 and strong.recovery > 0.6
    assert strong.extra["beta_r"] > null.extra["beta_r"]
    # 2 runs of 120 trials every 4 s, 6 s before, 20.5 s after, whole TRs
    assert strong.extra["scan_minutes"] == pytest.approx(scan_seconds(240, 2, 4.0, 2.0) / 60)
    assert scan_seconds(240, 2, 4.0, 2.0) == 2 * 504.0
    recs = plan.recommend(0.8, "pixel")
    assert [r["cell"] is None for r in recs] == [True, False]   # one per SNR
    assert "voxel SNR 1.5" in recs[1]["text"]


def _cell(n, power, rec=0.5):
    return PlanCell({"sigma": 10.0, "n_bubbles": 20, "n_trials": n, "method": "regression"},
                    20, rec, 0.1, power, power, power, power, 0.75)


def test_recommend_picks_the_fewest_trials_reaching_the_target():
    res = PlanResult("behaviour", "template", [_cell(250, 0.5), _cell(500, 0.85),
                                               _cell(1000, 0.95)], {}, "analytic")
    (rec,) = res.recommend(0.8, "cluster")
    assert rec["cell"]["n_trials"] == 500 and "power 0.85" in rec["text"]
    (none,) = res.recommend(0.99, "pixel")
    assert none["cell"] is None and none["best"]["n_trials"] == 1000
    assert wilson(17, 20) == pytest.approx((0.6396, 0.9476), abs=1e-3)
    fig = plot_power(res)
    assert len(fig.axes) == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(sigmas=[0]), "sigmas must be numbers > 0, got 0"),
    (dict(n_bubbles=[2.5]), "n_bubbles must be integers > 0, got 2.5"),
    (dict(n_bubbles=["many"]), "n_bubbles must be integers or 'quest', got 'many'"),
    (dict(trials=[]), "trials must hold at least one value"),
    (dict(methods=["glm"]), r"methods must be among \['regression'"),
    (dict(reps=1), "reps must be an integer >= 2"),
    (dict(resolution=48), r"resolution must be an integer in \[64, 256\]"),
    (dict(n_bubbles=[5000]), "n_bubbles must be at most the 4096 pixels"),
    (dict(observer="nobody"), "observer must be 'template' or a factory"),
    (dict(workers=0), "workers must be an integer >= 1"),
    (dict(n_bubbles=["quest"], quest_trials=0), "needs the accuracy sweep"),
])
def test_bad_settings_are_named(kwargs, match):
    kw = dict(sigmas=[10], n_bubbles=[10], trials=[50], reps=2, resolution=RES,
              quest_trials=0, workers=1, progress=False)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        plan_study(kw.pop("sigmas"), kw.pop("n_bubbles"), kw.pop("trials"), **kw)


def test_bad_fmri_settings_are_named():
    with pytest.raises(ValueError, match="feature must be one of"):
        plan_fmri(feature="ears", progress=False)
    with pytest.raises(ValueError, match="snr must be numbers >= 0, got -1"):
        plan_fmri(snr=[-1], progress=False)
    with pytest.raises(ValueError, match="each of the 8 runs at least 2 trials, got 10"):
        plan_fmri(runs=[8], trials=[10], progress=False)
