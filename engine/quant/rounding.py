"""Round-to-nearest grids shared by every strategy: symmetric int8 per row, asymmetric int4 per group."""

from __future__ import annotations

import torch

INT4_GROUP_SIZES = (32, 64, 128, 256)  # what torch's int4 CPU kernel accepts


def int8_scales(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-row scale: the row's absolute maximum maps to 127."""
    return (w.abs().amax(dim=-1) / 127).clamp(min=1e-12)


def round_int8(w: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """int8 codes for w on per-row `scales` (broadcast over the last dimension)."""
    return torch.clamp(torch.round(w / scales[..., None]), -127, 127).to(torch.int8)


def int4_params(w: torch.Tensor, clip: float | torch.Tensor = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric (scale, zero) over the last dimension; the range always holds 0 and is shrunk by `clip`."""
    lo = w.amin(dim=-1).clamp(max=0) * clip
    hi = w.amax(dim=-1).clamp(min=0) * clip
    scale = ((hi - lo) / 15).clamp(min=1e-12)
    zero = torch.clamp(torch.round(-lo / scale), 0, 15)
    return scale, zero


def round_int4(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Codes 0..15 for w on (scale, zero) broadcast over the last dimension."""
    return torch.clamp(torch.round(w / scale[..., None]) + zero[..., None], 0, 15)


def check_group_size(in_features: int, group_size: int) -> None:
    """Raise ValueError when the kernel cannot use this group size for a layer this wide."""
    if group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"group_size {group_size} is not one of {INT4_GROUP_SIZES}")
    if in_features % group_size:
        raise ValueError(f"group_size {group_size} does not divide in_features {in_features}")


def rtn_int4(w: torch.Tensor, group_size: int, clip: float | torch.Tensor = 1.0) -> tuple[torch.Tensor, ...]:
    """Group-wise round-to-nearest: codes (out, in), scales and zeros (out, in / group_size)."""
    out, cols = w.shape
    check_group_size(cols, group_size)
    groups = w.reshape(out, cols // group_size, group_size)
    scale, zero = int4_params(groups, clip)
    return round_int4(groups, scale, zero).reshape(out, cols), scale, zero


def dequant_int4(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> torch.Tensor:
    """The fp32 weight of group-wise int4 codes."""
    out, cols = q.shape
    groups = q.reshape(out, cols // group_size, group_size)
    return ((groups - zero[..., None]) * scale[..., None]).reshape(out, cols)
