"""Nodes as network namespaces: reachable only over their veth link, rate-capped by tbf, always torn down."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from engine.cluster.nodes import make_nodes

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root (CAP_NET_ADMIN)")


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def serve_here(node_command: list[str], directory: Path, address: str) -> subprocess.Popen:
    """`python -m http.server` on port 8000 of a node."""
    argv = [sys.executable, "-m", "http.server", "8000", "--bind", address, "--directory", str(directory)]
    return subprocess.Popen(node_command + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_get(url: str, timeout: float = 20.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=30)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@needs_root
def test_a_node_is_reachable_at_its_address_only_and_is_deleted_afterwards(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hi")
    before = namespaces()
    with make_nodes(2) as nodes:
        assert nodes.transport == "netns" and len({n.address for n in nodes.nodes}) == 2
        made = namespaces() - before
        assert made == {n.name for n in nodes.nodes}
        server = serve_here(nodes.nodes[1].command([]), tmp_path, nodes.nodes[1].address)
        assert wait_get(f"http://{nodes.nodes[1].address}:8000/hello.txt").text == "hi"
        with pytest.raises(httpx.TransportError):  # the node's port is not the host's
            httpx.get("http://127.0.0.1:8000/hello.txt", timeout=2)
        fetch = f"import urllib.request; print(urllib.request.urlopen('http://{nodes.nodes[1].address}:8000/hello.txt').read())"
        other = subprocess.run(nodes.nodes[0].command([sys.executable, "-c", fetch]), capture_output=True, text=True)
        assert other.stdout.strip() == "b'hi'", other.stderr  # node to node, over the bridge
    assert server.wait(timeout=10) is not None  # what ran in a deleted node is gone with it
    assert namespaces() == before


@needs_root
def test_namespaces_are_torn_down_when_the_block_raises() -> None:
    before = namespaces()
    with pytest.raises(RuntimeError, match="boom"), make_nodes(3) as nodes:
        assert nodes.transport == "netns", nodes.fallback
        raise RuntimeError("boom")
    assert namespaces() == before


@needs_root
def test_the_rate_cap_holds_a_transfer_to_its_bandwidth(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(os.urandom(1_000_000))  # 8 Mbit
    with make_nodes(1, bandwidth_mbit=16) as nodes:
        assert nodes.transport == "netns", nodes.fallback
        node = nodes.nodes[0]
        server = serve_here(node.command([]), tmp_path, node.address)
        wait_get(f"http://{node.address}:8000/")
        start = time.perf_counter()
        body = httpx.get(f"http://{node.address}:8000/blob", timeout=30).content
        elapsed = time.perf_counter() - start
        server.terminate()
    assert len(body) == 1_000_000 and elapsed >= 0.4, f"8 Mbit at 16 Mbit/s took {elapsed:.2f}s"


def test_without_iproute2_the_nodes_fall_back_to_loopback_and_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with make_nodes(2) as nodes:
        assert nodes.transport == "loopback" and nodes.fallback
        assert [n.address for n in nodes.nodes] == ["127.0.0.1", "127.0.0.1"] and nodes.nodes[0].command(["x"]) == ["x"]


def test_loopback_transport_asks_for_no_privileges() -> None:
    with make_nodes(3, transport="loopback") as nodes:
        assert nodes.transport == "loopback" and nodes.fallback is None and len(nodes.nodes) == 3
