"""Replicas the router did not start (`--replica-url`): a replica that stops answering leaves the rotation on the
first refused connection, before any health probe, and the request is served by another."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.router.app import build_router
from engine.router.replicas import ReplicaSet, free_port
from pipelines.live_server import running_command


@pytest.fixture
def live_replica(tiny_llama: Path) -> Iterator[str]:
    server = [sys.executable, "-m", "engine.server", "--model", str(tiny_llama), "--threads", "1"]
    with running_command([*server, "--log-level", "warning"]) as (url, _):
        yield url


def test_an_unreachable_remote_replica_is_ejected_at_once_and_the_request_served(
    live_replica: str, tiny_llama: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nobody listens: a node that went away
    replicas = ReplicaSet(str(tiny_llama), count=0, urls=[dead, live_replica], interval_s=3600)
    app = build_router(replicas, attempts=2)

    async def scenario() -> tuple[int, list[bool]]:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient() as probe:
                await replicas.check(probe)
            assert [r.healthy for r in replicas.replicas] == [False, True]
            replicas.replicas[0].healthy = True  # it answered its last probe, then went away
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://router", timeout=60) as client:
                body = {"model": tiny_llama.name, "prompt": "hi", "max_tokens": 2}
                status = (await client.post("/v1/completions", json=body)).status_code
            return status, [r.healthy for r in replicas.replicas]

    status, healthy = asyncio.run(scenario())
    assert status == 200 and healthy == [False, True]
