"""Served speed side by side: without llama.cpp's tools our server is still measured and the report says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.serve_peer import main


@pytest.mark.integration
def test_without_the_peer_our_server_is_measured(tiny_llama: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("LLAMACPP_BIN", raising=False)
    out = tmp_path / "serve.json"
    args = ["--model", str(tiny_llama), "--threads", "1", "--concurrency", "1", "2", "--requests", "2"]
    assert main([*args, "--prompt-len", "4", "--max-tokens", "3", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert "build_llamacpp.sh" in report["peers_missing"]["llamacpp"]
    assert [(r["system"], r["concurrency"], r["completed"]) for r in report["results"]] == [
        ("tollgate", 1, 2),
        ("tollgate", 2, 2),
    ]
