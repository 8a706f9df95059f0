"""The benchmark CLI runs both systems on a tiny model and writes the documented JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.bench import main, summarize

ROW_KEYS = {"system", "batch", "decode_tok_s", "prefill_tok_s", "ttft_ms", "peak_rss_mb", "kv_cache_bytes"}


def test_bench_writes_rows_for_each_system_and_batch(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["--model", str(tiny_llama), "--batch", "1", "2", "--new-tokens", "4", "--prompt-len", "8"]
    assert main([*args, "--threads", "1", "--vs", "hf", "--repeats", "1", "--warmup", "0", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"model", "threads", "torch", "cpu", "results"} <= report.keys()
    assert {(r["system"], r["batch"]) for r in report["results"]} == {
        ("tollgate", 1),
        ("hf", 1),
        ("tollgate", 2),
        ("hf", 2),
    }
    for row in report["results"]:
        assert row.keys() >= ROW_KEYS
        assert row["decode_tok_s"] > 0 and row["peak_rss_mb"] > 0 and row["kv_cache_bytes"] > 0
    assert "none_vs_hf_batch1_t1" in report["summary"]
    assert report["peers_missing"] == {}


def _row(system: str, quant: str, batch: int, threads: int, tok_s: float) -> dict:
    return {"system": system, "quant": quant, "batch": batch, "threads": threads, "decode_tok_s": tok_s}


def test_summary_ratios() -> None:
    rows = [
        _row("tollgate", "none", 1, 1, 20.0),
        _row("tollgate", "none", 8, 1, 100.0),
        _row("tollgate", "none", 1, 2, 30.0),
        _row("tollgate", "int8", 1, 1, 40.0),
        _row("hf", "none", 1, 1, 10.0),
        _row("hf", "none", 8, 1, 50.0),
        _row("llamacpp", "int8", 1, 1, 80.0),
    ]
    s = summarize(rows)
    assert s["none_vs_hf_batch1_t1"] == 2.0 and s["none_vs_hf_batch8_t1"] == 2.0
    assert s["tollgate_none_batch8_t1_vs_batch1"] == 5.0
    assert s["tollgate_none_batch1_t2_vs_t1"] == 1.5
    assert s["int8_vs_fp32_batch1_t1"] == 2.0 and s["int8_vs_llamacpp_batch1_t1"] == 0.5


def test_bad_arguments_exit_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "missing")])
