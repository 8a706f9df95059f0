"""One API job in-process: the shared flow trains and records success (events, MLflow run), a cancel request
stops it, and a file that fails to parse fails the job with its line."""

from __future__ import annotations

from pathlib import Path

import mlflow

from engine.finetune.jobs import JobStore
from engine.finetune.task import examples, write_jsonl
from gates.history import tracking_uri
from pipelines.finetune_job import run_job, settings_from


def job(store: JobStore, content: bytes, **hyper: object) -> str:
    upload = store.add_file("train.jsonl", "fine-tune", content)
    fields = {"model": "tiny", "training_file": upload["id"], "hyperparameters": hyper, "seed": 0}
    created = store.create_job(fields)
    store.update(created["id"], status="running", attempts=1)
    return created["id"]


def test_a_job_trains_records_its_model_and_its_mlflow_run(tiny_llama: Path, tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    data = write_jsonl(tmp_path / "t.jsonl", examples(8, False, 1)).read_bytes()
    job_id = job(store, data, n_epochs=1, batch_size=4, learning_rate_multiplier=2, method="lora")
    assert run_job(store, job_id, str(tiny_llama)) == "succeeded"
    record = store.get_job(job_id)
    assert record["fine_tuned_model"].startswith("ft:tiny:tollgate:") and Path(record["adapter"]).is_dir()
    assert any("training loss" in e["message"] for e in store.events(job_id))
    mlflow.set_tracking_uri(tracking_uri(str(tmp_path / "mlruns")))
    runs = mlflow.search_runs(experiment_names=["tollgate-finetune"])
    assert len(runs) == 1 and runs["metrics.steps"][0] == 2


def test_a_cancel_request_stops_the_job_and_a_bad_file_fails_it(tiny_llama: Path, tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    data = write_jsonl(tmp_path / "t.jsonl", examples(8, False, 1)).read_bytes()
    cancelled = job(store, data, n_epochs=1, batch_size=4)
    store.update(cancelled, cancel_requested=1)
    assert run_job(store, cancelled, str(tiny_llama)) == "cancelled"
    broken = job(store, data + b"{not json\n")
    assert run_job(store, broken, str(tiny_llama)) == "failed"
    assert "line 9" in store.get_job(broken)["error"]["message"]


def test_openai_hyperparameters_map_onto_training_settings() -> None:
    assert settings_from({"n_epochs": "auto"}, 3) == {"seed": 3}
    mapped = settings_from({"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}, 0)
    assert mapped == {"seed": 0, "epochs": 2, "batch_size": 4, "learning_rate": 5e-4}
