"""``bubbles run``: run a bubbles session from the command line.

::

    bubbles run [--config FILE] [--participant ID] [--session N] [--data-dir DIR]
                [--trials N] [--seed N] [--pilot] [--simulate template|scripted|model]
                [--decision-noise X] [--resume FILE]
                [--scanner] [--simulate-scanner] [--speed K] [--bubbles-from CSV]

Without ``--participant`` a dialog (``psychopy.gui.DlgFromDict``) asks for the
participant and session; cancelling it ends cleanly. ``--resume FILE`` continues an
interrupted session from any of its files; its configuration, participant and session
come from the sidecar (a session whose trials are all recorded but whose end was not is
only finished, with no window). ``--decision-noise X`` adds Gaussian noise (SD ``X``,
logit units) to the network's decisions of ``--simulate model``, to bring its accuracy
near a person's. ``--simulate`` runs the identical session, window included (under
``xvfb-run`` when there is no display), with a simulated observer.

``--scanner`` runs the scanner mode (:mod:`experiments.scanner`): runs paced by the
scanner's trigger key, a fixed number of bubbles (``scanner.n_bubbles``, or
``--bubbles-from`` an earlier behavioural session of the participant), BIDS events
per run. ``--simulate-scanner`` sends the triggers from the session's clock,
``--speed K`` times faster (for tests and demos).

Exit status (:func:`commands.common.run_command`): 0 the session completed, was stopped
with Escape, or the dialog was cancelled; 1 a configuration, file or setup error (the
message names it); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys

from commands.common import DataError, run_command, warn
from experiments.config import load_config
from experiments.datafile import validate_participant
from experiments.scanner import ScannerSession, is_scanner_session
from experiments.session import Session

__all__ = ["build_parser", "run", "ask_participant", "dialog_problem"]

NAME = "run"


def build_parser():
    """The argument parser of ``bubbles run``."""
    p = argparse.ArgumentParser(
        prog="bubbles run",
        description="Run a bubbles session: bubbled faces, expression judgments, QUEST "
                    "on the number of bubbles, crash-safe data files.")
    p.add_argument("--config", metavar="FILE",
                   help="TOML configuration (default: experiments/expression_task.toml)")
    p.add_argument("--participant", metavar="ID",
                   help="participant id, a BIDS label: letters and digits only "
                        "(asked in a dialog when left out)")
    p.add_argument("--session", metavar="N", type=int, default=None,
                   help="session number, an integer >= 0 (default 1)")
    p.add_argument("--data-dir", metavar="DIR", default="data",
                   help="folder for the data files (default: data)")
    p.add_argument("--trials", metavar="N", type=int, default=None,
                   help="number of main-block trials, an integer >= 0 (overrides "
                        "trials.main)")
    p.add_argument("--seed", metavar="N", type=int, default=None,
                   help="base seed, an integer in [0, 2**32 - 1] (overrides seed)")
    p.add_argument("--pilot", action="store_true",
                   help="pilot mode: a window instead of full screen")
    p.add_argument("--simulate", choices=("template", "scripted", "model"),
                   help="a simulated observer answers instead of the keyboard")
    p.add_argument("--decision-noise", metavar="X", type=float, default=None,
                   help="with --simulate model: SD of Gaussian noise added to the "
                        "network's logits (>= 0), to lower its accuracy towards a "
                        "person's")
    p.add_argument("--resume", metavar="FILE",
                   help="continue the interrupted session of FILE (its .csv, .json or "
                        "stem)")
    g = p.add_argument_group("scanner mode (fMRI)")
    g.add_argument("--scanner", action="store_true",
                   help="run the scanner mode: runs paced by the trigger key "
                        "(scanner.enabled)")
    g.add_argument("--simulate-scanner", action="store_true",
                   help="send the triggers from the session's own clock at every TR "
                        "(implies --scanner)")
    g.add_argument("--speed", metavar="K", type=float, default=None,
                   help="with --simulate-scanner: every duration divided by K (> 0)")
    g.add_argument("--bubbles-from", metavar="CSV",
                   help="fixed number of bubbles from the QUEST estimate of an earlier "
                        "behavioural session of the same participant")
    return p


def dialog_problem():
    """Why the participant dialog cannot open here, or None if it can.

    PsychoPy's dialog is Qt's; when Qt cannot load its platform plugin (a system library
    missing, no usable display) Qt aborts the whole process, so it is tried first in a
    child process.
    """
    code = "from psychopy import gui; gui.ensureQtApp()"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                             text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    if out.returncode == 0:
        return None
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    qt = [x for x in lines if "qt." in x.lower() or "plugin" in x.lower()]
    return (qt or lines or [f"exit status {out.returncode}"])[0].strip()


def ask_participant(session=1):
    """Dialog for participant and session; None if cancelled.

    Raises
    ------
    ValueError
        The participant typed is not a BIDS label (letters and digits only), or the
        session typed is not an integer >= 0.
    """
    from psychopy import gui

    info = {"participant": "", "session": session}
    dlg = gui.DlgFromDict(info, title="bubbles run", sortKeys=False)
    if not dlg.OK:
        return None
    try:
        number = int(str(info["session"]).strip())
    except ValueError:
        number = -1
    if number < 0:
        raise ValueError(f"session must be an integer >= 0, got {info['session']!r}")
    return validate_participant(info["participant"], name="participant (dialog)"), number


def _display_missing():
    return (sys.platform.startswith("linux") and not os.environ.get("DISPLAY")
            and not os.environ.get("WAYLAND_DISPLAY"))


def _no_display():
    return DataError("no display (DISPLAY is not set). Run under a virtual display: "
                     'xvfb-run -a -s "-screen 0 1024x768x24" bubbles run ...')


def _usage_problem(args):
    """What is wrong with the arguments themselves (exit 2), or None."""
    noise = args.decision_noise
    if noise is not None and args.simulate != "model":
        return (f"--decision-noise applies to --simulate model only, got --simulate "
                f"{args.simulate}")
    if noise is not None and not (math.isfinite(noise) and noise >= 0):
        return (f"--decision-noise must be a number >= 0 (SD of the noise on the "
                f"network's logits), got {noise}")
    if args.session is not None and args.session < 0:
        return f"--session must be an integer >= 0, got {args.session}"
    if args.trials is not None and args.trials < 0:
        return f"--trials must be an integer >= 0 (main-block trials), got {args.trials}"
    if args.seed is not None and not 0 <= args.seed <= 2 ** 32 - 1:
        return f"--seed must be an integer in [0, 2**32 - 1], got {args.seed}"
    if args.speed is not None and not args.simulate_scanner:
        return (f"--speed applies to --simulate-scanner only (a real scanner keeps its "
                f"TR), got --speed {args.speed:g}")
    if args.speed is not None and not (math.isfinite(args.speed) and args.speed > 0):
        return (f"--speed must be a number > 0 (durations are divided by it), got "
                f"{args.speed}")
    if args.participant is not None and not args.resume:
        try:   # a BIDS label: letters and digits only (checked before anything opens)
            validate_participant(args.participant, name="--participant")
        except ValueError as err:
            return str(err)
    return None


def _session(args):
    """The Session the arguments ask for (nothing opened or written yet); None when
    the dialog was cancelled."""
    scanner = {"simulate_scanner": args.simulate_scanner, "speed": args.speed or 1.0}
    if args.resume:
        ignored = [f"--{name.replace('_', '-')}" for name in
                   ("config", "participant", "session", "trials", "seed",
                    "bubbles_from") if getattr(args, name) is not None]
        ignored += ["--scanner"] if args.scanner else []
        if ignored:
            warn(NAME, f"--resume continues the recorded session; ignoring "
                       f"{', '.join(ignored)}")
        common = dict(resume=args.resume, simulate=args.simulate, pilot=args.pilot,
                      decision_noise=args.decision_noise)
        if is_scanner_session(args.resume):
            return ScannerSession(**common, **scanner)
        if args.simulate_scanner:
            raise DataError(f"--simulate-scanner applies to a scanner session; "
                            f"{args.resume} was not recorded in the scanner mode")
        return Session(**common)
    overrides = {}
    if args.trials is not None:
        overrides["trials.main"] = args.trials
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.pilot:
        overrides["window.fullscreen"] = False
    if args.scanner or args.simulate_scanner:
        overrides["scanner.enabled"] = True
    cfg = load_config(args.config, overrides)
    if cfg["scanner"]["enabled"]:
        if args.trials is not None:
            warn(NAME, "--trials sets trials.main, which the scanner mode does not use "
                       "(its trials are scanner.runs x scanner.trials_per_run)")
        scanner["bubbles_from"] = args.bubbles_from
    elif args.bubbles_from is not None:
        raise DataError("--bubbles-from applies to the scanner mode only (--scanner or "
                        "scanner.enabled in the configuration)")
    if _display_missing():
        raise _no_display()
    participant = args.participant
    number = 1 if args.session is None else args.session   # 0 is a session
    if participant is None:
        problem = dialog_problem()
        if problem:
            raise DataError(f"the participant dialog cannot open ({problem}); give the "
                            f"participant with --participant ID [--session N]")
        answer = ask_participant(number)
        if answer is None:
            return None
        participant, number = answer
    participant = validate_participant(participant, name="--participant")
    common = dict(session=number, data_dir=args.data_dir, simulate=args.simulate,
                  pilot=args.pilot, decision_noise=args.decision_noise)
    if cfg["scanner"]["enabled"]:
        return ScannerSession(cfg, participant, **common, **scanner)
    return Session(cfg, participant, **common)


def _handle(args):
    session = _session(args)
    if session is None:
        print(f"bubbles {NAME}: cancelled; nothing was recorded")
        return 0
    if session.trials_left and _display_missing():
        raise _no_display()
    try:
        result = session.run()
    except RuntimeError as err:     # a simulated observer that cannot start
        raise DataError(str(err)) from None
    return 0 if (result.completed or result.escaped) else 1


def run(argv=None):
    """Entry point of ``bubbles run``; returns the exit status.

    0: the session completed, was stopped with escape, or the dialog was cancelled;
    1: a configuration, file or setup error (the message says which); 2: bad arguments.
    """
    argv = sys.argv[1:] if argv is None else argv
    return run_command(NAME, build_parser(), _handle, argv, usage_check=_usage_problem)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
