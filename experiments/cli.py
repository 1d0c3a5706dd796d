"""``bubbles run``: run a bubbles session from the command line.

::

    bubbles run [--config FILE] [--participant ID] [--session N] [--data-dir DIR]
                [--trials N] [--seed N] [--pilot] [--simulate template|scripted|model]
                [--resume FILE]

Without ``--participant`` a dialog (``psychopy.gui.DlgFromDict``) asks for the
participant and session; cancelling it ends cleanly. ``--resume FILE`` continues an
interrupted session from any of its files; its configuration, participant and session
come from the sidecar. ``--simulate`` runs the identical session, window included
(under ``xvfb-run`` when there is no display), with a simulated observer.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["build_parser", "run", "ask_participant"]


def build_parser():
    """The argument parser of ``bubbles run``."""
    p = argparse.ArgumentParser(
        prog="bubbles run",
        description="Run a bubbles session: bubbled faces, expression judgments, QUEST "
                    "on the number of bubbles, crash-safe data files.")
    p.add_argument("--config", metavar="FILE",
                   help="TOML configuration (default: experiments/expression_task.toml)")
    p.add_argument("--participant", metavar="ID",
                   help="participant id (asked in a dialog when left out)")
    p.add_argument("--session", metavar="N", type=int, default=None,
                   help="session number (default 1)")
    p.add_argument("--data-dir", metavar="DIR", default="data",
                   help="folder for the data files (default: data)")
    p.add_argument("--trials", metavar="N", type=int, default=None,
                   help="number of main-block trials (overrides trials.main)")
    p.add_argument("--seed", metavar="N", type=int, default=None,
                   help="base seed (overrides seed)")
    p.add_argument("--pilot", action="store_true",
                   help="pilot mode: a window instead of full screen")
    p.add_argument("--simulate", choices=("template", "scripted", "model"),
                   help="a simulated observer answers instead of the keyboard")
    p.add_argument("--resume", metavar="FILE",
                   help="continue the interrupted session of FILE (its .csv, .json or "
                        "stem)")
    return p


def ask_participant(session=1):
    """Dialog for participant and session; None if cancelled."""
    from psychopy import gui

    info = {"participant": "", "session": session}
    dlg = gui.DlgFromDict(info, title="bubbles run", sortKeys=False)
    if not dlg.OK:
        return None
    return str(info["participant"]).strip(), int(info["session"])


def _display_missing():
    return (sys.platform.startswith("linux") and not os.environ.get("DISPLAY")
            and not os.environ.get("WAYLAND_DISPLAY"))


def run(argv=None):
    """Entry point of ``bubbles run``; returns the exit status.

    0: the session completed, was stopped with escape, or the dialog was cancelled;
    1: a configuration, file or setup error (the message says which); 2: bad arguments.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error: argparse printed it
        return int(exc.code or 0)

    from .config import ConfigError, load_config
    from .session import Session

    if _display_missing():
        print("bubbles run: no display (DISPLAY is not set). Run under a virtual display: "
              'xvfb-run -a -s "-screen 0 1024x768x24" bubbles run ...', file=sys.stderr)
        return 1
    try:
        if args.resume:
            ignored = [f"--{name.replace('_', '-')}" for name in
                       ("config", "participant", "session", "trials", "seed")
                       if getattr(args, name) is not None]
            if ignored:
                print(f"bubbles run: --resume continues the recorded session; ignoring "
                      f"{', '.join(ignored)}", file=sys.stderr)
            session = Session(resume=args.resume, simulate=args.simulate, pilot=args.pilot)
        else:
            overrides = {}
            if args.trials is not None:
                overrides["trials.main"] = args.trials
            if args.seed is not None:
                overrides["seed"] = args.seed
            if args.pilot:
                overrides["window.fullscreen"] = False
            cfg = load_config(args.config, overrides)
            participant, number = args.participant, args.session or 1
            if participant is None:
                answer = ask_participant(number)
                if answer is None:
                    print("bubbles run: cancelled; nothing was recorded")
                    return 0
                participant, number = answer
            session = Session(cfg, participant, session=number, data_dir=args.data_dir,
                              simulate=args.simulate, pilot=args.pilot)
        result = session.run()
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"bubbles run: {err}", file=sys.stderr)
        return 1
    return 0 if (result.completed or result.escaped) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
