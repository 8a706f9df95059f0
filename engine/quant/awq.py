"""AWQ (Lin et al., 2023): protect the input channels with large activations by scaling them up before
int4 rounding (and the activations down by the same factor), searching the scale exponent per layer.

Written by hand after mit-han-lab/llm-awq's `auto_scale`/`auto_clip`: AutoAWQ and its kernels need CUDA.
The search scores each candidate by the layer's output error on the calibration inputs, computed from their
Hessian (‖ΔW X‖² = Σ_rows ΔW H ΔWᵀ) instead of re-running the block, and the scale stays an input divisor of
the quantized layer rather than being folded into the previous norm.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from engine.quant.calibration import CalibratedStrategy, LayerStats
from engine.quant.linear import Int4Linear
from engine.quant.rounding import check_group_size, dequant_int4, rtn_int4
from engine.quant.rtn import bias_of


def output_error(delta: torch.Tensor, hessian: torch.Tensor) -> float:
    """Σ over calibration tokens of ‖ΔW x‖², from the input Hessian."""
    return float(((delta @ hessian) * delta).sum())


def search_scale(w: torch.Tensor, stats: LayerStats, group_size: int, grid: int) -> torch.Tensor:
    """The per-input-channel scale s = mean|x|^α (α on a grid in [0, 1)) with the least output error."""
    h = stats.mean_hessian
    act = stats.mean_abs.clamp(min=1e-4)
    best: tuple[float, torch.Tensor] = (float("inf"), torch.ones_like(act))
    for k in range(grid):
        alpha = k / grid
        s = act.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        q, scale, zero = rtn_int4(w * s, group_size)
        err = output_error(dequant_int4(q, scale, zero, group_size) / s - w, h)
        if err < best[0]:
            best = (err, s)
    return best[1]


def search_clip(w: torch.Tensor, hessian: torch.Tensor, group_size: int, steps: int) -> torch.Tensor:
    """Per-group shrink factor of the int4 range (1.0 down to 0.5) with the least output error of that group."""
    out, cols = w.shape
    groups = cols // group_size
    wg = w.reshape(out, groups, group_size)
    h_blocks = torch.stack(
        [hessian[g * group_size : (g + 1) * group_size, g * group_size : (g + 1) * group_size] for g in range(groups)]
    )  # (groups, gs, gs): the block-diagonal part
    best_err = torch.full((out, groups), float("inf"))
    best_clip = torch.ones(out, groups)
    for k in range(steps):
        clip = 1.0 - 0.5 * k / steps
        q, scale, zero = rtn_int4(w, group_size, clip)
        delta = dequant_int4(q, scale, zero, group_size).reshape(out, groups, group_size) - wg
        err = torch.einsum("ogi,gij,ogj->og", delta, h_blocks, delta)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_clip = torch.where(better, torch.full_like(best_clip, clip), best_clip)
    return best_clip


class AWQStrategy(CalibratedStrategy):
    """Activation-aware int4: per-channel scale search, then a per-group clipping search."""

    name = "awq"
    max_rel_error = 0.5

    def __init__(self, group_size: int = 64, grid: int = 20, clip_steps: int = 10) -> None:
        check_group_size(group_size, group_size)
        if grid < 1 or clip_steps < 1:
            raise ValueError("awq: grid and clip_steps must be >= 1")
        self.group_size, self.grid, self.clip_steps = group_size, grid, clip_steps
        super().__init__()

    def options(self) -> dict[str, Any]:
        """group_size, grid, clip_steps."""
        return {"group_size": self.group_size, "grid": self.grid, "clip_steps": self.clip_steps}

    def quantize(self, name: str, linear: nn.Linear) -> Int4Linear:
        """Scale search, clip search, then int4 rounding of the scaled weight."""
        stats = self.layer_stats(name)
        w = linear.weight.detach().float()
        check_group_size(w.shape[1], self.group_size)
        s = search_scale(w, stats, self.group_size, self.grid)
        # the scaled layer sees inputs x / s, whose Hessian is H / (s sᵀ)
        clip = search_clip(w * s, stats.mean_hessian / (s[:, None] * s[None, :]), self.group_size, self.clip_steps)
        q, scale, zero = rtn_int4(w * s, self.group_size, clip)
        layer = Int4Linear(q, scale, zero, self.group_size, bias_of(linear))
        layer.input_scale = s
        layer.prepare()
        return layer
