"""Nodes on one machine: each a Linux network namespace joined to the host by a veth pair (iproute2).

A process started with `node.command(argv)` runs inside the node's namespace and can only be reached through its
veth link, at `node.address`; `tc tbf` on both ends caps the link's rate. Namespaces need root (CAP_NET_ADMIN):
where `ip netns add` is refused, the nodes fall back to loopback processes and the transport says so.
The namespaces are deleted when the block ends, whatever happened inside it.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
_RUNS = itertools.count()


@dataclass(frozen=True)
class Node:
    """Where a node's servers listen (`address`) and the prefix that runs a command on it."""

    name: str
    address: str
    prefix: tuple[str, ...] = field(default=())

    def command(self, argv: list[str]) -> list[str]:
        return [*self.prefix, *argv]


@dataclass
class Nodes:
    """The nodes of one run and how they are joined: `netns`, or `loopback` with the reason in `fallback`."""

    nodes: list[Node]
    transport: str
    fallback: str | None = None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _rate_cap(device: str, mbit: float, namespace: str | None = None) -> None:
    """A token bucket on one end of a link (`tc netem` is not in this kernel; `tbf` is)."""
    inside = ["ip", "netns", "exec", namespace] if namespace else []
    tbf = [
        "tc",
        "qdisc",
        "add",
        "dev",
        device,
        "root",
        "tbf",
        "rate",
        f"{mbit}mbit",
        "burst",
        "64kb",
        "latency",
        "50ms",
    ]
    subprocess.run([*inside, *tbf], check=True, capture_output=True, text=True)


def _add_node(namespace: str, index: int, subnet: int, bandwidth_mbit: float | None) -> Node:
    """Namespace `namespace` (already added) joined to the host by a veth pair on 10.SUBNET.INDEX.0/30."""
    host_end, node_end = f"{namespace}h", f"{namespace}v"
    host_ip, node_ip = f"10.{subnet}.{index}.1", f"10.{subnet}.{index}.2"
    _ip("link", "add", host_end, "type", "veth", "peer", "name", node_end)
    _ip("link", "set", node_end, "netns", namespace)
    _ip("addr", "add", f"{host_ip}/30", "dev", host_end)
    _ip("link", "set", host_end, "up")
    for args in (["addr", "add", f"{node_ip}/30", "dev", node_end], ["link", "set", node_end, "up"],
                 ["link", "set", "lo", "up"]):  # fmt: skip
        _ip("netns", "exec", namespace, "ip", *args)
    if bandwidth_mbit:
        _rate_cap(host_end, bandwidth_mbit)
        _rate_cap(node_end, bandwidth_mbit, namespace)
    return Node(namespace, node_ip, ("ip", "netns", "exec", namespace))


def _delete(namespace: str) -> None:
    """Kill what still runs in the namespace, then delete it (which deletes its veth pair too)."""
    try:
        pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout.split()
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, text=True)
    except OSError:
        pass  # no iproute2: nothing was made


def _add_nodes(count: int, namespaces: list[str], bandwidth_mbit: float | None) -> list[Node]:
    """`count` namespaced nodes; each namespace's name goes into `namespaces` as soon as it exists. Names and
    subnets are new on every call: the kernel deletes a namespace's links a moment after `ip netns del` returns."""
    run = next(_RUNS)
    tag, subnet = f"tg{os.getpid() % 10000}r{run % 100}", 100 + os.getpid() % 150
    made = []
    for i in range(count):
        namespaces.append(f"{tag}n{i}")
        _ip("netns", "add", namespaces[-1])
        made.append(_add_node(namespaces[-1], (run * 16 + i) % 256, subnet, bandwidth_mbit))
    return made


@contextmanager
def make_nodes(count: int, transport: str = "netns", bandwidth_mbit: float | None = None) -> Iterator[Nodes]:
    """`count` nodes joined by `transport`; netns falls back to loopback where namespaces cannot be made."""
    loopback = [Node(f"loopback{i}", "127.0.0.1") for i in range(count)]
    if transport == "loopback":
        yield Nodes(loopback, "loopback")
        return
    namespaces: list[str] = []
    try:
        nodes = Nodes(_add_nodes(count, namespaces, bandwidth_mbit), "netns")
    except (OSError, subprocess.CalledProcessError) as exc:
        why = (getattr(exc, "stderr", None) or str(exc)).strip()
        log.warning("network namespaces unavailable (%s): nodes are loopback processes", why)
        nodes = Nodes(loopback, "loopback", why)
    try:
        yield nodes
    finally:
        for namespace in namespaces:
            _delete(namespace)
