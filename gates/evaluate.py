"""Turn evidence (measured metrics) and criteria into per-check verdicts: PASS, FAIL, INVALID or NOT_IN_PROFILE.

The evaluator has no numbers of its own: every threshold comes from the criteria file. INVALID means "not enough
evidence" (metric missing, too few samples, run too short, failed validation, baseline from other hardware) and
is never green. A criterion outside the profile is NOT_IN_PROFILE but still shows what was measured.
"""

from __future__ import annotations

import math
import operator
from dataclasses import asdict, dataclass, field
from typing import Any

from scipy.stats import chi2

from gates.criteria import Criterion, GateSpec

PASS, FAIL, INVALID, NOT_IN_PROFILE = "PASS", "FAIL", "INVALID", "NOT_IN_PROFILE"
CONFIDENCE = 0.95  # one-sided, for MTBF lower bounds

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
    """One value with where it came from; `n` is its sample count (percentiles, trends)."""

    value: float | None
    n: int | None = None
    invalid_reason: str | None = None  # set when validation rejected it, or its stage declared it invalid
    source: str | None = None  # the evidence file it was read from
    basis: str = "measured"  # measured | derived | formula | declared
    hardware: dict[str, str] | None = None  # the producing stage's hardware fingerprint


@dataclass
class ProfileRules:
    """What a profile demands of evidence before it counts."""

    name: str
    min_samples: int = 100
    baseline: dict[str, float] = field(default_factory=dict)
    baseline_hardware: dict[str, str] | None = None


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
    margin: float | None = None  # distance from the threshold: positive on the passing side
    n: int | None = None
    note: str = ""
    basis: str | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def margin(value: float, comparator: str, threshold: float) -> float:
    """Distance from the threshold, positive on the passing side for every comparator (0 = exactly at it)."""
    if comparator in (">=", ">"):
        return value - threshold
    if comparator in ("<=", "<"):
        return threshold - value
    distance = abs(value - threshold)
    return -distance if comparator == "==" else distance


def mtbf_lower_bound(hours: float, failures: int) -> float:
    """One-sided 95% lower bound on MTBF from `failures` in `hours`: 2T / chi2(0.95; 2k+2) (T/3.0 for k=0)."""
    return 2.0 * hours / float(chi2.ppf(CONFIDENCE, 2 * failures + 2))


Verdict = tuple[str, float | None, int | None, str]  # status, value compared, n, note


def _sampled(value: float, n: int | None, rules: ProfileRules) -> Verdict | str:
    if n is None or n < rules.min_samples:
        return INVALID, value, n, f"n={n} samples, profile {rules.name} needs >= {rules.min_samples}"
    return f"low confidence: n={n} < 100" if n < 100 else ""


def _mtbf(c: Criterion, hours: float, failures: Evidence | None) -> Verdict | tuple[float, str]:
    """A bound too low to pass with no failure seen means the run was too short: INVALID, not FAIL."""
    if failures is None or failures.value is None:
        return INVALID, hours, None, f"no failure count beside {c.metric!r}: MTBF cannot be bounded"
    k = int(failures.value)
    bound = mtbf_lower_bound(hours, k)
    note = f"{k} failure(s) in {hours:.3g} h: 95% lower bound MTBF >= {bound:.3g} h"
    if k == 0 and not COMPARATORS[c.comparator](bound, c.acceptance):
        needed = c.acceptance * hours / bound
        runs = math.ceil(needed / hours) if hours > 0 else 0
        return (
            INVALID,
            bound,
            k,
            (f"{note}; a failure-free run of {needed:.4g} h is needed to show it ({runs} soaks of this length)"),
        )
    return bound, note


def _regression(c: Criterion, ev: Evidence, rules: ProfileRules) -> Verdict | tuple[float, str]:
    base = rules.baseline.get(c.metric)
    if not base:
        return INVALID, None, ev.n, f"no baseline value for {c.metric!r}"
    if rules.baseline_hardware is None or ev.hardware is None:
        return INVALID, None, ev.n, "baseline or evidence has no hardware fingerprint: not comparable"
    if rules.baseline_hardware != ev.hardware:
        diff = sorted(k for k in {*rules.baseline_hardware, *ev.hardware} if
                      rules.baseline_hardware.get(k) != ev.hardware.get(k))  # fmt: skip
        return INVALID, None, ev.n, f"baseline measured on other hardware (differs in {', '.join(diff)})"
    value = float(ev.value)  # type: ignore[arg-type]
    change = (base - value) / base * 100.0 if c.better == "higher" else (value - base) / base * 100.0
    return change, f"baseline {base:.4g}, measured {value:.4g} ({change:+.2f}% regression)"


def _check(c: Criterion, evidence: dict[str, Evidence], rules: ProfileRules, unmeasured: dict[str, str]) -> Verdict:
    """The verdict on one criterion in a profile that evaluates it."""
    ev = evidence.get(c.metric)
    if ev is None or ev.value is None:
        why = f"no stage measures it yet: {unmeasured[c.metric]}" if c.metric in unmeasured else "not measured"
        return INVALID, None, None, f"no evidence: metric {c.metric!r} {why}"
    if ev.invalid_reason:
        return INVALID, ev.value, ev.n, f"evidence invalid: {ev.invalid_reason}"
    value, n, note = float(ev.value), ev.n, ""
    if c.kind in ("percentile", "trend"):
        outcome = _sampled(value, n, rules)
        if not isinstance(outcome, str):
            return outcome
        note = outcome
    elif c.kind in ("mtbf", "regression"):
        sibling = evidence.get(c.metric.rsplit(".", 1)[0] + ".failures")
        outcome = _mtbf(c, value, sibling) if c.kind == "mtbf" else _regression(c, ev, rules)
        if len(outcome) == 4:
            return outcome  # type: ignore[return-value]
        value, note = outcome  # type: ignore[misc]
        n = int(sibling.value) if c.kind == "mtbf" and sibling and sibling.value is not None else n
    ok = COMPARATORS[c.comparator](value, c.acceptance)
    return (PASS if ok else FAIL), value, n, note


def _outside_profile(c: Criterion, ev: Evidence | None, rules: ProfileRules) -> Verdict:
    gated = f"gated by {', '.join(c.profiles)}"
    if ev is None or ev.value is None:
        return NOT_IN_PROFILE, None, None, f"not measured; {gated}"
    if c.kind == "regression":  # the metric is a speed, not the % change the criterion judges: never show it as one
        note = f"{c.metric} measured {float(ev.value):.4g}; the change vs a baseline is judged where {gated}"
        return NOT_IN_PROFILE, None, ev.n, note
    return NOT_IN_PROFILE, ev.value, ev.n, f"measured, not gated in {rules.name} ({gated})"


def evaluate(spec: GateSpec, evidence: dict[str, Evidence], rules: ProfileRules) -> list[CheckResult]:
    """Every criterion of the spec, judged for the profile (those it does not evaluate: NOT_IN_PROFILE)."""
    results = []
    for c in spec.criteria:
        ev = evidence.get(c.metric)
        if rules.name in c.profiles:
            status, value, n, note = _check(c, evidence, rules, spec.unmeasured)
        else:
            status, value, n, note = _outside_profile(c, ev, rules)
        comparable = value is not None and (status != NOT_IN_PROFILE or c.kind == "value")
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
                margin=margin(value, c.comparator, c.acceptance) if comparable else None,
                n=n,
                note=note,
                basis=ev.basis if ev is not None and value is not None else None,
                source=ev.source if ev is not None else None,
            )
        )
    return results
