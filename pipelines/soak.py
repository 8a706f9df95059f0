"""A soak of the served stack over HTTP that survives its own crash.

Clients drive the router (and its replicas) with a realistic mix: streamed and not, chat and completions, stop
strings, short and long prompts, clients that walk away mid-stream, invalid requests, and a fixed greedy subset
checked against the text it gave at the start. Every interval one JSON line goes to the journal (flushed and
fsynced): that interval's counts, latencies and each process's RSS. A rerun continues the journal of the same
commit and parameters, so the hours of crashed or killed segments still count and no sample is lost. A watchdog
counts a stall (work in flight, no token for STALL_S) as a failure and has the servers dump their stacks.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import openai

from engine.progress import progress
from engine.stats import proc_status_mb
from pipelines.live_server import greedy_texts, kv_usage

STALL_S = 30.0
CONCURRENCY = 4
SOAK_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]"
GREEDY = [f"Fact {i}: the capital of" for i in range(3)]


class Journal:
    """JSON lines: a header naming what was soaked, then one record per interval."""

    def __init__(self, path: Path, key: dict[str, Any]) -> None:
        self.path, self.key = path, key

    def records(self) -> list[dict[str, Any]]:
        """The intervals so far for this key; a journal of another commit or parameters is set aside, not mixed in."""
        if not self.path.is_file():
            return []
        lines = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip().endswith("}")]
        if not lines or lines[0].get("key") != self.key:
            self.path.rename(self.path.with_suffix(f".{int(time.time())}.old"))
            return []
        return lines[1:]

    def append(self, record: dict[str, Any]) -> None:
        """One line, on disk before this returns (a SIGKILL right after loses nothing written)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.is_file()
        with self.path.open("a") as fh:
            if fresh:
                fh.write(json.dumps({"key": self.key}) + "\n")
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


@dataclass
class Interval:
    """What the clients saw since the last journal line."""

    counts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    tokens: int = 0

    def record(self, seconds: float, rss: dict[str, float]) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        p95 = ordered[max(0, -(-len(ordered) * 95 // 100) - 1)] if ordered else None
        return {"seconds": seconds, "counts": dict(self.counts), "failures": dict(self.failures),
                "tokens": self.tokens, "p95_s": p95, "rss_mb": rss}  # fmt: skip


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (None once it is gone)."""
    try:
        return proc_status_mb("VmRSS", pid)
    except OSError:
        return None


class Soak:
    """The clients, the sampler and the watchdog of one segment."""

    def __init__(self, url: str, model: str, router_pid: int, max_prompt: int, max_new: int) -> None:
        self.url, self.model, self.router_pid = url, model, router_pid
        self.max_prompt, self.max_new = max_prompt, max_new
        self.rng = random.Random(0)
        self.now = Interval()
        self.expected: list[str] = []
        self.in_flight = 0
        self.last_progress = time.monotonic()

    def replicas(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/admin/replicas", timeout=10).json()

    def rss(self) -> dict[str, float]:
        pids = {"router": self.router_pid, **{f"replica{r['id']}": r["pid"] for r in self.replicas()}}
        return {name: mb for name, pid in pids.items() if (mb := rss_mb(pid)) is not None}

    async def one(self, client: openai.AsyncOpenAI, kind: str) -> None:
        """One request of `kind`; its outcome goes to the current interval."""
        words = " ".join(
            self.rng.choice(["alpha", "river", "stone", "cloud", "seven"])
            for _ in range(self.rng.randint(1, self.max_prompt))
        )
        common = {"model": self.model, "max_tokens": self.rng.randint(1, self.max_new), "temperature": 0.7, "seed": 1}
        self.in_flight += 1
        start = time.monotonic()
        try:
            await self.REQUESTS[kind](self, client, kind, words, common)
            self.now.counts[kind] += 1
            self.now.latencies.append(time.monotonic() - start)
        except openai.APIStatusError as exc:
            self.now.failures[f"http_{exc.status_code}"] += 1
        except (openai.APIError, httpx.HTTPError) as exc:
            self.now.failures[type(exc).__name__] += 1
        finally:
            self.in_flight -= 1
            self.last_progress = time.monotonic()

    async def _greedy(self, client: openai.AsyncOpenAI, kind: str, words: str, common: dict[str, Any]) -> None:
        i = self.rng.randrange(len(GREEDY))
        reply = await client.completions.create(model=self.model, prompt=GREEDY[i], max_tokens=8, temperature=0)
        self.now.counts["greedy_mismatch"] += reply.choices[0].text != self.expected[i]

    async def _invalid(self, client: openai.AsyncOpenAI, kind: str, words: str, common: dict[str, Any]) -> None:
        try:
            await client.completions.create(**{**common, "prompt": words, "temperature": -1})
            self.now.failures["invalid_accepted"] += 1
        except openai.BadRequestError:
            pass

    async def _stream(self, client: openai.AsyncOpenAI, kind: str, words: str, common: dict[str, Any]) -> None:
        """Streamed completion or chat; `walk_away` closes the stream early, as a client that leaves does."""
        if kind == "stream_chat":
            stream = await client.chat.completions.create(**common, messages=[{"role": "user", "content": words}],
                                                          stream=True)  # fmt: skip
        else:
            stream = await client.completions.create(**common, prompt=words, stream=True)
        async for _ in stream:
            self.now.tokens += 1
            self.last_progress = time.monotonic()
            if kind == "walk_away" and self.rng.random() < 0.3:
                await stream.close()
                return

    async def _plain(self, client: openai.AsyncOpenAI, kind: str, words: str, common: dict[str, Any]) -> None:
        if kind == "chat":
            reply = await client.chat.completions.create(**common, messages=[{"role": "user", "content": words}])
        else:
            reply = await client.completions.create(
                **common, prompt=words, **({"stop": ["e"]} if kind == "stop" else {})
            )
        self.now.tokens += reply.usage.completion_tokens

    REQUESTS: ClassVar[dict[str, Any]] = {
        "greedy": _greedy, "invalid": _invalid, "stream": _stream, "stream_chat": _stream, "walk_away": _stream,
        "chat": _plain, "complete": _plain, "stop": _plain,
    }  # fmt: skip

    async def clients(self, deadline: float) -> None:
        async with openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key="-", max_retries=0, timeout=120) as client:
            self.expected = await asyncio.to_thread(greedy_texts, self.url, self.model, GREEDY)

            async def worker() -> None:
                while time.monotonic() < deadline:
                    await self.one(client, self.rng.choice(sorted(self.REQUESTS)))

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    async def sampler(self, journal: Journal, interval_s: float, start: float, deadline: float, bar: Any) -> None:
        last = start
        while (now := time.monotonic()) < deadline + interval_s:
            await asyncio.sleep(max(0.0, min(interval_s - (now - last), deadline - now + 0.01)))
            now = time.monotonic()
            if self.in_flight and now - self.last_progress > STALL_S:
                self.stalled()
            journal.append(self.now.record(now - last, await asyncio.to_thread(self.rss)))
            bar.update(min(now - last, bar.total - bar.n))
            self.now, last = Interval(), now
            if now >= deadline:
                return

    def stalled(self) -> None:
        """A stall is a failure; each replica dumps its threads' stacks to its stderr (faulthandler, SIGUSR1)."""
        self.now.failures["stall"] += 1
        self.last_progress = time.monotonic()
        for r in self.replicas():
            os.kill(r["pid"], signal.SIGUSR1)

    async def run(self, journal: Journal, seconds: float, interval_s: float) -> None:
        start = time.monotonic()
        deadline = start + seconds
        with progress(total=seconds, desc="soak", unit="s", bar_format=SOAK_BAR) as bar:
            await asyncio.gather(self.clients(deadline), self.sampler(journal, interval_s, start, deadline, bar))


def kv_in_use(url: str) -> float:
    """The largest KV usage over the replicas once idle (0 when every block came back)."""
    return max((kv_usage(r["url"]) for r in httpx.get(f"{url}/admin/replicas", timeout=10).json()), default=0.0)
