"""Runs the fine-tuning API's jobs, one at a time, each in its own process (`python -m pipelines finetune_job`).

The store is the truth; this loop moves jobs along: validating_files -> queued (or failed, naming the bad line),
queued -> running (a process started), and reads what the process left behind when it ends. A process that
died mid-job (killed, out of memory) is restarted from the job's last checkpoint, once; a job left `running` by
a server that stopped is picked up the same way when the server starts again. Nothing else holds job state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.finetune.data import DataError, read_jsonl
from engine.finetune.jobs import JobStore

log = logging.getLogger(__name__)
POLL_S = 0.5
MAX_ATTEMPTS = 2  # the first run and one resume after a crash
CANCEL_GRACE_S = 30.0  # a running job stops at its next step; past this it is terminated


def _is_job_process(pid: int | None, job_id: str) -> bool:
    """Whether `pid` is still the process that ran this job (pids are reused)."""
    try:
        return pid is not None and job_id.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class JobRunner:
    """The loop: validate new jobs, start the oldest queued one, settle the one whose process ended."""

    def __init__(self, store: JobStore, base_path: Callable[[str], str], method: str) -> None:
        self.store, self.base_path, self.method = store, base_path, method
        self.process: subprocess.Popen | None = None
        self.job_id: str | None = None
        self.cancel_seen: float | None = None

    def recover(self) -> None:
        """At start: jobs a previous server left running go back to the queue (they resume from checkpoints)."""
        for job in self.store.jobs_in("running"):
            if _is_job_process(job["pid"], job["id"]):
                os.kill(job["pid"], signal.SIGTERM)
            self.store.update(job["id"], status="queued", pid=None)
            self.store.add_event(job["id"], "warn", "The server restarted; the job resumes from its last checkpoint")

    async def run(self) -> None:
        """Tick until cancelled (server shutdown), then stop the job process; it resumes on the next start."""
        try:
            while True:
                await asyncio.to_thread(self.tick)
                await asyncio.sleep(POLL_S)
        finally:
            if self.process is not None and self.process.poll() is None:
                self.process.terminate()

    def tick(self) -> None:
        for job in self.store.jobs_in("validating_files"):
            self._validate(job)
        if self.process is not None:
            self._watch()
        if self.process is None:
            queued = self.store.jobs_in("queued")
            if queued:
                self._start(queued[0])

    def _validate(self, job: dict[str, Any]) -> None:
        for key in ("training_file", "validation_file"):
            record = job[key] and self.store.get_file(job[key])
            if job[key] is None:
                continue
            try:
                if not record:
                    raise DataError(job[key], 0, "the file was deleted")
                read_jsonl(record["path"])
            except DataError as exc:
                error = {"code": f"invalid_{key}", "message": str(exc), "param": key}
                self.store.transition(job["id"], ("validating_files",), "failed", error=error)
                self.store.add_event(job["id"], "error", f"File validation failed: {exc}")
                return
        if self.store.transition(job["id"], ("validating_files",), "queued"):
            self.store.add_event(job["id"], "info", "Files validated, moving job to queued state")

    def _start(self, job: dict[str, Any]) -> None:
        command = [sys.executable, "-m", "pipelines", "finetune_job", "--store", str(self.store.root),
                   "--job", job["id"], "--base", self.base_path(job["model"])]  # fmt: skip
        if job["hyperparameters"].get("method") is None:
            self.store.update(job["id"], hyperparameters={**job["hyperparameters"], "method": self.method})
        log_path = self.store.root / "runs" / f"{job['id']}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        self.job_id, self.cancel_seen = job["id"], None
        self.store.update(job["id"], status="running", pid=self.process.pid, attempts=job["attempts"] + 1)
        log.info("fine-tuning job %s started (pid %d)", job["id"], self.process.pid)

    def _watch(self) -> None:
        job = self.store.get_job(self.job_id)
        if self.process.poll() is None:
            if job["cancel_requested"]:
                self.cancel_seen = self.cancel_seen or time.monotonic()
                if time.monotonic() - self.cancel_seen > CANCEL_GRACE_S:
                    self.process.terminate()
            return
        code, self.process = self.process.returncode, None
        if job["status"] == "running" and job["cancel_requested"]:
            self.store.transition(job["id"], ("running",), "cancelled")
        elif job["status"] == "running" and job["attempts"] < MAX_ATTEMPTS:
            self.store.update(job["id"], status="queued", pid=None)
            self.store.add_event(job["id"], "warn", f"The job process ended (exit {code}); resuming from a checkpoint")
        elif job["status"] == "running":
            error = {"code": "worker_died", "message": f"the job process ended {job['attempts']} times (exit {code})"}
            self.store.transition(job["id"], ("running",), "failed", error=error)
            self.store.add_event(job["id"], "error", error["message"])
