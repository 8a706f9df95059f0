"""The finetune stage's bookkeeping: 7B numbers from a small model are extrapolations, labelled and declared
invalid; QLoRA's quality is its task accuracy against LoRA's."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines.config import FinetuneConf
from pipelines.finetune import NF4_BITS, SEVEN_B, assemble, extrapolate


def test_the_7b_extrapolation_scales_time_by_parameters_and_swaps_the_weights() -> None:
    run = {"seconds": 360.0, "peak_rss_mb": 2048.0}
    params, weights = 135e6, 135e6 * NF4_BITS / 8
    out = extrapolate(params, run, weights)
    assert out["hours_per_7b"] == pytest.approx(0.1 * SEVEN_B / params)
    overhead = 2048 * 2**20 - weights
    assert out["peak_memory_gb"] == pytest.approx((SEVEN_B * NF4_BITS / 8 + overhead) / 2**30)


def test_a_small_model_s_7b_numbers_are_declared_invalid_and_quality_is_relative_to_lora(tiny_llama: Path) -> None:
    p = SimpleNamespace(model=SimpleNamespace(path=str(tiny_llama), name="tiny"))
    run = {"steps": 2, "tokens": 100, "seconds": 3.0, "tokens_per_s": 33.0, "peak_rss_mb": 900.0, "history": []}
    measured = {
        "base": {"task_accuracy_pct": 0.0},
        "lora": {"task_accuracy_pct": 80.0},
        "qlora": {"task_accuracy_pct": 76.0},
    }
    doc = assemble(p, {"lora": dict(run), "qlora": dict(run)}, measured)
    assert doc["qlora"]["quality_pct"] == pytest.approx(95.0)
    assert set(doc["_invalid"]) == {"qlora.hours_per_7b", "qlora.peak_memory_gb"}
    assert "extrapolated from tiny" in doc["_invalid"]["qlora.peak_memory_gb"]
    assert doc["finetune"]["qlora"]["peak_rss_mb"] == 900.0 and doc["finetune"]["params_m"] < 10
    measured["lora"]["task_accuracy_pct"] = 0.0  # LoRA learned nothing: QLoRA's "quality" is no number to pass
    doc = assemble(p, {"lora": dict(run), "qlora": dict(run)}, measured)
    assert doc["qlora"]["quality_pct"] == 0.0 and "qlora.quality_pct" in doc["_invalid"]


def test_measure_and_report_on_a_tiny_model(
    tiny_llama: Path, tiny_adapters: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.finetune import write_loss_plot, write_report
    from pipelines.finetune_measure import measure

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(tmp_path)  # the stage writes reports/ and plots/ where it runs
    sizes = SimpleNamespace(max_steps=2, batch_size=2, test_examples=2, ppl_tokens=64, context=32, decode_tokens=2,
                            decode_batch=2)  # fmt: skip
    p = SimpleNamespace(
        model=SimpleNamespace(path=str(tiny_llama), name="tiny"),
        finetune=FinetuneConf(data=str(root / "data" / "finetune"), methods=["lora"]),
        data=SimpleNamespace(eval_text=str(root / "data" / "wikitext-2" / "test.txt")),
        profile=SimpleNamespace(name="ci", repetitions=1, finetune=sizes),
    )
    history = [{"step": 1, "train_loss": 2.0, "tokens": 10}, {"step": 2, "train_loss": 1.0, "tokens": 20}]
    run = {"adapter": str(tiny_adapters["all"]), "steps": 2, "tokens": 20, "seconds": 1.0, "tokens_per_s": 20.0,
           "peak_rss_mb": 500.0, "history": history}  # fmt: skip
    measured, failures = measure(p, {"lora": run})
    # float rounding only (the test adapter is scaled far beyond a trained one's size, hence the looser bound)
    assert measured["merge"]["max_rel_logit_diff"] < 1e-3 and measured["merge"]["top1_agreement_pct"] == 100
    assert measured["decode"]["adapters4_tok_s"] > 0
    assert measured["base"]["task_accuracy_pct"] == 0.0 and len(failures["lora"]) == 2
    doc = assemble(p, {"lora": run}, measured)
    assert doc["qlora"] == {} and doc["_invalid"] == {}  # no QLoRA run: nothing to extrapolate or compare
    write_loss_plot({"lora": run})
    report = write_report(p, doc, failures)
    assert "| lora |" in report and "KL(base || adapted) weight 1.0 on 64 tokens" in report
    assert (tmp_path / "plots" / "finetune_loss.png").is_file() and (tmp_path / "reports" / "finetune.md").is_file()
