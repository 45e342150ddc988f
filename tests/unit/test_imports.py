"""The package's import graph has no circles, lazy imports (inside functions) and typing-only
imports included: a circle is a design that only works by the order modules happen to load."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "agent" / "kdump_agent"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of ours that `name` imports, wherever in the file the import is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {module for module in found if module in known and module != name
            and not PACKAGE.joinpath(*module.split(".")[1:], "__init__.py").exists()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> list[str] | None:
        if node in trail:
            return [*trail[trail.index(node):], node]
        if node in done:
            return None
        for following in sorted(graph[node]):
            cycle = visit(following, [*trail, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_the_import_graph_has_no_circles() -> None:
    found = modules()
    graph = {name: imported(name, path, set(found)) for name, path in found.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_step_imports_a_target_kind_and_no_target_imports_a_step() -> None:
    """Steps ask the Destination (targets/base.py) the registry chose; targets never reach
    back into the flow."""
    found = modules()
    seam = {"kdump_agent.targets.base", "kdump_agent.targets.registry"}
    for name, path in found.items():
        uses = imported(name, path, set(found))
        if name.startswith("kdump_agent.targets."):
            assert not {u for u in uses if u.startswith("kdump_agent.steps.")}, name
        if name.startswith("kdump_agent.steps."):
            assert {u for u in uses if u.startswith("kdump_agent.targets.")} <= seam, name
