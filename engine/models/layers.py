"""The pieces every architecture's block is built from: norms, activations, routed experts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from engine.config import ModelConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (torch's fused op)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension."""
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class LayerNorm(nn.LayerNorm):
    """LayerNorm; `affine=False` is OLMo's, with neither weight nor bias."""

    def __init__(self, dim: int, eps: float, affine: bool = True) -> None:
        super().__init__(dim, eps=eps, elementwise_affine=affine, bias=affine)


def make_norm(cfg: ModelConfig, dim: int | None = None) -> nn.Module:
    """The architecture's norm over `dim` (default: the hidden size)."""
    dim = dim or cfg.hidden_size
    kind = cfg.spec.norm
    if kind == "rms":
        return RMSNorm(dim, cfg.rms_norm_eps)
    return LayerNorm(dim, cfg.rms_norm_eps, affine=kind == "layer")


def activation(name: str) -> nn.Module:
    """transformers' activation of that name (gelu_new, gelu_pytorch_tanh, silu...), so the numbers match."""
    if name not in ACT2FN:
        raise ValueError(f"activation {name!r} is not supported; known: {sorted(ACT2FN)}")
    return ACT2FN[name]


class RoutedExperts(nn.Module):
    """Mixture of gated experts (Mixtral, Qwen3-MoE, OLMoE): softmax router, top-k, each expert runs on its tokens.

    On CPU the experts a step does not route to cost nothing; the loop is over experts hit, not over tokens."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        experts, size = cfg.num_experts, cfg.moe_intermediate_size
        self.top_k, self.normalize = cfg.experts_per_token, cfg.normalize_expert_weights
        self.router = nn.Linear(cfg.hidden_size, experts, bias=False)
        self.experts_gate_up = nn.Parameter(torch.empty(experts, 2 * size, cfg.hidden_size))
        self.experts_down = nn.Parameter(torch.empty(experts, cfg.hidden_size, size))
        self.act = activation(cfg.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each token through its top-k experts, weighted by the router."""
        probs = self.router(x).float().softmax(-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        if self.normalize:
            weights = weights / weights.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for expert in chosen.unique().tolist():
            token, slot = torch.where(chosen == expert)
            gate, up = F.linear(x[token], self.experts_gate_up[expert]).chunk(2, dim=-1)
            y = F.linear(self.act(gate) * up, self.experts_down[expert])
            out.index_add_(0, token, y * weights[token, slot, None].to(x.dtype))
        return out
