"""The timing of a scanner session: onsets per run, run length, single-trial suitability.

Pure numpy and scipy (no psychopy), so that the schedule is known, checked and printed
before any window opens. Every time here is in seconds from a run's first counted
trigger (the first scanner trigger after the dummy volumes).

A trial takes a *slot* of ``max(stimulus_duration, response_window)`` seconds from its
onset; a jittered inter-trial interval (ITI, fixation) follows before the next onset,
so the stimulus-onset asynchrony is ``slot + ITI``. The ITIs of a run are the
``n - 1`` mid-point quantiles ``(k + 1/2) / (n - 1)`` of an exponential distribution
truncated to ``[iti_min, iti_max]`` whose rate is solved so that their mean is exactly
``iti_mean``, shuffled with a seeded generator (:func:`iti_values`,
:func:`draw_itis`): every run has the distribution's shape, the same total length
(so whether the trials fit the scanner's run is known when the configuration is
loaded) and its own seeded order. An onset file gives the onsets instead
(:func:`read_onset_file`).

:func:`suitability` rates a schedule for single-trial estimation from the regressors
that an analysis will build (boxcars convolved with the Glover HRF, sampled at the TR):
the mean correlation of each trial's regressor with the sum of the others (what the
least-squares-separate model, LSS, of Mumford et al. (2012) must tell apart), and the
mean variance inflation of the one-regressor-per-trial model (LSA). Below a mean
stimulus-onset asynchrony of about 5 s the single-trial estimators trade bias against
variance (Abdulrahman & Henson 2016), which :func:`suitability` warns about.

References
----------
Glover, G. H. (1999). Deconvolution of impulse response in event-related BOLD fMRI.
NeuroImage 9, 416-429. :doi:`10.1006/nimg.1998.0419`
Mumford, J. A., Turner, B. O., Ashby, F. G. & Poldrack, R. A. (2012). Deconvolving
BOLD activation in event-related designs for multivoxel pattern classification
analyses. NeuroImage 59, 2636-2643. :doi:`10.1016/j.neuroimage.2011.08.076`
Abdulrahman, H. & Henson, R. N. (2016). Effect of trial-to-trial variability on
optimal event-related fMRI design: implications for beta-series correlation and
multi-voxel pattern analysis. NeuroImage 125, 756-766.
:doi:`10.1016/j.neuroimage.2015.11.009`

Examples
--------
>>> import numpy as np
>>> values = iti_values(9, iti_min=2.0, iti_mean=3.0, iti_max=8.0)
>>> round(float(values.mean()), 3), float(values.min()) >= 2.0
(3.0, True)
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import optimize, signal, stats

__all__ = ["MIN_ITI", "MIN_MEAN_SOA", "MAX_LSA_VIF", "MAX_LSS_CORRELATION",
           "RunSchedule", "Suitability", "iti_values", "draw_itis", "read_onset_file",
           "trial_slot", "run_volumes", "block_schedules", "glover_hrf",
           "hrf_regressors", "suitability", "describe"]

#: Shortest inter-trial interval, s: the next stimulus is built and uploaded in it.
MIN_ITI = 0.1
#: Mean stimulus-onset asynchrony below which single-trial estimates trade bias
#: against variance (Abdulrahman & Henson 2016), s.
MIN_MEAN_SOA = 5.0
#: Mean variance inflation of the one-regressor-per-trial model above which
#: neighbouring trials are too close to be told apart.
MAX_LSA_VIF = 2.0
#: |mean correlation| of a trial's regressor with the sum of the others above which
#: LSS cannot separate the trial from the rest.
MAX_LSS_CORRELATION = 0.5


def trial_slot(stimulus_duration, response_window):
    """Seconds a trial takes from its onset: the longer of the two."""
    return max(float(stimulus_duration), float(response_window))


def _quantiles(u, low, high, s):
    """Quantiles ``u`` of the exponential truncated to [low, high] with rate s/(high-low)."""
    span = high - low
    if s < 1e-9:                                    # the uniform limit
        return low + span * u
    return low + span * (-np.log1p(-u * (-np.expm1(-s)))) / s


def iti_values(n, *, iti_min, iti_mean, iti_max, decimals=3):
    """The ``n`` ITIs of a run, sorted: mid-point quantiles of a truncated exponential.

    The rate is solved so that the mean of the values is ``iti_mean`` (a constant ITI
    when ``iti_min == iti_max``; the uniform distribution when ``iti_mean`` is the
    middle of the range). Values are rounded to ``decimals`` (milliseconds).

    Raises
    ------
    ValueError
        ``iti_mean`` outside ``[iti_min, (iti_min + iti_max) / 2]`` (a truncated
        exponential's mean lies there), or ``iti_min > iti_max``.
    """
    low, mean, high = float(iti_min), float(iti_mean), float(iti_max)
    if n <= 0:
        return np.zeros(0)
    if low > high:
        raise ValueError(f"iti_min must be <= iti_max, got {low} > {high}")
    if high - low < 1e-12:
        if abs(mean - low) > 1e-9:
            raise ValueError(f"iti_mean must equal iti_min and iti_max when they are "
                             f"equal ({low}), got {mean}")
        return np.full(n, round(low, decimals))
    mid = (low + high) / 2
    if not low < mean <= mid + 1e-12:
        raise ValueError(f"iti_mean must be in ({low}, {mid}] (a truncated exponential "
                         f"on [{low}, {high}] has its mean there), got {mean}")
    u = (np.arange(n) + 0.5) / n

    def excess(s):
        return _quantiles(u, low, high, s).mean() - mean

    if excess(1e-9) <= 0:
        s = 0.0
    elif excess(1e4) >= 0:
        s = 1e4
    else:
        s = optimize.brentq(excess, 1e-9, 1e4, xtol=1e-12)
    return np.round(_quantiles(u, low, high, s), decimals)


def draw_itis(n, *, iti_min, iti_mean, iti_max, seed):
    """:func:`iti_values` in a seeded random order (``seed``: int or sequence)."""
    values = iti_values(n, iti_min=iti_min, iti_mean=iti_mean, iti_max=iti_max)
    return np.random.default_rng(seed).permutation(values)


def run_volumes(last_onset, slot, lead_out, tr):
    """Volumes a run needs after the dummies: to the end of the last trial's slot plus
    ``lead_out`` seconds, rounded up to whole TRs."""
    return int(math.ceil((float(last_onset) + slot + lead_out) / tr - 1e-9))


@dataclass
class RunSchedule:
    """The planned timing of one block of trials (one scanner run).

    Attributes
    ----------
    block : int
        Which block of the trial plan (0-based); a run plays one block.
    onsets : ndarray
        Planned onsets, s from the run's first counted trigger.
    itis : ndarray
        The ITIs between consecutive trials (``len(onsets) - 1``), s.
    n_volumes : int
        Volumes the run lasts after the dummies.
    """

    block: int
    onsets: np.ndarray
    itis: np.ndarray
    n_volumes: int

    def to_dict(self):
        return {"block": self.block, "onsets": [round(float(x), 6) for x in self.onsets],
                "itis": [round(float(x), 6) for x in self.itis],
                "n_volumes": self.n_volumes}

    @classmethod
    def from_dict(cls, d):
        return cls(int(d["block"]), np.asarray(d["onsets"], float),
                   np.asarray(d["itis"], float), int(d["n_volumes"]))


def read_onset_file(path, *, runs, trials_per_run, slot, key="scanner.onset_file"):
    """Onsets per run from a TSV (or ``.csv``) file with columns ``run`` and ``onset``.

    ``run`` numbers the blocks 1, 2, ... ``runs``; ``onset`` is in seconds from the
    run's first counted trigger. Each run must have ``trials_per_run`` onsets, >= 0,
    increasing, each at least ``slot + MIN_ITI`` after the one before.

    Returns
    -------
    list of ndarray
        One array of onsets per run, in run order.

    Raises
    ------
    ValueError
        Naming ``key``, the file, the line and what was expected.
    """
    path = Path(path)
    where = f"config key {key!r}: {str(path)!r}"
    if not path.is_file():
        raise ValueError(f"{where} does not exist")
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter=delimiter))
    if not rows or not {"run", "onset"} <= {c.strip() for c in rows[0]}:
        raise ValueError(f"{where} line 1 must be a header with the columns 'run' and "
                         f"'onset' ({'tab' if delimiter == chr(9) else 'comma'}-"
                         f"separated), got {rows[0] if rows else 'an empty file'}")
    header = [c.strip() for c in rows[0]]
    i_run, i_onset = header.index("run"), header.index("onset")
    per_run = {}
    for line, values in enumerate(rows[1:], start=2):
        if not any(v.strip() for v in values):
            continue
        try:
            run, onset = int(values[i_run]), float(values[i_onset])
        except (ValueError, IndexError):
            raise ValueError(f"{where} line {line} must have a whole run number and an "
                             f"onset in seconds, got {values}") from None
        if not 1 <= run <= runs:
            raise ValueError(f"{where} line {line}: run must be in [1, {runs}] "
                             f"(scanner.runs), got {run}")
        if not (math.isfinite(onset) and onset >= 0):
            raise ValueError(f"{where} line {line}: onset must be a number of seconds "
                             f">= 0, got {values[i_onset]!r}")
        prev = per_run.get(run, [])
        if prev and onset < prev[-1][0] + slot + MIN_ITI - 1e-9:
            raise ValueError(f"{where} line {line}: onset {onset:g} s of run {run} "
                             f"comes {onset - prev[-1][0]:g} s after the one on line "
                             f"{prev[-1][1]}; a trial takes {slot:g} s (the longer of "
                             f"scanner.stimulus_duration and scanner.response_window) "
                             f"and the next stimulus needs at least {MIN_ITI:g} s to be "
                             f"built")
        per_run.setdefault(run, []).append((onset, line))
    out = []
    for run in range(1, runs + 1):
        got = len(per_run.get(run, []))
        if got != trials_per_run:
            raise ValueError(f"{where} must give scanner.trials_per_run "
                             f"({trials_per_run}) onsets for run {run}, got {got}")
        out.append(np.array([o for o, _ in per_run[run]]))
    return out


def block_schedules(scanner, order_seed, onsets=None):
    """The :class:`RunSchedule` of every block of a scanner configuration.

    A run lasts the volumes its trials need (:func:`run_volumes`), or
    ``scanner.volumes`` when that is longer (fixation to the end of the acquisition).

    Parameters
    ----------
    scanner : dict
        The validated ``[scanner]`` table.
    order_seed : int
        The session's order seed: block b's ITI order is seeded with
        ``(order_seed, b)``.
    onsets : list of ndarray, optional
        Onsets read from ``scanner.onset_file`` (:func:`read_onset_file`); None draws
        the ITIs.
    """
    sc = scanner
    slot = trial_slot(sc["stimulus_duration"], sc["response_window"])
    n = sc["trials_per_run"]
    out = []
    for b in range(sc["runs"]):
        if onsets is not None:
            on = np.asarray(onsets[b], float)
            itis = np.diff(on) - slot
        else:
            itis = draw_itis(n - 1, iti_min=sc["iti_min"], iti_mean=sc["iti_mean"],
                             iti_max=sc["iti_max"], seed=[int(order_seed), b, 11])
            on = sc["lead_in"] + np.concatenate([[0.0], np.cumsum(slot + itis)])
            on = np.round(on, 6)
        n_vol = max(run_volumes(on[-1], slot, sc["lead_out"], sc["tr"]),
                    sc.get("volumes") or 0)    # the protocol's length, when longer
        out.append(RunSchedule(b, on, np.round(itis, 6), n_vol))
    return out


# -- single-trial suitability -----------------------------------------------------------
def glover_hrf(t):
    """The Glover (1999) haemodynamic response at times ``t`` (s), peak-normalised.

    The difference of two gamma densities with the parameters nilearn's ``glover_hrf``
    uses (peak delay 6 s, undershoot 12 s, dispersions 0.9, undershoot ratio 0.48 since
    nilearn 0.11), written out so that the schedule can be rated without nilearn.
    """
    t = np.asarray(t, float)
    h = (stats.gamma.pdf(t, 6.0 / 0.9, scale=0.9)
         - 0.48 * stats.gamma.pdf(t, 12.0 / 0.9, scale=0.9))
    return h / np.max(h)


def hrf_regressors(onsets, duration, tr, n_volumes, *, oversampling=16):
    """One regressor per trial: a boxcar of ``duration`` s at each onset convolved with
    :func:`glover_hrf`, sampled at the volume times ``0, tr, 2 tr, ...``.

    Returns
    -------
    ndarray, shape (n_volumes, n_trials)
    """
    dt = tr / oversampling
    n_fine = int(n_volumes) * oversampling
    onsets = np.asarray(onsets, float)
    box = np.zeros((n_fine, len(onsets)))
    for j, o in enumerate(onsets):
        a = int(round(o / dt))
        b = max(a + 1, int(round((o + duration) / dt)))
        box[a:min(b, n_fine), j] = 1.0
    kernel = glover_hrf(np.arange(0.0, 32.0, dt))
    conv = signal.fftconvolve(box, kernel[:, None], axes=0)[:n_fine]
    return conv[::oversampling]


@dataclass
class Suitability:
    """How well a schedule suits single-trial estimation (see the module docstring).

    Attributes
    ----------
    lss_correlation : float
        Mean over trials of the correlation of a trial's regressor with the sum of the
        others, at the volume times.
    lsa_vif : float
        Mean variance inflation factor of the one-regressor-per-trial design (1: the
        trials do not overlap; inf: they cannot be separated).
    mean_soa, min_soa : float
        Stimulus-onset asynchrony, s.
    warnings : list of str
        Why the trials are too close, if they are.
    """

    lss_correlation: float
    lsa_vif: float
    mean_soa: float
    min_soa: float
    warnings: list = field(default_factory=list)

    def to_dict(self):
        return {"lss_correlation": self.lss_correlation, "lsa_vif": self.lsa_vif,
                "mean_soa": self.mean_soa, "min_soa": self.min_soa,
                "warnings": list(self.warnings)}


def suitability(onsets, duration, tr, n_volumes):
    """Rate one run's schedule for single-trial estimation at this TR.

    Parameters
    ----------
    onsets : array_like
        Planned onsets, s from the first counted trigger.
    duration : float
        Stimulus duration, s.
    tr : float
        Repetition time, s.
    n_volumes : int
        Volumes of the run.

    Returns
    -------
    Suitability
    """
    onsets = np.asarray(onsets, float)
    soa = np.diff(onsets)
    mean_soa = float(soa.mean()) if soa.size else math.inf
    min_soa = float(soa.min()) if soa.size else math.inf
    if len(onsets) < 2:
        return Suitability(0.0, 1.0, mean_soa, min_soa, [])
    x = hrf_regressors(onsets, duration, tr, n_volumes)
    x = x - x.mean(axis=0)
    others = x.sum(axis=1, keepdims=True) - x
    num = (x * others).sum(axis=0)
    den = np.sqrt((x * x).sum(axis=0) * (others * others).sum(axis=0))
    r = float(np.mean(num / np.where(den > 0, den, np.inf)))
    corr = np.corrcoef(x.T)
    if len(onsets) >= n_volumes or np.linalg.cond(corr) > 1e10:
        vif = math.inf
    else:
        vif = float(np.mean(np.diag(np.linalg.inv(corr))))
    warnings = []
    if mean_soa < MIN_MEAN_SOA:
        warnings.append(f"the mean stimulus-onset asynchrony is {mean_soa:.2f} s, below "
                        f"{MIN_MEAN_SOA:g} s, where single-trial estimates trade bias "
                        f"against variance (Abdulrahman & Henson 2016)")
    if vif > MAX_LSA_VIF:
        warnings.append(f"neighbouring trials overlap: the one-regressor-per-trial "
                        f"model inflates each trial's variance {vif:.2f} times (above "
                        f"{MAX_LSA_VIF:g})")
    if abs(r) > MAX_LSS_CORRELATION:
        warnings.append(f"a trial's regressor correlates {r:.2f} with the sum of the "
                        f"others (beyond +-{MAX_LSS_CORRELATION:g})")
    return Suitability(round(r, 4), round(vif, 4) if math.isfinite(vif) else vif,
                       round(mean_soa, 4), round(min_soa, 4), warnings)


def describe(schedules, scanner):
    """Lines printed at the start of a scanner session: run length and suitability.

    Returns
    -------
    (list of str, list of str, dict)
        The lines, the warnings (trials too close) and a dict for the sidecar.
    """
    sc = scanner
    tr, dummies = sc["tr"], sc["dummy_volumes"]
    vols = sorted({s.n_volumes for s in schedules})
    rated = [suitability(s.onsets, sc["stimulus_duration"], tr, s.n_volumes)
             for s in schedules]
    worst = max(rated, key=lambda q: (len(q.warnings), q.lsa_vif))
    lines = [f"scanner: {len(schedules)} run(s) of {sc['trials_per_run']} trials, TR "
             f"{tr:g} s; each run lasts {'/'.join(map(str, vols))} volumes "
             f"({vols[-1] * tr:g} s) after {dummies} dummy volume(s): program the "
             f"scanner for {vols[-1] + dummies} volumes per run"]
    if sc["volumes"]:
        lines[0] += f" (scanner.volumes = {sc['volumes']})"
    soa = np.mean([q.mean_soa for q in rated])
    r = np.mean([q.lss_correlation for q in rated])
    vif = np.mean([q.lsa_vif for q in rated])
    lines.append(f"single-trial design: mean SOA {soa:.2f} s (shortest "
                 f"{min(q.min_soa for q in rated):.2f} s); correlation of a trial's "
                 f"regressor with the sum of the others {r:+.3f} (mean over trials and "
                 f"runs; LSS, Mumford et al. 2012); variance inflation of one regressor "
                 f"per trial (LSA) {vif:.2f}")
    info = {"n_volumes": [s.n_volumes for s in schedules],
            "suitability": [q.to_dict() for q in rated]}
    return lines, list(worst.warnings), info
