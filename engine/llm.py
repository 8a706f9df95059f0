"""Offline API: `LLM(path).generate(prompts, params)` and a streaming iterator, over the engine loop."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from engine.engine import EngineConfig, LLMEngine
from engine.outputs import RequestOutput, StreamDelta
from engine.progress import progress
from engine.sampling import SamplingParams

Prompt = str | list[int]


class LLM:
    """A model ready to generate; keyword arguments are `EngineConfig` fields (block_size, kv_cache_bytes...)."""

    def __init__(self, model: str | Path, **engine_options: Any) -> None:
        known = {f.name for f in fields(EngineConfig)}
        unknown = set(engine_options) - known
        if unknown:
            raise TypeError(f"unknown engine option(s) {sorted(unknown)}; known: {sorted(known)}")
        self.engine = LLMEngine(model, EngineConfig(**engine_options))
        self.tokenizer = self.engine.tokenizer

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = False,
        lora: str | None = None,
    ) -> list[RequestOutput]:
        """Generate for every prompt in one continuous batch (on a LoRA adapter if named); in prompt order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        if params is None or isinstance(params, SamplingParams):
            params = [params or SamplingParams()] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"got {len(params)} sampling params for {len(prompts)} prompts")
        ids = [self.engine.add_request(p, sp, lora=lora) for p, sp in zip(prompts, params, strict=True)]
        with progress(total=len(ids), desc="generate", disable=not use_tqdm) as bar:
            done = 0
            while self.engine.has_unfinished_requests():
                self.engine.step()
                now = sum(self.engine.get_output(i).finished for i in ids)
                bar.update(now - done)
                done = now
        return [self.engine.pop_output(i) for i in ids]

    def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> Iterator[StreamDelta]:
        """Yield each completion's new text and tokens as soon as a step produces them."""
        request_id = self.engine.add_request(prompt, params)
        try:
            while self.engine.has_unfinished_requests():
                for delta in self.engine.step():
                    if delta.request_id == request_id:
                        yield delta
        finally:
            self.engine.abort_request(request_id)
            self.engine.pop_output(request_id)

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a conversation rendered by the model's chat template, ready for the reply."""
        return self.engine.chat_prompt(messages)

    def chat(self, messages: list[dict[str, str]], params: SamplingParams | None = None) -> RequestOutput:
        """One conversation through the chat template; returns its result."""
        return self.generate([self.chat_prompt(messages)], params)[0]
