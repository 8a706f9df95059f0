"""Request edges found in review, each over HTTP with the official `openai` client against SmolLM2-135M."""

from __future__ import annotations

import math

import openai
import pytest

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def client(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)


def bad_request(call) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as info:
        call()
    return info.value


def test_max_tokens_zero_generates_nothing(client) -> None:
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=0)
    assert r.choices[0].text == "" and r.usage.completion_tokens == 0 and r.choices[0].finish_reason == "length"


def test_echo_returns_the_prompt_and_its_token_logprobs(client, live) -> None:
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=0, echo=True, logprobs=1)
    choice = r.choices[0]
    assert choice.text == PROMPT and r.usage.completion_tokens == 0
    lps = choice.logprobs
    ids = live.engine(MODEL).encode(PROMPT)
    assert len(lps.tokens) == len(ids) and "".join(lps.tokens) == PROMPT
    assert lps.token_logprobs[0] is None and lps.top_logprobs[0] is None
    assert all(lp < 0 and math.isfinite(lp) for lp in lps.token_logprobs[1:])
    assert lps.text_offset == [sum(map(len, lps.tokens[:i])) for i in range(len(ids))]


def test_echo_logprobs_agree_with_the_generated_tokens_logprobs(client) -> None:
    """The prompt scoring path and the decode path give the same logprob for the same token."""
    gen = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=1, temperature=0, logprobs=1)
    token, logprob = gen.choices[0].text, gen.choices[0].logprobs.token_logprobs[0]
    echoed = client.completions.create(model=MODEL, prompt=PROMPT + token, max_tokens=0, echo=True, logprobs=1)
    assert echoed.choices[0].logprobs.token_logprobs[-1] == pytest.approx(logprob, abs=1e-3)


def test_echo_with_generation_puts_the_prompt_first(client) -> None:
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0, echo=True)
    plain = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0)
    assert r.choices[0].text == PROMPT + plain.choices[0].text


def test_a_prompt_list_is_served_as_several_choices(client) -> None:
    prompts = [PROMPT, "One, two, three,"]
    r = client.completions.create(model=MODEL, prompt=prompts, max_tokens=3, temperature=0, n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    for i, prompt in enumerate(prompts):
        alone = client.completions.create(model=MODEL, prompt=prompt, max_tokens=3, temperature=0)
        assert r.choices[2 * i].text == r.choices[2 * i + 1].text == alone.choices[0].text
    stream = client.completions.create(model=MODEL, prompt=prompts, max_tokens=3, temperature=0, stream=True)
    texts: dict[int, str] = {}
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
    assert texts == {0: r.choices[0].text, 1: r.choices[2].text}  # n=1 here: one choice per prompt


@pytest.mark.parametrize("bad", [[-1], [10**9]])
def test_embeddings_of_out_of_vocabulary_ids_are_a_400(client, bad: list[int]) -> None:
    error = bad_request(lambda: client.embeddings.create(model=MODEL, input=[bad], encoding_format="float"))
    assert error.body["param"] == "input" and "token ids must be in" in error.body["message"]


@pytest.mark.parametrize("key", ["-1", "49152", "x"])
def test_logit_bias_keys_outside_the_vocabulary_are_a_400(client, key: str) -> None:
    error = bad_request(lambda: client.completions.create(model=MODEL, prompt=PROMPT, logit_bias={key: 5}))
    assert error.body["param"] == "logit_bias"


def test_an_n_that_can_never_fit_is_a_400_not_a_429(client) -> None:
    error = bad_request(lambda: client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=1, n=100_000))
    assert error.body["param"] == "n" and "can never be served" in error.body["message"]


def test_streamed_chunks_carry_logprobs_when_asked(client) -> None:
    stream = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0, logprobs=2,
                                       stream=True)  # fmt: skip
    chunks = [c.choices[0] for c in stream if c.choices]
    carried = [c.logprobs for c in chunks if c.text]
    assert carried and all(lp is not None and len(lp.top_logprobs[0]) == 2 for lp in carried)
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                          temperature=0, logprobs=True, top_logprobs=1, stream=True)  # fmt: skip
    contents = [c.choices[0].logprobs for c in chat if c.choices and c.choices[0].delta.content]
    assert contents and all(lp is not None and lp.content for lp in contents)


@pytest.mark.parametrize(("prompt", "code"), [([], None), ([5] * 9000, "context_length_exceeded"), ([-3], None)])
def test_prompt_rules_are_the_engines_own_with_param_and_code_as_data(client, prompt: list[int], code) -> None:
    error = bad_request(lambda: client.completions.create(model=MODEL, prompt=prompt or "", max_tokens=0))
    assert error.body["param"] == "prompt" and error.body["code"] == code
