"""Where a model runs: whole in this process, or split over tensor-parallel ranks (engine.tensor_parallel).

`place` loads the checkpoint the way the engine config asks, sizes the KV pool and builds the runner the engine
loop drives; the loop does not know which of the two it got.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import tensor_parallel
from engine.loader import load
from engine.model_runner import CachePlan, ModelRunner, fit_cache
from engine.models import DecoderForCausalLM
from engine.quant import QuantReport


@dataclass
class Placement:
    """A loaded model with its tokenizer, quantization report, KV-pool plan and runner."""

    model: DecoderForCausalLM
    tokenizer: Any
    quant_report: QuantReport | None
    plan: CachePlan
    runner: ModelRunner


def place(path: str | Path, cfg: Any) -> Placement:
    """Load `path` as the EngineConfig `cfg` says (quantized on load, or split over ranks) and build its runner."""
    if cfg.tensor_parallel_size > 1:
        model, tokenizer = tensor_parallel.start(path, cfg)
        report, runner = None, tensor_parallel.TensorParallelRunner
    else:
        model, tokenizer, report = load(
            path, cfg.quant, cfg.quant_options, cfg.calibration_text, cfg.calibration_tokens, cfg.dtype, cfg.device
        )
        runner = ModelRunner
    plan = fit_cache(model, cfg)
    slots = cfg.max_loras or (1 if cfg.lora_modules else 0)
    built = runner(
        model, plan.num_blocks, cfg.block_size, not cfg.enforce_eager, slots, cfg.max_lora_rank,
        cfg.kv_cache_dtype, plan.window,
    )  # fmt: skip
    return Placement(model, tokenizer, report, plan, built)
