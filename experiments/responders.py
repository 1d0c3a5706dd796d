"""Responders: who answers a bubbles trial — a person at the keyboard or a simulation.

A session never reads the keyboard itself; it asks a :class:`Responder` for each answer.
The same session loop (window, timing, QUEST, data files) therefore runs with a person,
with a scripted list of answers, with the analysis package's template observer, or with
a network from ``ann_bridge``. Simulated responders set ``needs_frame = True`` and
receive the frame actually drawn on the screen (read back from the back buffer, grey,
in [0, 1], in stimulus coordinates) rather than the array the session meant to draw.

``choices`` is always a dict ``label -> key`` in the participant's key mapping:
iterating it gives the labels, ``choices[label]`` the key that reports the label.

In the scanner mode the session never waits for an answer (the scanner's schedule goes
on). A *live* responder (a person: ``live = True``) is polled: the session calls
:meth:`Responder.start_poll` just before the onset and :meth:`Responder.poll` while the
response window is open; the keyboard returns the first response key pressed after the
onset, timed from the key press. A simulated observer (``live = False``) is asked with
:meth:`Responder.respond` before the onset, on the frame already drawn for it, so that
its computing time is not taken from the scanner's schedule.

Examples
--------
>>> from experiments.responders import ScriptedResponder
>>> r = ScriptedResponder(["happy", "sad"], rt=0.4)
>>> r.respond(None, {"happy": "f", "sad": "j"})
Response(key='f', label='happy', rt=0.4)
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass

import numpy as np

from analysis.simulate import TemplateObserver, label_templates
from bubbles import background_levels

__all__ = ["Response", "Responder", "KeyboardResponder", "ScriptedResponder",
           "TemplateResponder", "ModelResponder", "model_responder", "make_responder"]


@dataclass(frozen=True)
class Response:
    """One answer.

    Attributes
    ----------
    key : str or None
        The key pressed (the quit key when the participant asked to stop); None when
        the response window ran out.
    label : str or None
        The choice the key stands for; None for a timeout or the quit key.
    rt : float or None
        Reaction time in seconds from stimulus onset; None for a timeout.
    """

    key: str | None
    label: str | None
    rt: float | None


class Responder:
    """Base class: answer trials and advance screens.

    Subclasses implement :meth:`respond`; the other methods have working defaults for
    simulated observers (screens advance at once, nothing asks to quit).

    Attributes
    ----------
    needs_frame : bool
        True if :meth:`respond` needs the drawn frame (the session then reads the back
        buffer after drawing the stimulus; a person does not need it).
    quit_key : str
        The key that ends the session.
    """

    needs_frame = False
    quit_key = "escape"
    #: True for a person, whose answer the scanner mode polls after the onset.
    live = False

    def arm(self, win=None):
        """Called just before the stimulus onset flip (start listening, reset clocks)."""

    def begin_trial(self, prepared):
        """Called before :meth:`respond` with the trial's
        :class:`experiments.trials.Prepared` (``stim_index``: which image of the set
        is shown; ``spec``: the trial's BubbleSpec). Simulated observers may use it for
        what a person sees anyway (the grey of the hidden parts); a person ignores it.
        """

    def start_poll(self, choices):
        """Scanner mode: called just before a stimulus onset (answers given before it
        must not count)."""

    def poll(self, stimulus, choices, *, clock):
        """Scanner mode, live responders: the answer if there is one, else None;
        never waits.

        ``clock.onset`` is the onset on the session's clock, ``clock.since(t)`` the
        scanner seconds from the onset to time ``t`` of that clock and
        ``clock.getTime()`` the scanner seconds since the onset. The default answers at
        once with :meth:`respond`.
        """
        return self.respond(stimulus, choices, clock=clock)

    def respond(self, stimulus, choices, *, clock=None):
        """Answer one trial.

        Parameters
        ----------
        stimulus : ndarray, shape (H, W)
            Grey frame in [0, 1] as drawn (simulated responders) or as meant to be drawn.
        choices : dict
            ``label -> key`` in the participant's mapping.
        clock : psychopy.core.Clock, optional
            Reset at stimulus onset; simulated responders may read it for ``rt``.

        Returns
        -------
        Response
        """
        raise NotImplementedError

    def wait_keys(self, keys, *, clock=None):
        """Wait on an instruction or break screen for one of ``keys``; return it."""
        return keys[0]

    def check_quit(self):
        """True if the participant asked to quit since the last call (polled per frame)."""
        return False

    def close(self):
        """Release devices."""


def _elapsed(clock):
    return float(clock.getTime()) if clock is not None else float("nan")


def _answer(label, choices, quit_key, rt):
    """Response for ``label`` (a choice label, the quit key or None)."""
    if label is None:
        return Response(None, None, None)
    if label == quit_key:
        return Response(quit_key, None, rt)
    if label not in choices:
        raise ValueError(f"answer must be one of the choice labels {list(choices)} or "
                         f"the quit key {quit_key!r}, got {label!r}")
    return Response(choices[label], label, rt)


class ScriptedResponder(Responder):
    """Answers from a list, or from a function of the trial.

    Parameters
    ----------
    answers : sequence or callable
        A sequence of choice labels (one per trial; the quit key ends the session, None
        is a timeout), or ``answers(stimulus, choices, n) -> label`` with ``n`` the
        number of earlier calls.
    rt : float
        Reaction time reported, seconds.
    needs_frame : bool
        Ask the session for the drawn frame; with ``keep_frames`` they are stored in
        ``frames`` (for tests of what was drawn).
    screen_keys : sequence of str, optional
        Keys returned by successive :meth:`wait_keys` calls (then the first key asked
        for); use the quit key here to quit on an instruction or break screen.
    """

    def __init__(self, answers, *, rt=0.5, needs_frame=False, keep_frames=False,
                 screen_keys=(), quit_key="escape"):
        if not callable(answers):
            answers = list(answers)
        if not (isinstance(rt, (int, float)) and rt >= 0):
            raise ValueError(f"rt must be a number of seconds >= 0, got {rt!r}")
        self.answers = answers
        self.rt = float(rt)
        self.needs_frame = bool(needs_frame or keep_frames)
        self.keep_frames = keep_frames
        self.frames = []
        self.screen_keys = list(screen_keys)
        self.quit_key = quit_key
        self.n_calls = 0

    @classmethod
    def random(cls, seed=0, **kwargs):
        """A responder that picks a label uniformly at random (seeded)."""
        rng = np.random.default_rng(seed)
        return cls(lambda stimulus, choices, n: list(choices)[rng.integers(len(choices))],
                   **kwargs)

    def respond(self, stimulus, choices, *, clock=None):
        n = self.n_calls
        self.n_calls += 1
        if self.keep_frames:
            self.frames.append(np.array(stimulus, copy=True))
        if callable(self.answers):
            label = self.answers(stimulus, choices, n)
        elif n < len(self.answers):
            label = self.answers[n]
        else:
            raise RuntimeError(f"ScriptedResponder ran out of answers after {n} trials; "
                               "give one answer per trial or a callable")
        return _answer(label, choices, self.quit_key, self.rt)

    def wait_keys(self, keys, *, clock=None):
        if self.screen_keys:
            return self.screen_keys.pop(0)
        return keys[0]


class TemplateResponder(Responder):
    """A simulated observer that matches the drawn frame against templates.

    Wraps an object with ``decide(stimulus, background=...) -> label`` such as
    :class:`analysis.simulate.TemplateObserver`; the observer subtracts ``background``
    (the grey of the hidden parts) before matching.

    Parameters
    ----------
    observer : object
        Has ``decide(stimulus, background=0.5)`` returning one of the choice labels.
    background : float or sequence of float
        Grey level of the hidden parts of the stimulus, passed to ``decide``: one value
        for every image, or one per image of the stimulus set (see
        :func:`bubbles.background_levels`; the session then tells the responder which image
        is shown through :meth:`begin_trial`).
    rt : float or None
        Reaction time to report; None reports the time since onset from the clock.
    """

    needs_frame = True

    def __init__(self, observer, *, background=0.5, rt=None):
        if not callable(getattr(observer, "decide", None)):
            raise ValueError("observer must have a decide(stimulus, background=...) "
                             f"method, got {type(observer).__name__}")
        self.observer = observer
        bg = np.asarray(background, dtype=np.float64)
        if bg.ndim > 1 or bg.size == 0 or not np.all(np.isfinite(bg)):
            raise ValueError("background must be a grey level or one per image, got "
                             f"{background!r}")
        self.background = float(bg) if bg.ndim == 0 else np.asarray(background,
                                                                    np.float32)
        self.rt = rt
        self._index = None

    @classmethod
    def from_stimuli(cls, stimuli, labels, *, background="mean", internal_noise=None,
                     seed=0, rt=None):
        """Template observer whose template per label is the mean image of that label.

        Parameters
        ----------
        stimuli : bubbles.stimuli.StimulusSet
        labels : sequence of str
            Expression labels the observer chooses among.
        background : 'mean', 'noise', float or sequence of float
            The session's ``bubbles.background``: the hidden parts of each stimulus are
            taken to be the grey :func:`bubbles.background_levels` gives for its
            image (the grey :func:`bubbles.apply_bubbles` fills them with).
        internal_noise : float, optional
            Passed to ``TemplateObserver`` (its default when None).

        The template of a label is its mean image minus the mean over labels (the part
        that tells the labels apart).
        """
        templates = label_templates(stimuli.images, stimuli.table["expression"], labels)
        kwargs = {"seed": seed}
        if internal_noise is not None:
            kwargs["internal_noise"] = internal_noise
        levels = background_levels(stimuli.images, background)
        if not isinstance(background, str):      # one grey level for every image
            levels = float(levels[0])
        return cls(TemplateObserver(templates, **kwargs), background=levels, rt=rt)

    def begin_trial(self, prepared):
        self._index = int(prepared.stim_index)

    def current_background(self):
        """The grey level the hidden parts of the current stimulus have."""
        if np.ndim(self.background) == 0:
            return self.background
        if self._index is None:
            raise RuntimeError("TemplateResponder with one background per image needs "
                               "begin_trial(prepared) before each respond()")
        return float(self.background[self._index])

    def respond(self, stimulus, choices, *, clock=None):
        bg = self.current_background()
        self._index = None
        label = self.observer.decide(stimulus, background=bg)
        rt = self.rt if self.rt is not None else _elapsed(clock)
        return _answer(label, choices, self.quit_key, rt)


class ModelResponder(Responder):
    """A simulated observer that classifies the drawn frame with a model.

    Wraps any object with ``decide(stimulus) -> label`` and ``labels`` (the labels it
    answers with), such as :class:`ann_bridge.observer.NetworkObserver`; the observer
    knows nothing of keys, clocks or sessions.

    Parameters
    ----------
    observer : object
        Has ``decide(stimulus)`` returning one of the choice labels.
    rt : float or None
        Reaction time to report; None reports the time since onset from the clock.
    """

    needs_frame = True

    def __init__(self, observer, *, rt=None):
        if not callable(getattr(observer, "decide", None)):
            raise ValueError("observer must have a decide(stimulus) method, got "
                             f"{type(observer).__name__}")
        if rt is not None and not (isinstance(rt, (int, float)) and rt >= 0):
            raise ValueError(f"rt must be None or a number of seconds >= 0, got {rt!r}")
        self.observer = observer
        self.rt = rt

    @property
    def labels(self):
        """The labels the observer answers with."""
        return tuple(getattr(self.observer, "labels", ()))

    def respond(self, stimulus, choices, *, clock=None):
        label = self.observer.decide(stimulus)
        rt = self.rt if self.rt is not None else _elapsed(clock)
        return _answer(label, choices, self.quit_key, rt)

    def close(self):
        close = getattr(self.observer, "close", None)
        if callable(close):
            close()


def model_responder(stimuli, labels, *, seed=0, **kwargs):
    """The network observer of ``ann_bridge`` as a responder (``--simulate model``).

    Imports ``ann_bridge.observer.NetworkObserver`` lazily, so that sessions run without
    torch, and returns ``ModelResponder(NetworkObserver.from_stimuli(stimuli, labels,
    seed=seed, **kwargs))``.

    Raises
    ------
    RuntimeError
        torch is not installed, ann_bridge has no network observer, or it cannot be
        created.
    """
    if importlib.util.find_spec("torch") is None:
        raise RuntimeError("--simulate model needs torch, which is not installed; "
                           "install the 'ann' extra: pip install 'bubbles-toolkit[ann]'")
    try:
        from ann_bridge.observer import NetworkObserver
    except ImportError as err:
        raise RuntimeError("--simulate model needs ann_bridge.observer.NetworkObserver, "
                           f"which could not be imported: {err}") from err
    try:
        observer = NetworkObserver.from_stimuli(stimuli, labels, seed=seed, **kwargs)
    except Exception as err:
        raise RuntimeError(f"--simulate model could not create the network observer: "
                           f"{type(err).__name__}: {str(err).splitlines()[0]}") from err
    return ModelResponder(observer)


class KeyboardResponder(Responder):
    """A person at the keyboard (``psychopy.hardware.keyboard``).

    Uses PsychoPy's default backend (psychtoolbox when libjack is installed, with
    sub-millisecond key timestamps). Keys pressed while the stimulus is on are kept in
    the device buffer, so reaction times count from the onset flip even when the
    stimulus is shown for a fixed number of frames. ``backend='event'`` is refused: in
    PsychoPy 2026.2.5 it returns malformed or no keys.

    Parameters
    ----------
    timeout : float or None
        Seconds from onset before a trial counts as no response; None waits forever.
    quit_key : str
    """

    live = True

    def __init__(self, *, timeout=None, quit_key="escape", backend=None):
        if backend == "event":
            raise ValueError("backend must be None, 'ptb' or 'iohub'; 'event' returns "
                             "malformed keys in PsychoPy 2026.2.5")
        from psychopy.hardware import keyboard

        self.kb = keyboard.Keyboard(backend=backend) if backend else keyboard.Keyboard()
        self.timeout = timeout if timeout else None
        self.quit_key = quit_key

    def arm(self, win=None):
        self.kb.clearEvents()
        if win is not None:
            win.callOnFlip(self.kb.clock.reset)
        else:
            self.kb.clock.reset()

    def respond(self, stimulus, choices, *, clock=None):
        from psychopy import clock as ppclock

        by_key = {key: label for label, key in choices.items()}
        wanted = [*by_key, self.quit_key]
        pump = getattr(ppclock, "_dispatchWindowEvents", lambda: None)
        # Own polling loop, not Keyboard.waitKeys: waitKeys clears the buffer first and
        # would drop a key pressed while a fixed-duration stimulus was on. waitRelease=
        # True: with psychtoolbox, a key pressed *and released* before the poll is
        # skipped by waitRelease=False in PsychoPy 2026.2.5. rt counts from the press.
        while True:
            keys = self.kb.getKeys(keyList=wanted, waitRelease=True, clear=True)
            if keys:
                break
            if self.timeout is not None and self.kb.clock.getTime() >= self.timeout:
                return Response(None, None, None)
            pump()
            time.sleep(0.0005)
        key = keys[0]
        if key.name == self.quit_key:
            return Response(self.quit_key, None, float(key.rt))
        return Response(key.name, by_key[key.name], float(key.rt))

    def wait_keys(self, keys, *, clock=None):
        self.kb.clearEvents()
        got = self.kb.waitKeys(keyList=list(keys), waitRelease=True)
        return got[0].name

    def key_time(self, key):
        """A key press's time on ``psychopy.logging.defaultClock`` (the session's
        clock), from its time on the keyboard's clock."""
        from psychopy import logging

        return (float(key.rt) + self.kb.clock.getLastResetTime()
                - logging.defaultClock.getLastResetTime())

    def _take(self, keys):
        """Every buffered press of ``keys`` (released or still down), removed from the
        buffer, in press order."""
        got = []
        for release in (True, False):
            for key in self.kb.getKeys(keyList=list(keys), waitRelease=release,
                                       clear=True):
                if not any(key is k for k in got):
                    got.append(key)
        return sorted(got, key=self.key_time)

    def start_poll(self, choices):
        self._take(choices.values())          # presses before the onset do not count

    def poll(self, stimulus, choices, *, clock):
        by_key = {key: label for label, key in choices.items()}
        for key in self._take([*by_key, self.quit_key]):
            t = self.key_time(key)
            if t < clock.onset:
                continue
            if key.name == self.quit_key:
                return Response(self.quit_key, None, clock.since(t))
            return Response(key.name, by_key[key.name], clock.since(t))
        return None

    def check_quit(self):
        # held down (no release yet) or already released since the last poll
        return any(self.kb.getKeys(keyList=[self.quit_key], waitRelease=release,
                                   clear=False) for release in (False, True))


def make_responder(kind, *, stimuli, labels, cfg, seed=0, decision_noise=None):
    """Responder for ``--simulate kind`` (None: the keyboard).

    Parameters
    ----------
    kind : {None, 'template', 'scripted', 'model'}
    stimuli : StimulusSet
    labels : sequence of str
        The choice labels of the session.
    cfg : dict
        The validated configuration (timeout, quit key, background).
    decision_noise : float, optional
        ``kind='model'`` only: SD of the noise on the network's logits (passed to
        ``NetworkObserver``); None keeps the observer's default.
    """
    if decision_noise is not None and kind != "model":
        raise ValueError(f"decision_noise applies to simulate='model' only, got "
                         f"simulate={kind!r}")
    quit_key = cfg["responses"]["quit_key"]
    if kind is None:
        return KeyboardResponder(timeout=cfg["timing"]["response_timeout"] or None,
                                 quit_key=quit_key)
    if kind == "scripted":
        return ScriptedResponder.random(seed, quit_key=quit_key)
    if kind == "template":
        # the hidden parts of each stimulus: its own image's mean grey ('mean', and the
        # centre of 'noise') or the configured grey level
        return TemplateResponder.from_stimuli(stimuli, labels, seed=seed,
                                              background=cfg["bubbles"]["background"])
    if kind == "model":
        noise = {} if decision_noise is None else {"decision_noise": decision_noise}
        return model_responder(stimuli, labels, seed=seed, **noise)
    raise ValueError(f"simulate must be one of ['template', 'scripted', 'model'], "
                     f"got {kind!r}")
