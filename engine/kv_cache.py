"""One layer's paged K/V pool in the cache dtype (vLLM's `kv_cache_dtype`): quantize on write, dequantize on read.

`auto` stores the model's dtype and reads a view of the pool (no copy). `bf16`/`fp16` halve it. `int8` stores one
symmetric absmax scale per token and head (fp16, so 66 bytes instead of 256 for a 64-wide fp32 head); `int4`
stores two values per byte with a scale and a minimum per group of 32 (40 bytes). Scales are per token, not per
block, so a block that is still filling never has to be re-quantized; KIVI's per-channel keys would need a
full-precision residual for the open block, which this layout avoids. Measured on SmolLM2-135M (README,
long-context section): int8 is within noise of fp32; int4 costs several percent of perplexity.
"""

from __future__ import annotations

import torch

KV_CACHE_DTYPES = ("auto", "fp32", "bf16", "fp16", "int8", "int4")
FLOAT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SCALE_DTYPE = torch.float16
INT4_GROUP = 32


def check_kv_cache_dtype(name: str, head_dim: int) -> None:
    """ValueError naming the choices unless `name` is a cache dtype this head size can use."""
    if name not in KV_CACHE_DTYPES:
        raise ValueError(f"kv_cache_dtype {name!r} is not supported; choose one of {', '.join(KV_CACHE_DTYPES)}")
    if name == "int4" and head_dim % INT4_GROUP:
        raise ValueError(f"kv_cache_dtype int4 needs a head_dim divisible by {INT4_GROUP}, got {head_dim}")


def bytes_per_head_token(name: str, head_dim: int, model_dtype: torch.dtype) -> int:
    """Bytes one token takes for one KV head of K (or V): what sizes the pool."""
    if name == "auto":
        return head_dim * model_dtype.itemsize
    if name in FLOAT_DTYPES:
        return head_dim * FLOAT_DTYPES[name].itemsize
    if name == "int8":
        return head_dim + SCALE_DTYPE.itemsize
    return head_dim // 2 + 2 * (head_dim // INT4_GROUP) * SCALE_DTYPE.itemsize


class KVPool:
    """K and V for every slot of one layer: `write` new tokens by slot, `read` a sequence's context."""

    def __init__(
        self, kv_heads: int, slots: int, head_dim: int, dtype: str, model_dtype: torch.dtype, device: torch.device
    ) -> None:
        check_kv_cache_dtype(dtype, head_dim)
        self.dtype, self.out_dtype = dtype, model_dtype
        store = {"int8": torch.int8, "int4": torch.uint8}.get(dtype) or FLOAT_DTYPES.get(dtype, model_dtype)
        width = head_dim // 2 if dtype == "int4" else head_dim
        scales = {"int8": 1, "int4": 2 * (head_dim // INT4_GROUP)}.get(dtype, 0)
        # empty, not zeros: attention reads only slots a step has written, and untouched pages stay out of RSS
        self.data = [torch.empty((kv_heads, slots, width), dtype=store, device=device) for _ in "kv"]
        self.scales = [torch.empty((kv_heads, slots, scales), dtype=SCALE_DTYPE, device=device) for _ in "kv"]

    @property
    def nbytes(self) -> int:
        """Bytes reserved for this layer's K and V (scales included)."""
        return sum(t.nbytes for t in (*self.data, *self.scales))

    def write(self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store new tokens' k, v [T, KV, D] at the given pool slots."""
        for data, scales, x in zip(self.data, self.scales, (k, v), strict=True):
            x = x.transpose(0, 1)
            if self.dtype == "int8":
                q, s = _quantize_int8(x)
                scales.index_copy_(1, slots, s)
            elif self.dtype == "int4":
                q, s = _quantize_int4(x)
                scales.index_copy_(1, slots, s)
            else:
                q = x.to(data.dtype)
            data.index_copy_(1, slots, q)

    def read(self, start: int | None, length: int, index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """K, V [KV, L, D] in the model's dtype: a contiguous run from `start`, else the slots in `index`."""
        out = []
        for data, scales in zip(self.data, self.scales, strict=True):
            if start is not None:
                q, s = data[:, start : start + length], scales[:, start : start + length]
            else:
                q, s = data.index_select(1, index), scales.index_select(1, index)
            if self.dtype == "int8":
                out.append(q.to(self.out_dtype) * s.to(self.out_dtype))
            elif self.dtype == "int4":
                out.append(_dequantize_int4(q, s, self.out_dtype))
            else:
                out.append(q.to(self.out_dtype))
        return out[0], out[1]


def _quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = x.abs().amax(-1, keepdim=True).float().clamp(min=1e-8) / 127
    scale = scale.to(SCALE_DTYPE)
    return (x.float() / scale.float()).round().clamp(-127, 127).to(torch.int8), scale


def _quantize_int4(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    groups = x.float().unflatten(-1, (-1, INT4_GROUP))
    lo, hi = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp(min=1e-8).to(SCALE_DTYPE)
    lo = lo.to(SCALE_DTYPE)
    q = ((groups - lo.float()) / scale.float()).round().clamp(0, 15).to(torch.uint8).flatten(-2)
    packed = q[..., 0::2] | (q[..., 1::2] << 4)
    return packed, torch.cat((scale, lo), -1).flatten(-2)


def _dequantize_int4(packed: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    q = torch.stack((packed & 15, packed >> 4), -1).flatten(-2).to(dtype).unflatten(-1, (-1, INT4_GROUP))
    scale, lo = scales.to(dtype).unflatten(-1, (-1, 2)).unbind(-1)
    return (q * scale[..., None] + lo[..., None]).flatten(-2)
