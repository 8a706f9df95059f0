"""Mixed precision: per-block sensitivity, plans from two quantized models, and the budget a plan must meet."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.eval import Reference, evaluate
from engine.loader import load_model
from engine.mixed_precision import blocks_from, most_sensitive, sensitivity, within
from engine.quant import get_strategy, quantize_model

IDS = list(range(100, 230))


def quantized(tiny_llama: Path, name: str) -> torch.nn.Module:
    model = load_model(tiny_llama, cpu_kernels=False)
    quantize_model(model, get_strategy(name, **({"group_size": 32} if name == "int4" else {})), head="none")
    return model


def test_blocks_from_swaps_the_named_blocks_and_puts_them_back(tiny_llama: Path) -> None:
    a, b = load_model(tiny_llama), quantized(tiny_llama, "int4")
    original = list(a.layers)
    with blocks_from(a, b, [1]) as model:
        assert model.layers[1] is b.layers[1] and model.layers[0] is original[0]
    assert list(a.layers) == original


def test_sensitivity_ranks_blocks_and_more_int8_blocks_cost_less_kl(tiny_llama: Path) -> None:
    fp32, int4, int8 = load_model(tiny_llama), quantized(tiny_llama, "int4"), quantized(tiny_llama, "int8")
    reference = Reference(fp32, IDS, 64)
    scores = sensitivity(fp32, int4, reference, IDS, 64)
    assert len(scores) == len(fp32.layers) and all(s > 0 for s in scores)
    assert most_sensitive(scores, 1) == [max(range(len(scores)), key=scores.__getitem__)]
    kl = []
    for k in range(len(scores) + 1):
        with blocks_from(int4, int8, most_sensitive(scores, k)) as model:
            kl.append(evaluate(model, reference, IDS, 64)["kl_mean"])
    assert kl[-1] < kl[0]


def test_a_plan_is_within_budget_only_when_every_limit_holds() -> None:
    row = {"accuracy_loss_pct": 1.5, "kl_mean": 0.02}
    assert within(row, 2.0, None) and within(row, None, None)
    assert not within(row, 1.0, None) and not within(row, 2.0, 0.01)
