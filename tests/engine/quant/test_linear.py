"""Quantized Linear layers: storage round trips, and every kernel path agrees with the dequantized weight."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.quant.bitnet import BitNetStrategy
from engine.quant.linear import (
    PREFILL_ROWS,
    Int8Linear,
    pack_nibbles,
    pack_ternary,
    unpack_nibbles,
    unpack_ternary,
)
from engine.quant.rtn import Int4Strategy, Int8Strategy


def test_nibble_and_ternary_packing_round_trip() -> None:
    q = torch.randint(0, 16, (32, 64))
    assert torch.equal(unpack_nibbles(pack_nibbles(q)).long(), q)
    t = torch.randint(-1, 2, (8, 70), dtype=torch.int8)  # not a multiple of 4: padded, then cut
    packed = pack_ternary(t)
    assert packed.dtype == torch.uint8 and packed.shape == (8, 18)
    assert torch.equal(unpack_ternary(packed, 70), t)


@pytest.mark.parametrize(
    ("strategy", "tolerance"),
    [
        (Int8Strategy(), 0.02),
        (Int8Strategy(activations="int8"), 0.05),
        (Int4Strategy(group_size=32), 0.02),
        (BitNetStrategy(), 0.05),
    ],
    ids=["int8", "int8-dynamic", "int4", "bitnet"],
)
@pytest.mark.parametrize("rows", [1, 4, PREFILL_ROWS + 8])
def test_kernel_matches_dequantized_weight(strategy: object, tolerance: float, rows: int) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(128, 64, bias=True)
    layer = strategy.quantize("layer", linear)  # type: ignore[attr-defined]
    assert layer._packed is not None, "the fast kernel should be available on this CPU"
    x = torch.randn(rows, 128)
    expected = torch.nn.functional.linear(x, layer.dequantize(), layer.bias)
    got = layer(x)
    assert got.shape == (rows, 64)
    assert (got - expected).norm() / expected.norm() < tolerance


def test_input_scale_is_applied_on_every_path() -> None:
    torch.manual_seed(0)
    w = torch.randn(32, 64)
    scales = torch.rand(32) + 0.5
    q = torch.clamp(torch.round(w / scales[:, None] * 40), -127, 127).to(torch.int8)
    layer = Int8Linear(q, scales / 40)
    layer.input_scale = torch.rand(64) + 0.5
    layer.prepare()
    x = torch.randn(3, 64)
    expected = x @ layer.dequantize().t()
    assert (layer(x) - expected).norm() / expected.norm() < 0.02
    layer._packed = None  # the no-kernel path
    assert torch.allclose(layer(x), expected, atol=1e-4)
