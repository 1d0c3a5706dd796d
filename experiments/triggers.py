"""Where a scanner session's triggers come from, and its clock.

The scanner sends a trigger at every volume. :class:`KeyTriggers` reads them as the key
presses most trigger boxes send (``'5'``); :class:`SimulatedScanner` makes them from the
session's own clock, ``speed`` times faster, for tests and demos. Both report trigger
times on the session's clock (``psychopy.logging.defaultClock``, what ``win.flip``
returns), so that onsets and triggers are measured on one clock. A trigger source has
three calls: ``start(now, n_triggers)`` when a run begins to wait for the scanner,
``poll(now)`` (the times of the triggers since the last poll; never waits) and
``check_quit()``.

:class:`ScannerClock` turns session-clock times into scanner seconds from a stimulus
onset (times ``speed``); responders use it for reaction times.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ScannerClock", "KeyTriggers", "SimulatedScanner"]


class ScannerClock:
    """Time since a stimulus onset in scanner seconds (session clock times ``speed``).

    Attributes
    ----------
    onset : float
        The onset flip's time on the session's clock.
    speed : float
    """

    def __init__(self, now, onset, speed=1.0):
        self._now, self.onset, self.speed = now, float(onset), float(speed)

    def getTime(self):  # noqa: N802 - the psychopy clock's name
        return (self._now() - self.onset) * self.speed

    def since(self, t):
        """Scanner seconds from the onset to time ``t`` of the session's clock."""
        return (float(t) - self.onset) * self.speed


class KeyTriggers:
    """The scanner's trigger box, seen as presses of ``key`` (what most boxes send).

    Parameters
    ----------
    key : str
        The trigger key (``scanner.trigger_key``).
    quit_key : str
        Stops the session (checked here too, so that Escape works when a simulated
        observer answers in a real scanner).
    keyboard : psychopy.hardware.keyboard.Keyboard, optional
        The keyboard the responder reads (one keyboard for both, so that neither
        empties the other's buffer); a new one when None.
    """

    def __init__(self, key, quit_key="escape", keyboard=None):
        if keyboard is None:
            from psychopy.hardware import keyboard as kb

            keyboard = kb.Keyboard()
        self.key, self.quit_key, self.kb = key, quit_key, keyboard
        self._seen = []

    def _time(self, key):
        from psychopy import logging

        return (float(key.rt) + self.kb.clock.getLastResetTime()
                - logging.defaultClock.getLastResetTime())

    def _take(self):
        got = []
        for release in (True, False):
            for key in self.kb.getKeys(keyList=[self.key], waitRelease=release,
                                       clear=True):
                if not any(key is k for k in got) and not any(key is k
                                                              for k in self._seen):
                    got.append(key)
        return got

    def start(self, now, n_triggers):
        """A run waits for the scanner: triggers pressed before now do not count."""
        self._seen = []
        self._take()

    def poll(self, now):
        """The times (session clock) of the triggers since the last poll, in order."""
        got = self._take()
        self._seen.extend(got)
        return sorted(self._time(k) for k in got)

    def check_quit(self):
        return any(self.kb.getKeys(keyList=[self.quit_key], waitRelease=release,
                                   clear=False) for release in (False, True))


class SimulatedScanner:
    """Triggers at every TR from the session's own clock (``--simulate-scanner``).

    Parameters
    ----------
    tr : float
        Repetition time, scanner seconds.
    speed : float
        Every duration divided by it: a trigger every ``tr / speed`` s of session clock.
    delay : float, optional
        Session-clock seconds from :meth:`start` to the first trigger (the operator
        starting the sequence); one TR when None.
    """

    def __init__(self, tr, *, speed=1.0, delay=None):
        self.step = float(tr) / float(speed)
        self.delay = self.step if delay is None else float(delay)
        self._times, self._i = np.zeros(0), 0

    def start(self, now, n_triggers):
        """The scanner starts: ``n_triggers`` triggers (dummies included) follow."""
        self._times = now + self.delay + self.step * np.arange(int(n_triggers))
        self._i = 0

    def poll(self, now):
        j = int(np.searchsorted(self._times, now, side="right"))
        out, self._i = self._times[self._i:j].tolist(), max(self._i, j)
        return out

    def check_quit(self):
        return False
