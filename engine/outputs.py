"""What the engine returns: finished results and streamed deltas (shaped like vLLM's)."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.sampling import TokenLogprob


@dataclass
class CompletionOutput:
    """One of a request's n completions."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None  # "stop", "length", "abort"; None while running
    stop_reason: str | int | None = None
    logprobs: list[TokenLogprob] | None = None


@dataclass
class RequestOutput:
    """A request's prompt and its n completions."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    num_cached_tokens: int = 0

    @property
    def finished(self) -> bool:
        """True once every completion has a finish reason."""
        return all(o.finish_reason is not None for o in self.outputs)


@dataclass
class StreamDelta:
    """New text and tokens of one completion since the last step."""

    request_id: str
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: str | int | None = None
