"""llama.cpp as engine.bench's peer: the same checkpoint as GGUF, measured by llama.cpp's own bench tools.

The tools come from `../shared/peers/build_llamacpp.sh` (run once per machine, never in CI) and are found via
`--llamacpp-bin DIR` or `LLAMACPP_BIN`. The GGUF is converted from the engine's checkpoint with the
`convert_hf_to_gguf.py` of that same llama.cpp source and cached; each of our quantizations is compared with
the closest llama.cpp format. Batch 1 runs `llama-bench` (prefill pp, then decode tg at a depth of the prompt
length, as our decode follows the prompt); larger batches run `llama-batched-bench` (distinct prompts, the
aggregate decode speed). Without the tools nothing is measured and the report says why.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

# Our layout -> the closest GGUF type: int8 per-channel ~ Q8_0 (32-wide blocks); int4 asymmetric group-64 ~
# Q4_1 (asymmetric, 32-wide blocks).
GGUF_TYPES = {"none": "F32", "int8": "Q8_0", "int4": "Q4_1"}
TOOLS = ("llama-bench", "llama-batched-bench", "llama-quantize")
BUILD_HINT = "build them once with ../shared/peers/build_llamacpp.sh (~15 min), then export LLAMACPP_BIN"


class PeerMissing(Exception):
    """The peer cannot run here; the message says why and how to fix it."""


def find_tools(bin_dir: str | None) -> Path:
    """The llama.cpp bin directory holding every tool the benchmark runs."""
    chosen = bin_dir or os.environ.get("LLAMACPP_BIN")
    if not chosen:
        raise PeerMissing(f"no llama.cpp tools given (--llamacpp-bin or LLAMACPP_BIN); {BUILD_HINT}")
    path = Path(chosen).expanduser()
    missing = [t for t in TOOLS if not (path / t).is_file()]
    if missing:
        raise PeerMissing(f"{path} lacks {', '.join(missing)}; {BUILD_HINT}")
    return path


def source_dir(tools: Path) -> Path:
    """The llama.cpp source the tools were built from (bin is <src>/build/bin), for its GGUF converter."""
    src = tools.resolve().parents[1]
    if not (src / "convert_hf_to_gguf.py").is_file():
        raise PeerMissing(f"no convert_hf_to_gguf.py in {src} (expected the tools at <llama.cpp>/build/bin)")
    return src


def gguf_cache() -> Path:
    """Where converted GGUFs are kept between runs (outside the repo: they are 100-540 MB each)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tollgate" / "gguf"


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{Path(cmd[0]).name} {' '.join(cmd[1:3])}... exited {done.returncode}: {tail}")
    return done


def gguf_for(model: Path, quant: str, tools: Path, cache: Path | None = None) -> Path:
    """The checkpoint as a GGUF of the type matching `quant`, converted once (keyed by the weights' mtime)."""
    if quant not in GGUF_TYPES:
        raise PeerMissing(f"llama.cpp has no counterpart for --quant {quant}; compared: {', '.join(GGUF_TYPES)}")
    weights = sorted(model.glob("*.safetensors"))
    stamp = max((w.stat().st_mtime_ns for w in weights), default=0)
    out_dir = (cache or gguf_cache()) / f"{model.resolve().name}-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{GGUF_TYPES[quant]}.gguf"
    if target.is_file():
        return target
    src = source_dir(tools)
    env = {**os.environ, "PYTHONPATH": str(src / "gguf-py")}
    f32 = out_dir / "F32.gguf"
    if not f32.is_file():
        convert = [sys.executable, str(src / "convert_hf_to_gguf.py"), str(model), "--outtype", "f32"]
        _run([*convert, "--outfile", str(f32) + ".part"], env=env)
        Path(str(f32) + ".part").rename(f32)
    if target != f32:
        _run([str(tools / "llama-quantize"), str(f32), str(target) + ".part", GGUF_TYPES[quant]])
        Path(str(target) + ".part").rename(target)
    return target


def _batch1(tools: Path, gguf: Path, args: Any, threads: int) -> dict[str, Any]:
    p, n = args.prompt_len, args.new_tokens
    cmd = [str(tools / "llama-bench"), "-m", str(gguf), "-t", str(threads), "-r", str(args.repeats), "-o", "json"]
    cmd += ["-p", str(p), "-n", str(n), "-d", f"0,{p}"]
    tests = json.loads(_run(cmd).stdout)

    def samples(kind: str, depth: int) -> list[float]:
        for t in tests:
            if t["n_depth"] == depth and (t["n_prompt"] > 0) == (kind == "pp") and (t["n_gen"] > 0) == (kind == "tg"):
                return t["samples_ts"]
        raise RuntimeError(f"llama-bench printed no {kind} test at depth {depth}")

    pp, tg = samples("pp", 0), samples("tg", p)
    return {
        "tool": "llama-bench",
        "command": cmd,
        "prefill_tok_s": statistics.median(pp),
        "decode_tok_s": statistics.median(tg),
        "runs": [{"prefill_tok_s": a, "decode_tok_s": b} for a, b in zip(pp, tg, strict=False)],
    }


def _batched(tools: Path, gguf: Path, args: Any, threads: int, batch: int) -> dict[str, Any]:
    p, n = args.prompt_len, args.new_tokens
    cmd = [str(tools / "llama-batched-bench"), "-m", str(gguf), "-t", str(threads), "-tb", str(threads)]
    cmd += ["-c", str(batch * (p + n)), "-npp", str(p), "-ntg", str(n), "-npl", str(batch), "--output-format", "jsonl"]
    runs = []
    for _ in range(args.repeats):
        lines = [json.loads(x) for x in _run(cmd).stdout.splitlines() if x.startswith("{")]
        if not lines:
            raise RuntimeError("llama-batched-bench printed no result line")
        runs.append({"prefill_tok_s": lines[-1]["speed_pp"], "decode_tok_s": lines[-1]["speed_tg"]})
    return {
        "tool": "llama-batched-bench",
        "command": cmd,
        "prefill_tok_s": statistics.median(r["prefill_tok_s"] for r in runs),
        "decode_tok_s": statistics.median(r["decode_tok_s"] for r in runs),
        "runs": runs,
    }


def prepare(args: Any, quants: list[str]) -> dict[str, str]:
    """Find the tools and convert each quantization's GGUF up front (so no row's peak RSS includes it)."""
    tools = find_tools(args.llamacpp_bin)
    return {q: str(gguf_for(Path(args.model), q, tools)) for q in quants}


def run_llamacpp(args: Any, batch: int, quant: str, threads: int) -> dict[str, Any]:
    """One llama.cpp row, same prompt/generation lengths and threads; peak RSS is the tool process's own."""
    tools = find_tools(args.llamacpp_bin)
    gguf = Path(args.llamacpp_ggufs[quant])
    row = _batch1(tools, gguf, args, threads) if batch == 1 else _batched(tools, gguf, args, threads, batch)
    row["gguf_type"] = GGUF_TYPES[quant]
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return row
