"""Tensor parallelism on torch.distributed (gloo): greedy output identical to one process, on a tiny model at 2
ranks and SmolLM2 at 3; sizes that do not divide the heads are refused before any process starts."""

from __future__ import annotations

import gc
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import torch

from engine import LLM, SamplingParams, tensor_parallel
from engine.errors import ParameterError
from engine.loader import load_model
from engine.router.replicas import free_port
from engine.tensor_parallel import TensorParallelError, shard
from pipelines.live_server import running_command
from tests.conftest import make_tiny_checkpoint

PROMPTS = ["The capital of France is", "Once upon a time there was", "def fibonacci(n):", "1, 2, 3,"]
GREEDY = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)


def greedy(llm: LLM) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in llm.generate(PROMPTS, GREEDY)]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])  # qwen2: q/k/v biases split with their rows
def test_two_ranks_generate_what_one_process_does(arch: str, tmp_path: Path) -> None:
    path = make_tiny_checkpoint(tmp_path, arch)
    one = greedy(LLM(path))
    # a pool of 12 blocks of 4 for 4 sequences of ~24 tokens: the scheduler preempts, and every rank recomputes
    llm = LLM(path, tensor_parallel_size=2, block_size=4, num_blocks=12, max_num_batched_tokens=16)
    rendezvous = Path(tensor_parallel._rendezvous.name)
    two = greedy(llm)
    del llm
    gc.collect()  # the engine's ranks stop and its rendezvous folder goes
    assert two == one and not rendezvous.exists() and tensor_parallel._rendezvous is None


@pytest.mark.integration
def test_smollm2_split_three_ways_generates_what_one_process_does(smollm2: Path) -> None:
    assert greedy(LLM(smollm2, tensor_parallel_size=3)) == greedy(LLM(smollm2))


def test_a_size_that_does_not_divide_the_heads_names_the_sizes_that_do(tiny_llama: Path) -> None:
    before = set(multiprocessing.active_children())  # ranks of earlier tests may still be on their way out
    sizes = r"does not divide .*2 KV heads, 4 query heads.*sizes that do: \[1, 2\]"
    with pytest.raises(TensorParallelError, match=sizes):
        LLM(tiny_llama, tensor_parallel_size=3)
    assert set(multiprocessing.active_children()) <= before, "a rank was started for a split that cannot work"


def test_options_it_does_not_serve_are_refused(tiny_llama: Path) -> None:
    with pytest.raises(TensorParallelError, match="drop quant"):
        LLM(tiny_llama, tensor_parallel_size=2, quant="int8")


def test_a_shard_holds_its_heads_and_columns_and_refuses_to_score_alone(tiny_llama: Path) -> None:
    full = load_model(tiny_llama, cpu_kernels=False)
    qkv = full.layers[0].qkv_proj.weight.detach().clone()  # 4 query heads, 2 KV heads, head_dim 16
    part = shard(load_model(tiny_llama, cpu_kernels=False), 1, 2)
    rows = torch.cat((torch.arange(32, 64), torch.arange(64 + 16, 64 + 32), torch.arange(96 + 16, 96 + 32)))
    assert torch.equal(part.layers[0].qkv_proj.weight, qkv[rows])
    assert part.config.num_key_value_heads == 1 and part.config.intermediate_size == 64
    assert part.lm_head.weight.shape[0] == full.config.vocab_size // 2
    with pytest.raises(ParameterError, match="not served under tensor parallelism"):
        part.score([1, 2, 3])


def test_the_server_serves_a_split_model_and_refuses_embeddings_cleanly(tiny_llama: Path) -> None:
    expected = [o.outputs[0].text for o in LLM(tiny_llama).generate(PROMPTS[:2], GREEDY)]
    cmd = [sys.executable, "-m", "engine.server", "--model", str(tiny_llama), "--tensor-parallel-size", "2"]
    with running_command([*cmd, "--log-level", "warning"]) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0, timeout=60)
        texts = [
            client.completions.create(model=tiny_llama.name, prompt=p, max_tokens=16, temperature=0,
                                      extra_body={"ignore_eos": True}).choices[0].text
            for p in PROMPTS[:2]
        ]  # fmt: skip
        with pytest.raises(openai.BadRequestError, match="tensor parallelism"):
            client.embeddings.create(model=tiny_llama.name, input="hello")
        assert client.completions.create(model=tiny_llama.name, prompt="still up", max_tokens=2).choices
    assert texts == expected


def test_torchrun_ranks_on_two_nodes_serve_what_one_process_does(tiny_llama: Path) -> None:
    """The multi-node launch, both "nodes" on loopback: node 0 runs the server, node 1 the worker rank."""
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--nnodes", "2", "--nproc-per-node", "1"]
    torchrun += ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    worker = [*torchrun, "--node-rank", "1", "-m", "engine.tensor_parallel", "--model", str(tiny_llama)]
    rank1 = subprocess.Popen(worker, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = [*torchrun, "--node-rank", "0", "-m", "engine.server", "--model", str(tiny_llama)]
    expected = LLM(tiny_llama).generate(PROMPTS[0], GREEDY)[0].outputs[0].text
    try:
        with running_command([*server, "--tensor-parallel-size", "2", "--log-level", "warning"]) as (url, _):
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0, timeout=60)
            reply = client.completions.create(model=tiny_llama.name, prompt=PROMPTS[0], max_tokens=16, temperature=0,
                                              extra_body={"ignore_eos": True})  # fmt: skip
    finally:
        rank1.kill()
    assert reply.choices[0].text == expected


def test_the_worker_entry_point_refuses_to_run_outside_torchrun(tiny_llama: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RANK"}
    cmd = [sys.executable, "-m", "engine.tensor_parallel", "--model", str(tiny_llama)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "run this under torchrun" in proc.stderr


def test_a_lost_rank_kills_the_engine_loudly_and_health_says_so(tiny_llama: Path) -> None:
    import httpx
    import psutil

    cmd = [sys.executable, "-m", "engine.server", "--model", str(tiny_llama), "--tensor-parallel-size", "2"]
    with running_command([*cmd, "--log-level", "warning"]) as (url, proc):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0, timeout=60)
        ask = lambda: client.completions.create(model=tiny_llama.name, prompt="hi", max_tokens=4)  # noqa: E731
        assert ask().choices
        (worker,) = [p for p in psutil.Process(proc.pid).children(recursive=True) if "spawn" in " ".join(p.cmdline())]
        worker.kill()  # its sockets close at once; the server reaps it later
        with pytest.raises(openai.APIStatusError) as failed:  # the step's all-reduce fails at once, no 30-min wait
            ask()
        assert failed.value.status_code == 503 and "tensor-parallel rank went away" in str(failed.value)
        with pytest.raises(openai.APIStatusError, match="engine dead") as refused:
            ask()
        health = httpx.get(f"{url}/health", timeout=10)
    assert refused.value.status_code == 503
    assert health.status_code == 503 and health.json()["error"]["code"] == "engine_dead"
