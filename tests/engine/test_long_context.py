"""Long-context evaluation (`python -m engine.eval --attention/--kv-cache-dtype`): one sequence through the engine,
scored exactly as the model scores it without a cache, with pass-key prompts built as stated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.eval import main
from engine.long_context import NEEDLE, QUESTION, baseline_perplexity, engine_for, passkey_prompt, run_sequence
from tests.conftest import make_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-long"), "llama", hidden_size=128)


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "test.txt"
    path.write_text(" ".join(f"word{i % 97} is followed by word{(i * 7) % 89}." for i in range(400)))
    return path


def test_run_sequence_scores_like_the_uncached_model(tiny: Path) -> None:
    """Chunked prefill through the paged cache gives the perplexity a window of the same tokens gets uncached."""
    engine = engine_for(str(tiny), {"max_num_batched_tokens": 32, "block_size": 4}, 200, 4)
    ids = torch.randint(3, 49152, (200,), generator=torch.Generator().manual_seed(0)).tolist()
    run = run_sequence(engine, ids, new_tokens=4, score=True)
    expected = baseline_perplexity(engine.model, ids, 200)
    assert torch.tensor(run.nll / run.predicted).exp().item() == pytest.approx(expected, rel=1e-4)
    assert len(run.generated) == 4 and run.decode_tok_s and run.decode_tok_s > 0


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_passkey_prompt_puts_the_key_at_its_depth(tiny: Path, depth: float) -> None:
    engine = engine_for(str(tiny), {}, 64, 1)
    haystack = list(range(1000, 1200))
    ids = passkey_prompt(engine.tokenizer, haystack, 120, depth, "12345")
    needle = engine.tokenizer.encode(NEEDLE.format(key="12345"), add_special_tokens=False)
    question = engine.tokenizer.encode(QUESTION, add_special_tokens=False)
    filler = 120 - len(needle) - len(question)
    at = round(depth * filler)
    assert len(ids) == 120 and ids[at : at + len(needle)] == needle and ids[-len(question) :] == question


def test_passkey_prompt_too_short_is_refused(tiny: Path) -> None:
    engine = engine_for(str(tiny), {}, 64, 1)
    with pytest.raises(ValueError, match="filler tokens"):
        passkey_prompt(engine.tokenizer, list(range(100)), 10, 0.5, "12345")


def test_cli_prints_perplexity_retrieval_kv_bytes_and_rss(tiny: Path, text: Path, tmp_path: Path) -> None:
    out = tmp_path / "long.json"
    argv = ["--model", str(tiny), "--text", str(text), "--context", "512", "--attention", "sink-window",
            "--window", "64", "--kv-cache-dtype", "int8", "--chunk", "64", "--passkey-depths", "0.5", "0.9",
            "--decode-tokens", "4", "--baseline-window", "128", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert {"perplexity", "retrieval", "kv_bytes", "peak_rss_mb", "decode_tok_s", "quality_pct"} <= result.keys()
    assert result["tokens"] == 511 and set(result["retrieval"]["by_depth"]) == {"0.5", "0.9"}
    assert result["kv_bytes"] < 512 * result["kv_bytes_per_token"] / 2  # the window, not the whole sequence


def test_cli_refuses_a_text_shorter_than_the_context(tiny: Path, text: Path, capsys) -> None:
    argv = ["--model", str(tiny), "--text", str(text), "--context", "100000", "--kv-cache-dtype", "int8"]
    assert main(argv) == 1
    assert "fewer than --context" in capsys.readouterr().err


def test_cli_dense_past_the_trained_context_is_refused(tiny: Path, text: Path, capsys) -> None:
    argv = ["--model", str(tiny), "--text", str(text), "--context", "2048", "--attention", "dense"]
    assert main(argv) == 1
    assert "context length" in capsys.readouterr().err
