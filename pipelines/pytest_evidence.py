"""A pytest plugin that writes the test suite's outcome as gate evidence (`-p pipelines.pytest_evidence`).

The tests stage loads it with `--evidence-out FILE`; the file gets the namespace `tests`: counts of unit and
integration tests run, passed tests, the pass rate with skipped tests counted against it, the duration, and
passed tests per feature (by where the tests live). Nothing is written when no test ran: the stage then
records the failure itself, so no stale file survives.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

# tests.by_feature.<feature>: passed tests per feature the criteria count, by where the tests live
FEATURE_PATHS = {
    "tests/engine/quant/": "quantization",
    "tests/engine/test_scheduler.py": "continuous_batching",
    "tests/engine/test_block_manager.py": "continuous_batching",
    "tests/engine/finetune/": "fine_tuning",
    "tests/engine/test_sink_window.py": "long_context",
    "tests/engine/server/test_long_context_serving.py": "long_context",
    "tests/engine/test_long_context.py": "long_context",
    "tests/engine/test_kv_cache.py": "kv_compression",
    "tests/engine/test_lora.py": "fine_tuning",
    "tests/engine/server/test_fine_tuning_api.py": "fine_tuning",
    "tests/engine/cluster/": "distributed_executor",
    "tests/engine/test_tensor_parallel.py": "distributed_executor",
}


class EvidenceRecorder:
    """Collects each test's outcome and writes the summary at the end of the session."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.outcomes: list[tuple[str, bool]] = []  # (outcome, is integration)
        self.failed: list[str] = []
        self.by_feature: dict[str, int] = {}
        self.start = time.time()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.outcomes.append((report.outcome, "integration" in report.keywords))
            if report.outcome == "failed":
                self.failed.append(report.nodeid)
            feature = next((f for prefix, f in FEATURE_PATHS.items() if report.nodeid.startswith(prefix)), None)
            if feature and report.outcome == "passed":
                self.by_feature[feature] = self.by_feature.get(feature, 0) + 1

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.outcomes:
            return
        passed = sum(o == "passed" for o, _ in self.outcomes)
        total = len(self.outcomes)  # a skipped test is not a passing one: it counts against the pass rate
        summary = {
            "tests": {
                "unit": {"count": sum(not i for o, i in self.outcomes if o != "skipped")},
                "integration": {"count": sum(i for o, i in self.outcomes if o != "skipped")},
                "total_passed": passed,
                "skipped": sum(o == "skipped" for o, _ in self.outcomes),
                "passed_pct": 100.0 * passed / total,
                "failed_pct": 100.0 * sum(o == "failed" for o, _ in self.outcomes) / total,
                "duration_min": (time.time() - self.start) / 60,
                "by_feature": self.by_feature,
            },
            "_failed": self.failed,  # which tests, for people (keys starting with _ are not metrics)
        }
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.target.write_text(json.dumps(summary, indent=2) + "\n")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--evidence-out", type=Path, help="write the suite's outcome as tests.* evidence to this file")


def pytest_configure(config: pytest.Config) -> None:
    target = config.getoption("--evidence-out")
    if target is not None and not hasattr(config, "workerinput"):  # under xdist, the controller gets every report
        config.pluginmanager.register(EvidenceRecorder(target), "tollgate-evidence")
