import subprocess
import sys

from commands.main import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_fails_clearly(capsys):
    assert main(["analyse"]) == 2
    assert "unknown command 'analyse'" in capsys.readouterr().err


def test_console_script_imports_no_heavy_module():
    # `bubbles --help` must not import psychopy or torch (they load lazily per command)
    code = ("import sys; from commands.main import main; main(['--help']);"
            "print('psychopy' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[-2:] == ["False", "False"]
