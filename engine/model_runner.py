"""Owns the KV pool and runs one forward per step over every scheduled sequence's new tokens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch._inductor import config as inductor_config

from engine.attention import AttentionMetadata, SeqSlice, WindowPolicy
from engine.errors import ParameterError
from engine.kv_cache import KVPool, bytes_per_head_token
from engine.lora import LoraManager
from engine.models.decoder import DecoderForCausalLM
from engine.scheduler import SchedulerOutput
from engine.sequence import Sequence


def compiled(model: DecoderForCausalLM) -> Callable[..., torch.Tensor]:
    """The forward through torch.compile (inductor), with weights frozen into constants while it compiles:
    inductor's oneDNN linear lowering needs the pre-blocked weights as constants."""
    forward = torch.compile(model, dynamic=True)

    def run(*args: Any) -> torch.Tensor:
        with inductor_config.patch(freezing=True):
            return forward(*args)

    return run


ATTENTION_POLICIES = ("dense", "sink-window")
SINK_WINDOW_MAX_LEN = 32768  # the longest sequence sink-window attention serves unless max_model_len says otherwise


@dataclass
class CachePlan:
    """The KV pool an engine config asks for: blocks, the attention window, the longest sequence it can serve."""

    num_blocks: int
    window: WindowPolicy | None
    max_model_len: int


def plan_cache(model: DecoderForCausalLM, cfg: Any) -> CachePlan:
    """Size the pool from `cfg` (an EngineConfig) in the cache dtype; check a window fits one sequence's steps.

    Dense attention serves what the pool and the trained positions hold. Sink-window serves past both: its memory
    is bounded by sinks + window + one step, and no query-key distance exceeds sinks + window. A model with its
    own `sliding_window` (Mistral) gets that window under `dense`, as it was trained."""
    if cfg.attention not in ATTENTION_POLICIES:
        raise ValueError(f"attention {cfg.attention!r} is not supported; choose one of {', '.join(ATTENTION_POLICIES)}")
    mcfg = model.config
    per_token = bytes_per_head_token(cfg.kv_cache_dtype, mcfg.head_dim, model.embed_tokens.weight.dtype)
    per_block = 2 * mcfg.num_hidden_layers * mcfg.num_key_value_heads * per_token * cfg.block_size
    num_blocks = cfg.num_blocks or max(1, cfg.kv_cache_bytes // per_block)
    trained = mcfg.max_position_embeddings
    window = None
    if cfg.attention == "sink-window":
        if any(not layer.attention.plain for layer in model.layers):
            raise ValueError(
                f"sink-window attention is not supported for {mcfg.architecture}: its layers soft-cap or window "
                "their own attention; use attention='dense'"
            )
        window = WindowPolicy(cfg.window, cfg.sinks)
        limit = cfg.max_model_len or max(trained, SINK_WINDOW_MAX_LEN)
    elif mcfg.sliding_window:
        window = WindowPolicy(mcfg.sliding_window)
        limit = min(trained, cfg.max_model_len or trained)
    else:
        limit = min(trained, num_blocks * cfg.block_size, cfg.max_model_len or trained)
    if window is not None:
        bs = cfg.block_size
        need = -(-window.sinks // bs) + -(-(window.window + cfg.max_num_batched_tokens) // bs) + 1
        if num_blocks < need:
            raise ValueError(
                f"the KV pool holds {num_blocks} blocks; one sequence under a {window.window}-token window with "
                f"{window.sinks} sinks and {cfg.max_num_batched_tokens}-token steps needs {need}: raise "
                "kv_cache_bytes or lower window / max_num_batched_tokens"
            )
    return CachePlan(num_blocks, window, limit)


def fit_cache(model: DecoderForCausalLM, cfg: Any) -> CachePlan:
    """`plan_cache`, with the model's rope tables stretched to every position a sequence can reach."""
    plan = plan_cache(model, cfg)
    if plan.max_model_len > model.max_positions:
        model.max_positions = plan.max_model_len
        model.rebuild_derived()
    return plan


class ModelRunner:
    """Flattens a step's sequences into one batch, lays out paged-KV metadata, returns the logits to sample."""

    def __init__(
        self,
        model: DecoderForCausalLM,
        num_blocks: int,
        block_size: int,
        compile_model: bool = False,
        max_loras: int = 0,
        max_lora_rank: int = 16,
        kv_cache_dtype: str = "auto",
        window: WindowPolicy | None = None,
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
        self.window = window
        self.device = weight.device
        slots = num_blocks * block_size
        self.kv_cache = [
            KVPool(cfg.num_key_value_heads, slots, cfg.head_dim, kv_cache_dtype, weight.dtype, self.device)
            for _ in range(cfg.num_hidden_layers)
        ]
        self.kv_cache_bytes = sum(pool.nbytes for pool in self.kv_cache)
        self.last_hidden: torch.Tensor | None = None

    def _slots(self, seq: Sequence, positions: torch.Tensor) -> torch.Tensor:
        table = torch.tensor(seq.block_table, dtype=torch.long)
        return table[positions // self.block_size] * self.block_size + positions % self.block_size

    def prepare(self, scheduled: list[tuple[Sequence, int]]) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
        """Token ids, positions and paged-attention metadata for one step's batch."""
        ids: list[int] = []
        positions: list[torch.Tensor] = []
        slots: list[torch.Tensor] = []
        seqs: list[SeqSlice] = []
        for seq, n in scheduled:
            start = seq.num_computed_tokens
            ids.extend(seq.token_ids[start : start + n])
            pos = torch.arange(start, start + n)
            positions.append(pos)
            slots.append(self._slots(seq, pos))
            windowed = self.window is not None and self.window.first_visible(start + n - 1) > self.window.sinks
            seqs.append((self._windowed if windowed else self._dense)(seq, len(ids) - n, pos))
        meta = AttentionMetadata(seqs=seqs, slot_mapping=torch.cat(slots).to(self.device), kv_cache=self.kv_cache)
        input_ids = torch.tensor(ids, dtype=torch.long, device=self.device)
        return input_ids, torch.cat(positions).to(self.device), meta

    def _dense(self, seq: Sequence, q_start: int, pos: torch.Tensor) -> SeqSlice:
        """Every token so far is context: a view of the pool when its blocks are contiguous, else gathered."""
        n, end, bs = len(pos), int(pos[-1]) + 1, self.block_size
        table = seq.block_table[: -(-end // bs)]
        s = SeqSlice(q_start=q_start, q_len=n, kv_len=end)
        if table == list(range(table[0], table[0] + len(table))):
            s.kv_start = table[0] * bs
        else:
            s.kv_index = self._slots(seq, torch.arange(end)).to(self.device)
        if end > n > 1:
            s.mask = (torch.arange(end)[None, :] <= pos[:, None]).to(self.device)
        return s

    def _windowed(self, seq: Sequence, q_start: int, pos: torch.Tensor) -> SeqSlice:
        """The sinks and the step's windows only; every query is masked to its own window, sinks re-rotated."""
        policy = self.window
        first, end = policy.first_visible(int(pos[0])), int(pos[-1]) + 1
        keys = torch.cat((torch.arange(min(policy.sinks, end)), torch.arange(first, end)))
        s = SeqSlice(q_start=q_start, q_len=len(pos), kv_len=len(keys))
        s.kv_index = self._slots(seq, keys).to(self.device)
        if len(pos) > 1:
            lower = (pos - policy.window + 1).clamp(min=policy.sinks)
            visible = (keys[None, :] >= lower[:, None]) | (keys[None, :] < policy.sinks)
            s.mask = (visible & (keys[None, :] <= pos[:, None])).to(self.device)
        if policy.sinks:
            shift = (pos - policy.sinks - policy.window + 1).clamp(min=0).to(self.device)
            cos, sin = self.model.rotary.tables(shift, self.model.embed_tokens.weight.dtype)
            s.sink_len = min(policy.sinks, end)
            s.sink_rotation = (cos, -sin)
        return s

    def check_adapter(self, name: str | None) -> None:
        """ParameterError unless `name` is None or an adapter this runner serves."""
        if name is not None and self.loras is None:
            raise ParameterError("model", f"unknown LoRA adapter {name!r}: no adapters are served", "model_not_found")
        if self.loras is not None:
            self.loras.check(name)

    @torch.inference_mode()
    def forward_step(self, batch: SchedulerOutput) -> tuple[torch.Tensor, AttentionMetadata]:
        """Final hidden states of every token the step computes, with the layout that says whose rows are whose."""
        input_ids, positions, meta = self.prepare(batch.scheduled)
        if self.loras is not None:
            rows = zip(batch.scheduled, meta.seqs, strict=True)
            self.loras.prepare([(seq.lora, s.q_start, s.q_len) for (seq, _), s in rows])
        try:
            return self.forward(input_ids, positions, meta), meta
        finally:
            if self.loras is not None:  # no step's adapters linger into scoring or embedding calls
                self.loras.use(None)

    @torch.inference_mode()
    def keepalive(self) -> None:
        """Called when the engine idles; a runner whose peers time out when idle (tensor parallel) pings them."""

    def run(self, batch: SchedulerOutput) -> torch.Tensor:
        """Forward the step; logits for the sequences that sample (`batch.sampling`, in that order)."""
        hidden, meta = self.forward_step(batch)
        self.last_hidden = hidden  # every computed row, for evaluations that score prompts (engine.long_context)
        if not batch.sampling:
            return hidden.new_empty(0, self.model.config.vocab_size)
        return self.model.compute_logits(hidden[self.sampling_rows(batch, meta)])

    def sampling_rows(self, batch: SchedulerOutput, meta: AttentionMetadata) -> torch.Tensor:
        """The row of each sampling sequence's last computed token, in `batch.sampling` order."""
        last = {id(seq): s.q_start + s.q_len - 1 for (seq, _), s in zip(batch.scheduled, meta.seqs, strict=True)}
        return torch.tensor([last[id(seq)] for seq in batch.sampling], dtype=torch.long, device=self.device)
