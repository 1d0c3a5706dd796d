"""The experiments package imports without pulling in psychopy (or torch)."""

import subprocess
import sys
from pathlib import Path


def test_modules_import_without_psychopy():
    code = ("import sys, experiments.cli, experiments.session, experiments.responders, "
            "experiments.datafile, experiments.trials, experiments.presenter, "
            "experiments.config; "
            "bad = [m for m in ('psychopy', 'torch', 'pyglet') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root)
    assert out.returncode == 0, out.stdout + out.stderr


def test_bubbles_dispatcher_reaches_run(capsys):
    from bubbles.cli import main

    assert main(["run", "--help"]) == 0
    assert "usage: bubbles run" in capsys.readouterr().out
