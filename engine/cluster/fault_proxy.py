"""A TCP proxy that puts a bad network between the router and one replica, in user space.

This kernel has no `sch_netem`, so `tc netem` cannot add delay or loss; the proxy does per request what netem
would do per packet. Each chunk the client sends (in HTTP/1.1, a request) rolls once: reset the connection
(RST), fall silent (forward nothing more, as a link that drops everything looks to TCP), or forward it after a
delay drawn from `latency_s` (the spread is the jitter). Replies flow back untouched. Only requests that start
with `affects` roll: health probes pass, so the router keeps routing this way and what gets tested is its
timeouts and retries, not merely that it stops using a replica whose probes fail.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class NetworkFaults:
    """What the link does to each request: probabilities of a reset and of silence; otherwise a delay."""

    reset_p: float = 0.25
    silence_p: float = 0.25
    latency_s: tuple[float, float] = (1.0, 5.0)
    affects: bytes = b"POST /v1/"
    seed: int = 1  # Random(1) rolls every kind of fault within its first 10 requests
    injected: Counter[str] = field(default_factory=Counter)


class FaultProxy:
    """Listens on a free loopback port and forwards to `target_host:target_port` through `faults`, on its own
    thread."""

    def __init__(self, target_port: int, faults: NetworkFaults, target_host: str = "127.0.0.1") -> None:
        self.target_host, self.target_port, self.faults = target_host, target_port, faults
        self.rng = random.Random(faults.seed)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> str:
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(timeout=10)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        """Close every connection (each handler then ends on its own) and stop listening."""
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.wait(pending, timeout=5) if pending else None

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_w.close()
            return
        self.writers |= {client_w, upstream_w}
        back = asyncio.create_task(self._pipe(upstream_r, client_w))
        try:
            while chunk := await client_r.read(65536):
                roll = self.rng.random() if chunk.startswith(self.faults.affects) else 1.0
                if roll < self.faults.reset_p:
                    self.faults.injected["reset"] += 1
                    sock = client_w.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
                    break
                if roll < self.faults.reset_p + self.faults.silence_p:
                    self.faults.injected["silence"] += 1
                    await client_r.read()  # swallow everything until the client gives up
                    break
                if roll < 1.0:
                    self.faults.injected["delay"] += 1
                    await asyncio.sleep(self.rng.uniform(*self.faults.latency_s))
                upstream_w.write(chunk)
                await upstream_w.drain()
        except OSError:
            pass
        finally:
            for w in (client_w, upstream_w):
                w.close()
                self.writers.discard(w)
            await asyncio.gather(back, return_exceptions=True)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Replies back to the client; when the replica closes (or dies), so does the client's side, as TCP would
        carry the FIN: else the client's next request on that keep-alive connection waits for its timeout."""
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except OSError:
            pass
        writer.close()
