"""Issue 14's acceptance end to end on SmolLM2-135M (marker: slow, minutes): upload the task's JSONL with the
official client, fine-tune through the API, then the fine-tuned model does the task on held-out prompts while
the base model cannot, and perplexity on wikitext-2 rises by no more than 5%."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import openai
import pytest

from engine.engine import EngineConfig
from engine.finetune.data import read_jsonl
from engine.finetune.evaluate import perplexity
from engine.finetune.task import is_correct
from engine.llm import LLM
from engine.server.state import ServerConfig
from tests.conftest import ROOT, start_server

pytestmark = [pytest.mark.slow, pytest.mark.integration]
DATA = ROOT / "data" / "finetune"


async def accuracy(url: str, model: str, examples: list) -> float:
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client:

        async def one(example) -> bool:
            reply = await client.chat.completions.create(
                model=model, messages=list(example.messages[:-1]), max_tokens=48, temperature=0
            )
            return is_correct(example, reply.choices[0].message.content)

        results = await asyncio.gather(*(one(e) for e in examples))
    return sum(results) / len(results)


@pytest.fixture(scope="module")
def trained(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One job through the API on the task's files; accuracies through the API and the adapter's directory."""
    config = ServerConfig(models=[str(smollm2)], engine=EngineConfig(kv_cache_bytes=256 * 2**20),
                          fine_tuning_dir=str(tmp_path_factory.mktemp("ft")))  # fmt: skip
    server = start_server(config)
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        train = client.files.create(file=(DATA / "train.jsonl").open("rb"), purpose="fine-tune")
        valid = client.files.create(file=(DATA / "valid.jsonl").open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model=smollm2.name, training_file=train.id, validation_file=valid.id, suffix="card",
            hyperparameters={"n_epochs": 1, "batch_size": 8},
        )  # fmt: skip
        deadline = time.monotonic() + 1200
        while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, f"job still {job.status}"
            time.sleep(2)
        assert job.status == "succeeded", job.error
        test = read_jsonl(DATA / "test.jsonl")
        tuned = asyncio.run(accuracy(server.url, job.fine_tuned_model, test))
        base = asyncio.run(accuracy(server.url, smollm2.name, test))
        adapter = server.app.state.jobs.get_job(job.id)["adapter"]
    finally:
        server.stop()
    print(json.dumps({"tuned_accuracy": tuned, "base_accuracy": base}))
    return {"tuned": tuned, "base": base, "adapter": adapter}


def test_a_job_through_the_api_teaches_the_task_the_base_model_cannot_do(trained: dict) -> None:
    assert trained["tuned"] >= 0.9 and trained["base"] <= 0.1


def test_the_fine_tuned_model_keeps_general_quality(smollm2: Path, trained: dict) -> None:
    llm = LLM(smollm2, lora_modules={"card": trained["adapter"]}, max_loras=1)
    ids = llm.tokenizer.encode((ROOT / "data" / "wikitext-2" / "test.txt").read_text())[:4096]
    rise = perplexity(llm, ids, 512, lora="card") / perplexity(llm, ids, 512) - 1
    print(json.dumps({"perplexity_rise": rise}))
    assert rise <= 0.05
