"""The keyboard responder, fed through PsychoPy's own device (``makeResponse``).

No real key presses: responses are injected into ``Keyboard.device`` as the
psychtoolbox backend would store them (a press, then its release setting the duration).
"""

import csv

import pytest

from experiments.responders import KeyboardResponder, Response
from experiments.session import Session

pytestmark = pytest.mark.window

CHOICES = {"happy": "f", "fearful": "g", "neutral": "h"}


@pytest.fixture(scope="module")
def win():
    from psychopy import visual

    w = visual.Window((100, 100), checkTiming=False, autoLog=False)
    yield w
    w.close()


def _press(responder, name, rt, duration=0.08):
    key = responder.kb.device.makeResponse(code=name, tDown=rt, name=name)
    key.rt, key.duration = rt, duration
    return key


def test_a_key_released_before_respond_is_still_reported(win):
    r = KeyboardResponder(timeout=0.5)
    r.arm(win)
    win.flip()
    _press(r, "g", 0.12)                   # pressed and released during the stimulus
    assert r.respond(None, CHOICES) == Response("g", "fearful", 0.12)


def test_timeout_quit_and_unlisted_keys(win):
    r = KeyboardResponder(timeout=0.05)
    r.arm(win)
    win.flip()
    _press(r, "x", 0.01)                   # not a response key: ignored
    assert r.respond(None, CHOICES) == Response(None, None, None)
    r.arm(win)
    win.flip()
    assert not r.check_quit()
    key = _press(r, "escape", 0.02, duration=None)   # still held down
    assert r.check_quit()
    key.duration = 0.05                               # now released
    assert r.check_quit()
    assert r.respond(None, CHOICES).key == "escape"
    with pytest.raises(ValueError, match=r"backend must be None, 'ptb' or 'iohub'"):
        KeyboardResponder(backend="event")


class InjectingKeyboard(KeyboardResponder):
    """The real keyboard path, with one injected press per stimulus onset."""

    def __init__(self, answers, **kwargs):
        super().__init__(**kwargs)
        self.answers = list(answers)

    def arm(self, win=None):
        super().arm(win)
        _press(self, self.answers.pop(0), 0.3)

    def wait_keys(self, keys, *, clock=None):
        return keys[0]


def test_session_with_the_keyboard_responder(fast_cfg, tmp_path):
    mapping = Session(fast_cfg, "K02").mapping          # the participant's mapping
    keys = list(mapping.values())
    responder = InjectingKeyboard([keys[t % 3] for t in range(7)] + ["escape"],
                                  timeout=2.0)
    session = Session(fast_cfg, "K02", data_dir=tmp_path, responder=responder)
    result = session.run()
    assert result.escaped and result.n_trials == 7
    with open(f"{result.stem}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["key"] for r in rows] == [keys[t % 3] for t in range(7)]
    by_key = {k: label for label, k in session.mapping.items()}
    assert all(r["response"] == by_key[r["key"]] for r in rows)
    assert {r["rt"] for r in rows} == {"0.3"}
