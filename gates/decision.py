"""Scenario A/B/C from check results (criteria document Part 7) and the sign-off rule (Part 6).

C: a blocker that did not PASS (a critical trigger that failed or could not be ruled out), a major issue, or more
than `max_minor_issues` minor ones. B: one or two minor issues. A: none. A profile that judged (PASS or FAIL)
fewer than its declared share of the criteria gets INVALID, "too little evidence", unless a blocker or major
criterion already FAILED: a known defect defers the release however little else was measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gates.criteria import DIMENSIONS, GateSpec, SignOff
from gates.evaluate import FAIL, INVALID, NOT_IN_PROFILE, PASS, CheckResult

SCENARIOS = {
    "A": "Green light: every criterion this profile evaluates is met",
    "B": "Minor issues: fix and re-test, release delayed",
    "C": "Major issues: defer (critical trigger, major issue or too many issues)",
    "INVALID": "Too little evidence: the profile judged fewer criteria than it declares",
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
        """The k issues a reader should see first: failures, wrong answers first, then by severity and dimension."""
        ranked = sorted(
            self.issues,
            key=lambda r: (
                r.status != FAIL,
                r.dimension != "correctness",
                SEVERITY_ORDER[r.severity],
                DIMENSIONS.index(r.dimension),
                r.id,
            ),
        )
        return [f"{r.status} {r.id} ({r.severity}): {r.description} — {describe(r)}" for r in ranked[:k]]


def describe(r: CheckResult) -> str:
    """Measured value, threshold and note of a check, for people."""
    measured = "not measured" if r.value is None else f"measured {r.value:.4g} {r.unit}".strip()
    text = f"{measured}, needs {r.comparator} {r.threshold:g} {r.unit}".strip()
    return f"{text}; {r.note}" if r.note else text


def scenario_of(issues: list[CheckResult], max_minor: int, judged: int, share: float, min_pct: float) -> str:
    """The Part 7 rule; a known serious failure outranks "too little evidence"."""
    serious = [r for r in issues if r.severity in ("blocker", "major")]
    if any(r.status == FAIL for r in serious):
        return "C"
    if judged == 0 or share < min_pct:
        return "INVALID"
    if serious or len(issues) > max_minor:
        return "C"
    return "B" if issues else "A"


def classify(results: list[CheckResult], spec: GateSpec, profile: str, min_evaluated_pct: float) -> Decision:
    """The scenario of criteria Part 7, named with the profile and how much of the spec it judged."""
    counts = {s: sum(r.status == s for r in results) for s in (PASS, FAIL, INVALID, NOT_IN_PROFILE)}
    issues = [r for r in results if r.status in (FAIL, INVALID)]
    judged = counts[PASS] + counts[FAIL]
    share = 100.0 * judged / len(results) if results else 0.0
    scenario = scenario_of(issues, spec.max_minor_issues, judged, share, min_evaluated_pct)
    scope = f"{scenario} on {profile}: {judged} of {len(results)} criteria judged ({share:.0f}%"
    scope += f", profile needs >= {min_evaluated_pct:g}%)" if scenario == "INVALID" else ")"
    blockers = [r for r in issues if r.severity == "blocker"]
    return Decision(scenario, f"{scope} — {SCENARIOS[scenario]}", counts, blockers, issues)


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
