"""One generic decoder for every supported architecture, wired by its `ArchSpec` (engine.architectures).

A block is: [norm] -> attention (fused qkv, optional q/k norm, rotary on the leading dims, paged KV) -> [norm],
added to the residual, then the same for the MLP (gated, plain or routed experts); or, with a parallel residual,
attention and MLP side by side on the same input. Which norms exist, and where, is the spec's placement.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from engine.attention import AttentionMetadata, LayerAttention, apply_rotary, paged_attention
from engine.config import ModelConfig
from engine.errors import ParameterError
from engine.models.layers import RoutedExperts, activation, make_norm
from engine.models.rope import RotaryEmbedding
from engine.models.weights import load_weights

RopeTables = dict[str, tuple[torch.Tensor, torch.Tensor]]
NORMS_BY_PLACEMENT = {
    "pre": ("attn_norm", "mlp_norm"),
    "sandwich": ("attn_norm", "attn_out_norm", "mlp_norm", "mlp_out_norm"),
    "post": ("attn_out_norm", "mlp_out_norm"),
}


def rope_key(cfg: ModelConfig, index: int) -> str | None:
    """Which rotary table a layer reads: none, the model's one, or its layer type's (Gemma 3)."""
    if not cfg.rotary_dim or (cfg.rope_layers and not cfg.rope_layers[index]):
        return None
    per_type = any(isinstance(v, dict) for v in (cfg.raw.get("rope_parameters") or {}).values())
    return cfg.layer_types[index] if per_type and cfg.layer_types else "default"


class DecoderLayer(nn.Module):
    """One block; q/k/v and gate/up are fused so a step is one matmul each."""

    def __init__(self, cfg: ModelConfig, index: int) -> None:
        super().__init__()
        spec = cfg.spec
        self.index = index
        self.num_heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.parallel = cfg.parallel_residual
        self.residual_scale = cfg.residual_scale
        self.rope = rope_key(cfg, index)
        window = cfg.layer_windows[index] if cfg.layer_windows else None
        self.attention = LayerAttention(cfg.attention_scale, cfg.attention_softcap, window)
        q_out, kv_out = self.num_heads * self.head_dim, self.kv_heads * self.head_dim
        norms = NORMS_BY_PLACEMENT[spec.norm_placement]
        if self.parallel == "shared":
            norms = ("attn_norm",)
        for name in ("attn_norm", "attn_out_norm", "mlp_norm", "mlp_out_norm"):
            setattr(self, name, make_norm(cfg) if name in norms else None)
        self.qkv_proj = nn.Linear(cfg.hidden_size, q_out + 2 * kv_out, bias=cfg.attention_bias)
        self.q_norm = self.k_norm = None
        self.qk_norm = spec.qk_norm
        if spec.qk_norm:
            head = spec.qk_norm == "head"
            self.q_norm = make_norm(cfg, self.head_dim if head else q_out)
            self.k_norm = make_norm(cfg, self.head_dim if head else kv_out)
        self.o_proj = nn.Linear(q_out, cfg.hidden_size, bias=cfg.o_bias)
        self.mlp_kind = spec.mlp
        if spec.mlp == "moe":
            self.experts = RoutedExperts(cfg)
        else:
            width = 2 * cfg.intermediate_size if spec.mlp == "gated" else cfg.intermediate_size
            name = "gate_up_proj" if spec.mlp == "gated" else "up_proj"
            setattr(self, name, nn.Linear(cfg.hidden_size, width, bias=cfg.mlp_bias))
            self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)
            self.act = activation(cfg.hidden_act)

    def attend(self, x: torch.Tensor, rope: RopeTables, meta: AttentionMetadata) -> torch.Tensor:
        """Self-attention of the (normed) input; K/V go into the paged pool."""
        t = x.shape[0]
        q_out, kv_out = self.num_heads * self.head_dim, self.kv_heads * self.head_dim
        q, k, v = self.qkv_proj(x).split((q_out, kv_out, kv_out), dim=-1)
        if self.qk_norm == "full":  # over the whole projection (OLMo 2, OLMoE)
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.reshape(t, self.num_heads, self.head_dim), k.reshape(t, self.kv_heads, self.head_dim)
        if self.qk_norm == "head":  # per head (Qwen3, Gemma 3)
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            q, k = apply_rotary(q, *rope[self.rope]), apply_rotary(k, *rope[self.rope])
        v = v.reshape(t, self.kv_heads, self.head_dim)
        return self.o_proj(paged_attention(q, k, v, meta, self.index, self.attention))

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        """The feed-forward of the (normed) input."""
        if self.mlp_kind == "moe":
            return self.experts(x)
        if self.mlp_kind == "gated":
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(self.act(gate) * up)
        return self.down_proj(self.act(self.up_proj(x)))

    def forward(self, x: torch.Tensor, rope: RopeTables, meta: AttentionMetadata) -> torch.Tensor:
        """The block: residual + attention, residual + MLP (or both at once with a parallel residual)."""
        h = x if self.attn_norm is None else self.attn_norm(x)
        if self.parallel:
            mlp_in = h if self.parallel == "shared" else self.mlp_norm(x)
            return x + self.attend(h, rope, meta) + self.mlp(mlp_in)
        x = x + self._scaled(self.attn_out_norm, self.attend(h, rope, meta))
        h = x if self.mlp_norm is None else self.mlp_norm(x)
        return x + self._scaled(self.mlp_out_norm, self.mlp(h))

    def _scaled(self, norm: nn.Module | None, h: torch.Tensor) -> torch.Tensor:
        """A sublayer's output as the residual adds it: post-normed (Gemma 2/3, OLMo 2), scaled (Granite)."""
        if norm is not None:
            h = norm(h)
        return h if self.residual_scale == 1.0 else h * self.residual_scale


class DecoderForCausalLM(nn.Module):
    """Token ids + positions + attention metadata in, final hidden states out; logits on request."""

    def __init__(self, cfg: ModelConfig, max_positions: int | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        learned = cfg.spec.positions == "learned"
        self.embed_positions = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size) if learned else None
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=cfg.spec.head_bias)
        self.max_positions = max_positions or cfg.max_position_embeddings
        self.tensor_parallel = 1  # ranks this model's blocks are split over (engine.tensor_parallel.shard)
        self.rebuild_derived()

    def rebuild_derived(self) -> None:
        """Tie the head and fill the rope tables: needed again after `to_empty` on a meta-built model."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        device = self.embed_tokens.weight.device
        keys = sorted({layer.rope for layer in self.layers if layer.rope is not None})
        self.rotaries = nn.ModuleDict(
            {k: RotaryEmbedding(self.config, self.max_positions, None if k == "default" else k) for k in keys}
        ).to(device)

    @property
    def rotary(self) -> RotaryEmbedding:
        """The rotary table of the global-attention layers (what sink-window re-rotation uses)."""
        return self.rotaries["full_attention"] if "full_attention" in self.rotaries else self.rotaries["default"]

    def rope_tables(self, positions: torch.Tensor, dtype: torch.dtype) -> RopeTables:
        """cos/sin rows of every rotary table for these positions, computed once per forward for all layers."""
        return {key: rotary.tables(positions, dtype) for key, rotary in self.rotaries.items()}

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """Final hidden states for the step's tokens (logits are computed separately, for few rows)."""
        x = self.embed(input_ids, positions)
        rope = self.rope_tables(positions, x.dtype)
        for layer in self.layers:
            x = layer(x, rope, meta)
        return x

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Token embeddings, scaled (Gemma, Granite) and with learned positions added (GPT-2)."""
        x = self.embed_tokens(input_ids)
        if self.config.embedding_scale != 1.0:
            x = x * torch.tensor(self.config.embedding_scale, dtype=x.dtype)
        if self.embed_positions is not None:
            x = x + self.embed_positions(positions)
        return x

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits for the rows that sample."""
        logits = self.lm_head(self.norm(hidden))
        if self.config.logits_scale != 1.0:
            logits = logits * self.config.logits_scale
        if self.config.final_softcap:
            logits = torch.tanh(logits / self.config.final_softcap) * self.config.final_softcap
        return logits

    @torch.inference_mode()
    def score(self, token_ids: list[int]) -> torch.Tensor:
        """Logits for every position of one sequence, without a KV cache (evaluation, parity checks)."""
        return self.compute_logits(self._uncached(token_ids))

    @torch.inference_mode()
    def sentence_embedding(self, token_ids: list[int]) -> torch.Tensor:
        """Sentence embedding: the mean over tokens of the final-norm hidden states (no KV cache)."""
        return self.norm(self._uncached(token_ids)).mean(0)

    def _uncached(self, token_ids: list[int]) -> torch.Tensor:
        """Final hidden states of one whole sequence, no KV cache (the model's own sliding window applied)."""
        if self.tensor_parallel > 1:  # one rank alone would wait forever in the other ranks' all-reduce
            raise ParameterError("model", "scoring and embeddings are not served under tensor parallelism")
        ids = torch.tensor(token_ids, dtype=torch.long, device=self.embed_tokens.weight.device)
        positions = torch.arange(len(token_ids), device=ids.device)
        return self(ids, positions, AttentionMetadata.no_cache([len(token_ids)], self.config.sliding_window))

    def load_hf_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load a checkpoint's weights under its architecture's names (engine.models.weights)."""
        load_weights(self, state)
