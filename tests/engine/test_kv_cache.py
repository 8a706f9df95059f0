"""The KV pool in each cache dtype: what it stores comes back within the dtype's error, its bytes are as stated,
a gathered read equals a contiguous one, and bad dtypes are refused by name."""

from __future__ import annotations

import pytest
import torch

from engine.kv_cache import KV_CACHE_DTYPES, KVPool, bytes_per_head_token, check_kv_cache_dtype

CPU = torch.device("cpu")
MAX_ERROR = {"auto": 0.0, "fp32": 0.0, "bf16": 1e-2, "fp16": 1e-3, "int8": 1e-2, "int4": 0.1}  # of the head's max


def filled(dtype: str, heads: int = 3, slots: int = 32, d: int = 64) -> tuple[KVPool, torch.Tensor, torch.Tensor]:
    pool = KVPool(heads, slots, d, dtype, torch.float32, CPU)
    torch.manual_seed(0)
    k, v = torch.randn(slots, heads, d) * 3, torch.randn(slots, heads, d)
    pool.write(torch.arange(slots), k, v)
    return pool, k, v


@pytest.mark.parametrize("dtype", KV_CACHE_DTYPES)
def test_round_trip_within_the_dtypes_error(dtype: str) -> None:
    pool, k, v = filled(dtype)
    got_k, got_v = pool.read(0, 32, None)
    for got, want in ((got_k, k.transpose(0, 1)), (got_v, v.transpose(0, 1))):
        error = (got - want).abs().amax(-1) / want.abs().amax(-1)
        assert error.max().item() <= MAX_ERROR[dtype]
        assert got.dtype == torch.float32


@pytest.mark.parametrize("dtype", KV_CACHE_DTYPES)
def test_gathered_read_equals_contiguous(dtype: str) -> None:
    pool, _, _ = filled(dtype)
    index = torch.arange(5, 17)
    for a, b in zip(pool.read(5, 12, None), pool.read(None, 12, index), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", KV_CACHE_DTYPES)
def test_bytes_are_what_sizing_assumes(dtype: str) -> None:
    pool = KVPool(3, 32, 64, dtype, torch.float32, CPU)
    assert pool.nbytes == 2 * 3 * 32 * bytes_per_head_token(dtype, 64, torch.float32)


def test_writes_land_only_in_their_slots() -> None:
    pool, _, _ = filled("int8")
    before = [t.clone() for t in pool.data]
    pool.write(torch.tensor([7]), torch.ones(1, 3, 64), torch.ones(1, 3, 64))
    for old, new in zip(before, pool.data, strict=True):
        changed = (old != new).any(-1).any(0)
        assert changed.nonzero().flatten().tolist() == [7]


def test_int8_of_a_zero_vector_stays_zero() -> None:
    pool = KVPool(1, 4, 64, "int8", torch.float32, CPU)
    pool.write(torch.tensor([0]), torch.zeros(1, 1, 64), torch.zeros(1, 1, 64))
    assert torch.equal(pool.read(0, 1, None)[0], torch.zeros(1, 1, 64))


@pytest.mark.parametrize(("dtype", "head_dim", "message"), [("fp8", 64, "choose one of"), ("int4", 48, "divisible")])
def test_bad_dtype_is_refused_by_name(dtype: str, head_dim: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_kv_cache_dtype(dtype, head_dim)
