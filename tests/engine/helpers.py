"""Small builders for unit tests of the scheduler and block manager (no model needed)."""

from __future__ import annotations

from engine.detokenizer import IncrementalDetokenizer
from engine.sampling import SamplingParams
from engine.sequence import Sequence


class NullTokenizer:
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(97 + i % 26) for i in ids)


def make_seq(tokens: list[int], request_id: str = "r", max_tokens: int = 16) -> Sequence:
    return Sequence(
        request_id,
        0,
        tokens,
        SamplingParams(max_tokens=max_tokens),
        IncrementalDetokenizer(NullTokenizer(), tokens),
        frozenset(),
    )
