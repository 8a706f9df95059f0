"""The engine loop: add requests, `step()` (schedule → forward → sample → postprocess), read outputs."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.executor import place
from engine.faults import make_sampler
from engine.outputs import RequestOutput, StreamDelta
from engine.sampling import SamplingParams
from engine.scheduler import Scheduler, SchedulerOutput
from engine.sequence import Request, check_prompt

DEFAULT_KV_CACHE_BYTES = 512 * 2**20


@dataclass
class EngineConfig:
    """Engine knobs (names follow vLLM's). The KV pool is sized by `num_blocks`, else `kv_cache_bytes`."""

    block_size: int = 16
    kv_cache_bytes: int = DEFAULT_KV_CACHE_BYTES
    num_blocks: int | None = None
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    dtype: torch.dtype = torch.float32
    # the cache dtype (engine.kv_cache: auto, fp32, bf16, fp16, int8, int4), and which cached tokens a query sees:
    # `dense` all of them, `sink-window` the first `sinks` and the last `window` (engine.attention)
    kv_cache_dtype: str = "auto"
    attention: str = "dense"
    window: int = 4096
    sinks: int = 4
    device: str = "cpu"
    seed: int | None = 0
    quant: str = "none"  # a strategy from engine.quant (int8, int4, gptq, awq, bitnet, plugins)
    quant_options: dict[str, Any] = field(default_factory=dict)
    calibration_text: str | None = None  # for strategies that calibrate (gptq, awq)
    calibration_tokens: int = 4096
    # False: torch.compile (inductor) the model forward. Off by default: on SmolLM2-135M (batch 1, one thread,
    # `engine.bench --compile`) int8 decode went 62.5 -> 72.4 tok/s and fp32 42.8 -> 43.1, for about a minute of
    # compilation per load on 2 cores; each distinct number of sequences in a step is one more graph (the
    # attention loop unrolls) until torch's recompile limit sends the step back to eager.
    enforce_eager: bool = True
    # ranks one model's blocks are split over (engine.tensor_parallel: torch.distributed; must divide the heads)
    tensor_parallel_size: int = 1
    # LoRA serving (engine.lora): adapters by name, slots for distinct adapters in one batch, the largest rank
    lora_modules: dict[str, str] = field(default_factory=dict)
    max_loras: int = 0
    max_lora_rank: int = 16
    # test-only: make the engine wrong on purpose (engine.faults); the environment reaches server subprocesses
    fault: str | None = field(default_factory=lambda: os.environ.get("TOLLGATE_FAULT") or None)


@dataclass
class EngineStats:
    """Counters tests and benchmarks assert on (work done, not time)."""

    steps: int = 0
    prefill_tokens: int = 0  # prompt (and recomputed) tokens run through the model
    decode_tokens: int = 0  # tokens sampled

    def record(self, batch: SchedulerOutput) -> None:
        """Count one step's work (before its tokens are appended)."""
        self.steps += 1
        self.prefill_tokens += sum(n for seq, n in batch.scheduled if n > 1 or seq.num_output_tokens == 0)
        self.decode_tokens += len(batch.sampling)


class LLMEngine:
    """The engine loop over one model: requests in, stream deltas out, one `step()` at a time."""

    def __init__(self, model: str | Path, config: EngineConfig | None = None) -> None:
        self.config = cfg = config or EngineConfig()
        placed = place(model, cfg)
        self.model, self.tokenizer, self.quant_report = placed.model, placed.tokenizer, placed.quant_report
        self.runner, plan = placed.runner, placed.plan
        mcfg = self.model.config
        self.max_model_len = plan.max_model_len
        self.scheduler = Scheduler.with_blocks(
            plan.num_blocks, cfg.block_size, cfg.enable_prefix_caching, cfg.max_num_seqs, cfg.max_num_batched_tokens,
            self.max_model_len, window=plan.window,
        )  # fmt: skip
        self.block_manager = self.scheduler.bm
        self.loras = self.runner.loras
        for name, path in cfg.lora_modules.items():
            self.add_lora(name, path)
        self.scheduler.max_loras = self.loras.max_loras if self.loras else 0
        self.sampler = make_sampler(cfg.fault, cfg.seed)
        eos = set(mcfg.eos_token_ids)
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_token_ids = frozenset(eos)
        self.requests: dict[str, Request] = {}
        self.stats = EngineStats()
        self._ids = itertools.count()

    def add_lora(self, name: str, path: str | Path) -> None:
        """Serve a peft adapter as `name` from now on (its weights load on first use)."""
        if self.loras is None:
            raise ValueError("this engine was started without LoRA slots (max_loras=0)")
        self.loras.register(name, path)

    @property
    def kv_cache_bytes(self) -> int:
        """Bytes reserved for the paged KV pool."""
        return self.runner.kv_cache_bytes

    def encode(self, prompt: str) -> list[int]:
        """Prompt text to token ids with the model's own special-token rules."""
        return self.tokenizer.encode(prompt, add_special_tokens=True)

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a conversation rendered by the model's chat template, ready for the reply."""
        rendered = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)

    def add_request(
        self,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        request_id: str | None = None,
        lora: str | None = None,
    ) -> str:
        """Queue a prompt (text or token ids), on the base model or a registered adapter; returns its request id."""
        params = params or SamplingParams()
        request_id = request_id or f"req-{next(self._ids)}"
        if request_id in self.requests:
            raise ValueError(f"request_id {request_id!r} is already in use")
        ids = self.checked_prompt(prompt, params)
        self.runner.check_adapter(lora)
        stops = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else self.eos_token_ids)
        text = prompt if isinstance(prompt, str) else None
        request = Request.start(request_id, text, ids, params, self.tokenizer, stops, lora)
        for seq in request.seqs:
            self.scheduler.add(seq)
        self.requests[request_id] = request
        return request_id

    def checked_prompt(self, prompt: str | list[int], params: SamplingParams) -> list[int]:
        """The prompt's token ids, once the request is known to fit; ParameterError naming what does not."""
        ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        check_prompt(ids, params, self.model.config.vocab_size, self.max_model_len)
        return ids

    def abort_request(self, request_id: str) -> None:
        """Stop a request now and free its KV blocks (e.g. its client went away)."""
        request = self.requests.get(request_id)
        for seq in request.seqs if request else []:
            if not seq.is_finished:
                self.scheduler.finish(seq, "abort")

    def has_unfinished_requests(self) -> bool:
        """Whether `step()` still has work."""
        return self.scheduler.has_unfinished()

    def step(self) -> list[StreamDelta]:
        """One iteration: schedule → forward → sample → postprocess; the deltas of every sequence that sampled."""
        batch = self.scheduler.schedule()
        if not batch.scheduled:
            return []
        logits = self.runner.run(batch)
        tokens, logprobs = self.sampler(logits, [seq.sample_request() for seq in batch.sampling])
        self.stats.record(batch)
        self.scheduler.postprocess(batch, tokens, logprobs)
        return [seq.delta(t, lp) for seq, t, lp in zip(batch.sampling, tokens, logprobs, strict=True)]

    def get_output(self, request_id: str) -> RequestOutput:
        """The request's state so far (text, tokens, finish reasons) without forgetting it."""
        return self.requests[request_id].output()

    def pop_output(self, request_id: str) -> RequestOutput:
        """The request's result, forgetting it (call once it is finished)."""
        result = self.get_output(request_id)
        del self.requests[request_id]
        return result
