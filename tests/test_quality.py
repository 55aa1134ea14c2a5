"""The checks CI runs beside the tests: ruff (lint and format) on everything, and mypy
(strict, with the pydantic plugin; configured in pyproject.toml) on the package. They run as
tests so that the one test command of the README runs them too."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing() -> None:
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_is_formatted() -> None:
    result = run(str(BIN / "ruff"), "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_package_type_checks() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_the_package_ships_its_types() -> None:
    assert (ROOT / "src" / "sluiceway" / "py.typed").is_file()


# -- the layout ----------------------------------------------------------------------------

PACKAGE = ROOT / "src" / "sluiceway"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each module of the package → the modules of the package it imports (at any level,
    ``TYPE_CHECKING`` included: a type-only loop is a loop in the design)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("sluiceway"):
                    found.add(node.module)
                    found.update(
                        f"{node.module}.{alias.name}"
                        for alias in node.names
                        if f"{node.module}.{alias.name}" in modules
                    )
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("sluiceway"))
        graph[name] = {module for module in found if module in modules and module != name}
    return graph


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def _package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_import_cycle_between_packages() -> None:
    edges: dict[str, set[str]] = {}
    for module, imported in _imports().items():
        for other in imported:
            if _package_of(other) != _package_of(module):
                edges.setdefault(_package_of(module), set()).add(_package_of(other))
    assert _cycles(edges) == []


def test_no_import_cycle_within_the_hub() -> None:
    graph = _imports()
    hub = {
        module: {other for other in imported if other.startswith("sluiceway.hub.")}
        for module, imported in graph.items()
        if module.startswith("sluiceway.hub.")
    }
    assert _cycles(hub) == []


def test_the_protocol_cores_do_no_io() -> None:
    """The wire formats import no asyncio and nothing of the hub: they are bytes in, bytes out."""
    cores = [
        "sluiceway/sse.py",
        "sluiceway/ids.py",
        "sluiceway/control.py",
        "sluiceway/centrifugo/frames.py",
        "sluiceway/centrifugo/codes.py",
        "sluiceway/centrifugo/protocol.py",
        "sluiceway/mercure/selectors.py",
        "sluiceway/mercure/publication.py",
        "sluiceway/llm/openai_format.py",
        "sluiceway/llm/anthropic_format.py",
        "sluiceway/llm/responses_format.py",
        "sluiceway/llm/ai_sdk_format.py",
        "sluiceway/llm/chunks.py",
    ]
    for core in cores:
        tree = ast.parse((PACKAGE.parent / core).read_text())
        for node in ast.walk(tree):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                assert name.split(".")[0] != "asyncio", f"{core} imports asyncio"
                assert not name.startswith("sluiceway.hub"), f"{core} imports the hub"
