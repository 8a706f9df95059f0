"""llama.cpp as engine.bench's peer: a missing peer is reported (never faked); a built one runs side by side."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine import llamacpp_peer
from engine.bench import main


def test_no_tools_given_names_the_build_script(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLAMACPP_BIN", raising=False)
    with pytest.raises(llamacpp_peer.PeerMissing, match=r"build_llamacpp\.sh"):
        llamacpp_peer.find_tools(None)


def test_a_directory_without_the_tools_lists_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "llama-bench").write_text("")
    with pytest.raises(llamacpp_peer.PeerMissing, match="llama-batched-bench, llama-quantize"):
        llamacpp_peer.find_tools(str(tmp_path))


def test_a_quantization_without_a_gguf_counterpart_is_refused(tmp_path: Path) -> None:
    with pytest.raises(llamacpp_peer.PeerMissing, match="no counterpart for --quant gptq"):
        llamacpp_peer.gguf_for(tmp_path, "gptq", tmp_path, cache=tmp_path)


def test_bench_without_the_peer_says_why_and_measures_the_rest(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LLAMACPP_BIN", raising=False)
    out = tmp_path / "bench.json"
    args = ["--model", str(tiny_llama), "--batch", "1", "--new-tokens", "3", "--prompt-len", "4", "--repeats", "1"]
    assert main([*args, "--warmup", "0", "--vs", "llamacpp", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert "build_llamacpp.sh" in report["peers_missing"]["llamacpp"]
    assert {r["system"] for r in report["results"]} == {"tollgate"}
    assert "llamacpp: peer rows skipped" in capsys.readouterr().err


TOOLS = os.environ.get("LLAMACPP_BIN", "")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(not all((Path(TOOLS) / t).is_file() for t in llamacpp_peer.TOOLS), reason="LLAMACPP_BIN not built")
def test_peer_rows_side_by_side(smollm2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "bench.json"
    args = ["--model", str(smollm2), "--batch", "1", "2", "--new-tokens", "8", "--prompt-len", "16", "--repeats", "1"]
    assert main([*args, "--quant", "none", "int8", "--vs", "llamacpp", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    peer = {(r["quant"], r["batch"]): r for r in report["results"] if r["system"] == "llamacpp"}
    assert peer.keys() == {("none", 1), ("none", 2), ("int8", 1), ("int8", 2)}
    assert peer[("int8", 1)]["gguf_type"] == "Q8_0" and peer[("none", 2)]["tool"] == "llama-batched-bench"
    assert all(r["decode_tok_s"] > 0 and r["peak_rss_mb"] > 0 for r in peer.values())
    assert "int8_vs_llamacpp_batch1_t1" in report["summary"]
