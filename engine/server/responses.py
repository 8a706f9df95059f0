"""OpenAI response bodies (completion, chat, stream chunks, usage, logprobs) built from engine outputs."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import numpy as np

from engine.outputs import CompletionOutput
from engine.sampling import TokenLogprob

FINISH_REASONS = {"stop": "stop", "length": "length", "abort": "stop"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def finish_reason(reason: str | None) -> str | None:
    return None if reason is None else FINISH_REASONS.get(reason, reason)


def completion_logprobs(tokenizer: Any, logprobs: list[TokenLogprob]) -> dict[str, Any]:
    """The legacy completions format: tokens, token_logprobs, top_logprobs, text_offset.

    An echoed prompt's first token has no logprob: OpenAI reports null for it, and so do we.
    """
    tokens = [tokenizer.decode([lp.token_id]) for lp in logprobs]
    offsets, pos = [], 0
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    return {
        "tokens": tokens,
        "token_logprobs": [lp.logprob for lp in logprobs],
        "top_logprobs": [
            None if lp.logprob is None else {tokenizer.decode([t]): v for t, v in lp.top} for lp in logprobs
        ],
        "text_offset": offsets,
    }


def chat_logprobs(tokenizer: Any, logprobs: list[TokenLogprob]) -> dict[str, Any]:
    """The chat format: one entry per token with its bytes and top alternatives."""

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        text = tokenizer.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {
        "content": [
            {**entry(lp.token_id, lp.logprob), "top_logprobs": [entry(t, v) for t, v in lp.top]} for lp in logprobs
        ]
    }


def response_body(
    chat: bool, model: str, outs: list[CompletionOutput], prompt_tokens: int, tokenizer: Any, want_logprobs: bool
) -> dict[str, Any]:
    """A non-streamed reply: `chat.completion` (message, chat logprobs) or `text_completion` (text, legacy)."""
    choices = []
    for o in outs:
        lps = o.logprobs or []
        if chat:
            part = {"message": {"role": "assistant", "content": o.text}}
            logprobs = chat_logprobs(tokenizer, lps) if want_logprobs else None
        else:
            part = {"text": o.text}
            logprobs = completion_logprobs(tokenizer, lps) if want_logprobs else None
        choices.append(
            {"index": o.index, **part, "logprobs": logprobs, "finish_reason": finish_reason(o.finish_reason)}
        )
    return {
        "id": new_id("chatcmpl" if chat else "cmpl"),
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(prompt_tokens, sum(len(o.token_ids) for o in outs)),
    }


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def encode_embedding(vector: list[float], encoding: str) -> list[float] | str:
    """A list of floats, or (as the openai client asks by default) base64 of little-endian float32."""
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector
