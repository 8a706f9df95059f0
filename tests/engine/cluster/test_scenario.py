"""Cluster scenarios: every conf/cluster file loads; a wrong one is refused with what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cluster.scenario import LinkFaults, Scenario, ScenarioError, available, load


@pytest.mark.parametrize("name", available())
def test_every_scenario_file_loads(name: str) -> None:
    scenario = load(name)
    assert scenario.name == name and scenario.nodes >= 1 and scenario.transport == "netns"


def test_the_issue_scenarios_exist() -> None:
    assert {"single", "dp2", "dp4", "dp2-lossy", "tp3"} <= set(available())
    assert load("tp3").tensor_parallel_size == load("tp3").nodes == 3
    assert load("dp2-lossy").faults.delays and not load("dp2").faults.delays


def test_an_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(ScenarioError, match=r"available: .*dp2"):
        load("dp3")


def test_a_scenario_can_be_a_yaml_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nnodes: 3\nthreads_per_node: 2\ntransport: loopback\nfaults: {latency_ms: 5}\n")
    assert load(str(path)) == Scenario("mine", 3, 2, "loopback", LinkFaults(latency_ms=5))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"name": "x", "nodes": 0}, "nodes and threads_per_node"),
        ({"name": "x", "nodes": 2, "transport": "infiniband"}, "transport 'infiniband'"),
        ({"name": "x", "nodes": 2, "gpus": 1}, "unknown keys \\['gpus'\\]"),
        ({"name": "x", "nodes": 2, "faults": {"loss": 1}}, "faults: .*loss"),
        ({"name": "x", "nodes": 2, "tensor_parallel_size": 3}, "one rank per node"),
    ],
)
def test_a_wrong_scenario_is_refused_with_the_reason(doc: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        Scenario.from_dict(doc)
