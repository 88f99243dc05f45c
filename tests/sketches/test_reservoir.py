"""Tests for sketches.reservoir: Reservoir, StratifiedReservoir, WeightedReservoir."""

from __future__ import annotations

import itertools
import math
import pickle
from collections import Counter
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare  # type: ignore[import-untyped]

from sketches import hashing, reservoir
from sketches._format import Codec, encode_items
from sketches.reservoir import Reservoir, StratifiedReservoir, WeightedReservoir

# Chi-square tests below are deterministic (fixed seeds); the threshold only documents how
# surprising a failure would be under the null hypothesis.
P_MIN = 1e-3

scalar_items = st.one_of(
    st.text(max_size=8),
    st.binary(max_size=8),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.none(),
    st.tuples(st.integers(0, 9), st.text(max_size=3)),
)
item_lists = st.lists(scalar_items, max_size=60)
small_k = st.integers(1, 12)
seeds = st.integers(0, 2**32 - 1)
salts = st.integers(0, 2**64 - 1)
strata_values = st.one_of(st.sampled_from(["a", "b", "c"]), st.integers(0, 3), st.just(b"a"))


def chunked(seq: list[Any], cuts: list[int]) -> list[list[Any]]:
    bounds = sorted({min(c, len(seq)) for c in cuts} | {0, len(seq)})
    return [seq[a:b] for a, b in itertools.pairwise(bounds)]


# ===================================================================== Reservoir: unit


class TestReservoirUnit:
    @pytest.mark.parametrize("k", [0, -1, True, 1.5, "3", 2**32])
    def test_bad_k(self, k: Any) -> None:
        with pytest.raises(ValueError, match=r"k must be a positive int .* got"):
            Reservoir(k)

    def test_bad_seed_and_salt(self) -> None:
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\), got -1"):
            Reservoir(3, seed=-1)
        with pytest.raises(ValueError, match=r"salt must be an int in \[0, 2\*\*64\), got -1"):
            Reservoir(3, salt=-1)
        with pytest.raises(ValueError, match="salt"):
            Reservoir(3, salt=2**64)

    def test_from_error(self) -> None:
        # k = ceil(ln(2 / delta) / (2 eps^2))
        assert Reservoir.from_error(0.05, 0.01).k == math.ceil(math.log(200) / (2 * 0.05**2))
        assert Reservoir.from_error(0.1, 0.05, seed=4).seed == 4
        with pytest.raises(ValueError, match="epsilon must be in"):
            Reservoir.from_error(0.0)
        with pytest.raises(ValueError, match="delta must be in"):
            Reservoir.from_error(0.1, 1.0)

    def test_properties_read_only(self) -> None:
        r = Reservoir(5, seed=2, salt=9)
        assert (r.k, r.seed, r.salt, r.n, len(r), r.sample) == (5, 2, 9, 0, 0, [])
        with pytest.raises(AttributeError):
            r.k = 3  # type: ignore[misc]

    def test_empty_and_empty_batch(self) -> None:
        r = Reservoir(4, seed=1)
        before = r.to_bytes()
        r.update([])
        r.update(np.array([], dtype=np.int64))
        assert r.to_bytes() == before
        assert Reservoir.from_bytes(before) == r

    def test_fill_phase_keeps_stream_order(self) -> None:
        r = Reservoir(5)
        r.update(["a", b"b", 3])
        r.add(4.5)
        assert r.sample == ["a", b"b", 3, 4.5]
        assert r.n == 4

    def test_sample_is_a_copy(self) -> None:
        r = Reservoir(3)
        r.update([1, 2])
        r.sample.append(99)
        assert r.sample == [1, 2]

    @pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int32, np.int64, np.uint64, np.float64])
    def test_numpy_arrays_match_sequential_add(self, dtype: Any) -> None:
        arr = (np.arange(500) % 100).astype(dtype)
        a, b = Reservoir(20, seed=7), Reservoir(20, seed=7)
        a.update(arr)
        for x in arr:
            b.add(x)
        assert a.to_bytes() == b.to_bytes()
        assert all(type(x) in (int, float) for x in a.sample)

    def test_mixed_and_structured_items_round_trip(self) -> None:
        items: list[Any] = ["s", b"b", 7, -2.5, None, ("t", 1), {"user": "u1", "v": [1, 2]}, True]
        r = Reservoir(20, seed=3)
        r.update(items)
        back = Reservoir.from_bytes(r.to_bytes())
        assert back.sample == items
        assert back == r

    def test_bad_batches(self) -> None:
        r = Reservoir(3)
        with pytest.raises(TypeError, match="items must be a list"):
            r.update("abc")
        with pytest.raises(TypeError, match="items must be a list"):
            r.update({1, 2})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="1-D array"):
            r.update(np.zeros((2, 2)))
        assert r.n == 0

    def test_unstorable_item(self) -> None:
        r = Reservoir(3)
        r.add(object())
        with pytest.raises(TypeError, match="cannot store"):
            r.to_bytes()

    def test_pickle_and_copy(self) -> None:
        r = Reservoir(4, seed=5, salt=3)
        r.update(list(range(50)))
        assert pickle.loads(pickle.dumps(r)) == r
        c = r.copy()
        c.add(1)
        assert c != r

    def test_seed_and_salt_change_the_sample(self) -> None:
        samples = set()
        for seed, salt in [(0, 0), (1, 0), (0, 1)]:
            r = Reservoir(10, seed=seed, salt=salt)
            r.update(list(range(1000)))
            samples.add(tuple(sorted(r.sample)))
        assert len(samples) == 3

    def test_merge_errors(self) -> None:
        a = Reservoir(4, seed=1)
        with pytest.raises(ValueError, match=r"k differs \(4 != 5\)"):
            a.merge(Reservoir(5, seed=1))
        with pytest.raises(ValueError, match=r"seed differs \(1 != 2\)"):
            a.merge(Reservoir(4, seed=2))
        with pytest.raises(ValueError, match="with itself"):
            a.merge(a)
        with pytest.raises(ValueError, match="cannot merge WeightedReservoir into Reservoir"):
            a.merge(WeightedReservoir(4, seed=1))  # type: ignore[arg-type]

    def test_merge_identity_and_determinism(self) -> None:
        a = Reservoir(5, seed=1, salt=1)
        a.update(list(range(100)))
        before = a.to_bytes()
        a.merge(Reservoir(5, seed=1, salt=2))
        assert a.to_bytes() == before
        e = Reservoir(5, seed=1, salt=1)
        e.merge(a)
        assert e.sample == a.sample and e.n == 100
        b = Reservoir(5, seed=1, salt=2)
        b.update(list(range(100, 130)))
        m1, m2 = a.copy(), a.copy()
        m1.merge(b)
        m2.merge(b.copy())
        assert m1 == m2
        assert m1.n == 130 and len(m1) == 5 and set(m1.sample) <= set(range(130))

    def test_merge_then_continue(self) -> None:
        a, b = Reservoir(3, salt=1), Reservoir(3, salt=2)
        a.update([1, 2])
        b.update([3, 4])
        a.merge(b)
        a.update(list(range(10, 100)))
        assert a.n == 94 and len(a) == 3


# ===================================================================== Reservoir: properties


@settings(max_examples=60, deadline=None)
@given(item_lists, small_k, seeds, st.lists(st.integers(0, 60), max_size=4))
def test_reservoir_update_equals_sequential_add(items: list[Any], k: int, seed: int, cuts: list[int]) -> None:
    seq = Reservoir(k, seed)
    for x in items:
        seq.add(x)
    batch = Reservoir(k, seed)
    for part in chunked(items, cuts):
        batch.update(part)
    assert batch.to_bytes() == seq.to_bytes()
    assert len(batch) == min(k, len(items)) and batch.n == len(items)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 5000), small_k, seeds, salts)
def test_reservoir_numpy_batch_equals_add(m: int, k: int, seed: int, salt: int) -> None:
    arr = np.arange(m, dtype=np.int64) * 3 - 7
    a = Reservoir(k, seed, salt=salt)
    a.update(arr)
    b = Reservoir(k, seed, salt=salt)
    for x in arr.tolist():
        b.add(x)
    assert a.to_bytes() == b.to_bytes()


@settings(max_examples=60, deadline=None)
@given(item_lists, small_k, seeds, salts)
def test_reservoir_bytes_round_trip(items: list[Any], k: int, seed: int, salt: int) -> None:
    r = Reservoir(k, seed, salt=salt)
    r.update(items)
    back = Reservoir.from_bytes(r.to_bytes())
    assert back == r and back.sample == r.sample and (back.n, back.salt) == (r.n, salt)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 40), st.integers(0, 40), small_k, seeds, salts, salts)
def test_reservoir_merge_laws(n1: int, n2: int, k: int, seed: int, s1: int, s2: int) -> None:
    a, b = Reservoir(k, seed, salt=s1), Reservoir(k, seed, salt=s2)
    a.update([("a", i) for i in range(n1)])
    b.update([("b", i) for i in range(n2)])
    merged = a.copy()
    merged.merge(b)
    assert merged.n == n1 + n2 and len(merged) == min(k, n1 + n2)
    assert len(set(merged.sample)) == len(merged)
    assert set(merged.sample) <= set(a.sample) | set(b.sample)
    if n1 + n2 <= k:  # whole streams: bit-identical to one reservoir fed A then B
        fed = Reservoir(k, seed, salt=s1)
        fed.update(a.sample + b.sample)
        assert merged.to_bytes() == fed.to_bytes()


# ===================================================================== Reservoir: statistics


def test_reservoir_inclusion_is_uniform() -> None:
    # n=100, k=10, T=4000 seeds: each item is kept with probability k/n, expected 400 times.
    # Inclusion counts have variance T p (1-p) = 360 < the multinomial 396 that chisquare
    # assumes (sampling without replacement is negatively correlated), so the test is
    # conservative; p > 1e-3 is the fixed acceptance threshold.
    counts = np.zeros(100)
    for seed in range(4000):
        r = Reservoir(10, seed)
        r.update(list(range(100)))
        counts[r.sample] += 1
    assert counts.sum() == 40_000
    assert chisquare(counts).pvalue > P_MIN


@pytest.mark.parametrize("path", ["update", "add"])
def test_reservoir_subsets_are_uniform(path: str) -> None:
    # Uniform k-subset: all C(6, 2) = 15 pairs equally likely; 3000 seeds -> 200 each, exact
    # multinomial, so the chi-square test with 14 degrees of freedom applies.
    counts: Counter[tuple[int, ...]] = Counter()
    for seed in range(3000):
        r = Reservoir(2, seed)
        if path == "update":
            r.update(list(range(6)))
        else:
            for i in range(6):
                r.add(i)
        counts[tuple(sorted(r.sample))] += 1
    pairs = list(itertools.combinations(range(6), 2))
    assert set(counts) == set(pairs)
    assert chisquare([counts[p] for p in pairs]).pvalue > P_MIN


@pytest.mark.parametrize("salts", [(1, 2), (0, 0)])
def test_reservoir_merge_inclusion_is_uniform_over_union(salts: tuple[int, int]) -> None:
    # Streams of 60 and 40 items, k=10: each of the 100 items in the merge with prob 1/10.
    # This marginal law holds even with equal salts (only the joint law needs distinct ones).
    counts = np.zeros(100)
    for seed in range(3000):
        a, b = Reservoir(10, seed, salt=salts[0]), Reservoir(10, seed, salt=salts[1])
        a.update(list(range(60)))
        b.update(list(range(60, 100)))
        a.merge(b)
        counts[a.sample] += 1
    assert chisquare(counts).pvalue > P_MIN


def test_reservoir_merge_subsets_are_uniform() -> None:
    # n1=3 < k=4 < n1+n2=8: all C(8, 4) = 70 subsets of the union equally likely (joint
    # law, not just inclusion). 7000 seeds -> 100 per subset.
    counts: Counter[tuple[int, ...]] = Counter()
    for seed in range(7000):
        a, b = Reservoir(4, seed, salt=11), Reservoir(4, seed, salt=12)
        a.update([0, 1, 2])
        b.update([3, 4, 5, 6, 7])
        a.merge(b)
        counts[tuple(sorted(a.sample))] += 1
    subsets = list(itertools.combinations(range(8), 4))
    assert set(counts) <= set(subsets)
    assert chisquare([counts[s] for s in subsets]).pvalue > P_MIN


# ===================================================================== StratifiedReservoir


class TestStratifiedUnit:
    def test_params(self) -> None:
        with pytest.raises(ValueError, match="k_per_stratum must be a positive int"):
            StratifiedReservoir(0)
        with pytest.raises(ValueError, match=r"k_per_stratum\['a'\] must be a positive int"):
            StratifiedReservoir({"a": 0})
        with pytest.raises(ValueError, match="default_k only applies when k_per_stratum is a dict"):
            StratifiedReservoir(3, default_k=2)
        with pytest.raises(ValueError, match="default_k must be a positive int"):
            StratifiedReservoir({"a": 1}, default_k=0)
        with pytest.raises(TypeError, match="stratum must be str, bytes or int"):
            StratifiedReservoir({1.5: 1})  # type: ignore[dict-item]
        s = StratifiedReservoir({"a": 2, 3: 1}, seed=4, default_k=5, salt=6)
        assert s.k_per_stratum == {"a": 2, 3: 1}
        assert (s.default_k, s.seed, s.salt, s.strata) == (5, 4, 6, [])
        assert StratifiedReservoir.from_error(0.1, 0.05).k_per_stratum == math.ceil(
            math.log(40) / (2 * 0.1**2)
        )

    def test_unknown_stratum(self) -> None:
        s = StratifiedReservoir({"a": 2})
        with pytest.raises(ValueError, match="unknown stratum 'b'"):
            s.add(1, "b")
        with pytest.raises(ValueError, match="unknown stratum 'b'"):
            s.update([1, 2], ["a", "b"])
        assert s.n("a") == 0  # the refused batch changed nothing
        assert s.sample("zzz") == [] and s.n("zzz") == 0

    def test_sizes_per_stratum(self) -> None:
        s = StratifiedReservoir({"a": 2, "b": 4}, default_k=1)
        s.update(list(range(30)), ["a", "b", "c"] * 10)
        assert [len(s.sample(x)) for x in "abc"] == [2, 4, 1]
        assert s.strata == ["a", "b", "c"] and s.n("c") == 10
        assert set(s.sample("a")) <= set(range(0, 30, 3))

    def test_strata_types(self) -> None:
        s = StratifiedReservoir(3)
        s.update([1, 2, 3, 4, 5], ["a", b"a", 1, np.int64(1), True])
        assert s.strata == ["a", b"a", 1]
        assert s.sample(1) == [3, 4, 5]
        t = StratifiedReservoir(3)
        t.update([1, 2, 3, 4, 5], np.array(["a", b"a", 1, np.int64(1), True], dtype=object))
        assert t == s
        with pytest.raises(TypeError, match="stratum must be str, bytes or int"):
            s.add(1, 2.5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="stratum must be str, bytes or int"):
            s.update([1], [[1]])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="one entry per item"):
            s.update([1, 2], ["a"])
        with pytest.raises(TypeError, match="strata array must hold"):
            s.update([1], np.array([1.5]))

    @pytest.mark.parametrize("dtype", [np.int8, np.uint32, np.int64])
    def test_numpy_strata_and_items(self, dtype: Any) -> None:
        items = np.arange(300, dtype=dtype) % 120
        strata = (np.arange(300) * 7 % 5).astype(dtype)
        a, b = StratifiedReservoir(4, seed=2), StratifiedReservoir(4, seed=2)
        a.update(items, strata)
        for x, s in zip(items, strata, strict=True):
            b.add(x, s)
        assert a.to_bytes() == b.to_bytes()
        c = StratifiedReservoir(4, seed=2)
        c.update(items.tolist(), strata.tolist())
        assert c.to_bytes() == a.to_bytes()

    def test_rare_stratum_survives(self) -> None:
        s = StratifiedReservoir(10, seed=1)
        strata = np.zeros(100_000, dtype=np.int64)
        strata[54_321] = 7
        s.update(np.arange(100_000), strata)
        assert s.sample(7) == [54_321] and s.n(7) == 1 and s.n(0) == 99_999

    def test_merge(self) -> None:
        a = StratifiedReservoir({"x": 2}, default_k=3, seed=1, salt=1)
        with pytest.raises(ValueError, match="k_per_stratum differs"):
            a.merge(StratifiedReservoir({"x": 3}, default_k=3, seed=1))
        with pytest.raises(ValueError, match="default_k differs"):
            a.merge(StratifiedReservoir({"x": 2}, seed=1))
        with pytest.raises(ValueError, match="seed differs"):
            a.merge(StratifiedReservoir({"x": 2}, default_k=3, seed=2))
        b = StratifiedReservoir({"x": 2}, default_k=3, seed=1, salt=2)
        a.update(list(range(20)), ["x", "y"] * 10)
        b.update(list(range(20, 40)), ["x", "z"] * 10)
        a.merge(b)
        assert a.strata == ["x", "y", "z"]
        assert [a.n(s) for s in "xyz"] == [20, 10, 10]
        assert a.samples()["z"] == b.sample("z")
        assert StratifiedReservoir.from_bytes(a.to_bytes()) == a
        a.update(list(range(5)), ["z"] * 5)  # an adopted stratum keeps working after a round trip
        back = StratifiedReservoir.from_bytes(a.to_bytes())
        a.add(99, "z")
        back.add(99, "z")
        assert back == a


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(scalar_items, strata_values), max_size=60), small_k, seeds, salts)
def test_stratified_update_equals_add_and_round_trip(pairs: list[Any], k: int, seed: int, salt: int) -> None:
    items = [p[0] for p in pairs]
    strata = [p[1] for p in pairs]
    seq = StratifiedReservoir(k, seed, salt=salt)
    for x, s in pairs:
        seq.add(x, s)
    batch = StratifiedReservoir(k, seed, salt=salt)
    batch.update(items, strata)
    assert batch.to_bytes() == seq.to_bytes()
    back = StratifiedReservoir.from_bytes(batch.to_bytes())
    assert back == batch and back.samples() == batch.samples()
    for s in set(strata):
        assert len(batch.sample(s)) == min(k, batch.n(s))


@settings(max_examples=40, deadline=None)
@given(item_lists, item_lists, small_k, seeds)
def test_stratified_disjoint_merge_equals_feeding_both(
    xs: list[Any], ys: list[Any], k: int, seed: int
) -> None:
    a, b = StratifiedReservoir(k, seed), StratifiedReservoir(k, seed)
    a.update(xs, [i % 3 for i in range(len(xs))])
    b.update(ys, ["b" + str(i % 2) for i in range(len(ys))])
    fed = a.copy()
    fed.update(ys, ["b" + str(i % 2) for i in range(len(ys))])
    a.merge(b)
    assert a.to_bytes() == fed.to_bytes()


def test_stratified_strata_are_uniform_and_independent() -> None:
    # Two strata fed the same stream (interleaved): each stratum's pair is uniform over the
    # 15 pairs, and the two pairs coincide with probability 1/15 if independent. Over 3000
    # seeds: expected 200 coincidences, sd sqrt(3000 * (1/15) * (14/15)) = 13.7; 5 sd bound.
    counts: Counter[tuple[int, ...]] = Counter()
    same = 0
    for seed in range(3000):
        s = StratifiedReservoir(2, seed)
        s.update([i // 2 for i in range(12)], ["p", "q"] * 6)
        p, q = tuple(sorted(s.sample("p"))), tuple(sorted(s.sample("q")))
        counts[p] += 1
        same += p == q
    pairs = list(itertools.combinations(range(6), 2))
    assert chisquare([counts[p] for p in pairs]).pvalue > P_MIN
    assert abs(same - 200) < 5 * 13.7


# ===================================================================== WeightedReservoir


class TestWeightedUnit:
    def test_params(self) -> None:
        with pytest.raises(ValueError, match="k must be a positive int"):
            WeightedReservoir(0)
        with pytest.raises(ValueError, match="seed must be"):
            WeightedReservoir(2, seed=2**32)
        r = WeightedReservoir(3, seed=1, salt=2)
        assert (r.k, r.seed, r.salt, r.n, r.total_weight, r.sample, r.keys, len(r)) == (
            3,
            1,
            2,
            0,
            0.0,
            [],
            [],
            0,
        )

    @pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, -math.inf])
    def test_bad_weights(self, bad: float) -> None:
        r = WeightedReservoir(3)
        with pytest.raises(ValueError, match="weights must be finite and > 0"):
            r.add("x", bad)
        with pytest.raises(ValueError, match="weights must be finite and > 0"):
            r.update(["x", "y"], [1.0, bad])
        assert r.n == 0 and r.total_weight == 0.0

    def test_bad_weight_shapes(self) -> None:
        r = WeightedReservoir(3)
        with pytest.raises(ValueError, match="one entry per item"):
            r.update([1, 2], [1.0])
        with pytest.raises(ValueError, match="weights must be finite numbers"):
            r.update([1], ["heavy"])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="weights must be finite numbers"):
            r.add(1, "heavy")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="weights must be numbers"):
            r.update([1], "1")  # type: ignore[arg-type]

    def test_empty_batch_and_order(self) -> None:
        r = WeightedReservoir(4, seed=3)
        r.update([], [])
        assert r.n == 0
        r.update(["a", b"b", 3, ("t", 1), {"d": 1}], np.array([1, 2, 3, 4, 5], dtype=np.int32))
        assert len(r) == 4 and r.n == 5 and r.total_weight == 15.0
        assert r.keys == sorted(r.keys, reverse=True) and all(key < 0 for key in r.keys)
        assert WeightedReservoir.from_bytes(r.to_bytes()) == r

    def test_merge(self) -> None:
        a = WeightedReservoir(3, seed=1, salt=1)
        with pytest.raises(ValueError, match="k differs"):
            a.merge(WeightedReservoir(4, seed=1))
        with pytest.raises(ValueError, match="seed differs"):
            a.merge(WeightedReservoir(3, seed=2))
        a.update(list(range(10)), [1.0] * 10)
        before = a.to_bytes()
        a.merge(WeightedReservoir(3, seed=1, salt=2))
        assert a.to_bytes() == before

    def test_heavy_item_dominates(self) -> None:
        r = WeightedReservoir(1, seed=0)
        r.update(list(range(1000)), [1e-3] * 1000)
        r.add("heavy", 1e9)
        assert r.sample == ["heavy"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(scalar_items, st.floats(1e-6, 1e6)), max_size=60),
    small_k,
    seeds,
    st.lists(st.integers(0, 60), max_size=4),
)
def test_weighted_update_equals_sequential_add(pairs: list[Any], k: int, seed: int, cuts: list[int]) -> None:
    seq = WeightedReservoir(k, seed)
    for x, w in pairs:
        seq.add(x, w)
    batch = WeightedReservoir(k, seed)
    for part in chunked(pairs, cuts):
        batch.update([p[0] for p in part], [p[1] for p in part])
    assert batch.to_bytes() == seq.to_bytes()
    assert len(batch) == min(k, len(pairs))
    back = WeightedReservoir.from_bytes(batch.to_bytes())
    assert back == batch and back.keys == batch.keys


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 3000), small_k, seeds)
def test_weighted_numpy_batch_equals_add(m: int, k: int, seed: int) -> None:
    items = np.arange(m, dtype=np.int64)
    weights = 1.0 + (items % 7) * 0.5
    a, b = WeightedReservoir(k, seed), WeightedReservoir(k, seed)
    a.update(items, weights)
    for x, w in zip(items.tolist(), weights.tolist(), strict=True):
        b.add(x, w)
    assert a.to_bytes() == b.to_bytes()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 30), st.integers(0, 30), small_k, seeds, salts, salts)
def test_weighted_merge_is_top_k_of_union(n1: int, n2: int, k: int, seed: int, s1: int, s2: int) -> None:
    a, b = WeightedReservoir(k, seed, salt=s1), WeightedReservoir(k, seed, salt=s2)
    a.update([("a", i) for i in range(n1)], [1.0 + i for i in range(n1)])
    b.update([("b", i) for i in range(n2)], [2.0 + i for i in range(n2)])
    # Full A-Res keys of every item, from reservoirs large enough to keep everything.
    big_a, big_b = WeightedReservoir(64, seed, salt=s1), WeightedReservoir(64, seed, salt=s2)
    big_a.update([("a", i) for i in range(n1)], [1.0 + i for i in range(n1)])
    big_b.update([("b", i) for i in range(n2)], [2.0 + i for i in range(n2)])
    union = sorted(zip(big_a.keys + big_b.keys, big_a.sample + big_b.sample, strict=True), reverse=True)
    merged = a.copy()
    merged.merge(b)
    assert merged.keys == [key for key, _ in union[:k]]
    assert set(merged.sample) == {item for _, item in union[:k]}
    assert merged.n == n1 + n2 and merged.total_weight == a.total_weight + b.total_weight


def successive_sampling_pairs(weights: list[float]) -> dict[tuple[int, int], float]:
    """Exact law of the unordered pair drawn by weighted sampling without replacement."""
    total = sum(weights)
    out: dict[tuple[int, int], float] = {}
    for i, j in itertools.combinations(range(len(weights)), 2):
        wi, wj = weights[i], weights[j]
        out[(i, j)] = wi / total * wj / (total - wi) + wj / total * wi / (total - wj)
    return out


def test_weighted_first_pick_matches_weights() -> None:
    # k=1: item i is the sample with probability w_i / W. 4000 seeds, smallest expected
    # count 4000 * 1/55 = 73 (> 5, so the chi-square approximation holds).
    weights = [float(w) for w in range(1, 11)]
    counts: Counter[int] = Counter()
    for seed in range(4000):
        r = WeightedReservoir(1, seed)
        r.update(list(range(10)), weights)
        counts[r.sample[0]] += 1
    expected = [4000 * w / sum(weights) for w in weights]
    assert chisquare([counts[i] for i in range(10)], expected).pvalue > P_MIN


def test_weighted_sample_order_first_is_a_weighted_draw() -> None:
    # The highest key of a k=3 sample is a w_i / W draw (successive sampling), via add().
    weights = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    counts: Counter[int] = Counter()
    for seed in range(3000):
        r = WeightedReservoir(3, seed, salt=5)
        for i, w in enumerate(weights):
            r.add(i, w)
        counts[r.sample[0]] += 1
    expected = [3000 * w / sum(weights) for w in weights]
    assert chisquare([counts[i] for i in range(6)], expected).pvalue > P_MIN


def test_weighted_pairs_follow_successive_sampling() -> None:
    # k=2 of 5: the pair frequencies match the exact successive-sampling law (10 cells).
    weights = [1.0, 2.0, 3.0, 5.0, 8.0]
    law = successive_sampling_pairs(weights)
    counts: Counter[tuple[int, ...]] = Counter()
    for seed in range(4000):
        r = WeightedReservoir(2, seed)
        r.update(list(range(5)), weights)
        counts[tuple(sorted(r.sample))] += 1
    assert chisquare([counts[p] for p in law], [4000 * q for q in law.values()]).pvalue > P_MIN


def test_weighted_merge_pairs_follow_successive_sampling() -> None:
    # Items 0..2 in one reservoir, 3..4 in another (distinct salts): the merge is a correct
    # weighted sample of the union, with the same exact pair law.
    weights = [1.0, 2.0, 3.0, 5.0, 8.0]
    law = successive_sampling_pairs(weights)
    counts: Counter[tuple[int, ...]] = Counter()
    for seed in range(4000):
        a, b = WeightedReservoir(2, seed, salt=1), WeightedReservoir(2, seed, salt=2)
        a.update([0, 1, 2], weights[:3])
        b.update([3, 4], weights[3:])
        a.merge(b)
        counts[tuple(sorted(a.sample))] += 1
    assert chisquare([counts[p] for p in law], [4000 * q for q in law.values()]).pvalue > P_MIN


def test_weighted_inclusion_increases_with_weight() -> None:
    # k=3 of 8 with weights 1..8: inclusion probabilities differ by >= ~0.05 between
    # neighbours (>= 100 counts over 2000 seeds) while each count's sd is <= sqrt(2000/4) = 22.
    counts = np.zeros(8)
    for seed in range(2000):
        r = WeightedReservoir(3, seed)
        r.update(list(range(8)), [float(w) for w in range(1, 9)])
        counts[r.sample] += 1
    assert (np.diff(counts) > 0).all()


# ===================================================================== corruption


def _all_sketches() -> list[Any]:
    r = Reservoir(3, seed=1, salt=2)
    r.update(["a", b"b", 3, ("t", 1), 5])
    s = StratifiedReservoir({"x": 2}, default_k=1, seed=3)
    s.update([1, 2, 3], ["x", "y", "x"])
    w = WeightedReservoir(2, seed=4)
    w.update(["a", "b", "c"], [1.0, 2.0, 3.0])
    return [r, s, w]


@pytest.mark.parametrize("sketch", _all_sketches(), ids=lambda x: type(x).__name__)
def test_truncations_and_bit_flips(sketch: Any) -> None:
    cls = type(sketch)
    data = sketch.to_bytes()
    assert cls.from_bytes(data) == sketch
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            cls.from_bytes(data[:cut])
    with pytest.raises(ValueError):
        cls.from_bytes(data + b"\x00")
    for i in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            with pytest.raises(ValueError):
                cls.from_bytes(bytes(flipped))


def test_foreign_family_is_refused() -> None:
    r, s, w = _all_sketches()
    with pytest.raises(ValueError, match="bytes hold a Reservoir, not a WeightedReservoir"):
        WeightedReservoir.from_bytes(r.to_bytes())
    with pytest.raises(ValueError, match="not a Reservoir"):
        Reservoir.from_bytes(s.to_bytes())
    with pytest.raises(ValueError, match="not a StratifiedReservoir"):
        StratifiedReservoir.from_bytes(w.to_bytes())
    with pytest.raises(ValueError, match="not a sketchwatch sketch"):
        Reservoir.from_bytes(b"garbage garbage")


R_CODEC = Codec("Reservoir", 1, "<IIQQ")
S_CODEC = Codec("StratifiedReservoir", 1, "<IQII")
W_CODEC = Codec("WeightedReservoir", 1, "<IIQQd")


@pytest.mark.parametrize(
    ("params", "payload"),
    [
        ((0, 0, 0, 0), encode_items([])),  # k = 0
        ((3, 0, 0, 5), encode_items([1, 2])),  # too few items
        ((3, 0, 0, 1), encode_items([1, 2])),  # more items than n
        ((3, 0, 0, 1), b'[{"x":1}]'),  # malformed tag
        ((3, 0, 0, 1), b"{}"),  # not a list
        ((3, 0, 0, 1), b"\xff\xfe"),  # not UTF-8
    ],
)
def test_forged_reservoir_records(params: tuple[int, ...], payload: bytes) -> None:
    with pytest.raises(ValueError, match="corrupt Reservoir bytes"):
        Reservoir.from_bytes(R_CODEC.dump(params, payload))


@pytest.mark.parametrize(
    ("params", "block"),
    [
        ((0, 0, 2, 0), [[], [["a", 3, [1]]]]),  # wrong item count
        ((0, 0, 2, 0), [[], [["a", 0, []]]]),  # empty stratum stored
        ((0, 0, 2, 0), [[], [["a", 1, [1]], ["a", 1, [2]]]]),  # duplicate stratum
        ((0, 0, 2, 0), [[], [[1.5, 1, [1]]]]),  # bad stratum type
        ((0, 0, 2, 0), [[], [[True, 1, [1]]]]),  # bool stratum
        ((0, 0, 2, 0), [[["a", 1]], []]),  # sizes with a common k
        ((0, 0, 0, 0), [[["a", 0]], []]),  # k = 0 in the dict
        ((0, 0, 0, 0), [[["a", 1]], [["b", 1, [1]]]]),  # stratum without a size
        ((0, 0, 0, 0), [[["a", 1], ["a", 2]], []]),  # duplicate size
        ((0, 0, 2, 0), [[]]),  # wrong shape
        ((0, 0, 2, 0), [[], [["a", -1, []]]]),  # negative n
        ((0, 0, 2, 0), [[], [["a", 1, "x"]]]),  # items not a list
        ((0, 0, 2, 0), [[], ["a"]]),  # row not a list
    ],
)
def test_forged_stratified_records(params: tuple[int, ...], block: list[Any]) -> None:
    with pytest.raises(ValueError, match="corrupt StratifiedReservoir bytes"):
        StratifiedReservoir.from_bytes(S_CODEC.dump(params, encode_items(block)))


def _keys(*values: float) -> bytes:
    return np.array(values, dtype="<f8").tobytes()


@pytest.mark.parametrize(
    ("params", "payload"),
    [
        ((2, 0, 0, 2, 3.0), _keys(-1.0, -2.0)[:12]),  # keys truncated
        ((2, 0, 0, 2, 3.0), _keys(-1.0, -2.0) + encode_items(["a"])),  # one item missing
        ((2, 0, 0, 2, 3.0), _keys(-2.0, -1.0) + encode_items(["a", "b"])),  # not descending
        ((2, 0, 0, 2, 3.0), _keys(1.0, -1.0) + encode_items(["a", "b"])),  # positive key
        ((2, 0, 0, 2, 3.0), _keys(math.nan, -1.0) + encode_items(["a", "b"])),  # NaN key
        ((2, 0, 0, 2, math.nan), _keys(-1.0, -2.0) + encode_items(["a", "b"])),  # NaN total
        ((2, 0, 0, 0, 1.0), encode_items([])),  # weight without items
        ((0, 0, 0, 0, 0.0), encode_items([])),  # k = 0
    ],
)
def test_forged_weighted_records(params: tuple[Any, ...], payload: bytes) -> None:
    with pytest.raises(ValueError, match="corrupt WeightedReservoir bytes"):
        WeightedReservoir.from_bytes(W_CODEC.dump(params, payload))


# -- grouping strata of an object array by hash ------------------------------------------------

STRATA = st.lists(
    st.one_of(st.sampled_from(["a", "b", "", "é"]), st.integers(-3, 3), st.booleans(), st.binary(max_size=2)),
    max_size=40,
)


@given(STRATA)
def test_object_array_strata_group_like_a_list(strata: list[object]) -> None:
    arr = np.empty(len(strata), dtype=object)
    arr[:] = strata
    want_reps, want_pos = reservoir._group(list(strata), len(strata))
    got_reps, got_pos = reservoir._group(arr, len(strata))
    assert got_reps == want_reps
    assert [p.tolist() for p in got_pos] == [p.tolist() for p in want_pos]


def test_strata_hash_collisions_fall_back_to_equality() -> None:
    arr = np.array(["x", "y", "x"], dtype=object)
    with mock.patch.object(hashing, "hash64_many", lambda items, seed: np.zeros(len(items), np.uint64)):
        reps, pos = reservoir._group(arr, 3)
    assert reps == ["x", "y"]
    assert [p.tolist() for p in pos] == [[0, 2], [1]]
