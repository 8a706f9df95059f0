"""OpenAI's files and fine-tuning API through the official `openai` client, on a tiny model: upload, jobs that
train in their own process, errors in OpenAI's shape, cancel, a killed job process, a server restart."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from engine.engine import EngineConfig
from engine.finetune.task import examples, write_jsonl
from engine.server.state import ServerConfig
from tests.conftest import LiveServer, start_server

pytestmark = pytest.mark.integration
JOB_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def jobs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fine_tuning")


def serve(tiny_llama: Path, jobs_dir: Path) -> LiveServer:
    config = ServerConfig(models=[str(tiny_llama)], engine=EngineConfig(kv_cache_bytes=32 * 2**20),
                          fine_tuning_dir=str(jobs_dir))  # fmt: skip
    return start_server(config)


@pytest.fixture(scope="module")
def server(tiny_llama: Path, jobs_dir: Path) -> Iterator[LiveServer]:
    live = serve(tiny_llama, jobs_dir)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def training_file(client: openai.OpenAI, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", examples(16, False, 1))
    return client.files.create(file=path.open("rb"), purpose="fine-tune").id


def wait_for(client: openai.OpenAI, job_id: str, statuses: set[str], timeout: float = JOB_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout}s")


def test_upload_train_and_chat_with_the_fine_tuned_model(
    client: openai.OpenAI, server: LiveServer, training_file: str, tiny_llama: Path
) -> None:
    assert client.files.retrieve(training_file).purpose == "fine-tune"
    assert training_file in [f.id for f in client.files.list().data]
    job = client.fine_tuning.jobs.create(
        model=tiny_llama.name, training_file=training_file, suffix="card",
        hyperparameters={"n_epochs": 3, "batch_size": 4},
    )  # fmt: skip
    assert job.status == "validating_files" and job.fine_tuned_model is None
    done = wait_for(client, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model.startswith(f"ft:{tiny_llama.name}:card:") and done.trained_tokens > 0
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any("training loss" in m for m in messages) and "successfully completed" in messages[0]
    listed = {m.id: m for m in client.models.list().data}
    assert listed[done.fine_tuned_model].model_extra["parent"] == tiny_llama.name
    ask = [{"role": "user", "content": "Make a contact card: Ann Lee lives in Oslo."}]
    reply = client.chat.completions.create(model=done.fine_tuned_model, messages=ask, max_tokens=8, temperature=0)
    assert reply.model == done.fine_tuned_model and reply.choices[0].message.content
    legacy = httpx.get(f"{server.url}/v1/fine-tunes/{job.id}").json()
    assert legacy["object"] == "fine-tune" and legacy["fine_tuned_model"] == done.fine_tuned_model
    assert job.id in [j["id"] for j in httpx.get(f"{server.url}/v1/fine-tunes").json()["data"]]
    assert job.id in [j.id for j in client.fine_tuning.jobs.list(limit=10).data]


def test_errors_come_back_in_openai_s_shape(client: openai.OpenAI, training_file: str, tiny_llama: Path) -> None:
    batch_file = client.files.create(file=("b.jsonl", b'{"custom_id": "1"}\n'), purpose="batch").id
    cases = [
        ({"training_file": "file-nope"}, "training_file"),
        ({"training_file": batch_file}, "training_file"),
        ({"training_file": training_file, "hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        ({"training_file": training_file, "model": "no-such-model"}, "model"),
        ({"training_file": training_file, "suffix": "bad suffix!"}, "suffix"),
    ]
    for body, param in cases:
        with pytest.raises(openai.APIStatusError) as caught:
            client.fine_tuning.jobs.create(**{"model": tiny_llama.name, **body})
        assert caught.value.status_code in (400, 404)
        assert caught.value.body["param"] == param, caught.value.body
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", b"{}"), purpose="no-such-purpose")
    assert client.files.delete(batch_file).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(batch_file)


def test_a_malformed_file_fails_validation_naming_the_line(client: openai.OpenAI, tiny_llama: Path) -> None:
    good = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    bad = client.files.create(file=("bad.jsonl", f"{good}\n{good}\n{{oops\n".encode()), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model=tiny_llama.name, training_file=bad)
    failed = wait_for(client, job.id, {"failed", "succeeded"}, timeout=30)
    assert failed.status == "failed" and failed.error.code == "invalid_training_file"
    assert "line 3" in failed.error.message


def test_cancel_stops_a_running_job_within_seconds(client: openai.OpenAI, training_file: str, tiny_llama: Path) -> None:
    job = client.fine_tuning.jobs.create(model=tiny_llama.name, training_file=training_file,
                                         hyperparameters={"n_epochs": 50, "batch_size": 1})  # fmt: skip
    wait_for(client, job.id, {"running"})
    running = _steps_started(client, job.id)
    cancelled_at = time.monotonic()
    assert client.fine_tuning.jobs.cancel(job.id).id == job.id
    done = wait_for(client, job.id, {"cancelled", "succeeded", "failed"}, timeout=60)
    assert done.status == "cancelled" and running
    assert time.monotonic() - cancelled_at < 30


def _steps_started(client: openai.OpenAI, job_id: str, timeout: float = 120) -> bool:
    """Wait until the job process logged its start (the model is loaded and training)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any("started" in e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=100).data):
            return True
        time.sleep(0.5)
    return False


def test_a_killed_job_process_resumes_and_a_server_restart_picks_the_job_up(
    client: openai.OpenAI, server: LiveServer, training_file: str, tiny_llama: Path, jobs_dir: Path
) -> None:
    job = client.fine_tuning.jobs.create(model=tiny_llama.name, training_file=training_file,
                                         hyperparameters={"n_epochs": 4, "batch_size": 2})  # fmt: skip
    wait_for(client, job.id, {"running"})
    assert _steps_started(client, job.id)
    pid = server.app.state.jobs.get_job(job.id)["pid"]
    os.kill(pid, signal.SIGKILL)
    done = wait_for(client, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error
    record = server.app.state.jobs.get_job(job.id)
    assert record["attempts"] == 2
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any("resuming" in m for m in messages)
    server.stop()  # a new server on the same directory still serves every succeeded job's model
    again = serve(tiny_llama, jobs_dir)
    try:
        names = [m["id"] for m in httpx.get(f"{again.url}/v1/models").json()["data"]]
        assert done.fine_tuned_model in names
    finally:
        again.stop()
