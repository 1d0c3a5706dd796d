"""The layering of DESIGN.md: experiments, ann_bridge -> analysis -> bubbles -> numpy.

`bubbles` and `analysis` never import psychopy or torch at module level, so the core
installs and tests without either; imports only point down the list.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package -> top-level names its modules may not import at module level
FORBIDDEN = {
    "bubbles": {"analysis", "experiments", "ann_bridge", "torch", "psychopy", "captum"},
    "analysis": {"experiments", "ann_bridge", "torch", "psychopy", "captum"},
    "experiments": {"ann_bridge", "torch"},
    "ann_bridge": {"experiments", "psychopy"},
}
# the command-line layer dispatches to every package, lazily (inside functions)
ENTRY_POINTS = {"bubbles/cli.py", "bubbles/demo.py"}


def module_level_imports(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:                      # module level only, not inside functions
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down(package):
    bad = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        hits = module_level_imports(path) & FORBIDDEN[package]
        if hits and rel not in ENTRY_POINTS:
            bad[rel] = sorted(hits)
    assert not bad, f"module-level imports against the layering: {bad}"


def test_core_imports_without_torch_or_psychopy():
    code = ("import sys, bubbles, analysis;"
            "print(sorted(m for m in ('torch', 'psychopy', 'captum') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.strip()
    assert out == "[]"
