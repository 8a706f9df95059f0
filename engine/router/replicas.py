"""Engine replicas as child processes (`python -m engine.server`), watched by a health loop that restarts them."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
from dataclasses import dataclass, field

import httpx

log = logging.getLogger(__name__)


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
