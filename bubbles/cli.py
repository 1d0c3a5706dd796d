"""The ``bubbles`` command.

Each subcommand lives in the package it belongs to and is imported only when it runs,
so ``bubbles analyze`` works without psychopy or torch installed:

=============  ===========================  =====================================
command        module                       what it does
=============  ===========================  =====================================
demo           bubbles.demo                 the whole pipeline on the embedded defaults
run            experiments.cli              the PsychoPy session (people or simulated)
analyze        analysis.cli                 diagnostic images and their statistics
compare        analysis.compare             human vs model vs voxel diagnostic images
ann            ann_bridge.cli               train / probe / attribute networks
=============  ===========================  =====================================
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, function, one-line help)
COMMANDS = {
    "demo": ("bubbles.demo", "main", "run the whole pipeline on the embedded defaults"),
    "run": ("experiments.cli", "run", "run a bubbles session (PsychoPy window)"),
    "analyze": ("analysis.cli", "analyze", "diagnostic images and statistics"),
    "compare": ("analysis.compare", "main", "compare two diagnostic images"),
    "ann": ("ann_bridge.cli", "main", "networks: train | probe | attribute"),
}


def _usage():
    lines = ["usage: bubbles COMMAND [options]   (bubbles COMMAND --help for details)", "",
             "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    """Dispatch ``bubbles COMMAND ...`` to the command's module; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from bubbles import __version__
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
        extra = {"run": "experiment", "ann": "ann"}.get(name, "all")
        print(f"bubbles {name}: cannot import {exc.name or module_name} ({exc}). Install "
              f"the optional dependencies: pip install 'bubbles-toolkit[{extra}]'",
              file=sys.stderr)
        return 1
    return int(getattr(module, func_name)(argv[1:]) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
