"""Shared fixtures of the experiments tests.

PsychoPy writes ``~/.psychopy3`` and rewrites ``sys.path`` when it is imported: HOME is
pointed at a temporary folder and PSYCHOPYNOPACKAGES=1 is set before any test imports
it. Window tests (``@pytest.mark.window``) need an X display; run them under
``xvfb-run -a -s "-screen 0 1024x768x24"``. Without a display they are skipped.
"""

import os
import tempfile

os.environ["PSYCHOPYNOPACKAGES"] = "1"
if not os.environ.get("BUBBLES_TEST_HOME"):
    os.environ["BUBBLES_TEST_HOME"] = tempfile.mkdtemp(prefix="bubbles-home-")
os.environ["HOME"] = os.environ["BUBBLES_TEST_HOME"]

import pytest  # noqa: E402

from bubbles.faces import face_set  # noqa: E402
from experiments.config import load_config  # noqa: E402

#: Fast settings: tiny faces, 1-frame stimuli, no inter-trial interval.
FAST = {
    "stimuli.n_identities": 2, "stimuli.size": 64,
    "bubbles.sigma": 3.0, "bubbles.n_bubbles": 12, "bubbles.bands": 2,
    "trials.practice": 2, "trials.main": 6, "trials.break_every": 3,
    "trials.feedback_frames": 1,
    "timing.fixation_frames": 1, "timing.stimulus_frames": 1, "timing.iti_frames": 0,
    "quest.start": 12, "quest.max_bubbles": 200,
    "window.size": [160, 120], "window.fullscreen": False, "window.frame_rate": 60.0,
}


#: The TOML head the CLI tests' configuration files share: tiny faces, small bubbles.
FACES_TOML = """
[stimuli]
n_identities = 2
size = 64
[bubbles]
sigma = 3.0
n_bubbles = 12
bands = 2
"""

#: A CLI scanner configuration file (FACES_TOML, a small window, the SCANNER timing);
#: ``{n}`` is its trials per run.
SCANNER_TOML = FACES_TOML + """[window]
size = [160, 120]
fullscreen = false
frame_rate = 60.0
[scanner]
enabled = true
tr = 2.0
dummy_volumes = 2
runs = 3
trials_per_run = {n}
iti_min = 1.0
iti_mean = 2.0
iti_max = 4.0
lead_in = 2.0
lead_out = 4.0
"""


#: A fast scanner mode on top of FAST: TR 2 s, 2 dummy volumes, 3 runs of 4 trials with
#: 1-4 s ITIs (about 18 s of scanner time per run), for ``speed=20`` (0.9 s a run).
SCANNER = {
    "scanner.enabled": True, "scanner.tr": 2.0, "scanner.dummy_volumes": 2,
    "scanner.runs": 3, "scanner.trials_per_run": 4, "scanner.stimulus_duration": 0.5,
    "scanner.response_window": 1.5, "scanner.iti_min": 1.0, "scanner.iti_mean": 2.0,
    "scanner.iti_max": 4.0, "scanner.lead_in": 2.0, "scanner.lead_out": 4.0,
}


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DISPLAY"):
        return
    skip = pytest.mark.skip(reason="window test needs an X display: run under "
                                   "xvfb-run -a -s '-screen 0 1024x768x24'")
    for item in items:
        if "window" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fast_cfg():
    """A validated configuration that runs a 8-trial session in about a second."""
    return load_config(overrides=FAST)


@pytest.fixture
def make_cfg():
    """Build a fast configuration with extra dotted-key overrides."""
    def make(**overrides):
        merged = dict(FAST)
        merged.update({k.replace("__", "."): v for k, v in overrides.items()})
        return load_config(overrides=merged)
    return make


@pytest.fixture
def scanner_cfg():
    """Build a fast scanner configuration (:data:`SCANNER`) with dotted overrides
    (``scanner__runs=2``)."""
    def make(**overrides):
        merged = {**FAST, **SCANNER}
        merged.update({k.replace("__", "."): v for k, v in overrides.items()})
        return load_config(overrides=merged)
    return make


@pytest.fixture(scope="session")
def small_faces():
    return face_set(2, size=64)
