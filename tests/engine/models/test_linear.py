"""The one-copy fp32 Linear computes what nn.Linear does, at every row count the engine sends."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.models.linear import CpuLinear, onednn_available, use_cpu_kernels

pytestmark = pytest.mark.skipif(not onednn_available(), reason="torch built without oneDNN")


@pytest.mark.parametrize("rows", [1, 3, 8, 33, 200])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_nn_linear(rows: int, bias: bool) -> None:
    torch.manual_seed(rows)
    ref = nn.Linear(96, 80, bias=bias)
    x = torch.randn(rows, 96)
    torch.testing.assert_close(CpuLinear(ref)(x), ref(x), rtol=1e-5, atol=1e-5)


def test_keeps_one_copy_of_the_weight() -> None:
    model = use_cpu_kernels(nn.Sequential(nn.Linear(64, 128, bias=False)))
    layer = model[0]
    assert isinstance(layer, CpuLinear)
    assert sum(t.numel() for t in layer.buffers()) == 64 * 128
