"""What the finetune stage measures on the adapters it trained: task accuracy before and after, perplexity
change, merged-versus-served agreement, decode speed with 0, 1 and several adapters in the batch."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.eval import accuracy_loss_pct
from engine.finetune.data import read_jsonl
from engine.finetune.evaluate import merge_agreement, perplexity, task_accuracy
from engine.finetune.merge import merge
from engine.llm import LLM
from engine.sampling import SamplingParams
from pipelines.config import TollgateConf

DECODE_PROMPT = "Write a short note about the weather in the mountains."
AGREEMENT_PROMPTS = 8


def decode_tok_s(llm: LLM, adapters: list[str | None], batch: int, tokens: int, repeats: int) -> float:
    """Median generated tokens/s of one batch whose rows cycle through `adapters` (None: the base model)."""
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    engine = llm.engine
    rates = []
    for _ in range(max(repeats, 1) + 1):  # the first run warms up
        ids = [engine.add_request(DECODE_PROMPT, params, lora=adapters[i % len(adapters)]) for i in range(batch)]
        start = time.perf_counter()
        while engine.has_unfinished_requests():
            engine.step()
        rates.append(batch * tokens / (time.perf_counter() - start))
        for request_id in ids:
            engine.pop_output(request_id)
    return statistics.median(rates[1:])


def measure(p: TollgateConf, runs: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, list]]:
    """Accuracy, perplexity change, merge agreement and decode speed for every trained adapter; and the first
    few wrong replies of each model (for the report)."""
    f, s = p.finetune, p.profile.finetune
    base = p.model.path
    slots = max(4, len(runs))
    llm = LLM(base, lora_modules={m: r["adapter"] for m, r in runs.items()}, max_loras=slots)
    test = read_jsonl(Path(f.data) / "test.jsonl")[: s.test_examples]
    ids = llm.tokenizer.encode(Path(p.data.eval_text).read_text())[: s.ppl_tokens]
    base_ppl = perplexity(llm, ids, s.context)
    base_accuracy = task_accuracy(llm, test)
    out: dict[str, Any] = {"base": {"task_accuracy_pct": 100 * base_accuracy["accuracy"], "perplexity": base_ppl}}
    failures = {"base": base_accuracy["failures"]}
    for method in runs:
        result = task_accuracy(llm, test, lora=method)
        ppl = perplexity(llm, ids, s.context, lora=method)
        loss = accuracy_loss_pct(ppl, base_ppl)
        out[method] = {"task_accuracy_pct": 100 * result["accuracy"], "perplexity": ppl, "accuracy_loss_pct": loss}
        failures[method] = result["failures"]
    first = next(iter(runs))
    prompts = [llm.chat_prompt(list(e.messages[:-1])) for e in test[:AGREEMENT_PROMPTS]]
    with tempfile.TemporaryDirectory() as merged:
        merge(base, runs[first]["adapter"], merged)
        agreement = merge_agreement(llm, first, merged, prompts)
    out["merge"] = {"adapter": first, "max_rel_logit_diff": agreement["max_rel_logit_diff"],
                    "top1_agreement_pct": 100 * agreement["top1_agreement"]}  # fmt: skip
    for i in range(slots):  # the same weights under several names: as many LoRA slots as distinct adapters
        llm.engine.add_lora(f"slot{i}", runs[first]["adapter"])
    decode = {
        "adapters0_tok_s": [None],
        "adapters1_tok_s": ["slot0"],
        f"adapters{slots}_tok_s": [f"slot{i}" for i in range(slots)],
    }
    out["decode"] = {k: decode_tok_s(llm, names, s.decode_batch, s.decode_tokens, p.profile.repetitions)
                     for k, names in decode.items()}  # fmt: skip
    plain = LLM(base)  # no LoRA slots at all: what serving adapters costs the base model's requests
    out["decode"]["no_lora_tok_s"] = decode_tok_s(plain, [None], s.decode_batch, s.decode_tokens, p.profile.repetitions)
    out["decode"]["batch"] = s.decode_batch
    return out, failures
