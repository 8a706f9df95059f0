"""Turn evidence (measured metrics) and criteria into per-check verdicts: PASS, FAIL, INVALID or NOT_IN_PROFILE.

The evaluator has no numbers of its own: every threshold comes from the criteria file. INVALID means "not enough
evidence" (metric missing, too few samples, run too short, failed validation) and is never green.
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field
from typing import Any

from gates.criteria import Criterion, GateSpec

PASS, FAIL, INVALID, NOT_IN_PROFILE = "PASS", "FAIL", "INVALID", "NOT_IN_PROFILE"
MTBF_CHI2_FACTOR = 3.0  # zero failures in T hours: MTBF >= T / 3.0 at 95% confidence (chi-square, 2 dof / 2)

COMPARATORS = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass
class Evidence:
    """One measured value; `n` is its sample count (percentiles) or failure count (MTBF runs)."""

    value: float | None
    n: int | None = None
    invalid_reason: str | None = None  # set when validation rejected the table this value came from


@dataclass
class ProfileRules:
    """What a profile demands of evidence before it counts."""

    name: str
    min_samples: int = 100
    baseline: dict[str, float] = field(default_factory=dict)


@dataclass
class CheckResult:
    """One criterion's verdict with the numbers behind it (a row of decision.json)."""

    id: str
    part: str
    dimension: str
    description: str
    metric: str
    severity: str
    status: str
    value: float | None
    comparator: str
    threshold: float
    unit: str
    margin: float | None = None  # how far inside (+) or outside (-) the threshold, in the metric's unit
    n: int | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def margin(value: float, comparator: str, threshold: float) -> float:
    """Distance inside (+) or outside (-) the threshold, whatever the comparator's direction."""
    return value - threshold if comparator in (">=", ">") else threshold - value


Verdict = tuple[str, float | None, int | None, str]  # status, value compared, n, note


def _percentile(c: Criterion, value: float, n: int | None, rules: ProfileRules) -> Verdict | str:
    if n is None or n < rules.min_samples:
        return INVALID, value, n, f"n={n} samples, profile {rules.name} needs >= {rules.min_samples}"
    return f"low confidence: n={n} < 100" if n < 100 else ""


def _mtbf(c: Criterion, hours: float, failures: int) -> tuple[float, str, Verdict | None]:
    """A failure-free run only bounds MTBF from below (T/3.0): too short a run is INVALID, not FAIL."""
    if failures:
        return hours / failures, f"{failures} failure(s) in {hours:.3g} h", None
    bound = hours / MTBF_CHI2_FACTOR
    note = f"no failure in {hours:.3g} h: 95% lower bound MTBF >= {bound:.3g} h (T/3.0)"
    if COMPARATORS[c.comparator](bound, c.acceptance):
        return bound, note, None
    needed = f"; a run of {c.acceptance * MTBF_CHI2_FACTOR:g} h is needed"
    return bound, note, (INVALID, bound, failures, note + needed)


def _regression(c: Criterion, value: float, rules: ProfileRules) -> tuple[float | None, str]:
    base = rules.baseline.get(c.metric)
    if not base:
        return None, f"no baseline value for {c.metric!r}"
    change = (base - value) / base * 100.0 if c.better == "higher" else (value - base) / base * 100.0
    return change, f"baseline {base:.4g}, measured {value:.4g} ({change:+.2f}% regression)"


def _check(c: Criterion, ev: Evidence | None, rules: ProfileRules) -> Verdict:
    """The verdict on one criterion in a profile that evaluates it."""
    if ev is None or ev.value is None:
        return INVALID, None, None, f"no evidence: metric {c.metric!r} was not measured"
    if ev.invalid_reason:
        return INVALID, ev.value, ev.n, f"evidence failed validation: {ev.invalid_reason}"
    value, n, note = float(ev.value), ev.n, ""
    if c.kind == "percentile":
        outcome = _percentile(c, value, n, rules)
        if not isinstance(outcome, str):
            return outcome
        note = outcome
    elif c.kind == "mtbf":
        value, note, early = _mtbf(c, value, n or 0)
        if early:
            return early
    elif c.kind == "regression":
        compared, note = _regression(c, value, rules)
        if compared is None:
            return INVALID, None, n, note
        value = compared
    ok = COMPARATORS[c.comparator](value, c.acceptance)
    return (PASS if ok else FAIL), value, n, note


def evaluate(spec: GateSpec, evidence: dict[str, Evidence], rules: ProfileRules) -> list[CheckResult]:
    """Every criterion of the spec, judged for the profile (those it does not evaluate: NOT_IN_PROFILE)."""
    results = []
    for c in spec.criteria:
        if rules.name not in c.profiles:
            status, value, n, note = NOT_IN_PROFILE, None, None, f"not evaluated by profile {rules.name}"
        else:
            status, value, n, note = _check(c, evidence.get(c.metric), rules)
        results.append(
            CheckResult(
                id=c.id,
                part=c.part,
                dimension=c.dimension,
                description=c.description,
                metric=c.metric,
                severity=c.severity,
                status=status,
                value=value,
                comparator=c.comparator,
                threshold=c.acceptance,
                unit=c.unit,
                margin=None if value is None or status == NOT_IN_PROFILE else margin(value, c.comparator, c.acceptance),
                n=n,
                note=note,
            )
        )
    return results
