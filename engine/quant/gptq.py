"""GPTQ (Frantar et al., 2022): quantize a layer column by column, spreading each column's rounding error
over the columns not yet quantized, weighted by the inverse Hessian of the layer's calibration inputs.

Written by hand after the reference implementation (IST-DASLab/gptq, as gpt-fast also does): gptqmodel and
AutoGPTQ need CUDA or pull their own kernels, and torchao's GPTQ targets its own tensor subclasses. By default
the Hessians come layer-sequentially, through the already-quantized layers (`engine.quant.sequential`);
`sequential: false` takes them all from one fp32 pass, which fits the calibration text rather than the model
(on SmolLM2-135M it lost to round-to-nearest on a held-out domain: perplexity 57.62 vs 57.27).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from engine.quant.base import QuantizationError
from engine.quant.calibration import CalibratedStrategy, LayerStats
from engine.quant.linear import Int4Linear, Int8Linear, QuantLinear
from engine.quant.rounding import check_group_size, int4_params, int8_scales, round_int4, round_int8
from engine.quant.rtn import bias_of
from engine.quant.sequential import quantize_sequentially


class _Grid:
    """Per-column rounding for GPTQ: int8 per row (static), or int4 per group (params set on first use)."""

    def __init__(self, w: torch.Tensor, bits: int, group_size: int, static: bool) -> None:
        self.bits, self.group_size = bits, group_size
        rows, cols = w.shape
        if bits == 8:
            self.scale = int8_scales(w)
            return
        groups = cols // group_size
        self.scale = torch.zeros(rows, groups)
        self.zero = torch.zeros(rows, groups)
        self.ready = torch.zeros(groups, dtype=torch.bool)
        if static:  # act-order visits columns out of order: fix every group's grid from the original weights
            scale, zero = int4_params(w.reshape(rows, groups, group_size))
            self.scale.copy_(scale)
            self.zero.copy_(zero)
            self.ready[:] = True

    def set_group(self, g: int, w_group: torch.Tensor) -> None:
        """Fix group g's grid from the current (error-updated) weights, the first time the group is reached."""
        if self.bits == 4 and not self.ready[g]:
            self.scale[:, g], self.zero[:, g] = int4_params(w_group)
            self.ready[g] = True

    def round(self, w: torch.Tensor, col: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes, dequantized values) of one column given its original index."""
        if self.bits == 8:
            q = round_int8(w[:, None], self.scale)[:, 0]
            return q, q.float() * self.scale
        g = col // self.group_size
        s, z = self.scale[:, g], self.zero[:, g]
        q = round_int4(w[:, None], s, z)[:, 0]
        return q, (q - z) * s


def gptq_quantize(
    w: torch.Tensor, hessian: torch.Tensor, bits: int, group_size: int, act_order: bool, damp: float, block: int = 128
) -> tuple[torch.Tensor, _Grid]:
    """Integer codes (out, in) in original column order and the grid they are on."""
    w = w.clone().float()
    h = hessian.clone().double()
    rows, cols = w.shape
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(cols)
    w, h = w[:, perm], h[perm][:, perm]
    grid = _Grid(w[:, torch.argsort(perm)], bits, group_size, static=act_order)
    h += damp * torch.mean(torch.diag(h)) * torch.eye(cols, dtype=h.dtype)
    try:
        hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()
    except RuntimeError as exc:
        raise QuantizationError(f"Hessian is not positive definite ({exc}); raise `damp`") from None
    codes = torch.zeros(rows, cols)
    block = max(block, group_size)  # a group never straddles two blocks
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = int(perm[i1 + i])
            if not act_order and bits == 4 and col % group_size == 0:
                grid.set_group(col // group_size, w1[:, i : i + group_size])
            q, deq = grid.round(w1[:, i], col)
            codes[:, i1 + i] = q
            err = (w1[:, i] - deq) / hinv1[i, i]
            w1[:, i:] -= err[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = err
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return codes[:, torch.argsort(perm)], grid


class GPTQStrategy(CalibratedStrategy):
    """GPTQ to int4 (group-wise) or int8 (per channel), with optional act-order, layer-sequential by default."""

    name = "gptq"

    def __init__(
        self, bits: int = 4, group_size: int = 64, act_order: bool = True, damp: float = 0.01, sequential: bool = True
    ) -> None:
        if bits not in (4, 8):
            raise ValueError(f"gptq: bits must be 4 or 8, got {bits}")
        if bits == 4:
            check_group_size(group_size, group_size)
        if not 0 < damp < 1:
            raise ValueError(f"gptq: damp must be in (0, 1), got {damp}")
        self.bits, self.group_size, self.act_order, self.damp = bits, group_size, act_order, damp
        self.sequential = bool(sequential)
        self.max_rel_error = 0.1 if bits == 8 else 0.5  # GPTQ trades weight error for output error
        self.done: dict[str, QuantLinear] = {}
        self.failed: dict[str, str] = {}
        super().__init__()

    def options(self) -> dict[str, Any]:
        """bits, group_size, act_order, damp, sequential."""
        return {
            "bits": self.bits,
            "group_size": self.group_size,
            "act_order": self.act_order,
            "damp": self.damp,
            "sequential": self.sequential,
        }

    def calibrate(self, model: nn.Module, batches: list[list[int]]) -> None:
        """Sequential: quantize every decoder projection now, block by block; otherwise one fp32 statistics pass."""
        if not self.sequential:
            super().calibrate(model, batches)
            return
        self.done, self.failed = quantize_sequentially(model, batches, self._quantize)

    def quantize(self, name: str, linear: nn.Linear) -> QuantLinear:
        """The layer quantized during sequential calibration, or GPTQ on its fp32-pass Hessian."""
        if not self.sequential:
            return self._quantize(name, linear, self.layer_stats(name))
        if name in self.failed:
            raise QuantizationError(self.failed[name])
        if name not in self.done:
            raise QuantizationError(f"{name}: not quantized by sequential calibration (was `calibrate` run?)")
        return self.done[name]

    def _quantize(self, name: str, linear: nn.Linear, stats: LayerStats) -> QuantLinear:
        w = linear.weight.detach().float()
        if self.bits == 4:
            check_group_size(w.shape[1], self.group_size)
        codes, grid = gptq_quantize(w, stats.mean_hessian, self.bits, self.group_size, self.act_order, self.damp)
        if self.bits == 8:
            return Int8Linear(codes.to(torch.int8), grid.scale, bias_of(linear))
        return Int4Linear(codes, grid.scale, grid.zero, self.group_size, bias_of(linear))
