"""Sink-window (StreamingLLM) and sliding-window attention over the paged cache: a from-scratch StreamingLLM
reference, parity with dense attention while the sequence fits, block freeing, prefix caching, preemption, chunked
prefill across the window edge and every cache dtype."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from engine import LLM, SamplingParams
from engine.attention import WindowPolicy, apply_rotary
from engine.engine import EngineConfig, LLMEngine
from engine.errors import ParameterError
from engine.kv_cache import KV_CACHE_DTYPES
from engine.long_context import run_sequence
from engine.models.decoder import DecoderForCausalLM
from tests.conftest import make_tiny_checkpoint

TRAINED = 96  # the tiny model's max_position_embeddings: sequences below run past it
DTYPES = [d for d in KV_CACHE_DTYPES if d != "fp32"]  # fp32 is `auto` for an fp32 model
TOLERANCE = {"auto": 1e-4, "bf16": 2e-2, "fp16": 2e-3, "int8": 2e-2, "int4": 0.3}  # relative, on summed NLL


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """head_dim 32 (int4 groups need it), 2 KV heads for 4 query heads (GQA)."""
    path = tmp_path_factory.mktemp("tiny-sink")
    return make_tiny_checkpoint(path, "llama", hidden_size=128, max_position_embeddings=TRAINED)


def ids_of(n: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 49152, (n,), generator=g).tolist()


def make_engine(path: Path, **options: object) -> LLMEngine:
    settings = {"block_size": 4, "num_blocks": 64, "max_num_batched_tokens": 16, "enable_prefix_caching": False}
    return LLMEngine(path, EngineConfig(**(settings | options)))


def engine_nll(engine: LLMEngine, ids: list[int], new_tokens: int = 4) -> tuple[float, list[int]]:
    run = run_sequence(engine, ids, new_tokens, score=True)
    return run.nll, run.generated


@torch.inference_mode()
def streaming_reference(model: DecoderForCausalLM, ids: list[int], policy: WindowPolicy | None) -> float:
    """StreamingLLM as its paper states it, token by token: keys cached before rotation, and at every step the
    visible tokens (sinks, then the window) rotated at their positions *in the cache*, the query at the last."""
    cfg = model.config
    heads, kv_heads, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    cache: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = [([], []) for _ in model.layers]
    nll = 0.0
    for p, token in enumerate(ids):
        x = model.embed_tokens(torch.tensor([token]))
        visible = list(range(p + 1))
        if policy is not None:
            visible = [j for j in visible if j < policy.sinks or j > p - policy.window]
        cos, sin = model.rotary.tables(torch.arange(len(visible)), x.dtype)
        for layer, (keys, values) in zip(model.layers, cache, strict=True):
            qkv = layer.qkv_proj(layer.attn_norm(x))[0]
            q = qkv[: heads * d].view(1, heads, d)
            keys.append(qkv[heads * d : (heads + kv_heads) * d].view(kv_heads, d))
            values.append(qkv[(heads + kv_heads) * d :].view(kv_heads, d))
            k = apply_rotary(torch.stack([keys[j] for j in visible]), cos, sin)  # [L, KV, D]
            v = torch.stack([values[j] for j in visible])
            q = apply_rotary(q, cos[-1:], sin[-1:])
            out = F.scaled_dot_product_attention(
                q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], enable_gqa=True
            )
            x = x + layer.o_proj(out[0].transpose(0, 1).reshape(1, heads * d))
            gate, up = layer.gate_up_proj(layer.mlp_norm(x)).chunk(2, dim=-1)
            x = x + layer.down_proj(F.silu(gate) * up)
        if p + 1 < len(ids):
            nll -= model.compute_logits(x).log_softmax(-1)[0, ids[p + 1]].item()
    return nll


# -- the policy itself ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "window,sinks,position,first", [(8, 0, 3, 0), (8, 0, 20, 13), (8, 4, 5, 4), (8, 4, 11, 4), (8, 4, 30, 23)]
)
def test_first_visible(window: int, sinks: int, position: int, first: int) -> None:
    assert WindowPolicy(window, sinks).first_visible(position) == first


@pytest.mark.parametrize("window,sinks", [(0, 4), (8, -1)])
def test_policy_rejects_bad_sizes(window: int, sinks: int) -> None:
    with pytest.raises(ValueError, match="window must be >= 1"):
        WindowPolicy(window, sinks)


# -- against the from-scratch reference ------------------------------------------------------------------------


@pytest.mark.parametrize("sinks", [0, 1, 4, 6])
@pytest.mark.parametrize("window", [8, 13])
def test_matches_streamingllm_reference(tiny: Path, window: int, sinks: int) -> None:
    ids = ids_of(60)
    engine = make_engine(tiny, attention="sink-window", window=window, sinks=sinks)
    ours, _ = engine_nll(engine, ids, new_tokens=1)
    ref = streaming_reference(engine.model, ids, WindowPolicy(window, sinks))
    assert ours == pytest.approx(ref, rel=1e-4)


@pytest.mark.parametrize("chunk", [1, 3, 8, 16, 64])
def test_chunked_prefill_across_the_window_edge(tiny: Path, chunk: int) -> None:
    ids = ids_of(70, seed=1)
    engine = make_engine(tiny, attention="sink-window", window=12, sinks=4, max_num_batched_tokens=chunk)
    ours, _ = engine_nll(engine, ids, new_tokens=1)
    assert ours == pytest.approx(streaming_reference(engine.model, ids, WindowPolicy(12, 4)), rel=1e-4)


@pytest.mark.parametrize("chunk", [1, 5, 16, 64])
def test_decode_steps_agree_with_chunked_prefill(tiny: Path, chunk: int) -> None:
    ids = ids_of(50, seed=2)
    reference = make_engine(tiny, attention="sink-window", window=10, sinks=2, max_num_batched_tokens=1)
    engine = make_engine(tiny, attention="sink-window", window=10, sinks=2, max_num_batched_tokens=chunk)
    assert engine_nll(engine, ids, 8)[1] == engine_nll(reference, ids, 8)[1]


# -- parity with dense while the sequence fits, for every cache dtype --------------------------------------------


@pytest.mark.parametrize("kv_cache_dtype", DTYPES)
def test_parity_with_dense_while_it_fits(tiny: Path, kv_cache_dtype: str) -> None:
    ids = ids_of(40, seed=3)
    dense = make_engine(tiny, kv_cache_dtype=kv_cache_dtype)
    sparse = make_engine(tiny, kv_cache_dtype=kv_cache_dtype, attention="sink-window", window=64, sinks=4)
    (nll_d, out_d), (nll_s, out_s) = engine_nll(dense, ids), engine_nll(sparse, ids)
    assert nll_s == nll_d and out_s == out_d


@pytest.mark.parametrize("kv_cache_dtype", DTYPES)
def test_every_cache_dtype_tracks_the_fp32_reference(tiny: Path, kv_cache_dtype: str) -> None:
    ids = ids_of(80, seed=4)
    engine = make_engine(tiny, kv_cache_dtype=kv_cache_dtype, attention="sink-window", window=16, sinks=4)
    ours, _ = engine_nll(engine, ids, new_tokens=1)
    ref = streaming_reference(engine.model, ids, WindowPolicy(16, 4))
    assert ours == pytest.approx(ref, rel=TOLERANCE[kv_cache_dtype])


@pytest.mark.parametrize("kv_cache_dtype", DTYPES)
def test_cache_dtype_shrinks_the_pool(tiny: Path, kv_cache_dtype: str) -> None:
    bytes_of = {d: make_engine(tiny, kv_cache_dtype=d).kv_cache_bytes for d in ("auto", kv_cache_dtype)}
    expected = {"auto": 1.0, "bf16": 0.5, "fp16": 0.5, "int8": (32 + 2) / 128, "int4": (16 + 4) / 128}
    assert bytes_of[kv_cache_dtype] / bytes_of["auto"] == pytest.approx(expected[kv_cache_dtype])


# -- memory: blocks leave the pool as they leave the window ----------------------------------------------------


@pytest.mark.parametrize("kv_cache_dtype", DTYPES)
@pytest.mark.parametrize("length", [40, 200])
def test_kv_blocks_bounded_by_sinks_window_and_one_step(tiny: Path, kv_cache_dtype: str, length: int) -> None:
    engine = make_engine(tiny, kv_cache_dtype=kv_cache_dtype, attention="sink-window", window=16, sinks=4)
    engine_nll(engine, ids_of(length, seed=5), new_tokens=4)
    bound = 1 + -(-(16 + 16) // 4) + 1  # sink block + window and one 16-token step + a partial block
    assert engine.block_manager.peak_used <= bound
    assert engine.block_manager.num_free_blocks == 64  # everything back once the sequence finished


def test_dense_holds_every_block(tiny: Path) -> None:
    engine = make_engine(tiny)
    engine_nll(engine, ids_of(80, seed=5), new_tokens=4)
    assert engine.block_manager.peak_used == math.ceil(83 / 4)


def test_released_blocks_serve_another_sequence(tiny: Path) -> None:
    """A pool too small for two dense sequences runs two long windowed ones side by side, each right."""
    options = {"attention": "sink-window", "window": 8, "sinks": 4, "num_blocks": 16, "max_num_batched_tokens": 8}
    a, b = ids_of(60, seed=6), ids_of(60, seed=7)
    alone = [LLM(tiny, **options).generate([p], SamplingParams(temperature=0, max_tokens=6))[0] for p in (a, b)]
    together = LLM(tiny, **options).generate([a, b], SamplingParams(temperature=0, max_tokens=6))
    assert [o.outputs[0].token_ids for o in together] == [o.outputs[0].token_ids for o in alone]


# -- prefix caching, preemption --------------------------------------------------------------------------------


def test_prefix_cache_hit_gives_the_same_tokens(tiny: Path) -> None:
    llm = LLM(tiny, attention="sink-window", window=12, sinks=4, block_size=4, max_num_batched_tokens=16)
    params = SamplingParams(temperature=0, max_tokens=8)
    prompt = ids_of(48, seed=8)
    first = llm.generate([prompt], params)[0].outputs[0].token_ids
    hits = llm.engine.block_manager.prefix_hit_tokens
    second = llm.generate([prompt], params)[0].outputs[0].token_ids
    assert second == first and llm.engine.block_manager.prefix_hit_tokens > hits


def test_prefix_cache_never_reuses_a_recycled_block(tiny: Path) -> None:
    """Released blocks are recycled by other sequences; a later hit must not match what they now hold."""
    options = {"attention": "sink-window", "window": 8, "sinks": 4, "block_size": 4, "num_blocks": 16}
    llm = LLM(tiny, max_num_batched_tokens=8, **options)
    params = SamplingParams(temperature=0, max_tokens=4)
    prompt, other = ids_of(40, seed=9), ids_of(40, seed=10)
    expected = LLM(tiny, enable_prefix_caching=False, max_num_batched_tokens=8, **options).generate([prompt], params)
    for p in (prompt, other, prompt):
        out = llm.generate([p], params)[0]
    assert out.outputs[0].token_ids == expected[0].outputs[0].token_ids


@pytest.mark.parametrize("num_blocks", [6, 9])
def test_preemption_recomputes_the_window(tiny: Path, num_blocks: int) -> None:
    options = {"attention": "sink-window", "window": 8, "sinks": 4, "block_size": 4, "max_num_batched_tokens": 8}
    prompts = [ids_of(30, seed=s) for s in range(4)]
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    alone = [LLM(tiny, num_blocks=64, **options).generate([p], params)[0].outputs[0].token_ids for p in prompts]
    llm = LLM(tiny, num_blocks=num_blocks, **options)
    together = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
    assert together == alone and llm.engine.scheduler.num_preemptions > 0


# -- positions: past the trained context -----------------------------------------------------------------------


def test_sink_window_serves_past_the_trained_context(tiny: Path) -> None:
    llm = LLM(tiny, attention="sink-window", window=32, sinks=4, block_size=4)
    out = llm.generate([ids_of(3 * TRAINED)], SamplingParams(temperature=0, max_tokens=4))[0]
    assert len(out.outputs[0].token_ids) == 4


def test_dense_refuses_past_the_trained_context(tiny: Path) -> None:
    llm = LLM(tiny, block_size=4)
    with pytest.raises(ParameterError, match="context length"):
        llm.generate([ids_of(TRAINED + 5)], SamplingParams(max_tokens=1))


@pytest.mark.parametrize("sinks", [0, 4])
def test_query_key_distance_never_exceeds_the_window(tiny: Path, sinks: int) -> None:
    """Rotations are relative: scoring 3x the trained length equals scoring the same window alone."""
    ids = ids_of(3 * TRAINED, seed=11)
    engine = make_engine(tiny, attention="sink-window", window=24, sinks=sinks)
    ours, _ = engine_nll(engine, ids, new_tokens=1)
    assert ours == pytest.approx(streaming_reference(engine.model, ids, WindowPolicy(24, sinks)), rel=1e-4)


# -- Mistral's own sliding window ------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_mistral_sliding_window_matches_transformers(tmp_path: Path, chunk: int) -> None:
    path = make_tiny_checkpoint(tmp_path, "mistral", sliding_window=8, hidden_size=128)
    ids = ids_of(48, seed=12)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        lp = hf(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
    expected = -lp.gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
    engine = make_engine(path, max_num_batched_tokens=chunk)
    assert engine.runner.window == WindowPolicy(8)
    assert engine_nll(engine, ids, new_tokens=1)[0] == pytest.approx(expected, rel=1e-4)


# -- bad settings ----------------------------------------------------------------------------------------------


def test_pool_too_small_for_the_window_is_refused(tiny: Path) -> None:
    with pytest.raises(ValueError, match="needs"):
        make_engine(tiny, attention="sink-window", window=64, sinks=4, num_blocks=8)


def test_unknown_attention_is_refused(tiny: Path) -> None:
    with pytest.raises(ValueError, match="sink-window"):
        make_engine(tiny, attention="ring")


def test_unknown_cache_dtype_is_refused(tiny: Path) -> None:
    with pytest.raises(ValueError, match="int8"):
        make_engine(tiny, kv_cache_dtype="fp8")


def test_a_sliding_sequence_reuses_the_blocks_it_lets_go(tiny: Path) -> None:
    """Past the window a sequence takes back the blocks it released, so it touches a bounded part of the pool
    (its resident memory stays flat) instead of walking through every page of it."""
    engine = make_engine(tiny, attention="sink-window", window=16, sinks=4, num_blocks=256)
    seq_blocks: set[int] = set()
    params = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    engine.add_request(ids_of(400, seed=13), params)
    while engine.has_unfinished_requests():
        seq_blocks.update(engine.scheduler.running[0].block_table if engine.scheduler.running else [])
        engine.step()
    assert len(seq_blocks) <= 2 * (1 + (16 + 16) // 4 + 1)
