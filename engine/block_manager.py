"""Paged KV-cache bookkeeping: fixed-size blocks, per-sequence block tables, ref counts, prefix caching.

A full block is identified by a hash chained over every token before it, so two sequences that share a prompt
prefix share its blocks. Freed blocks keep their hash until they are reused, so a later request with the same
prefix can still hit them. New blocks are placed so each sequence's blocks stay physically contiguous when the
pool allows it: attention then reads a view of the pool instead of gathering its context.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from engine.sequence import Sequence


def root_hash(seq: Sequence) -> int | None:
    """The chain's start: a LoRA adapter computes different K/V for the same tokens, so it salts the chain."""
    return None if seq.lora is None else hash(("lora", seq.lora))


def chain_hash(parent: int | None, tokens: tuple[int, ...]) -> int:
    """Hash of a full block chained with its parent's, so equal hashes mean equal prefixes."""
    return hash((parent, tokens))


class BlockManager:
    """Allocates KV blocks to sequences; counts how many prompt tokens prefix caching saved."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"num_blocks and block_size must be >= 1, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_counts = [0] * num_blocks
        self.is_free = np.ones(num_blocks, dtype=bool)
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # least recently freed first
        self.block_hash: list[int | None] = [None] * num_blocks
        self.block_tokens: list[tuple[int, ...] | None] = [None] * num_blocks
        self.cached: dict[int, int] = {}  # chain hash -> block id
        self.prefix_hit_tokens = 0

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
    def _prefix_hits(self, seq: Sequence) -> list[int]:
        """Cached blocks matching the sequence's leading full blocks, keeping at least one token to compute."""
        if not self.enable_prefix_caching:
            return []
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
        return hits

    def register_full_blocks(self, seq: Sequence) -> None:
        """Publish the hashes of the sequence's blocks that are full and computed."""
        if not self.enable_prefix_caching:
            return
        bs, parent = self.block_size, root_hash(seq)
        for i in range(seq.num_computed_tokens // bs):
            block = seq.block_table[i]
            if self.block_hash[block] is None:
                tokens = tuple(seq.token_ids[i * bs : (i + 1) * bs])
                h = chain_hash(parent, tokens)
                self.block_hash[block], self.block_tokens[block] = h, tokens
                self.cached.setdefault(h, block)
            parent = self.block_hash[block]

    # -- allocation ------------------------------------------------------------------------------------------
    def _take(self, block: int) -> int:
        del self.free[block]
        self.is_free[block] = False
        self.ref_counts[block] += 1
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
        if seq.block_table:
            after = seq.block_table[-1] + 1
            if after < self.num_blocks and self.is_free[after]:
                return after
            return next(iter(self.free))
        return self._start_block()

    def can_allocate(self, seq: Sequence, num_tokens: int) -> bool:
        """Whether the sequence's first `num_tokens` tokens fit, counting prefix-cache hits."""
        hits = self._prefix_hits(seq) if not seq.block_table else []
        reused_free = sum(1 for b in hits if self.is_free[b])
        needed = self.blocks_needed(num_tokens) - max(len(seq.block_table), len(hits))
        return needed + reused_free <= len(self.free)

    def allocate(self, seq: Sequence, num_tokens: int) -> None:
        """Give the sequence blocks for its first `num_tokens` tokens; a new one reuses cached prefix blocks."""
        if not seq.block_table:
            hits = self._prefix_hits(seq)
            for block in hits:
                if self.is_free[block]:
                    self._take(block)
                else:
                    self.ref_counts[block] += 1
            seq.block_table = list(hits)
            seq.num_computed_tokens = len(hits) * self.block_size
            self.prefix_hit_tokens += seq.num_computed_tokens
        while len(seq.block_table) < self.blocks_needed(num_tokens):
            if not self.free:
                raise RuntimeError("KV cache exhausted: call can_allocate() first")
            seq.block_table.append(self._take_fresh(self._next_block(seq)))

    def free_sequence(self, seq: Sequence) -> None:
        """Release the sequence's blocks; blocks nobody holds go back to the pool, keeping their hash."""
        for block in reversed(seq.block_table):
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self.free[block] = None
                self.is_free[block] = True
        seq.block_table = []
