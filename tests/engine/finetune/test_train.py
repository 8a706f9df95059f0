"""The training loop on a tiny model: it learns, resumes exactly from a checkpoint, stops early, cancels cleanly,
and writes adapters HF transformers + peft load with the engine's logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.finetune.data import DataError
from engine.finetune.model import LoraSettings, kl_to_base
from engine.finetune.task import examples
from engine.finetune.train import CHECKPOINTS, Cancelled, Trainer, TrainSettings
from engine.llm import LLM
from engine.loader import load_tokenizer

TRAIN, VALID = examples(24, False, 1), examples(8, False, 2)


def trainer(base: Path, out: Path, method: str = "lora", **settings: object) -> Trainer:
    options = {"max_steps": 6, "batch_size": 4, "eval_every": 2, "checkpoint_every": 2, **settings}
    lora = LoraSettings(method=method, rank=4, gradient_checkpointing=method == "qlora")
    return Trainer(base, lora, TrainSettings(**options), TRAIN, VALID, out, load_tokenizer(base))


def adapter_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def test_training_lowers_the_loss_and_writes_a_standard_adapter(tiny_llama: Path, tmp_path: Path) -> None:
    result = trainer(tiny_llama, tmp_path, learning_rate=1e-2, patience=10).run()
    losses = [h["train_loss"] for h in result.history]
    assert result.steps == 6 and losses[-1] < losses[0]
    assert result.tokens_per_s > 0 and result.peak_rss_mb > 0
    assert {p.name for p in (tmp_path / "adapter").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_killed_run_resumes_from_its_last_checkpoint_and_ends_where_an_unbroken_one_does(
    tiny_llama: Path, tmp_path: Path
) -> None:
    straight = trainer(tiny_llama, tmp_path / "straight", patience=10).run()
    calls = iter(range(100))
    with pytest.raises(Cancelled):  # stands in for a kill after step 4: the checkpoint at step 4 survives
        trainer(tiny_llama, tmp_path / "broken", patience=10).run(should_stop=lambda: next(calls) == 5)
    assert [p.name for p in sorted((tmp_path / "broken" / CHECKPOINTS).iterdir())][-1] == "step-000004"
    resumed = trainer(tiny_llama, tmp_path / "broken", patience=10).run()
    assert resumed.resumed_from == 4 and resumed.steps == straight.steps
    for name, value in adapter_weights(tmp_path / "straight").items():
        torch.testing.assert_close(adapter_weights(tmp_path / "broken")[name], value)


def test_early_stopping_ends_the_run_when_validation_stops_improving(tiny_llama: Path, tmp_path: Path) -> None:
    result = trainer(tiny_llama, tmp_path, max_steps=40, epochs=10, learning_rate=0.5, eval_every=1, patience=1).run()
    assert result.stopped_early and result.steps < 40
    assert result.best_valid_loss == min(h["valid_loss"] for h in result.history if "valid_loss" in h)


def test_qlora_trains_on_a_frozen_4bit_base(tiny_llama: Path, tmp_path: Path) -> None:
    run = trainer(tiny_llama, tmp_path, method="qlora", learning_rate=1e-2)
    assert "Linear4bit" in type(run.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer).__name__
    result = run.run()
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_an_adapter_the_trainer_writes_loads_in_hf_peft_and_in_the_engine_alike(
    tiny_llama: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = trainer(tiny_llama, tmp_path, learning_rate=5e-2).run()
    llm = LLM(tiny_llama, lora_modules={"mine": result.adapter}, max_loras=1)
    ids = llm.tokenizer.encode("Make a contact card: Alice Moreau lives in Lyon.")
    hf = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_llama)), result.adapter).eval()
    with torch.no_grad():
        expected = hf(input_ids=torch.tensor([ids])).logits[0]
    llm.engine.loras.use("mine")
    torch.testing.assert_close(llm.engine.model.score(ids), expected, atol=2e-4, rtol=1e-4)


def test_validating_between_steps_leaves_qlora_training_unchanged(tiny_llama: Path, tmp_path: Path) -> None:
    """bitsandbytes repacks a 4-bit weight for inference in eval mode; validation must not leave it that way."""
    watched = trainer(tiny_llama, tmp_path / "a", method="qlora", learning_rate=1e-2, eval_every=1, patience=99).run()
    alone = trainer(tiny_llama, tmp_path / "b", method="qlora", learning_rate=1e-2, eval_every=99, patience=99).run()
    assert [h["train_loss"] for h in watched.history] == pytest.approx([h["train_loss"] for h in alone.history])


def _kl_on_general_text(run: Trainer, windows: list[list[int]]) -> float:
    with torch.no_grad():
        return sum(float(kl_to_base(run.model, torch.tensor([w]))) for w in windows) / len(windows)


def test_the_kl_penalty_keeps_the_adapted_model_near_the_base_off_the_task(tiny_llama: Path, tmp_path: Path) -> None:
    """The mechanism on the tiny model; what it does to wikitext-2 perplexity the finetune stage measures."""
    # a random tiny model drifts little and the penalty pulls slowly: a large weight shows it within 12 steps
    run = {"learning_rate": 2e-2, "max_steps": 12, "epochs": 10, "patience": 99, "kl_tokens": 128}
    free = trainer(tiny_llama, tmp_path / "free", kl_weight=0.0, **run)
    held = trainer(tiny_llama, tmp_path / "held", kl_weight=1000.0, **run)
    general = held.kl_windows
    assert _kl_on_general_text(free, general) == pytest.approx(0.0, abs=1e-6)  # LoRA starts as the identity
    free_run, held_run = free.run(), held.run()
    assert "kl" not in free_run.history[0] and all(h["kl"] >= 0 for h in held_run.history)
    assert _kl_on_general_text(held, general) < 0.5 * _kl_on_general_text(free, general)


def test_a_missing_kl_text_fails_before_the_model_loads(tiny_llama: Path, tmp_path: Path, monkeypatch) -> None:
    import engine.finetune.train as train_module

    monkeypatch.setattr(train_module, "trainable", lambda *_: pytest.fail("the model loaded before the check"))
    with pytest.raises(DataError, match=r"nowhere\.txt, file: the KL penalty's general text \(kl_text\)"):
        trainer(tiny_llama, tmp_path, kl_text=str(tmp_path / "nowhere.txt"))
    with pytest.raises(ValueError, match="kl_weight >= 0"):
        TrainSettings(kl_weight=-1)
