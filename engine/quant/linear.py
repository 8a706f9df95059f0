"""Quantized Linear modules: what is stored (portable integer tensors) and the fastest CPU kernel for each.

Kernels were picked by measuring all linear layers of one SmolLM2-135M decode step on one thread of this
machine (Xeon with AVX512-VNNI/AMX, median of 6): fp32 `x @ W^T` 29 ms; int8 weights with dynamically
quantized int8 activations (`quantized::linear_dynamic`, PyTorch's x86 engine) 12 ms, but per-call activation
quantization raises SmolLM2's perplexity 34% (16.98 -> 22.82 on 512 wikitext tokens); `torch._weight_int8pack_mm`
20 ms with bf16 activations (165 ms with fp32) at unchanged perplexity; `_weight_int4pack_mm_for_cpu` 10 ms
(bf16 activations, group 64). Where a kernel is missing (another CPU architecture, a GPU) a layer falls back
to a matmul on the dequantized weight: correct, not fast.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

PREFILL_ROWS = 32  # above this many rows (prefill chunks) the weight-only layers take the bf16 GEMM path


def _x86_int8_kernel() -> bool:
    return "x86" in torch.backends.quantized.supported_engines


def _int4_kernel() -> bool:
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")


def prepack_int8(qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None) -> Any:
    """Pack int8 weights (per-output-channel scales) for the VNNI dynamic-activation kernel."""
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():  # quantized tensors are deprecated as a user API; this kernel still needs one
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        qw = torch._make_per_channel_quantized_tensor(
            qweight, scales.double(), torch.zeros(len(scales), dtype=torch.long), 0
        )
    return torch.ops.quantized.linear_prepack(qw, bias)


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """Two 4-bit values (0..15) per byte, along the last dimension (portable storage, not a kernel layout)."""
    q = q.to(torch.uint8)
    return q[..., 0::2] | (q[..., 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_nibbles`."""
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).flatten(-2)


def pack_ternary(t: torch.Tensor) -> torch.Tensor:
    """Four ternary values {-1, 0, +1} per byte (2 bits each, stored as t + 1); the last dimension is padded to 4."""
    codes = (t + 1).to(torch.uint8)
    pad = -codes.shape[-1] % 4
    codes = F.pad(codes, (0, pad), value=1)
    return codes[..., 0::4] | (codes[..., 1::4] << 2) | (codes[..., 2::4] << 4) | (codes[..., 3::4] << 6)


def unpack_ternary(packed: torch.Tensor, columns: int) -> torch.Tensor:
    """Inverse of `pack_ternary`, as int8."""
    codes = torch.stack([(packed >> s) & 0x3 for s in (0, 2, 4, 6)], dim=-1).flatten(-2)[..., :columns]
    return codes.to(torch.int8) - 1


class QuantLinear(nn.Module):
    """Base of the quantized Linear layers: portable tensors in, a kernel-ready layout built by `prepare`."""

    kind: ClassVar[str]
    bits: ClassVar[float]

    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("bias", bias)
        self.register_buffer("input_scale", None)  # AWQ: x / input_scale before the matmul

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint stores for this layer (portable integer layouts)."""
        raise NotImplementedError

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> QuantLinear:
        """Rebuild from `tensors()` and `meta()`."""
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        """Shape facts a checkpoint needs besides the tensors."""
        return {"kind": self.kind, "in_features": self.in_features, "out_features": self.out_features}

    def dequantize(self) -> torch.Tensor:
        """The fp32 weight this layer computes with, (out, in), input scaling folded in."""
        raise NotImplementedError

    def _common(self) -> dict[str, torch.Tensor]:
        out = {}
        if self.bias is not None:
            out["bias"] = self.bias
        if self.input_scale is not None:
            out["input_scale"] = self.input_scale
        return out

    def _restore_common(self, tensors: dict[str, torch.Tensor]) -> QuantLinear:
        if "input_scale" in tensors:
            self.input_scale = tensors["input_scale"].float()
        self.prepare()
        return self

    def prepare(self) -> None:
        """Build the kernel layout (called after construction and after loading)."""

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_scale is None else x / self.input_scale

    def _bf16_weight(self) -> torch.Tensor:
        """The weight dequantized straight to bf16 (for the prefill path)."""
        raise NotImplementedError

    def _prefill(self, x: torch.Tensor) -> torch.Tensor:
        """Many rows: a bf16 GEMM on the weight dequantized per call beats the weight-only kernels, which are
        built for a few rows (measured at 512 rows, all layers: int8 0.59 s vs 1.85 s, int4 1.0 s vs 1.74 s)."""
        y = F.linear(self._scaled(x).bfloat16(), self._bf16_weight()).to(x.dtype)
        return y if self.bias is None else y + self.bias

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        """Matmul on the dequantized weight: the path where no kernel exists."""
        return F.linear(x, self.dequantize().to(x.dtype), self.bias)

    @property
    def weight_bytes(self) -> int:
        """Bytes of stored weights, scales and zeros (what a decode step reads)."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, kind={self.kind}"


class Int8Linear(QuantLinear):
    """int8 weights with one fp32 scale per output channel: w = q * scale.

    `activations="bf16"` (weight-only, the default) runs `torch._weight_int8pack_mm`; `activations="int8"`
    quantizes activations per call for the VNNI kernel: faster, but activation outliers cost accuracy.
    """

    kind, bits = "int8", 8
    ACTIVATIONS = ("bf16", "int8")

    def __init__(
        self,
        qweight: torch.Tensor,
        scales: torch.Tensor,
        bias: torch.Tensor | None = None,
        activations: str = "bf16",
    ) -> None:
        super().__init__(qweight.shape[1], qweight.shape[0], bias)
        if activations not in self.ACTIVATIONS:
            raise ValueError(f"int8 activations must be one of {self.ACTIVATIONS}, got {activations!r}")
        self.activations = activations
        self.register_buffer("qweight", qweight.to(torch.int8))
        self.register_buffer("scales", scales.float())
        self._packed: Any = None
        self.prepare()

    def prepare(self) -> None:
        """bf16 scales for the weight-only kernel, or a prepacked weight for the VNNI kernel (CPU only)."""
        self._packed = None
        if self.qweight.device.type != "cpu":
            return
        if self.activations == "int8" and _x86_int8_kernel():
            self._packed = prepack_int8(self.qweight, self.scales, self.bias)
        elif self.activations == "bf16" and hasattr(torch, "_weight_int8pack_mm"):
            self._packed = self.scales.bfloat16()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Weight-only int8 GEMM on bf16 activations, or the int8 x int8 VNNI GEMM."""
        if self._packed is None:
            return self._reference(x)
        if self.activations == "int8":
            return torch.ops.quantized.linear_dynamic(self._scaled(x), self._packed, False)
        if x.shape[0] > PREFILL_ROWS:
            return self._prefill(x)
        y = torch._weight_int8pack_mm(self._scaled(x).bfloat16(), self.qweight, self._packed).to(x.dtype)
        return y if self.bias is None else y + self.bias

    def _bf16_weight(self) -> torch.Tensor:
        return self.qweight.to(torch.bfloat16) * self._packed[:, None]

    def dequantize(self) -> torch.Tensor:
        """q * scale (/ input_scale)."""
        w = self.qweight.float() * self.scales[:, None]
        return w if self.input_scale is None else w / self.input_scale

    def meta(self) -> dict[str, Any]:
        """Adds the activation precision."""
        return {**super().meta(), "activations": self.activations}

    def tensors(self) -> dict[str, torch.Tensor]:
        """qweight (int8), scales."""
        return {"qweight": self.qweight, "scales": self.scales, **self._common()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Int8Linear:
        """Rebuild from a checkpoint."""
        layer = cls(tensors["qweight"], tensors["scales"], tensors.get("bias"), meta.get("activations", "bf16"))
        return layer._restore_common(tensors)


class Int4Linear(QuantLinear):
    """4-bit weights, asymmetric per group of input columns: w = (q - zero) * scale, q in 0..15."""

    kind, bits = "int4", 4

    def __init__(
        self, q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int, bias: torch.Tensor | None
    ) -> None:
        super().__init__(q.shape[1], q.shape[0], bias)
        self.group_size = group_size
        self.register_buffer("qweight", pack_nibbles(q))
        self.register_buffer("scales", scales.float())
        self.register_buffer("zeros", zeros.to(torch.uint8))
        self._packed: Any = None
        self.prepare()

    def prepare(self) -> None:
        """Pack for torch's int4 CPU kernel (needs out % 16 == 0 and the group to divide in_features)."""
        self._packed = None
        usable = self.qweight.device.type == "cpu" and _int4_kernel() and self.out_features % 16 == 0
        if usable and self.group_size in (32, 64, 128, 256):
            q = unpack_nibbles(self.qweight).to(torch.int32)
            # the kernel computes (q - 8) * scale + offset, so offset = scale * (8 - zero)
            offset = self.scales * (8 - self.zeros.float())
            scale_offset = torch.stack([self.scales.t(), offset.t()], dim=-1).contiguous().bfloat16()
            self._packed = (torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1), scale_offset)
            self._scales_bf16, self._zeros_bf16 = self.scales.bfloat16(), self.zeros.bfloat16()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """bf16 activations into the int4 kernel, fp32 out."""
        if self._packed is None:
            return self._reference(x)
        if x.shape[0] > PREFILL_ROWS:
            return self._prefill(x)
        xb = self._scaled(x).bfloat16()
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(xb, self._packed[0], self.group_size, self._packed[1])
        y = y.to(x.dtype)
        return y if self.bias is None else y + self.bias

    def _bf16_weight(self) -> torch.Tensor:
        q = unpack_nibbles(self.qweight).view(self.out_features, -1, self.group_size).to(torch.bfloat16)
        w = (q - self._zeros_bf16[..., None]) * self._scales_bf16[..., None]
        return w.view(self.out_features, self.in_features)

    def dequantize(self) -> torch.Tensor:
        """(q - zero) * scale per group (/ input_scale)."""
        q = unpack_nibbles(self.qweight).float().view(self.out_features, -1, self.group_size)
        w = ((q - self.zeros.float()[..., None]) * self.scales[..., None]).view(self.out_features, self.in_features)
        return w if self.input_scale is None else w / self.input_scale

    def meta(self) -> dict[str, Any]:
        """Adds the group size."""
        return {**super().meta(), "group_size": self.group_size}

    def tensors(self) -> dict[str, torch.Tensor]:
        """qweight (two values per byte), scales, zeros."""
        return {"qweight": self.qweight, "scales": self.scales, "zeros": self.zeros, **self._common()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Int4Linear:
        """Rebuild from a checkpoint."""
        q = unpack_nibbles(tensors["qweight"])
        layer = cls(q, tensors["scales"], tensors["zeros"], int(meta["group_size"]), tensors.get("bias"))
        return layer._restore_common(tensors)


class TernaryLinear(QuantLinear):
    """BitNet b1.58: weights in {-1, 0, +1} times one absmean scale, stored 2 bits each.

    The forward quantizes activations to 8 bits and runs an integer GEMM on the ternary weights (held as int8
    for the VNNI kernel: PyTorch has no 2-bit GEMM, and a hand-written one would not beat VNNI at this size).
    """

    kind, bits = "ternary", 2

    def __init__(self, ternary: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__(ternary.shape[1], ternary.shape[0], bias)
        self.register_buffer("qweight", pack_ternary(ternary))
        self.register_buffer("scale", scale.float().reshape(1))
        self._packed: Any = None
        self.prepare()

    def _ternary(self) -> torch.Tensor:
        return unpack_ternary(self.qweight, self.in_features)

    def prepare(self) -> None:
        """Unpack to int8 once for the VNNI kernel (activations are quantized to 8 bits per call)."""
        on_cpu = self.qweight.device.type == "cpu"
        scales = self.scale.expand(self.out_features)
        self._packed = prepack_int8(self._ternary(), scales, self.bias) if on_cpu and _x86_int8_kernel() else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """8-bit activations × ternary weights."""
        if self._packed is None:
            return self._reference(x)
        return torch.ops.quantized.linear_dynamic(x, self._packed, False)

    def dequantize(self) -> torch.Tensor:
        """ternary * scale."""
        return self._ternary().float() * self.scale

    def tensors(self) -> dict[str, torch.Tensor]:
        """qweight (four values per byte), scale."""
        return {"qweight": self.qweight, "scale": self.scale, **self._common()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> TernaryLinear:
        """Rebuild from a checkpoint."""
        ternary = unpack_ternary(tensors["qweight"], int(meta["in_features"]))
        return cls(ternary, tensors["scale"], tensors.get("bias"))._restore_common(tensors)


LAYER_KINDS: dict[str, type[QuantLinear]] = {c.kind: c for c in (Int8Linear, Int4Linear, TernaryLinear)}
