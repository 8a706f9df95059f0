"""Convert a checkpoint between formats, and prove the result: every tensor is read back and compared.

    python -m engine.convert models/smollm2-135m-instruct --to gguf --out /tmp/smollm2.gguf --type Q8_0
    python -m engine.convert /tmp/smollm2.gguf --to safetensors --out /tmp/smollm2-st
    python -m engine.convert models/smollm2-135m-instruct --to pytorch --out /tmp/smollm2-bin --shard-mb 200

SRC is an HF checkpoint directory (safetensors or `.bin`, whole or sharded) or a `.gguf` file. The report (stdout,
JSON) counts the tensors read back bit-identical to the source; for a lossy GGUF type it gives the largest
absolute and relative error instead. Exit status 1 with one line naming the file on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from engine.errors import CheckpointError
from engine.loader.formats import LAYOUTS, copy_side_files, tensor_hash, write_weights
from engine.loader.gguf_file import read_gguf, read_gguf_tokenizer
from engine.loader.gguf_write import GGUF_TYPES, write_gguf
from engine.loader.hf import read_state_dict

FORMATS = ("safetensors", "pytorch", "gguf")
LOSSLESS = ("F32",)  # BF16/F16 round; Q8_0/Q4_0 quantize


def read_checkpoint(src: Path) -> tuple[dict[str, Any], Mapping[str, torch.Tensor]]:
    """config.json contents and HF-named weights of a directory or GGUF file (tied heads dropped)."""
    if not src.exists():
        raise CheckpointError(src, "checkpoint not found")
    if src.suffix == ".gguf":
        config, state = read_gguf(src)
        if config.get("tie_word_embeddings"):
            state.pop("lm_head.weight", None)
        return config, state
    config_path = src / "config.json"
    if not config_path.is_file():
        raise CheckpointError(src, "no config.json (expected an HF checkpoint directory or a .gguf file)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(config_path, f"not valid JSON: {exc}") from None
    return config, read_state_dict(src)


def compare(source: Mapping[str, torch.Tensor], result: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Tensors bit-identical to the source (after casting back to its dtype), and the worst error of the rest."""
    missing = sorted(set(source) - set(result))
    exact, worst_abs, worst_rel = 0, 0.0, 0.0
    for name in source:
        if name in missing:
            continue
        a, b = source[name], result[name]
        if a.shape != b.shape:
            raise CheckpointError(name, f"shape changed in conversion: {tuple(a.shape)} -> {tuple(b.shape)}")
        if tensor_hash(b.to(a.dtype)) == tensor_hash(a):
            exact += 1
            continue
        err = (a.float() - b.float()).abs().max().item()
        worst_abs = max(worst_abs, err)
        worst_rel = max(worst_rel, err / max(a.float().abs().max().item(), 1e-12))
    return {
        "tensors": len(source), "exact": exact, "missing": missing,
        "max_abs_error": worst_abs, "max_rel_error": worst_rel,
    }  # fmt: skip


def convert(src: Path, to: str, out: Path, kind: str = "F32", shard_mb: float | None = None) -> dict[str, Any]:
    """Write `src` as `to` at `out`, read it back, and report how exact it is."""
    if to not in FORMATS:
        raise ValueError(f"--to {to!r}: choose one of {', '.join(FORMATS)}")
    start = time.perf_counter()
    config, state = read_checkpoint(src)
    with tempfile.TemporaryDirectory() as tmp:
        side = src
        if src.suffix == ".gguf":  # the tokenizer lives in the GGUF metadata: materialise it as files
            side = Path(tmp)
            read_gguf_tokenizer(src).save_pretrained(tmp)
        if to == "gguf":
            out.parent.mkdir(parents=True, exist_ok=True)
            write_gguf(side, config, state, out, kind)
            _, back = read_checkpoint(out)
        else:
            copy_side_files(side, out, config)
            for stale in out.glob(f"{LAYOUTS[to][0]}*"):
                stale.unlink()
            write_weights(state, out, to, int(shard_mb * 2**20) if shard_mb else None)
            back = read_state_dict(out)
    report = {"source": str(src), "out": str(out), "format": to, "type": kind if to == "gguf" else "as-is"}
    report.update(compare(state, back))
    report["bit_exact"] = report["exact"] == report["tensors"] and not report["missing"]
    report["seconds"] = round(time.perf_counter() - start, 2)
    return report


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exits 1 with the CheckpointError message on bad input."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="checkpoint directory or .gguf file")
    parser.add_argument("--to", required=True, choices=FORMATS, help="output format")
    parser.add_argument("--out", required=True, type=Path, help="output directory (or .gguf file for --to gguf)")
    parser.add_argument("--type", default="F32", choices=list(GGUF_TYPES), help="GGUF tensor type (default F32)")
    parser.add_argument("--shard-mb", type=float, help="split safetensors/.bin weights into shards of this size")
    args = parser.parse_args(argv)
    try:
        report = convert(args.src, args.to, args.out, args.type, args.shard_mb)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
