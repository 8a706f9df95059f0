"""Each strategy: error bound on its weights, and quantize -> save -> load reproduces the same outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from engine.loader import load_model
from engine.quant import get_strategy, quantize_model
from engine.quant.apply import relative_error
from engine.quant.bitnet import BitNetStrategy
from engine.quant.checkpoint import QUANT_FILE, save_quantized
from engine.quant.linear import QuantLinear, TernaryLinear

from .conftest import IDS

STRATEGIES = ["int8", "int4", "gptq", "awq", "bitnet"]
# relative weight-error bounds on Gaussian weights: 8 bits ~0.5%, 4 bits per group of 32 ~8%
BOUNDS = {"int8": 0.01, "int4": 0.12, "gptq": 0.2, "awq": 0.2, "bitnet": 0.7}


@pytest.mark.parametrize("name", STRATEGIES)
def test_quantized_weights_within_the_strategy_bound(name: str, tiny_fp32: nn.Module, batches: list) -> None:
    originals = {n: m.weight.detach().clone() for n, m in tiny_fp32.named_modules() if type(m) is nn.Linear}
    options = {} if name in ("int8", "bitnet") else {"group_size": 32}
    report = quantize_model(tiny_fp32, get_strategy(name, **options), batches)
    assert not report.fallback and len(report.quantized) == len(originals)
    for layer_name, layer in tiny_fp32.named_modules():
        if isinstance(layer, QuantLinear) and layer_name != "lm_head":
            assert relative_error(layer, originals[layer_name]) < BOUNDS[name], layer_name
    assert report.linear_bytes < report.fp32_linear_bytes / 3


@pytest.mark.parametrize("name", STRATEGIES)
def test_save_load_round_trip_reproduces_outputs(name: str, tiny_llama: Path, tmp_path: Path, batches: list) -> None:
    model = load_model(tiny_llama, cpu_kernels=False)
    options = {} if name in ("int8", "bitnet") else {"group_size": 32}
    report = quantize_model(model, get_strategy(name, **options), batches)
    expected = model.score(IDS)
    out = save_quantized(model, report, tiny_llama, tmp_path / name)
    assert (out / QUANT_FILE).is_file() and (out / "tokenizer.json").is_file()
    reloaded = load_model(out)
    assert torch.equal(reloaded.score(IDS), expected)
    kinds = {type(m).__name__ for m in reloaded.modules() if isinstance(m, QuantLinear)}
    assert kinds == {type(m).__name__ for m in model.modules() if isinstance(m, QuantLinear)}


def test_bitnet_is_exact_on_a_model_ternary_by_construction(tiny_fp32: nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():  # every decoder Linear becomes gamma * {-1, 0, +1}: what a BitNet-trained model holds
        for name, m in tiny_fp32.named_modules():
            if type(m) is nn.Linear and name != "lm_head":
                m.weight.copy_(torch.randint(-1, 2, m.weight.shape).float() * 0.05)
    reference = tiny_fp32.score(IDS)
    weights = {n: m.weight.detach().clone() for n, m in tiny_fp32.named_modules() if type(m) is nn.Linear}
    quantize_model(tiny_fp32, BitNetStrategy(), head="none")
    for name, layer in tiny_fp32.named_modules():
        if isinstance(layer, TernaryLinear):
            assert torch.allclose(layer.dequantize(), weights[name], atol=1e-7), name
    logits = tiny_fp32.score(IDS)
    # only the 8-bit activations differ from fp32: next-token choices agree
    assert (logits.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.9
    assert (logits - reference).norm() / reference.norm() < 0.1
