"""Command lines: `python -m engine.quant`, and `--quant` in engine.bench and engine.eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import LLM, SamplingParams
from engine.bench import main as bench_main
from engine.eval import main as eval_main
from engine.quant.__main__ import main as quant_main

ROOT = Path(__file__).resolve().parents[3]


def test_quantize_writes_a_checkpoint_that_serves(tiny_llama: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "tiny-int4"
    args = ["quantize", "--model", str(tiny_llama), "--strategy", "int4", "--option", "group_size=32"]
    assert quant_main([*args, "--out", str(out)]) == 0
    assert '"layers_quantized": 9' in capsys.readouterr().out
    doc = json.loads((out / "quantization.json").read_text())
    assert doc["strategy"] == "int4" and doc["options"] == {"group_size": 32}
    result = LLM(out).generate([[1, 2, 3]], SamplingParams(max_tokens=4, ignore_eos=True))
    assert len(result[0].outputs[0].token_ids) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["quantize", "--strategy", "int3"], "unknown strategy 'int3'"),
        (["quantize", "--strategy", "gptq", "--option", "bits=5"], "bits must be 4 or 8"),
    ],
)
def test_quantize_errors_are_one_line(tiny_llama: Path, tmp_path: Path, capsys, args: list, message: str) -> None:
    assert quant_main([*args, "--model", str(tiny_llama), "--out", str(tmp_path / "x")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x" / "model.safetensors").exists()


def test_list_and_select(tmp_path: Path, capsys) -> None:
    assert quant_main(["list"]) == 0
    assert "gptq" in capsys.readouterr().out.split()
    results = tmp_path / "calibrate.json"
    results.write_text(json.dumps({"quant": {
        "int8": {"accuracy_loss_pct": 0.1, "decode_tok_s": 24, "weight_mb": 129},
        "awq": {"accuracy_loss_pct": 9.0, "decode_tok_s": 32, "weight_mb": 86},
    }}))  # fmt: skip
    assert quant_main(["select", "--results", str(results), "--min-tok-s", "30"]) == 0
    assert capsys.readouterr().out.startswith("chose awq")
    assert quant_main(["select", "--results", str(results), "--memory-mb", "10"]) == 2
    assert quant_main(["select", "--results", str(tmp_path / "missing.json")]) == 1


def test_eval_with_quant_compares_with_fp32(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    args = ["--model", str(tiny_llama), "--text", str(ROOT / "data/wikitext-2/test.txt"), "--max-tokens", "128"]
    assert eval_main([*args, "--context", "64", "--quant", "int8", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["quant"] == "int8" and doc["reference"] == str(tiny_llama)
    assert doc["top1_agreement"] > 0.9 and abs(doc["accuracy_loss_pct"]) < 1
    assert doc["quantization"]["layers_quantized"] == 9


def test_bench_measures_each_strategy_in_one_invocation(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["--model", str(tiny_llama), "--batch", "1", "--new-tokens", "4", "--prompt-len", "8", "--repeats", "1"]
    assert bench_main([*args, "--warmup", "0", "--quant", "none", "int8", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [(r["quant"], r["batch"]) for r in report["results"]] == [("none", 1), ("int8", 1)]
    assert report["results"][1]["quantization"]["layers_quantized"] == 9
    assert "int8_vs_fp32_batch1_t1" in report["summary"]


def test_bench_rejects_an_unknown_strategy(tiny_llama: Path) -> None:
    with pytest.raises(SystemExit):
        bench_main(["--model", str(tiny_llama), "--quant", "int3"])
