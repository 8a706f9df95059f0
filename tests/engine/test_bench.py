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
    assert "decode_vs_hf_batch1" in report["summary"]


def test_summary_ratios() -> None:
    rows = [
        {"system": "tollgate", "batch": 1, "decode_tok_s": 20.0},
        {"system": "tollgate", "batch": 8, "decode_tok_s": 100.0},
        {"system": "hf", "batch": 1, "decode_tok_s": 10.0},
        {"system": "hf", "batch": 8, "decode_tok_s": 50.0},
    ]
    s = summarize(rows)
    assert s["decode_vs_hf_batch1"] == 2.0 and s["decode_vs_hf_batch8"] == 2.0
    assert s["tollgate_batch8_vs_batch1"] == 5.0


def test_bad_arguments_exit_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "missing")])
