"""Throughput of a cluster scenario, end to end through the router: what `engine.bench --cluster` reports.

Closed loop at `concurrency` streamed completions (engine.loadgen: random prompts, `ignore_eos`), after one
warm-up request sent straight to each node. While the load runs, a probe times GET /health from the host to every
node over the path the router uses (its link and proxy): the node-to-node RPC latency. Each node's peak RSS comes
from /proc (the namespaces share the host's PID space).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import torch

from engine.cluster.run import ClusterRun, running_cluster
from engine.cluster.scenario import Scenario, ScenarioError, load
from engine.loadgen import make_prompts, run_load, summarize
from engine.report_json import emit_json
from engine.server.metrics import sample_value, scrape
from engine.stats import cpu_name, percentiles, proc_status_mb

PROBE_INTERVAL_S = 0.1


def load_args(
    url: str, model: str, concurrency: int, requests: int, prompt_len: int, max_tokens: int
) -> argparse.Namespace:
    """engine.loadgen's options for a closed-loop run (no SLOs: throughput is what is measured)."""
    return argparse.Namespace(
        url=url, model=model, requests=requests, concurrency=concurrency, rate=None, poisson=False,
        prompt_len=prompt_len, max_tokens=max_tokens, warmup=0, timeout=600.0, seed=0,
        slo_ttft_ms=None, slo_tpot_ms=None,
    )  # fmt: skip


async def _probe(urls: list[str], samples: list[float], stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=10.0) as client:
        while not stop.is_set():
            for url in urls:
                start = time.perf_counter()
                try:
                    await client.get(f"{url}/health")
                    samples.append((time.perf_counter() - start) * 1000)
                except httpx.HTTPError:
                    pass  # a reset link: the router retries it; the probe counts only answered round trips
            await asyncio.sleep(PROBE_INTERVAL_S)


async def _load_with_probe(args: argparse.Namespace, urls: list[str]) -> tuple[list[Any], float, list[float]]:
    samples: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(urls, samples, stop))
    results, wall = await run_load(args)
    stop.set()
    await probe
    return results, wall, samples


def _warm(cluster: ClusterRun, model: str, prompt_len: int) -> None:
    """One short completion on every node directly, so no node's first-request setup lands in the measurement."""
    prompt = make_prompts(1, prompt_len, seed=99)[0]
    body = {"model": model, "prompt": prompt, "max_tokens": 4, "temperature": 0.0, "ignore_eos": True}
    for server in cluster.servers:
        httpx.post(f"{server.direct_url}/v1/completions", json=body, timeout=600).raise_for_status()


def node_peak_rss_mb(proc: subprocess.Popen) -> float:
    """Peak RSS of what runs on a node: the process started there and its children (torchrun's rank)."""
    tree = [proc.pid, *(child.pid for child in psutil.Process(proc.pid).children(recursive=True))]
    return sum(proc_status_mb("VmHWM", pid) for pid in tree)


def comm_reading(url: str, model: str) -> tuple[float, float]:
    """(seconds in collectives, engine steps) from a server's /metrics."""
    samples = scrape(url)
    steps = sample_value(samples, "tollgate_engine_steps", model=model)
    return sample_value(samples, "tollgate_collective_seconds") or 0.0, steps or 0.0


def measure(
    checkpoint: str | Path, scenario: Scenario, concurrency: int, requests: int, prompt_len: int, max_tokens: int
) -> dict[str, Any]:
    """One scenario's row: aggregate output tok/s, request errors, RPC latency, per-node peak RSS."""
    model = Path(checkpoint).name
    with running_cluster(str(checkpoint), scenario) as cluster:
        _warm(cluster, model, prompt_len)
        args = load_args(cluster.url, model, concurrency, requests, prompt_len, max_tokens)
        rank0 = cluster.servers[0].direct_url
        before = comm_reading(rank0, model)
        results, wall, rpc = asyncio.run(_load_with_probe(args, [s.url for s in cluster.servers]))
        (comm_s, steps) = (a - b for a, b in zip(comm_reading(rank0, model), before, strict=True))
        rss = [node_peak_rss_mb(proc) for proc in cluster.node_procs]
        transport, fallback = cluster.transport, cluster.fallback
    load = summarize(results, wall, args)
    cpus = os.cpu_count() or 1
    parallel = scenario.tensor_parallel_size
    return {
        "cluster": scenario.name,
        "nodes": scenario.nodes,
        "threads_per_node": scenario.threads_per_node,
        "tensor_parallel_size": parallel,
        **({"comm_ms_per_step": 1000 * comm_s / steps} if parallel > 1 and steps else {}),
        "transport": transport,
        **({"transport_fallback": fallback} if fallback else {}),
        "faults": {k: v for k, v in vars(scenario.faults).items() if v},
        "cpus": cpus,
        "oversubscribed": scenario.nodes * scenario.threads_per_node > cpus,
        "concurrency": concurrency,
        "output_tok_s": load["output_tok_s"],
        "request_throughput_rps": load["request_throughput_rps"],
        "requests": load["requests"],
        "completed": load["completed"],
        "errors": load["errors"],
        "duration_s": wall,
        "tpot_ms": load["tpot_ms"],
        "rpc_ms": percentiles(rpc),
        "node_peak_rss_mb": rss,
    }


def cluster_rows(
    checkpoint: str | Path, names: list[str], batches: list[int], threads: list[int], prompt_len: int,
    new_tokens: int, repeats: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """`engine.bench --cluster`: each scenario at each batch (the concurrency, `repeats` requests per slot) and
    thread count (per node), in that order, as bench rows with a `cluster` field."""
    rows = []
    for t, batch, name in itertools.product(threads, batches, names):
        scenario = dataclasses.replace(load(name), threads_per_node=t)
        row = measure(checkpoint, scenario, batch, batch * repeats, prompt_len, new_tokens)
        rows.append({"system": "tollgate", "quant": "none", "batch": batch, "threads": t, **row})
    return rows


def cluster_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Each scenario's output tok/s over `single`'s at the same batch and threads."""
    single = {(r["batch"], r["threads"]): r["output_tok_s"] for r in rows if r["cluster"] == "single"}
    return {
        f"{r['cluster']}_batch{r['batch']}_t{r['threads']}_vs_single": r["output_tok_s"] / base
        for r in rows
        if r["cluster"] != "single" and (base := single.get((r["batch"], r["threads"])))
    }


def cluster_error(args: argparse.Namespace) -> str | None:
    """What is wrong with `engine.bench --cluster` options, before anything starts; None when nothing is."""
    if args.vs or args.compile or args.quant != ["none"]:
        return "--cluster serves fp32 through engine.server: leave out --vs, --compile and --quant"
    for name in args.cluster:
        try:
            load(name)
        except ScenarioError as exc:
            return str(exc)
    return None


def cluster_main(args: argparse.Namespace) -> int:
    """`engine.bench --cluster`: every scenario through the router, side by side; exit 1 if one lost requests."""
    rows = cluster_rows(
        args.model, args.cluster, args.batch, args.threads, args.prompt_len, args.new_tokens, args.repeats
    )
    report = {"model": str(args.model), "torch": torch.__version__, "cpu": cpu_name(), "prompt_len": args.prompt_len,
              "new_tokens": args.new_tokens, "results": rows, "summary": cluster_summary(rows)}  # fmt: skip
    emit_json(report, args.out)
    return 1 if any(r["completed"] < r["requests"] for r in rows) else 0
