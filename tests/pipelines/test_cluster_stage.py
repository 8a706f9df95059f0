"""The cluster stage's evidence: speedups only from fault-free scenarios that served every request, against single;
a scenario that lost requests or ran over a bad link cannot speak for scaling."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.cluster import cluster_metrics


def row(name: str, nodes: int, tok_s: float, *, completed: int = 24, faults: dict | None = None,
        rss: float = 1100.0, oversubscribed: bool = False) -> dict[str, Any]:  # fmt: skip
    return {
        "cluster": name, "nodes": nodes, "output_tok_s": tok_s, "requests": 24, "completed": completed,
        "faults": faults or {}, "node_peak_rss_mb": [rss] * nodes, "rpc_ms": {"p50": 3.0, "p95": 8.0, "n": 100},
        "oversubscribed": oversubscribed,
    }  # fmt: skip


def test_speedup_rpc_and_overhead_come_from_the_scenarios_against_single() -> None:
    m = cluster_metrics([row("single", 1, 70.0, rss=1120.0), row("dp2", 2, 96.0, rss=1100.0)])
    assert m["nodes2"]["speedup"] == pytest.approx(96 / 70) and m["nodes2"]["decode_tok_s"] == 96.0
    assert m["rpc_ms"]["p95"] == 8.0 and m["sync_overhead_mb"] == pytest.approx(-20.0)
    assert m["max_nodes"] == 2 and m["single"]["output_tok_s"] == 70.0


def test_a_scenario_that_lost_requests_is_no_scaling_evidence() -> None:
    m = cluster_metrics([row("single", 1, 70.0), row("dp2", 2, 200.0, completed=12)])
    assert "nodes2" not in m and "rpc_ms" not in m and m["max_nodes"] == 1


def test_a_lossy_link_does_not_stand_in_for_the_clean_scenario() -> None:
    m = cluster_metrics([row("single", 1, 70.0), row("dp2-lossy", 2, 300.0, faults={"latency_ms": 20})])
    assert "nodes2" not in m and m["dp2_lossy"]["output_tok_s"] == 300.0 and m["max_nodes"] == 2


def test_without_single_there_is_throughput_but_no_speedup() -> None:
    m = cluster_metrics([row("dp2", 2, 96.0)])
    assert m["nodes2"] == {"decode_tok_s": 96.0, "oversubscribed": 0} and "sync_overhead_mb" not in m


def test_an_oversubscribed_run_says_so_next_to_its_numbers() -> None:
    m = cluster_metrics([row("single", 1, 70.0), row("dp4", 4, 120.0, oversubscribed=True)])
    assert m["nodes4"]["oversubscribed"] == 1 and m["nodes4"]["speedup"] == pytest.approx(120 / 70)


def test_a_split_model_reports_itself_but_does_not_stand_for_scaling() -> None:
    tp3 = {**row("tp3", 3, 300.0), "tensor_parallel_size": 3, "comm_ms_per_step": 200.0}
    m = cluster_metrics([row("single", 1, 70.0), tp3])
    assert "nodes3" not in m and m["tp3"]["comm_ms_per_step"] == 200.0 and m["max_nodes"] == 3
