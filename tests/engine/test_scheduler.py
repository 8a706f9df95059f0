"""Continuous batching: token budget, chunked prefill, admission, preemption by recompute."""

from __future__ import annotations

from engine.block_manager import BlockManager
from engine.scheduler import Scheduler
from engine.sequence import SequenceStatus
from tests.engine.helpers import make_seq


def advance(sched: Scheduler, out) -> None:  # the engine's postprocess, with token 7 sampled for every sampler
    sched.postprocess(out, [7] * len(out.sampling), [None] * len(out.sampling))


def test_budget_chunks_long_prompt() -> None:
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=8, max_num_batched_tokens=10)
    seq = make_seq(list(range(25)))
    sched.add(seq)
    chunks = []
    for _ in range(3):
        out = sched.schedule()
        chunks.append([n for _, n in out.scheduled])
        advance(sched, out)
    assert chunks == [[10], [10], [5]]
    assert seq.num_output_tokens == 1


def test_decode_goes_first_then_new_prefill_fills_the_budget() -> None:
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=8, max_num_batched_tokens=8)
    a = make_seq(list(range(4)), "a")
    sched.add(a)
    advance(sched, sched.schedule())
    b = make_seq(list(range(100, 120)), "b")  # no prefix shared with a: nothing comes from the prefix cache
    sched.add(b)
    out = sched.schedule()
    assert [(s.request_id, n) for s, n in out.scheduled] == [("a", 1), ("b", 7)]
    assert out.sampling == [a]  # b is mid-prefill: it samples only once its prompt is computed


def test_postprocess_appends_applies_length_and_retires() -> None:
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=8, max_num_batched_tokens=64)
    seq = make_seq(list(range(6)), max_tokens=2)
    sched.add(seq)
    advance(sched, sched.schedule())
    assert seq.num_computed_tokens == 6 and seq.output_token_ids == [7] and not seq.is_finished
    assert len(sched.bm.cached) == 1  # the full first block is registered for prefix reuse
    advance(sched, sched.schedule())
    assert seq.output_token_ids == [7, 7] and seq.finish_reason == "length" and not sched.has_unfinished()


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
    advance(sched, sched.schedule())  # both prefilled: 2 blocks each, the pool is full
    for _ in range(10):
        out = sched.schedule()
        advance(sched, out)
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
    advance(sched, sched.schedule())
    sched.finish(seq, "abort")
    assert bm.num_free_blocks == 8 and not sched.has_unfinished()
    assert seq.finish_reason == "abort"
