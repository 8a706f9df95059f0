"""`changed since the previous decision` and `python -m gates compare`: new failures, fixes, moves beyond noise."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gates.__main__ import main
from gates.changes import changes
from tests.gates.project import GOOD, MiniProject


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MiniProject:
    monkeypatch.chdir(tmp_path)
    return MiniProject(tmp_path)


def with_speed(tok_s: float) -> dict:
    return {**GOOD["bench"], "bench": {"batch1": {"decode_tok_s": tok_s}}}


def test_a_new_failure_and_a_fix_are_named_and_noise_is_not(project: MiniProject) -> None:
    project.write_good_evidence()
    green = project.evaluate()
    assert green["changes"] is None
    shutil.copy("reports/decision.json", "green.json")
    project.write_metrics("bench", with_speed(5.0))
    red = project.evaluate("--previous", "green.json")
    assert red["changes"]["new_failures"] == [{"id": "speed", "before": "PASS", "after": "FAIL"}]
    (moved,) = red["changes"]["deltas"]
    assert moved["id"] == "speed" and moved["change_pct"] == pytest.approx(-58.33, abs=0.01)
    assert "new failure: speed (PASS -> FAIL)" in Path("reports/release_report.md").read_text()
    fixed = changes(red, green)
    assert fixed["fixed"] == [{"id": "speed", "before": "FAIL", "after": "PASS"}]
    project.write_metrics("bench", with_speed(12.3))  # +2.5%: inside the 5% band
    assert changes(green, project.evaluate())["deltas"] == []


def test_compare_prints_the_changes_between_two_decision_files(project: MiniProject, capsys) -> None:
    project.write_good_evidence()
    project.evaluate()
    shutil.copy("reports/decision.json", "green.json")
    project.write_metrics("bench", with_speed(15.0))
    project.evaluate()
    capsys.readouterr()
    assert main(["compare", "green.json", "reports/decision.json", "--noise-pct", "10"]) == 0
    out = capsys.readouterr().out
    assert "Scenario A -> A" in out and "moved: speed 12 -> 15 tok/s (+25.0%)" in out
    assert main(["compare", "green.json", "reports/decision.json", "--noise-pct", "30"]) == 0
    assert "no status changes, no metric moved beyond ±30%" in capsys.readouterr().out


def test_compare_with_a_missing_file_is_one_clear_line(project: MiniProject, capsys) -> None:
    assert main(["compare", "nope.json", "also-nope.json"]) == 2
    assert "nope.json: no such decision file" in capsys.readouterr().err
