"""One gate evaluation from files: evidence → validation → verdicts → decision → reports (CLI and pipeline).

Everything that could change the verdict is recorded in decision.json (`gate` and `evidence`), so that
`python -m gates check` can re-verify it: the spec's hash, the profile and its declared minimums, every evidence
file's sha256 and producer, the baseline, the sign-offs, and every override of the project's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gates.criteria import GateSpec, load_spec
from gates.decision import Decision, classify
from gates.evaluate import CheckResult, ProfileRules, evaluate
from gates.evidence import EvidenceFile, file_fact, flatten, gather, read_metrics_file, signoff_evidence
from gates.profiles import UnknownProfileError, declared_profile, profile_overrides
from gates.report import write_reports
from gates.stages import DVC_YAML, evidence_stages, load_stages

DEFAULT_SPEC = Path("conf/gates/phase3.yaml")
SIGNOFF = Path("release/signoff.yaml")
PLOTS = Path("plots")


def default_evidence(dvc_yaml: Path = DVC_YAML) -> list[Path]:
    """Every evidence file dvc.yaml declares, in stage order."""
    return [s.evidence for s in evidence_stages(dvc_yaml) if s.evidence is not None]


def baseline_for(profile: str, model: str) -> Path:
    """Where the committed baseline of a profile and model lives."""
    return Path("baselines") / f"{profile}-{model}.json"


@dataclass
class GateInputs:
    """Everything one evaluation reads; None means the project's declared default (which is not an override)."""

    profile: str
    model: str = ""
    spec: Path | None = None
    min_samples: int | None = None
    metrics: list[Path] | None = None
    baseline: Path | None = None
    signoff: Path | None = SIGNOFF
    validate: bool = True
    params: dict[str, Any] | None = None  # the composed params.yaml the stages ran with (recorded, and its profile
    # section compared with conf/profile/)
    dvc_yaml: Path = DVC_YAML
    plots: list[Path] = field(default_factory=lambda: sorted(PLOTS.glob("*.png")))
    out: Path = Path("reports")
    context: dict[str, Any] = field(default_factory=dict)
    previous: dict[str, Any] | None = None  # the last decision, for the report's "changed since" section


@dataclass
class Judgement:
    """The outcome of one evaluation with the facts that produced it."""

    decision: Decision
    results: list[CheckResult]
    gate: dict[str, Any]
    evidence: list[EvidenceFile]


def overrides_of(inputs: GateInputs, declared: dict[str, Any]) -> list[str]:
    """Every way these inputs depart from the project's declared defaults."""
    out = []
    if inputs.params is not None:
        composed = inputs.params.get("profile") or {}
        if composed.get("name") != inputs.profile:
            out.append(f"profile={inputs.profile} (the evidence was made with profile {composed.get('name')!r})")
        else:
            out += profile_overrides(inputs.profile, composed)
    if inputs.spec is not None and inputs.spec != DEFAULT_SPEC:
        out.append(f"spec={inputs.spec} (declared {DEFAULT_SPEC})")
    if inputs.min_samples is not None and inputs.min_samples != declared.get("min_samples"):
        out.append(f"min_samples={inputs.min_samples} (declared {declared.get('min_samples')})")
    if inputs.metrics is not None and inputs.metrics != default_evidence(inputs.dvc_yaml):
        out.append(f"evidence files chosen by hand: {[str(m) for m in inputs.metrics]}")
    if inputs.baseline is not None and inputs.baseline != baseline_for(inputs.profile, inputs.model):
        out.append(f"baseline={inputs.baseline} (declared {baseline_for(inputs.profile, inputs.model)})")
    if not inputs.validate:
        out.append("validation off (--no-validate)")
    return out


def _baseline(path: Path) -> tuple[dict[str, float], dict[str, Any] | None]:
    if not path.is_file():
        return {}, None
    doc = read_metrics_file(path)
    values = {k: e.value for k, e in flatten(doc).items() if e.value is not None}
    return values, {**(file_fact(path) or {}), **(doc.get("_provenance") or {})}


def judge(inputs: GateInputs) -> Judgement:
    """Evaluate without writing anything (what `gates check` repeats to re-verify a decision)."""
    declared = declared_profile(inputs.profile)
    spec_path = inputs.spec or DEFAULT_SPEC
    spec: GateSpec = load_spec(spec_path)
    if inputs.profile not in spec.profiles:
        raise UnknownProfileError(f"profile {inputs.profile!r} is not one of {spec_path}'s profiles {spec.profiles}")
    stages = load_stages(inputs.dvc_yaml)
    metrics = inputs.metrics if inputs.metrics is not None else default_evidence(inputs.dvc_yaml)
    missing = [str(m) for m in inputs.metrics or [] if not m.is_file()]
    if missing:
        raise ValueError(f"evidence file(s) named on the command line do not exist: {missing}")
    evidence, files, rejected = gather(metrics, stages, inputs.validate)
    evidence.update(signoff_evidence(inputs.signoff, spec.signoff))
    baseline_path = inputs.baseline or baseline_for(inputs.profile, inputs.model)
    baseline, baseline_facts = _baseline(baseline_path)
    min_samples = inputs.min_samples if inputs.min_samples is not None else int(declared["min_samples"])
    rules = ProfileRules(inputs.profile, min_samples, baseline, (baseline_facts or {}).get("hardware"))
    results = evaluate(spec, evidence, rules)
    min_pct = float(declared["min_evaluated_pct"])
    gate = {
        "profile": inputs.profile,
        "model": inputs.model,
        "spec": str(spec_path),
        "spec_sha256": file_fact(spec_path)["sha256"],  # type: ignore[index]
        "min_samples": min_samples,
        "min_evaluated_pct": min_pct,
        "validated": inputs.validate,
        "rejected_by_validation": rejected,
        "baseline": baseline_facts,
        "baseline_path": str(baseline_path),
        "signoff": file_fact(inputs.signoff),
        "dvc_yaml": file_fact(inputs.dvc_yaml),
        "overrides": overrides_of(inputs, declared),
        "params": inputs.params,
    }
    return Judgement(classify(results, spec, inputs.profile, min_pct), results, gate, files)


def run_gate(inputs: GateInputs) -> dict[str, Any]:
    """Judge the evidence and write decision.json and the reports; returns the decision document."""
    j = judge(inputs)
    plots = [p for p in inputs.plots if p.is_file()]
    evidence = {f.path: f.record() for f in j.evidence}
    return write_reports(
        inputs.out, j.decision, j.results, j.gate, evidence, inputs.context, plots, previous=inputs.previous
    )
