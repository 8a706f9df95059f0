"""Offline throughput benchmark: Tollgate's engine side by side with its peers, in one invocation.

    python -m engine.bench --model models/smollm2-135m-instruct --batch 1 8 --threads 1 2 \\
        --quant none int8 int4 --vs llamacpp hf --out reports/bench_engine.json
    python -m engine.bench --model models/smollm2-135m-instruct --batch 1 --quant none int8 int4 gptq awq bitnet

Peers: `hf` is HF transformers `generate` (fp32); `llamacpp` is llama.cpp's `llama-bench` /
`llama-batched-bench` on a GGUF of the same checkpoint in the closest format to each --quant (see
engine/llamacpp_peer.py; tools via --llamacpp-bin or LLAMACPP_BIN, built by ../shared/peers/build_llamacpp.sh).
Each (system, quantization, batch, threads) runs in its own process so peak RSS is its own; quantization
happens in that process before the warm-up (GPTQ and AWQ calibrate on --calibration-text). Prompts are random
token ids, distinct per sequence and per repetition (no prefix-cache help). One warm-up run, then --repeats
measured runs; the JSON rows hold the medians and the raw values.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch._dynamo.utils import counters as compile_counters
from transformers import AutoModelForCausalLM

from engine import LLM, SamplingParams, llamacpp_peer, tensor_parallel
from engine.cluster.bench import cluster_error, cluster_main
from engine.progress import progress
from engine.quant import available_strategies
from engine.quant.calibration import DEFAULT_CALIBRATION
from engine.report_json import emit_json
from engine.stats import cpu_name, percentiles, proc_status_mb


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM), the DESIGN.md memory metric."""
    return proc_status_mb("VmHWM")


def make_prompts(vocab: int, batch: int, length: int, seed: int) -> list[list[int]]:
    """Random token prompts, distinct per sequence and seed, so prefix caching cannot help."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, vocab - 100, (batch, length), generator=g).tolist()


def _run_tollgate(args: argparse.Namespace, batch: int, quant: str, threads: int) -> dict[str, Any]:
    llm = LLM(
        args.model,
        enforce_eager=not getattr(args, "compile", False),
        quant=quant,
        quant_options=getattr(args, "quant_options", {}),
        calibration_text=getattr(args, "calibration_text", None),
        calibration_tokens=getattr(args, "calibration_tokens", 4096),
        tensor_parallel_size=getattr(args, "tensor_parallel_size", 1),
    )
    eng = llm.engine
    per_block = eng.kv_cache_bytes // eng.block_manager.num_blocks

    def once(seed: int, new_tokens: int) -> dict[str, float]:
        params = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
        prompts = make_prompts(eng.model.config.vocab_size, batch, args.prompt_len, seed)
        start = time.perf_counter()
        ids = [eng.add_request(p, params) for p in prompts]
        first: dict[str, float] = {}
        step_times: list[float] = []
        used = 0
        while eng.has_unfinished_requests():
            deltas = eng.step()
            now = time.perf_counter()
            for delta in deltas:
                first.setdefault(delta.request_id, now)
            if deltas:
                step_times.append(now)
            used = max(used, eng.block_manager.num_blocks - eng.block_manager.num_free_blocks)
        end = time.perf_counter()
        for i in ids:
            eng.pop_output(i)
        prefill_end = max(first.values())
        return {
            "ttft_ms": statistics.median(t - start for t in first.values()) * 1000,
            "prefill_tok_s": batch * args.prompt_len / (prefill_end - start),
            "decode_tok_s": batch * (new_tokens - 1) / (end - prefill_end),
            "kv_cache_bytes": used * per_block,
            "itl_samples": [(b - a) * 1000 for a, b in itertools.pairwise(step_times) if a >= prefill_end],
        }

    row = _measure(args, once)
    row["compiled"] = not eng.config.enforce_eager
    if eng.config.tensor_parallel_size > 1:  # rank 0's time in all-reduce and gather, per step, all runs
        row["tensor_parallel_size"] = eng.config.tensor_parallel_size
        row["comm_ms_per_step"] = tensor_parallel.COMM.seconds * 1000 / eng.stats.steps
    if eng.quant_report is not None:
        row["quantization"] = eng.quant_report.summary()
    return row


def _run_hf(args: argparse.Namespace, batch: int, quant: str, threads: int) -> dict[str, Any]:
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    cfg = model.config

    def generate(ids: torch.Tensor, new_tokens: int) -> Any:
        with torch.inference_mode():
            return model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=cfg.eos_token_id,
                return_dict_in_generate=True,
            )

    def once(seed: int, new_tokens: int) -> dict[str, float]:
        ids = torch.tensor(make_prompts(cfg.vocab_size, batch, args.prompt_len, seed))
        start = time.perf_counter()
        generate(ids, 1)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        out = generate(ids, new_tokens)
        total = time.perf_counter() - start
        kv = getattr(out, "cache", None) or out.past_key_values
        layers = kv.layers if hasattr(kv, "layers") else []
        return {
            "ttft_ms": prefill * 1000,
            "prefill_tok_s": batch * args.prompt_len / prefill,
            "decode_tok_s": batch * (new_tokens - 1) / (total - prefill),
            "kv_cache_bytes": sum(t.nbytes for layer in layers for t in (layer.keys, layer.values)),
        }

    return _measure(args, once)


def _measure(args: argparse.Namespace, once: Any) -> dict[str, Any]:
    for w in range(args.warmup):
        once(10_000 + w, min(8, args.new_tokens))
    graphs = compile_counters["stats"]["unique_graphs"]
    runs = [once(r, args.new_tokens) for r in range(args.repeats)]
    itl = [x for r in runs for x in r.pop("itl_samples", [])]
    row: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    if itl:
        row["itl_ms"] = percentiles(itl)
    row["kv_cache_bytes"] = int(row["kv_cache_bytes"])
    row["runs"] = runs
    row["peak_rss_mb"] = peak_rss_mb()
    row["graph_compiles_in_runs"] = compile_counters["stats"]["unique_graphs"] - graphs  # 0 in steady state
    return row


RUNNERS = {"tollgate": _run_tollgate, "hf": _run_hf, "llamacpp": llamacpp_peer.run_llamacpp}


def _child(system: str, args: argparse.Namespace, batch: int, quant: str, threads: int, queue: Any) -> None:
    torch.set_num_threads(threads)
    head = {"system": system, "quant": quant, "batch": batch, "threads": threads}
    try:
        queue.put({**head, **RUNNERS[system](args, batch, quant, threads)})
    except Exception as exc:  # report the failure to the parent instead of dying silently
        queue.put({**head, "error": f"{type(exc).__name__}: {exc}"})


def run_one(
    system: str, args: argparse.Namespace, batch: int, quant: str = "none", threads: int | None = None
) -> dict[str, Any]:
    """Run one (system, quantization, batch) measurement in a fresh process, on `threads` (default args')."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    threads = args.threads if threads is None else threads
    proc = ctx.Process(target=_child, args=(system, args, batch, quant, threads, queue))
    proc.start()
    row = queue.get()
    proc.join()
    return row


def summarize(results: list[dict[str, Any]]) -> dict[str, float]:
    """Decode ratios a reader wants first, per batch and thread count: ours vs each peer in the same format,
    each quantization vs fp32, batch-N vs batch-1, and 2 threads vs 1."""
    by = {(r["system"], r["quant"], r["batch"], r["threads"]): r.get("decode_tok_s") for r in results}
    summary = {}
    for (system, quant, batch, threads), tok_s in by.items():
        if not tok_s:
            continue
        at = f"batch{batch}_t{threads}"
        if system == "tollgate":
            for peer in ("hf", "llamacpp"):
                if peer_tok_s := by.get((peer, quant, batch, threads)):
                    summary[f"{quant}_vs_{peer}_{at}"] = tok_s / peer_tok_s
            if quant != "none" and (fp32 := by.get((system, "none", batch, threads))):
                summary[f"{quant}_vs_fp32_{at}"] = tok_s / fp32
        name = f"{system}_{quant}"
        if batch != 1 and (one := by.get((system, quant, 1, threads))):
            summary[f"{name}_{at}_vs_batch1"] = tok_s / one
        if threads != 1 and (single := by.get((system, quant, batch, 1))):
            summary[f"{name}_{at}_vs_t1"] = tok_s / single
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options, with the errors a user can fix before any model is loaded."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="engine checkpoint directory (HF layout)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes to measure")
    p.add_argument("--new-tokens", type=int, default=128, help="tokens generated per sequence")
    p.add_argument("--prompt-len", type=int, default=512, help="prompt tokens per sequence")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="thread counts, each for every system")
    p.add_argument(
        "--vs",
        choices=["hf", "llamacpp"],
        nargs="+",
        action="extend",
        default=[],
        help="peers to run too: hf (transformers, fp32 only), llamacpp (each --quant it has a format for)",
    )
    p.add_argument("--llamacpp-bin", help="directory of llama.cpp's llama-bench etc. (default: $LLAMACPP_BIN)")
    p.add_argument(
        "--quant", nargs="+", default=["none"], help="quantization strategies to measure, each in its own row"
    )
    p.add_argument(
        "--calibration-text", default=DEFAULT_CALIBRATION, help="text GPTQ and AWQ calibrate on (wikitext-2 valid)"
    )
    p.add_argument("--calibration-tokens", type=int, default=4096, help="calibration token budget")
    p.add_argument(
        "--compile", action="store_true", help="Tollgate rows: torch.compile the model forward (warm-up compiles)"
    )
    p.add_argument(
        "--cluster",
        nargs="+",
        metavar="SCENARIO",
        help="serve through engine.router on each cluster scenario's nodes instead (conf/cluster names or YAML "
        "paths, e.g. single dp2): --batch is the concurrency, --threads the threads per node, fp32 only",
    )
    p.add_argument("--tensor-parallel-size", type=int, default=1,
                   help="Tollgate rows: split the model over this many ranks (engine.tensor_parallel)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=3, help="measured runs per row (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured runs first")
    p.add_argument("--out", type=Path, help="write the JSON here (it is printed too)")
    args = p.parse_args(argv)
    if min(args.batch) < 1 or args.new_tokens < 2 or args.prompt_len < 1 or args.repeats < 1 or min(args.threads) < 1:
        p.error("--batch, --threads, --prompt-len and --repeats must be >= 1 and --new-tokens >= 2")

    unknown = [q for q in args.quant if q not in available_strategies()]
    if unknown:
        p.error(f"--quant {' '.join(unknown)}: unknown; available: {', '.join(available_strategies())}")
    if args.cluster and (why := cluster_error(args)):
        p.error(why)
    if not Path(args.model).is_dir():
        p.error(f"--model {args.model}: not a checkpoint directory (run `make setup` for the default model)")
    return args


def _peer_quants(args: argparse.Namespace, missing: dict[str, str]) -> dict[str, list[str]]:
    """Which quantizations each requested peer runs; a peer that cannot run is recorded in `missing`."""
    quants = {"hf": ["none"]}
    if "llamacpp" in args.vs:
        wanted = [q for q in args.quant if q in llamacpp_peer.GGUF_TYPES]
        for q in set(args.quant) - set(wanted):
            missing[f"llamacpp --quant {q}"] = f"no GGUF counterpart (compared: {', '.join(llamacpp_peer.GGUF_TYPES)})"
        try:
            args.llamacpp_ggufs = llamacpp_peer.prepare(args, wanted)
            quants["llamacpp"] = wanted
        except (llamacpp_peer.PeerMissing, RuntimeError) as exc:
            missing["llamacpp"] = str(exc)
    return {peer: quants[peer] for peer in args.vs if peer in quants}


def main(argv: list[str] | None = None) -> int:
    """Run every (system, quantization, batch, threads) measurement and write the JSON report; exit 1 on errors."""
    args = parse_args(argv)
    if args.cluster:
        return cluster_main(args)
    missing: dict[str, str] = {}
    systems = [("tollgate", args.quant), *_peer_quants(args, missing).items()]
    for peer, why in missing.items():
        print(f"{peer}: peer rows skipped: {why}", file=sys.stderr)
    jobs = [(s, q, b, t) for t in args.threads for b in args.batch for s, quants in systems for q in quants]
    results = [run_one(s, args, b, q, t) for s, q, b, t in progress(jobs, desc="bench", unit="run")]
    report = {
        "model": str(args.model),
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "peers_missing": missing,
        "results": results,
        "summary": summarize(results),
    }
    emit_json(report, args.out)
    errors = [r for r in results if "error" in r]
    for r in errors:
        print(f"error in {r['system']} ({r['quant']}) batch {r['batch']}: {r['error']}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
