"""The load generator against a live server: closed and open loop, percentiles with n, goodput."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.loadgen import main

pytestmark = pytest.mark.integration
MODEL = "smollm2-135m-instruct"


def test_closed_loop_measures_every_request(live, tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    args = ["--url", live.url, "--model", MODEL, "--requests", "8", "--concurrency", "4", "--prompt-len", "32"]
    assert main([*args, "--max-tokens", "8", "--warmup", "1", "--slo-ttft-ms", "1e9", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["completed"] == 8 and r["errors"] == {}
    assert r["ttft_ms"]["n"] == 8 and r["tpot_ms"]["n"] == 8 and r["itl_ms"]["n"] >= 8 * 6
    assert r["output_tok_s"] > 0 and r["goodput_rps"] == pytest.approx(r["request_throughput_rps"])
    assert r["ttft_ms"]["p50"] <= r["ttft_ms"]["p95"] <= r["ttft_ms"]["p99"]


def test_open_loop_poisson_and_errors_by_status(live, tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    args = ["--url", live.url, "--model", "missing-model", "--requests", "3", "--rate", "20", "--poisson"]
    assert main([*args, "--max-tokens", "2", "--warmup", "0", "--out", str(out)]) == 1
    assert json.loads(out.read_text())["errors"] == {"404": 3}
