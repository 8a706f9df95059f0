"""Calibration sets: mixes of texts by token share, and the check that no calibration text leaks into an eval text."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.loader import load_tokenizer
from engine.quant.base import QuantizationError
from engine.quant.calibration import DEFAULT_CALIBRATION, text_batches
from engine.quant.calibration_mix import ngrams, overlap, read_mix
from tests.conftest import ROOT

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "seven", "small",
         "birds", "sing", "in", "the", "old", "oak", "tree"]  # fmt: skip


def write_mix(tmp_path: Path, shares: list[float]) -> Path:
    texts = []
    for i, share in enumerate(shares):
        (tmp_path / f"t{i}.txt").write_text(" ".join(f"{w}{i}" for w in WORDS * 40))
        texts.append(f"  - {{text: t{i}.txt, share: {share}, domain: d{i}}}")
    mix = tmp_path / "mix.yaml"
    mix.write_text("sources:\n" + "\n".join(texts) + "\n")
    return mix


def test_a_mix_takes_each_source_share_of_the_tokens_in_windows_of_one_source(tiny_llama: Path, tmp_path: Path) -> None:
    tokenizer = load_tokenizer(tiny_llama)
    batches = text_batches(tokenizer, write_mix(tmp_path, [0.5, 0.25, 0.25]), 400, 64)
    assert sum(len(b) for b in batches) == 400
    decoded = [tokenizer.decode(b) for b in batches]
    assert all(len({c for c in "012" if f"fox{c}" in text or f"dog{c}" in text}) <= 1 for text in decoded)
    assert sum(len(b) for b, t in zip(batches, decoded, strict=True) if "0" in t) == 200


def test_a_plain_text_is_a_mix_of_one(tmp_path: Path) -> None:
    (tmp_path / "prose").mkdir()
    text = tmp_path / "prose" / "a.txt"
    text.write_text("x")
    assert [(s.text, s.share, s.domain) for s in read_mix(text)] == [(text, 1.0, "prose")]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("sources:\n  - {text: a.txt, share: 0.5, domain: a}\n", "sum to 1"),
        ("sources:\n  - {text: a.txt, share: -1, domain: a}\n  - {text: b.txt, share: 2, domain: b}\n", "positive"),
        ("sources:\n  - {text: a.txt}\n", "expected sources"),
        ("just: [a, list]\n", "expected sources"),
    ],
)
def test_a_bad_mix_file_is_refused_with_the_reason(tmp_path: Path, body: str, message: str) -> None:
    mix = tmp_path / "mix.yaml"
    mix.write_text(body)
    with pytest.raises(QuantizationError, match=message):
        read_mix(mix)


def test_a_missing_source_names_the_file(tiny_llama: Path, tmp_path: Path) -> None:
    mix = write_mix(tmp_path, [0.5, 0.5])
    (tmp_path / "t1.txt").unlink()
    with pytest.raises(QuantizationError, match=r"t1\.txt"):
        text_batches(load_tokenizer(tiny_llama), mix, 100)


def test_overlap_finds_a_copied_sentence_and_ignores_runs_of_one_word(tmp_path: Path) -> None:
    mix = write_mix(tmp_path, [1.0])
    leaked = tmp_path / "eval.txt"
    leaked.write_text("Unrelated words here. " + " ".join(f"{w}0" for w in WORDS[:13]) + " and more.")
    clean = tmp_path / "clean.txt"
    clean.write_text("an entirely different text " * 3 + "<unk> " * 40)
    (tmp_path / "t0.txt").write_text((tmp_path / "t0.txt").read_text() + " <unk>" * 40)
    assert overlap(mix, leaked) == 1
    assert overlap(mix, clean) == 0
    assert not ngrams("unk " * 20)


def test_the_shipped_calibration_set_shares_nothing_with_the_evaluation_texts() -> None:
    mix = ROOT / DEFAULT_CALIBRATION
    assert {s.domain for s in read_mix(mix)} == {"prose", "code", "dialogue"}
    for text in ("data/wikitext-2/test.txt", "data/python-docs/test.txt"):
        assert overlap(mix, ROOT / text) == 0, text
