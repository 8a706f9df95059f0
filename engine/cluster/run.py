"""A scenario running for real: one `engine.server` per node, each behind its link, all behind `engine.router`.

    with running_cluster("models/smollm2-135m-instruct", load("dp2")) as cluster:
        cluster.url   # the router: an OpenAI endpoint balancing over the nodes

The router is the same process users run (`python -m engine.router --replicas 0 --replica-url ...`); a link
with faults goes through a `FaultProxy` on the host, which delays and resets requests on their way to the node.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from engine.cluster.fault_proxy import FaultProxy, NetworkFaults
from engine.cluster.nodes import Node, make_nodes
from engine.cluster.scenario import LinkFaults, Scenario
from engine.router.replicas import free_port, wait_healthy, wait_replicas

STARTUP_TIMEOUT_S = 300
NODE_PORT = 8000  # every namespaced node has its own port space


@dataclass
class NodeServer:
    """An engine server on a node: the URL the router uses (through the link's proxy, if any) and its process."""

    node: Node
    url: str
    direct_url: str
    proc: subprocess.Popen


@dataclass
class ClusterRun:
    """What a running scenario exposes: the router's URL and process, the node servers, the transport used."""

    scenario: Scenario
    url: str
    router: subprocess.Popen
    servers: list[NodeServer]
    transport: str
    fallback: str | None


def _popen(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _start_server(model: str, node: Node, threads: int) -> NodeServer:
    port = free_port() if node.address == "127.0.0.1" else NODE_PORT
    server = [sys.executable, "-m", "engine.server", "--model", model, "--threads", str(threads)]
    server += ["--host", node.address, "--port", str(port), "--log-level", "warning"]
    url = f"http://{node.address}:{port}"
    return NodeServer(node, url, url, _popen(node.command(server)))


def _proxy_faults(faults: LinkFaults, seed: int) -> NetworkFaults:
    """The scenario's link faults as the proxy's: every request (health probes too) is delayed uniformly within
    latency +- jitter, or reset."""
    low = max(0.0, faults.latency_ms - faults.jitter_ms) / 1000
    high = (faults.latency_ms + faults.jitter_ms) / 1000
    return NetworkFaults(reset_p=faults.reset_pct / 100, silence_p=0.0, latency_s=(low, high), affects=b"", seed=seed)


@contextmanager
def running_cluster(model: str, scenario: Scenario, router_args: tuple[str, ...] = ()) -> Iterator[ClusterRun]:
    """Start the scenario's nodes, servers and router; everything is stopped and torn down when the block ends."""
    faults = scenario.faults
    with make_nodes(scenario.nodes, scenario.transport, faults.bandwidth_mbit) as nodes, ExitStack() as stack:
        servers: list[NodeServer] = []
        stack.callback(lambda: _stop([s.proc for s in servers]))
        servers += [_start_server(model, node, scenario.threads_per_node) for node in nodes.nodes]
        for s in servers:
            wait_healthy(s.direct_url, s.proc, STARTUP_TIMEOUT_S)
            if faults.delays:
                target = s.direct_url.removeprefix("http://").rsplit(":", 1)
                proxy = FaultProxy(int(target[1]), _proxy_faults(faults, len(servers)), target_host=target[0])
                s.url = stack.enter_context(proxy)
        port = free_port()
        router = [sys.executable, "-m", "engine.router", "--replicas", "0", "--port", str(port)]
        router += [arg for s in servers for arg in ("--replica-url", s.url)]
        router += ["--log-level", "warning", *router_args]
        proc = _popen(router)
        stack.callback(lambda: _stop([proc]))
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, STARTUP_TIMEOUT_S)
        wait_replicas(url, proc, STARTUP_TIMEOUT_S)
        yield ClusterRun(scenario, url, proc, servers, nodes.transport, nodes.fallback)
