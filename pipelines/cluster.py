"""Stage `cluster`: the profile's cluster scenarios, served for real (`python -m pipelines cluster`).

Each scenario of `profile.cluster.scenarios` (conf/cluster/NAME.yaml) starts as engine.cluster.run starts it: one
engine server per node, or one split over the nodes (a node is a network namespace on a host bridge; loopback
processes where namespaces are refused, marked `transport: loopback`), all behind engine.router, and serves the
same closed-loop load (engine.cluster.bench). Writes metrics/cluster.json (namespace `cluster`):

- `cluster.<scenario>`: each scenario's row: output tok/s, requests completed, node-to-node RPC latency, per-node
  peak RSS, transport, whether nodes x threads oversubscribe this machine's cores.
- `cluster.nodesN.decode_tok_s` and `.speedup`: the fault-free scenario with N nodes that completed every
  request, and its output tok/s over `single`'s (output tokens / wall time, prefill included: below pure decode).
- `cluster.rpc_ms`: the RPC latency of the largest such scenario (GET /health over the router's path, under load);
  `cluster.sync_overhead_mb`: its mean per-node peak RSS minus `single`'s.
- `cluster.max_nodes`: the most nodes of a scenario that completed every request.
- `cluster.node_loss`: `profile.cluster.node_loss`'s last node killed under the same load and started again
  (engine.cluster.node_loss): detection, recovery (the < 2 s failover criterion), broken streams, re-admission.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from engine.cluster.bench import measure
from engine.cluster.node_loss import node_loss
from engine.cluster.scenario import load
from pipelines.common import now_utc, stage_run_name, write_metrics
from pipelines.config import TollgateConf, load_params


@task
def run_scenario(p: TollgateConf, name: str) -> dict[str, Any]:
    """One scenario under the profile's load."""
    c = p.profile.cluster
    row = measure(p.model.path, load(name), c.concurrency, c.requests, c.prompt_len, c.max_tokens)
    get_run_logger().info(
        "%s: %d nodes (%s), %.1f output tok/s, %d/%d requests, RPC p95 %.1f ms", name, row["nodes"],
        row["transport"], row["output_tok_s"], row["completed"], row["requests"], row["rpc_ms"].get("p95", -1),
    )  # fmt: skip
    return row


@task
def kill_a_node(p: TollgateConf, name: str) -> dict[str, Any]:
    """The scenario's last node killed under the profile's load, then started again."""
    c = p.profile.cluster
    trial = node_loss(p.model.path, load(name), c.concurrency, c.requests, c.prompt_len, c.max_tokens)
    get_run_logger().info(
        "%s node loss: detected in %.2f s, recovered in %.2f s, %d of %d streams broken, readmitted in %.1f s",
        name, trial["detected_s"], trial["recovery_s"], trial["broken"], trial["in_flight"], trial["readmit_s"],
    )  # fmt: skip
    return trial


def _scaling_rows(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per node count, the fault-free scenario that completed every request (the one that can speak for it)."""
    clean = [r for r in rows if not r["faults"] and r["completed"] == r["requests"] > 0]
    clean = [r for r in clean if r.get("tensor_parallel_size", 1) == 1]  # replicas scale throughput; a split does not
    return {r["nodes"]: r for r in sorted(clean, key=lambda r: r["output_tok_s"])}


def cluster_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The `cluster` namespace from the scenario rows (see the module docstring)."""
    out: dict[str, Any] = {r["cluster"].replace("-", "_"): r for r in rows}
    scaling = _scaling_rows(rows)
    single = scaling.get(1)
    for nodes, row in scaling.items():
        if nodes == 1:
            continue
        out[f"nodes{nodes}"] = {"decode_tok_s": row["output_tok_s"], "oversubscribed": int(row["oversubscribed"])}
        if single:
            out[f"nodes{nodes}"]["speedup"] = row["output_tok_s"] / single["output_tok_s"]
    served = [r for r in rows if r["completed"] == r["requests"] > 0]
    if served:
        out["max_nodes"] = max(r["nodes"] for r in served)
    if multi := [n for n in scaling if n > 1]:
        largest = scaling[max(multi)]
        out["rpc_ms"] = largest["rpc_ms"]
        if single:
            per_node = sum(largest["node_peak_rss_mb"]) / len(largest["node_peak_rss_mb"])
            out["sync_overhead_mb"] = per_node - single["node_peak_rss_mb"][0]
    return out


@flow(name="cluster", flow_run_name=stage_run_name)
def cluster_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Serve every scenario the profile lists; write the evidence."""
    started = now_utc()
    p = load_params(Path(params_path))
    rows = [run_scenario(p, name) for name in p.profile.cluster.scenarios]
    metrics = {"cluster": cluster_metrics(rows)}
    if p.profile.cluster.node_loss:
        metrics["cluster"]["node_loss"] = kill_a_node(p, p.profile.cluster.node_loss)
    write_metrics("cluster", metrics, params_path, started)
    return metrics
