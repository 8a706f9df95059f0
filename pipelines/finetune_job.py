"""One fine-tuning job of the server's API, in its own process: `python -m pipelines finetune_job --store DIR
--job ID --base PATH` (the server starts it; run by hand, it resumes a job from its last checkpoint).

It runs the same Prefect flow as the `finetune` stage, then records the outcome: succeeded (with the adapter
the server then serves as `fine_tuned_model`), failed (with the reason) or cancelled. The process ends with
the job, so a cancelled job's memory is returned at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.finetune.data import DataError
from engine.finetune.jobs import JobStore, fine_tuned_name
from engine.finetune.train import Cancelled
from pipelines.finetune_train import train_adapter

BASE_LEARNING_RATE = 1e-3  # OpenAI's learning_rate_multiplier scales this


def settings_from(hyper: dict, seed: int) -> dict:
    """OpenAI's hyperparameters ("auto" or a number) as TrainSettings fields."""
    settings: dict = {"seed": seed}
    if hyper.get("n_epochs", "auto") != "auto":
        settings["epochs"] = int(hyper["n_epochs"])
    if hyper.get("batch_size", "auto") != "auto":
        settings["batch_size"] = int(hyper["batch_size"])
    if hyper.get("learning_rate_multiplier", "auto") != "auto":
        settings["learning_rate"] = BASE_LEARNING_RATE * float(hyper["learning_rate_multiplier"])
    return settings


def run_job(store: JobStore, job_id: str, base: str) -> str:
    """Train the job's adapter and record the outcome; the final status."""
    job = store.get_job(job_id)
    out = store.root / "runs" / job_id
    files = {key: store.get_file(job[key]) for key in ("training_file", "validation_file") if job[key]}
    store.add_event(job_id, "info", f"Fine-tuning job started (attempt {job['attempts']})")
    try:
        result = train_adapter(
            base,
            files["training_file"]["path"],
            files["validation_file"]["path"] if "validation_file" in files else None,
            str(out),
            lora={"method": job["hyperparameters"].get("method", "lora")},
            settings=settings_from(job["hyperparameters"], job["seed"]),
            mlflow_store=str(store.root / "mlruns"),
            job={"store": str(store.root), "id": job_id},
        )
    except Cancelled:
        store.transition(job_id, ("running",), "cancelled")
        store.add_event(job_id, "info", "The job was cancelled")
        return "cancelled"
    except (DataError, ValueError, RuntimeError, OSError) as exc:
        store.transition(job_id, ("running",), "failed", error={"code": "training_failed", "message": str(exc)})
        store.add_event(job_id, "error", f"The job failed: {exc}")
        return "failed"
    name = fine_tuned_name(job)
    done = store.transition(
        job_id, ("running",), "succeeded",
        fine_tuned_model=name, adapter=result["adapter"], trained_tokens=result["tokens"],
        result={k: v for k, v in result.items() if k != "history"},
    )  # fmt: skip
    if done:
        store.add_event(job_id, "info", f"The job has successfully completed: {name}", {"adapter": result["adapter"]})
    return store.get_job(job_id)["status"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines finetune_job", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--store", required=True, help="the server's fine-tuning directory (jobs.db, files/)")
    parser.add_argument("--job", required=True, help="the job id (ftjob-...)")
    parser.add_argument("--base", required=True, help="the base model's checkpoint directory")
    args = parser.parse_args(argv)
    store = JobStore(Path(args.store))
    if store.get_job(args.job) is None:
        print(f"error: no job {args.job} in {args.store}", file=sys.stderr)
        return 2
    status = run_job(store, args.job, args.base)
    print(f"{args.job}: {status}")
    return 0 if status in ("succeeded", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
