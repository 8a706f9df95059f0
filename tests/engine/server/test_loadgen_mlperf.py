"""MLPerf LoadGen driving the live server over the OpenAI API: its verdict, its reasons, its token latencies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.loadgen_mlperf import main, read_detail_log

pytestmark = pytest.mark.integration
MODEL = "smollm2-135m-instruct"


def loadgen(live, tmp_path: Path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "mlperf.json"
    args = ["--url", live.url, "--model", MODEL, "--prompt-len", "32", "--max-tokens", "8", "--samples", "8"]
    rc = main([*args, "--out-dir", str(tmp_path / "logs"), "--out", str(out), *extra])
    return rc, json.loads(out.read_text())


def test_a_server_run_within_its_constraints_is_valid_with_loadgen_percentiles(live, tmp_path: Path) -> None:
    rc, r = loadgen(live, tmp_path, "--qps", "4", "--min-duration-s", "3", "--min-queries", "8",
                    "--latency-percentile", "50")  # fmt: skip
    assert rc == 0 and r["valid"] and r["loadgen_result"] == "VALID" and r["reasons"] == []
    assert r["queries"] >= 8 and r["failed"] == 0 and r["ttft_ms"]["n"] == r["queries"]
    assert 0 < r["ttft_ms"]["p50"] <= r["ttft_ms"]["p99"] and 0 < r["tpot_ms"]["p50"] <= r["tpot_ms"]["p99"]
    assert (tmp_path / "logs" / "mlperf_log_summary.txt").read_text().count("Result is : VALID") == 1


def test_an_impossible_tpot_constraint_is_invalid_with_loadgen_s_reason(live, tmp_path: Path) -> None:
    rc, r = loadgen(live, tmp_path, "--qps", "4", "--min-duration-s", "2", "--min-queries", "6", "--tpot-ms", "0.001")
    assert rc == 1 and not r["valid"] and r["loadgen_result"] == "INVALID"
    assert any("latency constraints" in why or "early stopping" in why for why in r["reasons"]), r["reasons"]


def test_a_model_the_server_lacks_fails_every_query_and_says_so(live, tmp_path: Path) -> None:
    out = tmp_path / "mlperf.json"
    args = ["--url", live.url, "--model", "missing", "--qps", "8", "--min-duration-s", "1", "--min-queries", "4"]
    assert main([*args, "--out-dir", str(tmp_path / "logs"), "--out", str(out)]) == 1
    r = json.loads(out.read_text())
    assert (
        not r["valid"]
        and r["failed"] == r["queries"]
        and f"{r['failed']} of {r['queries']} requests failed" in r["reasons"]
    )


def test_the_detail_log_is_read_record_by_record(tmp_path: Path) -> None:
    log = tmp_path / "mlperf_log_detail.txt"
    lines = [
        {"key": "result_validity", "value": "VALID", "metadata": {"is_error": False}},
        {"key": "error_runtime", "value": "Number of tokens need to be greater than 1", "metadata": {"is_error": True}},
    ]
    log.write_text("noise\n" + "".join(f":::MLLOG {json.dumps(x)}\n" for x in lines))
    records = read_detail_log(log)
    assert records["result_validity"] == "VALID" and records["errors"] == ["Number of tokens need to be greater than 1"]
