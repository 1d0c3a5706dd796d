"""The tutorials in docs/tutorials run as written, so that they cannot drift from the code.

Each tutorial is run top to bottom in its own empty folder: every ```bash block with
bash (``set -euo pipefail``; the repository's ``.venv/bin`` first on PATH, so ``bubbles``
is the one under test), every ```python block with ``exec`` in one namespace per
tutorial (working directory the same folder), and every ```toml block whose info string
names a file (```toml file=my_task.toml) is written to that file first. Other blocks
(```text, plain ```) are output shown to the reader and are not run. Every figure the
page shows (``images/NAME.png``) must be made by the page's own code (``figures/NAME.png``
in the working folder) and be committed under docs/tutorials/images, below 200 KB.

The tutorials open a PsychoPy window (``bubbles run``): they are window tests, skipped
without an X display (run under ``xvfb-run``).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"
NAMES = ["behaviour", "fmri", "networks"]

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
IMAGE = re.compile(r"!\[[^\]]*\]\(images/([^)\s]+\.png)\)")

pytestmark = pytest.mark.window


def blocks(text):
    """The fenced blocks of a markdown text, in order: (language, options, code).

    ``language`` is the first word of the info string (lower case, '' for none),
    ``options`` the ``key=value`` words after it.
    """
    out = []
    for m in FENCE.finditer(text):
        words = m.group(1).split()
        lang = words[0].lower() if words else ""
        options = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        out.append((lang, options, m.group(2)))
    return out


def test_parser_reads_fences_in_order():
    text = ("intro\n```bash\necho 1\n```\n\n```python\nx = 1\n```\n"
            "```toml file=a.toml\nk = 1\n```\n```text\nout\n```\n```\nplain\n```\n")
    assert blocks(text) == [("bash", {}, "echo 1\n"), ("python", {}, "x = 1\n"),
                            ("toml", {"file": "a.toml"}, "k = 1\n"),
                            ("text", {}, "out\n"), ("", {}, "plain\n")]


def _environment(home):
    env = dict(os.environ)
    venv_bin = ROOT / ".venv" / "bin"
    bin_dir = venv_bin if venv_bin.is_dir() else Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(home)                    # PsychoPy writes its preferences there
    env["PSYCHOPYNOPACKAGES"] = "1"
    env["MPLBACKEND"] = "Agg"
    env.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    return env


@pytest.mark.parametrize("name", NAMES)
def test_tutorial_runs_as_written(name, tmp_path, monkeypatch):
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        pytest.skip("the tutorial opens a PsychoPy window: run under xvfb-run")
    page = TUTORIALS / f"{name}.md"
    text = page.read_text()
    work = tmp_path / "work"
    work.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = _environment(home)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": f"tutorial_{name}"}
    ran = 0
    for i, (lang, options, code) in enumerate(blocks(text)):
        where = f"{page.name}, block {i + 1} ({lang})"
        if lang == "toml" and "file" in options:
            (work / options["file"]).write_text(code)
        elif lang == "bash":
            res = subprocess.run(["bash", "-c", "set -euo pipefail\n" + code], cwd=work,
                                 env=env, capture_output=True, text=True, timeout=300)
            assert res.returncode == 0, (
                f"{where} exited {res.returncode}:\n{code}\n--- stdout\n"
                f"{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-3000:]}")
        elif lang == "python":
            exec(compile(code, where, "exec"), namespace)
        else:
            continue
        ran += 1
    assert ran >= 5, f"{page.name}: only {ran} blocks ran"

    shown = IMAGE.findall(text)
    assert shown, f"{page.name} shows no figure"
    for png in shown:
        made = work / "figures" / png
        assert made.is_file(), f"{page.name} shows images/{png}, which its code did not make"
        committed = TUTORIALS / "images" / png
        assert committed.is_file(), f"docs/tutorials/images/{png} is missing"
        assert committed.stat().st_size < 200_000, f"{committed} is over 200 KB"
