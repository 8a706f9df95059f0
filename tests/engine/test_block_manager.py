"""Paged KV bookkeeping: allocation, ref counts, prefix caching and contiguous placement."""

from __future__ import annotations

import pytest

from engine.block_manager import BlockManager
from tests.engine.helpers import make_seq


def test_allocate_and_free_returns_every_block() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    seq = make_seq(list(range(10)))
    assert bm.can_allocate(seq, 10)
    bm.allocate(seq, 10)
    assert len(seq.block_table) == 3 and bm.num_free_blocks == 5
    bm.free_sequence(seq)
    assert bm.num_free_blocks == 8 and seq.block_table == []


def test_cannot_allocate_beyond_pool() -> None:
    bm = BlockManager(num_blocks=2, block_size=4)
    seq = make_seq(list(range(9)))
    assert not bm.can_allocate(seq, 9)
    with pytest.raises(RuntimeError, match="exhausted"):
        bm.allocate(seq, 9)


def test_blocks_grow_contiguously() -> None:
    bm = BlockManager(num_blocks=64, block_size=4)
    a, b = make_seq(list(range(8)), "a"), make_seq(list(range(100, 108)), "b")
    bm.allocate(a, 8)
    bm.allocate(b, 8)
    for n in range(9, 30):  # both grow token by token, interleaved, as in decode
        bm.allocate(a, n)
        bm.allocate(b, n)
    for seq in (a, b):
        assert seq.block_table == list(range(seq.block_table[0], seq.block_table[0] + len(seq.block_table)))


def test_prefix_cache_shares_full_blocks_and_keeps_one_token_to_compute() -> None:
    bm = BlockManager(num_blocks=16, block_size=4)
    first = make_seq(list(range(12)), "a")
    bm.allocate(first, 12)
    first.num_computed_tokens = 12
    bm.register_full_blocks(first)
    same = make_seq(list(range(12)), "b")
    bm.allocate(same, 12)
    # 12 tokens = 3 full blocks, but the last token must be computed to get logits: 2 blocks are reused
    assert same.num_computed_tokens == 8 and bm.prefix_hit_tokens == 8
    assert same.block_table[:2] == first.block_table[:2]
    assert bm.ref_counts[first.block_table[0]] == 2
    other = make_seq([*range(4), 99, 98, 97, 96, 1, 2, 3, 4], "c")
    bm.allocate(other, 12)
    assert other.num_computed_tokens == 4  # only the first block matches: the hash chains over the prefix


def test_freed_blocks_stay_cached_until_reused() -> None:
    bm = BlockManager(num_blocks=16, block_size=4)
    first = make_seq(list(range(9)), "a")
    bm.allocate(first, 9)
    first.num_computed_tokens = 9
    bm.register_full_blocks(first)
    bm.free_sequence(first)
    again = make_seq(list(range(9)), "b")
    assert bm.can_allocate(again, 9)
    bm.allocate(again, 9)
    assert again.num_computed_tokens == 8


def test_prefix_caching_can_be_disabled() -> None:
    bm = BlockManager(num_blocks=16, block_size=4, enable_prefix_caching=False)
    first = make_seq(list(range(9)), "a")
    bm.allocate(first, 9)
    first.num_computed_tokens = 9
    bm.register_full_blocks(first)
    again = make_seq(list(range(9)), "b")
    bm.allocate(again, 9)
    assert again.num_computed_tokens == 0


def test_invalid_sizes() -> None:
    with pytest.raises(ValueError, match="num_blocks"):
        BlockManager(num_blocks=0, block_size=16)
