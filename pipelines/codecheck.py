"""Stage `codecheck`: the code-quality numbers of criteria Part 2 (`python -m pipelines codecheck`).

Compile warnings, ruff violations, cyclomatic complexity and function/class sizes (radon), coupling (internal
modules each module imports) and documentation coverage of the public API, over the source packages.
Writes metrics/code.json (namespace `code`).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import warnings
from pathlib import Path
from statistics import mean
from typing import Any

from prefect import flow, task
from radon.visitors import ComplexityVisitor

from pipelines.common import now_utc, stage_run_name, write_metrics

PACKAGES = ("engine", "gates", "pipelines")


def source_files() -> list[Path]:
    """The Python files the code-quality numbers cover."""
    return sorted(f for pkg in PACKAGES for f in Path(pkg).rglob("*.py"))


def compile_warnings(files: list[Path]) -> int:
    """Warnings raised while compiling each file (Python's counterpart of -Wall)."""
    count = 0
    for path in files:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compile(path.read_text(), str(path), "exec")
        count += len(caught)
    return count


def ruff_violations() -> int:
    """Ruff findings over the source packages (the project's static analysis)."""
    ruff = Path(sys.executable).with_name("ruff")
    out = subprocess.run(
        [str(ruff), "check", "--output-format", "json", "--exit-zero", *PACKAGES],
        cwd=".",
        capture_output=True,
        text=True,
        check=True,
    )
    return len(json.loads(out.stdout or "[]"))


def complexity_and_sizes(files: list[Path]) -> dict[str, float]:
    """Cyclomatic complexity and function/class lengths, by radon."""
    functions, classes = [], []
    for path in files:
        visitor = ComplexityVisitor.from_code(path.read_text())
        for fn in visitor.functions:
            functions.append(fn)
        for cls in visitor.classes:
            classes.append(cls)
            functions.extend(cls.methods)
    fn_lines = [f.endline - f.lineno + 1 for f in functions]
    cls_lines = [c.endline - c.lineno + 1 for c in classes]
    cc = [f.complexity for f in functions]
    return {
        "functions": len(functions),
        "complexity_max": max(cc, default=0),
        "complexity_avg": mean(cc) if cc else 0.0,
        "function_lines_max": max(fn_lines, default=0),
        "function_lines_avg": mean(fn_lines) if fn_lines else 0.0,
        "classes": len(classes),
        "class_lines_max": max(cls_lines, default=0),
        "class_lines_avg": mean(cls_lines) if cls_lines else 0.0,
    }


def coupling(files: list[Path]) -> dict[str, float]:
    """Distinct internal modules each module imports (its efferent coupling within the project)."""
    counts = []
    for path in files:
        tree = ast.parse(path.read_text())
        deps = set()
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            deps.update(n for n in names if n.split(".")[0] in PACKAGES)
        counts.append(len(deps))
    return {"coupling_max": max(counts, default=0), "coupling_avg": mean(counts) if counts else 0.0}


def doc_coverage(files: list[Path]) -> dict[str, float]:
    """Share of public modules, classes and functions (not `_private`) that carry a docstring."""
    documented = total = 0
    for path in files:
        tree = ast.parse(path.read_text())
        nodes: list[Any] = [tree]
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and not node.name.startswith(
                "_"
            ):
                nodes.append(node)
                if isinstance(node, ast.ClassDef):
                    nodes.extend(
                        m
                        for m in node.body
                        if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef) and not m.name.startswith("_")
                    )
        total += len(nodes)
        documented += sum(ast.get_docstring(n) is not None for n in nodes)
    return {"public_api_items": total, "doc_coverage_pct": 100.0 * documented / total if total else 0.0}


@task
def measure() -> dict[str, Any]:
    """All code-quality numbers in one record."""
    files = source_files()
    return {
        "files": len(files),
        "compile_warnings": compile_warnings(files),
        "static_analysis_violations": ruff_violations(),
        **complexity_and_sizes(files),
        **coupling(files),
        **doc_coverage(files),
    }


@flow(name="codecheck", flow_run_name=stage_run_name)
def codecheck_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Measure the code-quality metrics of the source tree."""
    started = now_utc()
    metrics = {"code": measure()}
    write_metrics("codecheck", metrics, params_path, started)
    return metrics
