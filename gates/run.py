"""One gate evaluation from files: evidence → validation → verdicts → decision → reports (CLI and pipeline)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gates.criteria import load_spec
from gates.decision import classify
from gates.evaluate import ProfileRules, evaluate
from gates.evidence import collect, coverage_evidence, signoff_evidence
from gates.report import write_reports

# Where the project's stages and `make test` leave their evidence (paths relative to the project root).
STAGE_METRICS = [
    Path("metrics") / f"{name}.json" for name in ("bench", "quality", "calibrate", "serve", "stress", "code")
]
TEST_SUMMARY = Path("reports/tests/summary.json")
COVERAGE = Path("reports/tests/coverage.json")
SIGNOFF = Path("release/signoff.yaml")
PLOTS = Path("plots")
EVIDENCE = [*STAGE_METRICS, TEST_SUMMARY]  # every metrics file the gate reads by default


def baseline_for(profile: str, model: str) -> Path:
    """Where the committed baseline of a profile and model lives."""
    return Path("baselines") / f"{profile}-{model}.json"


@dataclass
class GateInputs:
    """Everything one evaluation reads; the defaults are the project's own layout."""

    profile: str
    spec: Path = Path("conf/gates/phase3.yaml")
    min_samples: int = 100
    metrics: list[Path] = field(default_factory=lambda: list(EVIDENCE))
    baseline: Path | None = None
    signoff: Path | None = SIGNOFF
    coverage: Path | None = COVERAGE
    plots: list[Path] = field(default_factory=lambda: sorted(PLOTS.glob("*.png")))
    out: Path = Path("reports")
    validate: bool = True
    context: dict[str, Any] = field(default_factory=dict)


def run_gate(inputs: GateInputs) -> dict[str, Any]:
    """Judge the evidence and write decision.json and the reports; returns the decision document."""
    spec = load_spec(inputs.spec)
    evidence, keys_by_file = collect(inputs.metrics)
    evidence.update(signoff_evidence(inputs.signoff, spec.signoff))
    evidence.update(coverage_evidence(inputs.coverage))
    rejected: dict[str, str] = {}
    if inputs.validate:
        from gates.validate import validate_evidence

        rejected = validate_evidence(evidence, keys_by_file)
    baseline: dict[str, float] = {}
    if inputs.baseline and inputs.baseline.is_file():
        baseline = {k: e.value for k, e in collect([inputs.baseline])[0].items() if e.value is not None}
    rules = ProfileRules(name=inputs.profile, min_samples=inputs.min_samples, baseline=baseline)
    results = evaluate(spec, evidence, rules)
    context = {
        **inputs.context,
        "profile": inputs.profile,
        "spec": str(inputs.spec),
        "evidence_files": sorted(keys_by_file),
        "rejected_by_validation": rejected,
        "baseline": str(inputs.baseline) if baseline else None,
    }
    plots = [p for p in inputs.plots if p.is_file()]
    return write_reports(inputs.out, classify(results, spec), results, context, plots)
