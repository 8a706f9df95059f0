"""Test-only faults that make the engine wrong on purpose, so tests can prove the release gate notices.

`TOLLGATE_FAULT=constant_token` (or `EngineConfig(fault="constant_token")`) makes every sampled token the same
id: the engine still runs at full speed and answers every request, but the text is garbage.
`TOLLGATE_FAULT=out_of_memory` makes the step that samples the third token of a request with `seed=OOM_SEED`
raise MemoryError, as an allocation failing mid-stream would: the fault stage checks what the server does then.
"""

from __future__ import annotations

import torch

from engine.sampling import Sampler, SampleRequest, TokenLogprob

CONSTANT_TOKEN = 28  # any id inside every vocabulary the tests use
OOM_SEED = 4242


class ConstantTokenSampler(Sampler):
    """Samples as usual, then replaces every token with CONSTANT_TOKEN."""

    def __call__(
        self, logits: torch.Tensor, requests: list[SampleRequest]
    ) -> tuple[list[int], list[TokenLogprob | None]]:
        _, logprobs = super().__call__(logits, requests)
        return [CONSTANT_TOKEN] * len(requests), logprobs


class OutOfMemorySampler(Sampler):
    """Runs out of memory in the step that samples the third token of a request seeded with OOM_SEED."""

    def __call__(
        self, logits: torch.Tensor, requests: list[SampleRequest]
    ) -> tuple[list[int], list[TokenLogprob | None]]:
        if any(r.params.seed == OOM_SEED and len(r.output_token_ids) >= 2 for r in requests):
            raise MemoryError("injected: out of memory while sampling (TOLLGATE_FAULT=out_of_memory)")
        return super().__call__(logits, requests)


FAULTS: dict[str, type[Sampler]] = {"constant_token": ConstantTokenSampler, "out_of_memory": OutOfMemorySampler}


def make_sampler(fault: str | None, seed: int | None) -> Sampler:
    """The engine's sampler, or the faulty one a test asked for; an unknown fault name is a ValueError."""
    if fault is None:
        return Sampler(seed)
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; known: {sorted(FAULTS)}")
    return FAULTS[fault](seed)
