"""Test-only faults that make the engine wrong on purpose, so tests can prove the release gate notices.

`TOLLGATE_FAULT=constant_token` (or `EngineConfig(fault="constant_token")`) makes every sampled token the same
id: the engine still runs at full speed and answers every request, but the text is garbage.
"""

from __future__ import annotations

import torch

from engine.sampling import Sampler, SampleRequest, TokenLogprob

FAULTS = ("constant_token",)
CONSTANT_TOKEN = 28  # any id inside every vocabulary the tests use


class ConstantTokenSampler(Sampler):
    """Samples as usual, then replaces every token with CONSTANT_TOKEN."""

    def __call__(
        self, logits: torch.Tensor, requests: list[SampleRequest]
    ) -> tuple[list[int], list[TokenLogprob | None]]:
        _, logprobs = super().__call__(logits, requests)
        return [CONSTANT_TOKEN] * len(requests), logprobs


def make_sampler(fault: str | None, seed: int | None) -> Sampler:
    """The engine's sampler, or the faulty one a test asked for; an unknown fault name is a ValueError."""
    if fault is None:
        return Sampler(seed)
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; known: {FAULTS}")
    return ConstantTokenSampler(seed)
