"""The fine-tuning job store: OpenAI's ids and pages, one status change at a time, nothing lost on reopen."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.finetune.jobs import JobStore, fine_tuned_name


def new_job(store: JobStore, suffix: str | None = None) -> dict:
    upload = store.add_file("train.jsonl", "fine-tune", b'{"prompt": "a", "completion": "b"}\n')
    fields = {"model": "base", "training_file": upload["id"], "hyperparameters": {"n_epochs": "auto"}, "seed": 1}
    return store.create_job({**fields, "suffix": suffix})


def test_jobs_page_newest_first_and_survive_reopening(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    ids = [new_job(store)["id"] for _ in range(5)]
    first, more = store.list_jobs(limit=2)
    assert [j["id"] for j in first] == ids[::-1][:2] and more
    rest, more = store.list_jobs(after=first[-1]["id"], limit=10)
    assert [j["id"] for j in rest] == ids[::-1][2:] and not more
    reopened = JobStore(tmp_path)
    assert reopened.get_job(ids[0])["status"] == "validating_files"
    assert reopened.events(ids[0])[0]["message"] == "Validating training file"


def test_a_transition_happens_only_from_the_expected_status(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job = new_job(store)
    assert store.transition(job["id"], ("validating_files",), "queued")
    assert not store.transition(job["id"], ("validating_files",), "failed")  # it moved on meanwhile
    assert store.transition(job["id"], ("queued",), "cancelled")
    assert store.get_job(job["id"])["finished_at"] is not None


def test_updates_name_only_known_columns_and_files_delete_their_bytes(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job = new_job(store, suffix="card")
    with pytest.raises(ValueError, match="unknown job columns"):
        store.update(job["id"], **{"status = 'succeeded' --": 1})
    assert fine_tuned_name(job) == f"ft:base:card:{job['id'].removeprefix('ftjob-')}"
    path = Path(store.get_file(job["training_file"])["path"])
    assert path.is_file() and store.delete_file(job["training_file"]) and not path.exists()
    assert not store.delete_file(job["training_file"])
