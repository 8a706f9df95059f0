"""`python -m engine.server` as a subprocess on a free loopback port, for the stages that measure it over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import openai

from engine.router.replicas import free_port, wait_healthy, wait_replicas
from engine.server.metrics import sample_value, scrape
from pipelines.config import TollgateConf

STARTUP_TIMEOUT_S = 300


def kv_usage(url: str) -> float:
    """A server's KV-cache usage as its /metrics reports it (one model)."""
    usage = sample_value(scrape(url), "tollgate_kv_cache_usage_ratio")
    if usage is None:
        raise ValueError(f"{url}/metrics has no tollgate_kv_cache_usage_ratio")
    return usage


def greedy_texts(url: str, model: str, prompts: list[str], max_tokens: int = 8) -> list[str]:
    """What the server answers each prompt greedily, one at a time: the texts later answers must match."""
    with openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0, timeout=300) as client:
        return [
            client.completions.create(model=model, prompt=p, max_tokens=max_tokens, temperature=0).choices[0].text
            for p in prompts
        ]


@contextmanager
def running(module: str, args: list[str], env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`python -m MODULE ARGS` on a free loopback port until the block ends (`env` added to this process's)."""
    with running_command([sys.executable, "-m", module, *args], env) as served:
        yield served


@contextmanager
def running_command(cmd: list[str], env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Any server taking `--port` (ours, llama.cpp's llama-server) on a free loopback port, healthy, until the
    block ends."""
    port = free_port()
    proc = subprocess.Popen([*cmd, "--port", str(port)], env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, STARTUP_TIMEOUT_S)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def serving(p: TollgateConf, *extra: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """The pipeline's model (with its quant) served by `engine.server`; yields the base URL and the process."""
    args = ["--model", p.model.path, "--threads", str(p.profile.threads), "--log-level", "warning"]
    args += ["--quant", p.quant.name, *extra]
    if p.quant.name in ("gptq", "awq"):
        args += ["--calibration-text", p.data.calibration_text]
    with running("engine.server", args, env) as served:
        yield served


@contextmanager
def running_server(p: TollgateConf, *extra: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`serving`, for callers that need only the URL."""
    with serving(p, *extra, env=env) as (url, _):
        yield url


@contextmanager
def running_router(p: TollgateConf, replicas: int) -> Iterator[tuple[str, int]]:
    """The pipeline's model on `replicas` engine processes behind `engine.router`, all healthy; yields its URL and
    the router's pid."""
    args = ["--model", p.model.path, "--replicas", str(replicas), "--threads", str(p.profile.threads)]
    args += ["--log-level", "warning"]
    with running("engine.router", args) as (url, proc):
        wait_replicas(url, proc, STARTUP_TIMEOUT_S)
        yield url, proc.pid
