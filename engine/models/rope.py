"""Rotary position embeddings, with the scaling variants HF configs name (linear, dynamic, yarn, llama3...),
partial rotary (GPT-NeoX, Phi, StableLM) and per-layer-type parameters (Gemma 3's local and global layers)."""

from __future__ import annotations

import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from engine.config import ModelConfig, hf_config


def rope_parameters(cfg: ModelConfig, layer_type: str | None) -> tuple[dict, str | None]:
    """The rope parameters transformers uses for a layer type, and the layer-type key when they are per type."""
    params = hf_config(cfg.raw, cfg.spec).rope_parameters or {}
    if layer_type in params and isinstance(params[layer_type], dict):
        return params[layer_type], layer_type
    return params, None


def inverse_frequencies(cfg: ModelConfig, layer_type: str | None = None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies and the attention scaling factor, exactly as transformers computes them."""
    params, per_type = rope_parameters(cfg, layer_type)
    kind = params.get("rope_type") or params.get("type") or "default"
    if kind == "default":
        dim = cfg.rotary_dim
        exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
        return 1.0 / (float(params.get("rope_theta", cfg.rope_theta)) ** exponents), 1.0
    # The scaled variants have many knobs; transformers' own implementations are the reference, so use them.
    if kind not in ROPE_INIT_FUNCTIONS:
        raise ValueError(f"rope_scaling type {kind!r} is not supported; known: {sorted(ROPE_INIT_FUNCTIONS)}")
    return ROPE_INIT_FUNCTIONS[kind](hf_config(cfg.raw, cfg.spec), device=torch.device("cpu"), layer_type=per_type)


class RotaryEmbedding(torch.nn.Module):
    """Precomputed cos/sin tables, looked up by absolute position once per forward."""

    def __init__(self, cfg: ModelConfig, max_positions: int, layer_type: str | None = None) -> None:
        super().__init__()
        with torch.device("cpu"):  # real numbers even while the model is being built on the meta device
            inv_freq, scale = inverse_frequencies(cfg, layer_type)
            t = torch.arange(max_positions, dtype=torch.float32)
            freqs = torch.outer(t, inv_freq.float())
            emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos() * scale, persistent=False)
        self.register_buffer("sin", emb.sin() * scale, persistent=False)

    def tables(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin rows for the given positions, shaped to broadcast over heads: [T, 1, D]."""
        return self.cos[positions].to(dtype).unsqueeze(1), self.sin[positions].to(dtype).unsqueeze(1)
