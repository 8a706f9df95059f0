"""A scenario running for real on a tiny model: the OpenAI API through the router over namespaced nodes; a node
killed keeps it serving; a bad link's delay shows in the RPC latency; `engine.bench --cluster` side by side."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import openai
import pytest

from engine.bench import main as bench_main
from engine.cluster.bench import measure
from engine.cluster.run import running_cluster
from engine.cluster.scenario import LinkFaults, Scenario, load


def test_the_router_serves_the_openai_api_over_two_nodes_and_survives_losing_one(tiny_llama: Path) -> None:
    with running_cluster(str(tiny_llama), load("dp2")) as cluster:
        assert cluster.transport == ("netns" if os.geteuid() == 0 else "loopback")
        client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="-", max_retries=0, timeout=60)
        ask = lambda: client.completions.create(model=tiny_llama.name, prompt="hello", max_tokens=4, temperature=0)  # noqa: E731
        expected = ask().choices[0].text
        os.kill(cluster.servers[0].proc.pid, signal.SIGKILL)
        assert [ask().choices[0].text for _ in range(4)] == [expected] * 4
        replicas = httpx.get(f"{cluster.url}/admin/replicas").json()
        assert [r["healthy"] for r in replicas] == [False, True]
        procs = [cluster.router, *(s.proc for s in cluster.servers)]
    assert all(p.poll() is not None for p in procs), "a process outlived its scenario"


def test_a_delaying_link_shows_in_the_rpc_latency_and_loses_no_request(tiny_llama: Path) -> None:
    lossy = Scenario("slow-link", 2, faults=LinkFaults(latency_ms=60, jitter_ms=10))
    row = measure(tiny_llama, lossy, concurrency=2, requests=4, prompt_len=8, max_tokens=4)
    assert row["completed"] == row["requests"] == 4 and row["faults"] == {"latency_ms": 60, "jitter_ms": 10}
    assert row["rpc_ms"]["n"] >= 2 and row["rpc_ms"]["p50"] >= 50
    assert len(row["node_peak_rss_mb"]) == 2 and all(mb > 50 for mb in row["node_peak_rss_mb"])


def test_a_model_split_over_two_nodes_serves_every_request_and_reports_its_collectives(tiny_llama: Path) -> None:
    row = measure(tiny_llama, Scenario("tp2", 2, tensor_parallel_size=2), concurrency=2, requests=4, prompt_len=8,
                  max_tokens=4)  # fmt: skip
    assert row["completed"] == row["requests"] == 4 and row["tensor_parallel_size"] == 2
    assert row["comm_ms_per_step"] > 0 and len(row["node_peak_rss_mb"]) == 2


def test_bench_reports_each_cluster_side_by_side(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["--model", str(tiny_llama), "--batch", "2", "--threads", "1", "--cluster", "single", "dp2"]
    assert bench_main([*argv, "--prompt-len", "8", "--new-tokens", "4", "--repeats", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["results"]
    assert [(r["cluster"], r["nodes"], r["batch"], r["threads"]) for r in rows] == [
        ("single", 1, 2, 1),
        ("dp2", 2, 2, 1),
    ]
    assert all(r["completed"] == 2 and r["output_tok_s"] > 0 for r in rows)
    speedup = report["summary"]["dp2_batch2_t1_vs_single"]
    assert speedup == pytest.approx(rows[1]["output_tok_s"] / rows[0]["output_tok_s"])


def test_bench_refuses_options_a_cluster_does_not_take(tiny_llama: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        bench_main(["--model", str(tiny_llama), "--cluster", "dp2", "--quant", "int8"])
    assert "leave out --vs, --compile and --quant" in capsys.readouterr().err
