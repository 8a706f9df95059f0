"""`python -m engine.convert`: lossless round trips are bit-exact, lossy types report their error, bad input
gives one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from engine.convert import convert, main
from engine.loader import load_model
from engine.loader.formats import hashes
from engine.loader.hf import read_state_dict
from engine.loader.tiny import build_tiny

IDS = [5, 17, 250, 3, 99, 140, 7, 7]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny("llama", tmp_path_factory.mktemp("tiny"))


def test_safetensors_to_gguf_to_safetensors_is_bit_exact(tiny: Path, tmp_path: Path) -> None:
    assert convert(tiny, "gguf", tmp_path / "m.gguf")["bit_exact"]
    assert convert(tmp_path / "m.gguf", "safetensors", tmp_path / "back")["bit_exact"]
    assert hashes(read_state_dict(tmp_path / "back")) == hashes(read_state_dict(tiny))
    assert torch.equal(load_model(tmp_path / "back").score(IDS), load_model(tiny).score(IDS))


@pytest.mark.parametrize("shard_mb", [None, 0.2])
def test_safetensors_to_bin_to_safetensors_is_bit_exact(tiny: Path, tmp_path: Path, shard_mb: float | None) -> None:
    report = convert(tiny, "pytorch", tmp_path / "bin", shard_mb=shard_mb)
    assert report["bit_exact"] and report["tensors"] == len(read_state_dict(tiny))
    assert (tmp_path / "bin" / "pytorch_model.bin.index.json").is_file() == bool(shard_mb)
    assert convert(tmp_path / "bin", "safetensors", tmp_path / "back", shard_mb=shard_mb)["bit_exact"]
    assert hashes(read_state_dict(tmp_path / "back")) == hashes(read_state_dict(tiny))


@pytest.mark.parametrize("kind", ["F16", "BF16", "Q8_0", "Q4_0"])
def test_lossy_gguf_types_report_their_error(tiny: Path, tmp_path: Path, kind: str) -> None:
    report = convert(tiny, "gguf", tmp_path / "m.gguf", kind)
    assert not report["bit_exact"] and report["exact"] < report["tensors"]
    assert 0 < report["max_rel_error"] < (0.2 if kind == "Q4_0" else 0.02)


def test_transformers_gguf_loader_reads_our_file_with_the_same_logits(tiny: Path, tmp_path: Path) -> None:
    convert(tiny, "gguf", tmp_path / "m.gguf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = hf(torch.tensor([IDS])).logits[0]
    assert (theirs - load_model(tiny).score(IDS)).abs().max().item() <= 1e-4


def test_gguf_export_refuses_an_architecture_it_cannot_read_back(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = build_tiny("gpt2", tmp_path / "gpt2")
    capsys.readouterr()
    assert main([str(src), "--to", "gguf", "--out", str(tmp_path / "g.gguf")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(src) in err and "LlamaForCausalLM" in err
    assert not (tmp_path / "g.gguf").exists()


def test_cli_prints_the_report(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tiny), "--to", "safetensors", "--out", str(tmp_path / "st")]) == 0
    assert json.loads(capsys.readouterr().out)["bit_exact"] is True


@pytest.mark.integration
@pytest.mark.slow  # the models stage measures the same round trip on every profile
def test_smollm2_round_trips_through_gguf_bit_exact(smollm2: Path, tmp_path: Path) -> None:
    assert convert(smollm2, "gguf", tmp_path / "s.gguf")["bit_exact"]
    assert convert(tmp_path / "s.gguf", "safetensors", tmp_path / "back")["bit_exact"]
    assert hashes(read_state_dict(tmp_path / "back")) == hashes(read_state_dict(smollm2))
