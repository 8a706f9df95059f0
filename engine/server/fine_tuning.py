"""OpenAI's files and fine-tuning endpoints, and the legacy `/v1/fine-tunes` ones mapped onto the same jobs.

    POST /v1/files (multipart: file, purpose)     GET /v1/files[/{id}]     DELETE /v1/files/{id}
    POST /v1/fine_tuning/jobs                     GET /v1/fine_tuning/jobs[/{id}[/events|/checkpoints]]
    POST /v1/fine_tuning/jobs/{id}/cancel         POST|GET /v1/fine-tunes, GET /v1/fine-tunes/{id}[/events]

A finished job's `fine_tuned_model` is served at once as a LoRA adapter on its base model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Form, Query, Request, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from engine.finetune.jobs import FINISHED, JobStore
from engine.server.job_runner import JobRunner
from engine.server.protocol import ApiError
from engine.server.state import Server, ServerConfig

PURPOSES = ("fine-tune", "batch", "assistants", "user_data", "evals", "vision")
SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
Auto = Literal["auto"]
LEGACY_STATUS = {"validating_files": "pending", "queued": "pending"}
OFF = "fine-tuning is off on this server: start it with --fine-tuning-dir DIR"


class Hyperparameters(BaseModel):
    """OpenAI's hyperparameters; anything else is refused rather than ignored."""

    model_config = ConfigDict(extra="forbid")
    n_epochs: Auto | int = Field("auto", description="1 to 50")
    batch_size: Auto | int = "auto"
    learning_rate_multiplier: Auto | float = "auto"


class JobRequest(BaseModel):
    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    suffix: str | None = None
    seed: int | None = None


class LegacyJobRequest(BaseModel):
    """`POST /v1/fine-tunes` took its hyperparameters at the top level."""

    model: str
    training_file: str
    validation_file: str | None = None
    n_epochs: Auto | int = "auto"
    batch_size: Auto | int = "auto"
    learning_rate_multiplier: Auto | float = "auto"
    suffix: str | None = None


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "bytes", "created_at", "filename", "purpose")
    return {"object": "file", **{k: row[k] for k in keys}, "status": "processed", "status_details": None}


def job_object(row: dict[str, Any]) -> dict[str, Any]:
    hyper = row["hyperparameters"]
    return {
        "object": "fine_tuning.job",
        "id": row["id"],
        "model": row["model"],
        "created_at": row["created_at"],
        "finished_at": row["finished_at"],
        "fine_tuned_model": row["fine_tuned_model"],
        "organization_id": "org-tollgate",
        "result_files": [],
        "status": row["status"],
        "training_file": row["training_file"],
        "validation_file": row["validation_file"],
        "hyperparameters": {k: hyper.get(k, "auto") for k in ("n_epochs", "batch_size", "learning_rate_multiplier")},
        "trained_tokens": row["trained_tokens"],
        "error": row["error"],
        "seed": row["seed"],
        "user_provided_suffix": row["suffix"],
        "estimated_finish": None,
        "integrations": [],
    }


def legacy_object(row: dict[str, Any]) -> dict[str, Any]:
    job = job_object(row)
    return {
        "object": "fine-tune",
        "id": row["id"],
        "model": row["model"],
        "created_at": row["created_at"],
        "updated_at": row["finished_at"] or row["created_at"],
        "fine_tuned_model": row["fine_tuned_model"],
        "status": LEGACY_STATUS.get(row["status"], row["status"]),
        "hyperparams": job["hyperparameters"],
        "training_files": [row["training_file"]],
        "validation_files": [row["validation_file"]] if row["validation_file"] else [],
        "result_files": [],
    }


def event_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.event",
        "id": row["id"],
        "created_at": row["created_at"],
        "level": row["level"],
        "message": row["message"],
        "data": row["data"],
        "type": "message",
    }


def _store(request: Request) -> JobStore:
    store = getattr(request.app.state, "jobs", None)
    if store is None:
        raise ApiError(404, OFF, code="not_enabled")
    return store


def _job(store: JobStore, job_id: str) -> dict[str, Any]:
    row = store.get_job(job_id)
    if row is None:
        raise ApiError(404, f"no fine-tuning job {job_id!r}", "fine_tuning_job_id", "fine_tuning_job_not_found")
    return row


def _check_file(store: JobStore, file_id: str | None, param: str) -> None:
    if file_id is None:
        return
    row = store.get_file(file_id)
    if row is None:
        raise ApiError(400, f"file {file_id!r} does not exist", param, "invalid_request_error")
    if row["purpose"] != "fine-tune":
        raise ApiError(400, f"file {file_id!r} has purpose {row['purpose']!r}; upload it with purpose "
                       "'fine-tune'", param, "invalid_file_purpose")  # fmt: skip


def _create(server: Server, store: JobStore, req: JobRequest) -> dict[str, Any]:
    if req.model not in server.pool.paths:
        raise ApiError(404, f"model {req.model!r} cannot be fine-tuned here; base models: {server.pool.names}",
                       "model", "model_not_found")  # fmt: skip
    _check_file(store, req.training_file, "training_file")
    _check_file(store, req.validation_file, "validation_file")
    hyper = req.hyperparameters
    limits = {"n_epochs": (1, 50), "batch_size": (1, 256), "learning_rate_multiplier": (1e-3, 10.0)}
    for name, (low, high) in limits.items():
        value = getattr(hyper, name)
        if value != "auto" and not low <= value <= high:
            raise ApiError(400, f"hyperparameters.{name} must be 'auto' or in [{low}, {high}], got {value}",
                           f"hyperparameters.{name}", "invalid_hyperparameter")  # fmt: skip
    if req.suffix is not None and not SUFFIX.match(req.suffix):
        raise ApiError(400, "suffix must be 1 to 40 letters, digits, '-' or '_'", "suffix", "invalid_suffix")
    fields = {**req.model_dump(), "hyperparameters": hyper.model_dump(), "seed": 42 if req.seed is None else req.seed}
    return store.create_job(fields)


def _cancel(store: JobStore, job_id: str) -> dict[str, Any]:
    row = _job(store, job_id)
    if row["status"] in FINISHED:
        raise ApiError(400, f"job {job_id} has already {row['status']}", "fine_tuning_job_id", "job_finished")
    store.update(job_id, cancel_requested=1)
    if store.transition(job_id, ("validating_files", "queued"), "cancelled"):
        store.add_event(job_id, "info", "The job was cancelled before it started")
    else:
        store.add_event(job_id, "info", "Cancellation requested; the job stops at its next step")
    return _job(store, job_id)


def build_router(server: Server) -> APIRouter:
    """The endpoints; the store is `app.state.jobs` (None when fine-tuning is off)."""
    router = APIRouter()

    @router.post("/v1/files")
    async def upload(request: Request, file: UploadFile, purpose: str = Form(...)) -> dict[str, Any]:
        if purpose not in PURPOSES:
            raise ApiError(400, f"purpose must be one of {', '.join(PURPOSES)}", "purpose", "invalid_purpose")
        content = await file.read()
        if not content:
            raise ApiError(400, "the file is empty", "file", "invalid_file")
        return file_object(_store(request).add_file(file.filename or "upload.jsonl", purpose, content))

    @router.get("/v1/files")
    async def files(request: Request, purpose: str | None = None) -> dict[str, Any]:
        return {"object": "list", "data": [file_object(r) for r in _store(request).list_files(purpose)]}

    @router.get("/v1/files/{file_id}")
    async def file(request: Request, file_id: str) -> dict[str, Any]:
        row = _store(request).get_file(file_id)
        if row is None:
            raise ApiError(404, f"no file {file_id!r}", "file_id", "file_not_found")
        return file_object(row)

    @router.delete("/v1/files/{file_id}")
    async def delete_file(request: Request, file_id: str) -> dict[str, Any]:
        if not _store(request).delete_file(file_id):
            raise ApiError(404, f"no file {file_id!r}", "file_id", "file_not_found")
        return {"id": file_id, "object": "file", "deleted": True}

    @router.post("/v1/fine_tuning/jobs")
    async def create(request: Request, req: JobRequest) -> dict[str, Any]:
        return job_object(_create(server, _store(request), req))

    @router.get("/v1/fine_tuning/jobs")
    async def jobs(request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100)) -> dict[str, Any]:
        rows, more = _store(request).list_jobs(after, limit)
        return {"object": "list", "data": [job_object(r) for r in rows], "has_more": more}

    add_job_routes(router, "/v1/fine_tuning/jobs", job_object)

    @router.get("/v1/fine_tuning/jobs/{job_id}/events")
    async def events(request: Request, job_id: str, limit: int = 20, after: str | None = None) -> dict[str, Any]:
        rows = [event_object(r) for r in _events(request, job_id)]
        if after is not None:
            ids = [r["id"] for r in rows]
            rows = rows[ids.index(after) + 1 :] if after in ids else []
        return {"object": "list", "data": rows[:limit], "has_more": len(rows) > limit}

    @router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    async def checkpoints(request: Request, job_id: str) -> dict[str, Any]:
        store = _store(request)
        _job(store, job_id)
        data = [
            {"object": "fine_tuning.job.checkpoint", "id": r["id"], "created_at": r["created_at"],
             "fine_tuned_model_checkpoint": r["fine_tuned_model_checkpoint"], "step_number": r["step"],
             "metrics": r["metrics"], "fine_tuning_job_id": job_id}
            for r in store.checkpoints(job_id)
        ]  # fmt: skip
        return {"object": "list", "data": data, "has_more": False}

    add_legacy_routes(router, server)
    return router


def add_job_routes(router: APIRouter, prefix: str, shape: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """GET PREFIX/{id} and POST PREFIX/{id}/cancel, answering in `shape` (the current API's or the legacy one)."""

    async def retrieve(request: Request, job_id: str) -> dict[str, Any]:
        return shape(_job(_store(request), job_id))

    async def cancel(request: Request, job_id: str) -> dict[str, Any]:
        return shape(_cancel(_store(request), job_id))

    router.add_api_route(f"{prefix}/{{job_id}}", retrieve, methods=["GET"])
    router.add_api_route(f"{prefix}/{{job_id}}/cancel", cancel, methods=["POST"])


def _events(request: Request, job_id: str) -> list[dict[str, Any]]:
    """A job's events, newest first (404 for an unknown job)."""
    store = _store(request)
    _job(store, job_id)
    return store.events(job_id)


def add_legacy_routes(router: APIRouter, server: Server) -> None:
    """`/v1/fine-tunes`, the API the criteria name, over the same jobs."""

    @router.post("/v1/fine-tunes")
    async def legacy_create(request: Request, req: LegacyJobRequest) -> dict[str, Any]:
        hyper = Hyperparameters(n_epochs=req.n_epochs, batch_size=req.batch_size,
                                learning_rate_multiplier=req.learning_rate_multiplier)  # fmt: skip
        body = JobRequest(model=req.model, training_file=req.training_file, validation_file=req.validation_file,
                          hyperparameters=hyper, suffix=req.suffix)  # fmt: skip
        return legacy_object(_create(server, _store(request), body))

    @router.get("/v1/fine-tunes")
    async def legacy_list(request: Request) -> dict[str, Any]:
        rows, _ = _store(request).list_jobs(None, 100)
        return {"object": "list", "data": [legacy_object(r) for r in rows]}

    add_job_routes(router, "/v1/fine-tunes", legacy_object)

    @router.get("/v1/fine-tunes/{job_id}/events")
    async def legacy_events(request: Request, job_id: str) -> dict[str, Any]:
        data = [{"object": "fine-tune-event", "created_at": r["created_at"], "level": r["level"],
                 "message": r["message"]} for r in reversed(_events(request, job_id))]  # fmt: skip
        return {"object": "list", "data": data}


def install_fine_tuning(app: FastAPI, server: Server, config: ServerConfig) -> JobRunner | None:
    """The endpoints (404 "fine-tuning is off" without a directory), the job store on `app.state.jobs`, and
    the runner the app's lifespan starts; a succeeded job's adapter is served under its `fine_tuned_model`."""
    app.include_router(build_router(server))
    app.state.jobs = None
    if config.fine_tuning_dir is None:
        return None
    store = app.state.jobs = JobStore(config.fine_tuning_dir)
    server.adapter_source = lambda: [
        (job["fine_tuned_model"], job["model"], job["adapter"]) for job in store.jobs_in("succeeded")
    ]
    return JobRunner(store, lambda model: server.pool.paths[model], config.fine_tuning_method)
