"""The tree's layering, read from the code's own imports: no circle, and storage and the
queue know nothing of HTTP.

Every ``import`` of every module under ``server/`` counts — at module level, inside
functions and under ``TYPE_CHECKING`` alike: a type-only import ties two modules
as surely as any other when a reader follows it.  Read statically, in this one
interpreter.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server"
HTTP = ("tornado", "server.handlers", "server.app")


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


MODULES = {_module(path): path for path in sorted(SERVER.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports: ours resolved to the module (``from server.queue
    import keys`` is ``server.queue.keys``), others by their top-level package."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES
                     else node.module for alias in node.names]
        else:
            continue
        found.update(name if name.startswith("server") else name.split(".")[0]
                     for name in names)
    return found


GRAPH = {module: _imports(path) for module, path in MODULES.items()}


def _circle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One circle of ``graph`` (its nodes in order, the first repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _wing(module: str) -> str:
    """The room a module stands in: ``server.queue.worker`` → ``server.queue``."""
    return ".".join(module.split(".")[:2])


def _reached(module: str) -> set[str]:
    """Everything ``module`` imports, transitively through our modules."""
    seen, todo = set(), [module]
    while todo:
        for name in GRAPH.get(todo.pop(), ()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def test_no_module_of_the_server_imports_itself_round_a_circle() -> None:
    assert _circle(GRAPH) is None, " -> ".join(_circle(GRAPH) or [])


def test_no_wing_of_the_server_imports_another_that_imports_it_back() -> None:
    wings: dict[str, set[str]] = {}
    for module, imported in GRAPH.items():
        wings.setdefault(_wing(module), set()).update(
            _wing(name) for name in imported if name.startswith("server.")
            and _wing(name) != _wing(module))
    assert _circle(wings) is None, " -> ".join(_circle(wings) or [])


@pytest.mark.parametrize("module", [m for m in MODULES
                                    if m.startswith(("server.storage", "server.queue"))])
def test_storage_and_queue_modules_import_nothing_http(module: str) -> None:
    assert not {name for name in _reached(module) if name.startswith(HTTP)}


def test_the_checks_see_a_circle_and_an_http_import_where_there_is_one() -> None:
    assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _circle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert "tornado" in _reached("server.handlers.base")
    # A type-only import is read like any other.
    assert "server.deps" in GRAPH["server.handlers.base"]
