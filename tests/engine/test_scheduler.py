"""Continuous batching: token budget, chunked prefill, admission, preemption by recompute."""

from __future__ import annotations

from engine.block_manager import BlockManager
from engine.scheduler import Scheduler
from engine.sequence import SequenceStatus
from tests.engine.helpers import make_seq


def advance(out) -> None:  # what the engine does after the forward: count the tokens, sample if caught up
    for seq, n in out.scheduled:
        seq.num_computed_tokens += n
        if seq.num_computed_tokens == seq.num_tokens:
            seq.token_ids.append(7)


def test_budget_chunks_long_prompt() -> None:
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=8, max_num_batched_tokens=10)
    seq = make_seq(list(range(25)))
    sched.add(seq)
    chunks = []
    for _ in range(3):
        out = sched.schedule()
        chunks.append([n for _, n in out.scheduled])
        advance(out)
    assert chunks == [[10], [10], [5]]
    assert seq.num_output_tokens == 1


def test_decode_goes_first_then_new_prefill_fills_the_budget() -> None:
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=8, max_num_batched_tokens=8)
    a = make_seq(list(range(4)), "a")
    sched.add(a)
    advance(sched.schedule())
    b = make_seq(list(range(20)), "b")
    sched.add(b)
    out = sched.schedule()
    assert [(s.request_id, n) for s, n in out.scheduled] == [("a", 1), ("b", 7)]


def test_max_num_seqs_limits_running() -> None:
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=2, max_num_batched_tokens=100)
    for i in range(3):
        sched.add(make_seq([1, 2, 3], str(i)))
    out = sched.schedule()
    assert len(out.scheduled) == 2 and len(sched.waiting) == 1


def test_preempts_newest_when_blocks_run_out_and_recomputes_it() -> None:
    bm = BlockManager(4, 4)  # 16 token slots
    sched = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=100)
    old, new = make_seq(list(range(8)), "old"), make_seq(list(range(100, 107)), "new")
    sched.add(old)
    sched.add(new)
    advance(sched.schedule())  # both prefilled: 2 blocks each, the pool is full
    for _ in range(10):
        out = sched.schedule()
        advance(out)
        if out.preempted:
            break
    assert out.preempted and out.preempted[0].request_id == "new"
    victim = out.preempted[0]
    assert victim.status is SequenceStatus.WAITING and victim.num_computed_tokens == 0
    assert victim.block_table == [] and sched.num_preemptions == 1
    assert victim.num_tokens > victim.num_prompt_tokens  # its generated tokens are kept for the recompute


def test_finish_frees_blocks() -> None:
    bm = BlockManager(8, 4)
    sched = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=100)
    seq = make_seq(list(range(10)))
    sched.add(seq)
    advance(sched.schedule())
    sched.finish(seq, "abort")
    assert bm.num_free_blocks == 8 and not sched.has_unfinished()
    assert seq.finish_reason == "abort"
