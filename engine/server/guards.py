"""What stands between the network and the engine: an optional API key and a cap on the request body.

As vLLM's `--api-key`: every `/v1` and `/admin` path needs `Authorization: Bearer KEY`, compared in constant time
(`hmac.compare_digest`); `/health` and `/metrics` stay open for probes and scrapers. Plain ASGI middleware, so a
refused request is answered before FastAPI reads or parses anything of it.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.server.protocol import error_response

log = logging.getLogger(__name__)
PROTECTED = ("/v1", "/admin")
DEFAULT_MAX_BODY_BYTES = 4 * 2**20  # ~100x a full-context chat request; JSON larger than this is an attack or a bug


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--api-key` (or TOLLGATE_API_KEY, so the key stays out of `ps`) and `--max-body-mb`, for server and router."""
    parser.add_argument(
        "--api-key",
        default=os.environ.get("TOLLGATE_API_KEY"),
        help="require `Authorization: Bearer KEY` on /v1 and /admin (default: $TOLLGATE_API_KEY; none: no key)",
    )
    parser.add_argument(
        "--max-body-mb", type=float, default=DEFAULT_MAX_BODY_BYTES / 2**20, help="larger request bodies get 413"
    )


def warn_if_exposed(host: str, api_key: str | None) -> None:
    """Listening beyond loopback with no key is allowed (a trusted network) but never silent."""
    if not api_key and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s with no --api-key: anyone who can reach this port can use it", host)


class Guards:
    """API key and body size, checked on every HTTP request before the app sees it."""

    def __init__(self, app: ASGIApp, api_key: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.expected and scope["path"].startswith(PROTECTED) and not self._authorized(headers):
            reply = error_response(
                401, "invalid or missing API key (Authorization: Bearer KEY)", code="invalid_api_key"
            )
            reply.headers["WWW-Authenticate"] = "Bearer"
            return await reply(scope, receive, send)
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_body_bytes:
            return await self._too_large(scope, receive, send)
        body = await self._read(receive)
        if body is None:
            return await self._too_large(scope, receive, send)
        return await self.app(scope, _replay(body, receive), send)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        return hmac.compare_digest(headers.get(b"authorization", b""), self.expected or b"")

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the cap (a chunked body declares no length)."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return None
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body over {self.max_body_bytes} bytes"
        await error_response(413, message, code="request_too_large")(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the buffered body once, then passes disconnects through."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
