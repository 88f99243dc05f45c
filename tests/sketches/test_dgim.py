"""Tests for sketches.dgim.DGIM."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sketches.ams import AMSSketch
from sketches.dgim import DGIM

bits_st = st.lists(st.integers(0, 1), max_size=300)


def fed(window: int, r: int, bits: list[int] | np.ndarray) -> DGIM:
    d = DGIM(window, r)
    d.update(bits)
    return d


def true_count(bits: np.ndarray, last: int) -> int:
    return int(np.asarray(bits[-last:], dtype=np.int64).sum()) if len(bits) else 0


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 0}, "window must be an int in \\[1, .*got 0"),
        ({"window": -5}, "window must be.*got -5"),
        ({"window": 10.0}, "window must be"),
        ({"window": True}, "window must be"),
        ({"window": 10, "r": 1}, "r must be an int in \\[2, .*got 1"),
        ({"window": 10, "r": 70_000}, "r must be"),
    ],
)
def test_bad_parameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DGIM(**kwargs)  # type: ignore[arg-type]


def test_properties_and_error_bound() -> None:
    d = DGIM(100, 3)
    assert (d.window, d.r, d.position, d.merge_depth) == (100, 3, 0, 0)
    with pytest.raises(AttributeError):
        d.window = 5  # type: ignore[misc]
    assert DGIM(10, 2).error_bound == 0.5
    assert DGIM(10, 3).error_bound == 0.25
    assert DGIM(10, 9).error_bound == 0.1
    assert "DGIM(window=100" in repr(d)


def test_bad_bits_and_last() -> None:
    d = DGIM(10)
    for bad in (2, -1, 0.5, 1.0, "1", None):
        with pytest.raises(ValueError, match="bit must be 0 or 1"):
            d.add(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bits must be 0 or 1"):
        d.update([0, 1, 2])
    with pytest.raises(ValueError, match="bits must be 0/1"):
        d.update(np.array([0.0, 1.0]))
    for last in (0, 11, -1, 2.0):
        with pytest.raises(ValueError, match="last must be an int in \\[1, 10\\]"):
            d.count(last)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="last must be"):
            d.exact_bounds(last)  # type: ignore[arg-type]
    assert d.position == 0


# ---------------------------------------------------------------- basics


def test_empty_and_zero_streams() -> None:
    d = DGIM(50)
    assert d.count() == 0
    assert d.exact_bounds() == (0, 0)
    d.update([])
    d.update(np.zeros(0, dtype=bool))
    assert d.position == 0
    d.update(np.zeros(1000, dtype=np.uint8))
    assert d.position == 1000
    assert d.count() == 0 and d.count(1) == 0
    d._check()


def test_small_exact_counts_and_expiry() -> None:
    d = DGIM(5, r=2)
    d.update([1, 1, 0])
    assert d.count() == 2 and d.exact_bounds() == (2, 2)  # only size-1 buckets: exact
    d.update([0, 0, 0, 0, 0])
    assert d.count() == 0  # everything expired
    assert d._n() == 0


def test_input_forms_agree() -> None:
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, 500)
    ref = fed(64, 2, bits.tolist())
    for arr in (bits.astype(bool), bits.astype(np.int8), bits.astype(np.uint64), bits.tolist()):
        assert fed(64, 2, arr) == ref
    seq = DGIM(64, 2)
    for b in bits.astype(bool):
        seq.add(b)
    assert seq == ref


def test_check_detects_broken_invariants() -> None:
    d = fed(100, 2, np.ones(60, dtype=int))
    d._check()
    broken = d.copy()
    broken._levels[0].extend([60, 60])
    with pytest.raises(ValueError, match="more than r=2"):
        broken._check()
    broken = d.copy()
    broken._levels[0].clear()
    with pytest.raises(ValueError, match="below the largest size"):
        broken._check()
    broken = d.copy()
    broken._levels[-1][0] = -50
    with pytest.raises(ValueError, match="outside the window"):
        broken._check()
    broken = d.copy()
    broken._levels[1][0] = broken._levels[0][0]
    with pytest.raises(ValueError, match="not decreasing"):
        broken._check()
    broken = d.copy()
    broken._levels.append([])
    with pytest.raises(ValueError, match="largest size has no bucket"):
        broken._check()


def test_seeded_stress_check_after_every_update() -> None:
    rng = np.random.default_rng(11)
    for window, r in [(1, 2), (7, 2), (100, 3), (1000, 2), (513, 5)]:
        batched, single = DGIM(window, r), DGIM(window, r)
        stream: list[int] = []
        for _ in range(150):
            density = rng.choice([0.0, 0.05, 0.5, 1.0])
            chunk = (rng.random(int(rng.integers(0, 60))) < density).astype(int)
            batched.update(chunk)
            batched._check()
            for b in chunk.tolist():
                single.add(b)
                single._check()
            stream.extend(chunk.tolist())
            assert batched == single
            lo, hi = batched.exact_bounds()
            assert lo <= true_count(np.array(stream), min(window, max(len(stream), 1))) <= hi


# ---------------------------------------------------------------- accuracy


def _check_every_query(bits: np.ndarray, window: int, r: int, lasts: tuple[int, ...]) -> float:
    """Feed bit by bit; at every position check the bound and the interval for each ``last``."""
    d = DGIM(window, r)
    eps = d.error_bound
    prefix = np.concatenate([[0], np.cumsum(bits, dtype=np.int64)]).tolist()
    worst = 0.0
    for i, bit in enumerate(bits.tolist()):
        d.add(bit)
        for last in lasts:
            truth = prefix[i + 1] - prefix[max(0, i + 1 - last)]
            est = d.count(last)
            lo, hi = d.exact_bounds(last)
            assert lo <= truth <= hi
            assert lo <= est <= hi
            if truth == 0:
                assert est == 0
            else:
                assert abs(est - truth) <= eps * truth
                worst = max(worst, abs(est - truth) / truth)
    return worst


@pytest.mark.parametrize(("window", "density"), [(1000, 0.02), (1000, 0.5), (4096, 0.95), (4096, 0.1)])
def test_error_bound_at_every_query_r2(window: int, density: float) -> None:
    # The bound |est - T| <= eps(r) T is deterministic (class Notes), so it must hold at every
    # position and for every range; the worst observed ratio reaches it (it is tight).
    bits = (np.random.default_rng(int(density * 100) + window).random(200_000) < density).astype(np.int64)
    worst = _check_every_query(bits, window, 2, (window, window // 3, 17))
    assert worst <= 0.5


@pytest.mark.parametrize("r", [3, 5])
def test_error_bound_at_every_query_larger_r(r: int) -> None:
    rng = np.random.default_rng(r)
    # bursty stream: the density changes every 2000 bits
    density = np.repeat(rng.choice([0.0, 0.01, 0.3, 0.9, 1.0], 20), 2000)
    bits = (rng.random(density.size) < density).astype(np.int64)
    worst = _check_every_query(bits, 1000, r, (1000, 250))
    assert worst <= max(1 / (2 * (r - 1)), 1 / (r + 1))


def test_memory_is_logarithmic() -> None:
    d = fed(4096, 2, np.ones(50_000, dtype=np.int64))
    # sizes 1..2**12 with at most r = 2 each: at most 2 * 13 buckets
    assert d._n() <= 2 * 13
    assert len(d.to_bytes()) <= 150


# ---------------------------------------------------------------- properties


@settings(max_examples=80, deadline=None)
@given(bits=bits_st, window=st.integers(1, 40), r=st.integers(2, 4), cut=st.integers(0, 300))
def test_update_equals_sequential_add(bits: list[int], window: int, r: int, cut: int) -> None:
    batched = DGIM(window, r)
    batched.update(bits[:cut])
    batched.update(np.array(bits[cut:], dtype=np.int64))
    single = DGIM(window, r)
    for b in bits:
        single.add(b)
    assert batched.to_bytes() == single.to_bytes()
    batched._check()


@settings(max_examples=80, deadline=None)
@given(bits=bits_st, window=st.integers(1, 40), r=st.integers(2, 300))
def test_bytes_round_trip(bits: list[int], window: int, r: int) -> None:
    d = fed(window, r, bits)
    back = DGIM.from_bytes(d.to_bytes())
    assert back == d and back.to_bytes() == d.to_bytes()
    assert back.count() == d.count() and back.exact_bounds() == d.exact_bounds()
    assert pickle.loads(pickle.dumps(d)) == d
    c = d.copy()
    c.add(1)
    assert c != d


def test_bytes_round_trip_huge_window() -> None:
    d = fed(2**40, 2, np.ones(100, dtype=int))
    assert DGIM.from_bytes(d.to_bytes()) == d


@settings(max_examples=80, deadline=None)
@given(a=bits_st, b=bits_st, c=bits_st, window=st.integers(1, 60), r=st.integers(2, 4))
def test_merge_guarantee(a: list[int], b: list[int], c: list[int], window: int, r: int) -> None:
    n = min(len(a), len(b), len(c))
    a, b, c = a[:n], b[:n], c[:n]
    da, db, dc = fed(window, r, a), fed(window, r, b), fed(window, r, c)
    ab = da.copy()
    ab.merge(db)
    ab._check()
    ba = db.copy()
    ba.merge(da)
    assert ab == ba  # commutative, bit-identical
    abc = ab.copy()
    abc.merge(dc)
    abc._check()
    eps = da.error_bound
    for sketch, streams in ((ab, (a, b)), (abc, (a, b, c))):
        for last in {window, max(1, window // 2), 1}:
            truth = sum(true_count(np.array(s, dtype=np.int64), last) for s in streams)
            lo, hi = sketch.exact_bounds(last)
            assert lo <= truth <= hi
            est = sketch.count(last)
            factor = (r / (r - 1)) ** sketch.merge_depth
            assert (1 - eps) * truth <= est <= (1 + eps) * factor * truth
    # merging a sketch that holds no bucket changes nothing
    empty = DGIM(window, r)
    empty.update(np.zeros(n, dtype=int))
    left = da.copy()
    left.merge(empty)
    assert left == da
    empty.merge(da)
    assert empty == da


def test_merge_aligns_positions_with_zeros() -> None:
    behind = fed(10, 2, [1, 1, 1])
    ahead = fed(10, 2, [0] * 5 + [1] * 6)
    merged = behind.copy()
    merged.merge(ahead)
    assert merged.position == 11
    # truth: the behind stream padded with zeros has its three ones at positions 1..3,
    # of which 2 and 3 are in the window (2..11); the other stream has 6 ones
    lo, hi = merged.exact_bounds()
    assert lo <= 8 <= hi
    other_way = ahead.copy()
    other_way.merge(behind)
    assert other_way == merged
    fresh = DGIM(10, 2)
    fresh.merge(ahead)
    assert fresh == ahead
    gone = fed(10, 2, [1])
    gone.merge(fed(10, 2, [0] * 30))  # the single one expires on alignment
    assert gone.position == 30 and gone.count() == 0 and gone.merge_depth == 0


def test_merge_accuracy_long_streams() -> None:
    rng = np.random.default_rng(5)
    a = (rng.random(40_000) < 0.3).astype(np.int64)
    b = (rng.random(40_000) < np.repeat([0.0, 0.8, 0.1, 0.5], 10_000)).astype(np.int64)
    da, db = DGIM(1000, 2), DGIM(1000, 2)
    worst_low, worst_high = 1.0, 1.0
    for stop in range(1000, 40_001, 500):
        da.update(a[da.position : stop])
        db.update(b[db.position : stop])
        m = da.copy()
        m.merge(db)
        for last in (1000, 300):
            truth = int(a[stop - last : stop].sum() + b[stop - last : stop].sum())
            ratio = m.count(last) / truth
            worst_low, worst_high = min(worst_low, ratio), max(worst_high, ratio)
    # documented guarantee for one merge with r = 2: ratio in [0.5, 3]
    assert worst_low >= 0.5 and worst_high <= 3.0


def test_merge_errors() -> None:
    d = fed(10, 2, [1, 0, 1])
    with pytest.raises(ValueError, match="window differs"):
        d.merge(fed(11, 2, [1, 0, 1]))
    with pytest.raises(ValueError, match="r differs"):
        d.merge(fed(10, 3, [1, 0, 1]))
    with pytest.raises(ValueError, match="with itself"):
        d.merge(d)
    with pytest.raises(ValueError, match="cannot merge AMSSketch"):
        d.merge(AMSSketch(4, 2))  # type: ignore[arg-type]


# ---------------------------------------------------------------- corruption


def test_from_bytes_rejects_corruption() -> None:
    d = fed(300, 2, (np.random.default_rng(1).random(1000) < 0.5).astype(int))
    blob = d.to_bytes()
    for cut in range(len(blob)):
        with pytest.raises(ValueError):
            DGIM.from_bytes(blob[:cut])
    for pos in range(len(blob)):
        for bit in range(8):
            flipped = bytearray(blob)
            flipped[pos] ^= 1 << bit
            with pytest.raises(ValueError):
                DGIM.from_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="hold a AMSSketch"):
        DGIM.from_bytes(AMSSketch(3, 1).to_bytes())


def test_from_bytes_checks_invariants_behind_a_valid_checksum() -> None:
    from sketches.dgim import _CODEC

    good = fed(8, 2, [1] * 8)
    (params, payload) = _CODEC.load(good.to_bytes())
    bad_payload = bytearray(payload)
    bad_payload[1] = 3  # three buckets of size 1 with r = 2
    with pytest.raises(ValueError):
        DGIM.from_bytes(_CODEC.dump(params, bytes(bad_payload)))
    with pytest.raises(ValueError, match="outside the window"):
        DGIM.from_bytes(_CODEC.dump(params, payload[:-4] + (100).to_bytes(4, "little")))
    with pytest.raises(ValueError, match="empty payload"):
        DGIM.from_bytes(_CODEC.dump(params, b""))
