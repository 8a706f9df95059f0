"""Tollgate's inference engine: paged KV cache, continuous batching, 21 decoder architectures, CPU first."""

from engine.llm import LLM
from engine.outputs import CompletionOutput, RequestOutput, StreamDelta
from engine.sampling import SamplingParams

__all__ = ["LLM", "CompletionOutput", "RequestOutput", "SamplingParams", "StreamDelta"]
