"""LoRA serving: peft adapters mapped onto the fused layers, mixed adapters in one batch, slots and the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.errors import ParameterError
from engine.llm import LLM
from engine.lora import AdapterError
from engine.sampling import SamplingParams

PROMPT = "The quick brown fox jumps over"
GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)


def hf_logits(base: Path, adapter: Path | None, ids: list[int]) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        return model.eval()(input_ids=torch.tensor([ids])).logits[0]


@pytest.fixture(scope="module")
def llm(tiny_llama: Path, tiny_adapters: dict[str, Path]) -> LLM:
    return LLM(tiny_llama, lora_modules={k: str(v) for k, v in tiny_adapters.items()}, max_loras=4)


@pytest.mark.parametrize("name", ["all", "attn", "mlp", "qv8"])
def test_an_adapter_written_by_peft_gives_peft_s_logits(
    llm: LLM, tiny_llama: Path, tiny_adapters: dict[str, Path], name: str
) -> None:
    ids = llm.tokenizer.encode(PROMPT)
    expected = hf_logits(tiny_llama, tiny_adapters[name], ids)
    assert (expected - hf_logits(tiny_llama, None, ids)).abs().max() > 0.1  # the adapter does change the model
    llm.engine.loras.use(name)
    try:
        got = llm.engine.model.score(ids)
    finally:
        llm.engine.loras.use(None)
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)


def test_one_step_serves_rows_with_different_adapters_as_each_would_alone(llm: LLM) -> None:
    names = [None, "all", "attn", "mlp", "qv8"]
    alone = {n: llm.generate([PROMPT], GREEDY, lora=n)[0].outputs[0].token_ids for n in names}
    assert len({tuple(t) for t in alone.values()}) > 1
    engine = llm.engine
    ids = [engine.add_request(PROMPT, GREEDY, lora=n) for n in names]
    steps_before = engine.stats.steps
    while engine.has_unfinished_requests():
        engine.step()
    together = {n: engine.pop_output(i).outputs[0].token_ids for n, i in zip(names, ids, strict=True)}
    assert together == alone
    assert engine.stats.steps - steps_before <= GREEDY.max_tokens + 1  # one batch, not one pass per adapter


def test_the_prefix_cache_never_hands_an_adapter_the_base_model_s_blocks(
    llm: LLM, tiny_llama: Path, tiny_adapters: dict[str, Path]
) -> None:
    long_prompt = PROMPT * 8  # several full KV blocks, cached by the base model's request first
    base_first = llm.generate([long_prompt], GREEDY)[0].outputs[0].token_ids
    adapted = llm.generate([long_prompt], GREEDY, lora="all")[0].outputs[0].token_ids
    adapters = {"all": str(tiny_adapters["all"])}
    uncached = LLM(tiny_llama, lora_modules=adapters, max_loras=1, enable_prefix_caching=False)
    assert adapted == uncached.generate([long_prompt], GREEDY, lora="all")[0].outputs[0].token_ids
    assert base_first != adapted


def test_more_adapters_than_slots_wait_their_turn_and_evict_the_least_recent(
    tiny_llama: Path, tiny_adapters: dict[str, Path]
) -> None:
    small = LLM(tiny_llama, lora_modules={k: str(v) for k, v in tiny_adapters.items()}, max_loras=2)
    names = ["all", "attn", "mlp", "qv8"]
    outs = small.generate([PROMPT] * 4, GREEDY, lora=None)
    assert all(o.finished for o in outs)
    engine = small.engine
    ids = [engine.add_request(PROMPT, GREEDY, lora=n) for n in names]
    while engine.has_unfinished_requests():
        engine.step()
        assert len({s.lora for s in engine.scheduler.running if s.lora}) <= 2
    results = [engine.pop_output(i).outputs[0].token_ids for i in ids]
    assert results == [small.generate([PROMPT], GREEDY, lora=n)[0].outputs[0].token_ids for n in names]
    assert engine.loras.loads >= 4 and len(engine.loras.slots) == 2


def test_unknown_and_unservable_adapters_are_refused_with_a_reason(
    llm: LLM, tiny_llama: Path, tiny_adapters: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ParameterError, match="unknown LoRA adapter 'nope'"):
        llm.engine.add_request(PROMPT, GREEDY, lora="nope")
    with pytest.raises(AdapterError, match="rank 8; the server allows up to 4"):
        LLM(tiny_llama, lora_modules={"qv8": str(tiny_adapters["qv8"])}, max_lora_rank=4)
    dora = tmp_path / "dora"
    dora.mkdir()
    config = json.loads((tiny_adapters["all"] / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(AdapterError, match="DoRA"):
        llm.engine.add_lora("dora", dora)
    with pytest.raises(AdapterError, match=r"no readable adapter_config\.json"):
        llm.engine.add_lora("missing", tmp_path / "nowhere")
