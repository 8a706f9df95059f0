"""Logits parity with HF transformers through the engine's paged KV cache: the evidence behind "supported".

One check runs transformers' `generate(output_logits=True)` greedily for `steps` new tokens, then the engine on
the same prompt three times: alone (prefill in chunks), again (a prefix-cache hit), and twice at once in a pool
too small for both (one is preempted and recomputed). Every step's logits must match and every continuation must
equal transformers' token for token.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from engine.engine import EngineConfig, LLMEngine
from engine.sampling import SamplingParams

TOLERANCE = 1e-3  # max |logit difference|: fp32 kernels differ in summation order, not in what they compute


@dataclass
class ParityResult:
    """What one checkpoint's parity run measured."""

    model: str
    architecture: str
    steps: int
    max_abs_diff: float
    greedy_equal: bool
    prefix_hit_tokens: int
    preemptions: int
    engine_s: float  # the three engine passes, load included
    passed: bool
    error: str | None = None

    def row(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def reference(path: Path, prompt: list[int], steps: int, eos: int | None) -> tuple[list[int], torch.Tensor]:
    """transformers' greedy continuation and its raw logits at each step ([steps, vocab])."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([prompt]), do_sample=False, max_new_tokens=steps, min_new_tokens=steps,
            output_logits=True, return_dict_in_generate=True, pad_token_id=eos if eos is not None else 0,
        )  # fmt: skip
    return out.sequences[0, len(prompt) :].tolist(), torch.cat(out.logits).float()


def _engine_runs(
    path: Path, prompt: list[int], steps: int, eos: int | None, window: int | None
) -> tuple[LLMEngine, dict[str, list]]:
    """Greedy runs through the paged cache; every sampled row's logits by request id. The pool holds one and a
    half sequences (a windowed one: its window's worth), so the concurrent pair must preempt."""
    block, chunk = 8, 16
    whole = -(-(len(prompt) + steps) // block) * 3 // 2
    windowed = -(-((window or 0) + chunk) // block) + 1  # the fewest a windowed sequence runs in (plan_cache)
    blocks = whole if window is None else windowed
    config = EngineConfig(block_size=block, num_blocks=blocks, max_num_batched_tokens=chunk, max_num_seqs=4, seed=0)
    engine = LLMEngine(path, config)
    logits: dict[str, list] = {}
    run = engine.runner.run

    def recording(batch: Any) -> torch.Tensor:
        out = run(batch)
        for seq, row in zip(batch.sampling, out, strict=True):
            logits.setdefault(seq.request_id, []).append(row.float().clone())
        return out

    engine.runner.run = recording
    bias = {} if eos is None else {eos: -100.0}  # transformers' min_new_tokens keeps EOS out the same way
    params = SamplingParams(temperature=0.0, max_tokens=steps, ignore_eos=True, logit_bias=bias)
    for wave in (["alone"], ["prefix-hit"], ["preempted-a", "preempted-b"]):
        for rid in wave:
            engine.add_request(list(prompt), params, request_id=rid)
        while engine.has_unfinished_requests():
            engine.step()
    return engine, logits


def check_parity(path: str | Path, steps: int = 64, prompt_len: int = 24, seed: int = 0) -> ParityResult:
    """Run the three engine passes against transformers on one checkpoint directory."""
    path = Path(path)
    start = time.perf_counter()
    try:
        from engine.config import ModelConfig

        cfg = ModelConfig.from_file(path / "config.json")
        eos = cfg.eos_token_ids[0] if cfg.eos_token_ids else None
        generator = torch.Generator().manual_seed(seed)
        prompt = torch.randint(3, cfg.vocab_size, (prompt_len,), generator=generator).tolist()
        engine, logits = _engine_runs(path, prompt, steps, eos, cfg.sliding_window)  # ours first: clearer errors
        engine_s = time.perf_counter() - start
        ref_tokens, ref_logits = reference(path, prompt, steps, eos)
    except Exception as exc:  # any failure is a failed check, reported with its reason
        return ParityResult(str(path), "?", steps, float("inf"), False, 0, 0, time.perf_counter() - start, False,
                            f"{type(exc).__name__}: {exc}")  # fmt: skip
    diffs, equal = [], True
    for rid, rows in logits.items():
        ours = torch.stack(rows)
        diffs.append((ours - ref_logits[: len(ours)]).abs().max().item() if len(ours) == steps else float("inf"))
        out = engine.pop_output(rid).outputs[0].token_ids
        equal &= out == ref_tokens
    bm, sched = engine.block_manager, engine.scheduler
    worst = max(diffs)
    passed = worst <= TOLERANCE and equal and bm.prefix_hit_tokens > 0 and sched.num_preemptions > 0
    return ParityResult(str(path), cfg.architecture, steps, worst, equal, bm.prefix_hit_tokens,
                        sched.num_preemptions, engine_s, passed)  # fmt: skip
