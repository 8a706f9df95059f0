"""The soak's journal (what makes a killed soak resumable) and the totals the stress stage derives from it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipelines.config import compose
from pipelines.soak import Journal
from pipelines.stress import latency_drift_ratio, summarize
from tests.conftest import ROOT

KEY = {"git_sha": "abc", "settings": "s1"}


def interval(seconds: float, rss: float, failures: dict | None = None, p95: float = 0.1) -> dict:
    counts = {"stream": 3, "greedy": 1, "greedy_mismatch": 0}
    return {"seconds": seconds, "counts": counts, "failures": failures or {}, "tokens": 40, "p95_s": p95,
            "rss_mb": {"router": 100.0, "replica0": rss}}  # fmt: skip


def test_a_journal_continues_for_its_key_and_is_set_aside_for_another(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl", KEY)
    journal.append(interval(10, 500))
    journal.append(interval(10, 501))
    assert len(Journal(tmp_path / "j.jsonl", KEY).records()) == 2  # a rerun sees both
    other = Journal(tmp_path / "j.jsonl", {**KEY, "git_sha": "def"})
    assert other.records() == [] and len(list(tmp_path.glob("j.*.old"))) == 1  # kept, not mixed in


def test_a_half_written_last_line_is_not_read(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl", KEY)
    journal.append(interval(10, 500))
    with journal.path.open("a") as fh:
        fh.write('{"seconds": 10, "cou')  # a kill in the middle of a write
    assert len(journal.records()) == 1


def test_totals_add_up_over_segments_and_a_growing_process_is_a_leak() -> None:
    records = [interval(10, 500 + 2 * i) for i in range(40)]
    records[5]["failures"] = {"http_500": 1}
    out = summarize(records, kv_at_end=0.0)
    assert out["hours"] == pytest.approx(400 / 3600) and out["failures"] == 1 and out["stable_hours"] == 0.0
    assert out["completed"] == 40 * 4 and out["requests"] == 161 and out["failures_by_cause"] == {"http_500": 1}
    assert out["leaks_detected"] == 1 and out["rss_growth"]["mb_per_hour"] == pytest.approx(720, rel=0.01)
    assert out["greedy"] == {"checked": 40, "mismatches": 0} and out["kv_in_use_at_end_ratio"] == 0.0


def test_latency_drift_compares_the_first_and_last_quarter_of_a_short_soak() -> None:
    records = [interval(10, 500, p95=0.1 if i < 20 else 0.2) for i in range(40)]
    assert summarize(records, 0.0)["latency_drift_ratio"] == pytest.approx(2.0)


def test_latency_drift_of_a_long_soak_compares_its_first_and_last_hour() -> None:
    records = [interval(600, 500, p95=0.1) for _ in range(6)] + [interval(600, 500, p95=0.3) for _ in range(30)]
    records += [interval(600, 500, p95=0.2) for _ in range(6)]  # 7 hours: only the last hour is at 0.2
    assert latency_drift_ratio(records) == pytest.approx(2.0)


SEGMENT = """
import sys, time
from pipelines.config import compose
from pipelines.soak import Journal
journal = Journal(__import__("pathlib").Path(sys.argv[1]), {"git_sha": "abc", "settings": "s1"})
while True:
    journal.append({"seconds": 0.05, "counts": {}, "failures": {}, "tokens": 0, "p95_s": None, "rss_mb": {}})
    time.sleep(0.05)
"""


@pytest.mark.slow
def test_a_killed_segment_loses_no_written_interval(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", SEGMENT, str(path)], cwd=ROOT)
    time.sleep(3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = sum(1 for line in path.read_text().splitlines() if line.endswith("}")) - 1
    records = Journal(path, KEY).records()
    assert written >= 10 and len(records) == written
    assert all(json.loads(json.dumps(r)) == r for r in records)


@pytest.mark.slow
@pytest.mark.integration
def test_a_killed_stress_stage_resumes_its_journal_and_the_hours_add_up(tmp_path: Path, smollm2: Path) -> None:
    params = compose(["profile.stress.duration_s=30", "profile.stress.max_new_tokens=8"])
    params["model"]["path"] = str(smollm2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for shared in ("dvc.yaml", "conf"):  # what the stage's provenance reads
        (tmp_path / shared).symlink_to(ROOT / shared)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pipelines", "stress"]
    first = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True)
    journal = tmp_path / "reports" / "soak_journal.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not journal.is_file() or len(journal.read_text().splitlines()) < 10):
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # the stage, its router and replicas: a crash takes the whole group
    first.wait()
    before = [line for line in journal.read_text().splitlines() if line.endswith("}")]
    assert len(before) >= 10 and not (tmp_path / "metrics" / "stress.json").exists()
    assert subprocess.run(command, cwd=tmp_path, env=env, timeout=600).returncode == 0
    after = journal.read_text().splitlines()
    assert after[: len(before)] == before  # nothing written before the kill was lost or rewritten
    stress = json.loads((tmp_path / "metrics" / "stress.json").read_text())["stress"]
    seconds = sum(json.loads(line)["seconds"] for line in after[1:])
    assert stress["hours"] * 3600 == pytest.approx(seconds) and seconds >= 30
    assert stress["intervals"] == len(after) - 1 and stress["failures"] == 0
