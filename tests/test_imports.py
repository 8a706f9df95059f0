"""No import cycles: between modules (function-level imports included), between engine's subpackages, and between
the three packages (engine never imports gates or pipelines; gates never imports pipelines)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

from tests.conftest import ROOT

PACKAGES = ("engine", "gates", "pipelines")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """Module -> internal modules it imports anywhere in its body."""
    files = sorted(f for pkg in PACKAGES for f in (ROOT / pkg).rglob("*.py"))
    modules = {module_name(f) for f in files}
    graph = nx.DiGraph()
    for path in files:
        source = module_name(path)
        graph.add_node(source)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]  # fmt: skip
            else:
                continue
            graph.add_edges_from((source, t) for t in targets if t in modules and t != source)
    return graph


def package_of(module: str) -> str:
    """engine.quant.apply -> engine.quant; engine.engine -> engine; a subpackage's __init__ is that subpackage."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or module in SUBPACKAGES else parts[0]


SUBPACKAGES = {f"engine.{p.name}" for p in (ROOT / "engine").iterdir() if (p / "__init__.py").is_file()}


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    return import_graph()


def test_no_module_imports_itself_back(graph: nx.DiGraph) -> None:
    assert list(nx.simple_cycles(graph)) == []


def test_engine_subpackages_depend_one_way(graph: nx.DiGraph) -> None:
    packages = nx.DiGraph()
    for a, b in graph.edges:
        pa, pb = package_of(a), package_of(b)
        if pa != pb and pa in SUBPACKAGES and pb in SUBPACKAGES and not a.endswith("__main__"):
            packages.add_edge(pa, pb)
    assert list(nx.simple_cycles(packages)) == []


def test_engine_needs_nothing_of_the_gate_and_the_gate_nothing_of_the_pipelines(graph: nx.DiGraph) -> None:
    layers = {(a.split(".")[0], b.split(".")[0]) for a, b in graph.edges}
    assert ("engine", "gates") not in layers and ("engine", "pipelines") not in layers
    assert ("gates", "pipelines") not in layers
