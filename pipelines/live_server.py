"""`python -m engine.server` as a subprocess on a free loopback port, for the stages that measure it over HTTP."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from engine.router.replicas import free_port
from pipelines.config import TollgateConf

STARTUP_TIMEOUT_S = 300


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Poll /health until 200; raises if the process exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before becoming healthy")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server at {url} not healthy after {timeout:.0f}s")


@contextmanager
def running_server(p: TollgateConf) -> Iterator[str]:
    """The pipeline's model (with its quant) served on 127.0.0.1; yields the base URL, always stops the server."""
    port = free_port()
    cmd = [sys.executable, "-m", "engine.server", "--model", p.model.path, "--port", str(port)]
    cmd += ["--threads", str(p.profile.threads), "--log-level", "warning", "--quant", p.quant.name]
    if p.quant.name in ("gptq", "awq"):
        cmd += ["--calibration-text", p.data.calibration_text]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, STARTUP_TIMEOUT_S)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
