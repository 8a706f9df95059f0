"""What a fine-tuning run is judged on: task accuracy through the engine, perplexity change, merge agreement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.eval import score
from engine.finetune.data import Example
from engine.finetune.task import is_correct
from engine.llm import LLM
from engine.sampling import SamplingParams

MAX_REPLY_TOKENS = 48


def task_accuracy(llm: LLM, examples: list[Example], lora: str | None = None) -> dict[str, Any]:
    """Greedy replies through the engine's continuous batch (on the adapter, if named), checked exactly."""
    prompts = [llm.chat_prompt(list(e.messages[:-1])) for e in examples]
    params = SamplingParams(temperature=0.0, max_tokens=MAX_REPLY_TOKENS)
    outs = llm.generate(prompts, params, lora=lora)
    replies = [o.outputs[0].text for o in outs]
    failures = [
        {"prompt": e.messages[-2]["content"], "reply": r}
        for e, r in zip(examples, replies, strict=True)
        if not is_correct(e, r)
    ]
    return {"accuracy": 1 - len(failures) / len(examples), "n": len(examples), "failures": failures[:5]}


def perplexity(llm: LLM, ids: list[int], context: int, lora: str | None = None) -> float:
    """Perplexity of the base model or of the model with one adapter applied to every row."""
    loras = llm.engine.loras
    if loras is not None:
        loras.use(lora)
    try:
        return score(llm.engine.model, ids, context).perplexity
    finally:
        if loras is not None:
            loras.use(None)


def merge_agreement(adapted: LLM, lora: str, merged: str | Path, prompts: list[list[int]]) -> dict[str, float]:
    """Logits of base + adapter (the serving path) against the merged checkpoint, on the same prompts."""
    other = LLM(merged)
    worst, agree, total = 0.0, 0, 0
    adapted.engine.loras.use(lora)
    try:
        for ids in prompts:
            a = adapted.engine.model.score(ids)
            b = other.engine.model.score(ids)
            worst = max(worst, float((a - b).abs().max() / b.abs().max()))
            agree += int((a.argmax(-1) == b.argmax(-1)).sum())
            total += len(ids)
    finally:
        adapted.engine.loras.use(None)
    return {"max_rel_logit_diff": worst, "top1_agreement": agree / total}
