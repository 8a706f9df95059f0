"""Node loss under load: one node's engine server SIGKILLed while the router spreads a closed-loop load over the
nodes, then started again: the criteria's "automatic failover < 2 s", measured end to end through the router.

- `detected_s`: kill to the router listing the node `healthy: false` (a refused connection ejects it at once,
  else the next health probe, every second, does).
- `recovery_s`: kill to the last of the probe requests, sent the moment the node dies, answered by the other
  nodes with the text the cluster gave before the kill (greedy). It includes serving them on a loaded node:
  `probes_before_s` is the same probes under the same load just before the kill, for comparison.
- `in_flight`: the load's streams the dead node held just before the kill; `broken`: the load's requests that
  ended with an error event. Every other request must complete: none may hang or pass for complete.
- `readmit_s`: the server started again on the node (on a real cluster, its supervisor's job) to the router
  listing it healthy.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from engine.cluster.bench import load_args
from engine.cluster.run import ClusterRun, running_cluster, start_server
from engine.cluster.scenario import Scenario
from engine.loadgen import run_load
from engine.router.replicas import wait_healthy

PROBES = ("The capital of France is", "Water boils at", "One, two, three,", "The opposite of hot is")
POLL_S = 0.02
WARM_S = 1.0
TIMEOUT_S = 120.0


async def _complete(http: httpx.AsyncClient, model: str, prompt: str) -> str | None:
    """A short greedy completion through the router; None when it failed."""
    body = {"model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0.0}
    try:
        reply = await http.post("/v1/completions", json=body)
    except httpx.HTTPError:
        return None
    return reply.json()["choices"][0]["text"] if reply.status_code == 200 else None


async def _replica(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    return next(r for r in (await http.get("/admin/replicas")).json() if r["url"] == url)


async def _until(http: httpx.AsyncClient, url: str, key: str, test: Any) -> float:
    """monotonic() when the router's entry for `url` first satisfies test(entry[key])."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if test((await _replica(http, url))[key]):
            return time.monotonic()
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"the router's {url} never had the {key} awaited within {TIMEOUT_S:.0f} s")


async def _kill_under_load(cluster: ClusterRun, victim: int, args: Any) -> dict[str, Any]:
    server, model = cluster.servers[victim], Path(cluster.model).name
    async with httpx.AsyncClient(base_url=cluster.url, timeout=TIMEOUT_S) as http:
        expected = [await _complete(http, model, p) for p in PROBES]
        load = asyncio.create_task(run_load(args))
        await _until(http, server.url, "outstanding", lambda n: n >= 1)
        await asyncio.sleep(WARM_S)  # past prefill: its streams are sending tokens
        sent = time.monotonic()
        await asyncio.gather(*(_complete(http, model, p) for p in PROBES))
        baseline_s = time.monotonic() - sent
        in_flight = (await _replica(http, server.url))["outstanding"]
        killed = time.monotonic()
        server.proc.kill()
        detected = asyncio.create_task(_until(http, server.url, "healthy", lambda ok: not ok))
        answers = await asyncio.gather(*(_complete(http, model, p) for p in PROBES))
        recovery_s = time.monotonic() - killed
        detected_s = await detected - killed
        results, _ = await load
    complete = [r for r in results if r.status == 200 and r.error is None and r.output_tokens == args.max_tokens]
    broken = [r for r in results if r.error]
    return {
        "in_flight": in_flight,
        "detected_s": detected_s,
        "recovery_s": recovery_s,
        "probes_before_s": baseline_s,
        "probes_ok": answers == expected and None not in expected,
        "requests": len(results),
        "completed": len(complete),
        "broken": len(broken),
        "lost_silently": len(results) - len(complete) - len(broken),
    }


async def _readmit(cluster: ClusterRun, victim: int) -> float:
    """Start the victim's server again on its node; seconds until the router lists it healthy."""
    server = cluster.servers[victim]
    port = int(server.direct_url.rsplit(":", 1)[1])
    server.proc = start_server(cluster.model, server.node, port, cluster.scenario.threads_per_node)
    cluster.node_procs.append(server.proc)  # stopped with the rest when the cluster ends
    started = time.monotonic()
    await asyncio.to_thread(wait_healthy, server.direct_url, server.proc, TIMEOUT_S)
    async with httpx.AsyncClient(base_url=cluster.url, timeout=TIMEOUT_S) as http:
        return await _until(http, server.url, "healthy", bool) - started


def node_loss(
    checkpoint: str | Path, scenario: Scenario, concurrency: int, requests: int, prompt_len: int, max_tokens: int
) -> dict[str, Any]:
    """Kill the last node's server under load, measure the failover, start it again; `handled` when the probes
    were answered right, nothing was lost silently, and only streams the dead node could hold broke."""
    if scenario.nodes < 2 or scenario.tensor_parallel_size > 1:
        raise ValueError(f"node loss needs replicas on 2+ nodes; {scenario.name!r} has no node to spare")
    model = Path(checkpoint).name
    with running_cluster(str(checkpoint), scenario) as cluster:
        args = load_args(cluster.url, model, concurrency, requests, prompt_len, max_tokens)
        victim = scenario.nodes - 1
        trial = asyncio.run(_kill_under_load(cluster, victim, args))
        readmit_s = asyncio.run(_readmit(cluster, victim))
        transport = cluster.transport
    handled = trial["probes_ok"] and trial["lost_silently"] == 0 and trial["broken"] <= trial["in_flight"]
    return {"cluster": scenario.name, "nodes": scenario.nodes, "transport": transport, "handled": int(handled),
            **trial, "readmit_s": readmit_s}  # fmt: skip
