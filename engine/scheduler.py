"""Continuous batching: every step admits and retires sequences under a token budget (vLLM v1 style).

There is no separate prefill phase: a running sequence asks for its remaining prompt tokens (a chunk when
the budget is short) or one decode token. Running sequences go first, oldest first; waiting ones are
admitted with what budget is left. When KV blocks run out, the newest running sequence is preempted: its
blocks are freed and it is recomputed later from its tokens, so nothing is lost. After the forward,
`postprocess` does the step's bookkeeping: computed tokens, full blocks for the prefix cache, the sampled
tokens with their stop and length rules, and retirement.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from engine.attention import WindowPolicy
from engine.block_manager import BlockManager
from engine.sampling import TokenLogprob
from engine.sequence import Sequence, SequenceStatus


@dataclass
class SchedulerOutput:
    """The sequences that take part in one step and how many new tokens each computes."""

    scheduled: list[tuple[Sequence, int]] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    sampling: list[Sequence] = field(default_factory=list)  # caught up after this step: they sample a token

    @property
    def num_tokens(self) -> int:
        """Tokens this step computes (what the budget limits)."""
        return sum(n for _, n in self.scheduled)


class Scheduler:
    """Decides, every step, which sequences run and how many tokens each computes."""

    def __init__(
        self,
        block_manager: BlockManager,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int = 1 << 30,
        max_loras: int = 0,
    ) -> None:
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be >= 1")
        self.bm = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.max_loras = max_loras  # distinct adapters running at once (the engine's LoRA slots)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    @classmethod
    def with_blocks(
        cls, num_blocks: int, block_size: int, prefix_caching: bool, max_num_seqs: int, max_num_batched_tokens: int,
        max_model_len: int, max_loras: int = 0, window: WindowPolicy | None = None,
    ) -> Scheduler:  # fmt: skip
        """A scheduler over a new pool of `num_blocks` KV blocks (released as they leave `window`, if given)."""
        blocks = BlockManager(num_blocks, block_size, prefix_caching, window)
        return cls(blocks, max_num_seqs, max_num_batched_tokens, max_model_len, max_loras)

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence (served first come, first served)."""
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        """Whether any sequence is waiting or running."""
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Retire a sequence (done or aborted) and return its blocks."""
        seq.status, seq.finish_reason = SequenceStatus.FINISHED, reason
        self.bm.free_sequence(seq)
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        self.running.remove(seq)
        self.bm.free_sequence(seq)
        seq.reset_for_recompute()
        self.waiting.appendleft(seq)
        self.num_preemptions += 1
        out.preempted.append(seq)

    def schedule(self) -> SchedulerOutput:
        """Pick this step's work: running sequences first, then admissions, preempting when blocks run out."""
        out = self._pick()
        out.sampling = [seq for seq, n in out.scheduled if seq.num_computed_tokens + n == seq.num_tokens]
        return out

    def postprocess(self, out: SchedulerOutput, tokens: list[int], logprobs: list[TokenLogprob | None]) -> None:
        """After the forward: advance every scheduled sequence, then append the sampled tokens and retire."""
        for seq, n in out.scheduled:
            seq.num_computed_tokens += n
            self.bm.register_full_blocks(seq)
            self.bm.free_outside_window(seq)
        for seq, token, logprob in zip(out.sampling, tokens, logprobs, strict=True):
            reason = seq.append(token, logprob, self.max_model_len)
            if reason is not None:
                self.finish(seq, reason)

    def _pick(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            while not self.bm.can_allocate(seq, seq.num_computed_tokens + n):
                self._preempt(self.running[-1], out)
                if seq.status is SequenceStatus.WAITING:
                    break
            if seq.status is SequenceStatus.WAITING:
                break
            self.bm.allocate(seq, seq.num_computed_tokens + n)
            out.scheduled.append((seq, n))
            budget -= n
            i += 1
        if out.preempted:
            return out
        skipped: list[Sequence] = []
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if self._adapters_full(seq):  # waits for a LoRA slot; later requests may still go
                skipped.append(self.waiting.popleft())
                continue
            end = min(seq.num_tokens, self.bm.cached_prefix_tokens(seq) + budget)
            if not self.bm.can_allocate(seq, end):
                break
            self.bm.allocate(seq, end)
            n = end - seq.num_computed_tokens  # prefix-cache hits shrink the work
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.scheduled.append((seq, n))
            budget -= n
        self.waiting.extendleft(reversed(skipped))
        return out

    def _adapters_full(self, seq: Sequence) -> bool:
        """Whether admitting `seq` would put more distinct LoRA adapters in the batch than there are slots."""
        if seq.lora is None:
            return False
        running = {s.lora for s in self.running if s.lora is not None}
        return seq.lora not in running and len(running) >= self.max_loras
