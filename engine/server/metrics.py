"""Prometheus metrics of the server (one registry per app, so tests and several apps do not collide)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from engine import tensor_parallel
from engine.outputs import StreamDelta


def scrape(url: str) -> list[Sample]:
    """Every sample a server's /metrics exposes, parsed by prometheus_client (for clients: stages, benchmarks)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def sample_value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The value of the first sample named `name` whose labels include `labels`; None if there is none."""
    return next((s.value for s in samples if s.name == name and labels.items() <= s.labels.items()), None)


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30, 60)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.running = Gauge("tollgate_requests_running", "Sequences being generated", ["model"], registry=r)
        self.waiting = Gauge("tollgate_requests_waiting", "Sequences waiting for admission", ["model"], registry=r)
        self.kv_usage = Gauge("tollgate_kv_cache_usage_ratio", "Fraction of KV blocks in use", ["model"], registry=r)
        self.ttft = Histogram(
            "tollgate_time_to_first_token_seconds",
            "Request received to first token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "tollgate_inter_token_latency_seconds",
            "Gap between streamed tokens",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "tollgate_e2e_request_latency_seconds",
            "Request received to last token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter("tollgate_prompt_tokens", "Prompt tokens received", ["model"], registry=r)
        self.generation_tokens = Counter("tollgate_generation_tokens", "Tokens generated", ["model"], registry=r)
        self.model_switch = Histogram(
            "tollgate_model_switch_seconds",
            "Request received to its model resident and selected",
            ["model"],
            buckets=(0.0001, 0.001, 0.01, 0.1, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self.model_load = Histogram(
            "tollgate_model_load_seconds", "Time to load a model", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.resident = Gauge("tollgate_models_resident", "Models loaded in memory", registry=r)
        self.steps = Gauge("tollgate_engine_steps", "Engine steps run (one forward each)", ["model"], registry=r)
        self.collectives = Gauge(
            "tollgate_collective_seconds", "Seconds spent in tensor-parallel collectives by this rank", registry=r
        )
        self.requests = Counter("tollgate_requests", "Requests by outcome", ["model", "status"], registry=r)

    def render(self, engines: dict) -> bytes:
        """The exposition text, with the engines' gauges read now."""
        self.resident.set(len(engines))
        self.collectives.set(tensor_parallel.COMM.seconds)
        for name, eng in engines.items():
            self.running.labels(name).set(eng.num_running)
            self.waiting.labels(name).set(eng.num_waiting)
            self.kv_usage.labels(name).set(eng.kv_usage)
            self.steps.labels(name).set(eng.engine.stats.steps)
        return generate_latest(self.registry)

    async def observe(self, model: str, start: float, stream: AsyncIterator[StreamDelta]) -> AsyncIterator[StreamDelta]:
        """Pass deltas through, timing first token, every gap and the whole request."""
        last = None
        try:
            async for delta in stream:
                now = time.perf_counter()
                if last is None:
                    self.ttft.labels(model).observe(now - start)
                else:
                    self.itl.labels(model).observe(now - last)
                last = now
                self.generation_tokens.labels(model).inc(len(delta.token_ids))
                yield delta
            self.e2e.labels(model).observe(time.perf_counter() - start)
        finally:
            await stream.aclose()  # a client that left mid-stream: abort now, not at garbage collection
