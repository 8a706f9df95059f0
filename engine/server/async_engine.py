"""The engine behind an event loop: one worker thread owns the engine, each request reads its own queue.

Every engine call (add, abort, step) runs on a single-thread executor, so the engine needs no locks and the
event loop never blocks on a forward pass. A background task steps the engine while it has work and routes
each step's deltas to the queues of their requests.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from engine.engine import LLMEngine
from engine.errors import EngineDeadError, ParameterError
from engine.outputs import StreamDelta
from engine.sampling import SamplingParams, TokenLogprob
from engine.sequence import check_prompt_ids

KEEPALIVE_S = 30.0  # an idle engine's ping to its peers (tensor parallel), well inside their collective timeout
log = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """More requests are waiting than the server accepts; the client should retry later."""


class AsyncEngine:
    """Serve one model's `LLMEngine` to many concurrent asyncio consumers."""

    def __init__(self, engine: LLMEngine, name: str, max_waiting: int = 64) -> None:
        self.engine = engine
        self.name = name
        self.max_waiting = max_waiting
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"engine-{name}")
        self._queues: dict[str, asyncio.Queue[StreamDelta | BaseException]] = {}
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._ids = itertools.count()
        self._inflight = 0  # sequences submitted and not yet finished, counted on the event loop (no race)
        self.dead: str | None = None  # why the engine cannot step any more (/health answers 503 with it)

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._run(), name=f"engine-loop-{self.name}")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            self._loop_task = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def idle(self) -> bool:
        """No request in flight: safe to unload."""
        return not self._queues

    @property
    def num_waiting(self) -> int:
        return len(self.engine.scheduler.waiting)

    @property
    def num_running(self) -> int:
        return len(self.engine.scheduler.running)

    async def _idle(self) -> None:
        """Wait for a request; every KEEPALIVE_S without one, let the runner ping its peers."""
        self._wakeup.clear()
        while not self._wakeup.is_set():
            try:
                await asyncio.wait_for(self._wakeup.wait(), KEEPALIVE_S)
            except TimeoutError:
                await self._call(self.engine.runner.keepalive)

    async def _fail_all(self, exc: BaseException) -> None:
        for request_id, queue in list(self._queues.items()):
            queue.put_nowait(exc)
            await self._call(self.engine.abort_request, request_id)

    async def _run(self) -> None:
        while True:
            try:
                if not self._queues:
                    await self._idle()
                deltas = await self._call(self.engine.step)
            except EngineDeadError as exc:  # nothing more can be served: fail everything, say so on /health
                log.critical("engine %s is dead: %s", self.name, exc)
                self.dead = str(exc)
                await self._fail_all(exc)
                return
            except Exception as exc:  # never let one bad step kill the server: fail the requests in flight
                log.exception("engine step failed")
                await self._fail_all(exc)
                continue
            for delta in deltas:
                queue = self._queues.get(delta.request_id)
                if queue is not None:
                    queue.put_nowait(delta)
            if not deltas:  # a prefill chunk, or nothing schedulable yet: yield the loop briefly
                await asyncio.sleep(0.001)

    async def submit(
        self, prompt: str | list[int], params: SamplingParams, lora: str | None = None
    ) -> AsyncIterator[StreamDelta]:
        """Queue a request now (raising QueueFullError or ValueError at once) and return its delta stream.

        Leaving the stream early (client gone, task cancelled) aborts the request and frees its KV blocks.
        """
        if self.dead:
            raise EngineDeadError(self.dead)
        capacity = self.engine.config.max_num_seqs + self.max_waiting
        if params.n > capacity:  # it would wait forever: not "retry later" but a bad request
            message = f"n={params.n} can never be served: this server holds at most {capacity} sequences"
            raise ParameterError("n", message)
        if self._inflight + params.n > capacity:
            waiting = max(0, self._inflight - self.engine.config.max_num_seqs)
            raise QueueFullError(f"{waiting} sequences are waiting (limit {self.max_waiting})")
        request_id = f"{self.name}-{next(self._ids)}"
        queue: asyncio.Queue[StreamDelta | BaseException] = asyncio.Queue()
        self._queues[request_id] = queue
        self._inflight += params.n
        try:
            await self._call(self.engine.add_request, prompt, params, request_id, lora)
        except BaseException:
            del self._queues[request_id]
            self._inflight -= params.n
            raise
        self._wakeup.set()
        return self._stream(request_id, queue, params.n)

    async def _stream(
        self, request_id: str, queue: asyncio.Queue[StreamDelta | BaseException], n: int
    ) -> AsyncIterator[StreamDelta]:
        remaining = n
        try:
            while remaining:
                item = await queue.get()
                if isinstance(item, EngineDeadError):
                    raise item
                if isinstance(item, BaseException):
                    raise RuntimeError(f"engine failure: {item}") from item
                if item.finish_reason is not None:
                    remaining -= 1
                yield item
        finally:
            # No await here: a cancelled task (client gone) would be cancelled again at any await, and the
            # abort must still happen. The engine thread runs it between steps.
            del self._queues[request_id]
            self._inflight -= n
            self._executor.submit(self._finish, request_id)

    def _finish(self, request_id: str) -> None:
        if request_id in self.engine.requests:
            self.engine.abort_request(request_id)
            self.engine.pop_output(request_id)

    # -- what the server may know of the engine: limits, text <-> tokens, load (never its internals) --

    @property
    def vocab_size(self) -> int:
        """Token ids a request may name are in [0, vocab_size)."""
        return self.engine.model.config.vocab_size

    @property
    def max_model_len(self) -> int:
        """Prompt plus completion tokens one sequence may hold."""
        return self.engine.max_model_len

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (for decoding tokens in replies)."""
        return self.engine.tokenizer

    @property
    def kv_usage(self) -> float:
        """Share of the KV pool in use."""
        return self.engine.block_manager.usage

    def check_prompt(self, ids: list[int], param: str = "prompt") -> None:
        """The engine's prompt rules (empty, ids outside the vocabulary, too long); a ParameterError names `param`."""
        check_prompt_ids(ids, self.vocab_size, self.max_model_len, param)

    def encode(self, prompt: str) -> list[int]:
        """Prompt text to token ids, as the engine encodes it."""
        return self.engine.encode(prompt)

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """A conversation rendered by the model's chat template."""
        return self.engine.chat_prompt(messages)

    async def embed(self, token_ids: list[int]) -> list[float]:
        """Mean-pooled final hidden state of the tokens (on the engine thread, between steps)."""
        return await self._call(lambda: self.engine.model.sentence_embedding(token_ids).tolist())

    async def prompt_logprobs(self, token_ids: list[int], top: int, lora: str | None = None) -> list[TokenLogprob]:
        """Each prompt token's logprob given the tokens before it, with `top` alternatives (none for the first).

        What `echo` with `logprobs` returns: lm-evaluation-harness scores loglikelihoods from it.
        """

        def score() -> list[TokenLogprob]:
            loras = self.engine.loras
            if loras is not None:  # between steps, on the engine thread: the next step sets its own segments
                loras.use(lora)
            with torch.inference_mode():
                logprobs = self.engine.model.score(token_ids)[:-1].float().log_softmax(-1)
            out = [TokenLogprob(token_ids[0], None, [])]
            for row, token in zip(logprobs, token_ids[1:], strict=True):
                best = torch.topk(row, top)
                pairs = list(zip(best.indices.tolist(), best.values.tolist(), strict=True))
                out.append(TokenLogprob(token, float(row[token]), pairs))
            return out

        return await self._call(score)
