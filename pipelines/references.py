"""Reference outputs of a model from HF transformers (fp32), the yardstick of the quality stage's correctness checks.

    python -m pipelines references [--params params.yaml] [--profiles ci weekly release]

Writes data/references/<model>.json: greedy continuations of a fixed prompt set (EOS suppressed on both sides,
so every prompt yields the same number of tokens) and the perplexity of the eval text per (tokens, context) of
each profile, all computed by transformers, not by our engine. Commit the file: a later engine or converter
that answers differently is then caught, even when it agrees with itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import transformers
import yaml
from transformers import AutoModelForCausalLM

from engine.eval import windows
from engine.loader import load_tokenizer
from gates.provenance import now_utc, sha256_file
from pipelines.config import CONF_DIR, PARAMS, TollgateConf, load_params

REFERENCES = Path("data/references")
NEW_TOKENS = 32
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Water boils at a temperature of",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "To make a cup of tea, first",
    "The largest planet in the solar system is",
    "In 1969, the first humans",
]


def reference_path(model_name: str) -> Path:
    """Where the committed reference of a model lives."""
    return REFERENCES / f"{model_name}.json"


def perplexity_key(tokens: int, context: int) -> str:
    """Key of one eval setting in the reference's `perplexity` table."""
    return f"{tokens}x{context}"


def eval_ids(p: TollgateConf, tokens: int) -> list[int]:
    """The first `tokens` token ids of the eval text, as the quality stage scores them."""
    text = Path(p.data.eval_text).read_text(encoding="utf-8")
    return load_tokenizer(p.model.path).encode(text, add_special_tokens=False)[:tokens]


def hf_model(path: str) -> Any:
    """The checkpoint in HF transformers, fp32, eval mode."""
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def eos_ids(model: Any) -> list[int]:
    """Every end-of-sequence id of the model's generation config."""
    eos = model.generation_config.eos_token_id
    return sorted({eos} if isinstance(eos, int) else set(eos or []))


@torch.inference_mode()
def hf_greedy(model: Any, prompt_ids: list[list[int]], new_tokens: int) -> list[list[int]]:
    """Greedy continuations with EOS suppressed, one prompt at a time (no padding effects)."""
    out = []
    for ids in prompt_ids:
        result = model.generate(
            torch.tensor([ids]),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            suppress_tokens=eos_ids(model),
            pad_token_id=eos_ids(model)[0],
        )
        out.append(result[0, len(ids) :].tolist())
    return out


@torch.inference_mode()
def hf_perplexity(model: Any, ids: list[int], context: int) -> float:
    """exp(mean NLL) over consecutive windows of `context` tokens (engine.eval's windows)."""
    nll, count = 0.0, 0
    for window in windows(ids, context):
        logits = model(torch.tensor([window])).logits[0, :-1].float()
        nll += torch.nn.functional.cross_entropy(logits, torch.tensor(window[1:]), reduction="sum").item()
        count += len(window) - 1
    return float(torch.tensor(nll / count).exp())


def build_reference(p: TollgateConf, settings: list[tuple[int, int]]) -> dict[str, Any]:
    """Greedy references for PROMPTS and perplexity for each (tokens, context), from transformers."""
    model = hf_model(p.model.path)
    tokenizer = load_tokenizer(p.model.path)
    prompt_ids = [tokenizer.encode(text, add_special_tokens=True) for text in PROMPTS]
    continuations = hf_greedy(model, prompt_ids, NEW_TOKENS)
    weights = Path(p.model.path) / "model.safetensors"
    return {
        "model": p.model.name,
        "model_sha256": sha256_file(weights) if weights.is_file() else None,
        "made_with": {"transformers": transformers.__version__, "torch": torch.__version__, "created": now_utc()},
        "greedy": {
            "new_tokens": NEW_TOKENS,
            "suppressed_token_ids": eos_ids(model),
            "prompts": [
                {"text": text, "prompt_ids": ids, "reference_ids": cont, "reference_text": tokenizer.decode(cont)}
                for text, ids, cont in zip(PROMPTS, prompt_ids, continuations, strict=True)
            ],
        },
        "perplexity": {
            perplexity_key(tokens, context): {
                "text": p.data.eval_text,
                "text_sha256": sha256_file(Path(p.data.eval_text)),
                "perplexity": hf_perplexity(model, eval_ids(p, tokens), context),
            }
            for tokens, context in settings
        },
    }


def main(argv: list[str] | None = None) -> int:
    """CLI: write data/references/<model>.json for the quality settings of the named profiles."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=PARAMS, help="composed parameters (default: params.yaml)")
    parser.add_argument("--profiles", nargs="+", default=["ci"], help="profiles whose quality settings to cover")
    args = parser.parse_args(argv)
    p = load_params(args.params)
    settings = []
    for name in args.profiles:
        quality = yaml.safe_load((CONF_DIR / "profile" / f"{name}.yaml").read_text())["quality"]
        settings.append((int(quality["max_tokens"]), int(quality["context"])))
    doc = build_reference(p, settings)
    path = reference_path(p.model.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}: {len(PROMPTS)} greedy references, perplexity for {sorted(doc['perplexity'])}")
    return 0
