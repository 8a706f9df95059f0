"""The registry: built-ins, strategies registered in code, and plugins found through entry points."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from engine.quant import QuantStrategy, available_strategies, get_strategy, quantize_model, register_strategy, registry
from engine.quant.linear import Int8Linear

from .conftest import IDS


def test_built_in_strategies_are_listed() -> None:
    assert {"none", "int8", "int4", "gptq", "awq", "bitnet"} <= set(available_strategies())


def test_an_external_strategy_registered_in_code_quantizes_a_model(
    tiny_fp32: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_strategy
    class SignOnly(QuantStrategy):
        """A deliberately crude external strategy: one int8 level per sign."""

        name = "sign-only"
        max_rel_error = 1.0

        def quantize(self, name: str, linear: nn.Linear) -> Int8Linear:
            w = linear.weight.detach()
            return Int8Linear(torch.sign(w).to(torch.int8), w.abs().mean(1))

    assert "sign-only" in available_strategies()
    report = quantize_model(tiny_fp32, get_strategy("sign-only"), head="none")
    assert len(report.quantized) == 8 and not report.fallback
    assert torch.isfinite(tiny_fp32.score(IDS)).all()


def test_a_plugin_package_joins_through_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tollgate_fp16_plugin.py").write_text(
        textwrap.dedent(
            """
            from engine.quant import QuantStrategy
            from engine.quant.rtn import Int8Strategy

            class HalfStrategy(Int8Strategy):
                name = "plugin-int8"
            """
        )
    )
    dist = tmp_path / "tollgate_fp16_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tollgate-fp16-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[tollgate.quant]\nplugin-int8 = tollgate_fp16_plugin:HalfStrategy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_loaded_entry_points", False)
    assert "plugin-int8" in available_strategies()
    assert get_strategy("plugin-int8").name == "plugin-int8"
    sys.modules.pop("tollgate_fp16_plugin", None)


def test_a_broken_plugin_is_skipped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[tollgate.quant]\nbroken = no_such_module_here:Nothing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_loaded_entry_points", False)
    assert "int8" in available_strategies()
    assert any("broken" in r.message for r in caplog.records)


def test_unknown_strategy_and_name_clash_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown quantization strategy 'int3'; available: none, awq"):
        get_strategy("int3")
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    class Clash(QuantStrategy):
        name = "int8"

        def quantize(self, name: str, linear: nn.Linear) -> Int8Linear:
            raise NotImplementedError

    with pytest.raises(ValueError, match="already registered"):
        register_strategy(Clash)
