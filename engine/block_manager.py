"""Paged KV-cache bookkeeping: fixed-size blocks, per-sequence block tables, ref counts, prefix caching.

A full block is identified by a hash chained over every token before it, so two sequences that share a prompt
prefix share its blocks. Freed blocks keep their hash until they are reused, so a later request with the same
prefix can still hit them. New blocks are placed so each sequence's blocks stay physically contiguous when the
pool allows it: attention then reads a view of the pool instead of gathering its context.

Under a `WindowPolicy`, blocks that no later query can see (past the sinks, before the window) are released as
the sequence moves on, so its KV memory stays bounded by sinks + window + one step's tokens, whatever its length.
Released blocks keep their hash: their K/V are exactly what a dense run computes, so the prefix cache may reuse them.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from engine.attention import WindowPolicy
from engine.sequence import Sequence


def root_hash(seq: Sequence) -> int | None:
    """The chain's start: a LoRA adapter computes different K/V for the same tokens, so it salts the chain."""
    return None if seq.lora is None else hash(("lora", seq.lora))


def chain_hash(parent: int | None, tokens: tuple[int, ...]) -> int:
    """Hash of a full block chained with its parent's, so equal hashes mean equal prefixes."""
    return hash((parent, tokens))


class BlockManager:
    """Allocates KV blocks to sequences; counts how many prompt tokens prefix caching saved."""

    def __init__(
        self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True, window: WindowPolicy | None = None
    ) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"num_blocks and block_size must be >= 1, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.window = window
        self.sink_blocks = self.blocks_needed(window.sinks) if window else 0
        self.ref_counts = [0] * num_blocks
        self.is_free = np.ones(num_blocks, dtype=bool)
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # least recently freed first
        self.block_hash: list[int | None] = [None] * num_blocks
        self.block_tokens: list[tuple[int, ...] | None] = [None] * num_blocks
        self.cached: dict[int, int] = {}  # chain hash -> block id
        self.prefix_hit_tokens = 0
        self.peak_used = 0  # the most blocks live sequences held at once (what the KV memory really reached)

    @property
    def num_free_blocks(self) -> int:
        """Blocks not held by any live sequence (cached ones included)."""
        return len(self.free)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by live sequences."""
        return 1.0 - len(self.free) / self.num_blocks

    def blocks_needed(self, num_tokens: int) -> int:
        """Blocks that hold `num_tokens` tokens."""
        return -(-num_tokens // self.block_size)

    # -- prefix caching -------------------------------------------------------------------------------------
    def _prefix_hits(self, seq: Sequence) -> tuple[list[int], int | None]:
        """Cached blocks matching the sequence's leading full blocks (keeping at least one token to compute), and
        the chain hash of the last one."""
        if not self.enable_prefix_caching:
            return [], None
        hits, parent = [], root_hash(seq)
        bs = self.block_size
        for start in range(0, seq.num_tokens - bs, bs):
            tokens = tuple(seq.token_ids[start : start + bs])
            h = chain_hash(parent, tokens)
            block = self.cached.get(h)
            if block is None or self.block_tokens[block] != tokens:
                break
            hits.append(block)
            parent = h
        return hits, parent

    def cached_prefix_tokens(self, seq: Sequence) -> int:
        """Prompt tokens a new sequence would find in the prefix cache (so the step's budget starts after them)."""
        return len(self._prefix_hits(seq)[0]) * self.block_size if not seq.block_table else seq.num_computed_tokens

    def register_full_blocks(self, seq: Sequence) -> None:
        """Publish the hashes of the sequence's blocks that are full and computed."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        parent = seq.last_block_hash if seq.num_hashed_blocks else root_hash(seq)
        full = seq.num_computed_tokens // bs
        for i in range(seq.num_hashed_blocks, full):
            block, tokens = seq.block_table[i], tuple(seq.token_ids[i * bs : (i + 1) * bs])
            parent = chain_hash(parent, tokens)
            if self.block_hash[block] is None:
                self.block_hash[block], self.block_tokens[block] = parent, tokens
                self.cached.setdefault(parent, block)
        seq.num_hashed_blocks, seq.last_block_hash = max(full, seq.num_hashed_blocks), parent

    # -- allocation ------------------------------------------------------------------------------------------
    def _take(self, block: int) -> int:
        del self.free[block]
        self.is_free[block] = False
        self.ref_counts[block] += 1
        self.peak_used = max(self.peak_used, self.num_blocks - len(self.free))
        return block

    def _take_fresh(self, block: int) -> int:
        h = self.block_hash[block]
        if h is not None and self.cached.get(h) == block:
            del self.cached[h]
        self.block_hash[block] = self.block_tokens[block] = None
        return self._take(block)

    def _start_block(self) -> int:
        """A new sequence starts in the middle of the largest free run, leaving room to grow contiguously."""
        padded = np.concatenate(([False], self.is_free, [False]))
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        starts, ends = edges[::2], edges[1::2]
        longest = int(np.argmax(ends - starts))
        return (int(starts[longest]) + int(ends[longest])) // 2

    def _next_block(self, seq: Sequence) -> int:
        if seq.window_freed_blocks:  # sliding: take the block it just let go, so its pages stay warm and RSS flat
            return next(reversed(self.free))
        if seq.block_table:
            after = seq.block_table[-1] + 1
            if after < self.num_blocks and self.is_free[after]:
                return after
            return next(iter(self.free))
        return self._start_block()

    def can_allocate(self, seq: Sequence, num_tokens: int) -> bool:
        """Whether the sequence's first `num_tokens` tokens fit, counting prefix-cache hits."""
        hits = self._prefix_hits(seq)[0] if not seq.block_table else []
        gone = self._outside_window(len(hits) * self.block_size)
        reused_free = sum(1 for i, b in enumerate(hits) if self.is_free[b] and i not in gone)
        needed = self.blocks_needed(num_tokens) - max(len(seq.block_table), len(hits))
        return needed + reused_free <= len(self.free)

    def allocate(self, seq: Sequence, num_tokens: int) -> None:
        """Give the sequence blocks for its first `num_tokens` tokens; a new one reuses cached prefix blocks."""
        if not seq.block_table:
            hits, seq.last_block_hash = self._prefix_hits(seq)
            gone = self._outside_window(len(hits) * self.block_size)  # hit blocks no query will see stay put
            for i, block in enumerate(hits):
                if i in gone:
                    continue
                if self.is_free[block]:
                    self._take(block)
                else:
                    self.ref_counts[block] += 1
            seq.block_table, seq.window_freed_blocks = list(hits), gone.stop
            seq.num_computed_tokens = len(hits) * self.block_size
            seq.num_hashed_blocks = len(hits)
            self.prefix_hit_tokens += seq.num_computed_tokens
        while len(seq.block_table) < self.blocks_needed(num_tokens):
            if not self.free:
                raise RuntimeError("KV cache exhausted: call can_allocate() first")
            seq.block_table.append(self._take_fresh(self._next_block(seq)))

    def _release(self, block: int) -> None:
        self.ref_counts[block] -= 1
        if self.ref_counts[block] == 0:
            self.free[block] = None
            self.is_free[block] = True

    def free_sequence(self, seq: Sequence) -> None:
        """Release the sequence's blocks; blocks nobody holds go back to the pool, keeping their hash."""
        for i in reversed(range(len(seq.block_table))):
            if not self.sink_blocks <= i < seq.window_freed_blocks:
                self._release(seq.block_table[i])
        seq.block_table, seq.window_freed_blocks = [], 0

    def _outside_window(self, next_position: int) -> range:
        """Indices of a sequence's blocks that a query at `next_position` (and every later one) cannot see."""
        if self.window is None:
            return range(0)
        end = self.window.first_visible(next_position) // self.block_size
        return range(self.sink_blocks, max(self.sink_blocks, end))

    def free_outside_window(self, seq: Sequence) -> None:
        """Release the blocks that fell out of the window: the next query (and every later one) cannot see them."""
        gone = self._outside_window(seq.num_computed_tokens)
        for i in range(max(gone.start, seq.window_freed_blocks), min(gone.stop, len(seq.block_table))):
            self._release(seq.block_table[i])
            seq.window_freed_blocks = i + 1
