"""The scanner mode of the session: runs paced by the MRI scanner's triggers.

A scanner session plays the trial plan in blocks, one block per run. Each run

1. shows ``text.scanner_wait`` and waits for the scanner: ``scanner.dummy_volumes``
   triggers are let pass, the next one (the first *counted* trigger, T0) starts the
   run's clock;
2. schedules every onset in seconds from T0 (:mod:`experiments.schedule`): each
   flip is aimed at its planned time on the session's clock, never at the end of the
   trial before, so no error accumulates ("non-slip" timing); the stimulus is drawn
   ahead, the flip made half a frame before the planned time, and taken off the same
   way after ``scanner.stimulus_duration``;
3. collects the answer within ``scanner.response_window`` without waiting for it (a
   simulated observer decides before the onset, on the frame drawn for it),
   writes the trial (CSV row with ``run``, ``onset``, ``planned_onset``,
   ``duration``; centres record) and builds the next stimulus in the ITI;
4. logs every trigger with its time (``<stem>_triggers.tsv``, beside the CSV), and at
   the end of the run (``lead_out`` after the last trial, the run's last volume)
   counts the onsets more than one frame late, measures the TR from the triggers,
   writes the run's BIDS ``_events.tsv`` / ``_events.json`` and its entry in the
   sidecar's ``scanner_runs``.

The number of bubbles is fixed (``scanner.n_bubbles``, or the QUEST estimate of an
earlier behavioural session of the same participant: :func:`bubbles_from_session`)
unless ``scanner.quest`` asks for QUEST, so that task difficulty does not follow
accuracy into the BOLD signal (as in Smith et al.'s scanner study).

A run is the unit of a crash: after ``kill -9`` or Escape the trials written stay, the
run is marked ``interrupted`` (its events file holds its trials), and a resume goes on
with the next run, or plays the interrupted run's trial list again as a new run number
when ``scanner.repeat_interrupted`` is true (a run that showed no trial is always
played again). Nothing written is changed; events files are never rewritten.

Triggers come from :class:`experiments.triggers.KeyTriggers` (the trigger box as key
presses) or, for tests and demos, :class:`experiments.triggers.SimulatedScanner`
(triggers at the TR from the session's own clock, ``speed`` times faster: every
duration divided by it; the files record scanner seconds, session-clock seconds times
``speed``).

References
----------
Smith, M. L., Fries, P., Gosselin, F., Goebel, R. & Schyns, P. G. (2009). Inverse
mapping the neuronal substrates of face categorizations. Cerebral Cortex 19,
2428-2438.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import sys
import time

import numpy as np

from analysis.session_files import MASK_COLUMNS, read_session, read_sidecar, session_paths

from . import datafile
from .responders import Response
from .schedule import RunSchedule, block_schedules, describe, read_onset_file
from .session import Session, _now, _Quit, make_quest
from .triggers import KeyTriggers, ScannerClock, SimulatedScanner

__all__ = ["bubbles_from_session", "ScannerSession", "is_scanner_session"]

#: Seconds of session clock between two polls while the session waits.
_POLL = 0.001
#: A buffered trigger is written only when the next timed flip is further than this.
_SAFE_WRITE = 0.05


def bubbles_from_session(path, participant, spec, *, min_bubbles=1):
    """The QUEST estimate of an earlier behavioural session as a number of bubbles.

    The estimate is the QUEST posterior mean (``quest_mean``, log10 bubbles) after the
    session's last main-block trial, ``round(10 ** quest_mean)``.

    Raises
    ------
    ValueError
        Naming ``--bubbles-from``: the file cannot be read as a session, it belongs to
        another participant, its BubbleSpec differs (other than in the number of
        bubbles) or it has no main-block trial with a QUEST estimate.

    Returns
    -------
    (int, dict)
        The count and what it came from (recorded in the sidecar).
    """
    where = f"--bubbles-from {str(path)!r}"
    try:
        found = read_session(path, required=MASK_COLUMNS, centers=None)
    except (OSError, ValueError) as err:
        raise ValueError(f"{where} must be a session CSV with its sidecar: {err}") \
            from None
    who = found.sidecar.get("participant")
    if str(who) != str(participant):
        raise ValueError(f"{where} is a session of participant {who!r}, not of "
                         f"{participant!r}: the scanner's number of bubbles must come "
                         f"from the same participant's behavioural session")
    theirs, ours = dict(found.sidecar.get("spec") or {}), spec.to_dict()
    differ = sorted(k for k in set(theirs) | set(ours) if k != "n_bubbles"
                    and theirs.get(k) != ours.get(k))
    if differ:
        what = ", ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here"
                         for k in differ)
        raise ValueError(f"{where} used another BubbleSpec ({what}): its threshold "
                         f"does not transfer")
    rows = [r for r in found.rows if r.get("block") == "main"
            and r.get("quest_mean") not in (None, "")]
    if not rows:
        raise ValueError(f"{where} has no main-block trial with a QUEST estimate "
                         f"(column quest_mean)")
    q = float(rows[-1]["quest_mean"])
    n = max(int(min_bubbles), int(round(10 ** q)))
    sd = rows[-1].get("quest_sd")
    info = {"file": str(found.paths["csv"].resolve()), "participant": who,
            "quest_mean": q, "quest_sd": float(sd) if sd not in (None, "") else None,
            "main_trials": len(rows), "session_status": found.sidecar.get("status"),
            "n_bubbles": n}
    return n, info


def is_scanner_session(path):
    """Whether the session of ``path`` (any of its files) was recorded in the scanner
    mode; False when its sidecar cannot be read (resuming it then says why)."""
    try:
        meta = read_sidecar(session_paths(path)["sidecar"])
    except (OSError, ValueError):
        return False
    return datafile.session_columns(meta.get("config")) == datafile.SCANNER_COLUMNS


class ScannerSession(Session):
    """A bubbles session in the MRI scanner (see the module docstring).

    Parameters are those of :class:`experiments.session.Session`, and

    bubbles_from : str or Path, optional
        An earlier behavioural session of the same participant: its QUEST estimate
        is the fixed number of bubbles (:func:`bubbles_from_session`).
    simulate_scanner : bool
        Triggers from :class:`SimulatedScanner` instead of the trigger key.
    speed : float
        With ``simulate_scanner``: every duration divided by it.
    triggers : object, optional
        A trigger source (``start(now, n)``, ``poll(now) -> times``,
        ``check_quit()``), for tests; overrides the two above.
    """

    scanner_mode = True

    def __init__(self, cfg=None, participant=None, *, bubbles_from=None,
                 simulate_scanner=False, speed=1.0, triggers=None, **kwargs):
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) \
                or not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a number > 0 (durations are divided by "
                             f"it), got {speed!r}")
        if speed != 1 and not simulate_scanner and triggers is None:
            raise ValueError(f"speed applies to a simulated scanner only (a real "
                             f"scanner keeps its TR), got speed={speed!r}")
        self.simulate_scanner, self.speed = bool(simulate_scanner), float(speed)
        self._trigger_source = triggers
        super().__init__(cfg, participant, **kwargs)
        sc = self.cfg["scanner"]
        self.n_per_run, self.n_blocks = sc["trials_per_run"], sc["runs"]
        if self.state is None:
            onsets = None
            if sc["onset_file"]:
                onsets = read_onset_file(sc["onset_file"], runs=sc["runs"],
                                         trials_per_run=sc["trials_per_run"],
                                         slot=max(sc["stimulus_duration"],
                                                  sc["response_window"]))
            self.schedules = block_schedules(sc, self.order_seed, onsets)
            self.n_bubbles, self.bubbles_source = self._fixed_bubbles(bubbles_from)
            self.scanner_runs = []
            clash = datafile.events_files_of_others(self.data_dir, self.participant,
                                                    self.cfg["expName"], self.session,
                                                    source=None)
            if clash:
                raise ValueError(
                    f"BIDS events files of participant {self.participant}, session "
                    f"{self.session} and this task exist already ({clash[0]}"
                    f"{' and more' if len(clash) > 1 else ''}); a scanner session "
                    f"never replaces them: give another --session number, or move them")
        else:
            self._restore_scanner(self.state.meta)
        self.design_lines, self.design_warnings, self.design_info = describe(
            self.schedules, sc)
        self._resumed_report = self._settle_killed_runs() if self.state else []
        self._next = self._next_run()
        if self.state is not None and self._next is None \
                and self.state.meta.get("status") == "completed":
            raise ValueError(f"nothing to resume: all {self.n_blocks} runs of "
                             f"{self.state.stem}.csv are recorded and the session is "
                             f"completed")
        self._run = None

    # -- design -------------------------------------------------------------------
    def _mode_config(self, cfg):
        if self.state is not None or not isinstance(cfg, dict):
            return cfg
        cfg = copy.deepcopy(cfg)
        cfg.setdefault("scanner", {})["enabled"] = True
        return cfg

    def _trial_counts(self):
        sc = self.cfg["scanner"]
        return 0, sc["runs"] * sc["trials_per_run"]

    def _check_resumable(self):
        """Checked once the runs are known (in ``__init__``)."""

    def _fixed_bubbles(self, bubbles_from):
        sc = self.cfg["scanner"]
        if bubbles_from is not None:
            n, info = bubbles_from_session(bubbles_from, self.participant, self.spec,
                                           min_bubbles=self.cfg["quest"]["min_bubbles"])
            try:
                self.spec.replace(n_bubbles=n).n_per_band
            except ValueError as err:
                raise ValueError(f"--bubbles-from {str(bubbles_from)!r} gives {n} "
                                 f"bubbles, which this spec cannot show: {err}") from None
            return n, {"from": "--bubbles-from", **info}
        if sc["n_bubbles"]:
            return sc["n_bubbles"], {"from": "scanner.n_bubbles"}
        return self.spec.total_bubbles, {"from": "bubbles.n_bubbles"}

    def _restore_scanner(self, meta):
        try:
            rec = meta["scanner"]
            self.schedules = [RunSchedule.from_dict(d) for d in rec["schedules"]]
            self.n_bubbles = int(rec["n_bubbles"])
            self.bubbles_source = rec.get("bubbles_source")
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"cannot resume: the sidecar {self.state.stem}.json lacks "
                             f"or garbles its scanner record ({err})") from None
        self.scanner_runs = meta.setdefault("scanner_runs", [])

    # -- runs: what is done, what comes next ----------------------------------------
    def _rows_of_run(self, run):
        return [r for r in self.state.rows if str(r.get("run")) == str(run)]

    def _t0_recorded(self, run):
        """Whether the triggers file has the first counted trigger of ``run``."""
        path = datafile.triggers_path(self.state.stem)
        if not path.is_file():
            return False
        with open(path, newline="", encoding="utf-8") as f:
            return any(row.get("run") == str(run) and row.get("volume") == "0"
                       for row in csv.DictReader(f, delimiter="\t"))

    def _settle_killed_runs(self):
        """Mark the scanner run a killed process left 'running' as interrupted (in
        memory; written when the files open) and say what each interrupted run holds."""
        report = []
        for entry in self.scanner_runs:
            if entry.get("status") == "running":
                rows = self._rows_of_run(entry["run"])
                started = bool(rows) or self._t0_recorded(entry["run"])
                entry.update(status="interrupted" if started else "not_started",
                             reason="killed (the process never recorded the run's end)",
                             n_trials=len(rows),
                             last_trial=int(rows[-1]["trial"]) if rows else None)
                entry["_events_due"] = started
            if entry.get("status") in ("interrupted", "not_started") \
                    and entry is self.scanner_runs[-1]:
                n = entry.get("n_trials") or 0
                first = entry.get("first_trial")
                volumes = self._volumes_recorded(entry["run"])
                if n:
                    kept = (f"{n} of {self.n_per_run} trials recorded (trials {first} "
                            f"to {first + n - 1}); they stay as they are, in the CSV and "
                            f"in that run's events file")
                else:
                    kept = "no trial was shown"
                scan = (f"the triggers file logged {volumes} of its "
                        f"{entry.get('n_volumes')} volumes (its BOLD run is partial: "
                        f"analyse it with the volumes acquired)" if volumes else
                        "no volume of it was counted")
                report.append(
                    f"run {entry['run']} was {entry['status'].replace('_', ' ')} "
                    f"({entry.get('reason', '')}): {kept}; {scan}")
        return report

    def _volumes_recorded(self, run):
        """Counted triggers of ``run`` in the triggers file."""
        path = datafile.triggers_path(self.state.stem)
        if not path.is_file():
            return 0
        with open(path, newline="", encoding="utf-8") as f:
            return sum(1 for row in csv.DictReader(f, delimiter="\t")
                       if row.get("run") == str(run) and row.get("volume") not in
                       (None, "", "n/a"))

    def _next_run(self):
        """(run number, block) of the next run, or None when every block is played."""
        if not self.scanner_runs:
            return 1, 0
        last = self.scanner_runs[-1]
        block, n = int(last["block"]), int(last.get("n_trials") or 0)
        if last.get("status") == "completed" or n >= self.n_per_run:
            nxt = block + 1
        elif n == 0:
            nxt = block                       # nothing was shown: play it again
        else:
            nxt = block if self.cfg["scanner"]["repeat_interrupted"] else block + 1
        return None if nxt >= self.n_blocks else (int(last["run"]) + 1, nxt)

    def _total_runs(self, run):
        """Runs the session will have once run ``run`` (and the blocks after) end."""
        block = self._next[1] if self._next else self.n_blocks
        return run + (self.n_blocks - block - 1)

    @property
    def trials_left(self):
        if self._next is None:
            return 0
        return (self.n_blocks - self._next[1]) * self.n_per_run

    # -- setup ----------------------------------------------------------------------
    def _announce(self):
        for line in self._resumed_report:
            print(line)
        if self._next is not None and self._resumed_report:
            run, block = self._next
            last = self.scanner_runs[-1]
            if block == int(last["block"]):
                why = ("scanner.repeat_interrupted" if last.get("n_trials") else
                       "that run showed no trial")
                what = f"it plays the trial list of run {last['run']} again ({why})"
            else:
                what = f"trial list {block + 1} of {self.n_blocks}"
            print(f"continuing with run {run}: {what}; number the BOLD runs the same "
                  f"way")
        for line in self.design_lines:
            print(line)
        for warning in self.design_warnings:
            print(f"warning: trials are too close for single-trial estimation: "
                  f"{warning}", file=sys.stderr)

    def _complete_recorded(self):
        for line in self._resumed_report:
            print(line)
        return super()._complete_recorded()

    def _run_entry(self):
        entry = super()._run_entry()
        entry.update(simulated_scanner=self.simulate_scanner, speed=self.speed)
        return entry

    def _open_files(self):
        super()._open_files()
        path = datafile.triggers_path(self.files.stem)
        if self.state is None:
            self.meta["scanner"] = {
                "schedules": [s.to_dict() for s in self.schedules],
                "design": {**self.design_info, "warnings": self.design_warnings},
                "n_bubbles": self.n_bubbles, "bubbles_source": self.bubbles_source,
                "triggers_file": path.name}
            self.meta["scanner_runs"] = self.scanner_runs
        else:
            for entry in self.scanner_runs:
                if entry.pop("_events_due", False):
                    rows = self._rows_of_run(entry["run"])
                    rate = float(rows[0]["frameRate"]) if rows else 60.0
                    entry.update(self._timing(rows, entry.get("speed", 1.0) / rate,
                                              *self._recorded_triggers(entry["run"])))
                    self._events(entry, rows)
        self.files.write_sidecar(self.meta)
        self.trigger_log = datafile.TriggerLog(path, resume=self.state is not None)

    def _make_quest(self):
        if not self.cfg["scanner"]["quest"]:
            self.quest = None
            return
        cfg = self.cfg
        if self.bubbles_source and self.bubbles_source.get("from") == "--bubbles-from":
            cfg = copy.deepcopy(cfg)
            cfg["quest"]["start"] = float(self.n_bubbles)
        self.quest = make_quest(cfg, len(self.labels), self.n_main)
        for row in (self.state.rows if self.state else []):
            next(self.quest)
            self.quest.addResponse(int(row["correct"]),
                                   intensity=float(row["quest_intensity"]))

    def _triggers(self):
        if self._trigger_source is not None:
            return self._trigger_source
        sc, quit_key = self.cfg["scanner"], self.cfg["responses"]["quit_key"]
        if self.simulate_scanner:
            return SimulatedScanner(sc["tr"], speed=self.speed)
        return KeyTriggers(sc["trigger_key"], quit_key,
                           keyboard=getattr(self.responder, "kb", None))

    # -- the runs -------------------------------------------------------------------
    def _loop(self):
        log = self._logging
        for line in self.design_lines + [f"warning: {w}" for w in self.design_warnings]:
            log.exp(line)
        self.triggers = self._triggers()
        self.frame_s = self.presenter.frame_period * self.speed   # a frame, scanner s
        log.exp(f"flips are made {1000 * self.presenter.flip_lead:.1f} ms before their "
                f"scheduled time (half a frame with vsync, 0 without)")
        run, _ = self._next
        prefix = "" if self.state is None else (
            f"Resuming the session with run {run} of {self._total_runs(run)}.\n\n")
        self._screen("instructions", prefix)
        first = True
        while self._next is not None:
            run, block = self._next
            if not first:
                self._screen("run_done", done=run - 1, runs=self._total_runs(run))
            first = False
            self._scanner_run(run, block)
            self._next = self._next_run()

    def _wait_until(self, target, collect=None):
        """Poll triggers, the quit key (and ``collect``) until the session clock
        reaches ``target``; buffered triggers are written when there is time."""
        now_fn, pump_at = self.presenter.now, 0.0
        while True:
            now = now_fn()
            self._poll_triggers(now)
            if collect is not None:
                collect(now)
            if self.responder.check_quit() or self.triggers.check_quit():
                raise _Quit()
            left = target - now
            if left <= 0:
                return now
            if self.trigger_log.pending and left > _SAFE_WRITE:
                self.trigger_log.flush()
            if now >= pump_at:
                self.presenter.pump()
                pump_at = now + 0.05
            time.sleep(_POLL if left > 3 * _POLL else 0.0001)

    def _poll_triggers(self, now):
        run = self._run
        if run is None:
            return
        dummies = self.cfg["scanner"]["dummy_volumes"]
        for t in self.triggers.poll(now):
            self._n_triggers += 1
            k = self._n_triggers
            if self._t0 is None:
                if k <= dummies:
                    self._dummies.append(t)
                    continue
                self._t0 = t
                for i, d in enumerate(self._dummies, start=1):
                    self.trigger_log.add(run["run"], i, None, (d - t) * self.speed, d)
            volume = k - dummies - 1
            time_s = (t - self._t0) * self.speed
            self._volumes.append(time_s)
            self.trigger_log.add(run["run"], k, volume, time_s, t)
            self._logging.data(f"trigger {k} of run {run['run']}: volume {volume} at "
                               f"{time_s:.4f} s")

    def _prepare_scanner(self, t, plan_pos):
        """ITI work: the trial's count (fixed, or QUEST's), its stimulus, its texture."""
        if self.quest is not None:
            q = self.cfg["quest"]
            n = int(np.clip(round(10 ** next(self.quest)), q["min_bubbles"],
                            q["max_bubbles"]))
        else:
            n = self.n_bubbles
        t_start = time.perf_counter()
        prepared = self.builder.build(self.plan[plan_pos], n, mask_index=t)
        self.presenter.load(prepared.image)
        self._prep_ms = 1000 * (time.perf_counter() - t_start)
        return prepared, math.log10(prepared.spec.total_bubbles)

    def _scanner_run(self, run, block):
        sc, speed, log = self.cfg["scanner"], self.speed, self._logging
        sched = self.schedules[block]
        keys = self.cfg["responses"]
        entry = {"run": run, "block": block, "status": "running",
                 "first_trial": self.n_done, "n_trials": 0, "started": _now(),
                 "pid": os.getpid(), "simulated_scanner": self.simulate_scanner,
                 "speed": speed, "tr": sc["tr"], "dummy_volumes": sc["dummy_volumes"],
                 "n_volumes": sched.n_volumes,
                 "vsync": getattr(self.presenter, "vsync", None),
                 "flip_lead": round(self.presenter.flip_lead, 6)}
        self.scanner_runs.append(entry)
        self.files.write_sidecar(self.meta)       # before anything of the run is written
        self._run, self._run_rows = entry, []
        self._t0, self._n_triggers, self._dummies, self._volumes = None, 0, [], []
        mapping = "\n".join(f"{label}: press {key.upper()}"
                            for label, key in self.mapping.items())
        self.presenter.text(self.cfg["text"]["scanner_wait"].format(
            mapping=mapping, continue_key=keys["continue_key"].upper(), run=run,
            runs=self._total_runs(run)))
        n, start = len(sched.onsets), block * self.n_per_run
        prepared, intensity = self._prepare_scanner(self.n_done, start)   # ready at T0
        log.exp(f"run {run}: waiting for {sc['dummy_volumes']} dummy trigger(s) and "
                f"the first counted trigger ({sc['trigger_key']!r})")
        log.flush()
        self.triggers.start(self.presenter.now(), sc["dummy_volumes"] + sched.n_volumes)
        while self._t0 is None:
            self._wait_until(self.presenter.now() + _POLL)
        t0 = self._t0
        self.presenter.show_fixation()
        self.trigger_log.flush()
        entry["t0_clock"] = round(t0, 6)
        log.exp(f"run {run}: first counted trigger at {t0:.4f} s (session clock); "
                f"{len(sched.onsets)} trials, {sched.n_volumes} volumes")
        for k in range(n):
            self._scanner_trial(run, float(sched.onsets[k]), prepared, intensity)
            if k + 1 < n:
                prepared, intensity = self._prepare_scanner(self.n_done, start + k + 1)
        self._wait_until(t0 + sched.n_volumes * sc["tr"] / speed)
        self._close_run("completed")

    def _scanner_trial(self, run, planned, prepared, intensity):
        sc, speed, t = self.cfg["scanner"], self.speed, self.n_done
        mapping, quit_key = dict(self.mapping), self.cfg["responses"]["quit_key"]
        t0, half = self._t0, self.presenter.flip_lead
        frame = self.presenter.ready(grab=self.responder.needs_frame)
        seen = frame if frame is not None else prepared.image
        begin = getattr(self.responder, "begin_trial", None)
        if begin is not None:
            begin(prepared)
        got = []
        if not self.responder.live:
            # a simulated observer decides now, on the frame drawn for the onset: its
            # computing time is not taken from the schedule (its rt is that time, or
            # the rt it reports, in seconds not scaled by the speed)
            asked = self.presenter.now()
            answer = self.responder.respond(seen, mapping, clock=ScannerClock(
                self.presenter.now, asked))
            if answer.key == quit_key:
                raise _Quit()
            got.append(answer)
        self._wait_until(t0 + planned / speed - half)
        self.responder.start_poll(mapping)
        onset = self.presenter.flip()
        clock = ScannerClock(self.presenter.now, onset, speed)

        def collect(now):
            if not got:
                answer = self.responder.poll(seen, mapping, clock=clock)
                if answer is not None:
                    if answer.key == quit_key:
                        raise _Quit()
                    got.append(answer)

        collect(onset)
        self._wait_until(t0 + (planned + sc["stimulus_duration"]) / speed - half,
                         collect)
        offset = self.presenter.show_fixation()
        self._wait_until(t0 + (planned + sc["response_window"]) / speed, collect)
        response = got[0] if got else Response(None, None, None)
        if response.rt is not None and response.rt > sc["response_window"]:
            self._logging.warning(f"trial {t}: answer after the response window "
                                  f"({response.rt:.3f} s) not counted")
            response = Response(None, None, None)
        stim_row = self.stimuli.table.iloc[prepared.stim_index]
        correct = int(response.label == stim_row["expression"])
        if self.quest is not None:
            self.quest.addResponse(correct, intensity=intensity)
        frames = int(round((offset - onset) * self.presenter.frame_rate))
        row = self._row(t, "main", prepared, response, correct, intensity,
                        frames_shown=frames, dropped_frames=None, onset=round((onset - t0) * speed, 6),
                        run=run, planned_onset=round(planned, 6),
                        duration=round((offset - onset) * speed, 6))
        self._write(row, prepared)
        self.trigger_log.flush()
        self._run_rows.append(row)
        self._run["n_trials"] = len(self._run_rows)
        self.n_done = t + 1
        late = row["onset"] - planned
        self._logging.data(
            f"trial {t} run {run}: n_bubbles={row['n_bubbles']} correct={correct} "
            f"planned={planned:.4f} onset={row['onset']:.4f} error_ms="
            f"{1000 * late / speed:.2f} duration={row['duration']:.4f} "
            f"prep_ms={self._prep_ms:.2f}")
        if response.key is None:
            self._logging.warning(f"trial {t}: no response within the response window")
        self._logging.flush()

    # -- the end of a run ------------------------------------------------------------
    def _timing(self, rows, frame_s, volumes, n_dummies):
        """Onset errors (scanner seconds; late: more than one frame, ``frame_s``) and
        trigger statistics of a run (``volumes``: its counted triggers' times)."""
        err = np.array([float(r["onset"]) - float(r["planned_onset"]) for r in rows])
        out = {"late_onsets": int(np.sum(err > frame_s * (1 + 1e-6))),
               "frame": round(frame_s, 6)}
        if err.size:
            out.update(onset_error_mean=round(float(err.mean()), 6),
                       onset_error_max=round(float(err.max()), 6),
                       onset_error_min=round(float(err.min()), 6),
                       onset_error_last=round(float(err[-1]), 6))
        vols = np.asarray(volumes, float)
        out["volume_triggers"] = int(vols.size)
        out["dummy_triggers"] = int(n_dummies)
        if vols.size > 1:
            out["measured_tr"] = round(float(np.median(np.diff(vols))), 6)
            tr = self.cfg["scanner"]["tr"]
            out["trigger_drift"] = round(float(vols[-1] - (vols.size - 1) * tr), 6)
        return out

    def _recorded_triggers(self, run):
        """(volume times, number of dummies) of ``run`` in the triggers file."""
        path = datafile.triggers_path(self.files.stem)
        vols, dummies = [], 0
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f, delimiter="\t"):
                    if row.get("run") != str(run):
                        continue
                    if row.get("volume") == "n/a":
                        dummies += 1
                    else:
                        try:
                            vols.append(float(row["time"]))
                        except (TypeError, ValueError):
                            pass
        return vols, dummies

    def _events(self, entry, rows):
        """Write the run's BIDS events files (never replacing any); record them."""
        sc = self.cfg["scanner"]
        info = {"Run": entry["run"], "Status": entry["status"],
                "RepetitionTime": sc["tr"], "DummyVolumes": sc["dummy_volumes"],
                "VolumesAfterDummies": entry.get("n_volumes"),
                "OnsetReference": "the first scanner trigger after the dummy volumes",
                "TrialsRecorded": len(rows), "TrialsPlanned": self.n_per_run,
                "LateOnsets": entry.get("late_onsets"),
                "SimulatedScanner": entry.get("simulated_scanner"),
                "Speed": entry.get("speed")}
        tsv, js = datafile.export_events(rows, self.data_dir, self.participant,
                                         self.cfg["expName"], session=self.session,
                                         run=entry["run"],
                                         source=self.files.csv_path.name, info=info)
        entry["events"] = [str(tsv), str(js)]

    def _close_run(self, status, reason=None):
        """Record the end of the current run: statistics, events files, sidecar."""
        entry, rows = self._run, self._run_rows
        self._run = None
        started = self._t0 is not None
        if status != "completed" and not started:
            status = "not_started"
        entry.update(status=status, ended=_now(), n_trials=len(rows),
                     last_trial=rows[-1]["trial"] if rows else None,
                     **self._timing(rows, self.frame_s, self._volumes,
                                    len(self._dummies)))
        if reason:
            entry["reason"] = reason
        problems = []
        try:
            self.trigger_log.flush()
        except OSError as err:
            problems.append(f"the triggers file could not be written ({err})")
        if started:
            try:
                self._events(entry, rows)
            except OSError as err:
                problems.append(f"the events files of run {entry['run']} could not be "
                                f"written ({err})")
                entry["events_error"] = str(err)
        try:
            self.files.write_sidecar(self.meta)
        except OSError as err:
            problems.append(f"the sidecar could not be updated ({err})")
        frame_ms = 1000 * self.presenter.frame_period
        msg = (f"run {entry['run']} {status}: {len(rows)} of {self.n_per_run} trials; "
               f"{entry.get('late_onsets', 0)} onset(s) more than one frame "
               f"({frame_ms:.1f} ms) late")
        if rows:
            msg += (f", onset error {1000 * entry['onset_error_mean'] / self.speed:+.2f}"
                    f" ms on average, {1000 * entry['onset_error_max'] / self.speed:+.2f}"
                    f" ms at most (session clock)")
        msg += (f"; {entry['volume_triggers']} volume trigger(s) after "
                f"{entry['dummy_triggers']} dummy trigger(s)")
        if "measured_tr" in entry:
            msg += f", measured TR {entry['measured_tr']:.4f} s"
        print(msg)
        self._logging.exp(msg)
        for p in problems:
            self._logging.error(p)
        self._logging.flush()
        return problems

    def _finish_mode(self, status, problems):
        if self._run is not None:
            reason = {"escaped": "stopped with the quit key",
                      "crashed": "an error ended the session"}.get(status, status)
            try:
                problems.extend(self._close_run("interrupted", reason))
            except Exception as err:        # never hide the error that ended the run
                problems.append(f"the run could not be closed ({err})")
        log = getattr(self, "trigger_log", None)
        if log is not None:
            try:
                log.close()
            except OSError as err:
                problems.append(f"the triggers file could not be closed ({err})")

    def _end_message(self, escaped):
        runs = [e for e in self.scanner_runs]
        done = sum(1 for e in runs if e.get("status") == "completed")
        if escaped:
            nxt = self._next_run()
            after = (f"; run {nxt[0]} comes next" if nxt else "")
            return (f"Session stopped by {self.cfg['responses']['quit_key']} in run "
                    f"{runs[-1]['run'] if runs else 1} after {self.n_done} trials "
                    f"(the run is kept as interrupted{after}); data saved to "
                    f"{self.files.stem}.* (continue with: bubbles run --resume "
                    f"{self.files.csv_path})")
        return (f"Session complete: {len(runs)} run(s) ({done} completed), "
                f"{self.n_done} trials saved to {self.files.stem}.*")
