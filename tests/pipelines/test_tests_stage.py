"""The tests stage: skipped tests count against the pass rate, and a suite that cannot be collected is a FAIL."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.tests import run_pytest


@pytest.fixture
def suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_skipped_tests_count_against_the_pass_rate(suite: Path) -> None:
    (suite / "test_x.py").write_text(
        "import pytest\n\ndef test_ok():\n    pass\n\n@pytest.mark.skip\ndef test_skipped():\n    pass\n"
        "\n@pytest.mark.slow\ndef test_deselected():\n    pass\n"
    )
    doc, proc = run_pytest("not slow", [str(suite / "test_x.py")])
    tests = doc["tests"]
    assert proc.returncode == 0 and tests["total_passed"] == 1 and tests["skipped"] == 1
    assert tests["passed_pct"] == 50.0 and tests["unit"]["count"] == 1 and "coverage_pct" in tests


def test_a_failing_test_is_recorded_not_hidden(suite: Path) -> None:
    (suite / "test_x.py").write_text("def test_ok():\n    pass\n\ndef test_bad():\n    assert False\n")
    doc, proc = run_pytest("", [str(suite / "test_x.py")])
    assert proc.returncode == 1 and doc["tests"]["passed_pct"] == 50.0 and doc["tests"]["failed_pct"] == 50.0


def test_a_collection_error_is_a_fail_with_the_message(suite: Path) -> None:
    (suite / "test_x.py").write_text("def test_ok(:\n    pass\n")
    doc, proc = run_pytest("", [str(suite / "test_x.py")])
    assert proc.returncode == 2 and doc["tests"]["passed_pct"] == 0.0 and doc["tests"]["collection_errors"] == 1
    assert any("SyntaxError" in line or "error" in line.lower() for line in doc["_errors"])


def test_failed_tests_are_named_in_the_evidence(suite: Path) -> None:
    (suite / "test_x.py").write_text("def test_ok():\n    pass\n\ndef test_bad():\n    assert False\n")
    doc, _ = run_pytest("", [str(suite / "test_x.py")])
    assert [n.split("::")[-1] for n in doc["_failed"]] == ["test_bad"]


def test_parallel_workers_report_the_same_evidence_as_one_process(suite: Path) -> None:
    (suite / "test_x.py").write_text(
        "import pytest\n\n@pytest.mark.integration\ndef test_real():\n    pass\n\ndef test_bad():\n    assert False\n"
    )
    (suite / "test_y.py").write_text("def test_ok():\n    pass\n")
    (suite / "pytest.ini").write_text("[pytest]\nmarkers =\n    integration: real model\n")
    paths = [str(suite / "test_x.py"), str(suite / "test_y.py")]
    serial, _ = run_pytest("", paths)
    parallel, proc = run_pytest("", paths, workers=2)
    assert "-n" in proc.args and proc.returncode == 1
    for key in ("unit", "integration", "total_passed", "passed_pct", "failed_pct"):
        assert parallel["tests"][key] == serial["tests"][key], key
    assert parallel["tests"]["integration"] == {"count": 1} and parallel["_failed"] == serial["_failed"]
