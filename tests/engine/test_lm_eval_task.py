"""lm-evaluation-harness's own CLI scoring our server (local-completions), against the engine offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from engine.engine import EngineConfig
from engine.lm_eval_task import TASK, documents, model_args, offline_word_perplexity, write_task
from engine.loader import load
from engine.server.app import ServerConfig
from tests.conftest import ROOT, LiveServer, start_server

TEXT = ROOT / "data" / "wikitext-2" / "test.txt"
MAX_LENGTH = 130  # windows of 128 predicted tokens: several per article, so the rolling windows are exercised


@pytest.fixture(scope="module")
def tiny_server(tiny_llama: Path) -> Iterator[LiveServer]:
    server = start_server(ServerConfig([str(tiny_llama)], EngineConfig(num_blocks=128)))
    yield server
    server.stop()


def test_the_articles_are_split_at_their_title_lines(tmp_path: Path) -> None:
    docs = documents(TEXT)
    assert len(docs) > 10 and docs[0].startswith(" = Robert <unk> = \n") and all(d.strip() for d in docs)
    assert "".join(docs).strip() == TEXT.read_text(encoding="utf-8").strip()  # nothing lost, nothing added
    task = yaml.safe_load((write_task(TEXT, tmp_path) / f"{TASK}.yaml").read_text())
    assert (
        task["output_type"] == "loglikelihood_rolling" and Path(task["dataset_kwargs"]["data_files"]["test"]).is_file()
    )


def test_lm_eval_through_the_server_agrees_with_the_engine_offline(
    tiny_server: LiveServer, tiny_llama: Path, tmp_path: Path
) -> None:
    folder = write_task(TEXT, tmp_path / "task")
    cmd = [
        str(Path(sys.executable).parent / "lm-eval"),
        "--model",
        "local-completions",
        "--tasks",
        TASK,
        "--limit",
        "1",
    ]
    cmd += ["--include_path", str(folder), "--output_path", str(tmp_path / "out")]
    cmd += ["--model_args", model_args(tiny_server.url, tiny_llama.name, tiny_llama, MAX_LENGTH)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = (tmp_path / "out").rglob("results_*.json")
    served = json.loads(result.read_text())["results"][TASK]["word_perplexity,none"]
    model, tokenizer, _ = load(tiny_llama)
    offline = offline_word_perplexity(model, tokenizer, documents(TEXT)[:1], MAX_LENGTH)
    assert offline["documents"] == 1 and offline["word_perplexity"] > 1
    assert served == pytest.approx(offline["word_perplexity"], rel=0.01)  # the tolerance: 1%
