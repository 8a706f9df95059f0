"""Stage `serve`: a real server under load (`python -m pipelines serve`).

Starts `python -m engine.server` on a free loopback port, runs the load generator (streaming clients, TTFT /
TPOT / ITL percentiles with n), probes OpenAI API coverage and error handling, stops the server. Writes
metrics/serve.json (namespaces `serve`, `api`); the fault trials are the `faults` stage's.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from engine.loadgen import run_load, summarize
from pipelines.api_probe import probe
from pipelines.common import TRANSIENT_RETRIES, now_utc, stage_run_name, write_metrics
from pipelines.config import TollgateConf, load_params
from pipelines.live_server import running_server


@task(**TRANSIENT_RETRIES)
def serve_and_measure(p: TollgateConf) -> dict[str, Any]:
    """Server up, load, probes, server down (always)."""
    s = p.profile.serve
    with running_server(p) as url:
        model = Path(p.model.path).name
        load_args = argparse.Namespace(
            url=url,
            model=model,
            requests=s.requests,
            concurrency=s.concurrency,
            rate=None,
            poisson=False,
            prompt_len=s.prompt_len,
            max_tokens=s.max_tokens,
            warmup=2,
            timeout=600,
            seed=0,
            slo_ttft_ms=s.slo_ttft_ms,
            slo_tpot_ms=s.slo_tpot_ms,
        )
        results, wall = asyncio.run(run_load(load_args))
        load = summarize(results, wall, load_args)
        get_run_logger().info(
            "%d/%d requests, %.1f output tok/s", load["completed"], load["requests"], load["output_tok_s"]
        )
        return {"serve": {**load, "concurrency": s.concurrency}, **probe(url, model)}


@flow(name="serve", flow_run_name=stage_run_name)
def serve_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Measure the served model under load and its API coverage."""
    started = now_utc()
    p = load_params(Path(params_path))
    metrics = serve_and_measure(p)
    write_metrics("serve", metrics, params_path, started)
    return metrics
