"""Stage `tests`: the test suite as evidence (`python -m pipelines tests`).

Runs `pytest -m <profile.tests.markers> <profile.tests.paths>` with coverage in a subprocess and writes
metrics/tests.json (namespace `tests`): counts by kind, pass rate (skipped tests count against it), coverage,
duration and passed tests per feature. Failing tests are evidence, not a stage failure: the stage exits 0 and
the gate judges. A suite that cannot even be collected is recorded as 0% passing with pytest's message.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from pipelines.common import now_utc, stage_run_name, write_metrics
from pipelines.config import load_params

COVERED = ("engine", "gates", "pipelines")


def pytest_command(
    markers: str,
    paths: list[str],
    summary: Path,
    coverage_json: Path,
    ignore: list[str] | None = None,
    workers: int = 1,
) -> list[str]:
    """The pytest invocation of the stage (what `make test` runs, plus coverage and the evidence plugin); with
    `workers` > 1, pytest-xdist runs each test file whole on one of that many worker processes."""
    cov = [f"--cov={pkg}" for pkg in COVERED] + [f"--cov-report=json:{coverage_json}"]
    evidence = ["-p", "pipelines.pytest_evidence", f"--evidence-out={summary}"]
    skipped = [f"--ignore={path}" for path in ignore or []]
    parallel = ["-n", str(workers), "--dist", "loadfile"] if workers > 1 else []
    flags = ["-q", "-p", "no:cacheprovider", *parallel, *skipped, *evidence, *cov]
    return [sys.executable, "-m", "pytest", "-m", markers, *paths, *flags]


def _failed_run(proc: subprocess.CompletedProcess, minutes: float) -> dict[str, Any]:
    """Evidence of a suite that produced no results: nothing passed, and why."""
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    return {
        "tests": {"total_passed": 0, "passed_pct": 0.0, "failed_pct": 100.0, "collection_errors": 1,
                  "duration_min": minutes},
        "_errors": [f"pytest exited {proc.returncode} without results", *tail],
    }  # fmt: skip


def run_pytest(
    markers: str, paths: list[str], ignore: list[str] | None = None, workers: int = 1
) -> tuple[dict[str, Any], subprocess.CompletedProcess]:
    """Run pytest once in a subprocess; returns the evidence document and the finished process."""
    with tempfile.TemporaryDirectory() as tmp:
        summary, coverage = Path(tmp) / "summary.json", Path(tmp) / "coverage.json"
        start = time.perf_counter()
        command = pytest_command(markers, paths, summary, coverage, ignore, workers)
        proc = subprocess.run(command, capture_output=True, text=True)
        minutes = (time.perf_counter() - start) / 60
        if not summary.is_file():
            return _failed_run(proc, minutes), proc
        doc = json.loads(summary.read_text())
        if coverage.is_file():
            doc["tests"]["coverage_pct"] = json.loads(coverage.read_text())["totals"]["percent_covered"]
        doc["tests"]["exit_code"] = proc.returncode
        return doc, proc


@task
def run_suite(markers: str, paths: list[str], ignore: list[str], workers: int) -> dict[str, Any]:
    """The suite's evidence, with pytest's verdict in the stage log."""
    doc, proc = run_pytest(markers, paths, ignore, workers)
    summary = proc.stdout.strip().splitlines()[-1:] or ["no output"]
    print(f"pytest -m {markers!r} {' '.join(paths)} exited {proc.returncode}: {summary[0]}")
    for nodeid in doc.get("_failed", []):
        print(f"  FAILED {nodeid}")
    if "_errors" in doc:
        get_run_logger().error("pytest produced no results:\n%s", "\n".join(doc["_errors"]))
    return doc


@flow(name="tests", flow_run_name=stage_run_name)
def tests_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Run the profile's test selection and record the outcome as evidence."""
    started = now_utc()
    p = load_params(Path(params_path))
    t = p.profile.tests
    metrics = run_suite(t.markers, list(t.paths), list(t.ignore), t.workers)
    write_metrics("tests", metrics, params_path, started)
    return metrics
