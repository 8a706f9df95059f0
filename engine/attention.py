"""Paged attention over the KV pool: per-step metadata and the attention op every decoder layer calls.

A `WindowPolicy` bounds what a query sees: the first `sinks` tokens and the last `window` (StreamingLLM's
attention sinks; with no sinks, Mistral's sliding window). The cache keeps keys rotated at their true positions,
so a window key is at its true distance from the query, which never exceeds the window. Sinks are the exception:
StreamingLLM gives them the cache positions just before the window, so their scores use the query rotated back
by the gap (`SeqSlice.sink_rotation`) and no query-key distance ever exceeds sinks + window.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.kv_cache import KVPool


@dataclass(frozen=True)
class WindowPolicy:
    """Which cached tokens a query at position p sees: the first `sinks` and the `window` up to p itself."""

    window: int
    sinks: int = 0

    def __post_init__(self) -> None:
        if self.window < 1 or self.sinks < 0:
            raise ValueError(f"window must be >= 1 and sinks >= 0, got window={self.window}, sinks={self.sinks}")

    def first_visible(self, position: int) -> int:
        """The first non-sink position a query at `position` attends to."""
        return max(self.sinks, position - self.window + 1)


@dataclass
class SeqSlice:
    """One sequence's part of a step: its query rows and where its keys/values live in the pool."""

    q_start: int
    q_len: int
    kv_len: int
    kv_start: int | None = None  # contiguous run of pool slots: attention reads a view, no copy
    kv_index: torch.Tensor | None = None  # otherwise the slot of every context token, gathered
    mask: torch.Tensor | None = None  # [q_len, kv_len] bool for a chunk with cached context; None = causal
    sink_len: int = 0  # the context's first sink_len tokens are attention sinks
    sink_rotation: tuple[torch.Tensor, torch.Tensor] | None = None  # cos, sin [q_len, 1, D] for the sink scores


@dataclass
class AttentionMetadata:
    """Everything a layer needs to read and write the KV cache for one forward step."""

    seqs: list[SeqSlice]
    slot_mapping: torch.Tensor | None = None  # [T] pool slot for each new token; None = no cache
    kv_cache: list[KVPool] | None = None  # one pool per layer

    @classmethod
    def no_cache(cls, lengths: list[int]) -> AttentionMetadata:
        """Plain causal attention over independent sequences laid end to end (scoring, parity tests)."""
        seqs, start = [], 0
        for n in lengths:
            seqs.append(SeqSlice(q_start=start, q_len=n, kv_len=n))
            start += n
        return cls(seqs=seqs)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate [T, heads, D] by the half-split convention HF checkpoints use."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One query token: q [KV, group, D] (the query heads sharing a KV head are its rows, so GQA needs no copy)
    against k, v [KV, L, D]. Two batched matmuls and a softmax: 3-5x faster here than SDPA's flash kernel,
    whose blocking is built for many query rows (measured in the issue-12 note)."""
    scores = torch.baddbmm(q.new_empty(()), q, k.transpose(1, 2), beta=0.0, alpha=q.shape[-1] ** -0.5)
    return torch.bmm(scores.softmax(-1), v)


def _sink_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: SeqSlice) -> torch.Tensor:
    """q [Lq, H, D] against k, v [KV, L, D] whose first `s.sink_len` keys are sinks, scored with the query rotated
    back by `s.sink_rotation`; `s.mask` (when set) limits each query to its own sinks and window."""
    lq, num_heads, head_dim = q.shape
    kv_heads = k.shape[0]
    group = num_heads // kv_heads

    def rows(x: torch.Tensor) -> torch.Tensor:  # [Lq, H, D] -> [KV, Lq * group, D], the KV head's queries as rows
        return x.view(lq, kv_heads, group, head_dim).transpose(0, 1).reshape(kv_heads, lq * group, head_dim)

    scale = head_dim**-0.5
    scores = torch.bmm(rows(q), k.transpose(1, 2)) * scale
    q_sink = apply_rotary(q, *s.sink_rotation)
    scores[..., : s.sink_len] = torch.bmm(rows(q_sink), k[:, : s.sink_len].transpose(1, 2)) * scale
    if s.mask is not None:
        scores.masked_fill_(~s.mask.repeat_interleave(group, 0)[None], float("-inf"))
    out = torch.bmm(scores.softmax(-1), v)
    return out.view(kv_heads, lq, group, head_dim).transpose(0, 1).reshape(lq, num_heads * head_dim)


def paged_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata, layer: int
) -> torch.Tensor:
    """Attention for q [T, H, D] with new k, v [T, KV, D]; writes k, v into the layer's pool first."""
    num_heads, kv_heads, head_dim = q.shape[1], k.shape[1], q.shape[2]
    group = num_heads // kv_heads
    if meta.kv_cache is not None:
        pool = meta.kv_cache[layer]
        pool.write(meta.slot_mapping, k, v)
    outs = []
    for s in meta.seqs:
        qs = q[s.q_start : s.q_start + s.q_len]
        if meta.kv_cache is None:
            ks = k[s.q_start : s.q_start + s.q_len].transpose(0, 1)
            vs = v[s.q_start : s.q_start + s.q_len].transpose(0, 1)
        else:
            ks, vs = pool.read(s.kv_start, s.kv_len, s.kv_index)
        if s.sink_rotation is not None:
            outs.append(_sink_attention(qs, ks, vs, s))
        elif s.q_len == 1:
            outs.append(_decode_attention(qs.view(kv_heads, group, head_dim), ks, vs).view(1, num_heads * head_dim))
        else:
            o = F.scaled_dot_product_attention(
                qs.transpose(0, 1)[None],
                ks[None],
                vs[None],
                attn_mask=s.mask,
                is_causal=s.mask is None,
                enable_gqa=group > 1,
            )
            outs.append(o[0].transpose(0, 1).reshape(s.q_len, num_heads * head_dim))
    return outs[0] if len(outs) == 1 else torch.cat(outs)
