"""Judging an adapter through the engine: exact task answers, perplexity with and without it, and a merged
checkpoint that gives the served adapter's logits."""

from __future__ import annotations

from pathlib import Path

from engine.finetune.evaluate import merge_agreement, perplexity, task_accuracy
from engine.finetune.merge import merge
from engine.finetune.task import examples
from engine.llm import LLM


def test_merged_and_served_adapters_agree_and_the_adapter_changes_perplexity(
    tiny_llama: Path, tiny_adapters: dict[str, Path], tmp_path: Path
) -> None:
    llm = LLM(tiny_llama, lora_modules={"all": str(tiny_adapters["all"])}, max_loras=1)
    merged = merge(tiny_llama, tiny_adapters["all"], tmp_path / "merged")
    assert (merged / "tokenizer.json").is_file()
    prompts = [llm.tokenizer.encode(f"prompt number {i} about the sea") for i in range(3)]
    agreement = merge_agreement(llm, "all", merged, prompts)
    assert agreement["max_rel_logit_diff"] < 1e-4 and agreement["top1_agreement"] == 1.0
    ids = llm.tokenizer.encode("The sea is calm tonight and the tide is full. " * 8)
    assert perplexity(llm, ids, 32, lora="all") != perplexity(llm, ids, 32)
    assert llm.engine.loras.batch.segments == []  # scoring leaves no adapter behind for the next step


def test_task_accuracy_is_exact_match_of_greedy_replies(tiny_llama: Path) -> None:
    result = task_accuracy(LLM(tiny_llama), examples(4, True, 0))
    assert result["accuracy"] == 0.0 and result["n"] == 4 and len(result["failures"]) == 4
