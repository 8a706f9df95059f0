"""Scenario A/B/C from check results (criteria document Part 7) and the sign-off rule (Part 6)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gates.criteria import GateSpec, SignOff
from gates.evaluate import FAIL, INVALID, NOT_IN_PROFILE, PASS, CheckResult

SCENARIOS = {
    "A": "Green light: all criteria met, release",
    "B": "Minor issues: fix and re-test, release delayed",
    "C": "Major issues: defer (critical trigger or too many issues)",
}
SEVERITY_ORDER = {"blocker": 0, "major": 1, "minor": 2}


@dataclass
class Decision:
    """The scenario with the evidence behind it."""

    scenario: str
    summary: str
    counts: dict[str, int]
    blockers: list[CheckResult] = field(default_factory=list)
    issues: list[CheckResult] = field(default_factory=list)

    def top_reasons(self, k: int = 5) -> list[str]:
        """The k issues a reader should see first: failures, then by severity."""
        ranked = sorted(self.issues, key=lambda r: (r.status != FAIL, SEVERITY_ORDER[r.severity], r.id))
        return [f"{r.status} {r.id} ({r.severity}): {r.description} — {describe(r)}" for r in ranked[:k]]


def describe(r: CheckResult) -> str:
    """Measured value, threshold and note of a check, for people."""
    measured = "not measured" if r.value is None else f"{r.value:.4g} {r.unit}".strip()
    text = f"measured {measured}, needs {r.comparator} {r.threshold:g} {r.unit}".strip()
    return f"{text}; {r.note}" if r.note else text


def classify(results: list[CheckResult], spec: GateSpec) -> Decision:
    """Blocker failure or more than the allowed issues: C; one or two issues: B; none: A."""
    counts = {s: sum(r.status == s for r in results) for s in (PASS, FAIL, INVALID, NOT_IN_PROFILE)}
    issues = [r for r in results if r.status in (FAIL, INVALID)]
    blockers = [r for r in issues if r.status == FAIL and r.severity == "blocker"]
    if blockers or len(issues) > spec.max_minor_issues:
        scenario = "C"
    elif issues:
        scenario = "B"
    else:
        scenario = "A"
    return Decision(scenario, SCENARIOS[scenario], counts, blockers, issues)


def signoff_ok(approvals: dict[str, bool], rule: SignOff) -> tuple[bool, str]:
    """At least `min_approvals` of the roles said yes, and every required role did."""
    unknown = set(approvals) - set(rule.roles)
    if unknown:
        return False, f"unknown role(s) {sorted(unknown)}; roles: {rule.roles}"
    yes = [r for r in rule.roles if approvals.get(r)]
    missing = [r for r in rule.required if not approvals.get(r)]
    if missing:
        return False, f"required approval missing: {', '.join(missing)}"
    if len(yes) < rule.min_approvals:
        return False, f"{len(yes)}/{len(rule.roles)} approvals, need {rule.min_approvals}"
    return True, f"{len(yes)}/{len(rule.roles)} approvals incl. {', '.join(rule.required)}"
