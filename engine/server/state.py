"""What the HTTP layer serves from: the configuration, the model pool with its metrics, and the API error."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from engine.engine import EngineConfig
from engine.server.async_engine import AsyncEngine
from engine.server.guards import DEFAULT_MAX_BODY_BYTES
from engine.server.metrics import ServerMetrics
from engine.server.models import ModelPool, ModelUnavailableError
from engine.server.protocol import ApiError

DEFAULT_MAX_LORAS = 4  # LoRA slots per base model when adapters may be served (vLLM's --max-loras)


@dataclass
class ServerConfig:
    """What to serve and how much to queue."""

    models: list[str]
    engine: EngineConfig = field(default_factory=EngineConfig)
    max_waiting: int = 64
    memory_budget_mb: float | None = None  # None: load every model at start, never unload
    api_key: str | None = None  # None: no key asked (bind to loopback then)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    loras: dict[str, str] = field(default_factory=dict)  # adapter name -> peft directory, on the first model
    fine_tuning_dir: str | None = None  # None: the files and fine-tuning API are off
    fine_tuning_method: str = "lora"  # what API jobs train: lora or qlora


class Server:
    """The model pool (loaded in the background so /health can say 503 while loading) and the metrics."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        engine = config.engine
        if (config.loras or config.fine_tuning_dir) and not engine.max_loras:
            engine = replace(engine, max_loras=DEFAULT_MAX_LORAS)
        self.pool = ModelPool(config.models, engine, config.max_waiting, self.metrics, config.memory_budget_mb)
        self.loaded = False
        self.adapters: dict[str, tuple[str, str]] = {}  # name -> (base model, adapter directory)
        # more adapters appear while serving (fine-tuning jobs); this yields (name, base, path) for all of them
        self.adapter_source: Callable[[], Iterable[tuple[str, str, str]]] | None = None
        for name, path in config.loras.items():
            self.add_adapter(name, self.pool.names[0], path)

    @property
    def engines(self) -> dict[str, AsyncEngine]:
        return dict(self.pool.resident)

    @property
    def load_error(self) -> str | None:
        return next(iter(self.pool.load_errors.values()), None)

    @property
    def ready(self) -> bool:
        return self.loaded and not self.pool.load_errors

    async def load(self) -> None:
        await self.pool.preload()
        self.loaded = True

    def add_adapter(self, name: str, base: str, path: str) -> None:
        """Serve a LoRA adapter as model `name` on `base` (registered with the engine when first asked for)."""
        if name in self.pool.paths:
            raise ValueError(f"adapter name {name!r} is already a base model's name")
        self.adapters[name] = (base, path)

    def refresh_adapters(self) -> None:
        """Pick up adapters that appeared since (a fine-tuning job that just succeeded is served at once)."""
        for name, base, path in self.adapter_source() if self.adapter_source else ():
            self.adapters.setdefault(name, (base, path))

    async def target(self, name: str) -> tuple[AsyncEngine, str | None]:
        """The engine serving model `name` and the adapter to apply (None for a base model)."""
        if name not in self.adapters and name not in self.pool.paths:
            self.refresh_adapters()
        if name not in self.adapters:
            return await self.engine_for(name), None
        base, path = self.adapters[name]
        eng = await self.engine_for(base)
        loras = eng.engine.loras
        if loras is None:
            raise ApiError(400, f"model {name!r} is a LoRA adapter, but {base!r} runs without LoRA slots", "model")
        if name not in loras.paths:
            try:
                await asyncio.to_thread(loras.register, name, path)
            except ValueError as exc:
                raise ApiError(503, f"adapter {name!r} cannot be served: {exc}", "model", "model_unavailable") from None
        return eng, name

    async def engine_for(self, name: str) -> AsyncEngine:
        if not self.loaded:
            raise ApiError(503, "models are still loading; retry shortly", code="loading")
        if name not in self.pool.paths:
            raise ApiError(404, f"model {name!r} not found; available: {self.pool.names}", "model", "model_not_found")
        try:
            return await self.pool.acquire(name)
        except ModelUnavailableError as exc:
            raise ApiError(503, str(exc), "model", "model_unavailable") from None
