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
    return GateSpec(
        name="t",
        source="t",
        max_minor_issues=2,
        profiles=["ci", "weekly"],
        signoff=signoff,
        criteria=[Criterion(**fields)],
    )


HARDWARE = {"cpu": "x", "cores": "2"}


def judge(
    value: float | None, rules: ProfileRules = RULES, n: int | None = None, failures: int | None = None, **overrides
):
    evidence = {} if value is None else {"m.hours": Evidence(value, n, hardware=HARDWARE)}
    if failures is not None:
        evidence["m.failures"] = Evidence(float(failures))
    return evaluate(spec(metric="m.hours", **overrides), evidence, rules)[0]


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


def test_margin_is_positive_on_the_passing_side_for_every_comparator() -> None:
    assert judge(12.5).margin == pytest.approx(2.5)
    assert judge(7.0, comparator="<=").margin == pytest.approx(3.0)
    assert judge(12.0, comparator="<=").margin == pytest.approx(-2.0)
    assert judge(10.0, comparator="==").margin == 0.0 and judge(12.0, comparator="==").margin == pytest.approx(-2.0)
    assert judge(8.0, comparator="==").margin == pytest.approx(-2.0)
    assert judge(12.0, comparator="!=").margin == pytest.approx(2.0)


def test_missing_metric_is_invalid_never_green() -> None:
    result = judge(None)
    assert result.status == INVALID and "not measured" in result.note


def test_evidence_that_failed_validation_is_invalid() -> None:
    result = evaluate(spec(), {"m": Evidence(50.0, invalid_reason="value is NaN")}, RULES)[0]
    assert result.status == INVALID and "value is NaN" in result.note


def test_criterion_outside_the_profile_is_not_in_profile_but_shows_what_was_measured() -> None:
    result = judge(50.0, rules=ProfileRules(name="weekly"))
    assert result.status == NOT_IN_PROFILE and result.value == 50.0 and result.margin == pytest.approx(40.0)
    assert "measured, not gated in weekly" in result.note and result.basis == "measured"
    unmeasured = judge(None, rules=ProfileRules(name="weekly"))
    assert unmeasured.value is None and "not measured" in unmeasured.note


def test_a_regression_outside_the_profile_never_shows_the_raw_speed_as_its_percentage() -> None:
    result = judge(45.56, rules=ProfileRules(name="weekly"), kind="regression", comparator="<", acceptance=5.0)
    assert result.status == NOT_IN_PROFILE and result.value is None and result.margin is None
    assert "m.hours measured 45.56" in result.note


def test_percentile_needs_the_profile_sample_count() -> None:
    low = judge(50.0, n=19, kind="percentile")
    assert low.status == INVALID and "n=19" in low.note
    ok = judge(50.0, n=20, kind="percentile")
    assert ok.status == PASS and ok.n == 20 and "low confidence" in ok.note
    assert judge(50.0, n=100, kind="percentile").note == ""


def test_mtbf_of_a_failure_free_run_is_the_lower_bound_t_over_3() -> None:
    passing = judge(3300.0, failures=0, kind="mtbf", comparator=">", acceptance=1000.0)
    assert passing.status == PASS and passing.value == pytest.approx(3300.0 / 2.9957, rel=1e-4)
    assert "95% lower bound" in passing.note and passing.n == 0
    short = judge(24.0, failures=0, kind="mtbf", comparator=">", acceptance=1000.0)
    assert short.status == INVALID and short.value == pytest.approx(8.01, rel=1e-3) and "2996 h is needed" in short.note
    assert "(125 soaks of this length)" in short.note


@pytest.mark.parametrize(("failures", "chi2"), [(1, 9.4877), (2, 12.5916), (5, 21.0261)])
def test_mtbf_with_failures_is_the_chi_square_lower_bound_not_hours_per_failure(failures: int, chi2: float) -> None:
    result = judge(1000.0, failures=failures, kind="mtbf", comparator=">=", acceptance=100.0)
    assert result.value == pytest.approx(2000.0 / chi2, rel=1e-4) and result.value < 1000.0 / failures
    assert result.n == failures


def test_mtbf_without_a_failure_count_is_invalid() -> None:
    result = judge(1000.0, kind="mtbf", comparator=">=", acceptance=100.0)
    assert result.status == INVALID and "no failure count" in result.note


def test_trend_needs_the_profile_sample_count() -> None:
    assert judge(-0.1, n=5, kind="trend", comparator="<=", acceptance=0.0).status == INVALID
    assert judge(-0.1, n=50, kind="trend", comparator="<=", acceptance=0.0).status == PASS


def test_regression_against_a_baseline() -> None:
    rules = ProfileRules(name="ci", baseline={"m.hours": 100.0}, baseline_hardware=HARDWARE)
    ok = judge(96.0, rules=rules, kind="regression", comparator="<=", acceptance=5.0)
    assert ok.status == PASS and ok.value == pytest.approx(4.0)
    bad = judge(94.0, rules=rules, kind="regression", comparator="<=", acceptance=5.0)
    assert bad.status == FAIL and bad.value == pytest.approx(6.0)
    slower = judge(106.0, rules=rules, kind="regression", comparator="<=", acceptance=5.0, better="lower")
    assert slower.status == FAIL
    assert judge(96.0, kind="regression", comparator="<=", acceptance=5.0).status == INVALID  # no baseline


def test_regression_against_a_baseline_from_other_hardware_is_invalid() -> None:
    rules = ProfileRules(name="ci", baseline={"m.hours": 100.0}, baseline_hardware={"cpu": "y", "cores": "2"})
    result = judge(96.0, rules=rules, kind="regression", comparator="<=", acceptance=5.0)
    assert result.status == INVALID and "other hardware (differs in cpu)" in result.note
    no_fingerprint = ProfileRules(name="ci", baseline={"m.hours": 100.0})
    assert judge(96.0, rules=no_fingerprint, kind="regression", comparator="<=", acceptance=5.0).status == INVALID
