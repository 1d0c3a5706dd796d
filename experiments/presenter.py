"""Presenters: what draws a session — a PsychoPy window, or nothing (headless).

The session loop talks to a presenter through six calls (``text``, ``load``, ``blank``,
``fixation``, ``present``, ``close``), so the same loop runs on a screen and,
for long simulated runs in tests, without one. The scanner mode, paced by the clock
rather than by frames, uses four more: ``ready`` (draw the stimulus into the back
buffer, and read it back for a simulated observer), ``flip`` (show what is drawn;
returns the flip time), ``show_fixation`` and ``pump`` (keep the window responsive
while the session waits); the screen holds the last flipped image, so a stimulus
takes one flip on and one flip off, each made ``flip_lead`` seconds before its
scheduled time: half a frame when flips wait for the vertical retrace (the flip then
lands on the retrace nearest to the scheduled time), none when they do not (Xvfb, a
display without vsync: the flip shows at once).

:class:`WindowPresenter` follows PsychoPy's timing rules: durations are whole frames,
one draw and one flip per frame; the next image is uploaded (``ImageStim.image``)
before the fixation, never between stimulus frames; frame intervals are recorded only
around the stimulus frames and the dropped frames counted per trial. The frame a
simulated observer sees is read back from the back buffer after the stimulus is drawn,
cropped to the stimulus, converted to grey in [0, 1] and resampled to the image shape.

:class:`HeadlessPresenter` draws nothing; it hands the responder the image quantised to
8 bits as a screen would show it and counts frames without waiting for them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Shown", "WindowPresenter", "HeadlessPresenter", "grey_crop",
           "stimulus_size_px"]


@dataclass
class Shown:
    """What one stimulus presentation did.

    Attributes
    ----------
    frame : ndarray or None
        The drawn frame (H, W) grey in [0, 1] when a grab was asked for.
    onset : float
        Time of the onset flip, seconds on the presenter's clock.
    frames_shown : int
        Frames the stimulus was on screen.
    dropped_frames : int
        Frames dropped while it was on.
    intervals : list of float
        Frame intervals (seconds) recorded around the stimulus frames.
    """

    frame: np.ndarray | None
    onset: float
    frames_shown: int = 0
    dropped_frames: int = 0
    intervals: list = field(default_factory=list)


def stimulus_size_px(shape, size_deg, width_cm, distance_cm, screen_width_px):
    """Displayed stimulus (width, height) in screen pixels.

    ``size_deg = 0`` shows one screen pixel per image pixel; otherwise the image width
    spans ``size_deg`` degrees of visual angle at ``distance_cm`` on a screen
    ``width_cm`` wide with ``screen_width_px`` pixels (aspect ratio kept).
    """
    h, w = shape
    if not size_deg:
        return float(w), float(h)
    px_per_cm = screen_width_px / width_cm
    width = 2.0 * distance_cm * math.tan(math.radians(size_deg) / 2.0) * px_per_cm
    return width, width * h / w


def grey_crop(rgb, size_px, shape):
    """Grey [0, 1] crop of a centred stimulus from a screen grab, at image resolution.

    Parameters
    ----------
    rgb : ndarray, shape (Hs, Ws, 3), uint8
        The window's pixels, top row first.
    size_px : (float, float)
        Displayed stimulus (width, height) in window pixels.
    shape : (int, int)
        Image (H, W) to resample to.
    """
    from PIL import Image

    hs, ws = rgb.shape[:2]
    w, h = int(round(size_px[0])), int(round(size_px[1]))
    top, left = (hs - h) // 2, (ws - w) // 2
    crop = rgb[max(top, 0):top + h, max(left, 0):left + w].astype(np.float32)
    grey = crop.mean(axis=2) / 255.0
    if grey.shape != tuple(shape):
        img = Image.fromarray(grey.astype(np.float32))
        grey = np.asarray(img.resize((shape[1], shape[0]), Image.BILINEAR))
    return grey.astype(np.float32)


class WindowPresenter:
    """A PsychoPy window showing text, a fixation cross and the bubbled image.

    Parameters
    ----------
    cfg : dict
        Validated configuration (``window`` table).
    shape : (int, int)
        Image shape in pixels.
    pilot : bool
        Force a window (not full screen) and show the mouse.
    """

    def __init__(self, cfg, shape, *, pilot=False):
        from psychopy import logging, monitors, visual

        wcfg = cfg["window"]
        self._logging = logging
        monitor = monitors.Monitor("bubblesMonitor", width=wcfg["monitor_width_cm"],
                                   distance=wcfg["monitor_distance_cm"], autoLog=False)
        monitor.setSizePix(wcfg["size"])
        rate = wcfg["frame_rate"]
        self.win = visual.Window(
            wcfg["size"], fullscr=wcfg["fullscreen"] and not pilot,
            screen=wcfg["screen"], monitor=monitor, units="pix",
            color=2 * wcfg["color"] - 1, colorSpace="rgb", allowGUI=pilot,
            checkTiming=not rate, winType="pyglet")
        if rate:
            self.frame_rate = float(rate)
        else:
            measured = self.win.getActualFrameRate()
            self.frame_rate = float(measured) if measured else 60.0
            if not measured:
                logging.warning("could not measure the frame rate; assuming 60 Hz")
        self.win.monitorFramePeriod = 1.0 / self.frame_rate
        self.win.refreshThreshold = 1.2 / self.frame_rate
        self.shape = tuple(shape)
        self.size_px = stimulus_size_px(shape, wcfg["stimulus_size_deg"],
                                        wcfg["monitor_width_cm"],
                                        wcfg["monitor_distance_cm"], self.win.size[0])
        if self.size_px[0] > self.win.size[0] or self.size_px[1] > self.win.size[1]:
            logging.warning(f"the stimulus ({self.size_px[0]:.0f} x {self.size_px[1]:.0f} "
                            f"px) is larger than the window {list(self.win.size)}: it is "
                            "cut off, and simulated observers see only the visible part")
        self.image = visual.ImageStim(self.win, image=np.zeros(self.shape, np.float32),
                                      size=self.size_px, units="pix", flipVert=True,
                                      interpolate=self.size_px != self.shape[::-1],
                                      autoLog=False)
        fg = "black" if wcfg["color"] > 0.6 else "white"
        self.message = visual.TextStim(self.win, text="", height=22, color=fg,
                                       wrapWidth=min(900, self.win.size[0] * 0.9),
                                       units="pix", autoLog=False)
        self.cross = visual.ShapeStim(self.win, vertices="cross", size=20, lineColor=fg,
                                      fillColor=fg, units="pix", autoLog=False)
        self.monitor_info = {
            "width_cm": wcfg["monitor_width_cm"],
            "distance_cm": wcfg["monitor_distance_cm"],
            "size_pix": [int(v) for v in self.win.size], "frame_rate": self.frame_rate,
            "stimulus_size_px": list(self.size_px),
            "fullscreen": bool(getattr(self.win, "_isFullScr", False)),
        }

    def now(self):
        """Seconds on ``psychopy.logging.defaultClock`` (what ``win.flip`` returns)."""
        return self._logging.defaultClock.getTime()

    @property
    def frame_period(self):
        """Seconds per video frame."""
        return 1.0 / self.frame_rate

    @property
    def flip_lead(self):
        """Seconds before a scheduled time to call :meth:`flip`: half a frame when
        flips wait for the retrace, else 0. Measured once, from 6 flips."""
        if getattr(self, "_flip_lead", None) is None:
            times = [self.win.flip() for _ in range(6)]
            self.vsync = bool(np.mean(np.diff(times)) > 0.5 * self.frame_period)
            self.monitor_info["vsync"] = self.vsync
            self._flip_lead = 0.5 * self.frame_period if self.vsync else 0.0
        return self._flip_lead

    def ready(self, *, grab=False):
        """Draw the loaded stimulus into the back buffer (shown at the next
        :meth:`flip`); return the drawn frame (grey, image shape) when ``grab``."""
        self.image.draw()
        return self.grab() if grab else None

    def flip(self):
        """Show what is drawn; return the flip time (:meth:`now`'s clock)."""
        return self.win.flip()

    def show_fixation(self):
        """Flip to the fixation cross; return the flip time."""
        self.cross.draw()
        return self.win.flip()

    def pump(self):
        """Dispatch the window's events (it stays responsive during long waits)."""
        from psychopy import clock

        dispatch = getattr(clock, "_dispatchWindowEvents", None)
        if dispatch is not None:
            dispatch()

    def text(self, text, frames=1):
        """Show a message for ``frames`` frames; it stays up until the next flip."""
        self.message.text = text
        for _ in range(max(1, frames)):
            self.message.draw()
            self.win.flip()

    def load(self, image):
        """Upload the next stimulus texture (call during the inter-trial interval)."""
        self.image.image = np.asarray(image, np.float32) * 2.0 - 1.0

    def _frames(self, n, responder, draw=None, *, arm_last=False):
        for i in range(n):
            if draw is not None:
                draw()
            if arm_last and i == n - 1:
                self._record(True)
            self.win.flip()
            if responder.check_quit():
                return True
        return False

    def _record(self, on):
        """Start (clearing the counts) or stop recording frame intervals."""
        win = self.win
        if on and not win.recordFrameIntervals:
            win.frameIntervals = []
            self._dropped0 = win.nDroppedFrames
        win.setRecordFrameIntervals(on, log=False)

    def blank(self, n, responder):
        """``n`` blank frames; True if the responder asked to quit."""
        return self._frames(n, responder)

    def fixation(self, n, responder):
        """``n`` fixation frames; True if the responder asked to quit.

        Frame-interval recording starts before the last fixation flip, so that the
        interval ending at the stimulus onset is recorded too.
        """
        return self._frames(n, responder, self.cross.draw, arm_last=True)

    def grab(self):
        """The back buffer as grey [0, 1] at image resolution, stimulus region only."""
        if hasattr(self.win, "_getFrame"):
            im = self.win._getFrame(buffer="back")
        else:  # pragma: no cover - older PsychoPy
            im = self.win.getMovieFrame(buffer="back")
            self.win.movieFrames.pop()
        rgb = np.asarray(im)
        scale = rgb.shape[1] / float(self.win.size[0])   # framebuffer vs window pixels
        size = (self.size_px[0] * scale, self.size_px[1] * scale)
        return grey_crop(rgb, size, self.shape)

    def present(self, n_frames, responder, *, grab=False):
        """Show the loaded stimulus.

        ``n_frames > 0`` shows it for exactly that many frames and then blanks the
        screen; ``0`` flips it on once and leaves it up (until :meth:`clear`).
        """
        win = self.win
        self._record(True)
        responder.arm(win)
        frame, onset = None, None
        for i in range(max(n_frames, 1)):
            self.image.draw()
            if i == 0 and grab:
                frame = self.grab()
            t = win.flip()
            onset = t if onset is None else onset
        shown = Shown(frame, onset, n_frames)
        if n_frames > 0:
            win.flip()  # stimulus off: ends the last stimulus frame
            self._stop(shown)
        return shown

    def _stop(self, shown):
        self._record(False)
        shown.dropped_frames = self.win.nDroppedFrames - self._dropped0
        shown.intervals = list(self.win.frameIntervals)

    def clear(self, shown):
        """Take an until-response stimulus off; complete ``shown``'s frame counts."""
        if shown.frames_shown:
            return shown
        t_off = self.win.flip()
        shown.frames_shown = max(1, int(round((t_off - shown.onset) * self.frame_rate)))
        self._stop(shown)
        return shown

    def close(self):
        self.win.close()


class HeadlessPresenter:
    """Draws nothing: a fast stand-in for :class:`WindowPresenter` in simulations.

    The responder gets the image quantised to 8 bits, as the screen shows it; frames are
    counted, not waited for.
    """

    def __init__(self, cfg, shape, *, pilot=False):
        self.shape = tuple(shape)
        self.frame_rate = float(cfg["window"]["frame_rate"] or 60.0)
        self.monitor_info = {"headless": True, "frame_rate": self.frame_rate}
        self._t0 = time.perf_counter()
        self._image = None

    def now(self):
        return time.perf_counter() - self._t0

    @property
    def frame_period(self):
        return 1.0 / self.frame_rate

    #: Nothing waits for a retrace: flips are made at the scheduled time.
    flip_lead = 0.0

    def ready(self, *, grab=False):
        return self._image.astype(np.float32) if grab else None

    def flip(self):
        return self.now()

    def show_fixation(self):
        return self.now()

    def pump(self):
        pass

    def text(self, text, frames=1):
        """Nothing is shown."""

    def load(self, image):
        self._image = np.round(np.asarray(image, np.float32) * 255.0) / 255.0

    def blank(self, n, responder):
        return any(responder.check_quit() for _ in range(n))

    def fixation(self, n, responder):
        return self.blank(n, responder)

    def present(self, n_frames, responder, *, grab=False):
        responder.arm(None)
        frame = self._image.astype(np.float32) if grab else None
        return Shown(frame, self.now(), n_frames, 0, [])

    def clear(self, shown):
        if not shown.frames_shown:
            shown.frames_shown = max(1, int(round((self.now() - shown.onset)
                                                  * self.frame_rate)))
        return shown

    def close(self):
        pass
