"""The OpenAI-compatible HTTP API over one or more engines (FastAPI).

Endpoints: GET /v1/models, POST /v1/completions, POST /v1/chat/completions (both stream over SSE), POST
/v1/embeddings (mean of the final-norm hidden states over the input tokens), GET /health, GET /metrics; the
files and fine-tuning endpoints are in engine.server.fine_tuning. A LoRA adapter is a model name of its own.
Errors use OpenAI's shape; a bad request never takes the server down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from engine.server.async_engine import AsyncEngine, QueueFullError
from engine.server.fine_tuning import install_fine_tuning
from engine.server.guards import Guards
from engine.server.protocol import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    SamplingFields,
    error_response,
    install_error_handlers,
)
from engine.server.responses import encode_embedding, new_id, response_body
from engine.server.state import Server, ServerConfig
from engine.server.streams import PromptRun, collect, event_stream, until_disconnect

__all__ = ["ServerConfig", "build_app"]


def _params(req: SamplingFields, eng: AsyncEngine, prompt_len: int, max_tokens: int | None, logprobs: int | None):
    """The engine's sampling parameters; None when max_tokens is 0 (nothing to generate)."""
    budget = eng.max_model_len - prompt_len
    if max_tokens is not None and max_tokens < 0:
        raise ApiError(400, f"max_tokens must be >= 0, got {max_tokens}", "max_tokens")
    params = req.sampling_params(budget if max_tokens is None else min(max(max_tokens, 1), budget), logprobs)
    return None if max_tokens == 0 else params


async def _submit(
    server: Server, eng: AsyncEngine, ids: list[int], params: Any, request: Request, lora: str | None
) -> Any:
    start = time.perf_counter()
    try:
        stream = await eng.submit(ids, params, lora)
    except QueueFullError as exc:
        server.metrics.requests.labels(eng.name, "429").inc()
        raise ApiError(429, f"server busy: {exc}; retry later", code="queue_full") from None
    server.metrics.prompt_tokens.labels(eng.name).inc(len(ids))
    server.metrics.requests.labels(eng.name, "200").inc()
    return until_disconnect(request, server.metrics.observe(eng.name, start, stream))


def _prompt_ids(eng: AsyncEngine, prompt: str | list[int]) -> list[int]:
    ids = eng.encode(prompt) if isinstance(prompt, str) else list(prompt)
    eng.check_prompt(ids)
    return ids


async def _completion_runs(
    server: Server, eng: AsyncEngine, req: CompletionRequest, request: Request, lora: str | None
):
    """One PromptRun per prompt of the request, each submitted (or answered at once when max_tokens is 0)."""
    runs = []
    for number, prompt in enumerate(req.prompts()):
        ids = _prompt_ids(eng, prompt)
        params = _params(req, eng, len(ids), req.max_tokens, req.logprobs)
        run = PromptRun(None, len(ids), number * req.n)
        if req.echo:
            run.echo_text = prompt if isinstance(prompt, str) else eng.tokenizer.decode(ids)
            if req.logprobs is not None:
                run.echo_logprobs = await eng.prompt_logprobs(ids, req.logprobs, lora)
        if params is not None:
            run.stream = await _submit(server, eng, ids, params, request, lora)
        runs.append(run)
    return runs


async def _embeddings(eng: AsyncEngine, req: EmbeddingRequest) -> dict[str, Any]:
    """Mean-pooled final hidden states, one vector per input (text or token ids)."""
    inputs = (
        req.input if isinstance(req.input, list) and req.input and not isinstance(req.input[0], int) else [req.input]
    )
    batches = [eng.encode(x) if isinstance(x, str) else list(x) for x in inputs]
    if any(not ids or len(ids) > eng.max_model_len for ids in batches):
        raise ApiError(400, f"each input must have 1 to {eng.max_model_len} tokens", "input")
    if any(not 0 <= t < eng.vocab_size for ids in batches for t in ids):
        raise ApiError(400, f"input token ids must be in [0, {eng.vocab_size})", "input")
    vectors = [await eng.embed(ids) for ids in batches]
    total = sum(map(len, batches))
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_embedding(v, req.encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "model": req.model,
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }


def build_app(config: ServerConfig) -> FastAPI:
    server = Server(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(server.load())
        jobs = None
        if runner is not None:
            runner.recover()
            jobs = asyncio.create_task(runner.run())
        yield
        loading.cancel()
        if jobs is not None:
            jobs.cancel()
        for eng in server.engines.values():
            await eng.stop()

    app = FastAPI(title="Tollgate OpenAI-compatible server", lifespan=lifespan)
    app.add_middleware(Guards, api_key=config.api_key, max_body_bytes=config.max_body_bytes)
    app.state.server = server
    runner = install_fine_tuning(app, server, config)

    install_error_handlers(app)

    @app.get("/health")
    async def health() -> Response:
        if server.load_error:
            return error_response(503, f"model failed to load: {server.load_error}", code="load_failed")
        if not server.ready:
            return error_response(503, "models are still loading", code="loading", headers={"Retry-After": "1"})
        if dead := [f"{name}: {eng.dead}" for name, eng in server.engines.items() if eng.dead]:
            return error_response(503, f"engine dead ({'; '.join(dead)}): restart the server", code="engine_dead")
        return JSONResponse({"status": "ok", "models": server.pool.names, "resident": list(server.pool.resident)})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(server.engines), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        server.refresh_adapters()
        created = int(time.time())
        bases = [{"id": n, "object": "model", "created": created, "owned_by": "tollgate", "root": n, "parent": None}
                 for n in server.pool.names]  # fmt: skip
        adapters = [
            {"id": n, "object": "model", "created": created, "owned_by": "tollgate", "root": path, "parent": base}
            for n, (base, path) in server.adapters.items()
        ]
        return {"object": "list", "data": bases + adapters}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> Response:
        eng, lora = await server.target(req.model)
        runs = await _completion_runs(server, eng, req, request, lora)
        want_logprobs = req.logprobs is not None
        if req.stream:
            head = {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": req.model}
            tokenizer = eng.tokenizer
            return event_stream(runs, head, False, req.n, req.include_usage, tokenizer, want_logprobs)
        outs = await collect(runs, req.n)
        prompt_tokens = sum(r.prompt_tokens for r in runs)
        return JSONResponse(response_body(False, req.model, outs, prompt_tokens, eng.tokenizer, want_logprobs))

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request) -> Response:
        eng, lora = await server.target(req.model)
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        try:
            ids = eng.chat_prompt(messages)
        except Exception as exc:  # a template that rejects these messages (e.g. role order) is the client's error
            raise ApiError(400, f"messages do not fit the model's chat template: {exc}", "messages") from None
        eng.check_prompt(ids, "messages")
        top = (req.top_logprobs or 0) if req.logprobs else None
        params = _params(req, eng, len(ids), req.max_completion_tokens or req.max_tokens, top)
        stream = None if params is None else await _submit(server, eng, ids, params, request, lora)
        run = PromptRun(stream, len(ids), 0)
        if req.stream:
            head = {
                "id": new_id("chatcmpl"),
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": req.model,
            }
            return event_stream([run], head, True, req.n, req.include_usage, eng.tokenizer, req.logprobs)
        outs = await collect([run], req.n)
        return JSONResponse(response_body(True, req.model, outs, len(ids), eng.tokenizer, req.logprobs))

    @app.post("/v1/embeddings")
    async def embeddings(req: EmbeddingRequest) -> dict[str, Any]:
        eng, lora = await server.target(req.model)
        if lora is not None:
            raise ApiError(400, f"{req.model!r} is a LoRA adapter; embeddings come from base models", "model")
        return await _embeddings(eng, req)

    return app
