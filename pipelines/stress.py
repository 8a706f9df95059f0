"""Stage `stress`: a soak of the profile's duration under a steady mix of requests (`python -m pipelines stress`).

Requests of random length and sampling settings (a few deliberately invalid) keep the engine busy; every
exception escaping the engine loop counts as a failure, and resident memory is sampled to detect leaks.
Writes metrics/stress.json (namespace `stress`; `stress.mtbf` carries the run length and the failure count).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from scipy import stats

from engine import LLM, SamplingParams
from engine.bench import proc_status_mb
from engine.errors import ParameterError
from pipelines.common import now_utc, write_metrics
from pipelines.config import load_params

WARMUP_FRACTION = 0.25  # RSS samples before this share of the run are allocator warm-up, not a trend
CONFIDENCE = 0.95


def rss_mb() -> float:
    """Resident memory of this process now."""
    return proc_status_mb("VmRSS")


def rss_trend(samples: list[tuple[float, float]]) -> dict[str, float | int]:
    """Least-squares RSS slope (MB/h) after warm-up with its two-sided 95% interval; n = samples used."""
    steady = samples[int(len(samples) * WARMUP_FRACTION) :]
    if len(steady) < 3 or steady[-1][0] == steady[0][0]:
        return {"n": len(steady)}
    fit = stats.linregress([t / 3600 for t, _ in steady], [mb for _, mb in steady])
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, len(steady) - 2)) * fit.stderr
    return {
        "mb_per_hour": fit.slope,
        "ci_low_mb_per_hour": fit.slope - half,
        "ci_high_mb_per_hour": fit.slope + half,
        "n": len(steady),
    }


def random_request(rng: random.Random, vocab: int, max_prompt: int, max_new: int) -> tuple[list[int], dict[str, Any]]:
    """A random prompt and sampling settings; about 5% are invalid on purpose."""
    prompt = [rng.randrange(100, vocab - 100) for _ in range(rng.randint(1, max_prompt))]
    params = {
        "temperature": rng.choice([0.0, 0.7, 1.0]),
        "top_p": rng.choice([1.0, 0.9]),
        "top_k": rng.choice([0, 40]),
        "max_tokens": rng.randint(1, max_new),
        "seed": rng.randint(0, 1000),
        "frequency_penalty": rng.choice([0.0, 0.5]),
    }
    if rng.random() < 0.05:
        params["temperature"] = -1.0  # invalid input: must be rejected with ValueError, not crash
    return prompt, params


def top_up(engine: Any, rng: random.Random, stats: dict[str, int], max_prompt: int, max_new: int) -> None:
    """Keep 8 requests in flight; invalid ones must be rejected with a ParameterError, not crash anything."""
    vocab = engine.model.config.vocab_size
    while len(engine.scheduler.waiting) + len(engine.scheduler.running) < 8:
        prompt, raw = random_request(rng, vocab, max_prompt, max_new)
        stats["requests"] += 1
        try:
            engine.add_request(prompt, SamplingParams(**raw))
        except ParameterError:
            stats["rejected"] += 1


def step_once(engine: Any, stats: dict[str, int]) -> None:
    """One engine step; a crash is counted and logged, and the engine restarts from a clean state."""
    try:
        deltas = engine.step()
    except Exception as exc:
        stats["failures"] += 1
        get_run_logger().error("engine step failed: %r", exc)
        for request_id in list(engine.requests):
            engine.abort_request(request_id)
            engine.pop_output(request_id)
        return
    stats["tokens"] += len(deltas)
    for d in deltas:
        if d.finish_reason and all(o.finish_reason for o in engine.get_output(d.request_id).outputs):
            engine.pop_output(d.request_id)
            stats["completed"] += 1


def soak_summary(stats: dict[str, int], hours: float, samples: list[tuple[float, float]]) -> dict[str, Any]:
    """A leak counts only when the slope's whole 95% interval is above zero: noise alone is no leak."""
    trend = rss_trend(samples)
    out = {
        **stats,
        "hours": hours,
        "stable_hours": hours if stats["failures"] == 0 else 0.0,
        "mtbf": {"hours_run": hours, "failures": stats["failures"]},
        "crashes_per_1m_requests": stats["failures"] / max(stats["requests"], 1) * 1e6,
        "rss_growth": trend,
    }
    if samples:
        out.update(rss_start_mb=samples[0][1], rss_end_mb=samples[-1][1])
    if "ci_low_mb_per_hour" in trend:
        out["leaks_detected"] = int(trend["ci_low_mb_per_hour"] > 0)
    return out


@task
def soak(model_path: Path, duration_s: float, max_prompt: int, max_new: int) -> dict[str, Any]:
    """Drive the engine with a steady mix of requests for `duration_s`; count failures, sample memory."""
    engine, rng = LLM(model_path).engine, random.Random(0)
    stats = {"requests": 0, "completed": 0, "rejected": 0, "failures": 0, "tokens": 0}
    samples: list[tuple[float, float]] = []
    start, last_sample = time.perf_counter(), -1.0
    while (now := time.perf_counter() - start) < duration_s:
        top_up(engine, rng, stats, max_prompt, max_new)
        step_once(engine, stats)
        if now - last_sample >= max(0.5, duration_s / 2000):
            samples.append((now, rss_mb()))
            last_sample = now
    return soak_summary(stats, (time.perf_counter() - start) / 3600, samples)


@flow(name="stress")
def stress_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Soak the engine for the profile's duration and record failures and memory growth."""
    started = now_utc()
    p = load_params(Path(params_path))
    s = p.profile.stress
    result = soak(Path(p.model.path), s.duration_s, s.max_prompt_len, s.max_new_tokens)
    metrics = {"stress": result}
    write_metrics("stress", metrics, params_path, started)
    return metrics
