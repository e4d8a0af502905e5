"""The tree's layering: storage and the queue know nothing of HTTP."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOWER = sorted(p for layer in ("storage", "queue")
               for p in (ROOT / "server" / layer).glob("*.py"))
FORBIDDEN = ("tornado", "server.handlers", "server.app")


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


@pytest.mark.parametrize("path", LOWER, ids=_module)
def test_storage_and_queue_modules_import_nothing_http(path: Path) -> None:
    # What the module names itself…
    tree = ast.parse(path.read_text())
    named = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names]
    named += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [n for n in named if n.startswith(FORBIDDEN)]
    # …and everything it pulls in, transitively, in a fresh interpreter.
    probe = (f"import sys, {_module(path)}; "
             f"print(sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r})))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_check_sees_a_module_that_does_import_http() -> None:
    probe = ("import sys, server.handlers.errors; "
             f"print(sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r})))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert "server.handlers" in result.stdout
