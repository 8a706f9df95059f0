"""Cluster scenarios (`conf/cluster/NAME.yaml`): how many nodes, threads per node, transport and link faults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "conf" / "cluster"
TRANSPORTS = ("netns", "loopback")


class ScenarioError(ValueError):
    """A scenario that does not exist or does not make sense; the message says which and why."""


@dataclass(frozen=True)
class LinkFaults:
    """What each router->node link does: delay (latency plus uniform jitter) and resets per request, rate cap."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    reset_pct: float = 0.0
    bandwidth_mbit: float | None = None

    @property
    def delays(self) -> bool:
        return self.latency_ms > 0 or self.jitter_ms > 0 or self.reset_pct > 0


@dataclass(frozen=True)
class Scenario:
    """Replicas of one model on `nodes` nodes, `threads_per_node` torch threads each, behind one router."""

    name: str
    nodes: int
    threads_per_node: int = 1
    transport: str = "netns"
    faults: LinkFaults = field(default_factory=LinkFaults)
    tensor_parallel_size: int = 1  # > 1: one replica split over that many nodes (engine.tensor_parallel)

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.threads_per_node < 1:
            raise ScenarioError(f"cluster {self.name}: nodes and threads_per_node must be >= 1")
        if self.tensor_parallel_size > 1 and self.nodes != self.tensor_parallel_size:
            raise ScenarioError(f"cluster {self.name}: a tensor-parallel replica takes one rank per node: set nodes "
                                f"to tensor_parallel_size ({self.tensor_parallel_size})")  # fmt: skip
        if self.transport not in TRANSPORTS:
            raise ScenarioError(f"cluster {self.name}: transport {self.transport!r} is not one of {TRANSPORTS}")

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Scenario:
        known = {"name", "nodes", "threads_per_node", "transport", "faults", "tensor_parallel_size"}
        if unknown := set(doc) - known:
            raise ScenarioError(f"cluster {doc.get('name')}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        try:
            faults = LinkFaults(**(doc.get("faults") or {}))
        except TypeError as exc:
            raise ScenarioError(f"cluster {doc.get('name')}: faults: {exc}") from None
        return cls(**{**doc, "faults": faults})


def available() -> list[str]:
    """The scenario names under conf/cluster."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def load(name_or_path: str) -> Scenario:
    """A scenario by name (conf/cluster/NAME.yaml) or by the path of a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = SCENARIO_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ScenarioError(f"cluster {name_or_path!r}: no such scenario; available: {', '.join(available())}")
    return Scenario.from_dict(yaml.safe_load(path.read_text()))
