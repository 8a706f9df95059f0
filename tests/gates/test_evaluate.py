"""The evaluator: every comparator, exact thresholds, missing evidence, percentiles, MTBF and regressions."""

from __future__ import annotations

import pytest

from gates.criteria import Criterion, GateSpec, SignOff
from gates.evaluate import FAIL, INVALID, NOT_IN_PROFILE, PASS, Evidence, ProfileRules, evaluate

RULES = ProfileRules(name="ci", min_samples=20)


def spec(**overrides: object) -> GateSpec:
    fields = {
        "id": "c",
        "part": "1.1",
        "dimension": "performance",
        "description": "a check",
        "metric": "m",
        "comparator": ">=",
        "acceptance": 10.0,
        "profiles": ["ci"],
    }
    fields.update(overrides)
    signoff = SignOff(roles=["a"], min_approvals=1, required=[])
    return GateSpec(name="t", source="t", max_minor_issues=2, signoff=signoff, criteria=[Criterion(**fields)])


def judge(value: float | None, rules: ProfileRules = RULES, n: int | None = None, **overrides: object):
    evidence = {} if value is None else {"m": Evidence(value, n)}
    return evaluate(spec(**overrides), evidence, rules)[0]


@pytest.mark.parametrize(
    ("comparator", "below", "at", "above"),
    [
        (">=", FAIL, PASS, PASS),
        (">", FAIL, FAIL, PASS),
        ("<=", PASS, PASS, FAIL),
        ("<", PASS, FAIL, FAIL),
        ("==", FAIL, PASS, FAIL),
        ("!=", PASS, FAIL, PASS),
    ],
)
def test_every_comparator_below_at_and_above_the_threshold(comparator, below, at, above) -> None:
    assert [judge(v, comparator=comparator).status for v in (9.999, 10.0, 10.001)] == [below, at, above]


def test_margin_is_positive_inside_the_threshold() -> None:
    assert judge(12.5).margin == pytest.approx(2.5)
    assert judge(7.0, comparator="<=").margin == pytest.approx(3.0)
    assert judge(12.0, comparator="<=").margin == pytest.approx(-2.0)


def test_missing_metric_is_invalid_never_green() -> None:
    result = judge(None)
    assert result.status == INVALID and "not measured" in result.note


def test_evidence_that_failed_validation_is_invalid() -> None:
    result = evaluate(spec(), {"m": Evidence(50.0, invalid_reason="value is NaN")}, RULES)[0]
    assert result.status == INVALID and "value is NaN" in result.note


def test_criterion_outside_the_profile_is_not_in_profile() -> None:
    result = judge(50.0, rules=ProfileRules(name="weekly"))
    assert result.status == NOT_IN_PROFILE and result.margin is None


def test_percentile_needs_the_profile_sample_count() -> None:
    low = judge(50.0, n=19, kind="percentile")
    assert low.status == INVALID and "n=19" in low.note
    ok = judge(50.0, n=20, kind="percentile")
    assert ok.status == PASS and ok.n == 20 and "low confidence" in ok.note
    assert judge(50.0, n=100, kind="percentile").note == ""


def test_mtbf_of_a_failure_free_run_is_the_lower_bound_t_over_3() -> None:
    passing = judge(3300.0, n=0, kind="mtbf", comparator=">", acceptance=1000.0)
    assert passing.status == PASS and passing.value == pytest.approx(1100.0) and "T/3.0" in passing.note
    short = judge(24.0, n=0, kind="mtbf", comparator=">", acceptance=1000.0)
    assert short.status == INVALID and short.value == pytest.approx(8.0) and "3000 h is needed" in short.note


def test_mtbf_with_failures_is_hours_per_failure() -> None:
    result = judge(50.0, n=2, kind="mtbf", comparator=">=", acceptance=100.0)
    assert result.status == FAIL and result.value == pytest.approx(25.0)


def test_regression_against_a_baseline() -> None:
    rules = ProfileRules(name="ci", baseline={"m": 100.0})
    ok = judge(96.0, rules=rules, kind="regression", comparator="<=", acceptance=5.0)
    assert ok.status == PASS and ok.value == pytest.approx(4.0)
    bad = judge(94.0, rules=rules, kind="regression", comparator="<=", acceptance=5.0)
    assert bad.status == FAIL and bad.value == pytest.approx(6.0)
    slower = judge(106.0, rules=rules, kind="regression", comparator="<=", acceptance=5.0, better="lower")
    assert slower.status == FAIL
    assert judge(96.0, kind="regression", comparator="<=", acceptance=5.0).status == INVALID  # no baseline
