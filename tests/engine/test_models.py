"""The generic decoder matches transformers: logits for each architecture, greedy text for SmolLM2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from engine import LLM, SamplingParams
from engine.loader import load_model
from engine.loader.tiny import TINY, build_tiny
from tests.conftest import make_tiny_checkpoint

IDS = [1, 17, 250, 3000, 45000, 9, 88, 1024, 7, 7, 7, 512, 33, 2048, 100, 5]
TINY_IDS = [(i * 37 + 11) % 253 + 3 for i in range(40)]  # longer than the tiny sliding windows (16)


def hf_logits(path: Path, ids: list[int]) -> torch.Tensor:
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("name", TINY)
def test_tiny_logits_without_a_cache_match_transformers(name: str, tmp_path: Path) -> None:
    path = build_tiny(name, tmp_path)
    ours = load_model(path).score(TINY_IDS)
    assert (ours - hf_logits(path, TINY_IDS)).abs().max().item() <= 1e-4


def test_qwen2_has_qkv_bias(tmp_path: Path) -> None:
    model = load_model(make_tiny_checkpoint(tmp_path, "qwen2"), cpu_kernels=False)
    assert model.layers[0].qkv_proj.bias is not None
    assert model.layers[0].qkv_proj.bias.abs().sum() > 0


@pytest.mark.integration
def test_smollm2_logits_match_transformers(smollm2: Path) -> None:
    ids = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407]
    ours = load_model(smollm2).score(ids)
    assert (ours - hf_logits(smollm2, ids)).abs().max().item() <= 1e-3


PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "Explain gravity to a child.",
    "def fibonacci(n):",
]


@pytest.mark.integration
@pytest.mark.parametrize("eager", [True, pytest.param(False, marks=pytest.mark.slow, id="compiled")])
def test_smollm2_greedy_64_tokens_match_transformers(smollm2: Path, eager: bool) -> None:
    llm = LLM(smollm2, enforce_eager=eager)
    hf = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    prompts = [llm.chat_prompt([{"role": "user", "content": p}]) for p in PROMPTS]
    # 64 tokens each: EOS is suppressed on both sides (logit bias -100 here, min_new_tokens in transformers)
    params = SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True, logit_bias={2: -100.0})
    ours = llm.generate(prompts, params)
    for prompt, out in zip(prompts, ours, strict=True):
        with torch.no_grad():
            ref = hf.generate(
                torch.tensor([prompt]), do_sample=False, max_new_tokens=64, min_new_tokens=64, pad_token_id=2
            )[0, len(prompt) :].tolist()
        assert len(ref) == 64
        assert out.outputs[0].token_ids == ref


@pytest.mark.integration
def test_smollm2_answers_capital_of_france(smollm2: Path) -> None:
    llm = LLM(smollm2)
    out = llm.chat([{"role": "user", "content": "What is the capital of France?"}], SamplingParams(temperature=0))
    assert out.outputs[0].text == "The capital of France is Paris."
    assert out.outputs[0].finish_reason == "stop"
