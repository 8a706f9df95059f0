"""Decode attention (one query row, batched matmuls) agrees with SDPA, with GQA and a gathered context."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.attention import AttentionMetadata, SeqSlice, paged_attention
from engine.kv_cache import KVPool


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (9, 3), (8, 1)])
def test_decode_matches_sdpa_over_a_paged_pool(heads: int, kv_heads: int) -> None:
    torch.manual_seed(heads)
    d, slots, ctx = 16, 64, 21
    pool = [KVPool(kv_heads, slots, d, "auto", torch.float32, torch.device("cpu"))]
    pool[0].write(torch.arange(slots), torch.randn(slots, kv_heads, d), torch.randn(slots, kv_heads, d))
    q, k, v = torch.randn(1, heads, d), torch.randn(1, kv_heads, d), torch.randn(1, kv_heads, d)
    gathered = torch.randperm(slots)[:ctx]
    seq = SeqSlice(q_start=0, q_len=1, kv_len=ctx, kv_index=gathered)
    meta = AttentionMetadata(seqs=[seq], slot_mapping=gathered[-1:], kv_cache=pool)
    out = paged_attention(q, k, v, meta, 0)
    keys, values = pool[0].data[0][:, gathered], pool[0].data[1][:, gathered]
    ref = F.scaled_dot_product_attention(q.transpose(0, 1)[None], keys[None], values[None], enable_gqa=True)
    torch.testing.assert_close(out, ref[0].transpose(0, 1).reshape(1, heads * d), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pool[0].data[0][:, gathered[-1]], k[0])  # the new token's K was written first
