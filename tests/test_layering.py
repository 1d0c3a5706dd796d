"""The layering: commands -> experiments, ann_bridge -> analysis -> bubbles -> numpy.

`bubbles` and `analysis` never import psychopy or torch, so the core installs and tests
without either; imports only point down the list, inside functions too; no library
imports the command layer; the project's own modules are imported at module level
(inside a function only where named below: the lazy subcommands and one optional
heavy extra). The exceptions are named below.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package -> top-level names its modules may not import (at any level)
FORBIDDEN = {
    "bubbles": {"analysis", "experiments", "ann_bridge", "commands", "torch", "psychopy",
                "captum"},
    "analysis": {"experiments", "ann_bridge", "commands", "torch", "psychopy", "captum"},
    "experiments": {"ann_bridge", "commands", "torch"},
    "ann_bridge": {"experiments", "commands", "psychopy"},
    "data": {"bubbles", "analysis", "experiments", "ann_bridge", "commands"},
}
OWN = {"bubbles", "analysis", "experiments", "ann_bridge", "commands", "bubbles_data"}
# (module, imported package) pairs allowed inside functions only
LAZY_ALLOWED = {
    # `bubbles run --simulate model`: the session asks the network for its answers
    ("experiments/responders.py", "ann_bridge"),
    # `bubbles plan --observer network` (the rest of the command needs no torch)
    ("commands/plan.py", "ann_bridge"),
}
# modules that import the project's own subcommands lazily (a command runs only its own)
LAZY_MODULES = {"commands/main.py", "commands/demo.py"}


def imports(path):
    """(top-level name, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name.split(".")[0], id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], id(node) in top))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append((".", id(node) in top))          # the module's own package
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down(package):
    bad = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        hits = sorted({name for name, module_level in imports(path)
                       if name in FORBIDDEN[package]
                       and (module_level or (rel, name) not in LAZY_ALLOWED)})
        if hits:
            bad[rel] = hits
    assert not bad, f"imports against the layering: {bad}"


def test_own_modules_are_imported_at_module_level():
    bad = {}
    for package in sorted(FORBIDDEN) + ["commands"]:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in LAZY_MODULES:
                continue
            hits = sorted({name for name, module_level in imports(path)
                           if not module_level and (name in OWN or name == ".")
                           and (rel, name) not in LAZY_ALLOWED})
            if hits:
                bad[rel] = hits
    assert not bad, f"function-level imports of the project's own modules: {bad}"


def test_the_checker_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import numpy\n\ndef f():\n    from torch import nn\n")
    assert sorted(imports(f)) == [("numpy", True), ("torch", False)]


def test_core_imports_without_torch_or_psychopy():
    code = ("import sys, bubbles, analysis;"
            "print(sorted(m for m in ('torch', 'psychopy', 'captum') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.strip()
    assert out == "[]"
