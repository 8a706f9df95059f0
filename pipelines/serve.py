"""Stage `serve`: a real server under load (`python -m pipelines serve`).

Starts `python -m engine.server` on a free loopback port, runs our load generator (streaming clients, TTFT /
TPOT / ITL percentiles with n), then MLPerf LoadGen on the same server: its Server scenario (Poisson arrivals at
the profile's QPS, VALID/INVALID from minimum duration, query count, the TTFT/TPOT constraints and early
stopping), whose percentiles the latency criteria read, and its Offline scenario (all queries at once, the
throughput figure); then the rate sweep to the knee (engine.loadgen_sweep: reports/sweep.{json,html}), whose
maximum sustainable rate the regression check reads. Probes OpenAI API coverage and error handling, stops the
server. Writes metrics/serve.json (namespaces `serve`, `api`); an INVALID LoadGen run declares `serve.mlperf`
invalid with LoadGen's reasons, so the latency checks turn INVALID saying why. LoadGen's logs: reports/mlperf/.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from engine.loadgen import parse_args as loadgen_args
from engine.loadgen import run_load, summarize
from engine.loadgen_mlperf import parse_args as mlperf_args
from engine.loadgen_mlperf import run_mlperf
from engine.loadgen_sweep import html_page, sweep
from engine.loadgen_sweep import parse_args as sweep_args
from pipelines.api_probe import probe
from pipelines.common import REPORTS, TRANSIENT_RETRIES, cli_args, now_utc, stage_run_name, write_json, write_metrics
from pipelines.config import MlperfSettings, TollgateConf, load_params
from pipelines.live_server import running_server

OFFLINE_MARGIN = 1.3


@task(**TRANSIENT_RETRIES)
def serve_and_measure(p: TollgateConf) -> dict[str, Any]:
    """Server up, load, probes, server down (always)."""
    s = p.profile.serve
    with tempfile.TemporaryDirectory() as jobs, running_server(p, "--fine-tuning-dir", jobs) as url:
        model = Path(p.model.path).name
        sizes = {"url": url, "model": model, "prompt_len": s.prompt_len, "max_tokens": s.max_tokens}
        load_args = loadgen_args(
            cli_args(
                **sizes,
                requests=s.requests,
                concurrency=s.concurrency,
                slo_ttft_ms=s.slo_ttft_ms,
                slo_tpot_ms=s.slo_tpot_ms,
            )
        )
        results, wall = asyncio.run(run_load(load_args))
        load = summarize(results, wall, load_args)
        get_run_logger().info(
            "%d/%d requests, %.1f output tok/s", load["completed"], load["requests"], load["output_tok_s"]
        )
        server = mlperf(sizes, s.mlperf, "server", s.mlperf.qps)
        knee = rate_sweep(sizes, p)
        # LoadGen's Offline issues 1.1 x expected QPS x min duration queries at once: above the measured
        # throughput, so the run lasts its minimum duration
        expected = max(knee["throughput_rps"] * OFFLINE_MARGIN, 0.1)
        offline = mlperf(sizes, s.mlperf, "offline", expected, s.sweep.max_concurrency)
        serve = {**load, "concurrency": s.concurrency, "mlperf": server, "mlperf_offline": offline, "sweep": knee}
        return {"serve": serve, **probe(url, model), **declared_invalid(server)}


def mlperf(
    sizes: dict[str, Any], m: MlperfSettings, scenario: str, qps: float, max_in_flight: int = 0
) -> dict[str, Any]:
    """One LoadGen test (engine.loadgen_mlperf, its own defaults) with the load's server and sizes; Offline
    queues in the SUT beyond `max_in_flight`, as an Offline harness feeds its accelerator (the server would
    answer 429)."""
    args = mlperf_args(
        cli_args(
            **sizes,
            scenario=scenario,
            qps=qps,
            min_duration_s=m.min_duration_s,
            min_queries=m.min_queries,
            latency_percentile=m.latency_percentile,
            ttft_ms=m.ttft_ms,
            tpot_ms=m.tpot_ms,
            max_in_flight=max_in_flight,
            out_dir=REPORTS / "mlperf" / scenario,
        )
    )
    summary = run_mlperf(args)
    get_run_logger().info("LoadGen %s at %.3g QPS: %s %s", scenario, qps, summary["loadgen_result"], summary["reasons"])
    return summary


def rate_sweep(sizes: dict[str, Any], p: TollgateConf) -> dict[str, Any]:
    """The sweep to the knee (engine.loadgen_sweep, its own defaults; Poisson arrivals): reports/sweep.{json,html},
    and its answer as evidence."""
    s, w = p.profile.serve, p.profile.serve.sweep
    args = sweep_args(
        cli_args(
            "poisson",
            **sizes,
            slo_ttft_ms=s.slo_ttft_ms,
            slo_tpot_ms=s.slo_tpot_ms,
            goodput_pct=w.goodput_pct,
            rates=w.rates,
            repetitions=w.repetitions,
            duration_s=w.duration_s,
            max_concurrency=w.max_concurrency,
        )
    )
    doc = sweep(args)
    write_json(REPORTS / "sweep.json", doc)
    (REPORTS / "sweep.html").write_text(html_page(doc))
    low, high = doc["achieved_rps_interval"] or [0.0, 0.0]
    return {
        "max_sustainable_rps": doc["max_sustainable_rps"] or 0.0,  # none sustainable: 0, a regression to fail
        "achieved_rps_low": low,
        "achieved_rps_high": high,
        "synchronous_rps": doc["synchronous"]["achieved_rps"],
        "throughput_rps": doc["throughput"]["achieved_rps"],
        "rates_tried": len(doc["rates"]),
        "n": doc["n"],
    }


def declared_invalid(server: dict[str, Any]) -> dict[str, Any]:
    """`_invalid` for the LoadGen numbers LoadGen itself did not accept, with its reasons."""
    if server["valid"]:
        return {}
    return {"_invalid": {"serve.mlperf": f"MLPerf LoadGen {server['loadgen_result']}: {'; '.join(server['reasons'])}"}}


@flow(name="serve", flow_run_name=stage_run_name)
def serve_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Measure the served model under load and its API coverage."""
    started = now_utc()
    p = load_params(Path(params_path))
    metrics = serve_and_measure(p)
    write_metrics("serve", metrics, params_path, started)
    return metrics
