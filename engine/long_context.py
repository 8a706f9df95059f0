"""Long-context evaluation through the engine's own paged cache and attention policy: perplexity of one long
sequence, pass-key retrieval at several depths, the KV bytes the pool actually held, peak RSS and decode speed.

Every sequence runs through `LLMEngine.step` (chunked prefill, block freeing, the cache dtype), so what is measured
is what the server does. Perplexity covers every predicted token of the first `context` tokens of the text, scored
as one sequence. The 4K baseline (`baseline_perplexity`) scores the same tokens in independent dense windows, so
`quality_pct = 100 x baseline / perplexity` compares the same tokens with different context, nothing else.
KV bytes are the pool's bytes per block (its tensors' sizes, scales included) times the most blocks that were held
at once; peak RSS is the process's high-water mark after the engine's runs (before the baseline, which is not
served), so each configuration belongs in its own process.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any

import torch

from engine.attention import AttentionMetadata
from engine.bench import peak_rss_mb
from engine.engine import EngineConfig, LLMEngine
from engine.progress import progress
from engine.sampling import SamplingParams

NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "\nWhat is the pass key? The pass key is"
DEPTHS = (0.1, 0.5, 0.9)
PASSKEY_ANSWER_TOKENS = 8  # tokens decoded after a pass-key prompt: the 5-digit key fits with room
LOGIT_ROWS = 512  # rows projected onto the vocabulary at once (a 2048-token chunk would need 400 MB of logits)


@dataclass
class SequenceRun:
    """What one sequence through the engine measured."""

    nll: float
    predicted: int
    generated: list[int]
    decode_tok_s: float | None


def engine_for(path: str, options: dict[str, Any], context: int, new_tokens: int) -> LLMEngine:
    """An engine whose pool holds one `context`-token sequence and its new tokens (dense) or its window."""
    cfg = EngineConfig(**options, enable_prefix_caching=False, max_num_seqs=1)
    if cfg.attention == "dense":
        cfg.num_blocks = -(-(context + new_tokens) // cfg.block_size) + 1
    cfg.max_model_len = max(cfg.max_model_len or 0, context + new_tokens + 1)
    return LLMEngine(path, cfg)


def _next_token_nll(model: Any, hidden: torch.Tensor, targets: list[int]) -> float:
    nll = 0.0
    for i in range(0, len(targets), LOGIT_ROWS):
        logits = model.compute_logits(hidden[i : i + LOGIT_ROWS]).float()
        rows = torch.tensor(targets[i : i + LOGIT_ROWS])
        nll -= logits.log_softmax(-1).gather(1, rows[:, None]).sum().item()
    return nll


@torch.inference_mode()
def run_sequence(engine: LLMEngine, ids: list[int], new_tokens: int, score: bool, desc: str = "") -> SequenceRun:
    """Prefill `ids` (scoring each next token if asked), then greedily decode `new_tokens`, timing the decode."""
    params = SamplingParams(temperature=0.0, max_tokens=max(1, new_tokens), ignore_eos=True)
    request_id = engine.add_request(ids, params)
    seq = engine.requests[request_id].seqs[0]
    nll, decode_s, decoded = 0.0, 0.0, 0
    with progress(total=len(ids), desc=desc or "long context", unit="tok", leave=False) as bar:
        while engine.has_unfinished_requests():
            start, began = seq.num_computed_tokens, time.perf_counter()
            engine.step()
            if start >= len(ids):  # a decode step
                decode_s, decoded = decode_s + time.perf_counter() - began, decoded + 1
                continue
            end = min(seq.num_computed_tokens, len(ids) - 1)  # the last prompt token predicts no prompt token
            if score and end > start:
                nll += _next_token_nll(engine.model, engine.runner.last_hidden, ids[start + 1 : end + 1])
            bar.update(seq.num_computed_tokens - start)
    output = engine.pop_output(request_id).outputs[0]
    tok_s = decoded / decode_s if decoded and decode_s > 0 else None
    return SequenceRun(nll, len(ids) - 1 if score else 0, list(output.token_ids), tok_s)


def passkey_prompt(tokenizer: Any, haystack: list[int], length: int, depth: float, key: str) -> list[int]:
    """`length` tokens of text with the pass key stated at `depth` (0 = start, 1 = end) and the question last."""
    needle = tokenizer.encode(NEEDLE.format(key=key), add_special_tokens=False)
    question = tokenizer.encode(QUESTION, add_special_tokens=False)
    filler = length - len(needle) - len(question)
    if filler < 1 or filler > len(haystack):
        raise ValueError(f"a {length}-token pass-key prompt needs 1..{len(haystack)} filler tokens, got {filler}")
    at = round(depth * filler)
    return haystack[:at] + needle + haystack[at:filler] + question


def passkey_trials(
    engine: LLMEngine, haystack: list[int], length: int, depths: tuple[float, ...], seed: int = 0
) -> dict[str, Any]:
    """Retrieval accuracy per depth: a random 5-digit key, found when the greedy answer contains it."""
    rng = random.Random(seed)
    found = {}
    for depth in depths:
        key = str(rng.randrange(10_000, 100_000))
        ids = passkey_prompt(engine.tokenizer, haystack, length, depth, key)
        run = run_sequence(engine, ids, new_tokens=PASSKEY_ANSWER_TOKENS, score=False, desc=f"pass key at {depth:.0%}")
        found[f"{depth:g}"] = key in engine.tokenizer.decode(run.generated)
    return {"by_depth": found, "accuracy_pct": 100 * sum(found.values()) / len(found)}


@torch.inference_mode()
def baseline_perplexity(model: Any, ids: list[int], window: int) -> float:
    """The same tokens scored in independent dense windows of `window` tokens (the 4K baseline)."""
    nll, predicted = 0.0, 0
    for start in progress(range(0, len(ids) - 1, window), desc="baseline", unit="window", leave=False):
        chunk = ids[start : start + window]
        if len(chunk) < 2:
            break
        tokens = torch.tensor(chunk, device=model.embed_tokens.weight.device)
        hidden = model(tokens, torch.arange(len(chunk), device=tokens.device), AttentionMetadata.no_cache([len(chunk)]))
        nll += _next_token_nll(model, hidden[:-1], chunk[1:])
        predicted += len(chunk) - 1
    return math.exp(nll / predicted)


def evaluate_long(
    path: str, text: str, context: int, options: dict[str, Any], depths: tuple[float, ...], decode_tokens: int,
    baseline_window: int | None,
) -> dict[str, Any]:  # fmt: skip
    """Perplexity of the first `context` tokens as one sequence, retrieval, KV bytes, peak RSS and decode tok/s."""
    engine = engine_for(path, options, context, decode_tokens)
    ids = engine.tokenizer.encode(text[: 16 * context], add_special_tokens=False)  # far more than enough chars
    if len(ids) < context:
        ids = engine.tokenizer.encode(text, add_special_tokens=False)
    if len(ids) < context:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than --context {context}")
    ids = ids[:context]
    started = time.perf_counter()
    run = run_sequence(engine, ids, decode_tokens, score=True, desc=f"{context} tokens")
    bm = engine.block_manager
    result: dict[str, Any] = {
        "context": context,
        "attention": engine.config.attention,
        "kv_cache_dtype": engine.config.kv_cache_dtype,
        "window": engine.config.window if engine.runner.window else None,
        "sinks": engine.config.sinks if engine.config.attention == "sink-window" else 0,
        "perplexity": math.exp(run.nll / run.predicted),
        "tokens": run.predicted,
        "decode_tok_s": run.decode_tok_s,
        "kv_bytes": bm.peak_used * engine.kv_cache_bytes // bm.num_blocks,
        "kv_bytes_per_token": engine.kv_cache_bytes / (bm.num_blocks * bm.block_size),
        "score_s": time.perf_counter() - started,
    }
    if depths:
        result["retrieval"] = passkey_trials(engine, ids, context, depths)  # the same text as the haystack
    result["peak_rss_mb"] = peak_rss_mb()  # the engine's runs only: the baseline below is not what is served
    if baseline_window:
        result["baseline_window"] = baseline_window
        result["baseline_perplexity"] = baseline_perplexity(engine.model, ids, baseline_window)
        result["quality_pct"] = 100 * result["baseline_perplexity"] / result["perplexity"]
    return result
