"""Tests for sketches.aging_bloom.AgingBloomFilter."""

from __future__ import annotations

import math
import pickle
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from sketches._format import Codec
from sketches.aging_bloom import AgingBloomFilter
from sketches.bloom import BloomFilter

PARAMS = "<QddIBd"
TTLS = st.one_of(st.sampled_from([0.1, 1 / 3, 1.0, 7.5, 60.0, 3600.0]), st.floats(1e-3, 1e5))
TIMES = st.one_of(st.floats(-1e6, 2e9), st.integers(-(10**6), 2 * 10**9))
KEYS = st.one_of(st.integers(0, 30), st.sampled_from(["a", "b", "c", b"d"]))
Event = tuple[int | str | bytes, float]


def tiny(ttl: float = 1.0, seed: int = 0) -> AgingBloomFilter:
    # a few dozen bits per generation: probe collisions between different items are common
    return AgingBloomFilter(capacity=4, fp_rate=0.2, ttl=ttl, seed=seed)


# -- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 0.01, 1.0), r"capacity must be an int in \[1, .*\], got 0"),
        ((1.5, 0.01, 1.0), "capacity .* got 1.5"),
        ((10, 0.0, 1.0), r"fp_rate must be a float in \(0, 1\), got 0.0"),
        ((10, 1.2, 1.0), "fp_rate .* got 1.2"),
        ((10, float("nan"), 1.0), "fp_rate .* got nan"),
        ((10, 0.01, 0), "ttl must be a positive finite number of seconds, got 0"),
        ((10, 0.01, -1.0), "ttl .* got -1.0"),
        ((10, 0.01, float("inf")), "ttl .* got inf"),
        ((10, 0.01, float("nan")), "ttl .* got nan"),
        ((10, 0.01, "60"), "ttl .* got '60'"),
        ((10, 0.01, 1.0, -1), "seed .* got -1"),
    ],
)
def test_constructor_rejects_bad_parameters(args: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AgingBloomFilter(*args)  # type: ignore[arg-type]


def test_parameters_and_sizing() -> None:
    f = AgingBloomFilter(capacity=5_000, fp_rate=0.01, ttl=30, seed=4)
    assert (f.capacity, f.fp_rate, f.ttl, f.seed) == (5_000, 0.01, 30.0, 4)
    assert isinstance(f.ttl, float)
    # each generation is sized for fp_rate / 2 so that the two-filter check stays <= fp_rate
    ref = BloomFilter.from_error(5_000, 0.005)
    assert (f.num_bits, f.num_hashes) == (ref.num_bits, ref.num_hashes)
    assert f.clock is None
    assert f.generation is None
    for name in ("capacity", "fp_rate", "ttl", "seed", "clock", "generation"):
        with pytest.raises(AttributeError):
            setattr(f, name, 1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), np.float64("nan")])
def test_rejects_non_finite_timestamps(bad: float) -> None:
    f = tiny()
    for call in (
        lambda: f.add("x", bad),
        lambda: f.update(["x", "y"], [1.0, bad]),
        lambda: f.contains("x", bad),
        lambda: f.contains_many(["x"], np.array([bad])),
        lambda: f.check_and_add("x", bad),
        lambda: f.check_and_add_many(["x", "y"], np.array([0.0, bad])),
    ):
        with pytest.raises(ValueError, match="ts must be finite"):
            call()
    assert f.clock is None  # nothing was applied


def test_rejects_bad_timestamp_shapes_and_types() -> None:
    f = tiny()
    with pytest.raises(ValueError, match="1-D array of 2 timestamps, got shape"):
        f.update(["x", "y"], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="ts must be a number"):
        f.add("x", "noon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ts must be a number"):
        f.add("x", 10**400)
    with pytest.raises(ValueError, match="out of range"):
        AgingBloomFilter(10, 0.01, ttl=1e-300).add("x", 1e300)


def test_empty_filter_and_empty_batches() -> None:
    f = tiny()
    assert not f.contains("x", 0.0)
    assert f.contains_many([], 0.0).shape == (0,)
    f.update([], 5.0)
    assert f.check_and_add_many([], 5.0).shape == (0,)
    assert f.clock is None  # an empty batch does not set the clock
    assert f == tiny()


def test_int_and_float_timestamps_agree() -> None:
    a, b = tiny(ttl=10), tiny(ttl=10)
    a.update([1, 2, 3], np.array([5, 15, 25], dtype=np.int64))
    b.update([1, 2, 3], [5.0, 15.0, 25.0])
    assert a == b
    assert a.clock == 25.0
    assert a.generation == 2


def test_mixed_items_and_numpy_arrays() -> None:
    f = AgingBloomFilter(100, 0.01, ttl=60)
    f.update(["x", b"y", 7, np.uint8(3)], ts=100)
    assert f.contains_many(["x", b"x", "y", 7, 3], 120).tolist() == [True, True, True, True, True]
    for dtype in (np.int8, np.int32, np.uint64):
        g = AgingBloomFilter(100, 0.01, ttl=60)
        g.update(np.arange(20, dtype=dtype), ts=1)
        assert g.contains_many(list(range(20)), 1).all()


def test_generation_rotation() -> None:
    f = AgingBloomFilter(100, 0.01, ttl=10)
    f.add("a", 3)  # generation 0
    f.add("b", 12)  # generation 1: "a" is in the previous filter
    assert f.generation == 1
    assert f.contains_many(["a", "b"], 19.9).tolist() == [True, True]
    assert f.contains_many(["a", "b"], 20).tolist() == [False, True]  # query at generation 2
    assert f.contains_many(["a", "b"], 30).tolist() == [False, False]
    assert f.clock == 12  # queries do not move the clock
    f.add("c", 25)  # generation 2: "a" dropped
    assert f.contains_many(["a", "b", "c"], 25).tolist() == [False, True, True]
    f.add("d", 47)  # skips generation 3: everything older dropped
    assert f.contains_many(["b", "c", "d"], 47).tolist() == [False, False, True]


def test_late_events_use_the_clock() -> None:
    f = AgingBloomFilter(100, 0.01, ttl=10)
    f.add("now", 100)
    f.add("late", 3)  # processed at the clock's generation 10, not generation 0
    assert f.clock == 100
    assert f.contains("late", 100)
    assert f.contains("late", 5)  # a late query counts at the clock as well
    assert f.contains("late", 119.9)
    assert not f.contains("late", 120)
    assert f.check_and_add_many(["late", "x", "x"], [0.0, 1.0, 2.0]).tolist() == [True, False, True]


def test_check_and_add_across_generations() -> None:
    f = AgingBloomFilter(100, 0.01, ttl=60.0)
    got = f.check_and_add_many(["a", "b", "a", "a", "b", "a"], [0, 10, 59, 100, 130, 300])
    # a@59 is an in-batch repeat; a@100 is in the next generation (prev holds a);
    # b@130 is two generations after b@10; a@300 is far beyond
    assert got.tolist() == [False, False, True, True, False, False]


def test_copy_pickle_equality() -> None:
    f = AgingBloomFilter(100, 0.01, ttl=5)
    f.update(["a", "b"], [1.0, 7.0])
    assert pickle.loads(pickle.dumps(f)) == f
    g = f.copy()
    g.add("c", 7.5)
    assert g != f
    assert not f.contains("c", 7.5)


# -- the TTL guarantee ------------------------------------------------------------------------


def _exact(x: float) -> Fraction:
    return Fraction(x)


def _smallest_float_at_least(bound: Fraction) -> float:
    x = float(bound)
    while _exact(x) < bound:
        x = float(np.nextafter(x, np.inf))
    while _exact(float(np.nextafter(x, -np.inf))) >= bound:
        x = float(np.nextafter(x, -np.inf))
    return x


@settings(max_examples=400, deadline=None)
@given(t=TIMES, ttl=TTLS, frac=st.floats(0.0, 1.0, exclude_max=True), edge=st.booleans())
@example(t=120.0, ttl=60.0, frac=0.0, edge=True)
@example(t=0.3, ttl=0.1, frac=0.0, edge=True)
@example(t=-60.0, ttl=60.0, frac=0.999999, edge=False)
def test_present_for_every_query_within_ttl(t: float, ttl: float, frac: float, edge: bool) -> None:
    t = float(t)
    # the query time t2 in [t, t + ttl); edge=True takes the largest float below t + ttl
    t2 = float(np.nextafter(t + ttl, -np.inf)) if edge else t + frac * ttl
    assume(_exact(t) <= _exact(t2) < _exact(t) + _exact(ttl))
    f = AgingBloomFilter(50, 0.01, ttl=ttl, seed=3)
    f.add("x", t)
    assert f.contains("x", t2)
    g = f.copy()
    assert g.check_and_add("x", t2)  # also when the query moves the clock
    f.add("other", t2)  # an insertion at t2 rotates generations: still present
    assert f.contains("x", t2)
    assert f.contains_many(["x"], [t2]).all()


@settings(max_examples=400, deadline=None)
@given(t=TIMES, ttl=TTLS, extra=st.floats(0.0, 5.0), edge=st.booleans())
@example(t=120.0, ttl=60.0, extra=0.0, edge=True)
@example(t=119.99, ttl=60.0, extra=0.0, edge=True)
@example(t=0.3, ttl=0.1, extra=0.0, edge=True)
def test_forgotten_for_every_query_after_two_ttl(t: float, ttl: float, extra: float, edge: bool) -> None:
    t = float(t)
    # the query time t2 >= t + 2 ttl; edge=True takes the smallest float at or above it
    t2 = _smallest_float_at_least(_exact(t) + 2 * _exact(ttl)) if edge else t + (2 + extra) * ttl
    assume(_exact(t2) >= _exact(t) + 2 * _exact(ttl))
    f = AgingBloomFilter(50, 0.01, ttl=ttl, seed=3)
    f.add("x", t)
    assert not f.contains("x", t2)
    g = f.copy()
    assert not g.check_and_add("x", t2)
    f.add("other", t2)  # rotation drops the generation that held "x"
    assert not f.contains("x", t2)
    assert not f.contains_many(["x", "x"], [t2, t2 + ttl]).any()


def test_stream_against_exact_last_seen_model() -> None:
    # a time-ordered stream; the exact answer says when "seen within ttl" must hold
    rng = np.random.default_rng(2024)
    ttl, n = 50.0, 40_000
    ts = np.sort(rng.uniform(0, 2_000, n))
    keys = rng.integers(0, 3_000, n)
    f = AgingBloomFilter(capacity=3_000, fp_rate=0.01, ttl=ttl, seed=9)
    got = np.concatenate([f.check_and_add_many(keys[i : i + 997], ts[i : i + 997]) for i in range(0, n, 997)])
    last: dict[int, float] = {}
    must, must_not = np.zeros(n, bool), np.zeros(n, bool)
    for j, (key, t) in enumerate(zip(keys.tolist(), ts.tolist(), strict=True)):
        prev = last.get(key)
        must[j] = prev is not None and t - prev < ttl
        must_not[j] = prev is None or t - prev >= 2 * ttl
        last[key] = t
    assert got[must].all()  # no false negatives inside the TTL
    # false positives: at most fp_rate per query (far fewer while the filters are not full);
    # binomial count over the must_not queries, allow fp_rate + 4 standard deviations
    bound = must_not.sum() * 0.01 + 4 * math.sqrt(must_not.sum() * 0.01)
    assert got[must_not].sum() <= bound


# -- batch == sequential ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    prefill=st.lists(st.tuples(KEYS, st.integers(0, 8)), max_size=20),
    batch=st.lists(st.tuples(KEYS, st.floats(0, 10)), max_size=60),
    ttl=st.sampled_from([0.5, 1.0, 3.0, 100.0]),
)
def test_check_and_add_many_equals_sequential(prefill: list[Event], batch: list[Event], ttl: float) -> None:
    a, b = tiny(ttl), tiny(ttl)
    for key, t in prefill:
        a.add(key, t)
        b.add(key, t)
    items = [key for key, _ in batch]
    times = np.array([t for _, t in batch], dtype=np.float64)
    expected = [b.check_and_add(key, t) for key, t in batch]
    assert a.check_and_add_many(items, times).tolist() == expected
    assert a.to_bytes() == b.to_bytes()


@settings(max_examples=150, deadline=None)
@given(
    batch=st.lists(st.tuples(KEYS, st.floats(-5, 10)), max_size=60),
    ttl=st.sampled_from([0.5, 1.0, 3.0]),
    scalar=st.booleans(),
)
def test_update_equals_sequential_add(batch: list[Event], ttl: float, scalar: bool) -> None:
    a, b = tiny(ttl), tiny(ttl)
    items = [key for key, _ in batch]
    times: float | list[float] = 4.0 if scalar else [t for _, t in batch]
    a.update(items, times)
    for j, key in enumerate(items):
        b.add(key, times if isinstance(times, float) else times[j])
    assert a.to_bytes() == b.to_bytes()


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(st.tuples(KEYS, st.floats(0, 6)), max_size=30),
    queries=st.lists(st.tuples(KEYS, st.floats(0, 12)), max_size=30),
)
def test_contains_many_equals_contains(events: list[Event], queries: list[Event]) -> None:
    f = tiny(ttl=2.0)
    for key, t in events:
        f.add(key, t)
    before = f.to_bytes()
    got = f.contains_many([k for k, _ in queries], [t for _, t in queries])
    assert got.tolist() == [f.contains(k, t) for k, t in queries]
    assert f.to_bytes() == before  # queries never change the state


# -- merge ------------------------------------------------------------------------------------


def _fed(events: list[Event], ttl: float) -> AgingBloomFilter:
    f = tiny(ttl, seed=5)
    for key, t in events:
        f.add(key, t)
    return f


STREAM = st.lists(st.tuples(KEYS, st.floats(0, 20)), max_size=25).map(
    lambda ev: sorted(ev, key=lambda e: e[1])
)


@settings(max_examples=200, deadline=None)
@given(a=STREAM, b=STREAM, ttl=st.sampled_from([0.5, 1.0, 4.0, 50.0]))
def test_merge_equals_time_ordered_union(a: list[Event], b: list[Event], ttl: float) -> None:
    # each side fed in time order: the merge equals one filter fed the union in time order
    merged = _fed(a, ttl)
    merged.merge(_fed(b, ttl))
    union = sorted(a + b, key=lambda e: e[1])
    assert merged.to_bytes() == _fed(union, ttl).to_bytes()
    other_way = _fed(b, ttl)
    other_way.merge(_fed(a, ttl))
    assert other_way == merged  # commutative


@settings(max_examples=100, deadline=None)
@given(a=STREAM, b=STREAM, c=STREAM)
def test_merge_is_associative(a: list[Event], b: list[Event], c: list[Event]) -> None:
    left = _fed(a, 2.0)
    left.merge(_fed(b, 2.0))
    left.merge(_fed(c, 2.0))
    bc = _fed(b, 2.0)
    bc.merge(_fed(c, 2.0))
    right = _fed(a, 2.0)
    right.merge(bc)
    assert left == right


def test_merge_aligns_generations() -> None:
    old, new = AgingBloomFilter(100, 0.01, ttl=10), AgingBloomFilter(100, 0.01, ttl=10)
    old.update(["g0"], 5)
    old.update(["g1"], 15)
    new.update(["g2"], 25)
    new.update(["g3"], 35)
    old.merge(new)  # generations 0,1 + 2,3 -> keep 2,3
    assert old.generation == 3
    assert old.clock == 35
    assert old.contains_many(["g0", "g1", "g2", "g3"], 35).tolist() == [False, False, True, True]
    empty = AgingBloomFilter(100, 0.01, ttl=10)
    empty.merge(old)
    assert empty == old
    snapshot = old.to_bytes()
    old.merge(AgingBloomFilter(100, 0.01, ttl=10))
    assert old.to_bytes() == snapshot


def test_merge_rejects_incompatible() -> None:
    f = AgingBloomFilter(100, 0.01, ttl=10, seed=1)
    for other, name in (
        (AgingBloomFilter(200, 0.01, ttl=10, seed=1), "capacity"),
        (AgingBloomFilter(100, 0.02, ttl=10, seed=1), "fp_rate"),
        (AgingBloomFilter(100, 0.01, ttl=20, seed=1), "ttl"),
        (AgingBloomFilter(100, 0.01, ttl=10, seed=2), "seed"),
    ):
        with pytest.raises(ValueError, match=f"{name} differs"):
            f.merge(other)
    with pytest.raises(ValueError, match="with itself"):
        f.merge(f)
    with pytest.raises(ValueError, match="cannot merge BloomFilter"):
        f.merge(BloomFilter(10, 1))  # type: ignore[arg-type]


# -- bytes ------------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(events=st.lists(st.tuples(KEYS, st.floats(-100, 100)), max_size=30), ttl=TTLS)
def test_bytes_round_trip(events: list[Event], ttl: float) -> None:
    f = tiny(ttl, seed=8)
    for key, t in events:
        f.add(key, t)
    back = AgingBloomFilter.from_bytes(f.to_bytes())
    assert back.to_bytes() == f.to_bytes()
    assert (back.clock, back.generation, back.ttl) == (f.clock, f.generation, f.ttl)
    keys = [k for k, _ in events]
    assert back.contains_many(keys, 100).tolist() == f.contains_many(keys, 100).tolist()


def test_from_bytes_rejects_every_truncation_and_bit_flip() -> None:
    f = AgingBloomFilter(3, 0.1, ttl=2.5, seed=4)
    f.update(["a", "b", 1], [1.0, 3.0, 6.0])
    blob = f.to_bytes()
    for cut in range(len(blob)):
        with pytest.raises(ValueError):
            AgingBloomFilter.from_bytes(blob[:cut])
    for byte in range(len(blob)):
        for bit in range(8):
            flipped = bytearray(blob)
            flipped[byte] ^= 1 << bit
            with pytest.raises(ValueError):
                AgingBloomFilter.from_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="BloomFilter, not a AgingBloomFilter"):
        AgingBloomFilter.from_bytes(BloomFilter(8, 1).to_bytes())
    for garbage in (b"", b"SKW\x02", bytes(range(200))):
        with pytest.raises(ValueError):
            AgingBloomFilter.from_bytes(garbage)


def _record(params: tuple[object, ...], payload: bytes) -> bytes:
    return Codec("AgingBloomFilter", 1, PARAMS).dump(params, payload)


def test_from_bytes_validates_content() -> None:
    half = (AgingBloomFilter(3, 0.1, 1.0).num_bits + 7) // 8
    ok = b"\x00" * (2 * half)
    cases: list[tuple[tuple[object, ...], bytes, str]] = [
        ((0, 0.1, 1.0, 0, 0, 0.0), ok, "capacity"),
        ((3, 1.5, 1.0, 0, 0, 0.0), ok, "fp_rate"),
        ((3, float("nan"), 1.0, 0, 0, 0.0), ok, "fp_rate"),
        ((3, 0.1, -1.0, 0, 0, 0.0), ok, "ttl"),
        ((3, 0.1, float("inf"), 0, 0, 0.0), ok, "ttl"),
        ((3, 0.1, 1.0, 0, 2, 0.0), ok, "bad clock"),
        ((3, 0.1, 1.0, 0, 1, float("nan")), ok, "bad clock"),
        ((3, 0.1, 1.0, 0, 0, 5.0), ok, "bad clock"),
        ((3, 0.1, 1.0, 0, 0, 0.0), b"\x01" + ok[1:], "bits set before any insertion"),
        ((3, 0.1, 1.0, 0, 1, 0.0), ok[1:], "payload bytes"),
        ((3, 0.1, 1.0, 0, 1, 0.0), ok + b"\x00", "payload bytes"),
        ((3, 0.1, 1.0, 0, 1, 1e300), ok, "out of range"),
        ((3, 0.1, 1.0, 0, 1, 0.0), ok[:-1] + b"\xff", "bits set beyond num_bits"),
        ((2**36, 0.1, 1.0, 0, 1, 0.0), ok, "payload bytes"),  # checked before any allocation
        ((2**40, 0.1, 1.0, 0, 1, 0.0), ok, "more than the maximum"),
    ]
    for params, payload, message in cases:
        with pytest.raises(ValueError, match=message):
            AgingBloomFilter.from_bytes(_record(params, payload))


# -- accuracy ---------------------------------------------------------------------------------


# Fill two consecutive generations with `capacity` distinct items each, then query 200,000
# never-added items at the newer generation. Each generation filter is sized for p / 2, so a
# query is a false positive with probability q = 1 - (1 - q1)(1 - q2), q_i ~ fill_i**k ~ p / 2
# (rounding of m and k moves q_i by under 2 %). The count is Binomial(Q, q): relative standard
# deviation 1 / sqrt(Q q) = 2.2 % at p = 1 %, so +-15 % of p is over 5 standard deviations.
@pytest.mark.parametrize(("fp_rate", "queries"), [(0.01, 200_000), (0.001, 600_000)])
def test_false_positive_rate_with_two_full_generations(fp_rate: float, queries: int) -> None:
    capacity, ttl = 50_000, 60.0
    f = AgingBloomFilter(capacity, fp_rate, ttl, seed=77)
    older = np.arange(capacity, dtype=np.int64)
    newer = np.arange(capacity, 2 * capacity, dtype=np.int64)
    f.update(older, ts=1_000.0)  # generation 16
    f.update(newer, ts=1_030.0)  # generation 17
    assert f.contains_many(np.concatenate([older, newer]), 1_030.0).all()  # no false negatives
    probes = np.arange(10**9, 10**9 + queries, dtype=np.int64)
    measured = float(f.contains_many(probes, 1_030.0).mean())
    assert abs(measured / fp_rate - 1) < 0.15, measured
    # one generation alone answers at about half the rate
    alone = float(f.contains_many(probes, 1_100.0).mean())  # next generation
    assert abs(alone / (fp_rate / 2) - 1) < 0.25, alone
