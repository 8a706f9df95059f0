"""Rotary position embeddings, with the scaling variants HF configs name (linear, dynamic, yarn, llama3...)."""

from __future__ import annotations

import torch
from transformers import AutoConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from engine.config import ModelConfig


def rope_type(cfg: ModelConfig) -> str:
    """The config's RoPE variant name (`default` when unscaled)."""
    scaling = cfg.rope_scaling or {}
    return scaling.get("rope_type") or scaling.get("type") or "default"


def inverse_frequencies(cfg: ModelConfig) -> tuple[torch.Tensor, float]:
    """Inverse frequencies and the attention scaling factor, exactly as transformers computes them."""
    kind = rope_type(cfg)
    if kind == "default":
        exponents = torch.arange(0, cfg.head_dim, 2, dtype=torch.int64).float() / cfg.head_dim
        return 1.0 / (cfg.rope_theta**exponents), 1.0
    # The scaled variants have many knobs; transformers' own implementations are the reference, so use them.
    if kind not in ROPE_INIT_FUNCTIONS:
        raise ValueError(f"rope_scaling type {kind!r} is not supported; known: {sorted(ROPE_INIT_FUNCTIONS)}")
    raw = {k: v for k, v in cfg.raw.items() if k != "model_type"}
    hf_cfg = AutoConfig.for_model(cfg.raw.get("model_type", "llama"), **raw)
    return ROPE_INIT_FUNCTIONS[kind](hf_cfg, device=torch.device("cpu"))


class RotaryEmbedding(torch.nn.Module):
    """Precomputed cos/sin tables, looked up by absolute position once per forward."""

    def __init__(self, cfg: ModelConfig, max_positions: int) -> None:
        super().__init__()
        with torch.device("cpu"):  # real numbers even while the model is being built on the meta device
            inv_freq, scale = inverse_frequencies(cfg)
            t = torch.arange(max_positions, dtype=torch.float32)
            freqs = torch.outer(t, inv_freq.float())
            emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos() * scale, persistent=False)
        self.register_buffer("sin", emb.sin() * scale, persistent=False)

    def tables(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin rows for the given positions, shaped to broadcast over heads: [T, 1, D]."""
        return self.cos[positions].to(dtype).unsqueeze(1), self.sin[positions].to(dtype).unsqueeze(1)

