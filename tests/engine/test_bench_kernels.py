"""The kernel micro-benchmark measures every kernel on the model's layer shapes; the profile names the ops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.bench_kernels import layer_shapes, main
from engine.config import ModelConfig


def test_layer_shapes_cover_one_decode_step(tiny_llama: Path) -> None:
    cfg = ModelConfig.from_file(tiny_llama / "config.json")
    shapes = layer_shapes(cfg)
    assert len(shapes) == 4 * cfg.num_hidden_layers + 1
    assert shapes[-1] == (cfg.hidden_size, cfg.vocab_size)


def test_every_kernel_is_timed(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "kernels.json"
    assert (
        main(["--model", str(tiny_llama), "--rows", "1", "2", "--threads", "1", "--repeats", "1", "--out", str(out)])
        == 0
    )
    report = json.loads(out.read_text())
    assert [(r["rows"], r["threads"]) for r in report["results"]] == [(1, 1), (2, 1)]
    kernels = report["results"][0]["kernels"]
    assert {"fp32_onednn_blocked", "int8_weight_int8pack_mm", "bandwidth_sum_fp32_bytes"} <= kernels.keys()
    assert all(k["ms"] > 0 for k in kernels.values())


def test_profile_decode_prints_the_op_table(tiny_llama: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", str(tiny_llama), "--profile-decode", "--prompt-len", "8"]) == 0
    out = capsys.readouterr().out
    assert "decode steps" in out and "mkldnn::_linear_pointwise" in out
