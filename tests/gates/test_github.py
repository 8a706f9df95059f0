"""The verdict on a GitHub Actions run page: summary table in $GITHUB_STEP_SUMMARY, one annotation per flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gates.__main__ import main


def _check(cid: str, status: str, severity: str, value: float | None) -> dict:
    return {"id": cid, "description": f"{cid} | described", "severity": severity, "status": status, "value": value,
            "comparator": ">=", "threshold": 95.0, "unit": "%", "margin": None, "n": None, "note": "",
            "basis": "measured" if value is not None else None}  # fmt: skip


DECISION = {
    "scenario": "C",
    "summary": "C on ci: 3 of 10 criteria judged (30%)",
    "counts": {"PASS": 1, "FAIL": 2, "INVALID": 1, "NOT_IN_PROFILE": 6},
    "top_reasons": ["FAIL coverage (major): measured 84 %, needs >= 95 %"],
    "checks": [
        _check("ok", "PASS", "major", 99.0),
        _check("tests.count", "FAIL", "minor", 70.0),
        _check("coverage", "FAIL", "major", 84.0),
        _check("latency", "INVALID", "critical", None),
    ],
}


def test_summary_page_and_annotations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    decision = tmp_path / "decision.json"
    decision.write_text(json.dumps(DECISION))
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert main(["github", str(decision)]) == 0
    text = summary.read_text()
    assert text.startswith("earlier step\n## Release gate: Scenario C on ci: 3 of 10 criteria judged (30%)")
    table = [line for line in text.splitlines() if line.startswith("| ") and "status" not in line]
    assert [row.split(" | ")[0] for row in table] == ["| FAIL", "| FAIL", "| INVALID"]  # fails first, then INVALID
    assert "coverage: coverage / described | 84 % [measured] | >= 95 %" in table[0]  # a `|` cannot break the table
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "::error title=FAIL coverage::coverage: coverage | described: measured 84 %25, needs >= 95 %25"
    assert out[1].startswith("::warning title=FAIL tests.count::") and out[2].startswith("::warning title=INVALID")


def test_without_the_variable_the_summary_goes_to_stdout(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    decision = tmp_path / "decision.json"
    decision.write_text(json.dumps(DECISION))
    assert main(["github", str(decision)]) == 0
    assert "## Release gate: Scenario C" in capsys.readouterr().out
