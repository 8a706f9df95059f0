"""`python -m gates evaluate | check | show` on small evidence files, with Great Expectations validation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gates.__main__ import main
from gates.evaluate import Evidence
from gates.evidence import collect, coverage_evidence, flatten
from gates.validate import validate_evidence

SPEC = """name: t
source: t
max_minor_issues: 2
signoff: {roles: [pm, eng], min_approvals: 2, required: [pm]}
criteria:
  - {id: speed, part: '1.1', dimension: performance, description: speed, metric: bench.batch1.decode_tok_s,
     comparator: '>=', acceptance: 10, unit: tok/s, profiles: [ci]}
  - {id: p95, part: '1.2', dimension: performance, description: latency, metric: latency.itl_ms.p95,
     comparator: '<', acceptance: 100, unit: ms, kind: percentile, profiles: [ci]}
"""


def write(path: Path, data: object) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # the CLI's defaults (params.yaml, baselines/, reports/tests/) are cwd-relative
    return write(tmp_path / "spec.yaml", SPEC)


def evaluate_args(spec: Path, metrics: Path, out: Path, *extra: str) -> list[str]:
    return [
        "evaluate",
        "--spec",
        str(spec),
        "--profile",
        "ci",
        "--min-samples",
        "10",
        "--metrics",
        str(metrics),
        "--out",
        str(out),
        *extra,
    ]


def test_flatten_keeps_sample_counts() -> None:
    flat = flatten({"latency": {"itl_ms": {"p95": 12.0, "n": 40}}, "ok": True})
    assert flat["latency.itl_ms.p95"] == Evidence(12.0, 40)
    assert flat["ok"].value == 1.0 and "latency.itl_ms.n" not in flat


def test_all_green_is_scenario_a_and_check_passes(spec: Path, tmp_path: Path, capsys) -> None:
    metrics = write(
        tmp_path / "m.json", {"bench": {"batch1": {"decode_tok_s": 12}}, "latency": {"itl_ms": {"p95": 50, "n": 30}}}
    )
    assert main(evaluate_args(spec, metrics, tmp_path / "out", "--no-validate")) == 0
    doc = json.loads((tmp_path / "out" / "decision.json").read_text())
    assert doc["scenario"] == "A" and doc["counts"]["PASS"] == 2
    assert main(["check", str(tmp_path / "out" / "decision.json")]) == 0
    html = (tmp_path / "out" / "release_report.html").read_text()
    assert "Scenario A" in html and "<table>" in html
    assert "# Release gate: Scenario A" in (tmp_path / "out" / "release_report.md").read_text()


def test_missing_evidence_makes_check_fail(spec: Path, tmp_path: Path, capsys) -> None:
    metrics = write(tmp_path / "m.json", {"bench": {"batch1": {"decode_tok_s": 12}}})
    main(evaluate_args(spec, metrics, tmp_path / "out", "--no-validate"))
    assert main(["check", str(tmp_path / "out" / "decision.json")]) == 1
    assert "INVALID p95" in capsys.readouterr().out
    assert main(["show", str(tmp_path / "out" / "decision.json")]) == 0


def test_nan_and_out_of_range_values_turn_invalid(spec: Path, tmp_path: Path) -> None:
    metrics = write(
        tmp_path / "m.json",
        '{"bench": {"batch1": {"decode_tok_s": NaN}}, "latency": {"itl_ms": {"p95": -5, "n": 30}}, "x_pct": 150}',
    )
    evidence, by_file = collect([metrics, tmp_path / "absent.json"])
    assert math.isnan(evidence["bench.batch1.decode_tok_s"].value)
    reasons = validate_evidence(evidence, by_file)
    assert set(reasons) == {"bench.batch1.decode_tok_s", "latency.itl_ms.p95", "x_pct"}
    assert "NaN" in reasons["bench.batch1.decode_tok_s"] and "_ms value outside" in reasons["latency.itl_ms.p95"]
    main(evaluate_args(spec, metrics, tmp_path / "out"))
    doc = json.loads((tmp_path / "out" / "decision.json").read_text())
    assert [c["status"] for c in doc["checks"]] == ["INVALID", "INVALID"]
    assert "failed validation" in doc["checks"][0]["note"]


def test_signoff_and_coverage_evidence(spec: Path, tmp_path: Path) -> None:
    write(tmp_path / "cov.json", {"totals": {"percent_covered": 91.5, "num_statements": 2000}})
    assert coverage_evidence(tmp_path / "cov.json")["tests.coverage_pct"].value == 91.5
    assert coverage_evidence(tmp_path / "none.json") == {}


def test_defaults_follow_params_yaml(spec: Path, tmp_path: Path) -> None:
    write(tmp_path / "params.yaml", "profile: {name: ci, min_samples: 10}\nmodel: {name: m}\n")
    Path("metrics").mkdir()
    write(
        Path("metrics/bench.json"),
        {"bench": {"batch1": {"decode_tok_s": 12}}, "latency": {"itl_ms": {"p95": 5, "n": 10}}},
    )
    Path("baselines").mkdir()
    write(Path("baselines/ci-m.json"), {"bench": {"batch1": {"decode_tok_s": 12}}})
    assert main(["evaluate", "--spec", str(spec), "--no-validate"]) == 0
    doc = json.loads(Path("reports/decision.json").read_text())
    assert doc["scenario"] == "A" and doc["context"]["baseline"] == "baselines/ci-m.json"


def test_bad_spec_is_a_clean_error(tmp_path: Path, capsys) -> None:
    bad = write(tmp_path / "bad.yaml", "criteria: [")
    assert main(["evaluate", "--spec", str(bad), "--profile", "ci", "--out", str(tmp_path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
