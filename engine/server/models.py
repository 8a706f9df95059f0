"""Several models under one memory budget: load on demand, unload the least recently used, time every switch.

Loads run in a worker thread, so the event loop (and every other model's streams) keeps going meanwhile. A model
serving requests is never unloaded; if nothing idle can make room, the request gets 503 and may retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from pathlib import Path

from engine.engine import EngineConfig, LLMEngine
from engine.server.async_engine import AsyncEngine
from engine.server.metrics import ServerMetrics

log = logging.getLogger(__name__)
MIB = 2**20
CPU_WEIGHT_COPIES = 3  # checkpoint weights + the two fast-kernel layouts (engine/models/linear.py)


class ModelUnavailableError(RuntimeError):
    """The model exists but cannot be made resident now (budget full of busy models, or its load failed)."""


def model_name(path: str) -> str:
    return Path(path).name


def estimate_mb(path: str, engine: EngineConfig) -> float:
    """Resident size of a model: its weights in every layout the engine keeps, plus its KV pool."""
    weights = sum(f.stat().st_size for f in Path(path).glob("*.safetensors")) or sum(
        f.stat().st_size for f in Path(path).glob("*.bin")
    )
    return (weights * CPU_WEIGHT_COPIES + engine.kv_cache_bytes) / MIB


class ModelPool:
    """Resident engines in least-recently-used order; `acquire` makes a model resident and marks it used."""

    def __init__(
        self, paths: list[str], engine: EngineConfig, max_waiting: int, metrics: ServerMetrics, budget_mb: float | None
    ) -> None:
        self.paths = {model_name(p): p for p in paths}
        self.engine_config, self.max_waiting, self.metrics, self.budget_mb = engine, max_waiting, metrics, budget_mb
        self.resident: OrderedDict[str, AsyncEngine] = OrderedDict()
        self.sizes: dict[str, float] = {}
        self.load_errors: dict[str, str] = {}
        self._lock = asyncio.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.paths)

    def used_mb(self) -> float:
        return sum(self.sizes[n] for n in self.resident)

    async def preload(self) -> None:
        """At start: every model when there is no budget, else the first one (the rest load on demand)."""
        for name in self.names if self.budget_mb is None else self.names[:1]:
            try:
                await self.acquire(name)
            except ModelUnavailableError:
                return

    async def acquire(self, name: str) -> AsyncEngine:
        start = time.perf_counter()
        if name not in self.resident:
            async with self._lock:  # one load at a time; others keep serving
                if name not in self.resident:
                    await self._load(name)
        self.resident.move_to_end(name)
        self.metrics.model_switch.labels(name).observe(time.perf_counter() - start)
        return self.resident[name]

    async def _load(self, name: str) -> None:
        need = estimate_mb(self.paths[name], self.engine_config)
        if self.budget_mb is not None:
            await self._make_room(need)
        t0 = time.perf_counter()
        try:
            engine = await asyncio.to_thread(LLMEngine, self.paths[name], self.engine_config)
        except Exception as exc:
            self.load_errors[name] = f"{self.paths[name]}: {exc}"
            log.exception("model load failed")
            raise ModelUnavailableError(f"model {name!r} failed to load: {exc}") from None
        self.metrics.model_load.labels(name).observe(time.perf_counter() - t0)
        async_engine = AsyncEngine(engine, name, self.max_waiting)
        async_engine.start()
        self.resident[name], self.sizes[name] = async_engine, need
        self.load_errors.pop(name, None)

    async def _make_room(self, need: float) -> None:
        for victim in [n for n, e in self.resident.items() if e.idle]:  # least recently used first
            if self.used_mb() + need <= self.budget_mb:
                break
            log.info("unloading %s to make room (%.0f MiB)", victim, self.sizes[victim])
            await self.resident.pop(victim).stop()
        if self.used_mb() + need > self.budget_mb:
            raise ModelUnavailableError(
                f"memory budget {self.budget_mb:.0f} MiB: {self.used_mb():.0f} MiB held by busy models, "
                f"{need:.0f} MiB needed; retry later"
            )
