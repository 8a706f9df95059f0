"""From engine delta streams to OpenAI replies: collected choices, or server-sent events (chunks with logprobs).

A reply covers one or more prompts (a prompt list to /v1/completions), each with `n` choices; choice indexes
run prompt by prompt, as OpenAI's do. `echo` puts the prompt (and its tokens' logprobs) before the completion.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from engine.outputs import CompletionOutput
from engine.sampling import TokenLogprob
from engine.server.responses import chat_logprobs, completion_logprobs, finish_reason, sse, usage

log = logging.getLogger(__name__)


@dataclass
class PromptRun:
    """One prompt's share of a reply: its stream (None when max_tokens is 0) and what echo puts first."""

    stream: AsyncIterator[Any] | None
    prompt_tokens: int
    base_index: int
    echo_text: str = ""
    echo_logprobs: list[TokenLogprob] = field(default_factory=list)


async def until_disconnect(request: Request, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Stop reading (which aborts the request and frees its KV blocks) as soon as the client has gone.

    uvicorn keeps accepting writes for a vanished client, so the stream itself would never notice.
    """
    try:
        async for delta in stream:
            if await request.is_disconnected():
                log.info("client disconnected: aborting its request")
                return
            yield delta
    finally:
        await stream.aclose()


async def collect(runs: list[PromptRun], n: int) -> list[CompletionOutput]:
    """Every choice of every prompt, in index order, with the echoed prompt in front."""
    outs = []
    for run in runs:
        part = [
            CompletionOutput(run.base_index + i, run.echo_text, [], "length", logprobs=list(run.echo_logprobs))
            for i in range(n)
        ]
        if run.stream is not None:
            async for d in run.stream:
                o = part[d.index]
                o.text += d.text
                o.token_ids.extend(d.token_ids)
                o.logprobs.extend(d.logprobs)
                o.finish_reason, o.stop_reason = d.finish_reason, d.stop_reason
        outs += part
    return outs


def _logprobs(chat: bool, tokenizer: Any, entries: list[TokenLogprob] | None) -> dict[str, Any] | None:
    if entries is None:
        return None
    return chat_logprobs(tokenizer, entries) if chat else completion_logprobs(tokenizer, entries)


def event_stream(
    runs: list[PromptRun], head: dict[str, Any], chat: bool, n: int, include_usage: bool, tokenizer: Any,
    want_logprobs: bool,
) -> StreamingResponse:  # fmt: skip
    """SSE chunks: the assistant role (chat), the echo, each delta with its logprobs, usage, [DONE]."""

    def chunk(index: int, text: str, reason: str | None, lps: list[TokenLogprob]) -> str:
        part = {"delta": {"content": text}} if chat else {"text": text}
        logprobs = _logprobs(chat, tokenizer, lps if want_logprobs else None)
        choice = {"index": index, **part, "logprobs": logprobs, "finish_reason": finish_reason(reason)}
        return sse({**head, "choices": [choice]})

    async def events() -> AsyncIterator[str]:
        try:
            async for event in body():
                yield event
        except Exception as exc:  # the engine failed mid-stream: say so in-band, never end silently
            log.error("stream ended by an engine failure: %s", exc)
            error = {"message": str(exc), "type": "server_error", "param": None, "code": "engine_failure"}
            yield sse({"error": error})

    async def body() -> AsyncIterator[str]:
        generated = 0
        for run in runs:
            for i in range(n):
                if chat:
                    role = {"index": run.base_index + i, "delta": {"role": "assistant", "content": ""}}
                    yield sse({**head, "choices": [{**role, "logprobs": None, "finish_reason": None}]})
                if run.echo_text:
                    yield chunk(run.base_index + i, run.echo_text, None, run.echo_logprobs)
            if run.stream is None:
                for i in range(n):
                    yield chunk(run.base_index + i, "", "length", [])
                continue
            async for d in run.stream:
                generated += len(d.token_ids)
                if d.text or d.finish_reason is not None:
                    yield chunk(run.base_index + d.index, d.text, d.finish_reason, d.logprobs)
        if include_usage:
            yield sse({**head, "choices": [], "usage": usage(sum(r.prompt_tokens for r in runs), generated)})
        yield sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream")
