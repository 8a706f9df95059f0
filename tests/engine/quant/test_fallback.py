"""A layer whose quantization fails stays fp32, with a warning and a count; the model still serves."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from engine import LLM, SamplingParams
from engine.quant import QuantizationError, get_strategy, quantize_model
from engine.quant.calibration import collect_stats
from engine.quant.gptq import GPTQStrategy
from engine.quant.linear import QuantLinear
from engine.quant.rtn import Int8Strategy

from .conftest import IDS

DECODER_LAYERS = 8  # tiny model: 2 layers x (qkv, o, gate_up, down)


class NaNCalibrationGPTQ(GPTQStrategy):
    """GPTQ whose calibration activations into one layer (the tiny model's last) are corrupted into NaN."""

    def calibrate(self, model: nn.Module, batches: list[list[int]]) -> None:
        def corrupt(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            return (args[0].clone().index_fill_(-1, torch.tensor([0]), float("nan")),)

        handle = model.get_submodule("layers.1.down_proj").register_forward_pre_hook(corrupt)
        try:
            super().calibrate(model, batches)
        finally:
            handle.remove()


class NaNOutputInt8(Int8Strategy):
    """int8 whose scales come out NaN for one layer (a numerically broken quantizer)."""

    def quantize(self, name: str, linear: nn.Linear) -> QuantLinear:
        layer = super().quantize(name, linear)
        if name == "layers.0.qkv_proj":
            layer.scales[3] = float("nan")
        return layer


def fp32_layers(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if type(m) is nn.Linear}


@pytest.mark.parametrize("sequential", [True, False])
def test_nan_in_calibration_activations_keeps_that_layer_fp32(
    tiny_fp32: nn.Module, batches: list, caplog: pytest.LogCaptureFixture, sequential: bool
) -> None:
    with caplog.at_level(logging.WARNING):
        report = quantize_model(tiny_fp32, NaNCalibrationGPTQ(group_size=32, sequential=sequential), batches)
    assert set(report.fallback) == {"layers.1.down_proj"} == fp32_layers(tiny_fp32)
    assert "NaN" in report.fallback["layers.1.down_proj"]
    assert report.summary()["fallback_layers"] == 1
    assert any("layers.1.down_proj stays fp32" in r.message for r in caplog.records)
    assert torch.isfinite(tiny_fp32.score(IDS)).all()


def test_nan_in_quantized_weights_keeps_that_layer_fp32(tiny_fp32: nn.Module) -> None:
    original = tiny_fp32.get_submodule("layers.0.qkv_proj").weight.detach().clone()
    report = quantize_model(tiny_fp32, NaNOutputInt8())
    assert set(report.fallback) == {"layers.0.qkv_proj"}
    assert torch.equal(tiny_fp32.get_submodule("layers.0.qkv_proj").weight, original)
    assert torch.isfinite(tiny_fp32.score(IDS)).all()


def test_error_above_the_bound_keeps_the_layer_fp32(tiny_fp32: nn.Module) -> None:
    strategy = get_strategy("int4", group_size=32)
    strategy.max_rel_error = 1e-4  # no 4-bit layer is that close
    report = quantize_model(tiny_fp32, strategy)
    assert len(report.fallback) == DECODER_LAYERS and "above the bound" in next(iter(report.fallback.values()))
    assert report.quantized == {"lm_head": "int8"}


@pytest.mark.parametrize(
    ("batches", "reason"),
    [([], "calibration data is empty"), ([[5, 6, 10**9]], "outside the vocabulary")],
    ids=["empty", "corrupt"],
)
def test_unusable_calibration_data_keeps_every_calibrated_layer_fp32(
    tiny_fp32: nn.Module, batches: list, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    reference = tiny_fp32.score(IDS)
    with caplog.at_level(logging.WARNING):
        report = quantize_model(tiny_fp32, get_strategy("gptq", group_size=32), batches)
    assert len(report.fallback) == DECODER_LAYERS and all(reason in r for r in report.fallback.values())
    assert any(reason in r.message for r in caplog.records)
    assert (tiny_fp32.score(IDS) - reference).abs().max() < 0.5  # only the int8 head changed


def test_collect_stats_rejects_empty_data(tiny_fp32: nn.Module) -> None:
    with pytest.raises(QuantizationError, match="empty"):
        collect_stats(tiny_fp32, [[]])


def test_engine_still_serves_after_calibration_fails(tiny_llama: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    llm = LLM(tiny_llama, quant="awq", quant_options={"group_size": 32}, calibration_text=str(empty))
    assert llm.engine.quant_report is not None and len(llm.engine.quant_report.fallback) == DECODER_LAYERS
    out = llm.generate([IDS], SamplingParams(max_tokens=5, ignore_eos=True, temperature=0.0))
    assert len(out[0].outputs[0].token_ids) == 5


def test_a_strategy_that_needs_calibration_text_says_so(tiny_llama: Path) -> None:
    with pytest.raises(ValueError, match="needs calibration text"):
        LLM(tiny_llama, quant="gptq")
