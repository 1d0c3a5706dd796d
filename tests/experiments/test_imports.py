"""The experiments package and ``bubbles run`` import without psychopy (or torch)."""

import subprocess
import sys
from pathlib import Path

from commands.main import main


def test_modules_import_without_psychopy():
    code = ("import sys, commands.run, experiments.session, experiments.responders, "
            "experiments.datafile, experiments.trials, experiments.presenter, "
            "experiments.config, experiments.scanner, experiments.schedule, experiments.triggers; "
            "bad = [m for m in ('psychopy', 'torch', 'pyglet', 'nilearn') "
            "if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root)
    assert out.returncode == 0, out.stdout + out.stderr


def test_bubbles_dispatcher_reaches_run(capsys):
    assert main(["run", "--help"]) == 0
    assert "usage: bubbles run" in capsys.readouterr().out
