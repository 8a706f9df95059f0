"""Sampling semantics on small tensors: validation, filters, penalties (OpenAI/vLLM definitions), seeds."""

from __future__ import annotations

import pytest
import torch

from engine.sampling import Sampler, SampleRequest, SamplingParams, apply_penalties, filter_logits


def req(params: SamplingParams, prompt=(), output=(), seed: int | None = None) -> SampleRequest:
    gen = None
    if seed is not None:
        gen = torch.Generator().manual_seed(seed)
    return SampleRequest(params, list(prompt), list(output), gen)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.1),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_k", -2),
        ("min_p", 1.5),
        ("n", 0),
        ("max_tokens", 0),
        ("frequency_penalty", 2.5),
        ("presence_penalty", -3.0),
        ("repetition_penalty", 0.0),
        ("logprobs", 21),
        ("stop", [""]),
        ("stop_token_ids", [-1]),
        ("logit_bias", {5: 101.0}),
    ],
)
def test_invalid_values_name_the_parameter(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^{field} "):
        SamplingParams(**{field: value})


def test_stop_string_is_normalised_to_a_list() -> None:
    assert SamplingParams(stop="###").stop == ["###"]


def test_repetition_penalty_divides_positive_and_multiplies_negative() -> None:
    logits = torch.tensor([2.0, -2.0, 1.0, 0.5])
    out = apply_penalties(logits, req(SamplingParams(repetition_penalty=2.0), prompt=[0], output=[1]))
    assert out.tolist() == [1.0, -4.0, 1.0, 0.5]


def test_frequency_and_presence_penalties_follow_openai() -> None:
    # OpenAI: logit -= count * frequency_penalty + (count > 0) * presence_penalty, over generated tokens only
    logits = torch.zeros(4)
    params = SamplingParams(frequency_penalty=0.5, presence_penalty=0.25)
    out = apply_penalties(logits, req(params, prompt=[3, 3], output=[1, 1, 1, 2]))
    assert out.tolist() == [0.0, -1.75, -0.75, 0.0]


def test_logit_bias_is_added() -> None:
    out = apply_penalties(torch.zeros(3), req(SamplingParams(logit_bias={2: 5.0, 0: -1.0})))
    assert out.tolist() == [-1.0, 0.0, 5.0]


def test_top_k_top_p_min_p_filters() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))

    def keep(**kw: float) -> list[bool]:
        return torch.isfinite(filter_logits(logits, SamplingParams(**kw))).tolist()

    assert keep(top_k=2) == [True, True, False, False]
    assert keep(top_p=0.8) == [True, True, False, False]  # 0.5 + 0.3 reaches 0.8
    assert keep(top_p=0.81) == [True, True, True, False]
    assert keep(min_p=0.5) == [True, True, False, False]  # p >= 0.5 * 0.5


def test_greedy_and_top_k_1_pick_the_argmax() -> None:
    logits = torch.randn(6, 100, generator=torch.Generator().manual_seed(1))
    sampler = Sampler(seed=0)
    greedy, _ = sampler(logits, [req(SamplingParams(temperature=0))] * 6)
    topk1, _ = sampler(logits, [req(SamplingParams(temperature=1.3, top_k=1))] * 6)
    assert greedy == topk1 == logits.argmax(-1).tolist()


def test_seeded_sampling_is_reproducible_and_seed_dependent() -> None:
    logits = torch.zeros(1, 1000)

    def draws(seed: int) -> list[int]:
        r = req(SamplingParams(), seed=seed)  # one generator per request, advanced by each draw
        return [Sampler()(logits, [r])[0][0] for _ in range(20)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_logprobs_come_from_the_raw_distribution() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    tokens, logprobs = Sampler(0)(logits, [req(SamplingParams(temperature=0, logprobs=2))])
    lp = logits[0].log_softmax(-1)
    assert tokens == [0]
    assert logprobs[0].logprob == pytest.approx(float(lp[0]))
    assert [t for t, _ in logprobs[0].top] == [0, 1]
    assert logprobs[0].top[1][1] == pytest.approx(float(lp[1]))
