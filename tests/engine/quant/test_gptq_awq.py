"""GPTQ and AWQ on SmolLM2's real activations: both reconstruct a layer's output better than RTN int4."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.loader import load_model, load_tokenizer
from engine.quant.awq import AWQStrategy, output_error
from engine.quant.calibration import collect_stats, text_batches
from engine.quant.gptq import GPTQStrategy
from engine.quant.rtn import Int4Strategy

ROOT = Path(__file__).resolve().parents[3]
LAYERS = ["layers.3.qkv_proj", "layers.10.down_proj", "layers.20.gate_up_proj"]


@pytest.fixture(scope="module")
def real_activations(smollm2: Path) -> tuple[torch.nn.Module, dict]:
    model = load_model(smollm2, cpu_kernels=False)
    batches = text_batches(load_tokenizer(smollm2), ROOT / "data/wikitext-2/valid.txt", 512, 256)
    return model, collect_stats(model, batches)


@pytest.mark.integration
@pytest.mark.parametrize("layer", LAYERS)
def test_gptq_and_awq_beat_rtn_on_layer_output_error(real_activations: tuple, layer: str) -> None:
    model, stats = real_activations
    linear = model.get_submodule(layer)
    w, h = linear.weight.detach().float(), stats[layer].mean_hessian
    gptq, awq = GPTQStrategy(group_size=64, sequential=False), AWQStrategy(group_size=64, grid=10, clip_steps=5)
    gptq.stats = awq.stats = stats
    errors = {
        name: output_error(strategy.quantize(layer, linear).dequantize() - w, h)
        for name, strategy in [("rtn", Int4Strategy(group_size=64)), ("gptq", gptq), ("awq", awq)]
    }
    assert errors["gptq"] < errors["rtn"], errors
    assert errors["awq"] < errors["rtn"], errors


def test_gptq_int8_and_int4_quantize_a_layer(tiny_fp32: torch.nn.Module, batches: list) -> None:
    stats = collect_stats(tiny_fp32, batches)
    linear = tiny_fp32.get_submodule("layers.0.down_proj")
    for bits, kind in [(8, "int8"), (4, "int4")]:
        strategy = GPTQStrategy(bits=bits, group_size=32, act_order=bits == 4, sequential=False)
        strategy.stats = stats
        layer = strategy.quantize("layers.0.down_proj", linear)
        assert layer.kind == kind
        assert (layer.dequantize() - linear.weight).norm() / linear.weight.norm() < (0.02 if bits == 8 else 0.2)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("gptq", {"bits": 3}, "bits must be 4 or 8"),
        ("gptq", {"group_size": 48}, "group_size 48"),
        ("awq", {"grid": 0}, "grid and clip_steps"),
        ("int4", {"group_size": 100}, "group_size 100"),
        ("int8", {"activations": "fp8"}, "activations"),
        ("bitnet", {"bits": 2}, "takes no options"),
        ("gptq", {"blocksize": 64}, "unexpected keyword argument 'blocksize'"),
    ],
)
def test_bad_options_are_rejected_with_the_reason(name: str, options: dict, message: str) -> None:
    from engine.quant import get_strategy

    with pytest.raises(ValueError, match=message):
        get_strategy(name, **options)
