"""The ``bubbles`` command: the dispatcher.

Each subcommand is a module of this package, imported only when it runs, so
``bubbles analyze`` works without psychopy or torch installed:

=============  ===========================  =====================================
command        module                       what it does
=============  ===========================  =====================================
demo           commands.demo                the whole pipeline on the embedded defaults
run            commands.run                 the PsychoPy session (people or simulated)
analyze        commands.analyze             diagnostic images and their statistics
compare        commands.compare             human vs model vs voxel diagnostic images
ann            commands.ann                 train / probe / attribute networks
fmri           commands.fmri                BOLD runs -> a diagnostic image per voxel
compare-many   commands.compare_many        every voxel / ROI against every unit and layer
report         commands.report              one self-contained HTML page of a results folder
plan           commands.plan                power, recovery and trials before the study
=============  ===========================  =====================================
"""

from __future__ import annotations

import importlib
import sys

from bubbles import __version__

# command -> (module, function, one-line help)
COMMANDS = {
    "demo": ("commands.demo", "main", "run the whole pipeline on the embedded defaults"),
    "run": ("commands.run", "run", "run a bubbles session (PsychoPy window)"),
    "analyze": ("commands.analyze", "analyze", "diagnostic images and statistics"),
    "compare": ("commands.compare", "main", "compare two diagnostic images"),
    "ann": ("commands.ann", "main", "networks: train | probe | attribute"),
    "fmri": ("commands.fmri", "main", "fMRI: simulate | analyze | voxel"),
    "compare-many": ("commands.compare_many", "main",
                     "every voxel / ROI / person against every unit of every layer"),
    "report": ("commands.report", "main", "one self-contained HTML page of a results folder"),
    "plan": ("commands.plan", "main", "plan a study by simulation: power, recovery, trials"),
}


def _usage():
    lines = ["usage: bubbles COMMAND [options]   (bubbles COMMAND --help for details)", "",
             "commands:"]
    lines += [f"  {name:<13} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    """Dispatch ``bubbles COMMAND ...`` to the command's module; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(f"bubbles {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"bubbles: unknown command {name!r}; expected one of {list(COMMANDS)}\n",
              file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = {"run": "experiment", "ann": "ann", "fmri": "fmri", "compare-many": "all"}.get(name, "all")
        print(f"bubbles {name}: cannot import {exc.name or module_name} ({exc}). Install "
              f"the optional dependencies: pip install 'bubbles-toolkit[{extra}]'",
              file=sys.stderr)
        return 1
    return int(getattr(module, func_name)(argv[1:]) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
