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
    def no_cache(cls, lengths: list[int], window: int | None = None) -> AttentionMetadata:
        """Causal attention over independent sequences laid end to end (scoring, parity tests); with the model's
        sliding `window` (Mistral), each query sees only its last `window` positions, as under the KV cache."""
        seqs, start = [], 0
        for n in lengths:
            s = SeqSlice(q_start=start, q_len=n, kv_len=n)
            if window is not None and n > window:
                pos = torch.arange(n)
                s.mask = (pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - window)
            seqs.append(s)
            start += n
        return cls(seqs=seqs)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate [T, heads, D] by the half-split convention HF checkpoints use; with tables narrower than D
    (partial rotary: GPT-NeoX, Phi, StableLM) only the leading dims rotate."""
    dim = cos.shape[-1]
    if dim < x.shape[-1]:
        return torch.cat((apply_rotary(x[..., :dim], cos, sin), x[..., dim:]), dim=-1)
    half = dim // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


@dataclass(frozen=True)
class LayerAttention:
    """What one layer's attention does differently: its score scale, tanh soft-cap (Gemma 2) and own window."""

    scale: float
    softcap: float | None = None
    window: int | None = None  # a sliding window of this layer only (Gemma 2/3 alternate local and global)

    @property
    def plain(self) -> bool:
        """Whether the fast kernels (SDPA, the decode matmuls) compute this layer's attention."""
        return self.softcap is None and self.window is None


def _decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """One query token: q [KV, group, D] (the query heads sharing a KV head are its rows, so GQA needs no copy)
    against k, v [KV, L, D]. Two batched matmuls and a softmax: 3-5x faster here than SDPA's flash kernel,
    whose blocking is built for many query rows (measured in the issue-12 note)."""
    scores = torch.baddbmm(q.new_empty(()), q, k.transpose(1, 2), beta=0.0, alpha=scale)
    return torch.bmm(scores.softmax(-1), v)


def _rows(x: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """[Lq, H, D] -> [KV, Lq * group, D]: the queries sharing a KV head as its rows."""
    lq, num_heads, head_dim = x.shape
    group = num_heads // kv_heads
    return x.view(lq, kv_heads, group, head_dim).transpose(0, 1).reshape(kv_heads, lq * group, head_dim)


def _unrows(out: torch.Tensor, lq: int) -> torch.Tensor:
    """[KV, Lq * group, D] -> [Lq, H * D]."""
    kv_heads, _, head_dim = out.shape
    return out.view(kv_heads, lq, -1, head_dim).transpose(0, 1).reshape(lq, -1)


def _eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, opts: LayerAttention) -> torch.Tensor:
    """q [Lq, H, D], the sequence's last Lq positions, against all of its k, v [KV, L, D], with the layer's
    soft-cap and window (what SDPA cannot do). Only for dense slices: the keys are positions 0..L-1."""
    lq, length = q.shape[0], k.shape[1]
    group = q.shape[1] // k.shape[0]
    q_pos = torch.arange(length - lq, length, device=q.device)[:, None]
    k_pos = torch.arange(length, device=q.device)[None, :]
    visible = k_pos <= q_pos
    if opts.window is not None:
        visible &= k_pos > q_pos - opts.window
    scores = torch.bmm(_rows(q, k.shape[0]), k.transpose(1, 2)) * opts.scale
    if opts.softcap is not None:
        scores = torch.tanh(scores / opts.softcap) * opts.softcap
    scores.masked_fill_(~visible.repeat_interleave(group, 0)[None], float("-inf"))
    return _unrows(torch.bmm(scores.softmax(-1), v), lq)


def _sink_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: SeqSlice, scale: float) -> torch.Tensor:
    """q [Lq, H, D] against k, v [KV, L, D] whose first `s.sink_len` keys are sinks, scored with the query rotated
    back by `s.sink_rotation`; `s.mask` (when set) limits each query to its own sinks and window."""
    kv_heads, group = k.shape[0], q.shape[1] // k.shape[0]
    scores = torch.bmm(_rows(q, kv_heads), k.transpose(1, 2)) * scale
    q_sink = apply_rotary(q, *s.sink_rotation)
    scores[..., : s.sink_len] = torch.bmm(_rows(q_sink, kv_heads), k[:, : s.sink_len].transpose(1, 2)) * scale
    if s.mask is not None:
        scores.masked_fill_(~s.mask.repeat_interleave(group, 0)[None], float("-inf"))
    return _unrows(torch.bmm(scores.softmax(-1), v), q.shape[0])


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    meta: AttentionMetadata,
    layer: int,
    opts: LayerAttention | None = None,
) -> torch.Tensor:
    """Attention for q [T, H, D] with new k, v [T, KV, D]; writes k, v into the layer's pool first."""
    num_heads, kv_heads, head_dim = q.shape[1], k.shape[1], q.shape[2]
    group = num_heads // kv_heads
    opts = opts or LayerAttention(head_dim**-0.5)
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
        if not opts.plain:
            outs.append(_eager_attention(qs, ks, vs, opts))
        elif s.sink_rotation is not None:
            outs.append(_sink_attention(qs, ks, vs, s, opts.scale))
        elif s.q_len == 1:
            out = _decode_attention(qs.view(kv_heads, group, head_dim), ks, vs, opts.scale)
            outs.append(out.view(1, num_heads * head_dim))
        else:
            o = F.scaled_dot_product_attention(
                qs.transpose(0, 1)[None],
                ks[None],
                vs[None],
                attn_mask=s.mask,
                is_causal=s.mask is None,
                scale=opts.scale,
                enable_gqa=group > 1,
            )
            outs.append(o[0].transpose(0, 1).reshape(s.q_len, num_heads * head_dim))
    return outs[0] if len(outs) == 1 else torch.cat(outs)
