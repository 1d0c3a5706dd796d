"""The shape of the bubbles package: imports at the top of each module, no circles,
nothing from the packages above it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "bubbles"
PROJECT = {"bubbles", "analysis", "experiments", "ann_bridge", "commands", "bubbles_data"}
ABOVE = PROJECT - {"bubbles"}


def _imports(tree):
    """(node, module name as written or '.name' for relative, level) of every import."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            yield node, node.module or "", node.level


def _project_modules(module, name, level):
    """Names of the bubbles modules an import statement refers to (relative or not)."""
    if level:
        return {f"bubbles.{name}".rstrip(".")} if name else set()
    return {name} if name.split(".")[0] in PROJECT else set()


def test_project_imports_are_at_module_level_and_point_down():
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        top = set(map(id, tree.body))
        for node, name, level in _imports(tree):
            targets = _project_modules(path.stem, name, level)
            if not targets:
                continue
            if id(node) not in top:
                offenders.append(f"{path.name}:{node.lineno} imports {name} inside a function")
            if any(t.split(".")[0] in ABOVE for t in targets):
                offenders.append(f"{path.name}:{node.lineno} imports {name} from above bubbles")
    assert offenders == []


def test_no_import_circles_inside_bubbles():
    graph = {}
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem == "__init__":
            continue
        tree = ast.parse(path.read_text())
        graph[f"bubbles.{path.stem}"] = {
            t for _, name, level in _imports(tree)
            for t in _project_modules(path.stem, name, level) if t != "bubbles"}
    done = set()

    def visit(node, stack):
        assert node not in stack, f"import circle: {' -> '.join(stack + [node])}"
        if node in done:
            return
        for nxt in graph.get(node, ()):
            visit(nxt, stack + [node])
        done.add(node)

    for module in graph:
        visit(module, [])
    assert graph["bubbles.stimuli"].isdisjoint({"bubbles.faces"})
