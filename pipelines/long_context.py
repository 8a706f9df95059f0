"""Stage `long_context`: the model on long inputs through the engine's own cache, one process per configuration
(`python -m engine.eval --attention ... --kv-cache-dtype ...`, so each peak RSS is its own).

- Compression: dense attention at `compression_context` tokens with the fp32 cache and each compressed dtype:
  bytes per token of the pool and the perplexity change against fp32 on the same tokens.
- Sparse attention: sink-window at each of `lengths` with each of `sparse_dtypes`; dense at `dense_lengths`
  (only lengths within the trained context: past it the engine refuses dense prompts). Each run reports
  perplexity, its quality against the dense baseline on the same tokens (`100 x baseline / perplexity`),
  pass-key retrieval per depth, the KV bytes the pool held, peak RSS and decode tok/s at that context.

`python -m pipelines long_context` writes metrics/long_context.json (namespaces `long_context`, `kv_compression`),
plots/long_context.csv, plots/long_context_{memory,quality}.png and reports/long_context.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from engine.long_context import PASSKEY_ANSWER_TOKENS
from pipelines.common import PLOTS, now_utc, save_report, stage_run_name, write_metrics
from pipelines.config import TollgateConf, load_params
from pipelines.plots import chart, write_csv

MIB = 2**20
SERVED_DTYPE = "int8"  # the cache dtype the long-context criteria are judged on (sink-window + int8)


@task
def evaluate(p: TollgateConf, context: int, attention: str, dtype: str, passkeys: bool = True) -> dict[str, Any]:
    """One configuration in its own process; its JSON result."""
    s = p.profile.long_context
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [
            sys.executable, "-m", "engine.eval", "--model", p.model.path, "--text", p.data.eval_text,
            "--context", str(context), "--attention", attention, "--kv-cache-dtype", dtype,
            "--window", str(s.window), "--sinks", str(s.sinks), "--chunk", str(s.chunk),
            "--decode-tokens", str(s.decode_tokens), "--threads", str(p.profile.threads), "--out", str(out),
            "--passkey-depths", *([str(d) for d in s.passkey_depths] if passkeys else []),
        ]  # fmt: skip
        if attention == "sink-window" or context > s.baseline_window:
            command += ["--baseline-window", str(s.baseline_window)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def check_dense_lengths(p: TollgateConf) -> None:
    """Fail before the first run, not an hour in, when a dense length leaves no room in the trained context for
    the tokens decoded after it (dense attention serves only the positions the model was trained on)."""
    s = p.profile.long_context
    trained = json.loads((Path(p.model.path) / "config.json").read_text()).get("max_position_embeddings")
    too_long = [n for n in s.dense_lengths if trained and n + max(s.decode_tokens, PASSKEY_ANSWER_TOKENS) >= trained]
    if too_long:
        raise ValueError(
            f"long_context.dense_lengths {too_long}: {p.model.name} was trained on {trained} positions and each run "
            f"decodes {max(s.decode_tokens, PASSKEY_ANSWER_TOKENS)} tokens after its context; use shorter dense "
            "lengths (sink-window runs any length)"
        )


def compression(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """kv_compression.*: each dtype's pool bytes per token and perplexity change against the fp32 cache."""
    fp32 = runs["auto"]
    out: dict[str, Any] = {"context": fp32["context"], "fp32_perplexity": fp32["perplexity"]}
    for dtype, run in runs.items():
        if dtype == "auto":
            continue
        out[dtype] = {
            "bytes_per_token": run["kv_bytes_per_token"],
            "perplexity": run["perplexity"],
            "accuracy_loss_pct": 100 * (run["perplexity"] / fp32["perplexity"] - 1),
            "memory_reduction_vs_fp32_pct": 100 * (1 - run["kv_bytes_per_token"] / fp32["kv_bytes_per_token"]),
        }
        if "bf16" in runs:
            out[dtype]["memory_reduction_vs_bf16_pct"] = 100 * (
                1 - run["kv_bytes_per_token"] / runs["bf16"]["kv_bytes_per_token"]
            )
    served = out.get(SERVED_DTYPE, {})
    if "memory_reduction_vs_bf16_pct" in served:  # the criterion: against the 16-bit cache serving usually uses
        out["memory_reduction_pct"] = served["memory_reduction_vs_bf16_pct"]
        out["accuracy_loss_pct"] = served["accuracy_loss_pct"]
    return out


def row(run: dict[str, Any]) -> dict[str, Any]:
    """One run's numbers as the metrics and the table show them."""
    out = {
        "perplexity": run["perplexity"],
        "kv_mb": run["kv_bytes"] / MIB,
        "peak_rss_mb": run["peak_rss_mb"],
        "decode_tok_s": run["decode_tok_s"],
    }
    if "quality_pct" in run:
        out |= {"quality_pct": run["quality_pct"], "baseline_perplexity": run["baseline_perplexity"]}
    if "retrieval" in run:
        out["retrieval_pct"] = run["retrieval"]["accuracy_pct"]
    return out


def long_context(sparse: list[dict[str, Any]]) -> dict[str, Any]:
    """long_context.*: the served configuration (sink-window, int8 cache) per length, and how it scales."""
    served = sorted((r for r in sparse if r["kv_cache_dtype"] == SERVED_DTYPE), key=lambda r: r["context"])
    out: dict[str, Any] = {f"ctx{r['context'] // 1024}k": row(r) for r in served if r["context"] >= 1024}
    if served:
        out["max_tokens"] = served[-1]["context"]
        out["window"], out["sinks"] = served[-1]["window"], served[-1]["sinks"]
    if len(served) > 1:
        first, last = served[0], served[-1]
        out["shortest"] = first["context"]  # the ratios below compare the longest run with this one
        out["rss_ratio"] = last["peak_rss_mb"] / first["peak_rss_mb"]
        out["kv_ratio"] = last["kv_bytes"] / first["kv_bytes"]
        if first["decode_tok_s"] and last["decode_tok_s"]:
            out["decode_ratio"] = last["decode_tok_s"] / first["decode_tok_s"]
    return out


def write_plot(runs: list[dict[str, Any]]) -> None:
    """KV MB and perplexity against context length, per policy and cache dtype (CSV for dvc, PNG for the report)."""
    label = {id(r): f"{r['attention']} {'fp32' if r['kv_cache_dtype'] == 'auto' else r['kv_cache_dtype']}"
             for r in runs}  # fmt: skip
    ordered = sorted(runs, key=lambda r: (label[id(r)], r["context"]))
    write_csv(PLOTS / "long_context.csv", ["config", "context", "kv_mb", "perplexity"],
              ([label[id(r)], r["context"], round(r["kv_bytes"] / MIB, 3), round(r["perplexity"], 4)]
               for r in ordered))  # fmt: skip
    for name, ylabel, value in (("memory", "KV cache held (MB)", lambda r: r["kv_bytes"] / MIB),
                                ("quality", "perplexity", lambda r: r["perplexity"])):  # fmt: skip
        series: dict[str, tuple[list[float], list[float]]] = {}
        for r in ordered:
            xs, ys = series.setdefault(label[id(r)], ([], []))
            xs.append(r["context"])
            ys.append(value(r))
        chart(PLOTS / f"long_context_{name}.png", series, "context (tokens)", ylabel, f"{ylabel} vs context", "o")


def write_report(p: TollgateConf, runs: list[dict[str, Any]], metrics: dict[str, Any]) -> str:
    """reports/long_context.md: length x policy x cache dtype, then the compression numbers."""
    lines = [
        f"# Long context ({p.model.name}, profile {p.profile.name})\n",
        "| context | attention | KV dtype | perplexity | quality vs dense baseline | pass-key retrieval | KV MB | "
        "peak RSS MB | decode tok/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["context"], r["attention"], r["kv_cache_dtype"])):
        q = f"{r['quality_pct']:.1f}%" if "quality_pct" in r else "-"
        key = f"{r['retrieval']['accuracy_pct']:.0f}%" if "retrieval" in r else "-"
        tok_s = f"{r['decode_tok_s']:.1f}" if r["decode_tok_s"] else "-"
        lines.append(f"| {r['context']} | {r['attention']} | {r['kv_cache_dtype']} | {r['perplexity']:.3f} | {q} | "
                     f"{key} | {r['kv_bytes'] / MIB:.1f} | {r['peak_rss_mb']:.0f} | {tok_s} |")  # fmt: skip
    lines += ["", f"KV compression: `{json.dumps(metrics['kv_compression'])}`", ""]
    return save_report("long_context.md", lines)


@flow(name="long_context", flow_run_name=stage_run_name)
def long_context_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Compression at one length, then sparse and dense attention at each configured length."""
    started = now_utc()
    p = load_params(Path(params_path))
    check_dense_lengths(p)
    s = p.profile.long_context
    dense_at = {dtype: evaluate(p, s.compression_context, "dense", dtype, passkeys=dtype == "auto")
                for dtype in ("auto", *s.compressed_dtypes)}  # fmt: skip
    dense = [dense_at["auto"], *(evaluate(p, n, "dense", "auto") for n in s.dense_lengths)]
    sparse = [evaluate(p, n, "sink-window", dtype) for n in s.lengths for dtype in s.sparse_dtypes]
    metrics = {"long_context": long_context(sparse), "kv_compression": compression(dense_at)}
    write_metrics("long_context", metrics, params_path, started)
    runs = [*dense_at.values(), *dense[1:], *sparse]
    write_plot(runs)
    get_run_logger().info("\n%s", write_report(p, runs, metrics))
    return metrics
