"""The package's layout: no import cycle between heartbeat's modules.

The import graph is read with :mod:`ast`, not by importing anything: every ``import``
and ``from ... import`` of a heartbeat module counts wherever it is written, inside a
function or under ``if TYPE_CHECKING:`` too (a cycle that exists only for the type
checker is still two modules that each need the other). ``from heartbeat.x import y``
counts as an import of ``heartbeat.x.y`` when that is a module, else of ``heartbeat.x``.
Importing a module runs its packages' ``__init__`` too; that is not counted as an edge,
or every module would sit in one cycle with ``heartbeat/__init__.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import heartbeat

PACKAGE = Path(heartbeat.__file__).parent
ROOT = "heartbeat"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from`` import names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports(module: str, path: Path, known: set[str]) -> Iterator[str]:
    """The heartbeat modules ``module`` imports, anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, path, node)
            if base != ROOT and not base.startswith(ROOT + "."):
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in known:
                    yield submodule
                elif base in known and base != ROOT:
                    yield base


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {
        name: {target for target in imports(name, path, known) if target != name}
        for name, path in found.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One closed path through ``component``, for the failure message."""
    members = set(component)
    start = component[0]
    path = [start]
    seen = {start}
    # Depth-first until an edge leads back to the start.
    trail: list[Iterator[str]] = [iter(sorted(graph[start] & members))]
    while trail:
        for target in trail[-1]:
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                path.append(target)
                trail.append(iter(sorted(graph[target] & members)))
                break
        else:
            trail.pop()
            path.pop()
    return component  # pragma: no cover - a component always has a cycle through start


def describe(graph: dict[str, set[str]], found: list[list[str]]) -> str:
    return "\n".join(
        f"  {', '.join(component)}:\n    {' -> '.join(a_cycle(graph, component))}"
        for component in found
    )


def test_no_import_cycle() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles between heartbeat modules:\n" + describe(graph, found)


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The check itself: lazy, TYPE_CHECKING, relative and ``from pkg import module``."""
    known = {"heartbeat.a", "heartbeat.b", "heartbeat.c", "heartbeat.pkg", "heartbeat.pkg.d"}
    source = tmp_path / "a.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import heartbeat.pkg.d\n"
        "if TYPE_CHECKING:\n"
        "    from heartbeat.b import Thing\n"
        "def later():\n"
        "    from heartbeat import c\n"
        "from .pkg import d, not_a_module\n"
        "import json\n",
        encoding="utf-8",
    )
    # Read as the module heartbeat.a: the relative import resolves in heartbeat.
    found = set(imports("heartbeat.a", source, known))
    assert found == {"heartbeat.pkg.d", "heartbeat.b", "heartbeat.c", "heartbeat.pkg"}
    graph = {"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}
    assert cycles(graph) == [["x", "y", "z"]]
    assert a_cycle(graph, ["x", "y", "z"]) == ["x", "y", "z", "x"]
