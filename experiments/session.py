"""The bubbles session: instructions, practice, a QUEST-run main block, breaks, end.

One loop serves every observer: the responder (keyboard, scripted, template, network)
answers, the presenter (a PsychoPy window, or headless for long simulations) draws.
Each trial runs

1. inter-trial interval: one blank frame, then the stimulus is built (masks +
   composition, multi-scale included) and uploaded as a texture, then the remaining
   blank frames;
2. fixation frames;
3. the stimulus, for a fixed number of frames or until the response, with the frame
   intervals recorded and the dropped frames counted;
4. the response; QUEST is updated with the number of bubbles actually shown (main block
   only); feedback if configured;
5. the trial's centres and CSV row are appended and fsynced.

QUEST (``psychopy.data.QuestHandler``) works on log10(number of bubbles) with the
configured pThreshold (0.75), gamma (1 / number of choices unless set), beta, delta and
grain, bounded by ``quest.min_bubbles`` and ``quest.max_bubbles`` (Gosselin & Schyns,
2001; Watson & Pelli, 1983). Escape at any time stops the session: everything is saved,
the BIDS copy written and a message shown; nothing calls ``core.quit()``.

The sidecar accounts for every process that touches the files: each run (the first, and
every resume) adds its entry to ``runs`` with ``status: "running"`` before it writes a
trial or cuts a damaged line (the backups it is about to make listed), and records its
end there; a run that never did (killed, power cut) is marked ``interrupted`` with the
trials it recorded by the next resume. A resume of a session whose trials are all
recorded but whose end never was (killed between the last row and the end) only
finishes it: status, log and BIDS copy, its data untouched.

With ``[bubbles] sampling = "adaptive"`` an :class:`analysis.adaptive.AdaptiveSampler`
draws each trial's centres (block by block, from the answers before the block); its
densities go to ``<stem>_densities.npz`` and a resume replays every recorded row through
it, checking each trial's centres against the centres file.

The scanner mode (:class:`experiments.scanner.ScannerSession`) is this session with
another loop: runs paced by the scanner's triggers instead of frames and key presses.

References
----------
Gosselin, F. & Schyns, P. G. (2001). Vision Research 41, 2261-2271.
:doi:`10.1016/S0042-6989(01)00097-9`
Watson, A. B. & Pelli, D. G. (1983). QUEST: a Bayesian adaptive psychometric method.
Perception & Psychophysics 33, 113-120. :doi:`10.3758/BF03202828`
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

import bubbles
from analysis.adaptive import (AdaptivePolicy, AdaptiveSampler, load_densities,
                               save_densities)
from analysis.session_files import SESSION_FORMAT, SESSION_VERSION, session_paths

from . import datafile, trials
from .config import ConfigError, check_bubble_counts, validate_config
from .presenter import HeadlessPresenter, WindowPresenter
from .responders import make_responder

__all__ = ["SessionResult", "Session", "make_quest", "responder_seed"]


class _Quit(Exception):
    """The responder asked to stop (escape)."""


@dataclass
class SessionResult:
    """How a session ended and where its files are."""

    stem: Path
    n_trials: int
    completed: bool
    escaped: bool
    files: dict = field(default_factory=dict)
    message: str = ""


def make_quest(cfg, n_choices, n_trials):
    """``psychopy.data.QuestHandler`` on log10(n_bubbles) for a configuration."""
    from psychopy import data

    q = cfg["quest"]
    gamma = q["gamma"] or 1.0 / n_choices
    return data.QuestHandler(
        math.log10(q["start"]), q["start_sd"], pThreshold=q["pThreshold"], gamma=gamma,
        beta=q["beta"], delta=q["delta"], grain=q["grain"], nTrials=max(1, n_trials),
        minVal=math.log10(q["min_bubbles"]), maxVal=math.log10(q["max_bubbles"]),
        autoLog=False)


def responder_seed(order_seed, mask_seed, first_trial):
    """Seed of a simulated observer's noise for the run that starts at ``first_trial``
    (0 for a new session): one stream per participant, session and run."""
    return int(np.random.SeedSequence(
        [int(order_seed), int(mask_seed), int(first_trial)]).generate_state(1)[0])


def _versions():
    out = {"python": platform.python_version(), "numpy": np.__version__,
           "bubbles": getattr(bubbles, "__version__", "unknown")}
    try:
        import psychopy
        out["psychopy"] = psychopy.__version__
    except ImportError:  # pragma: no cover
        out["psychopy"] = None
    return out


def _now():
    return datetime.now().isoformat(timespec="seconds")


def _close_killed_runs(runs, next_first):
    """Mark the runs that never recorded their end (killed, power cut) as interrupted.

    A run's trials end where the next run starts (``next_first`` for the last one, the
    first trial of the process resuming now); a run that recorded none gets
    ``last_trial: None``. Backups listed before they were made are kept only if made.
    """
    for i, run in enumerate(runs):
        if run.get("status") not in (None, "running"):
            continue
        end = runs[i + 1].get("first_trial", next_first) if i + 1 < len(runs) \
            else next_first
        n = max(0, end - run.get("first_trial", end))
        run.update(status="interrupted", n_trials=n, last_trial=end - 1 if n else None)
        if run.get("backups"):
            run["backups"] = [b for b in run["backups"] if Path(b).exists()]


class Session:
    """One participant's bubbles session (new, or resumed from its files).

    Parameters
    ----------
    cfg : dict
        Validated configuration (:func:`experiments.config.load_config`).
    participant : str
        Participant id: a BIDS label, letters and digits only.
    session : int
        Session number.
    data_dir : str or Path
        Folder for the session files (and the BIDS copy under it).
    simulate : {None, 'template', 'scripted', 'model'}
        Who answers (None: the keyboard); ignored when ``responder`` is given.
    decision_noise : float, optional
        With ``simulate='model'``: SD of the Gaussian noise on the network's logits
        (``ann_bridge.observer.NetworkObserver(decision_noise=...)``).
    responder : Responder, optional
    presenter : {'window', 'headless'}
        'headless' draws nothing: the same loop for fast simulations only.
    pilot : bool
        Force a window instead of full screen.
    stimuli : StimulusSet, optional
        Overrides the configured stimulus source.
    resume : str or Path, optional
        A file (or stem) of an interrupted session to continue; ``cfg``,
        ``participant`` and ``session`` are then read from its sidecar.
    """

    #: True for :class:`experiments.scanner.ScannerSession`.
    scanner_mode = False

    def __init__(self, cfg=None, participant=None, *, session=1, data_dir="data",
                 simulate=None, responder=None, presenter="window", pilot=False,
                 stimuli=None, resume=None, decision_noise=None):
        self.state = None
        if resume is not None:
            # read and check only: the files are repaired (cut back, after a backup)
            # in run(), once every check that can refuse the resume has passed
            self.state = datafile.open_for_resume(resume, repair=False)
            meta = self.state.meta
            try:
                cfg, participant = meta["config"], meta["participant"]
                session = meta["session"]
            except KeyError as err:
                raise ValueError(f"cannot resume: the sidecar {self.state.stem}.json "
                                 f"lacks {err}") from None
            data_dir = self.state.stem.parent
        if cfg is None or participant is None:
            raise ValueError("cfg and participant are required unless resume is given")
        try:
            self.cfg = validate_config(self._mode_config(cfg))
            self.participant = datafile.validate_participant(participant)
        except ValueError as err:
            raise self._frozen(err) from None
        if self.cfg["scanner"]["enabled"] != self.scanner_mode:
            raise ValueError(
                "this configuration turns the scanner mode on (scanner.enabled): run it "
                "with experiments.scanner.ScannerSession (bubbles run --scanner)"
                if self.cfg["scanner"]["enabled"] else
                "experiments.scanner.ScannerSession runs the scanner mode only; this "
                "configuration has scanner.enabled = false")
        self.columns = datafile.session_columns(self.cfg)
        if isinstance(session, bool) or not isinstance(session, int) or session < 0:
            raise ValueError(f"session must be an integer >= 0, got {session!r}")
        self.session = session
        self.data_dir = Path(data_dir)
        self.simulate, self.pilot = simulate, pilot
        self.decision_noise = decision_noise
        self._responder, self._presenter_kind = responder, presenter
        if stimuli is None:
            self.stimuli, self.labels = trials.load_stimuli(self.cfg)
        else:
            self.stimuli = stimuli
            self.labels = tuple(self.cfg["stimuli"]["expressions"]) or stimuli.expressions
        try:   # the counts the images can hold: known now, before anything opens
            check_bubble_counts(self.cfg, self.stimuli.shape)
        except ConfigError as err:
            raise self._frozen(err) from None
        self.spec = trials.spec_from_config(self.cfg, self.stimuli.shape)
        self.policy = trials.policy_from_config(self.cfg)
        self.sampler = None
        seed = self.cfg["seed"]
        self.order_seed, self.mask_seed = trials.session_seeds(seed, self.participant,
                                                               session)
        self.mapping, self.mapping_index = trials.key_mapping(
            self.labels, self.cfg["responses"]["keys"], self.participant, seed,
            counterbalance=self.cfg["responses"]["counterbalance"])
        self.n_practice, self.n_main = self._trial_counts()
        self.plan = trials.trial_plan(self.stimuli, self.labels,
                                      self.n_practice + self.n_main, self.order_seed)
        if self.state is not None:
            self._restore_design(self.state.meta)
            self._check_resumable()
            self._replay_sampler()

    def _mode_config(self, cfg):
        """The configuration as given (the scanner session switches its mode on)."""
        return cfg

    def _trial_counts(self):
        """(practice, main) trials of the session."""
        t = self.cfg["trials"]
        return t["practice"], t["main"]

    def _check_resumable(self):
        """Refuse a resume that has nothing to do or more trials than planned."""
        done, total = len(self.state.rows), len(self.plan)
        if done > total:
            raise ValueError(f"cannot resume: {self.state.stem}.csv has {done} "
                             f"trials, more than the {total} the session plans")
        if done == total and self.state.meta.get("status") == "completed":
            raise ValueError(f"nothing to resume: {self.state.stem}.csv already has "
                             f"all {total} trials and the session is completed")

    def _frozen(self, err):
        """The error for a configuration that is not valid: as is for a new session;
        for a resume, saying that the recorded one is invalid and how to recover."""
        if self.state is None:
            return err
        stem = self.state.stem
        return ConfigError(
            f"cannot resume {str(stem)!r}: the configuration recorded in its sidecar "
            f"{stem.name}.json is not valid: {err}. Nothing was changed. To continue, "
            f"correct that value in the sidecar (its \"config\" holds the configuration;"
            f" leave everything else as recorded) and resume again; or start a new "
            f"session")

    @property
    def trials_left(self):
        """Trials still to run (all of them for a new session)."""
        return len(self.plan) - (len(self.state.rows) if self.state is not None else 0)

    def _restore_design(self, meta):
        """On resume, take seeds, key mapping and trial plan from the sidecar (so that a
        newer toolkit version cannot silently change them half-way)."""
        try:
            self.order_seed = int(meta["seeds"]["order_seed"])
            self.mask_seed = int(meta["seeds"]["mask_seed"])
            self.mapping = dict(meta["key_mapping"])
            self.mapping_index = meta.get("key_mapping_index")
            self.labels = tuple(meta["labels"])
            self.plan = [self.stimuli.index(sid) for sid in meta["plan"]]
        except (KeyError, TypeError) as err:
            raise ValueError(f"cannot resume: the sidecar {self.state.stem}.json lacks "
                             f"or garbles {err}") from None
        if self.spec.to_dict() != meta["spec"]:
            raise ValueError(f"cannot resume: the BubbleSpec rebuilt from the recorded "
                             f"configuration differs from the one in {self.state.stem}"
                             f".json")
        recorded = meta.get("sampling")
        try:
            self.policy = None if recorded is None else AdaptivePolicy.from_dict(recorded)
        except (TypeError, ValueError) as err:
            raise ValueError(f"cannot resume: the sidecar {self.state.stem}.json has a "
                             f"sampling policy that is not valid: {err}") from None
        wanted = self.cfg["bubbles"]["sampling"]
        if (self.policy is not None) != (wanted == "adaptive"):
            raise ValueError(f"cannot resume: the recorded configuration says "
                             f"bubbles.sampling = {wanted!r} but the sidecar "
                             f"{self.state.stem}.json "
                             f"{'records' if recorded else 'lacks'} an adaptive policy")

    def _densities_path(self, stem):
        """``<stem>_densities.npz``: the adaptive densities, one per block."""
        return Path(f"{stem}_densities.npz")

    def _replay_sampler(self):
        """On resume of an adaptive session, rebuild its sampler from the recorded rows
        (each trial's centres from the seed and the responses before it) and check them
        against the centres file: every past trial's centres must come out as shown."""
        if self.policy is None:
            return
        stem = self.state.stem
        path = self._densities_path(stem)
        recorded = load_densities(path)[0] if path.exists() else None
        sampler = AdaptiveSampler(self.spec, self.mask_seed, self.policy,
                                  recorded=recorded)
        try:
            for row, rec in zip(self.state.rows, self.state.centers):
                t = int(row["trial"])
                if int(row["mask_index"]) != t:
                    raise ValueError(f"trial {t} has mask_index {row['mask_index']}; an "
                                     f"adaptive session draws trial t's centres as t")
                c = sampler.centers(t, int(row["n_bubbles"]))
                shown = c if self.spec.multiscale else [c]
                for band, got in enumerate(shown):
                    if not np.array_equal(np.asarray(got, float)[0],
                                          np.asarray(rec["centers"][band], float)):
                        raise ValueError(f"the centres of trial {t} (band {band}) "
                                         f"replayed from the responses differ from "
                                         f"those in {stem.name}_centers.jsonl")
                sampler.tell(t, float(row["correct"]))
        except ValueError as err:
            raise ValueError(f"cannot resume the adaptive session {str(stem)!r}: {err}") \
                from None
        self.sampler = sampler

    # -- setup ---------------------------------------------------------------------
    def _run_entry(self):
        """This process's entry in the sidecar's ``runs``, written before it touches
        the data files."""
        presenter = getattr(self, "presenter", None)
        return {"started": _now(), "first_trial": self.start, "status": "running",
                "pid": os.getpid(), "simulate": self.simulate,
                "decision_noise": self.decision_noise,
                "responder_seed": self.responder_seed if self._responder is None else None,
                "monitor": presenter.monitor_info if presenter is not None else None,
                "versions": _versions(), "dropped_on_resume": [], "backups": []}

    def _open_files(self):
        self.start = len(self.state.rows) if self.state is not None else 0
        run = self._run_entry()
        if self.state is None:
            self.date = datafile.date_string()
            stem = datafile.unique_stem(self.data_dir, self.participant,
                                        self.cfg["expName"], self.date)
            self.files = datafile.SessionFiles(stem, columns=self.columns)
            self.meta = {
                "format": SESSION_FORMAT, "version": SESSION_VERSION,
                "config": self.cfg,
                "spec": self.spec.to_dict(), "seed": self.cfg["seed"],
                "seeds": {"order_seed": self.order_seed, "mask_seed": self.mask_seed},
                "key_mapping": self.mapping, "key_mapping_index": self.mapping_index,
                "labels": list(self.labels),
                "plan": [str(s) for s in self.stimuli.table["stimulus_id"].iloc[self.plan]],
                "versions": _versions(), "monitor": run["monitor"],
                "expName": self.cfg["expName"], "participant": self.participant,
                "session": self.session, "date": self.date, "runs": [run],
                "status": "running"}
            if self.policy is not None:
                self.meta["sampling"] = self.policy.to_dict()
                self.meta["densities"] = self._densities_path(stem).name
                self.sampler = AdaptiveSampler(self.spec, self.mask_seed, self.policy)
            self.files.write_sidecar(self.meta)   # at once: resume needs it
            return
        state = self.state
        self.meta = state.meta
        self.date = self.meta["date"]
        sidecar = session_paths(state.stem)["sidecar"]
        runs = self.meta.setdefault("runs", [])
        _close_killed_runs(runs, self.start)
        # recorded before anything is cut, with the backups about to be made
        run.update(dropped_on_resume=list(state.dropped),
                   backups=[str(b) for b in state.planned_backups()])
        runs.append(run)
        self.meta["status"] = "running"
        datafile.write_sidecar(sidecar, self.meta)
        if state.cuts:
            state.repair()     # cut torn last lines (each file backed up first)
            run.update(dropped_on_resume=list(state.dropped),
                       backups=[str(b) for b in state.backups])
            datafile.write_sidecar(sidecar, self.meta)
        self.files = datafile.SessionFiles(state.stem, resume=True, columns=self.columns)

    def _open_log(self):
        from psychopy import logging

        self._logging = logging
        self.logfile = logging.LogFile(str(self.files.log_path), level=logging.INFO,
                                       filemode="a")
        logging.console.setLevel(logging.WARNING)
        if self.state is not None:
            logging.exp(f"resuming {self.files.stem.name} at trial {self.start} "
                        f"(process {os.getpid()})")
            for msg in self.state.dropped:
                logging.warning(f"resume: {msg}")
        logging.flush()

    def _make_quest(self):
        self.quest = make_quest(self.cfg, len(self.labels), self.n_main)
        for row in (self.state.rows if self.state else []):
            if row["block"] == "main":  # replay: same intensities, same answers
                next(self.quest)
                self.quest.addResponse(int(row["correct"]),
                                       intensity=float(row["quest_intensity"]))

    # -- screens -------------------------------------------------------------------
    def _screen(self, name, prefix="", **fields):
        """Show the screen ``text.<name>`` (fields: experiments.config.TEXT_FIELDS) and
        wait for the continue key; the quit key stops the session."""
        keys = self.cfg["responses"]
        mapping = "\n".join(f"{label}: press {key.upper()}"
                            for label, key in self.mapping.items())
        text = self.cfg["text"][name].format(
            mapping=mapping, continue_key=keys["continue_key"].upper(), **fields)
        self.presenter.text(prefix + text)
        self._logging.exp(f"screen {name}: waiting for {keys['continue_key']}")
        self._logging.flush()
        got = self.responder.wait_keys([keys["continue_key"], keys["quit_key"]])
        if got == keys["quit_key"]:
            raise _Quit()

    # -- trials --------------------------------------------------------------------
    def _n_bubbles(self, block):
        q = self.cfg["quest"]
        if block == "practice":
            n = self.cfg["trials"]["practice_bubbles"] or self.spec.total_bubbles
            return int(n), None
        log_n = next(self.quest)
        n = int(np.clip(round(10 ** log_n), q["min_bubbles"], q["max_bubbles"]))
        return n, math.log10(n)

    def _trial(self, t, prepared, intensity):
        cfg, tm = self.cfg, self.cfg["timing"]
        block = "practice" if t < self.n_practice else "main"
        stim_row = self.stimuli.table.iloc[prepared.stim_index]
        if self.presenter.fixation(tm["fixation_frames"], self.responder):
            raise _Quit()
        shown = self.presenter.present(tm["stimulus_frames"], self.responder,
                                       grab=self.responder.needs_frame)
        seen = shown.frame if shown.frame is not None else prepared.image
        begin = getattr(self.responder, "begin_trial", None)
        if begin is not None:       # simulated observers: which image, which spec
            begin(prepared)
        self.rt_clock.reset()
        response = self.responder.respond(seen, dict(self.mapping), clock=self.rt_clock)
        shown = self.presenter.clear(shown)
        if response.key == cfg["responses"]["quit_key"]:
            raise _Quit()
        correct = int(response.label == stim_row["expression"])
        if self.sampler is not None:
            self.sampler.tell(t, correct)
        if block == "main":
            self.quest.addResponse(correct, intensity=intensity)
        n = prepared.spec.total_bubbles
        row = self._row(t, block, prepared, response, correct, intensity,
                        frames_shown=shown.frames_shown,
                        dropped_frames=shown.dropped_frames,
                        onset=round(shown.onset - self.t0, 6))
        self._write(row, prepared)
        log = self._logging
        log.data(f"trial {t} {block}: n_bubbles={n} correct={correct} "
                 f"frames={shown.frames_shown} dropped={shown.dropped_frames} "
                 f"prep_ms={self._prep_ms:.2f} intervals_ms="
                 f"{[round(1000 * x, 2) for x in shown.intervals]}")
        if response.key is None:
            log.warning(f"trial {t}: no response within the response window")
        log.flush()
        feedback = cfg["trials"]["feedback_practice" if block == "practice"
                                 else "feedback_main"]
        if feedback and cfg["trials"]["feedback_frames"]:
            word = "Correct" if correct else ("Too slow" if response.key is None
                                              else "Wrong")
            self.presenter.text(word)
            if self.presenter.blank(cfg["trials"]["feedback_frames"] - 1, self.responder):
                raise _Quit()

    def _row(self, t, block, prepared, response, correct, intensity, **timing):
        """The CSV row of trial ``t`` (``timing``: frames_shown, dropped_frames, onset
        and, in the scanner, run, planned_onset, duration)."""
        stim_row = self.stimuli.table.iloc[prepared.stim_index]
        quest = block == "main" and self.quest is not None
        return {
            "participant": self.participant, "session": self.session, "trial": t,
            "block": block, "stimulus_id": stim_row["stimulus_id"],
            "identity": stim_row["identity"], "expression": stim_row["expression"],
            "key": response.key, "response": response.label, "correct": correct,
            "rt": response.rt, "n_bubbles": prepared.spec.total_bubbles,
            "quest_intensity": intensity if block == "main" else None,
            "quest_mean": float(self.quest.mean()) if quest else None,
            "quest_sd": float(self.quest.sd()) if quest else None,
            "mask_seed": self.mask_seed, "mask_index": prepared.mask_index,
            "psychopyVersion": self.psychopy_version,
            "frameRate": round(self.presenter.frame_rate, 3),
            "expName": self.cfg["expName"], "date": self.date, **timing}

    def _write(self, row, prepared):
        """Append the trial's centres record and CSV row (fsynced)."""
        self.files.write_trial(row, {"trial": row["trial"], "mask_seed": self.mask_seed,
                                     "mask_index": prepared.mask_index,
                                     "centers": prepared.centers_json()})

    def _prepare(self, t):
        """ITI work for trial t: choose n_bubbles, build the stimulus, upload it."""
        block = "practice" if t < self.n_practice else "main"
        n, intensity = self._n_bubbles(block)
        t0 = time.perf_counter()
        centers = None
        if self.sampler is not None:
            blocks = len(self.sampler.densities)
            centers = self.sampler.centers(t, n)
            if len(self.sampler.densities) > blocks:     # a new block: record its density
                save_densities(self._densities_path(self.files.stem),
                               self.sampler.densities, self.policy)
        prepared = self.builder.build(self.plan[t], n, mask_index=t, centers=centers)
        self.presenter.load(prepared.image)
        self._prep_ms = 1000 * (time.perf_counter() - t0)
        return prepared, intensity

    def _loop(self):
        cfg, total = self.cfg, self.n_practice + self.n_main
        if self.start < total:
            prefix = "" if self.start == 0 else (
                f"Resuming the session at trial {self.start + 1} of {total}.\n\n")
            self._screen("instructions", prefix)
        for t in range(self.start, total):
            if t == self.n_practice and self.n_practice and t != self.start:
                self._screen("practice_done")
            main_done = t - self.n_practice
            every = cfg["trials"]["break_every"]
            if main_done > 0 and every and main_done % every == 0 and t != self.start:
                self._screen("break_message", done=main_done, total=self.n_main)
            iti = cfg["timing"]["iti_frames"]
            if self.presenter.blank(min(iti, 1), self.responder):
                raise _Quit()
            prepared, intensity = self._prepare(t)
            if self.presenter.blank(max(iti - 1, 0), self.responder):
                raise _Quit()
            self._trial(t, prepared, intensity)
            self.n_done = t + 1

    # -- the whole session ----------------------------------------------------------
    def run(self):
        """Run (or finish) the session; return a :class:`SessionResult`.

        Escape saves and ends cleanly (``escaped=True``); any other error still closes
        the files and the window before it propagates, and says how to resume. A resume
        with no trial left (killed after the last trial was written) opens no window:
        it only finishes the session (status, log, BIDS copy).
        """
        from psychopy import core

        kind = self._presenter_kind
        cls = {"window": WindowPresenter, "headless": HeadlessPresenter}.get(kind)
        if cls is None:
            raise ValueError(f"presenter must be 'window' or 'headless', got {kind!r}")
        if self.trials_left == 0:
            return self._complete_recorded()
        self._announce()
        # the responder and the window first: if either cannot start, nothing is written.
        # A simulated observer's noise is seeded per participant, session and run: the
        # first trial of this run is known before any file is touched (a resume
        # continues after the recorded rows, which the repair never shortens), so a
        # resumed run draws fresh noise instead of replaying the first run's.
        first = len(self.state.rows) if self.state is not None else 0
        self.responder_seed = responder_seed(self.order_seed, self.mask_seed, first)
        self.responder = self._responder or make_responder(
            self.simulate, stimuli=self.stimuli, labels=self.labels, cfg=self.cfg,
            seed=self.responder_seed, decision_noise=self.decision_noise)
        self.presenter = cls(self.cfg, self.stimuli.shape, pilot=self.pilot)
        try:
            self._open_files()
            self._open_log()
        except BaseException:
            if getattr(self, "files", None) is not None:
                self.files.close()
            self.presenter.close()
            raise
        self.n_done = self.start
        self.psychopy_version = _versions()["psychopy"]
        escaped, status = False, "crashed"
        try:
            self._make_quest()
            self.builder = trials.StimulusBuilder(self.stimuli.images, self.spec,
                                                  self.mask_seed)
            self.builder.precompute(sorted(set(self.plan[self.start:])))
            self.rt_clock = core.Clock()
            self.t0 = self.presenter.now()
            try:
                self._loop()
                status = "completed"
                self._screen("end")
            except _Quit:
                if status != "completed":
                    escaped, status = True, "escaped"
        finally:
            status = self._finish(status)
        msg = self._end_message(escaped)
        print(msg)
        return SessionResult(self.files.stem, self.n_done, status == "completed", escaped,
                             dict(self.result_files), msg)

    def _announce(self):
        """Print what the operator must know before the window opens (nothing here)."""

    def _end_message(self, escaped):
        total = self.n_practice + self.n_main
        if escaped:
            return (f"Session stopped by {self.cfg['responses']['quit_key']} after "
                    f"{self.n_done} of {total} trials; data saved to {self.files.stem}.*"
                    f" (continue with: bubbles run --resume {self.files.csv_path})")
        return f"Session complete: {self.n_done} trials saved to {self.files.stem}.*"

    def _finish_mode(self, status, problems):
        """Close what the mode adds to the files, before the sidecar is written."""

    def _complete_recorded(self):
        """Finish a session whose trials are all recorded but whose end never was: a
        run entry, the log's end, the BIDS copy and the status; no window, no trial,
        the CSV and centres file unchanged."""
        self.responder = self.presenter = None
        self.responder_seed = None
        self._open_files()
        self._open_log()
        self.n_done = self.start
        self._logging.exp(f"all {self.start} trials are recorded: finishing the "
                          f"session (status, log, BIDS copy)")
        status = self._finish("completed")
        msg = (f"Session complete: all {self.n_done} trials were already recorded in "
               f"{self.files.stem}.*; the session is now finished (status, log, BIDS "
               f"copy)")
        print(msg)
        return SessionResult(self.files.stem, self.n_done, status == "completed", False,
                             dict(self.result_files), msg)

    def _finish(self, status):
        """Close the files and record how the run ended (sidecar, log, BIDS copy).

        Never raises for a file that cannot be written (a full disk): what could not be
        done is printed with the way to resume, and the error that ended the session
        (if any) is the one that propagates. Returns the session's status.
        """
        log = self._logging
        files = self.files
        self.result_files = {"csv": files.csv_path, "centers": files.centers_path,
                             "sidecar": files.sidecar_path, "log": files.log_path}
        if self.policy is not None:
            self.result_files["densities"] = self._densities_path(files.stem)
        problems = []
        try:
            files.close()
        except OSError as err:
            problems.append(f"closing the data files failed ({err})")
        n = self.n_done - self.start
        run = self.meta["runs"][-1]
        run.update(ended=_now(), n_trials=n, last_trial=self.n_done - 1 if n else None,
                   status=status)
        session_status = status
        if status in ("completed", "escaped"):
            try:   # derived from the CSV: a resumed session replaces its own copy
                tsv, js = datafile.export_bids(files.csv_path, self.data_dir,
                                               self.participant, self.cfg["expName"],
                                               session=self.session, meta=self.meta)
                self.result_files.update(bids_tsv=tsv, bids_json=js)
                run["bids"] = [str(tsv), str(js)]
            except OSError as err:
                problems.append(f"the BIDS copy could not be written ({err})")
                run["bids_error"] = str(err)
                if status == "completed":
                    session_status = "unfinished"   # a resume writes it
        self._finish_mode(status, problems)
        self.meta["status"] = session_status
        try:
            files.write_sidecar(self.meta)
        except OSError as err:
            problems.append(f"the sidecar {files.sidecar_path} could not be updated "
                            f"({err}): it still says 'running', which --resume handles")
        try:
            log.exp(f"session {status} after {self.n_done} trials")
            for problem in problems:
                log.error(problem)
        except OSError:
            pass
        if status == "crashed" or problems:
            what = (f"Session interrupted by an error after {self.n_done} trials"
                    if status == "crashed" else f"Session {status} after {self.n_done} "
                                                f"trials, but")
            print(f"{what}; they are saved in {files.stem}.*"
                  + "".join(f"; {p}" for p in problems)
                  + f" (continue with: bubbles run --resume {files.csv_path})",
                  file=sys.stderr)
        try:
            if status == "escaped" and self.presenter is not None:
                try:
                    self.presenter.text(f"Session stopped. Data saved "
                                        f"({self.n_done} trials).",
                                        frames=int(round(self.presenter.frame_rate)))
                except Exception:  # the window may be gone already
                    pass
            if self.presenter is not None:
                self.presenter.close()
            if self._responder is None and getattr(self, "responder", None) is not None:
                self.responder.close()
        finally:
            try:
                log.flush()
            except OSError:
                pass
            log.root.removeTarget(self.logfile)
            try:
                self.logfile.stream.close()
            except OSError:
                pass
        return session_status
