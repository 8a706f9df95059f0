"""The offline API end to end on SmolLM2-135M: batching invariance, preemption, prefix caching, stops, streaming."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import LLM, SamplingParams
from engine.detokenizer import IncrementalDetokenizer

pytestmark = pytest.mark.integration

QUESTIONS = [
    "What is the capital of France?",
    "Name a famous painter.",
    "How many legs does a spider have?",
    "What colour is the sky?",
    "Give me a word that rhymes with cat.",
    "What is 2 + 2?",
    "Who wrote Hamlet?",
    "What is water made of?",
]
GREEDY = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)


@pytest.fixture(scope="module")
def llm(smollm2: Path) -> LLM:
    return LLM(smollm2)


@pytest.fixture(scope="module")
def prompts(llm: LLM) -> list[list[int]]:
    return [llm.chat_prompt([{"role": "user", "content": q}]) for q in QUESTIONS]


@pytest.fixture(scope="module")
def alone(llm: LLM, prompts: list[list[int]]) -> list[list[int]]:
    return [llm.generate([p], GREEDY)[0].outputs[0].token_ids for p in prompts]


def run_staggered(llm: LLM, prompts: list[list[int]]) -> dict[str, list[int]]:
    """Requests arrive one every other step while earlier ones are decoding."""
    engine, pending, ids = llm.engine, list(prompts), []
    while pending or engine.has_unfinished_requests():
        if pending and engine.stats.steps % 2 == 0:
            ids.append(engine.add_request(pending.pop(0), GREEDY))
        engine.step()
    return [engine.pop_output(i).outputs[0].token_ids for i in ids]


def test_continuous_batch_of_8_matches_each_sequence_alone(llm, prompts, alone) -> None:
    assert run_staggered(llm, prompts) == alone


def test_preemption_recomputes_without_changing_tokens(smollm2: Path, prompts, alone) -> None:
    small = LLM(smollm2, num_blocks=12, block_size=16, enable_prefix_caching=False)  # 192 slots for 8 seqs
    assert run_staggered(small, prompts) == alone
    assert small.engine.scheduler.num_preemptions > 0
    assert small.engine.block_manager.num_free_blocks == 12


def test_prefix_cache_skips_shared_prompt_blocks(llm: LLM) -> None:
    prefix = "Zebras quietly audit the lighthouse ledger before dawn. " * 8
    first = llm.tokenizer.encode(prefix + "What is 3 + 4?")
    second = llm.tokenizer.encode(prefix + "What is 5 + 6?")
    stats = llm.engine.stats
    before = stats.prefill_tokens
    llm.generate([first], GREEDY)
    cold = stats.prefill_tokens - before
    hits_before = llm.engine.block_manager.prefix_hit_tokens
    llm.generate([second], GREEDY)
    warm = stats.prefill_tokens - before - cold
    assert cold == len(first)
    assert warm < len(second) - 64
    assert llm.engine.block_manager.prefix_hit_tokens - hits_before == len(second) - warm


def test_stop_string_cuts_exactly(llm: LLM, prompts) -> None:
    out = llm.generate([prompts[0]], SamplingParams(temperature=0, stop=["Paris"]))[0].outputs[0]
    assert out.text == "The capital of France is "
    assert (out.finish_reason, out.stop_reason) == ("stop", "Paris")
    across = llm.generate([prompts[0]], SamplingParams(temperature=0, stop=["al of Fr", "zzz"]))[0].outputs[0]
    assert across.text == "The capit"


def test_eos_and_stop_token_ids_finish_with_stop(llm: LLM, prompts) -> None:
    out = llm.generate([prompts[0]], SamplingParams(temperature=0, max_tokens=64))[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == 2 and out.token_ids[-1] == 2
    first_token = out.token_ids[0]
    cut = llm.generate([prompts[0]], SamplingParams(temperature=0, stop_token_ids=[first_token]))[0].outputs[0]
    assert cut.token_ids == [first_token] and cut.text == ""


def test_max_tokens_finishes_with_length(llm: LLM, prompts) -> None:
    out = llm.generate([prompts[2]], SamplingParams(temperature=0, max_tokens=3))[0].outputs[0]
    assert len(out.token_ids) == 3 and out.finish_reason == "length"


@pytest.mark.parametrize("stop", [[], ["France is"]])
def test_stream_reassembles_to_the_generated_text(llm: LLM, prompts, stop) -> None:
    params = SamplingParams(temperature=0, max_tokens=40, stop=stop)
    whole = llm.generate([prompts[1]], params)[0].outputs[0]
    deltas = list(llm.stream(prompts[1], params))
    assert "".join(d.text for d in deltas) == whole.text
    assert [t for d in deltas for t in d.token_ids] == whole.token_ids
    assert deltas[-1].finish_reason == whole.finish_reason
    assert not llm.engine.has_unfinished_requests()


def test_incremental_detokenizer_never_splits_characters(llm: LLM) -> None:
    text = "Grüße aus Köln 🎉 — 你好，世界! naïve café ✓"
    ids = llm.tokenizer.encode(text, add_special_tokens=False)
    detok = IncrementalDetokenizer(llm.tokenizer, [])
    deltas = [detok.add(t) for t in ids]
    assert "".join(deltas) + detok.flush() == llm.tokenizer.decode(ids)
    assert not any("\ufffd" in d for d in deltas)


def test_n_completions_with_seed_are_reproducible(llm: LLM, prompts) -> None:
    params = SamplingParams(n=3, temperature=1.0, seed=1234, max_tokens=12)
    a = llm.generate([prompts[3]], params)[0]
    b = llm.generate([prompts[3]], params)[0]
    assert [o.index for o in a.outputs] == [0, 1, 2]
    assert [o.token_ids for o in a.outputs] == [o.token_ids for o in b.outputs]
    assert len({tuple(o.token_ids) for o in a.outputs}) > 1


def test_logprobs_with_top_alternatives(llm: LLM, prompts) -> None:
    out = llm.generate([prompts[0]], SamplingParams(temperature=0, max_tokens=5, logprobs=3))[0].outputs[0]
    assert len(out.logprobs) == 5
    for token, lp in zip(out.token_ids, out.logprobs, strict=True):
        assert lp.token_id == token and len(lp.top) == 3
        assert lp.top[0][0] == token and lp.logprob == pytest.approx(lp.top[0][1]) and lp.logprob <= 0


def test_abort_frees_blocks(llm: LLM, prompts) -> None:
    engine = llm.engine
    rid = engine.add_request(prompts[0], SamplingParams(max_tokens=50))
    engine.step()
    engine.step()
    assert engine.block_manager.num_free_blocks < engine.block_manager.num_blocks
    engine.abort_request(rid)
    assert engine.pop_output(rid).outputs[0].finish_reason == "abort"
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_bad_requests_raise_clear_errors(llm: LLM) -> None:
    with pytest.raises(ValueError, match="prompt must not be empty"):
        llm.generate([[]])
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 49152\)"):
        llm.generate([[1, 49152]])
    with pytest.raises(ValueError, match="context length"):
        llm.generate([[1] * 9000])
    with pytest.raises(TypeError, match="unknown engine option"):
        LLM("unused", block_sise=16)


def test_kv_pool_is_sized_in_bytes_or_blocks(smollm2: Path) -> None:
    per_block = 2 * 30 * 3 * 64 * 4 * 16  # K and V, layers, kv heads, head dim, fp32, block size
    by_bytes = LLM(smollm2, kv_cache_bytes=10 * per_block + 5)
    assert by_bytes.engine.block_manager.num_blocks == 10
    assert by_bytes.engine.kv_cache_bytes == 10 * per_block
    by_blocks = LLM(smollm2, num_blocks=7)
    assert by_blocks.engine.kv_cache_bytes == 7 * per_block
    assert by_blocks.engine.max_model_len == 7 * 16


def test_compiled_forward_generates_what_eager_does(tiny_llama: Path) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    prompts = [[5, 6, 7, 8], [9, 10]]
    eager = [o.outputs[0].token_ids for o in LLM(tiny_llama).generate(prompts, params)]
    compiled = LLM(tiny_llama, enforce_eager=False)
    assert [o.outputs[0].token_ids for o in compiled.generate(prompts, params)] == eager
    assert compiled.engine.runner.forward is not compiled.engine.model
