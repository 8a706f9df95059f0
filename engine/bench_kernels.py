"""Kernel micro-benchmark: every linear layer of a model's decode step, in each CPU kernel torch offers.

    python -m engine.bench_kernels --model models/smollm2-135m-instruct --rows 1 8 --threads 1 2
    python -m engine.bench_kernels --model models/smollm2-135m-instruct --profile-decode --quant int8

For each (rows, threads): the time to run all linear layers of one step (each layer's own shape, random
weights of the model's sizes) with fp32 weights in oneDNN's blocked layout, as `x @ W^T` on a contiguous
W^T, and through `F.linear`; int8 weight-only (`_weight_int8pack_mm`, bf16 activations); int4 weight-only
(`_weight_int4pack_mm_for_cpu`, group 64); and a `sum` over as many fp32 bytes as the fp32 weights, the
memory-bandwidth reference. The kernel choices in engine/models/linear.py and engine/quant/linear.py quote it.
`--profile-decode` instead prints torch.profiler's per-op table of real decode steps of the engine (batch 1,
after a --prompt-len prompt): where a step's time goes besides the matmuls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from engine import LLM, SamplingParams
from engine.config import ModelConfig
from engine.models.linear import PACK_BATCH_HINT
from engine.report_json import emit_json
from engine.stats import cpu_name


def layer_shapes(cfg: ModelConfig) -> list[tuple[int, int]]:
    """(in, out) of every linear layer one decode step runs, lm_head included."""
    heads = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * cfg.head_dim
    per_layer = [
        (cfg.hidden_size, heads),
        (cfg.num_attention_heads * cfg.head_dim, cfg.hidden_size),
        (cfg.hidden_size, 2 * cfg.intermediate_size),
        (cfg.intermediate_size, cfg.hidden_size),
    ]
    return per_layer * cfg.num_hidden_layers + [(cfg.hidden_size, cfg.vocab_size)]


def _kernels(shapes: list[tuple[int, int]], rows: int) -> dict[str, Callable[[], object]]:
    weights = [torch.randn(n, k) for k, n in shapes]
    xs = {k: torch.randn(rows, k) for k, _ in shapes}
    packed = [torch.ops.mkldnn._reorder_linear_weight(w, PACK_BATCH_HINT) for w in weights]  # as CpuLinear
    transposed = [w.t().contiguous() for w in weights]
    int8 = [(torch.randint(-127, 128, w.shape, dtype=torch.int8), torch.rand(w.shape[0]).bfloat16()) for w in weights]
    int4 = [
        (
            torch.ops.aten._convert_weight_to_int4pack_for_cpu(torch.randint(0, 16, w.shape, dtype=torch.int32), 1),
            torch.rand(w.shape[1] // 64, w.shape[0], 2).bfloat16(),
        )
        for w in weights
    ]
    xb = {k: x.bfloat16() for k, x in xs.items()}
    reference = torch.randn(sum(w.numel() for w in weights))
    return {
        "fp32_onednn_blocked": lambda: [
            torch.ops.mkldnn._linear_pointwise(xs[w.shape[1]], p, None, "none", [], "")
            for w, p in zip(weights, packed, strict=True)
        ],
        "fp32_x_at_wt": lambda: [xs[wt.shape[0]] @ wt for wt in transposed],
        "fp32_f_linear": lambda: [F.linear(xs[w.shape[1]], w) for w in weights],
        "int8_weight_int8pack_mm": lambda: [torch._weight_int8pack_mm(xb[q.shape[1]], q, s) for q, s in int8],
        "int4_weight_int4pack_mm": lambda: [
            torch.ops.aten._weight_int4pack_mm_for_cpu(xb[w.shape[1]], q, 64, s)
            for w, (q, s) in zip(weights, int4, strict=True)
        ],
        "bandwidth_sum_fp32_bytes": reference.sum,
    }


def measure(shapes: list[tuple[int, int]], rows: int, repeats: int) -> dict[str, dict[str, Any]]:
    """Median (and raw) milliseconds per kernel for one step's layers, kernels interleaved per repeat."""
    kernels = _kernels(shapes, rows)
    times: dict[str, list[float]] = {name: [] for name in kernels}
    for _ in range(repeats + 1):  # the first round warms up
        for name, run in kernels.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: {"ms": statistics.median(t[1:]), "runs_ms": t[1:]} for name, t in times.items()}


def profile_decode(model: Path, quant: str, prompt_len: int, steps: int = 20) -> str:
    """torch.profiler's table (self CPU time) over `steps` batch-1 decode steps after a `prompt_len` prompt."""
    engine = LLM(model, quant=quant).engine
    engine.add_request(list(range(100, 100 + prompt_len)), SamplingParams(max_tokens=4 * steps, ignore_eos=True))
    for _ in range(steps):  # the prefill, then warm decode steps
        engine.step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            engine.step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
    return f"{steps} decode steps, quant {quant}, context {prompt_len}+, {torch.get_num_threads()} thread(s)\n{table}"


def main(argv: list[str] | None = None) -> int:
    """Measure every (rows, threads) and print (or write) the JSON; or profile real decode steps."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="checkpoint directory (only config.json is read)")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 8], help="activation rows (the decode batch)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts")
    p.add_argument("--repeats", type=int, default=5, help="measured rounds (median reported)")
    p.add_argument("--out", type=Path, help="write the JSON here too")
    p.add_argument("--profile-decode", action="store_true", help="profile the engine's decode step instead")
    p.add_argument("--quant", default="none", help="with --profile-decode: the quantization to load with")
    p.add_argument("--prompt-len", type=int, default=512, help="with --profile-decode: context before decoding")
    args = p.parse_args(argv)
    if not (args.model / "config.json").is_file():
        p.error(f"--model {args.model}: no config.json")
    if args.profile_decode:
        torch.set_num_threads(args.threads[0])
        print(profile_decode(args.model, args.quant, args.prompt_len))
        return 0
    shapes = layer_shapes(ModelConfig.from_file(args.model / "config.json"))
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for rows in args.rows:
            results.append({"rows": rows, "threads": threads, "kernels": measure(shapes, rows, args.repeats)})
    report = {"model": str(args.model), "cpu": cpu_name(), "torch": torch.__version__, "results": results}
    emit_json(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
