"""Fixtures for quantization tests: a tiny model loaded with plain Linear layers, and its token windows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.loader import load_model

IDS = [1, 523, 4470, 314, 260, 1510, 282, 2911, 30, 378, 4045, 6521, 28, 314, 7, 44, 901, 12]


@pytest.fixture
def tiny_fp32(tiny_llama: Path) -> torch.nn.Module:
    """A fresh fp32 copy of the tiny model, Linear layers not yet swapped for CPU kernels."""
    return load_model(tiny_llama, cpu_kernels=False)


@pytest.fixture
def batches() -> list[list[int]]:
    """Calibration windows of token ids."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(100, 40000, (4, 64), generator=g).tolist()
