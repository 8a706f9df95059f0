"""Owns the KV pool and runs one forward per step over every scheduled sequence's new tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch._inductor import config as inductor_config

from engine.attention import AttentionMetadata, SeqSlice
from engine.errors import ParameterError
from engine.lora import LoraManager
from engine.models.llama import LlamaForCausalLM
from engine.scheduler import SchedulerOutput
from engine.sequence import Sequence


def compiled(model: LlamaForCausalLM) -> Callable[..., torch.Tensor]:
    """The forward through torch.compile (inductor), with weights frozen into constants while it compiles:
    inductor's oneDNN linear lowering needs the pre-blocked weights as constants."""
    forward = torch.compile(model, dynamic=True)

    def run(*args: Any) -> torch.Tensor:
        with inductor_config.patch(freezing=True):
            return forward(*args)

    return run


class ModelRunner:
    """Flattens a step's sequences into one batch, lays out paged-KV metadata, returns the logits to sample."""

    def __init__(
        self,
        model: LlamaForCausalLM,
        num_blocks: int,
        block_size: int,
        compile_model: bool = False,
        max_loras: int = 0,
        max_lora_rank: int = 16,
    ) -> None:
        cfg = model.config
        weight = model.embed_tokens.weight
        self.model = model
        self.loras = None  # LoRA slots around the layers, when adapters may be served
        if max_loras:
            if compile_model:  # the step's segments are Python state the compiled graph would not see
                raise ValueError("LoRA serving runs eager: drop enforce_eager=False (--compile) or the adapters")
            self.loras = LoraManager(model, max_loras, max_lora_rank)
        self.forward = compiled(model) if compile_model else model
        self.block_size = block_size
        self.device = weight.device
        slots = num_blocks * block_size
        shape = (cfg.num_key_value_heads, slots, cfg.head_dim)
        # empty, not zeros: attention reads only slots a step has written, and untouched pages stay out of RSS
        # (a 512 MB pool zero-filled is resident from the start; left empty, only the blocks in use are).
        self.kv_cache = [
            tuple(torch.empty(shape, dtype=weight.dtype, device=self.device) for _ in "kv")
            for _ in range(cfg.num_hidden_layers)
        ]
        self.kv_cache_bytes = sum(k.nbytes + v.nbytes for k, v in self.kv_cache)

    def _slots(self, seq: Sequence, positions: torch.Tensor) -> torch.Tensor:
        table = torch.tensor(seq.block_table, dtype=torch.long)
        return table[positions // self.block_size] * self.block_size + positions % self.block_size

    def prepare(self, scheduled: list[tuple[Sequence, int]]) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
        """Token ids, positions and paged-attention metadata for one step's batch."""
        ids: list[int] = []
        positions: list[torch.Tensor] = []
        slots: list[torch.Tensor] = []
        seqs: list[SeqSlice] = []
        bs = self.block_size
        for seq, n in scheduled:
            start = seq.num_computed_tokens
            end = start + n
            ids.extend(seq.token_ids[start:end])
            pos = torch.arange(start, end)
            positions.append(pos)
            slots.append(self._slots(seq, pos))
            table = seq.block_table[: -(-end // bs)]
            s = SeqSlice(q_start=len(ids) - n, q_len=n, kv_len=end)
            if table == list(range(table[0], table[0] + len(table))):
                s.kv_start = table[0] * bs
            else:
                s.kv_index = self._slots(seq, torch.arange(end)).to(self.device)
            if start > 0 and n > 1:
                s.mask = (torch.arange(end)[None, :] <= pos[:, None]).to(self.device)
            seqs.append(s)
        meta = AttentionMetadata(seqs=seqs, slot_mapping=torch.cat(slots).to(self.device), kv_cache=self.kv_cache)
        input_ids = torch.tensor(ids, dtype=torch.long, device=self.device)
        return input_ids, torch.cat(positions).to(self.device), meta

    def check_adapter(self, name: str | None) -> None:
        """ParameterError unless `name` is None or an adapter this runner serves."""
        if name is not None and self.loras is None:
            raise ParameterError("model", f"unknown LoRA adapter {name!r}: no adapters are served", "model_not_found")
        if self.loras is not None:
            self.loras.check(name)

    @torch.inference_mode()
    def run(self, batch: SchedulerOutput) -> torch.Tensor:
        """Forward the step; logits for the sequences that sample (`batch.sampling`, in that order)."""
        input_ids, positions, meta = self.prepare(batch.scheduled)
        if self.loras is not None:
            rows = zip(batch.scheduled, meta.seqs, strict=True)
            self.loras.prepare([(seq.lora, s.q_start, s.q_len) for (seq, _), s in rows])
        try:
            hidden = self.forward(input_ids, positions, meta)
        finally:
            if self.loras is not None:  # no step's adapters linger into scoring or embedding calls
                self.loras.use(None)
        last = {id(seq): s.q_start + s.q_len - 1 for (seq, _), s in zip(batch.scheduled, meta.seqs, strict=True)}
        if not batch.sampling:
            return hidden.new_empty(0, self.model.config.vocab_size)
        rows = torch.tensor([last[id(seq)] for seq in batch.sampling], device=self.device)
        return self.model.compute_logits(hidden[rows])
