"""What the HTTP layer serves from: the configuration, the model pool with its metrics, and the API error."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.engine import EngineConfig
from engine.server.async_engine import AsyncEngine
from engine.server.guards import DEFAULT_MAX_BODY_BYTES
from engine.server.metrics import ServerMetrics
from engine.server.models import ModelPool, ModelUnavailableError


@dataclass
class ServerConfig:
    """What to serve and how much to queue."""

    models: list[str]
    engine: EngineConfig = field(default_factory=EngineConfig)
    max_waiting: int = 64
    memory_budget_mb: float | None = None  # None: load every model at start, never unload
    api_key: str | None = None  # None: no key asked (bind to loopback then)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


class ApiError(Exception):
    """An error reply in OpenAI's shape: HTTP status, message, the parameter at fault and a code."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


class Server:
    """The model pool (loaded in the background so /health can say 503 while loading) and the metrics."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        self.pool = ModelPool(config.models, config.engine, config.max_waiting, self.metrics, config.memory_budget_mb)
        self.loaded = False

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

    async def engine_for(self, name: str) -> AsyncEngine:
        if not self.loaded:
            raise ApiError(503, "models are still loading; retry shortly", code="loading")
        if name not in self.pool.paths:
            raise ApiError(404, f"model {name!r} not found; available: {self.pool.names}", "model", "model_not_found")
        try:
            return await self.pool.acquire(name)
        except ModelUnavailableError as exc:
            raise ApiError(503, str(exc), "model", "model_unavailable") from None
