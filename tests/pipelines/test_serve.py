"""The serve stage hands LoadGen's verdict to the gate: an INVALID run makes its numbers INVALID, with why."""

from __future__ import annotations

from pipelines.serve import declared_invalid


def test_an_invalid_loadgen_run_declares_its_numbers_invalid_with_loadgen_s_reasons() -> None:
    run = {
        "valid": False,
        "loadgen_result": "INVALID",
        "reasons": ["minimum query count not met", "TPOT early stopping"],
    }
    assert declared_invalid(run) == {
        "_invalid": {"serve.mlperf": "MLPerf LoadGen INVALID: minimum query count not met; TPOT early stopping"}
    }
    assert declared_invalid({**run, "valid": True, "loadgen_result": "VALID", "reasons": []}) == {}
