"""The import graph of our packages (STYLE.md 1): no circles, and dependencies that point one way.

Read statically with grimp (imports inside functions count too), so nothing is imported to check it.
"""

from __future__ import annotations

import grimp
import pytest

PACKAGES = ("app", "ingest", "retrieval", "serving", "ui", "eval", "consulta")

# What each package may import of ours (STYLE.md 1). `consulta` is the entry point that puts the CLI together.
ALLOWED = {
    "retrieval": set(),
    "serving": set(),
    "ingest": {"retrieval"},
    "app": {"ingest", "retrieval", "serving"},
    "ui": {"app"},  # the API's wire formats only: see test_the_ui_takes_only_the_api_schemas_from_the_app
    "eval": {"app", "ingest", "retrieval", "serving"},
    "consulta": {"app", "eval"},
}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def _imports(graph: grimp.ImportGraph) -> list[tuple[str, str]]:
    return [(m, d) for m in sorted(graph.modules) for d in sorted(graph.find_modules_directly_imported_by(m))]


def _circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.find_modules_directly_imported_by(nxt)))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))
    return found


def test_no_module_imports_itself_through_others(graph):
    assert _circles(graph) == []


def test_dependencies_between_packages_point_one_way(graph):
    wrong = [f"{m} -> {d}" for m, d in _imports(graph)
             if m.split(".")[0] != d.split(".")[0] and d.split(".")[0] not in ALLOWED[m.split(".")[0]]]
    assert wrong == []


def test_the_app_never_imports_the_evaluation(graph):
    assert graph.find_shortest_chain(importer="app", imported="eval", as_packages=True) is None


def test_the_ui_takes_only_the_api_schemas_from_the_app(graph):
    assert {d for m, d in _imports(graph) if m.startswith("ui") and d.startswith("app")} <= {"app.api.schemas"}
