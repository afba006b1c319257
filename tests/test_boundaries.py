"""The architecture's boundaries, checked by import-linter (pyproject.toml) on every run,
and by grimp (import-linter's own import graph) for cycles."""

import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=REPO, env={"PYTHONPATH": str(REPO / "platform"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "0 broken" in result.stdout


def test_no_context_reaches_into_another_contexts_tables():
    """Import-linter sees imports; this catches the dynamic way round them."""
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "apps").rglob("*.py")
        if "get_model(" in path.read_text() and "migrations" not in path.parts
    ]
    assert offenders == []


# apps/, the kernel (platform/waybill) and the project configuration (platform/config).
CYCLE_FREE_PACKAGES = ("apps", "waybill", "config")


def test_no_import_cycles():
    """A shared step moves into a module both sides import (ARCHITECTURE.md). A function-local
    import counts, since it only hides a cycle; one under ``if TYPE_CHECKING:`` does not."""
    graph = grimp.build_graph(*CYCLE_FREE_PACKAGES, exclude_type_checking_imports=True, cache_dir=None)
    cycles = [_shortest_cycle(graph, component) for component in _entangled(graph)]
    assert cycles == [], "import cycles (each shown through its first module):\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles)


def _entangled(graph) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan): the modules
    that import each other, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                components.append(component)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return components


def _shortest_cycle(graph, component: set[str]) -> list[str]:
    """The shortest chain of imports from the component's first module back to itself."""
    first = min(component)
    importers = graph.find_modules_that_directly_import(first) & component
    chains = [graph.find_shortest_chain(importer=first, imported=importer) for importer in sorted(importers)]
    return [*min(chains, key=len), first]
