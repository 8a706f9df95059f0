"""Scenario A/B/C exactly as the criteria's Part 7, and the Part 6 sign-off rule."""

from __future__ import annotations

import pytest

from gates.criteria import GateSpec, SignOff, load_spec
from gates.decision import classify, signoff_ok
from gates.evaluate import FAIL, INVALID, NOT_IN_PROFILE, PASS, CheckResult
from tests.conftest import ROOT

RULE = SignOff(
    roles=["product_manager", "engineering_lead", "qa_lead", "security_review", "release_manager"],
    min_approvals=4,
    required=["product_manager", "engineering_lead"],
)
SPEC = GateSpec(name="t", source="t", max_minor_issues=2, signoff=RULE, criteria=[])


def result(status: str, severity: str = "minor", cid: str = "x") -> CheckResult:
    return CheckResult(cid, "1", "performance", "d", "m", severity, status, 1.0, ">=", 1.0, "")


@pytest.mark.parametrize(
    ("statuses", "scenario"),
    [
        ([PASS, PASS, NOT_IN_PROFILE], "A"),
        ([PASS, FAIL], "B"),
        ([PASS, INVALID], "B"),
        ([FAIL, INVALID, PASS], "B"),
        ([FAIL, FAIL, INVALID], "C"),
        ([NOT_IN_PROFILE, NOT_IN_PROFILE], "A"),
    ],
)
def test_issue_count_decides_between_a_b_and_c(statuses: list[str], scenario: str) -> None:
    decision = classify([result(s, cid=str(i)) for i, s in enumerate(statuses)], SPEC)
    assert decision.scenario == scenario


def test_a_failing_critical_trigger_alone_is_scenario_c() -> None:
    decision = classify([result(PASS), result(FAIL, "blocker", "throughput_half")], SPEC)
    assert decision.scenario == "C" and [r.id for r in decision.blockers] == ["throughput_half"]


def test_an_unmeasured_critical_trigger_is_an_issue_not_a_trigger() -> None:
    assert classify([result(INVALID, "blocker")], SPEC).scenario == "B"


def test_top_reasons_put_failures_and_severe_issues_first() -> None:
    decision = classify([result(INVALID, "major", "a"), result(FAIL, "minor", "b"), result(FAIL, "major", "c")], SPEC)
    assert [r.split()[1] for r in decision.top_reasons()] == ["c", "b", "a"]


@pytest.mark.parametrize(
    ("yes", "ok"),
    [
        ({"product_manager", "engineering_lead", "qa_lead", "security_review", "release_manager"}, True),
        ({"product_manager", "engineering_lead", "qa_lead", "security_review"}, True),
        ({"product_manager", "engineering_lead", "qa_lead"}, False),  # 3/5
        ({"engineering_lead", "qa_lead", "security_review", "release_manager"}, False),  # no product manager
        ({"product_manager", "qa_lead", "security_review", "release_manager"}, False),  # no engineering lead
    ],
)
def test_signoff_needs_four_of_five_with_pm_and_eng_lead(yes: set[str], ok: bool) -> None:
    approved, reason = signoff_ok({role: role in yes for role in RULE.roles}, RULE)
    assert approved is ok, reason


def test_signoff_rejects_unknown_roles() -> None:
    approved, reason = signoff_ok({"ceo": True}, RULE)
    assert not approved and "unknown role" in reason


def test_phase3_signoff_rule_is_the_documents() -> None:
    rule = load_spec(ROOT / "conf" / "gates" / "phase3.yaml").signoff
    assert (rule.min_approvals, len(rule.roles), set(rule.required)) == (4, 5, {"product_manager", "engineering_lead"})
