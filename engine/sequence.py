"""Request state as the scheduler and runner see it: tokens, KV blocks, progress and outputs."""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field

import torch

from engine.detokenizer import IncrementalDetokenizer
from engine.sampling import SamplingParams, TokenLogprob

_ids = itertools.count()


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
    seq_id: int = field(default_factory=lambda: next(_ids))
    token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
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
        self.num_computed_tokens = 0
        self.block_table = []
        self.status = SequenceStatus.WAITING
