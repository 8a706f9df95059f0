"""Stage `bench`: throughput, latency and memory scenarios of the profile (`python -m pipelines bench`).

Writes metrics/bench.json (namespaces `bench`, `latency`, `memory`) and the plots throughput vs batch and
the inter-token latency CDF (CSV for `dvc plots`, PNG for the release report).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from prefect import flow, get_run_logger, task

from engine import LLM, SamplingParams
from engine.bench import make_prompts, run_one
from engine.loader import load_model
from engine.stats import percentiles
from pipelines.common import PLOTS, bench_args, now_utc, stage_run_name, write_metrics
from pipelines.config import TollgateConf, load_params
from pipelines.plots import chart, write_csv

MIB = 2**20


@task(retries=1, retry_delay_seconds=5)
def throughput(p: TollgateConf) -> list[dict[str, Any]]:
    """One engine.bench row per batch size, each in a fresh process (its own peak RSS)."""
    args = bench_args(p, Path(p.model.path))
    rows = []
    for batch in p.scenario.throughput.batch_sizes:
        row = run_one("tollgate", args, batch, p.quant.name)
        if "error" in row:
            raise RuntimeError(f"bench at batch {batch} failed: {row['error']}")
        get_run_logger().info("batch %d: %.1f tok/s decode", batch, row["decode_tok_s"])
        rows.append(row)
    return rows


@task
def latency(p: TollgateConf) -> dict[str, Any]:
    """Streamed requests one at a time: TTFT (submit to first token) and every inter-token gap."""
    settings = p.profile.latency
    llm = LLM(Path(p.model.path), enable_prefix_caching=False)
    params = SamplingParams(temperature=0.0, max_tokens=settings.new_tokens, ignore_eos=True)
    prompts = make_prompts(llm.engine.model.config.vocab_size, settings.requests, settings.prompt_len, seed=7)
    ttft, itl = [], []
    with torch.inference_mode():
        for prompt in prompts:
            start = last = time.perf_counter()
            for i, _ in enumerate(llm.stream(prompt, params)):
                now = time.perf_counter()
                (ttft if i == 0 else itl).append((now - last if i else now - start) * 1000)
                last = now
    return {"ttft_ms": percentiles(ttft), "itl_ms": percentiles(itl), "itl_samples": itl}


@task
def memory(p: TollgateConf, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Weights and KV bytes from the engine's accounting; per-sequence memory from the measured RSS slope."""
    model = load_model(Path(p.model.path))
    weights = sum(t.nbytes for t in {id(t): t for t in [*model.parameters(), *model.buffers()]}.values())
    per_token = model.config.kv_bytes_per_token(4)
    out = {"weights_mb": weights / MIB, "kv_bytes_per_token": per_token}
    for ctx in p.scenario.memory.kv_contexts:
        out[f"kv_{ctx // 1024}k_mb"] = per_token * ctx / MIB
    by_batch = {r["batch"]: r["peak_rss_mb"] for r in rows}
    lo, hi = min(by_batch), max(by_batch)
    if hi > lo:
        out["per_sequence_mb"] = (by_batch[hi] - by_batch[lo]) / (hi - lo)
    out["peak_rss_mb"] = max(by_batch.values())
    return out


def write_plots(rows: list[dict[str, Any]], itl: list[float]) -> list[Path]:
    """CSV for `dvc plots`, PNG for the report: throughput vs batch, ITL CDF."""
    write_csv(
        PLOTS / "throughput.csv", ["batch", "decode_tok_s"], ([r["batch"], round(r["decode_tok_s"], 3)] for r in rows)
    )
    ordered = sorted(itl)
    fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
    write_csv(
        PLOTS / "latency_cdf.csv",
        ["itl_ms", "fraction"],
        ([round(v, 3), round(f, 5)] for v, f in zip(ordered, fractions, strict=True)),
    )
    throughput = ([r["batch"] for r in rows], [r["decode_tok_s"] for r in rows])
    return [
        chart(
            PLOTS / "throughput.png",
            {"": throughput},
            "batch size",
            "decode tok/s (aggregate)",
            "Throughput vs batch",
            "o",
        ),
        chart(
            PLOTS / "latency_cdf.png",
            {"": (ordered, fractions)},
            "inter-token latency (ms)",
            "fraction of tokens",
            "Latency CDF (batch 1)",
        ),
    ]


@flow(name="bench", flow_run_name=stage_run_name)
def bench_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Run the profile's throughput, latency and memory scenarios; write metrics and plots."""
    started = now_utc()
    p = load_params(Path(params_path))
    rows = throughput(p)
    lat = latency(p)
    mem = memory(p, rows)
    one = next((r for r in rows if r["batch"] == 1), None)
    bench: dict[str, Any] = {}
    for r in rows:
        bench[f"batch{r['batch']}"] = {k: v for k, v in r.items() if k not in ("system", "batch")}
        if one and r["batch"] != 1:
            bench[f"batch{r['batch']}_vs_batch1"] = r["decode_tok_s"] / one["decode_tok_s"]
    metrics = {"bench": bench, "latency": {k: lat[k] for k in ("ttft_ms", "itl_ms")}, "memory": mem}
    write_metrics("bench", metrics, params_path, started)
    write_plots(rows, lat["itl_samples"])
    return metrics
