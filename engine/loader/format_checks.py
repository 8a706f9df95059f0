"""Evidence that the formats round-trip and that other tools read what `engine.convert` writes (the `models`
stage's format checks), and one real checkpoint's load time and parity."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from engine.convert import convert
from engine.llamacpp_peer import PeerMissing, find_tools
from engine.loader import load_model
from engine.loader.parity import TOLERANCE, check_parity
from engine.loader.tiny import build_tiny

PROBE_IDS = [5, 17, 250, 3, 99, 140, 7, 7]


def real_check(name: str, path: Path, steps: int) -> dict[str, Any]:
    """One real checkpoint: its load time and its parity with transformers."""
    start = time.perf_counter()
    load_model(path)
    load_s = time.perf_counter() - start
    return {"model": name, "load_s": round(load_s, 2), **check_parity(path, steps=steps).row()}


def format_checks(real: Path) -> list[dict[str, Any]]:
    """The real checkpoint through GGUF F32 and back, a tiny one through sharded `.bin` and back (each read back
    and hashed), a GGUF written here in transformers' loader, and the real one in llama.cpp (when built)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        tiny = build_tiny("llama", tmp_path / "tiny")
        for label, steps in (
            ("safetensors->gguf->safetensors", [(real, "gguf", tmp_path / "m.gguf"),
                                                (tmp_path / "m.gguf", "safetensors", tmp_path / "m-st")]),
            ("safetensors->pytorch (sharded)->safetensors", [(tiny, "pytorch", tmp_path / "t-bin"),
                                                             (tmp_path / "t-bin", "safetensors", tmp_path / "t-st")]),
        ):  # fmt: skip
            reports = [convert(src, to, out, shard_mb=0.5 if to == "pytorch" else None) for src, to, out in steps]
            seconds = round(sum(r["seconds"] for r in reports), 2)
            exact = all(r["bit_exact"] for r in reports)
            rows.append({"conversion": label, "bit_exact": exact, "tensors": reports[0]["tensors"], "seconds": seconds})
        rows.append(transformers_reads_our_gguf(tiny, tmp_path / "t.gguf"))
        rows.append(llamacpp_reads_our_gguf(tmp_path / "m.gguf"))
    return rows


def llamacpp_reads_our_gguf(path: Path) -> dict[str, Any]:
    """llama.cpp's `llama-bench` loads the real model's GGUF written here and decodes from it (when built)."""
    row: dict[str, Any] = {"conversion": "gguf written here -> llama.cpp (llama-bench)", "tensors": None}
    try:
        tools = find_tools(None)
    except PeerMissing as exc:
        return {**row, "bit_exact": None, "seconds": None, "skipped": str(exc)}
    start = time.perf_counter()
    proc = subprocess.run([str(tools / "llama-bench"), "-m", str(path), "-p", "8", "-n", "4", "-r", "1"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    return {**row, "bit_exact": proc.returncode == 0, "seconds": round(time.perf_counter() - start, 2),
            "error": proc.stderr.strip().splitlines()[-1:] if proc.returncode else None}  # fmt: skip


def transformers_reads_our_gguf(tiny: Path, out: Path) -> dict[str, Any]:
    """A GGUF written here, loaded by transformers' GGUF loader: its logits against the engine's."""
    from transformers import AutoModelForCausalLM

    convert(tiny, "gguf", out)
    hf = AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name, dtype=torch.float32).eval()
    with torch.no_grad():
        diff = (hf(torch.tensor([PROBE_IDS])).logits[0] - load_model(tiny).score(PROBE_IDS)).abs().max().item()
    return {"conversion": "gguf written here -> transformers' GGUF loader", "bit_exact": diff <= TOLERANCE,
            "max_abs_logit_diff": diff, "tensors": None, "seconds": None}  # fmt: skip
