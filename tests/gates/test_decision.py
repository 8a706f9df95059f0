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
SPEC = GateSpec(name="t", source="t", max_minor_issues=2, profiles=["ci"], signoff=RULE, criteria=[])


def result(status: str, severity: str = "minor", cid: str = "x", dimension: str = "performance") -> CheckResult:
    return CheckResult(cid, "1", dimension, "d", "m", severity, status, 1.0, ">=", 1.0, "")


def classify_(results: list[CheckResult], min_pct: float = 0.0):
    return classify(results, SPEC, "ci", min_pct)


@pytest.mark.parametrize(
    ("statuses", "scenario"),
    [
        ([PASS, PASS, NOT_IN_PROFILE], "A"),
        ([PASS, FAIL], "B"),
        ([PASS, INVALID], "B"),
        ([FAIL, INVALID, PASS], "B"),
        ([FAIL, FAIL, INVALID], "C"),
    ],
)
def test_minor_issue_count_decides_between_a_b_and_c(statuses: list[str], scenario: str) -> None:
    decision = classify_([result(s, cid=str(i)) for i, s in enumerate(statuses)])
    assert decision.scenario == scenario


def test_a_failing_critical_trigger_alone_is_scenario_c() -> None:
    decision = classify_([result(PASS), result(FAIL, "blocker", "throughput_half")])
    assert decision.scenario == "C" and [r.id for r in decision.blockers] == ["throughput_half"]


def test_a_critical_trigger_that_could_not_be_ruled_out_is_scenario_c() -> None:
    decision = classify_([result(PASS), result(INVALID, "blocker", "tests_failing")])
    assert decision.scenario == "C" and [r.id for r in decision.blockers] == ["tests_failing"]


@pytest.mark.parametrize("status", [FAIL, INVALID])
def test_one_major_issue_is_scenario_c_not_b(status: str) -> None:
    assert classify_([result(PASS), result(status, "major")]).scenario == "C"


def test_a_profile_that_judged_too_little_is_invalid_not_a() -> None:
    results = [result(PASS, cid="a")] + [result(NOT_IN_PROFILE, cid=str(i)) for i in range(9)]
    decision = classify_(results, min_pct=25.0)
    assert decision.scenario == "INVALID" and "1 of 10 criteria judged (10%" in decision.summary
    assert classify_(results, min_pct=10.0).scenario == "A"


def test_a_known_major_failure_is_c_however_little_was_judged() -> None:
    results = [result(FAIL, "major", "wrong")] + [result(NOT_IN_PROFILE, cid=str(i)) for i in range(9)]
    assert classify_(results, min_pct=25.0).scenario == "C"
    minor = [result(FAIL, "minor", "slow")] + [result(NOT_IN_PROFILE, cid=str(i)) for i in range(9)]
    assert classify_(minor, min_pct=25.0).scenario == "INVALID"


def test_scenario_text_names_the_profile_and_the_share_judged() -> None:
    decision = classify_([result(PASS, cid="a"), result(NOT_IN_PROFILE, cid="b")])
    assert decision.summary.startswith("A on ci: 1 of 2 criteria judged (50%)")
    assert "all criteria met" not in decision.summary


def test_top_reasons_put_failures_then_correctness_then_severity_first() -> None:
    decision = classify_(
        [
            result(INVALID, "blocker", "a"),
            result(FAIL, "minor", "b"),
            result(FAIL, "major", "c"),
            result(FAIL, "major", "d", dimension="correctness"),
        ]
    )
    assert [r.split()[1] for r in decision.top_reasons()] == ["d", "c", "b", "a"]


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
