"""The Prefect flow that trains one adapter, shared by the `finetune` stage and the server's fine-tuning jobs.

Every run is an MLflow run too: its parameters, the training and validation loss per step, and the adapter
as an artifact.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
from prefect import flow

from engine.finetune.data import DataError
from engine.finetune.jobs import JobStore, fine_tuned_name
from engine.finetune.options import add_train_arguments, settings_from
from engine.finetune.train import Trainer, write_result
from gates.history import artifact_location, open_store
from pipelines.prefect_parent import PARENT_ENV, run_in_parent


def log_to_mlflow(store: str, experiment: str, name: str, params: dict[str, Any], result: dict[str, Any]) -> str:
    """One MLflow run for one adapter: parameters, the loss curves, the numbers and the adapter files."""
    mlflow.set_tracking_uri(open_store(store))
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=artifact_location(store))
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_params(params)
        for row in result["history"]:
            step = int(row["step"])
            mlflow.log_metric("train_loss", row["train_loss"], step=step)
            for curve in ("valid_loss", "kl"):
                if curve in row:
                    mlflow.log_metric(curve, row[curve], step=step)
        numbers = ("steps", "tokens", "seconds", "tokens_per_s", "peak_rss_mb")
        mlflow.log_metrics({k: float(result[k]) for k in numbers})
        mlflow.log_artifacts(result["adapter"], artifact_path="adapter")
        return run.info.run_id


class JobHooks:
    """A run's events and checkpoints into its job's record; a cancel request (or a dead server) stops it."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id, self.parent = store, job_id, os.getppid()

    def event(self, message: str, data: dict[str, Any]) -> None:
        self.store.add_event(self.job_id, "info", message, data)
        if "path" in data:  # a checkpoint
            step = int(Path(data["path"]).name.split("-")[1])
            job = self.store.get_job(self.job_id)
            name = f"{fine_tuned_name(job)}:ckpt-step-{step}"
            self.store.add_checkpoint(self.job_id, step, data["path"], {"step": step}, name)

    def should_stop(self) -> bool:
        """Stop on a cancel request; exit when the server that started this process is gone (no orphans)."""
        if os.getppid() != self.parent:
            raise SystemExit("the server that started this job is gone; the job resumes when it restarts")
        job = self.store.get_job(self.job_id)
        return job is None or bool(job["cancel_requested"])


@flow(name="finetune-adapter")
def train_adapter(
    base: str,
    train_file: str,
    valid_file: str | None,
    out: str,
    lora: dict[str, Any],
    settings: dict[str, Any],
    mlflow_store: str | None = None,
    experiment: str = "tollgate-finetune",
    job: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train one LoRA/QLoRA adapter on OpenAI-format JSONL (resuming from `out`'s checkpoints); its result.

    `job` ({"store": DIR, "id": ID}) ties the run to a fine-tuning job: its events and checkpoints go to the job
    store, and the run stops at the next step once the job is cancelled."""
    trainer = Trainer.from_files(base, lora, settings, train_file, valid_file, out)
    hooks = JobHooks(JobStore(job["store"]), job["id"]) if job else None
    run = trainer.run(on_event=hooks and hooks.event, should_stop=hooks and hooks.should_stop)
    write_result(run, Path(out) / "result.json")
    result = asdict(run)
    if mlflow_store:
        params = {**{f"lora.{k}": v for k, v in asdict(trainer.lora).items()}, **asdict(trainer.settings)}
        params["base"], params["examples"] = base, len(trainer.train_rows)
        result["mlflow_run_id"] = log_to_mlflow(mlflow_store, experiment, Path(out).name, params, result)
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines finetune_train`: the flow for one adapter, in this process (the stage runs each
    adapter in its own process, so peak memory is that adapter's alone)."""
    parser = argparse.ArgumentParser(prog="python -m pipelines finetune_train", description=main.__doc__)
    add_train_arguments(parser)
    parser.add_argument(
        "--mlflow-store", help="MLflow folder (SQLite store inside) or tracking server URL; none: not tracked"
    )
    parser.add_argument("--experiment", default="tollgate-finetune")
    args = parser.parse_args(argv)
    lora, settings = settings_from(args)
    parameters = {"base": args.base, "train_file": args.train, "valid_file": args.valid, "out": args.out,
                  "lora": asdict(lora), "settings": asdict(settings), "mlflow_store": args.mlflow_store,
                  "experiment": args.experiment}  # fmt: skip
    try:
        if os.environ.get(PARENT_ENV):  # started by a stage: a subflow of its flow run
            result = run_in_parent(train_adapter, parameters, os.environ[PARENT_ENV])
        else:
            result = train_adapter(**parameters)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"adapter: {result['adapter']} ({result['steps']} steps, peak RSS {result['peak_rss_mb']:.0f} MiB)")
    return 0
