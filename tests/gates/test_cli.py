"""`python -m gates evaluate | check | show | baseline` on a miniature project, with Great Expectations validation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gates.__main__ import main
from gates.evaluate import Evidence
from gates.evidence import EvidenceError, collect, flatten
from gates.stages import load_stages
from gates.validate import validate_evidence
from tests.gates.project import MiniProject


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MiniProject:
    monkeypatch.chdir(tmp_path)  # the CLI's defaults (dvc.yaml, conf/, metrics/, reports/) are cwd-relative
    return MiniProject(tmp_path)


def test_flatten_keeps_sample_counts_and_skips_facts() -> None:
    flat = flatten({"_provenance": {"x": 1}, "latency": {"itl_ms": {"p95": 12.0, "n": 40}}, "ok": True})
    assert flat["latency.itl_ms.p95"] == Evidence(12.0, 40)
    assert flat["ok"].value == 1.0 and "latency.itl_ms.n" not in flat and "_provenance.x" not in flat


def test_all_green_is_scenario_a_and_check_passes(project: MiniProject, capsys) -> None:
    project.write_good_evidence()
    doc = project.evaluate()
    assert doc["scenario"] == "A" and doc["counts"]["PASS"] == 3
    assert doc["summary"].startswith("A on ci: 3 of 5 criteria judged")
    assert project.check() == 0
    html = (project.root / "reports" / "release_report.html").read_text()
    assert "Scenario A" in html and "<table>" in html and "NOT_IN_PROFILE" in html
    assert "# Release gate: Scenario A" in (project.root / "reports" / "release_report.md").read_text()


def test_decision_records_hashes_provenance_and_basis(project: MiniProject) -> None:
    project.write_good_evidence()
    project.write_metrics("bench", {"bench": {"batch1": {"decode_tok_s": 12.0}, "batch2_vs_batch1": 1.5},
                                    "latency": {"itl_ms": {"p95": 50.0, "n": 30}}})  # fmt: skip
    doc = project.evaluate()
    assert set(doc["evidence"]) == {"metrics/bench.json", "metrics/quality.json"}
    assert doc["evidence"]["metrics/bench.json"]["stage"] == "bench"
    assert len(doc["gate"]["spec_sha256"]) == 64 and doc["gate"]["overrides"] == []
    speed = next(c for c in doc["checks"] if c["id"] == "speed")
    assert speed["basis"] == "measured" and speed["source"] == "metrics/bench.json"
    stages = load_stages()
    assert stages[0].basis_of("bench.batch2_vs_batch1") == "derived"


def test_show_lists_every_criterion_with_status_value_basis_and_threshold(project: MiniProject, capsys) -> None:
    project.write_good_evidence()
    project.evaluate()
    capsys.readouterr()
    assert main(["show", "reports/decision.json"]) == 0
    out = capsys.readouterr().out
    for line in ("PASS            correct", "NOT_IN_PROFILE  big", "not measured", "[measured]", "needs >= 10 tok/s"):
        assert line in out


def test_missing_evidence_makes_check_exit_one(project: MiniProject, capsys) -> None:
    project.write_metrics("bench", {"bench": {"batch1": {"decode_tok_s": 12.0}}})
    project.write_metrics("quality", {"quality": {"greedy": {"token_agreement_pct": 100.0}}})
    doc = project.evaluate()
    assert doc["scenario"] == "B"  # one minor criterion without evidence
    assert project.check() == 1
    assert "INVALID p95" in capsys.readouterr().out


def test_nan_and_out_of_range_values_turn_invalid(project: MiniProject) -> None:
    path = project.root / "metrics" / "bench.json"
    project.write_metrics("bench", {})
    doc = json.loads(path.read_text())
    doc.update({"bench": {"batch1": {"decode_tok_s": math.nan}}, "latency": {"itl_ms": {"p95": -5, "n": 30}}})
    path.write_text(json.dumps(doc))
    evidence, files = collect([path, project.root / "absent.json"], load_stages())
    assert math.isnan(evidence["bench.batch1.decode_tok_s"].value)
    reasons = validate_evidence(evidence, {f.path: f.keys for f in files})
    assert set(reasons) == {"bench.batch1.decode_tok_s", "latency.itl_ms.p95"}
    assert "NaN" in reasons["bench.batch1.decode_tok_s"] and "_ms value outside" in reasons["latency.itl_ms.p95"]


def test_a_memory_overhead_may_be_negative_but_a_memory_size_may_not(project: MiniProject) -> None:
    path = project.root / "metrics" / "bench.json"
    project.write_metrics("bench", {})
    doc = json.loads(path.read_text())
    doc.update({"bench": {"peak_rss_mb": -30.0, "sync_overhead_mb": -30.0}})  # a node holding less than single
    path.write_text(json.dumps(doc))
    evidence, files = collect([path], load_stages())
    assert set(validate_evidence(evidence, {f.path: f.keys for f in files})) == {"bench.peak_rss_mb"}


def test_a_key_outside_its_stage_is_an_error(project: MiniProject, capsys) -> None:
    project.write_metrics("bench", {"bench": {"batch1": {"decode_tok_s": 12.0}}, "quality": {"x": 1}})
    with pytest.raises(EvidenceError, match="does not own"):
        collect([project.root / "metrics" / "bench.json"], load_stages())
    assert main(["evaluate", "--profile", "ci"]) == 2
    assert "does not own" in capsys.readouterr().err


def test_baseline_update_writes_values_with_provenance(project: MiniProject) -> None:
    spec = project.root / "conf" / "gates" / "phase3.yaml"
    spec.write_text(
        spec.read_text()
        + """  - {id: reg, part: '1.x', dimension: performance, description: regression,
     metric: bench.batch1.decode_tok_s, comparator: '<=', acceptance: 5, unit: '%', kind: regression,
     severity: minor, profiles: [ci]}
"""
    )
    (project.root / "params.yaml").write_text("model: {name: m}\n")
    project.write_good_evidence()
    assert main(["baseline", "update", "--profile", "ci"]) == 0
    doc = json.loads((project.root / "baselines" / "ci-m.json").read_text())
    assert doc["bench"]["batch1"]["decode_tok_s"] == 12.0
    assert doc["_provenance"]["hardware"] == {"cpu": "test cpu", "cores": "2"} and "metrics/bench.json" in str(doc)
    project.commit("baseline")
    project.write_good_evidence()
    reg = next(c for c in project.evaluate()["checks"] if c["id"] == "reg")
    assert reg["status"] == "PASS" and reg["value"] == 0.0


def test_bad_spec_is_a_clean_error(project: MiniProject, capsys) -> None:
    (project.root / "bad.yaml").write_text("criteria: [")
    assert main(["evaluate", "--spec", "bad.yaml", "--profile", "ci"]) == 2
    assert "not valid YAML" in capsys.readouterr().err
