"""A live server on 127.0.0.1 (uvicorn in a thread, so tests can also look at the engine's KV pool)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from engine.engine import EngineConfig
from engine.server.app import ServerConfig, build_app


@dataclass
class LiveServer:
    url: str
    app: object
    uvicorn_server: uvicorn.Server
    thread: threading.Thread

    def engine(self, name: str):
        return self.app.state.server.engines[name].engine

    def stop(self) -> None:
        self.uvicorn_server.should_exit = True
        self.thread.join(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(config: ServerConfig, timeout: float = 180) -> LiveServer:
    app = build_app(config)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return LiveServer(url, app, server, thread)
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.should_exit = True
    raise RuntimeError(f"server at {url} not healthy within {timeout}s")


@pytest.fixture(scope="session")
def live(smollm2: Path) -> Iterator[LiveServer]:
    server = start_server(ServerConfig(models=[str(smollm2)], engine=EngineConfig(kv_cache_bytes=256 * 2**20)))
    yield server
    server.stop()
