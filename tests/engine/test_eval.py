"""Quality against a reference: KL divergence, top-1 agreement and perplexity change on the same tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.eval import Reference, compare, evaluate, main, score
from engine.loader import load_model
from tests.conftest import ROOT

IDS = list(range(100, 260))


@pytest.fixture
def fp32(tiny_llama: Path) -> torch.nn.Module:
    return load_model(tiny_llama)


def perturbed(tiny_llama: Path, scale: float) -> torch.nn.Module:
    model = load_model(tiny_llama, cpu_kernels=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.layers.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale * p.abs().mean())
    return model


def test_a_model_against_itself_has_zero_kl_and_full_agreement(fp32: torch.nn.Module) -> None:
    result = evaluate(fp32, Reference(fp32, IDS, 64), IDS, 64)
    assert result["kl_mean"] < 1e-5 and result["kl_p99"] < 1e-4  # the kept reference is fp16
    assert result["top1_agreement"] == 1.0 and abs(result["accuracy_loss_pct"]) < 1e-6


def test_kl_grows_with_the_damage_and_matches_the_definition(fp32: torch.nn.Module, tiny_llama: Path) -> None:
    reference = Reference(fp32, IDS, 64)
    small, large = (evaluate(perturbed(tiny_llama, s), reference, IDS, 64) for s in (0.05, 0.5))
    assert 0 < small["kl_mean"] < large["kl_mean"] and small["kl_mean"] <= small["kl_p99"]
    assert large["top1_agreement"] < 1.0
    model, window = perturbed(tiny_llama, 0.5), IDS[:64]
    p = torch.log_softmax(fp32.score(window)[:-1].float(), -1)
    q = torch.log_softmax(model.score(window)[:-1].float(), -1)
    by_hand = torch.nn.functional.kl_div(q, p, log_target=True, reduction="none").sum(-1)
    assert torch.allclose(score(model, window, 64, Reference(fp32, window, 64, cache_mb=0)).kl, by_hand, atol=1e-5)
    assert torch.allclose(score(model, window, 64, Reference(fp32, window, 64)).kl, by_hand, atol=1e-3)


def test_a_reference_too_big_to_keep_is_recomputed_alike(fp32: torch.nn.Module, tiny_llama: Path) -> None:
    model = perturbed(tiny_llama, 0.2)
    kept, recomputed = Reference(fp32, IDS, 64), Reference(fp32, IDS, 64, cache_mb=0)
    assert kept.scores.logprobs is not None and recomputed.scores.logprobs is None
    a, b = (evaluate(model, r, IDS, 64) for r in (kept, recomputed))
    assert a["kl_mean"] == pytest.approx(b["kl_mean"], abs=1e-5) and a["perplexity"] == b["perplexity"]


def test_the_reference_row_compares_as_zero(fp32: torch.nn.Module) -> None:
    ref = Reference(fp32, IDS, 64).scores
    assert compare(ref, ref)["kl_mean"] == 0.0


def test_the_cli_reports_every_domain_against_fp32(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    texts = [str(ROOT / "data/wikitext-2/test.txt"), str(ROOT / "data/python-docs/test.txt")]
    args = ["--model", str(tiny_llama), "--quant", "int4", "--reference", "fp32", "--text", *texts]
    assert main([*args, "--max-tokens", "128", "--context", "64", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["domains"]) == {"wikitext-2", "python-docs"} and doc["reference"] == str(tiny_llama)
    for row in doc["domains"].values():
        assert row["kl_mean"] > 0 and 0 < row["top1_agreement"] <= 1 and row["tokens"] == 126
    assert doc["kl_mean"] == doc["domains"]["wikitext-2"]["kl_mean"]  # the first text at the top level


def test_strategy_options_reach_the_quantizer_and_a_bad_one_is_one_line(
    tiny_llama: Path, tmp_path: Path, capsys
) -> None:
    text = str(ROOT / "data/python-docs/test.txt")
    args = ["--model", str(tiny_llama), "--quant", "gptq", "--text", text, "--max-tokens", "96", "--context", "48"]
    out = tmp_path / "eval.json"
    assert main([*args, "--option", "sequential=false", "--calibration-tokens", "128", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["options"] == {"sequential": False}
    assert main([*args, "--option", "blocksize=3"]) == 1
    assert "blocksize" in capsys.readouterr().err
