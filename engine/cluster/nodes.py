"""Nodes on one machine: each a Linux network namespace on a host bridge through a veth pair (iproute2).

A process started with `node.command(argv)` runs inside the node's namespace and can only be reached through its
veth link, at `node.address`, from the host or another node; `tc tbf` on both ends caps the link's rate.
Namespaces need root (CAP_NET_ADMIN): where `ip netns add` is refused, the nodes fall back to loopback processes
and the transport says so. The namespaces and the bridge are deleted when the block ends, whatever happened.
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
    interface: str = "lo"  # the device that carries `address` on the node (gloo's GLOO_SOCKET_IFNAME)

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


def _add_node(namespace: str, bridge: str, address: str, bandwidth_mbit: float | None) -> Node:
    """Namespace `namespace` (already added) on the host's `bridge` through a veth pair, at `address`/24."""
    host_end, node_end = f"{namespace}h", f"{namespace}v"
    _ip("link", "add", host_end, "type", "veth", "peer", "name", node_end)
    _ip("link", "set", node_end, "netns", namespace)
    _ip("link", "set", host_end, "master", bridge)
    _ip("link", "set", host_end, "up")
    for args in (["addr", "add", f"{address}/24", "dev", node_end], ["link", "set", node_end, "up"],
                 ["link", "set", "lo", "up"]):  # fmt: skip
        _ip("netns", "exec", namespace, "ip", *args)
    if bandwidth_mbit:
        _rate_cap(host_end, bandwidth_mbit)
        _rate_cap(node_end, bandwidth_mbit, namespace)
    return Node(namespace, address, ("ip", "netns", "exec", namespace), node_end)


def _delete(made: list[str]) -> None:
    """Kill what still runs in each namespace made, delete it (its veth pair goes with it), then the bridge."""
    try:
        for name in made[1:]:
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True)
        if made:
            subprocess.run(["ip", "link", "del", made[0]], capture_output=True, text=True)
    except OSError:
        pass  # no iproute2: nothing was made


def _add_nodes(count: int, made: list[str], bandwidth_mbit: float | None) -> list[Node]:
    """A bridge on the host (10.S.R.1/24) and `count` namespaced nodes on it (.2, .3, ...), so nodes reach the
    host and each other; `made` gets the bridge's name, then each namespace's, as soon as each exists. Names and
    subnets are new on every call: the kernel deletes a namespace's links a moment after `ip netns del` returns."""
    run = next(_RUNS)
    tag, net = f"tg{os.getpid() % 10000}r{run % 100}", f"10.{100 + os.getpid() % 150}.{run % 256}"
    made.append(f"{tag}br")
    _ip("link", "add", made[0], "type", "bridge")
    _ip("addr", "add", f"{net}.1/24", "dev", made[0])
    _ip("link", "set", made[0], "up")
    nodes = []
    for i in range(count):
        made.append(f"{tag}n{i}")
        _ip("netns", "add", made[-1])
        nodes.append(_add_node(made[-1], made[0], f"{net}.{i + 2}", bandwidth_mbit))
    return nodes


@contextmanager
def make_nodes(count: int, transport: str = "netns", bandwidth_mbit: float | None = None) -> Iterator[Nodes]:
    """`count` nodes joined by `transport`; netns falls back to loopback where namespaces cannot be made."""
    loopback = [Node(f"loopback{i}", "127.0.0.1") for i in range(count)]
    if transport == "loopback":
        yield Nodes(loopback, "loopback")
        return
    made: list[str] = []
    try:
        nodes = Nodes(_add_nodes(count, made, bandwidth_mbit), "netns")
    except (OSError, subprocess.CalledProcessError) as exc:
        why = (getattr(exc, "stderr", None) or str(exc)).strip()
        log.warning("network namespaces unavailable (%s): nodes are loopback processes", why)
        nodes = Nodes(loopback, "loopback", why)
    try:
        yield nodes
    finally:
        _delete(made)
