"""Calibration sets: a plain text, or a YAML mix of texts with each one's share of the token budget, and the
check that no calibration text leaks into an evaluation text (shared word 13-grams, the GPT-3 contamination test).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from engine.quant.base import QuantizationError

MIX_SUFFIXES = (".yaml", ".yml")
NGRAM = 13


@dataclass(frozen=True)
class Source:
    """One calibration text and its share of the tokens."""

    text: Path
    share: float
    domain: str


def read_mix(path: str | Path) -> list[Source]:
    """The sources of a calibration set: a YAML mix file, or a single text (share 1)."""
    path = Path(path)
    if path.suffix not in MIX_SUFFIXES:
        return [Source(path, 1.0, path.parent.name)]
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        sources = [Source(path.parent / s["text"], float(s["share"]), str(s["domain"])) for s in doc["sources"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        expected = "expected sources: [{text, share, domain}, ...]"
        raise QuantizationError(f"calibration mix {path}: {exc!r} ({expected})") from None
    total = sum(s.share for s in sources)
    if not sources or any(s.share <= 0 for s in sources) or abs(total - 1) > 1e-6:
        raise QuantizationError(f"calibration mix {path}: shares must be positive and sum to 1, got {total}")
    return sources


def read_text(path: Path) -> str:
    """A UTF-8 text, or QuantizationError naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise QuantizationError(f"calibration text {path}: {exc}") from None


def windows(ids: list[int], size: int) -> list[list[int]]:
    """Consecutive windows of at most `size` tokens; a last window of a single token is dropped."""
    return [ids[i : i + size] for i in range(0, len(ids), size) if len(ids[i : i + size]) > 1]


def mix_batches(tokenizer: Any, path: str | Path, tokens: int, seq_len: int) -> list[list[int]]:
    """Each source's first share x `tokens` tokens, in windows of `seq_len` that never span two sources."""
    batches = []
    for source in read_mix(path):
        ids = tokenizer.encode(read_text(source.text), add_special_tokens=False)[: round(source.share * tokens)]
        batches += windows(ids, seq_len)
    return batches


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    """Lower-cased word n-grams, less those of one repeated word (wikitext's runs of `<unk>`)."""
    words = re.findall(r"\w+", text.lower())
    grams = (tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return {g for g in grams if len(set(g)) > 1}


def overlap(calibration: str | Path, evaluation: str | Path, n: int = NGRAM) -> int:
    """How many word n-grams of the evaluation text also occur in a calibration source (0: no leak)."""
    seen = set().union(*(ngrams(read_text(s.text), n) for s in read_mix(calibration)))
    return len(ngrams(read_text(Path(evaluation)), n) & seen)
