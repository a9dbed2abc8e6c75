"""The layers of ../shared/DESIGN.md, read from the source with ``ast``.

core (numpy + scipy) < io, graph < fit < front ends. Imports point down only,
whether at module level or inside a function; there is no module-level
import cycle; no file passes 800 lines; importing the core in a fresh
interpreter loads none of the heavy dependencies.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dgmm"

# Leaf modules every layer may import.
LEAVES = {"dgmm.errors", "dgmm._version"}
# What each layer may import from dgmm (besides the leaves and itself).
ALLOWED = {
    "core": {"core"},
    "io": {"core", "io"},
    "graph": {"core", "graph"},
    "fit": {"core", "io", "graph", "fit"},
}
# Third-party packages the core may import (the standard library is always fine).
CORE_THIRD_PARTY = {"numpy", "scipy"}
HEAVY = ["dask", "distributed", "sklearn", "zarr", "fsspec", "pyarrow", "click", "pandas", "matplotlib"]
MAX_LINES = 800
# Third-party packages a layer may not import (whether at module level or inside a function).
FORBIDDEN_THIRD_PARTY = {
    # The cluster is the graph's and the fit's business: readers never scatter or look up a client.
    "io": {"distributed"},
}
# Known exceptions, to shrink (none now: the write-task runner moved to dgmm.graph).
FORBIDDEN_EXEMPT: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    """'core', 'io', 'graph', 'fit', 'leaf' or 'front' (estimator, cli, demo, plot, the root)."""
    if module in LEAVES:
        return "leaf"
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in ALLOWED:
        return parts[1]
    return "front"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for _ in range(node.level - 1):
        package = package.rsplit(".", 1)[0]
    return f"{package}.{node.module}" if node.module else package


def imports(module: str, *, module_level_only: bool = False) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import of ``module`` outside ``if TYPE_CHECKING:``.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module.
    """
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child, top)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in MODULES else base, node.lineno))
        nested = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
        if module_level_only and nested:
            return
        for child in ast.iter_child_nodes(node):
            visit(child, top and not nested)

    visit(tree, True)
    return found


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) not in ("front",)))
def test_imports_point_down(module):
    mine = layer(module)
    allowed = ALLOWED.get(mine, set())
    wrong = []
    # A leaf may re-export lazily (errors.ConvergenceWarning from scikit-learn,
    # inside a module __getattr__): only its module-level imports count.
    for target, line in imports(module, module_level_only=mine == "leaf"):
        top = target.split(".")[0]
        if top == "dgmm":
            if target in LEAVES:
                continue
            if target == "dgmm" or layer(target) not in allowed:
                wrong.append(f"line {line}: {target} ({layer(target) if target != 'dgmm' else 'package root'})")
        elif top in FORBIDDEN_THIRD_PARTY.get(mine, set()) and (module, top) not in FORBIDDEN_EXEMPT:
            wrong.append(f"line {line}: {target} (third-party the {mine} layer may not import)")
        elif mine == "core" and top not in CORE_THIRD_PARTY and top not in sys.stdlib_module_names:
            wrong.append(f"line {line}: {target} (third-party; the core uses numpy and scipy only)")
        elif mine == "leaf" and top not in sys.stdlib_module_names:
            wrong.append(f"line {line}: {target} (a leaf module imports the standard library only at module level)")
    assert not wrong, f"{module} ({mine}) may import {sorted(allowed) or 'nothing'} of dgmm; found:\n" + "\n".join(wrong)


def test_exemptions_are_still_needed():
    # An exemption whose module no longer imports the package must go.
    stale = [
        (module, top) for module, top in sorted(FORBIDDEN_EXEMPT)
        if not any(t.split(".")[0] == top for t, _ in imports(module))
    ]
    assert not stale, f"remove these from FORBIDDEN_EXEMPT: {stale}"


def test_no_module_level_import_cycle():
    graph = {
        m: sorted({t for t, _ in imports(m, module_level_only=True) if t in MODULES and t != m})
        for m in MODULES
    }
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for m in graph:
        if m not in state:
            dfs(m)
    assert not cycles, "module-level import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_file_passes_800_lines(module):
    n_lines = len(MODULES[module].read_text().splitlines())
    assert n_lines <= MAX_LINES, f"{MODULES[module]} has {n_lines} lines: split its responsibilities"


def test_core_imports_no_heavy_dependency_in_a_fresh_interpreter():
    core = sorted(m for m in MODULES if layer(m) == "core")
    code = (
        "import importlib, json, sys\n"
        f"for m in {core!r}: importlib.import_module(m)\n"
        f"print(json.dumps([h for h in {HEAVY!r} if h in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [], f"importing dgmm.core loaded {out.stdout.strip()}"


def test_import_dgmm_is_lazy():
    code = (
        "import json, sys\nimport dgmm\n"
        f"print(json.dumps([h for h in {HEAVY!r} if h in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [], f"import dgmm loaded {out.stdout.strip()}"


def test_the_rules_catch_a_violation(tmp_path):
    # The checker itself: a core module importing dask or the fit layer is caught.
    tree = ast.parse("import dask\nfrom dgmm.fit import loop\n")
    names = [n.names[0].name if isinstance(n, ast.Import) else n.module for n in tree.body]
    assert names == ["dask", "dgmm.fit"]
    assert layer("dgmm.fit.loop") == "fit" and "fit" not in ALLOWED["core"]
    assert "dask" not in CORE_THIRD_PARTY and "dask" not in sys.stdlib_module_names
    assert "distributed" in FORBIDDEN_THIRD_PARTY["io"]
