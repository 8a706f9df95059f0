"""conf/gates/phase3.yaml holds every numeric threshold of the criteria document, and the schema guards it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gates.criteria import GateSpecError, load_spec
from gates.evaluate import FAIL, INVALID, PASS, Evidence, ProfileRules, evaluate
from gates.profiles import known_profiles
from tests.conftest import ROOT

PHASE3 = ROOT / "conf" / "gates" / "phase3.yaml"

# (section, number) for every numeric threshold of Parts 1, 2, 4 and 5 of phase3_release_criteria.md
THRESHOLDS = [
    # 1.1 throughput (acceptance, target, stretch) and the benchmark suite
    ("1.1", 119.3),
    ("1.1", 120),
    ("1.1", 150),
    ("1.1", 1.8),
    ("1.1", 180),
    ("1.1", 200),
    ("1.1", 2.7),
    ("1.1", 320),
    ("1.1", 400),
    ("1.1", 3.0),
    ("1.1", 5.0),
    ("1.1", 300),
    ("1.1", 360),
    ("1.x", 6.0),
    ("1.x", 4.0),
    ("1.x", 500),
    ("1.x", 5.0),
    ("1.x", 80),
    ("1.x", 90),
    ("1.x", 85),
    # 1.2 latency
    ("1.2", 700),
    ("1.2", 600),
    ("1.2", 200),
    ("1.2", 150),
    ("1.2", 300),
    ("1.2", 250),
    ("1.2", 500),
    ("1.2", 400),
    ("1.2", 100),
    ("1.2", 50),
    # 1.3 memory
    ("1.3", 200),
    ("1.3", 100),
    ("1.3", 40),
    ("1.3", 50),
    ("1.3", 30),
    ("1.3", 120),
    # 2.1 warnings, static analysis, leaks, races
    ("2.1", 0),
    # 2.2 tests and coverage
    ("2.2", 100),
    ("2.2", 90),
    ("2.2", 80),
    ("2.2", 85),
    ("2.2", 70),
    ("2.2", 24),
    ("7.C", 50),
    ("2.x", 35),
    # 2.3 code quality
    ("2.3", 15),
    ("2.3", 10),
    ("2.3", 100),
    ("2.3", 50),
    ("2.3", 500),
    ("2.3", 300),
    ("2.3", 8),
    ("2.3", 5),
    ("2.3", 90),
    ("2.3", 95),
    # 4.1 reliability (and the Part 7 MTBF trigger)
    ("4.1", 1000),
    ("4.1", 0),
    ("4.1", 100),
    ("4.1", 2),
    ("4.1", 24),
    ("7.C", 100),
    # 5 compatibility
    ("5.1", 95),
    ("5.2", 90),
    ("5.x", 100),
    ("5.x", 99),
    ("5.x", 95),
    ("5.x", 5),
]


@pytest.fixture(scope="module")
def spec():
    return load_spec(PHASE3)


@pytest.mark.parametrize(("section", "number"), THRESHOLDS)
def test_threshold_is_encoded(spec, section: str, number: float) -> None:
    values = {v for c in spec.criteria if c.part == section for v in (c.acceptance, c.target, c.stretch)}
    assert number in values, f"Part {section} threshold {number} missing from {PHASE3.name}"


def test_each_error_type_of_part_4_2_has_a_check(spec) -> None:
    types = {c.id.rsplit(".", 1)[1] for c in spec.criteria if c.part == "4.2"}
    assert types == {
        "invalid_input",
        "out_of_memory",
        "node_failure",
        "node_failure_cluster",  # a node of a cluster scenario killed under load, beside the router's replicas
        "quantization",
        "quantization_kl",  # the fallen-back model's distance from fp32, beside the fallback itself
        "model_load",
        "network_timeout",
        "rate_limiting",
    }


def test_thirteen_features_and_the_critical_triggers(spec) -> None:
    feature_ids = {c.id.split(".")[1] for c in spec.criteria if c.dimension == "features"}
    assert len(feature_ids) == 13
    blockers = {c.id for c in spec.criteria if c.severity == "blocker"}
    assert len(blockers) == 5  # Part 7: throughput, MTBF, tests failing, security, backward compatibility


def test_spec_profiles_are_the_declared_profiles(spec) -> None:
    assert sorted(spec.profiles) == known_profiles(ROOT / "conf" / "profile") == ["ci", "release", "weekly"]


def test_correctness_is_gated_in_every_profile(spec) -> None:
    correctness = [c for c in spec.criteria if c.dimension == "correctness"]
    assert len(correctness) == 4 and all(set(c.profiles) == set(spec.profiles) for c in correctness)
    assert all(c.severity in ("major", "blocker") for c in correctness)


def test_release_evaluates_everything_and_ci_a_subset(spec) -> None:
    assert all("release" in c.profiles for c in spec.criteria)
    ci = [c for c in spec.criteria if "ci" in c.profiles]
    assert 0 < len(ci) < len(spec.criteria)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


BASE = """name: t
source: t
max_minor_issues: 2
profiles: [ci, weekly, release]
signoff: {roles: [a], min_approvals: 1, required: []}
criteria:
"""


@pytest.mark.parametrize(
    ("criterion", "message"),
    [
        (
            "{id: a, part: '1', dimension: performance, description: d, metric: m, comparator: '=>', acceptance: 1, "
            "profiles: [ci]}",
            "comparator",
        ),
        (
            "{id: a, part: '1', dimension: performance, description: d, metric: m, comparator: '>=', acceptance: 1, "
            "profiles: [nightly]}",
            "unknown profile",
        ),
        (
            "{id: a, part: '1', dimension: performance, description: d, metric: m, comparator: '>=', profiles: [ci]}",
            "acceptance",
        ),
    ],
)
def test_schema_rejects_bad_criteria(tmp_path: Path, criterion: str, message: str) -> None:
    with pytest.raises(GateSpecError, match=message):
        load_spec(write(tmp_path, BASE + f"  - {criterion}\n"))


def test_duplicate_ids_are_rejected(tmp_path: Path) -> None:
    c = (
        "{id: a, part: '1', dimension: quality, description: d, metric: m, comparator: '>=', acceptance: 1, "
        "profiles: [ci]}"
    )
    with pytest.raises(GateSpecError, match="duplicate criterion ids"):
        load_spec(write(tmp_path, BASE + f"  - {c}\n  - {c}\n"))


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(GateSpecError, match="file not found"):
        load_spec(tmp_path / "nope.yaml")


# -- every threshold read off the criteria document itself --------------------------------------------------------

DOCUMENT = PHASE3.parent / "phase3_release_criteria.md"
SYMBOLS = {"<": "<", ">": ">", "≥": ">=", "≤": "<="}
INVERSE = {"<": ">=", ">": "<=", "<=": ">", ">=": "<"}  # Part 7 quotes the trigger; the check is its negation
NUMBER = re.compile(r"(\d+(?:\.\d+)?)(K)?")


def document_lines() -> list[str]:
    return [re.sub(r"\s+", " ", line.replace("**", "")) for line in DOCUMENT.read_text().splitlines()]


def reading(threshold: str, unit: str) -> tuple[str, float]:
    """(comparator, number) a person reads in a threshold cell of the document."""
    text = threshold.strip()
    if unit == "bool":  # a behaviour the document describes ("Return 429, queue request"): it happened, or not
        return "==", 1.0
    number = NUMBER.search(text)
    if number is None:  # "All error paths tested", "Complete", "Return 429, queue request", a trigger phrase
        return (">=", 100.0) if text.lower().startswith("all") else ("==", 1.0)
    value = float(number.group(1)) * (1024 if number.group(2) else 1)
    if re.search(r"\bmin\b", text) and unit == "s":
        value *= 60
    symbol = next((SYMBOLS[c] for c in text[: number.start()] if c in SYMBOLS), None)
    if symbol is None and value == 0:
        return "==", 0.0  # "0 errors", "0 race conditions"
    return symbol or ">=", value  # "40+ tests", "1.8× linear", "85% quality", "2-3 models": a level to reach


@pytest.mark.parametrize("criterion", load_spec(PHASE3).criteria, ids=lambda c: c.id)
def test_threshold_and_comparator_are_the_documents(criterion) -> None:
    if criterion.dimension == "correctness":
        assert not criterion.quote  # not in the document: its own rule, said in the spec's comment
        return
    label, threshold = criterion.quote
    line = next((line for line in document_lines() if label in line and threshold in line), None)
    assert line is not None and line.index(label) <= line.index(threshold), f"{criterion.quote} not on one line"
    if criterion.derivation:
        assert f"{criterion.acceptance:g}" in criterion.derivation, criterion.derivation
        return
    comparator, value = reading(threshold, criterion.unit)
    if criterion.part == "7.C":  # a trigger: a count of such events must be 0, a measured level the inverse
        comparator, value = ("==", 0.0) if criterion.unit == "count" else (INVERSE[comparator], value)
    assert (criterion.comparator, criterion.acceptance) == (comparator, value), f"document says {threshold!r}"


def test_quantization_quality_is_judged_held_out_by_kl_and_loss_and_cannot_be_flattered(spec) -> None:
    """A strategy that fits the calibration domain (tiny loss there) but not the held-out one fails 2.1/2.2, a loss
    within budget with a large KL fails too, and no KL measured is never green."""
    rules = ProfileRules(name="release", min_samples=1)
    for feature, strategy, loss_budget in (("2_1", "gptq", 0.5), ("2_2", "awq", 0.3)):
        ids = [f"features.{feature}.{strategy}_loss", f"features.{feature}.{strategy}_kl"]
        only = spec.model_copy(update={"criteria": [c for c in spec.criteria if c.id in ids]})
        flattering = {
            f"quant.{strategy}.accuracy_loss_pct": Evidence(0.01),  # what the calibration domain says
            f"quant.{strategy}.kl_mean": Evidence(0.0001),
            f"quant.{strategy}.heldout.accuracy_loss_pct": Evidence(loss_budget * 10),
            f"quant.{strategy}.heldout.kl_mean": Evidence(0.0001),
        }
        diverging = {**flattering, f"quant.{strategy}.heldout.accuracy_loss_pct": Evidence(0.0)}
        diverging[f"quant.{strategy}.heldout.kl_mean"] = Evidence(0.5)
        for evidence, expected in ((flattering, [FAIL, PASS]), (diverging, [PASS, FAIL]), ({}, [INVALID, INVALID])):
            assert [r.status for r in evaluate(only, evidence, rules)] == expected


def test_fine_tuning_cannot_pass_on_a_task_the_base_model_already_does_or_on_an_extrapolation(spec) -> None:
    """A trivial task (the base model already answers) fails 2.5's base check however high the tuned accuracy,
    and a 7B number extrapolated from a small model, declared invalid by its stage, is never green."""
    rules = ProfileRules(name="release", min_samples=1)
    ids = ["features.2_5.task_accuracy", "features.2_5.base_cannot", "features.2_5.qlora_memory"]
    only = spec.model_copy(update={"criteria": [c for c in spec.criteria if c.id in ids]})
    extrapolated = Evidence(3.2, invalid_reason="stage finetune declares it invalid: extrapolated from 135M")
    trivial = {
        "finetune.lora.task_accuracy_pct": Evidence(100.0),
        "finetune.base.task_accuracy_pct": Evidence(95.0),
        "qlora.peak_memory_gb": extrapolated,
    }
    assert [r.status for r in evaluate(only, trivial, rules)] == [INVALID, PASS, FAIL]
    learned = {**trivial, "finetune.base.task_accuracy_pct": Evidence(0.0)}
    assert [r.status for r in evaluate(only, learned, rules)] == [INVALID, PASS, PASS]


def test_long_context_memory_is_the_pools_not_the_formula_and_quality_needs_the_length(spec) -> None:
    """The 1.3 KV rows read the bytes the pool held in a run at that length: the bench stage's bytes-per-token
    formula (memory.kv_32k_mb) cannot pass them, and a sparse run that stopped short of 32K cannot pass 2.3."""
    rules = ProfileRules(name="release", min_samples=1)
    ids = ["perf.memory.kv_32k", "features.2_3.sparse_attention_context", "features.2_3.sparse_attention_quality"]
    only = spec.model_copy(update={"criteria": [c for c in spec.criteria if c.id in ids]})
    formula_only = {"memory.kv_32k_mb": Evidence(58.0), "long_context.max_tokens": Evidence(16384)}
    assert [r.status for r in evaluate(only, formula_only, rules)] == [INVALID, FAIL, INVALID]
    measured = {
        "long_context.ctx32k.kv_mb": Evidence(58.0),
        "long_context.max_tokens": Evidence(32768),
        "long_context.ctx32k.quality_pct": Evidence(97.0),
    }
    assert [r.status for r in evaluate(only, measured, rules)] == [PASS, PASS, PASS]
