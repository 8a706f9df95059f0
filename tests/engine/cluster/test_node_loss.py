"""A node killed under load inside a cluster scenario: detected, new requests served by the other node, only the
dead node's streams broken (each with an error event), the node re-admitted when it serves again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.cluster.node_loss import node_loss
from engine.cluster.scenario import Scenario, load


@pytest.mark.integration
def test_losing_a_node_under_load_is_detected_and_its_traffic_moves(smollm2: Path) -> None:
    trial = node_loss(smollm2, load("dp2"), concurrency=4, requests=12, prompt_len=32, max_tokens=32)
    assert trial["transport"] == ("netns" if os.geteuid() == 0 else "loopback")
    assert trial["handled"] == 1 and trial["probes_ok"] and trial["lost_silently"] == 0
    assert trial["in_flight"] >= 1 and trial["broken"] <= trial["in_flight"]
    assert trial["completed"] + trial["broken"] == trial["requests"] == 12
    assert trial["detected_s"] < 1.5  # a refused connection or the next health probe (every second)
    assert trial["recovery_s"] > 0 and trial["probes_before_s"] > 0 and trial["readmit_s"] > 0


def test_a_scenario_without_a_node_to_spare_is_refused() -> None:
    for scenario in (load("single"), Scenario("tp2", 2, tensor_parallel_size=2)):
        with pytest.raises(ValueError, match="needs replicas on 2\\+ nodes"):
            node_loss("unused", scenario, 1, 1, 1, 1)
