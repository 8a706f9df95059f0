"""Engine replicas as child processes (`python -m engine.server`), watched by a health loop that restarts them."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

log = logging.getLogger(__name__)


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerStartError(RuntimeError):
    """A server process that exited before it became healthy (a busy port, a slow disk: worth one more try)."""


def _wait(ready: Callable[[], bool], proc: subprocess.Popen, timeout: float, what: str) -> None:
    """Poll `ready` every 0.5 s; raises if the process exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"the process behind {what} exited with code {proc.returncode} first")
        try:
            if ready():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not after {timeout:.0f}s")


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Until the server's /health answers 200."""
    _wait(lambda: httpx.get(f"{url}/health", timeout=5).status_code == 200, proc, timeout, f"{url} healthy")


def wait_replicas(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Until every replica the router at `url` lists is healthy."""
    replicas = lambda: httpx.get(f"{url}/admin/replicas", timeout=5).json()  # noqa: E731
    _wait(lambda: all(r["healthy"] for r in replicas()), proc, timeout, f"every replica behind {url} healthy")


@dataclass
class Replica:
    """One engine server: healthy replicas take traffic; `outstanding` counts requests in flight on it.

    A replica with a `command` is this router's child (started, restarted); one without is an engine server
    someone else runs (`--replica-url`, e.g. on another machine): only its health is watched."""

    id: int
    url: str
    command: list[str] | None = None
    proc: subprocess.Popen | None = None
    healthy: bool = False
    outstanding: int = 0
    restarts: int = 0

    def start(self) -> None:
        if self.command:
            self.proc = subprocess.Popen([*self.command, "--port", self.url.rsplit(":", 1)[1]])

    def info(self) -> dict[str, object]:
        return {
            "id": self.id,
            "url": self.url,
            "pid": self.proc.pid if self.proc else None,
            "healthy": self.healthy,
            "outstanding": self.outstanding,
            "restarts": self.restarts,
        }


@dataclass
class ReplicaSet:
    """N replicas of one model; `pick` balances by least outstanding requests among the healthy ones."""

    model: str
    count: int
    threads: int | None = None
    interval_s: float = 1.0
    urls: list[str] = field(default_factory=list)  # engine servers run elsewhere, balanced beside the children
    replicas: list[Replica] = field(default_factory=list)

    def start(self) -> None:
        command = [sys.executable, "-m", "engine.server", "--model", self.model, "--log-level", "warning"]
        if self.threads:
            command += ["--threads", str(self.threads)]
        children = [Replica(i, f"http://127.0.0.1:{free_port()}", command) for i in range(self.count)]
        self.replicas = children + [Replica(self.count + i, url.rstrip("/")) for i, url in enumerate(self.urls)]
        for r in self.replicas:
            r.start()

    def stop(self) -> None:
        for r in self.replicas:
            if r.proc and r.proc.poll() is None:
                r.proc.terminate()
        for r in self.replicas:
            if r.proc:
                try:
                    r.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    r.proc.kill()

    def pick(self, exclude: set[int]) -> Replica | None:
        candidates = [r for r in self.replicas if r.healthy and r.id not in exclude]
        return min(candidates, key=lambda r: (r.outstanding, r.id)) if candidates else None

    async def check(self, client: httpx.AsyncClient) -> None:
        """One health round: a dead process is restarted; a replica is healthy when /health says 200."""
        for r in self.replicas:
            if r.proc is not None and r.proc.poll() is not None:
                log.warning("replica %d (pid %d) exited with %s: restarting", r.id, r.proc.pid, r.proc.returncode)
                r.healthy = False
                r.restarts += 1
                r.outstanding = 0
                r.start()
                continue
            try:
                r.healthy = (await client.get(f"{r.url}/health", timeout=2.0)).status_code == 200
            except httpx.HTTPError:
                r.healthy = False

    async def watch(self) -> None:
        async with httpx.AsyncClient() as client:
            while True:
                await self.check(client)
                await asyncio.sleep(self.interval_s)
