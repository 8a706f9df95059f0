"""Stage `stress`: a soak of the served stack over HTTP for the profile's duration (`python -m pipelines stress`).

The router and two replicas serve a realistic mix of requests (pipelines/soak.py); every interval goes to the
journal reports/soak_journal.jsonl, which DVC keeps between runs (`persist`). A segment that crashes, is killed
or times out is rerun (Prefect retries the segment; `dvc repro` again does too) and continues the journal until
the profile's hours are reached, so a 72-hour soak runs in segments. Writes metrics/stress.json (namespace
`stress`; `stress.mtbf` carries the hours and the failure count).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from itertools import accumulate
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from scipy import stats

from gates.provenance import git_head, sha256_json
from pipelines.common import REPORTS, TRANSIENT_RETRIES, now_utc, stage_run_name, write_metrics
from pipelines.config import TollgateConf, load_params
from pipelines.live_server import running_router
from pipelines.soak import Journal, Soak, kv_in_use

JOURNAL = REPORTS / "soak_journal.jsonl"
WARMUP_FRACTION = 0.25  # RSS samples before this share of the run are allocator warm-up, not a trend
CONFIDENCE = 0.95


def rss_trend(samples: list[tuple[float, float]]) -> dict[str, float | int]:
    """Least-squares RSS slope (MB/h) after warm-up with its two-sided 95% interval; n = samples used."""
    steady = samples[int(len(samples) * WARMUP_FRACTION) :]
    if len(steady) < 3 or steady[-1][0] == steady[0][0]:
        return {"n": len(steady)}
    if len({mb for _, mb in steady}) == 1:  # not one page more or less: a slope of exactly 0 (linregress gives nan)
        return {"mb_per_hour": 0.0, "ci_low_mb_per_hour": 0.0, "ci_high_mb_per_hour": 0.0, "n": len(steady)}
    fit = stats.linregress([t / 3600 for t, _ in steady], [mb for _, mb in steady])
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, len(steady) - 2)) * float(fit.stderr)
    slope = float(fit.slope)
    return {
        "mb_per_hour": slope,
        "ci_low_mb_per_hour": slope - half,
        "ci_high_mb_per_hour": slope + half,
        "n": len(steady),
    }


def journal_for(p: TollgateConf) -> Journal:
    """The journal of this commit, model and stress settings: a rerun continues it, anything else starts anew."""
    s = p.profile.stress
    settings = [p.model.name, p.quant.name, s.duration_s, s.max_prompt_len, s.max_new_tokens]
    return Journal(JOURNAL, {"git_sha": git_head(), "settings": sha256_json(settings)})


@task(**TRANSIENT_RETRIES)
def segment(p: TollgateConf) -> float:
    """Soak until the journal holds the profile's duration; returns the KV share still in use once idle."""
    s, journal = p.profile.stress, journal_for(p)
    remaining = s.duration_s - sum(r["seconds"] for r in journal.records())
    interval = max(1.0, s.duration_s / 400)
    with running_router(p, replicas=2) as (url, router_pid):
        if remaining > 0:
            get_run_logger().info("soaking %.0f s more (interval %.0f s)", remaining, interval)
            soak = Soak(url, Path(p.model.path).name, router_pid, s.max_prompt_len, s.max_new_tokens)
            asyncio.run(soak.run(journal, remaining, interval))
        time.sleep(1.0)  # requests the clients walked away from are reaped on the replicas' next step
        return kv_in_use(url)


def summarize(records: list[dict[str, Any]], kv_at_end: float) -> dict[str, Any]:
    """Totals over every interval of every segment; a leak counts only when its whole 95% interval is above 0."""
    counts, failures, t = Counter(), Counter(), 0.0
    series: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        counts.update(r["counts"])
        failures.update(r["failures"])
        t += r["seconds"]
        for name, mb in r["rss_mb"].items():
            series.setdefault(name, []).append((t, mb))
    hours = t / 3600
    trends = {name: rss_trend(samples) for name, samples in series.items()}
    worst = max(trends.values(), key=lambda tr: tr.get("ci_low_mb_per_hour", float("-inf")), default={"n": 0})
    greedy = counts.pop("greedy", 0)
    mismatches = counts.pop("greedy_mismatch", 0)
    completed = sum(counts.values()) + greedy
    out: dict[str, Any] = {
        "hours": hours,
        "requests": completed + sum(failures.values()),
        "completed": completed,
        "failures": sum(failures.values()),
        "failures_by_cause": dict(failures),
        "tokens": sum(r["tokens"] for r in records),
        "stable_hours": hours if not failures else 0.0,
        "mtbf": {"hours_run": hours, "failures": sum(failures.values())},
        "crashes_per_1m_requests": sum(failures.values()) / max(completed + sum(failures.values()), 1) * 1e6,
        "rss_growth": worst,
        "rss_growth_by_process": trends,
        "kv_in_use_at_end_ratio": kv_at_end,
        "greedy": {"checked": greedy, "mismatches": mismatches},
        "intervals": len(records),
    }
    if "ci_low_mb_per_hour" in worst:
        out["leaks_detected"] = int(worst["ci_low_mb_per_hour"] > 0)
    drift = latency_drift_ratio(records)
    if drift is not None:
        out["latency_drift_ratio"] = drift
    return out


def latency_drift_ratio(records: list[dict[str, Any]]) -> float | None:
    """Median interval P95 of the last hour over the first (of the last and first quarter in a shorter soak)."""
    timed = [r for r in records if r["p95_s"] is not None]
    if len(timed) < 8:
        return None
    per_hour = next((i + 1 for i, t in enumerate(accumulate(r["seconds"] for r in timed)) if t >= 3600), len(timed))
    k = min(per_hour, len(timed) // 4)
    first, last = sorted(r["p95_s"] for r in timed[:k]), sorted(r["p95_s"] for r in timed[-k:])
    return last[k // 2] / first[k // 2]


@flow(name="stress", flow_run_name=stage_run_name)
def stress_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Soak the served stack for the profile's duration (continuing its journal) and record what it saw."""
    started = now_utc()
    p = load_params(Path(params_path))
    kv_at_end = segment(p)
    metrics = {"stress": summarize(journal_for(p).records(), kv_at_end)}
    write_metrics("stress", metrics, params_path, started)
    return metrics
