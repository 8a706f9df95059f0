"""Layer-sequential GPTQ: every decoder projection quantized block by block through the already-quantized ones."""

from __future__ import annotations

import pytest
import torch

from engine.quant import QuantizationError, quantize_model
from engine.quant.calibration import LayerStats, calibration_layers, collect_stats
from engine.quant.gptq import GPTQStrategy
from engine.quant.sequential import quantize_sequentially


def test_sequential_gptq_quantizes_every_decoder_projection_and_restores_the_weights(
    tiny_fp32: torch.nn.Module, batches: list
) -> None:
    before = {n: m.weight.detach().clone() for n, m in calibration_layers(tiny_fp32).items()}
    strategy = GPTQStrategy(group_size=32)
    strategy.calibrate(tiny_fp32, batches)
    assert set(strategy.done) == set(before) and not strategy.failed
    for name, linear in calibration_layers(tiny_fp32).items():
        assert torch.equal(linear.weight, before[name]), name  # quantization is checked against fp32
    assert strategy.quantize("layers.1.down_proj", tiny_fp32.layers[1].down_proj) is strategy.done["layers.1.down_proj"]


def test_later_layers_calibrate_on_the_outputs_of_the_quantized_ones(tiny_fp32: torch.nn.Module, batches: list) -> None:
    fp32_pass = collect_stats(tiny_fp32, batches)
    seen: dict[str, LayerStats] = {}

    def record(name: str, linear: torch.nn.Linear, stats: LayerStats) -> object:
        seen[name] = stats
        return GPTQStrategy(group_size=32, sequential=False)._quantize(name, linear, stats)

    quantize_sequentially(tiny_fp32, batches, record)
    assert list(seen)[:4] == [f"layers.0.{n}" for n in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")]
    first = "layers.0.qkv_proj"  # nothing quantized before it: the same inputs as the fp32 pass
    assert torch.allclose(seen[first].hessian, fp32_pass[first].hessian, rtol=1e-4, atol=1e-3)
    later = "layers.1.qkv_proj"
    assert not torch.allclose(seen[later].hessian, fp32_pass[later].hessian, rtol=1e-3, atol=1e-3)


def test_a_layer_that_fails_stays_fp32_and_the_rest_go_on(
    tiny_fp32: torch.nn.Module, batches: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    strategy = GPTQStrategy(group_size=32)
    real = strategy._quantize

    def flaky(name: str, linear: torch.nn.Linear, stats: LayerStats) -> object:
        if name == "layers.0.o_proj":
            raise QuantizationError("Hessian is not positive definite")
        return real(name, linear, stats)

    monkeypatch.setattr(strategy, "_quantize", flaky)
    report = quantize_model(tiny_fp32, strategy, batches)
    assert list(report.fallback) == ["layers.0.o_proj"] and "positive definite" in report.fallback["layers.0.o_proj"]
    assert type(tiny_fp32.layers[0].o_proj) is torch.nn.Linear
    assert report.quantized["layers.1.o_proj"] == "int4"


def test_corrupt_calibration_data_fails_before_any_layer(tiny_fp32: torch.nn.Module) -> None:
    with pytest.raises(QuantizationError, match="outside the vocabulary"):
        GPTQStrategy(group_size=32).calibrate(tiny_fp32, [[1, 2, 10**9]])
