"""The server's engine loop: an idle engine pings its runner's peers; a dead engine refuses new work at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.engine import LLMEngine
from engine.errors import EngineDeadError
from engine.sampling import SamplingParams
from engine.server import async_engine
from engine.server.async_engine import AsyncEngine


def test_an_idle_engine_pings_its_peers_and_a_dead_one_refuses_work(tiny_llama: Path, monkeypatch) -> None:
    monkeypatch.setattr(async_engine, "KEEPALIVE_S", 0.05)
    engine = LLMEngine(tiny_llama)
    pings = []
    monkeypatch.setattr(engine.runner, "keepalive", lambda: pings.append(1))

    def rank_lost() -> list:
        raise EngineDeadError("a tensor-parallel rank went away (test)")

    async def scenario() -> None:
        eng = AsyncEngine(engine, "tiny")
        eng.start()
        await asyncio.sleep(0.4)
        assert len(pings) >= 3  # nothing to serve: the loop woke up to ping, not to step
        monkeypatch.setattr(engine, "step", rank_lost)
        stream = await eng.submit([1, 2, 3], SamplingParams(max_tokens=2))
        with pytest.raises(EngineDeadError, match="rank went away"):
            async for _ in stream:
                pass
        assert eng.dead and "rank went away" in eng.dead
        with pytest.raises(EngineDeadError):
            await eng.submit([1, 2, 3], SamplingParams(max_tokens=2))
        await eng.stop()

    asyncio.run(scenario())
