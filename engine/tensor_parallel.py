"""Tensor parallelism on torch.distributed: one model's blocks split Megatron-style over N processes.

Each rank holds 1/N of every block: q/k/v by KV-head group (column-parallel; a KV head's query heads stay with
it), o_proj over the same heads (row-parallel: one all-reduce), gate/up by MLP columns and down_proj over them
(row-parallel: the block's second all-reduce), lm_head by vocabulary rows (the logits are gathered). Embeddings
and norms are whole on every rank; each rank's KV cache holds its own heads. Rank 0 runs the engine (scheduler,
sampler, server) and sends every step's batch to the other ranks, which forward it in `worker_loop` until rank 0
sends `stop`. gloo carries the collectives on CPU, NCCL on GPU.

    LLM(path, tensor_parallel_size=3)           # ranks 1..2 spawned on this machine
    # across machines, one rank per node (rank 0 serves and sends the others its engine config):
    torchrun --nnodes 3 --nproc-per-node 1 --node-rank 0 --master-addr HOST --master-port 29500 \\
        -m engine.server --model M --tensor-parallel-size 3
    torchrun --nnodes 3 --nproc-per-node 1 --node-rank 1 --master-addr HOST --master-port 29500 \\
        -m engine.tensor_parallel --model M                # and --node-rank 2 on the third node

Written here, not taken from a library: vLLM's and Megatron's shards are bound to their own model classes and
NCCL; torch's DTensor `parallelize_module` shards our Linear modules but not the paged KV cache, the fused q/k/v
split by KV-head group or the step broadcast, which are the work.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from engine.attention import AttentionMetadata
from engine.config import ModelConfig
from engine.errors import EngineDeadError, ParameterError
from engine.loader import load_model, load_tokenizer
from engine.model_runner import ModelRunner, fit_cache
from engine.models import DecoderForCausalLM, use_cpu_kernels
from engine.scheduler import SchedulerOutput

STOP = "stop"
PING = "ping"  # rank 0 idles: the other ranks' wait for the next step starts again
# A rank waits this long for the others in a collective before its group fails. Rank 0 pings an idle group
# (engine.server every KEEPALIVE_S), so only a rank that stopped answering reaches it; torch's default is 30 min.
COLLECTIVE_TIMEOUT_S = 300
_rendezvous: tempfile.TemporaryDirectory | None = None  # the local group's FileStore folder (one group per process)
log = logging.getLogger(__name__)


@dataclass
class CommStats:
    """Time this rank spent in collectives (waiting for the slowest rank included): the price of the split."""

    seconds: float = 0.0
    calls: int = 0

    def timed(self, collective: Any, *args: Any) -> None:
        start = time.perf_counter()
        collective(*args)
        self.seconds += time.perf_counter() - start
        self.calls += 1


COMM = CommStats()


class TensorParallelError(ValueError):
    """A model or an option that tensor parallelism cannot split or serve; the message says which sizes can."""


def check_shardable(cfg: ModelConfig, world: int) -> None:
    """Raise unless `world` ranks can split this model's heads and MLP evenly."""
    if cfg.spec.mlp == "moe" or cfg.spec.qk_norm == "full":
        what = "routed experts" if cfg.spec.mlp == "moe" else "q/k norms over the whole projection"
        raise TensorParallelError(f"tensor parallelism does not split {cfg.architecture}'s {what}")
    sizes = {"KV heads": cfg.num_key_value_heads, "query heads": cfg.num_attention_heads}
    sizes["MLP width"] = cfg.intermediate_size
    if any(n % world for n in sizes.values()):
        fits = [w for w in range(1, cfg.num_key_value_heads + 1) if not any(n % w for n in sizes.values())]
        have = ", ".join(f"{n} {what}" for what, n in sizes.items())
        raise TensorParallelError(
            f"tensor_parallel_size {world} does not divide {cfg.architecture}'s {have}; sizes that do: {fits}"
        )


class RowParallelLinear(nn.Module):
    """A Linear whose input columns are split over the ranks: partial products summed by one all-reduce."""

    def __init__(self, linear: nn.Linear, columns: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach()[:, columns].contiguous(), requires_grad=False)
        self.bias = linear.bias  # added once, after the sum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)
        COMM.timed(dist.all_reduce, y)
        return y if self.bias is None else y + self.bias


def _rows(linear: nn.Linear, rows: torch.Tensor) -> nn.Linear:
    """The output rows `rows` of a Linear (a column-parallel shard)."""
    out = nn.Linear(linear.in_features, len(rows), bias=linear.bias is not None, device=linear.weight.device)
    with torch.no_grad():
        out.weight.copy_(linear.weight[rows])
        if linear.bias is not None:
            out.bias.copy_(linear.bias[rows])
    return out.to(linear.weight.dtype).requires_grad_(False)


def _span(rank: int, per: int, offset: int = 0) -> torch.Tensor:
    return torch.arange(offset + rank * per, offset + (rank + 1) * per)


def shard(model: DecoderForCausalLM, rank: int, world: int) -> DecoderForCausalLM:
    """Cut a loaded full model down to rank `rank`'s shard, in place; its config then describes the shard."""
    cfg = model.config
    check_shardable(cfg, world)
    hd, heads, kv = cfg.head_dim, cfg.num_attention_heads // world, cfg.num_key_value_heads // world
    width = cfg.intermediate_size // world
    q_out, kv_out = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    q, k, v = _span(rank, heads * hd), _span(rank, kv * hd, q_out), _span(rank, kv * hd, q_out + kv_out)
    for layer in model.layers:
        layer.qkv_proj = _rows(layer.qkv_proj, torch.cat((q, k, v)))
        layer.num_heads, layer.kv_heads = heads, kv
        layer.o_proj = RowParallelLinear(layer.o_proj, q)
        mlp = _span(rank, width)
        if layer.mlp_kind == "gated":
            layer.gate_up_proj = _rows(layer.gate_up_proj, torch.cat((mlp, mlp + cfg.intermediate_size)))
        else:
            layer.up_proj = _rows(layer.up_proj, mlp)
        layer.down_proj = RowParallelLinear(layer.down_proj, mlp)
    per = -(-cfg.vocab_size // world)
    model.lm_head = _rows(model.lm_head, torch.arange(rank * per, min(cfg.vocab_size, (rank + 1) * per)))
    model.vocab_per_rank = per
    model.config = dataclasses.replace(
        cfg, num_attention_heads=heads, num_key_value_heads=kv, intermediate_size=width,
        tie_word_embeddings=False,  # the head is this rank's rows now, no longer the embedding's
    )  # fmt: skip
    model.tensor_parallel = world
    return model


def gathered_logits(model: DecoderForCausalLM, hidden: torch.Tensor) -> torch.Tensor:
    """Every rank's vocabulary slice of the logits, put together (collective: every rank calls it)."""
    local = model.compute_logits(hidden)
    pad = model.vocab_per_rank - local.shape[-1]  # the last rank's slice may be short
    if pad:
        local = F.pad(local, (0, pad))
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    COMM.timed(dist.all_gather, parts, local.contiguous())
    return torch.cat(parts, dim=-1)[..., : model.embed_tokens.num_embeddings]


def _step(runner: ModelRunner, message: tuple[Any, ...]) -> torch.Tensor:
    """One step's forward and logits on this rank's shard, from what rank 0 sent."""
    _, input_ids, positions, seqs, slot_mapping, rows = message
    meta = AttentionMetadata(seqs=seqs, slot_mapping=slot_mapping, kv_cache=runner.kv_cache)
    with torch.inference_mode():
        hidden = runner.model(input_ids, positions, meta)
        return gathered_logits(runner.model, hidden[rows])


def _send(message: tuple[Any, ...]) -> tuple[Any, ...]:
    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _shutdown() -> None:
    """Stop the other ranks and leave the group, so the next tensor-parallel engine in this process makes its own;
    the local rendezvous folder goes with it."""
    global _rendezvous
    if dist.is_initialized():
        with suppress(RuntimeError):  # the other ranks are gone already (killed with this process's children)
            _send((STOP,))
        dist.destroy_process_group()
    if _rendezvous is not None:
        _rendezvous.cleanup()
        _rendezvous = None


class TensorParallelRunner(ModelRunner):
    """Rank 0's runner: every step's batch goes to the other ranks first, then all ranks forward it together.
    The ranks stop when the runner is closed or collected."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.close = weakref.finalize(self, _shutdown)

    def run(self, batch: SchedulerOutput) -> torch.Tensor:
        input_ids, positions, meta = self.prepare(batch.scheduled)
        rows = self.sampling_rows(batch, meta)
        with _rank_loss_is_fatal():
            return _step(self, _send(("step", input_ids, positions, meta.seqs, meta.slot_mapping, rows)))

    def keepalive(self) -> None:
        with _rank_loss_is_fatal():
            _send((PING,))

    def forward_step(self, batch: SchedulerOutput) -> tuple[torch.Tensor, AttentionMetadata]:
        raise ParameterError("model", "scoring and hidden states are not served under tensor parallelism")


@contextmanager
def _rank_loss_is_fatal() -> Iterator[None]:
    """A collective that fails on rank 0 means a rank died or stopped answering: the group cannot recover."""
    try:
        yield
    except RuntimeError as exc:
        raise EngineDeadError(f"a tensor-parallel rank went away ({str(exc).splitlines()[0][:200]})") from exc


def worker_loop(runner: ModelRunner) -> None:
    """Ranks 1..N-1: forward every step rank 0 sends, until it sends `stop` or goes away."""
    try:
        while (message := _send((None,)))[0] != STOP:
            if message[0] != PING:
                _step(runner, message)
    except RuntimeError as exc:  # gloo: the connection to rank 0 closed (it exited or was killed)
        log.warning(
            "rank %d: the group failed: rank 0 went away or went quiet (%s); stopping",
            dist.get_rank(),
            str(exc).splitlines()[0][:200],
        )


def init_group(world: int, rank: int = 0, rendezvous: str | None = None) -> None:
    """Join the process group: torchrun's environment if it set one, else this machine's `rendezvous` file."""
    if dist.is_initialized():
        gc.collect()  # an engine nobody holds any more leaves its group when collected
    if dist.is_initialized():
        raise TensorParallelError("another tensor-parallel engine in this process still runs: close it first")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    timeout = timedelta(seconds=COLLECTIVE_TIMEOUT_S)
    if rendezvous is None:
        dist.init_process_group(backend, timeout=timeout)  # torchrun's RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    else:
        dist.init_process_group(backend, init_method=f"file://{rendezvous}", rank=rank, world_size=world,
                                timeout=timeout)  # fmt: skip
    if dist.get_world_size() != world:
        raise TensorParallelError(f"tensor_parallel_size {world}, but the process group has {dist.get_world_size()}")


def check_options(config: Any) -> None:
    """Raise for engine options tensor parallelism does not serve (before any process starts)."""
    refused = {
        "quant": config.quant != "none",
        "lora_modules / max_loras": bool(config.lora_modules or config.max_loras),
        "enforce_eager=False (compile)": not config.enforce_eager,
    }
    if names := [name for name, on in refused.items() if on]:
        raise TensorParallelError(f"tensor parallelism runs fp32 eager without adapters: drop {', '.join(names)}")


def start(path: str | Path, config: Any) -> tuple[DecoderForCausalLM, Any]:
    """Rank 0: check the split, start ranks 1..N-1 on this machine unless torchrun started them, send them the
    engine config, keep its own shard; returns the model and the tokenizer."""
    check_options(config)
    world = config.tensor_parallel_size
    model = load_model(path, config.dtype, config.device, cpu_kernels=False)
    check_shardable(model.config, world)
    global _rendezvous
    rendezvous = None
    if "RANK" not in os.environ:
        _rendezvous = tempfile.TemporaryDirectory(prefix="tollgate-tp-")
        rendezvous = str(Path(_rendezvous.name) / "rendezvous")
        ctx = mp.get_context("spawn")
        for rank in range(1, world):
            args = (str(path), world, rank, rendezvous, torch.get_num_threads())
            ctx.Process(target=serve_as_worker, args=args, daemon=True).start()
    init_group(world, 0, rendezvous)
    _send((config,))
    return use_cpu_kernels(shard(model, 0, world)), load_tokenizer(path)


def serve_as_worker(
    path: str, world: int, rank: int = 0, rendezvous: str | None = None, threads: int | None = None
) -> None:
    """A rank other than 0: rank 0's engine config, the same shard plan and KV pool, then `worker_loop`."""
    if threads:
        torch.set_num_threads(threads)
    init_group(world, rank, rendezvous)
    (config,) = _send((None,))
    model = use_cpu_kernels(shard(load_model(path, config.dtype, config.device, cpu_kernels=False), rank, world))
    plan = fit_cache(model, config)
    worker_loop(ModelRunner(model, plan.num_blocks, config.block_size, kv_cache_dtype=config.kv_cache_dtype,
                            window=plan.window))  # fmt: skip
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    """`torchrun ... -m engine.tensor_parallel --model M` on every node but rank 0's, which runs engine.server."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the same checkpoint rank 0 serves, on this node's disk")
    p.add_argument("--threads", type=int, help="torch threads on this rank")
    args = p.parse_args(argv)
    if int(os.environ.get("RANK", "0")) < 1 or "WORLD_SIZE" not in os.environ:
        p.error("run this under torchrun as rank 1 or above; rank 0 is `engine.server --tensor-parallel-size N`")
    serve_as_worker(args.model, int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"]), threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
