"""A scenario running for real: an `engine.server` per node (or one split over every node by torchrun ranks),
each behind its link, all behind `engine.router`.

    with running_cluster("models/smollm2-135m-instruct", load("dp2")) as cluster:
        cluster.url   # the router: an OpenAI endpoint balancing over the nodes

The router is the same process users run (`python -m engine.router --replicas 0 --replica-url ...`); a link
with faults goes through a `FaultProxy` on the host, which delays and resets requests on their way to the node.
"""

from __future__ import annotations

import os
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

    model: str
    scenario: Scenario
    url: str
    router: subprocess.Popen
    servers: list[NodeServer]
    transport: str
    fallback: str | None
    node_procs: list[subprocess.Popen]  # what was started on each node (a server, or a torchrun with its rank)


def _popen(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def _rank(node: Node, argv: list[str]) -> subprocess.Popen:
    """A torchrun on `node` whose rank talks gloo over the node's own link (not the loopback its hostname means)."""
    return _popen(node.command(argv), {"GLOO_SOCKET_IFNAME": node.interface})


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _port(node: Node) -> int:
    return free_port() if node.address == "127.0.0.1" else NODE_PORT


def _server_argv(model: str, node: Node, port: int, threads: int) -> list[str]:
    server = ["-m", "engine.server", "--model", model, "--threads", str(threads)]
    return [*server, "--host", node.address, "--port", str(port), "--log-level", "warning"]


def start_server(model: str, node: Node, port: int, threads: int) -> subprocess.Popen:
    """An engine server on `node` at `port`."""
    return _popen(node.command([sys.executable, *_server_argv(model, node, port, threads)]))


def _start_servers(
    model: str, nodes: list[Node], scenario: Scenario
) -> tuple[list[NodeServer], list[subprocess.Popen]]:
    """A server per node; or, for a tensor-parallel scenario, a torchrun per node: rank 0 serves, the rest are
    `engine.tensor_parallel` workers meeting at node 0's address."""
    threads, tp = scenario.threads_per_node, scenario.tensor_parallel_size
    if tp == 1:
        ports = [_port(node) for node in nodes]
        servers = []
        for node, port in zip(nodes, ports, strict=True):
            url = f"http://{node.address}:{port}"
            servers.append(NodeServer(node, url, url, start_server(model, node, port, threads)))
        return servers, [s.proc for s in servers]
    port = _port(nodes[0])  # the server's; torchrun's rendezvous takes the next one
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(tp), "--nproc-per-node", "1"]
    torchrun += ["--master-addr", nodes[0].address, "--master-port", str(port + 1)]
    worker = ["-m", "engine.tensor_parallel", "--model", model, "--threads", str(threads)]
    procs = [_rank(n, [*torchrun, "--node-rank", str(r), *worker]) for r, n in enumerate(nodes[1:], 1)]
    rank0 = [*torchrun, "--node-rank", "0", *_server_argv(model, nodes[0], port, threads)]
    url = f"http://{nodes[0].address}:{port}"
    server = NodeServer(nodes[0], url, url, _rank(nodes[0], [*rank0, "--tensor-parallel-size", str(tp)]))
    return [server], [server.proc, *procs]


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
        servers, node_procs = _start_servers(model, nodes.nodes, scenario)
        stack.callback(lambda: _stop(node_procs))
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
        yield ClusterRun(model, scenario, url, proc, servers, nodes.transport, nodes.fallback, node_procs)
