"""One OpenAI endpoint in front of N engine replicas: least-outstanding balancing, backpressure, retries.

A request that fails on a replica before its first byte (connection refused, replica died, 5xx) is retried on
another healthy replica; a replica that could not be reached leaves the rotation at once and comes back when its
next health probe (every second) answers; a request that fails mid-stream ends with an OpenAI-shaped error event.
When more than `max_outstanding` requests are in flight, new ones get 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from engine.router.replicas import Replica, ReplicaSet
from engine.server.guards import DEFAULT_MAX_BODY_BYTES, Guards
from engine.server.protocol import error_response


async def _first_chunk(
    client: httpx.AsyncClient, replica: Replica, path: str, body: bytes, auth: str | None
) -> tuple[httpx.Response, bytes, AsyncIterator[bytes]]:
    """Send to a replica and read its first chunk, raising if the replica fails before producing it.

    The client's Authorization goes along: replicas started with TOLLGATE_API_KEY in their environment ask for it.
    """
    headers = {"content-type": "application/json", **({"authorization": auth} if auth else {})}
    req = client.build_request("POST", f"{replica.url}{path}", content=body, headers=headers)
    resp = await client.send(req, stream=True)
    if resp.status_code >= 500:
        await resp.aclose()
        raise httpx.HTTPStatusError(f"replica answered {resp.status_code}", request=req, response=resp)
    chunks = resp.aiter_raw()
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        first = b""
    except BaseException:
        await resp.aclose()
        raise
    return resp, first, chunks


def backoff_s(attempt: int) -> float:
    """Before retry `attempt` (1, 2, ...): exponential from 0.1 s, capped at 2 s, with +-50% jitter."""
    return min(2.0, 0.1 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)


def build_router(
    replicas: ReplicaSet,
    max_outstanding: int = 64,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    replica_timeout_s: float = 300.0,
    attempts: int = 3,
) -> FastAPI:
    """The router app; `api_key` guards /v1 and /admin (the replicas behind it listen on loopback only).

    A replica gets `replica_timeout_s` to send each piece of its answer (the first one included); a request that
    fails before its first byte is tried on up to `attempts` different replicas, with `backoff_s` between."""
    timeout = httpx.Timeout(replica_timeout_s, connect=5.0)
    client = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=512))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        replicas.start()
        watcher = asyncio.create_task(replicas.watch())
        yield
        watcher.cancel()
        await client.aclose()
        replicas.stop()

    app = FastAPI(title="Tollgate router", lifespan=lifespan)
    app.add_middleware(Guards, api_key=api_key, max_body_bytes=max_body_bytes)

    @app.get("/health")
    async def health() -> Response:
        healthy = sum(r.healthy for r in replicas.replicas)
        if not healthy:
            return error_response(503, "no healthy replica", code="no_replica", headers={"Retry-After": "1"})
        return JSONResponse({"status": "ok", "healthy_replicas": healthy})

    @app.get("/admin/replicas")
    async def admin() -> list[dict[str, object]]:
        return [r.info() for r in replicas.replicas]

    @app.get("/v1/models")
    async def models() -> Response:
        replica = replicas.pick(set())
        if replica is None:
            return error_response(503, "no healthy replica", code="no_replica", headers={"Retry-After": "1"})
        return JSONResponse((await client.get(f"{replica.url}/v1/models")).json())

    @app.post("/v1/{endpoint:path}")
    async def proxy(endpoint: str, request: Request) -> Response:
        if sum(r.outstanding for r in replicas.replicas) >= max_outstanding:
            return error_response(
                429, "router queue full; retry later", code="queue_full", headers={"Retry-After": "1"}
            )
        body, tried = await request.body(), set()
        for attempt in range(attempts):
            if (replica := replicas.pick(tried)) is None:
                break
            if attempt:
                await asyncio.sleep(backoff_s(attempt))
            tried.add(replica.id)
            replica.outstanding += 1
            try:
                resp, first, chunks = await _first_chunk(
                    client, replica, f"/v1/{endpoint}", body, request.headers.get("authorization")
                )
            except (httpx.HTTPError, OSError) as exc:
                replica.outstanding -= 1
                if isinstance(exc, httpx.TransportError | OSError):  # unreachable, not a 5xx answer:
                    replica.healthy = False  # out of rotation until a health probe answers again
                continue  # nothing reached the client yet: try another replica
            return StreamingResponse(
                _relay(replica, resp, first, chunks),
                status_code=resp.status_code,
                media_type=resp.headers.get("content-type"),
                headers={k: v for k, v in resp.headers.items() if k.lower() == "retry-after"},
            )
        return error_response(
            503, "no healthy replica could serve the request", code="no_replica", headers={"Retry-After": "1"}
        )

    return app


async def _relay(
    replica: Replica, resp: httpx.Response, first: bytes, chunks: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    try:
        yield first
        async for chunk in chunks:
            yield chunk
    except httpx.HTTPError:
        error = {
            "error": {
                "message": f"replica {replica.id} failed mid-response",
                "type": "server_error",
                "param": None,
                "code": "replica_failed",
            }
        }
        yield f"data: {json.dumps(error)}\n\n".encode()
    finally:
        replica.outstanding -= 1
        await resp.aclose()
