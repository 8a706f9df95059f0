"""Request state as the scheduler and runner see it: tokens, KV blocks, progress, outputs and stop rules."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import torch

from engine.detokenizer import IncrementalDetokenizer
from engine.errors import ParameterError
from engine.outputs import CompletionOutput, RequestOutput, StreamDelta
from engine.sampling import SampleRequest, SamplingParams, TokenLogprob


class SequenceStatus(enum.Enum):
    """Where a sequence is in its life: waiting, running or finished."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One completion being generated (a request with n > 1 has n of them)."""

    request_id: str
    index: int
    prompt_token_ids: list[int]
    params: SamplingParams
    detokenizer: IncrementalDetokenizer
    stop_token_ids: frozenset[int]
    generator: torch.Generator | None = None
    lora: str | None = None  # the LoRA adapter serving it (None: the base model)
    token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    block_table: list[int] = field(default_factory=list)  # entries below window_freed_blocks may be released
    window_freed_blocks: int = 0  # blocks past the sinks and before this index left the attention window
    num_hashed_blocks: int = 0  # leading full blocks published to the prefix cache, ending with last_block_hash
    last_block_hash: int | None = None
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None  # "stop", "length" or "abort"
    stop_reason: str | int | None = None  # the stop string or token id that ended it
    text: str = ""
    streamed_chars: int = 0  # how much of `text` has been handed out as stream deltas
    logprobs: list[TokenLogprob] = field(default_factory=list)
    arrival_time: float = field(default_factory=time.perf_counter)
    first_token_time: float | None = None

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = list(self.prompt_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        """Length of the original prompt."""
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens."""
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        """Generated tokens only."""
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        """How many tokens were generated."""
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        """Whether it has a finish reason."""
        return self.status is SequenceStatus.FINISHED

    def reset_for_recompute(self) -> None:
        """After preemption its KV is gone: every token (prompt and output so far) is computed again."""
        self.num_computed_tokens = self.window_freed_blocks = self.num_hashed_blocks = 0
        self.block_table, self.last_block_hash = [], None
        self.status = SequenceStatus.WAITING

    def sample_request(self) -> SampleRequest:
        """What the sampler needs of this sequence."""
        return SampleRequest(self.params, self.prompt_token_ids, self.output_token_ids, self.generator)

    def append(self, token: int, logprob: TokenLogprob | None, max_model_len: int) -> str | None:
        """Add a sampled token and its text; returns why the sequence ends ("stop", "length") or None."""
        self.token_ids.append(token)
        if self.first_token_time is None:
            self.first_token_time = time.perf_counter()
        if logprob is not None:
            self.logprobs.append(logprob)
        if token in self.stop_token_ids:
            self.stop_reason = token
            return "stop"
        shown = len(self.text)
        self.text += self.detokenizer.add(token)
        if self._cut_at_stop_string(shown):
            return "stop"
        max_tokens = self.params.max_tokens or max_model_len
        if self.num_output_tokens >= max_tokens or self.num_tokens >= max_model_len:
            self.text += self.detokenizer.flush()
            return "length"
        return None

    def _cut_at_stop_string(self, shown: int) -> bool:
        """End the text before the first stop string that the new token completed (searching only new text)."""
        if not self.params.stop:
            return False
        window = max(0, shown - max(len(s) for s in self.params.stop) + 1)
        hits = [(i, s) for s in self.params.stop if (i := self.text.find(s, window)) >= 0]
        if not hits:
            return False
        index, self.stop_reason = min(hits)
        self.text = self.text[:index]
        return True

    def visible_text(self) -> str:
        """Text safe to show now: while running, the tail that could still start a stop string is held back."""
        if self.is_finished or not self.params.stop:
            return self.text
        hold = max(len(s) for s in self.params.stop) - 1
        return self.text[: max(0, len(self.text) - hold)]

    def delta(self, token: int, logprob: TokenLogprob | None) -> StreamDelta:
        """What a stream learns from this step: the newly visible text, the token and how it ended (if it did)."""
        visible = self.visible_text()
        text, self.streamed_chars = visible[self.streamed_chars :], len(visible)
        lps = [logprob] if logprob else []
        return StreamDelta(self.request_id, self.index, text, [token], lps, self.finish_reason, self.stop_reason)


def check_prompt_ids(ids: list[int], vocab: int, max_model_len: int, param: str = "prompt") -> None:
    """The prompt rules every entry point shares (the server's chat names its `messages` the culprit)."""
    if not ids:
        raise ParameterError(param, f"{param} must not be empty")
    if any(not 0 <= t < vocab for t in ids):
        raise ParameterError(param, f"{param} token ids must be in [0, {vocab})")
    if len(ids) >= max_model_len:
        message = f"prompt is {len(ids)} tokens, the context length is {max_model_len} (prompt must be shorter)"
        raise ParameterError(param, message, "context_length_exceeded")


def check_prompt(ids: list[int], params: SamplingParams, vocab: int, max_model_len: int) -> None:
    """A request that cannot run raises ParameterError naming the parameter at fault."""
    check_prompt_ids(ids, vocab, max_model_len)
    for name, tokens in (("logit_bias", params.logit_bias), ("stop_token_ids", params.stop_token_ids)):
        if any(not 0 <= t < vocab for t in tokens):
            raise ParameterError(name, f"{name} token ids must be in [0, {vocab})")


@dataclass
class Request:
    """One request: its prompt text (None when given as token ids) and its n sequences."""

    request_id: str
    prompt: str | None
    seqs: list[Sequence]

    @classmethod
    def start(
        cls, request_id: str, prompt: str | None, ids: list[int], params: SamplingParams, tokenizer: object,
        stop_token_ids: frozenset[int], lora: str | None = None,
    ) -> Request:  # fmt: skip
        """A request's n sequences, each with its own detokenizer and, with a seed, its own generator."""
        seqs = []
        for i in range(params.n):
            generator = None
            if params.seed is not None:
                generator = torch.Generator(device="cpu")
                generator.manual_seed(params.seed + i)
            detokenizer = IncrementalDetokenizer(tokenizer, ids)
            seqs.append(Sequence(request_id, i, ids, params, detokenizer, stop_token_ids, generator, lora))
        return cls(request_id, prompt, seqs)

    def output(self) -> RequestOutput:
        """The request's state so far: text, tokens, finish reasons and (when asked) logprobs."""
        return RequestOutput(
            request_id=self.request_id,
            prompt=self.prompt,
            prompt_token_ids=self.seqs[0].prompt_token_ids,
            outputs=[
                CompletionOutput(
                    index=s.index,
                    text=s.text,
                    token_ids=s.output_token_ids,
                    finish_reason=s.finish_reason,
                    stop_reason=s.stop_reason,
                    logprobs=s.logprobs if s.params.logprobs is not None else None,
                )
                for s in self.seqs
            ],
        )
