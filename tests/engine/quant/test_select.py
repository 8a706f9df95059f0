"""The auto-selector picks the most accurate strategy within the limits and explains every rejection."""

from __future__ import annotations

from engine.quant.select import Limits, Measured, from_metrics, select

MEASURED = [
    Measured("none", 0.0, 20.0, 513.0),
    Measured("int8", 0.1, 24.0, 129.0),
    Measured("int4", 20.0, 34.0, 86.0),
    Measured("gptq", 12.0, 33.0, 86.0),
    Measured("awq", 9.0, 32.0, 86.0),
    Measured("bitnet", 1e9, 36.0, 53.0),
]


def test_most_accurate_within_every_limit() -> None:
    chosen = select(MEASURED, Limits(memory_mb=200, max_loss_pct=15, min_tok_s=30))
    assert chosen.choice == "awq"
    assert chosen.reasons["int8"].startswith("rejected: decode 24.0 tok/s < 30.0")
    assert chosen.reasons["none"].startswith("rejected: weights 513 MB > budget 200 MB")
    assert chosen.reasons["gptq"].startswith("fits, but")
    assert "chose awq" in chosen.explain()


def test_no_limits_means_no_accuracy_loss() -> None:
    assert select(MEASURED, Limits()).choice == "none"


def test_nothing_fits_says_why() -> None:
    chosen = select(MEASURED, Limits(memory_mb=60, max_loss_pct=1))
    assert chosen.choice is None
    assert "no strategy meets every limit" in chosen.explain()
    assert "accuracy loss" in chosen.reasons["bitnet"] and "weights 86 MB" in chosen.reasons["awq"]


def test_candidates_from_a_calibrate_metrics_document() -> None:
    doc = {"quant": {"int8": {"accuracy_loss_pct": 0.1, "decode_tok_s": 24, "weight_mb": 129}, "selected": "x"}}
    assert from_metrics(doc) == [Measured("int8", 0.1, 24, 129)]
