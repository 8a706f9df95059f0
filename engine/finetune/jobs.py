"""Fine-tuning files and jobs as OpenAI's API describes them, kept in SQLite so a restart loses and repeats nothing.

The server writes here (uploads, new jobs, cancel requests); the job process that trains writes its status,
events and checkpoints. Each write is one transaction; SQLite's WAL lets both read while one writes.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (id TEXT PRIMARY KEY, purpose TEXT, filename TEXT, bytes INTEGER,
    created_at INTEGER, path TEXT);
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, model TEXT, training_file TEXT, validation_file TEXT,
    hyperparameters TEXT, suffix TEXT, seed INTEGER, status TEXT, fine_tuned_model TEXT, error TEXT,
    created_at INTEGER, finished_at INTEGER, trained_tokens INTEGER, result TEXT, attempts INTEGER DEFAULT 0,
    pid INTEGER, cancel_requested INTEGER DEFAULT 0, adapter TEXT);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT, job_id TEXT,
    created_at INTEGER, level TEXT, message TEXT, data TEXT);
CREATE TABLE IF NOT EXISTS checkpoints (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT, job_id TEXT,
    created_at INTEGER, step INTEGER, path TEXT, metrics TEXT, fine_tuned_model_checkpoint TEXT);
"""
JSON_COLUMNS = ("hyperparameters", "error", "result", "data", "metrics")
JOB_COLUMNS = frozenset(
    [
        "model",
        "training_file",
        "validation_file",
        "hyperparameters",
        "suffix",
        "seed",
        "status",
        "fine_tuned_model",
        "error",
        "finished_at",
        "trained_tokens",
        "result",
        "attempts",
        "pid",
        "cancel_requested",
        "adapter",
    ]
)


def new_id(prefix: str) -> str:
    """OpenAI-style identifiers: `file-...`, `ftjob-...`, `ftevent-...`."""
    return f"{prefix}-{secrets.token_hex(12)}"


def fine_tuned_name(job: dict[str, Any]) -> str:
    """The model name a job's adapter is served under, in OpenAI's `ft:BASE:SUFFIX:JOB` shape."""
    return f"ft:{job['model']}:{job['suffix'] or 'tollgate'}:{job['id'].removeprefix('ftjob-')}"


def _row(cursor: sqlite3.Cursor, values: tuple) -> dict[str, Any]:
    row = {c[0]: v for c, v in zip(cursor.description, values, strict=True)}
    for key in JSON_COLUMNS:
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row


class JobStore:
    """Files, jobs, events and checkpoints; every method is one short transaction."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        self.path = self.root / "jobs.db"
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
        finally:
            db.close()

    @contextmanager
    def _db(self):
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = _row
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    # -- files ----------------------------------------------------------------------------------------------
    def add_file(self, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        """Store an upload under a new id (written to disk before the row exists, so a row always has bytes)."""
        file_id = new_id("file")
        path = self.root / "files" / file_id
        path.write_bytes(content)
        with self._db() as db:
            db.execute(
                "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?)",
                (file_id, purpose, filename, len(content), int(time.time()), str(path)),
            )
        return self.get_file(file_id)

    def get_file(self, file_id: str) -> dict[str, Any] | None:
        with self._db() as db:
            return db.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()

    def list_files(self, purpose: str | None = None) -> list[dict[str, Any]]:
        with self._db() as db:
            if purpose is None:
                return db.execute("SELECT * FROM files ORDER BY created_at DESC, id").fetchall()
            return db.execute("SELECT * FROM files WHERE purpose = ? ORDER BY created_at DESC", (purpose,)).fetchall()

    def delete_file(self, file_id: str) -> bool:
        with self._db() as db:
            row = db.execute("SELECT path FROM files WHERE id = ?", (file_id,)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        Path(row["path"]).unlink(missing_ok=True)
        return True

    # -- jobs -----------------------------------------------------------------------------------------------
    def create_job(self, fields: dict[str, Any]) -> dict[str, Any]:
        job_id = new_id("ftjob")
        with self._db() as db:
            db.execute(
                "INSERT INTO jobs (id, model, training_file, validation_file, hyperparameters, suffix, seed, status,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'validating_files', ?)",
                (
                    job_id,
                    fields["model"],
                    fields["training_file"],
                    fields.get("validation_file"),
                    json.dumps(fields["hyperparameters"]),
                    fields.get("suffix"),
                    fields["seed"],
                    int(time.time()),
                ),
            )
        self.add_event(job_id, "info", "Validating training file")
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        with self._db() as db:
            return db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()

    def list_jobs(self, after: str | None = None, limit: int = 20) -> tuple[list[dict[str, Any]], bool]:
        """Newest first, the page after job `after`; and whether more follow."""
        with self._db() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY created_at DESC, rowid DESC").fetchall()
        if after is not None:
            ids = [r["id"] for r in rows]
            rows = rows[ids.index(after) + 1 :] if after in ids else []
        return rows[:limit], len(rows) > limit

    def jobs_in(self, *statuses: str) -> list[dict[str, Any]]:
        """Jobs in these statuses, oldest first (the order they are served)."""
        if not set(statuses) <= set(STATUSES):
            raise ValueError(f"unknown job status in {statuses}")
        marks = ",".join("?" * len(statuses))  # placeholders only; the values are bound
        query = f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY created_at, rowid"  # noqa: S608
        with self._db() as db:
            return db.execute(query, statuses).fetchall()

    def update(self, job_id: str, **values: Any) -> None:
        """Set columns of a job (JSON columns take Python values); finishing stamps `finished_at`."""
        if values.get("status") in FINISHED:
            values["finished_at"] = int(time.time())
        if not set(values) <= JOB_COLUMNS:
            raise ValueError(f"unknown job columns {sorted(set(values) - JOB_COLUMNS)}")
        encoded = {k: json.dumps(v) if k in JSON_COLUMNS and v is not None else v for k, v in values.items()}
        query = f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in encoded)} WHERE id = ?"  # noqa: S608 (known columns)
        with self._db() as db:
            db.execute(query, (*encoded.values(), job_id))

    def transition(self, job_id: str, old: tuple[str, ...], new: str, **values: Any) -> bool:
        """Move a job from one of `old` to `new` atomically; False if it was elsewhere (e.g. cancelled meanwhile)."""
        with self._db() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["status"] not in old:
                return False
            db.execute("UPDATE jobs SET status = ? WHERE id = ?", (new, job_id))
        if values or new in FINISHED:
            self.update(job_id, status=new, **values)
        return True

    # -- events and checkpoints -----------------------------------------------------------------------------
    def add_event(self, job_id: str, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO events (id, job_id, created_at, level, message, data) VALUES (?, ?, ?, ?, ?, ?)",
                (new_id("ftevent"), job_id, int(time.time()), level, message, json.dumps(data or {})),
            )

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """Newest first, as OpenAI lists them."""
        with self._db() as db:
            return db.execute("SELECT * FROM events WHERE job_id = ? ORDER BY seq DESC", (job_id,)).fetchall()

    def add_checkpoint(self, job_id: str, step: int, path: str, metrics: dict[str, Any], name: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO checkpoints (id, job_id, created_at, step, path, metrics, fine_tuned_model_checkpoint)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (new_id("ftckpt"), job_id, int(time.time()), step, path, json.dumps(metrics), name),
            )

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        with self._db() as db:
            return db.execute("SELECT * FROM checkpoints WHERE job_id = ? ORDER BY seq DESC", (job_id,)).fetchall()
