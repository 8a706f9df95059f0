"""Serve models over the OpenAI API.

    python -m engine.server --model models/smollm2-135m-instruct [--model PATH2] --host 127.0.0.1 --port 8000

    python -m engine.server --model models/smollm2-135m-instruct --lora card=runs/card/adapter \\
        --fine-tuning-dir runs/fine_tuning

    python -m engine.server --model models/smollm2-135m-instruct --kv-cache-dtype int8 \\
        --attention sink-window --window 4096 --max-model-len 32768

    python -m engine.server --model models/smollm2-135m-instruct --tensor-parallel-size 3   # ranks 1-2 spawned
    torchrun --nnodes 3 --nproc-per-node 1 --node-rank 0 --master-addr HOST --master-port 29500 \\
        -m engine.server --model models/smollm2-135m-instruct --tensor-parallel-size 3   # rank 0 of 3 nodes

Each model is served under its directory name, each adapter under its NAME (`/v1/models` gives its parent).
/health answers 503 until the models are loaded; with --memory-budget-mb only the first loads at start and the
others on demand (least recently used unloaded). --fine-tuning-dir turns on OpenAI's files and fine-tuning API.
--attention sink-window serves prompts longer than the trained context in bounded KV memory: each token sees the
first --sinks tokens and the last --window (StreamingLLM), so what lies between is forgotten, not retrieved.
"""

from __future__ import annotations

import argparse
import faulthandler
import signal
import sys

import torch
import uvicorn

from engine.engine import EngineConfig
from engine.finetune.model import METHODS
from engine.kv_cache import KV_CACHE_DTYPES
from engine.quant import DEFAULT_CALIBRATION, available_strategies
from engine.server.app import ServerConfig, build_app
from engine.server.guards import add_arguments, warn_if_exposed
from engine.server.state import DEFAULT_MAX_LORAS


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: build the app and run it under uvicorn."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="checkpoint directory (repeat for several)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-waiting", type=int, default=64, help="queued requests beyond which clients get 429")
    p.add_argument("--max-num-seqs", type=int, default=64, help="sequences decoded together")
    p.add_argument("--kv-cache-mb", type=int, default=512, help="KV-cache pool per model, MiB")
    p.add_argument("--kv-cache-dtype", choices=KV_CACHE_DTYPES, default="auto",
                   help="auto (the model's dtype), bf16/fp16, or int8/int4 quantized per token")  # fmt: skip
    p.add_argument("--attention", choices=["dense", "sink-window"], default="dense",
                   help="dense: every cached token; sink-window: the first --sinks and the last --window")  # fmt: skip
    p.add_argument("--window", type=int, default=4096, help="sink-window: recent tokens each token attends to")
    p.add_argument("--sinks", type=int, default=4, help="sink-window: first tokens every token attends to")
    p.add_argument("--max-model-len", type=int,
                   help="longest prompt + completion (default: trained context; 32768 with sink-window)")  # fmt: skip
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument(
        "--memory-budget-mb",
        type=float,
        help="load models on demand within this budget, unloading the least recently used",
    )
    p.add_argument(
        "--quant",
        default="none",
        help="quantize fp32 checkpoints on load (int8, int4, gptq, awq, bitnet); or serve a checkpoint saved by "
        "`python -m engine.quant quantize`",
    )
    p.add_argument("--calibration-text", default=DEFAULT_CALIBRATION, help="text GPTQ and AWQ calibrate on")
    p.add_argument("--lora", action="append", default=[], metavar="NAME=PATH",
                   help="serve a peft LoRA adapter on the first --model as model NAME (repeatable)")  # fmt: skip
    p.add_argument("--max-loras", type=int, default=DEFAULT_MAX_LORAS,
                   help="distinct adapters in one batch; more wait, the least recently used is evicted")  # fmt: skip
    p.add_argument("--max-lora-rank", type=int, default=16, help="the largest adapter rank served")
    p.add_argument("--fine-tuning-dir", help="turn the files and fine-tuning API on, keeping uploads and jobs here")
    p.add_argument("--fine-tuning-method", choices=METHODS, default="lora",
                   help="what API jobs train: lora (fp32 base) or qlora (frozen 4-bit base)")  # fmt: skip
    p.add_argument("--tensor-parallel-size", type=int, default=1,
                   help="split the model over this many ranks (torch.distributed; spawned or torchrun)")  # fmt: skip
    p.add_argument("--log-level", default="info")
    add_arguments(p)
    args = p.parse_args(argv)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: every thread's stack to stderr
    if args.quant not in available_strategies():
        p.error(f"--quant {args.quant}: unknown; available: {', '.join(available_strategies())}")
    if args.threads:
        torch.set_num_threads(args.threads)
    loras = dict(spec.split("=", 1) for spec in args.lora if "=" in spec)
    if len(loras) != len(args.lora):
        p.error("--lora takes NAME=PATH")
    lora_on = bool(loras or args.fine_tuning_dir)
    engine = EngineConfig(
        kv_cache_bytes=args.kv_cache_mb * 2**20,
        max_num_seqs=args.max_num_seqs,
        quant=args.quant,
        calibration_text=args.calibration_text,
        max_loras=args.max_loras if lora_on else 0,
        max_lora_rank=args.max_lora_rank,
        kv_cache_dtype=args.kv_cache_dtype,
        attention=args.attention,
        window=args.window,
        sinks=args.sinks,
        max_model_len=args.max_model_len,
        tensor_parallel_size=args.tensor_parallel_size,
    )
    if args.tensor_parallel_size > 1 and (len(args.model) > 1 or args.memory_budget_mb or args.fine_tuning_dir):
        p.error("--tensor-parallel-size serves one --model, without --memory-budget-mb or --fine-tuning-dir")
    warn_if_exposed(args.host, args.api_key)
    max_body = int(args.max_body_mb * 2**20)
    config = ServerConfig(
        args.model, engine, args.max_waiting, args.memory_budget_mb, args.api_key, max_body,
        loras, args.fine_tuning_dir, args.fine_tuning_method,
    )  # fmt: skip
    app = build_app(config)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
