"""A rate sweep to the knee: the highest request rate the server sustains with goodput inside the SLOs.

    python -m engine.loadgen sweep --url http://127.0.0.1:8000 --model smollm2-135m-instruct \\
        --slo-ttft-ms 700 --slo-tpot-ms 200 --out reports/sweep.json     # also writes reports/sweep.html

GuideLLM's method on engine.loadgen's requests. First the synchronous rate (one request at a time) and the
maximum throughput (--max-concurrency in flight), both closed loop; then --rates constant request rates evenly
spaced from the first to the second, open loop (constant gaps, or gamma arrivals with --burstiness; 1 is
Poisson). Each rate runs --repetitions times for --duration-s (a warm-up request first, not counted). A rate is
*sustainable* when, over its repetitions, at least --goodput-pct of the requests met every SLO and the server kept
up. It is *over-saturated* when the completion rate falls below 0.98 of the rate the requests were really sent at
(the same arrival draw and timer slack on both sides), or when TTFT and the number of
requests in flight both rise across the run (a growing queue); the sweep stops at the first such rate. The
answer is the maximum sustainable rate, with the 95% t-interval of the completion rate achieved there over the
repetitions and the grid step that bounds the knee. `--baseline FILE` compares with an earlier sweep.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import io
import json
import statistics
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from scipy import stats

from engine.loadgen import RequestResult, latency_percentiles, meets_slo, run_load
from engine.report_json import emit_json

KEEP_UP = 0.98  # completion rate / send rate below this: the server is not keeping up
RISE = 1.25  # last third / first third of a run: TTFT and in-flight requests both above this, and at least one
# more request in flight on average: a growing queue
CONFIDENCE = 0.95


def _thirds(values: list[float]) -> tuple[float, float]:
    """Means of the first and the last third (equal when a third holds fewer than 3 values: too short to tell)."""
    k = len(values) // 3
    if k < 3:
        return 1.0, 1.0
    return statistics.fmean(values[:k]), statistics.fmean(values[-k:])


def _rate(times: list[float]) -> float:
    """Events per second between the first and the last of them (0 for fewer than two)."""
    span = max(times) - min(times) if len(times) > 1 else 0.0
    return (len(times) - 1) / span if span > 0 else 0.0


def keep_up(sent: list[float], done: list[float]) -> float:
    """Completion rate over send rate, as 1 / the fitted slope of completion times on send times: a queue that
    grows makes each completion lag its send more; fitting every request, not the first and last, keeps one slow
    completion at the end of a short run from reading as a queue (1.0 for fewer than three)."""
    if len(sent) < 3 or len(set(sent)) < 2:
        return 1.0
    slope = statistics.linear_regression(sent, done).slope
    return 1 / slope if slope > 0 else 0.0


def _in_flight(ok: list[RequestResult]) -> list[int]:
    """How many requests were in flight when each one was sent (itself included)."""
    return [sum(o.sent_at <= r.sent_at < o.sent_at + o.e2e_s for o in ok) for r in ok]  # type: ignore[operator]


def run_stats(results: list[RequestResult], args: argparse.Namespace) -> dict[str, Any]:
    """One run: completion rate against the rate the requests were really sent at (the arrival draw and the
    event loop's timer slack are the same on both sides), goodput share, and whether the queue grew."""
    ok = sorted((r for r in results if r.status == 200 and r.e2e_s is not None), key=lambda r: r.sent_at)
    done = [r.sent_at + r.e2e_s for r in ok]  # type: ignore[operator]
    achieved = _rate(done)
    in_flight = _in_flight(ok)
    ttft_first, ttft_last = _thirds([r.ttft_s or 0.0 for r in ok])
    queue_first, queue_last = _thirds([float(c) for c in in_flight])
    return {
        "requests": len(results),
        "completed": len(ok),
        "achieved_rps": achieved,
        "sent_rps": _rate([r.sent_at for r in results]),
        "keep_up": keep_up([r.sent_at for r in ok], done) * len(ok) / max(len(results), 1),
        "goodput_pct": 100.0 * sum(meets_slo(r, args) for r in ok) / max(len(results), 1),
        "ttft_rise": ttft_last / ttft_first if ttft_first > 0 else 1.0,
        "in_flight_rise": queue_last / queue_first if queue_first > 0 else 1.0,
        "in_flight_added": queue_last - queue_first,
        **latency_percentiles(ok),
    }


def interval(values: list[float]) -> list[float]:
    """The 95% t-interval of a mean over repetitions ([v, v] for a single value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return [mean, mean]
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, len(values) - 1)) * statistics.stdev(values) / len(values) ** 0.5
    return [mean - half, mean + half]


def load_args(args: argparse.Namespace, **mode: Any) -> argparse.Namespace:
    """engine.loadgen's options for one run of the sweep."""
    base = {k: getattr(args, k) for k in ("url", "model", "prompt_len", "max_tokens", "timeout", "seed")}
    base |= {"slo_ttft_ms": args.slo_ttft_ms, "slo_tpot_ms": args.slo_tpot_ms, "warmup": 1, "burstiness": None}
    return argparse.Namespace(**{**base, "concurrency": None, "rate": None, "poisson": False, **mode})


def closed_loop(args: argparse.Namespace, concurrency: int, requests: int) -> dict[str, Any]:
    """A closed-loop run (synchronous at 1, maximum throughput at --max-concurrency)."""
    run = load_args(args, concurrency=concurrency, requests=requests)
    results, _ = asyncio.run(run_load(run))
    return {"concurrency": concurrency, **run_stats(results, run)}


def at_rate(args: argparse.Namespace, rate: float) -> dict[str, Any]:
    """--repetitions open-loop runs at one rate, each --duration-s long; their means, intervals and verdict."""
    reps = []
    for rep in range(args.repetitions):
        run = load_args(args, rate=rate, requests=max(4, round(rate * args.duration_s)), seed=args.seed + rep)
        run.poisson, run.burstiness = args.burstiness is None and args.poisson, args.burstiness
        reps.append(run_stats(asyncio.run(run_load(run))[0], run))
    goodput = [r["goodput_pct"] for r in reps]
    return {
        "target_rps": rate,
        "repetitions": reps,
        "n": sum(r["completed"] for r in reps),
        "achieved_rps": interval([r["achieved_rps"] for r in reps]),
        "goodput_pct": [max(0.0, lo) if i == 0 else min(100.0, lo) for i, lo in enumerate(interval(goodput))],
        "saturated": (saturated := saturation(reps)),
        "sustainable": not saturated and statistics.fmean(goodput) >= args.goodput_pct,
    }


def saturation(reps: list[dict[str, Any]]) -> list[str]:
    """Why a rate over-saturates the server (empty: it keeps up)."""
    why = []
    if statistics.fmean(r["keep_up"] for r in reps) < KEEP_UP:
        why.append(f"completion rate below {KEEP_UP} of the send rate")
    if all(r["ttft_rise"] > RISE and r["in_flight_rise"] > RISE and r["in_flight_added"] >= 1 for r in reps):
        why.append("TTFT and requests in flight both rising")
    return why


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Synchronous, throughput, then the constant rates between them until over-saturation."""
    sync = closed_loop(args, 1, max(4, args.rates))
    peak = closed_loop(args, args.max_concurrency, 2 * args.max_concurrency)
    low, high = sync["achieved_rps"], max(peak["achieved_rps"], sync["achieved_rps"])
    grid = [low + (high - low) * i / max(args.rates - 1, 1) for i in range(args.rates)]
    rates: list[dict[str, Any]] = []
    for rate in grid:
        rates.append(at_rate(args, rate))
        print(f"sweep: {rate:.3g} req/s: {_verdict(rates[-1])}", flush=True)
        if rates[-1]["saturated"]:
            break
    return {
        "slo": {"ttft_ms": args.slo_ttft_ms, "tpot_ms": args.slo_tpot_ms, "goodput_pct": args.goodput_pct},
        "load": {"prompt_len": args.prompt_len, "max_tokens": args.max_tokens, "burstiness": args.burstiness},
        "synchronous": sync,
        "throughput": peak,
        "rates": rates,
        **knee(rates),
    }


def knee(rates: list[dict[str, Any]]) -> dict[str, Any]:
    """The highest sustainable rate, the interval achieved there, the grid step above it, what stopped the sweep."""
    ok = [r for r in rates if r["sustainable"]]
    best = ok[-1] if ok else None
    above = next((r["target_rps"] for r in rates if best and r["target_rps"] > best["target_rps"]), None)
    return {
        "max_sustainable_rps": best["target_rps"] if best else None,
        "achieved_rps_interval": best["achieved_rps"] if best else None,
        "knee_between_rps": [best["target_rps"] if best else 0.0, above],
        "n": best["n"] if best else 0,
        "stopped_by": next((r["saturated"] for r in rates if r["saturated"]), []),
    }


def _verdict(rate: dict[str, Any]) -> str:
    lo, hi = rate["goodput_pct"]
    state = "sustainable" if rate["sustainable"] else "; ".join(rate["saturated"]) or "goodput too low"
    return f"goodput {lo:.0f}-{hi:.0f}%, achieved {statistics.fmean(rate['achieved_rps']):.3g} req/s: {state}"


def compare(doc: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """This sweep's knee against an earlier one's."""
    now, then = doc["max_sustainable_rps"], baseline.get("max_sustainable_rps")
    change = None if not now or not then else (now - then) / then * 100
    return {"max_sustainable_rps": then, "change_pct": change}


def chart_svg(doc: dict[str, Any]) -> str:
    """Completion rate and goodput against the target rate, TTFT P50 below: the knee is where they bend."""
    fig = Figure(figsize=(7, 5.5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    x = [r["target_rps"] for r in doc["rates"]]
    top.plot(x, x, ls=":", c="grey", label="target")
    top.plot(x, [statistics.fmean(r["achieved_rps"]) for r in doc["rates"]], marker="o", label="achieved req/s")
    if doc["max_sustainable_rps"]:
        for ax in (top, bottom):
            ax.axvline(doc["max_sustainable_rps"], c="green", ls="--", label="max sustainable")
    good = top.twinx()
    good.plot(x, [statistics.fmean(r["goodput_pct"]) for r in doc["rates"]], c="orange", marker="s", label="goodput %")
    good.set_ylim(0, 105)
    good.set_ylabel("goodput %")
    top.set_ylabel("req/s")
    top.legend(loc="lower right", fontsize=8)
    bottom.plot(x, [statistics.fmean(rep["ttft_ms"]["p50"] or 0 for rep in r["repetitions"]) for r in doc["rates"]],
                marker="o", c="purple")  # fmt: skip
    bottom.set(xlabel="target request rate (req/s)", ylabel="TTFT P50 (ms)")
    fig.tight_layout()
    out = io.StringIO()
    fig.savefig(out, format="svg")
    return out.getvalue()[out.getvalue().index("<svg") :]


def html_page(doc: dict[str, Any]) -> str:
    """The sweep as one self-contained page: the chart (inline SVG) and a row per rate."""
    rows = "".join(
        f"<tr><td>{r['target_rps']:.3g}</td><td>{r['achieved_rps'][0]:.3g}-{r['achieved_rps'][1]:.3g}</td>"
        f"<td>{r['goodput_pct'][0]:.0f}-{r['goodput_pct'][1]:.0f}%</td><td>{r['n']}</td>"
        f"<td>{html.escape(_verdict(r).split(': ', 1)[1])}</td></tr>"
        for r in doc["rates"]
    )
    best = doc["max_sustainable_rps"]
    head = f"{best:.3g} req/s" if best else "none of the rates tried"
    stopped = html.escape("; ".join(doc["stopped_by"]) or "the last rate")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Rate sweep</title>
<style>body{{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto}}td,th{{border:1px solid #ddd;
padding:.3em}}table{{border-collapse:collapse}}</style></head><body>
<h1>Maximum sustainable rate: <span id="knee">{head}</span></h1>
<p>SLOs: TTFT &le; {doc["slo"]["ttft_ms"]} ms, TPOT &le; {doc["slo"]["tpot_ms"]} ms, goodput &ge;
{doc["slo"]["goodput_pct"]}% of requests. Synchronous {doc["synchronous"]["achieved_rps"]:.3g} req/s, maximum
throughput {doc["throughput"]["achieved_rps"]:.3g} req/s. Stopped by: {stopped}.</p>
{chart_svg(doc)}
<table><tr><th>target req/s</th><th>achieved (95% CI)</th><th>goodput (95% CI)</th><th>n</th><th>verdict</th></tr>
{rows}</table></body></html>
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m engine.loadgen sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", required=True)
    p.add_argument("--slo-ttft-ms", type=float, required=True, help="a request is good only within this TTFT")
    p.add_argument("--slo-tpot-ms", type=float, required=True, help="... and this time per output token")
    p.add_argument("--goodput-pct", type=float, default=90, help="share of good requests a sustainable rate needs")
    p.add_argument("--rates", type=int, default=5, help="constant rates between synchronous and maximum")
    p.add_argument("--repetitions", type=int, default=3, help="runs per rate (>= 3 for an interval)")
    p.add_argument("--duration-s", type=float, default=20, help="length of each run at a rate")
    p.add_argument("--max-concurrency", type=int, default=16, help="requests in flight for maximum throughput")
    p.add_argument("--poisson", action="store_true", help="exponential arrivals instead of constant gaps")
    p.add_argument("--burstiness", type=float, help="gamma arrivals of this shape (1: Poisson, < 1: burstier)")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--timeout", type=float, default=600, help="per-request timeout, seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", type=Path, help="an earlier sweep's JSON to compare the knee with")
    p.add_argument("--out", type=Path, help="write the JSON here (and the HTML page beside it)")
    args = p.parse_args(argv)
    if args.rates < 1 or args.repetitions < 1 or args.duration_s <= 0 or args.max_concurrency < 1:
        p.error("--rates, --repetitions and --max-concurrency must be >= 1, --duration-s > 0")
    if args.max_tokens < 2:
        p.error("--max-tokens must be >= 2 (TPOT needs two tokens)")
    if args.baseline and not args.baseline.is_file():
        p.error(f"--baseline {args.baseline}: no such file")
    return args


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.loadgen sweep`: exit 0 when some rate was sustainable, 1 when none was."""
    args = parse_args(argv)
    doc = sweep(args)
    if args.baseline:
        doc["baseline"] = compare(doc, json.loads(args.baseline.read_text()))
    emit_json(doc, args.out)
    if args.out:
        args.out.with_suffix(".html").write_text(html_page(doc))
    best, ci = doc["max_sustainable_rps"], doc["achieved_rps_interval"]
    if best is None:
        print(f"no sustainable rate (synchronous {doc['synchronous']['achieved_rps']:.3g} req/s)")
        return 1
    print(f"maximum sustainable rate: {best:.3g} req/s (achieved {ci[0]:.3g}-{ci[1]:.3g}, 95% CI, n={doc['n']})")
    return 0
