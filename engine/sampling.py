"""Sampling parameters (OpenAI/vLLM semantics) and the sampler that turns a step's logits into tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from engine.errors import ParameterError


def _in(low: float, high: float) -> Any:
    return lambda v: low <= v <= high


# (parameter, test of the whole params object, the rule as the error message states it)
_RULES: list[tuple[str, Any, str]] = [
    ("n", lambda p: p.n >= 1, "must be >= 1"),
    ("temperature", lambda p: _in(0.0, 100.0)(p.temperature), "must be in [0, 100]"),
    ("top_p", lambda p: 0.0 < p.top_p <= 1.0, "must be in (0, 1]"),
    ("top_k", lambda p: p.top_k >= 0, "must be -1, 0 (disabled) or a positive integer"),
    ("min_p", lambda p: _in(0.0, 1.0)(p.min_p), "must be in [0, 1]"),
    ("max_tokens", lambda p: p.max_tokens is None or p.max_tokens >= 1, "must be >= 1"),
    ("frequency_penalty", lambda p: _in(-2.0, 2.0)(p.frequency_penalty), "must be in [-2, 2]"),
    ("presence_penalty", lambda p: _in(-2.0, 2.0)(p.presence_penalty), "must be in [-2, 2]"),
    ("repetition_penalty", lambda p: 0.0 < p.repetition_penalty <= 10.0, "must be in (0, 10]"),
    ("logprobs", lambda p: p.logprobs is None or _in(0, 20)(p.logprobs), "must be in [0, 20]"),
    ("stop", lambda p: all(isinstance(s, str) and s for s in p.stop), "must be non-empty strings"),
    (
        "stop_token_ids",
        lambda p: all(isinstance(t, int) and t >= 0 for t in p.stop_token_ids),
        "must be non-negative integers",
    ),
    (
        "logit_bias",
        lambda p: all(_in(-100.0, 100.0)(b) for b in p.logit_bias.values()),
        "values must be in [-100, 100]",
    ),
]


@dataclass
class SamplingParams:
    """Per-request decoding settings; invalid values raise `ValueError` naming the parameter."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: no top-k filtering
    min_p: float = 0.0
    seed: int | None = None
    max_tokens: int | None = 16  # None: until EOS or the context length
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: int | None = None  # None: none; k: the chosen token's logprob plus the top-k alternatives
    logit_bias: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        self.logit_bias = {int(k): float(v) for k, v in (self.logit_bias or {}).items()}
        if self.top_k == -1:
            self.top_k = 0
        for name, ok, rule in _RULES:
            if not ok(self):
                raise ParameterError(name, f"{name} {rule}, got {getattr(self, name)!r}")

    @property
    def greedy(self) -> bool:
        """Temperature 0: argmax, no randomness."""
        return self.temperature == 0.0

    @property
    def penalised(self) -> bool:
        """Whether logits need per-request edits before sampling."""
        return bool(
            self.frequency_penalty or self.presence_penalty or self.repetition_penalty != 1.0 or self.logit_bias
        )


@dataclass
class TokenLogprob:
    """The sampled token's log-probability and the top alternatives, from the model's raw distribution."""

    token_id: int
    logprob: float | None  # None: no logprob (the first token of an echoed prompt)
    top: list[tuple[int, float]]


@dataclass
class SampleRequest:
    """What the sampler needs from one sequence: its settings, history and random generator."""

    params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    generator: torch.Generator | None


def apply_penalties(logits: torch.Tensor, req: SampleRequest) -> torch.Tensor:
    """Logit bias, repetition penalty (prompt + output, CTRL/vLLM) and OpenAI frequency/presence penalties."""
    p = req.params
    logits = logits.clone()
    vocab = logits.shape[-1]
    for token, bias in p.logit_bias.items():
        if token < vocab:
            logits[token] += bias
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(req.prompt_token_ids) | set(req.output_token_ids)), dtype=torch.long)
        if seen.numel():
            vals = logits[seen]
            logits[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
    if (p.frequency_penalty or p.presence_penalty) and req.output_token_ids:
        counts = torch.bincount(torch.tensor(req.output_token_ids), minlength=vocab)[:vocab].to(logits.dtype)
        logits -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(logits.dtype)
    return logits


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, top-p and min-p; filtered-out tokens get -inf."""
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the top token always stays)
        drop = (probs.cumsum(-1) - probs) >= params.top_p
        logits = logits.masked_fill(drop.scatter(0, order, drop), float("-inf"))
    if params.min_p > 0.0:
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < params.min_p * probs.max(), float("-inf"))
    return logits


class Sampler:
    """Picks one token per row of a step's logits; greedy rows share one argmax."""

    def __init__(self, seed: int | None = None) -> None:
        self.generator = torch.Generator()
        self.generator.manual_seed(seed if seed is not None else torch.seed())

    def __call__(
        self, logits: torch.Tensor, requests: list[SampleRequest]
    ) -> tuple[list[int], list[TokenLogprob | None]]:
        if not requests:  # a step of prefill chunks only: nothing to sample
            return [], []
        logits = logits.float()
        rows = [apply_penalties(logits[i], r) if r.params.penalised else logits[i] for i, r in enumerate(requests)]
        tokens = torch.stack(rows).argmax(-1).tolist()
        for i, r in enumerate(requests):
            if not r.params.greedy:
                probs = filter_logits(rows[i], r.params).softmax(-1)
                tokens[i] = int(torch.multinomial(probs, 1, generator=r.generator or self.generator))
        logprobs: list[TokenLogprob | None] = []
        for i, r in enumerate(requests):
            if r.params.logprobs is None:
                logprobs.append(None)
                continue
            lp = logits[i].log_softmax(-1)
            top = torch.topk(lp, r.params.logprobs) if r.params.logprobs else None
            logprobs.append(
                TokenLogprob(
                    token_id=tokens[i],
                    logprob=float(lp[tokens[i]]),
                    top=list(zip(top.indices.tolist(), top.values.tolist(), strict=True)) if top else [],
                )
            )
        return tokens, logprobs
