from __future__ import annotations

import math
import pickle
from collections import Counter
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sketches import countmin
from sketches._format import Codec
from sketches.countmin import CountMinSketch
from sketches.hashing import hash64_many, probe_indices

ITEM = st.one_of(st.integers(-50, 50), st.text(max_size=3), st.binary(max_size=3))
STREAM = st.lists(ITEM, max_size=60)
SMALL = dict(width=7, depth=3)  # tiny, so that collisions happen


def exact(stream: list[object]) -> Counter[object]:
    # "a" and b"a" hash alike, so count them under one key
    return Counter(x.encode() if isinstance(x, str) else x for x in stream)


# ---------------------------------------------------------------- parameters


def test_from_error_formulas() -> None:
    s = CountMinSketch.from_error(0.001, 0.01, seed=5, conservative=True)
    assert (s.width, s.depth, s.seed, s.conservative) == (math.ceil(math.e / 0.001), 5, 5, True)
    assert s.epsilon == pytest.approx(math.e / s.width)
    assert s.delta == pytest.approx(math.exp(-5))
    assert CountMinSketch.from_error(0.5, 0.9).depth == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(width=0, depth=1), "width must be a positive int.*got 0"),
        (dict(width=2.5, depth=1), "width must be a positive int.*got 2.5"),
        (dict(width=True, depth=1), "width must be a positive int.*got True"),
        (dict(width=2**32, depth=1), "width must be"),
        (dict(width=4, depth=0), "depth must be a positive int.*got 0"),
        (dict(width=4, depth=256), "depth must be a positive int.*got 256"),
        (dict(width=4, depth=2, seed=-1), "seed must be an integer in"),
        (dict(width=4, depth=2, seed=2**32), "seed must be"),
        (dict(width=4, depth=2, conservative=1), "conservative must be a bool, got 1"),
    ],
)
def test_bad_parameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CountMinSketch(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("epsilon", "delta", "match"),
    [
        (0, 0.1, "epsilon must be a float in \\(0, 1\\), got 0"),
        (0.1, 1.0, "delta must be.*got 1.0"),
        (0.1, "x", "delta"),
    ],
)
def test_from_error_rejects(epsilon: object, delta: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CountMinSketch.from_error(epsilon, delta)  # type: ignore[arg-type]


def test_properties_are_read_only() -> None:
    s = CountMinSketch(8, 2)
    for name in ("width", "depth", "seed", "conservative", "total", "delta", "epsilon"):
        with pytest.raises(AttributeError):
            setattr(s, name, 1)


def test_repr() -> None:
    assert repr(CountMinSketch(8, 2, seed=1, conservative=True)) == (
        "CountMinSketch(width=8, depth=2, seed=1, conservative=True, total=0)"
    )


# ---------------------------------------------------------------- edge cases


def test_empty_sketch() -> None:
    s = CountMinSketch(16, 3)
    assert s.total == 0 and s.estimate("x") == 0 and s.error_bound() == 0
    assert s.estimate_many([]).dtype == np.int64 and len(s.estimate_many([])) == 0
    assert CountMinSketch.from_bytes(s.to_bytes()) == s


@pytest.mark.parametrize("conservative", [False, True])
def test_empty_batch_changes_nothing(conservative: bool) -> None:
    s = CountMinSketch(16, 3, conservative=conservative)
    s.add("a")
    before = s.to_bytes()
    s.update([])
    s.update(np.array([], dtype=np.int64))
    s.update([], counts=[])
    s.update(np.array([], dtype=np.uint8), counts=np.array([], dtype=np.int64))
    assert s.to_bytes() == before


def test_rows_come_from_probe_indices() -> None:
    s = CountMinSketch(97, 4, seed=9)
    items = ["a", b"b", 3, -7, 2**64 - 1]
    expected = probe_indices(hash64_many(items, 9), 4, 97).astype(np.intp) + np.arange(4) * 97
    assert np.array_equal(s._rows(hash64_many(items, 9)), expected)
    assert [s._cells(x) for x in items] == expected.tolist()


def test_mixed_items_and_str_bytes_alias() -> None:
    s = CountMinSketch(1000, 4)
    s.update(["abc", b"abc", 7, np.int64(7), bytearray(b"q")])
    assert s.estimate("abc") == 2 and s.estimate(b"abc") == 2 and s.estimate(7) == 2
    assert s.estimate(b"q") == 1 and s.total == 5


@pytest.mark.parametrize(
    "dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
)
def test_numpy_int_dtypes_match_python_ints(dtype: type[np.integer]) -> None:
    values = [0, 1, 5, 5, 100, 127]
    a, b = CountMinSketch(64, 3), CountMinSketch(64, 3)
    a.update(np.array(values, dtype=dtype))
    b.update(values)
    assert a == b
    assert np.array_equal(a.estimate_many(np.array(values, dtype=dtype)), b.estimate_many(values))


def test_unhashable_items() -> None:
    s = CountMinSketch(8, 2)
    with pytest.raises(TypeError):
        s.add(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        s.update([1.5])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        s.update(np.array([1.5]))
    assert s.total == 0


def test_small_and_large_batches_agree_with_add() -> None:
    # the small-batch (np.add.at) and large-batch (bincount) paths must both be exact
    items = list(range(40)) * 3
    for width in (4, 1000):
        a, b = CountMinSketch(width, 2), CountMinSketch(width, 2)
        a.update(items, counts=list(range(120)))
        for x, c in zip(items, range(120), strict=True):
            b.add(x, c)
        assert a == b


def test_estimate_many_matches_estimate() -> None:
    s = CountMinSketch(50, 4, seed=2)
    s.update([f"k{i % 37}" for i in range(500)])
    keys = [f"k{i}" for i in range(60)]
    assert s.estimate_many(keys).tolist() == [s.estimate(k) for k in keys]


def test_conservative_add_is_classic() -> None:
    s = CountMinSketch(4, 2, conservative=True)
    # x and y share their row-0 cell but not their row-1 cell
    x, y = next(
        (x, y)
        for x in range(50)
        for y in range(50)
        if (a := s._cells(x))[0] == (b := s._cells(y))[0] and a[1] != b[1]
    )
    s.add(x, 5)
    s.add(y, 1)  # y's estimate was min(5, 0) = 0, so its cells rise to at most 1: row 0 stays 5
    cx, cy = s._cells(x), s._cells(y)
    cells = s._counters.reshape(-1)
    assert (cells[cx[0]], cells[cx[1]], cells[cy[1]]) == (5, 5, 1)
    assert s.estimate(x) == 5 and s.estimate(y) == 1 and s.total == 6


# ---------------------------------------------------------------- counts


def test_weighted_update_equals_weighted_adds() -> None:
    a, b = CountMinSketch(32, 3), CountMinSketch(32, 3)
    items, counts = ["a", "b", "a", 4], [3, 0, 2, 10]
    a.update(items, counts=np.array(counts, dtype=np.uint16))
    for x, c in zip(items, counts, strict=True):
        b.add(x, c)
    assert a == b and a.total == 15 and a.estimate("a") >= 5


@pytest.mark.parametrize(
    ("counts", "error", "match"),
    [
        ([1, -1], ValueError, "counts must be non-negative, got -1"),
        ([1], ValueError, "counts must have the same length as items \\(2\\), got 1"),
        ([], ValueError, "same length"),
        ([1.0, 2.0], TypeError, "counts must be ints, got dtype float64"),
        ([True, False], TypeError, "counts must be ints, got dtype bool"),
        ([[1, 2]], TypeError, "1-d"),
        ([2**64 - 1, 1], ValueError, "int64"),
        ([2**70, 1], ValueError, "int64"),
    ],
)
def test_bad_counts(counts: list[object], error: type[Exception], match: str) -> None:
    s = CountMinSketch(8, 2)
    with pytest.raises(error, match=match):
        s.update(["a", "b"], counts=counts)
    assert s.total == 0 and s.estimate("a") == 0


def test_bad_single_count() -> None:
    s = CountMinSketch(8, 2)
    with pytest.raises(ValueError, match="count must be a non-negative int64, got -2"):
        s.add("a", -2)
    with pytest.raises(TypeError, match="count must be an int, got float"):
        s.add("a", 1.0)  # type: ignore[arg-type]
    assert s.total == 0


def test_overflow_is_refused_and_state_kept() -> None:
    s = CountMinSketch(8, 2)
    s.add("a", 2**63 - 2)
    before = s.to_bytes()
    with pytest.raises(OverflowError, match="exceed 2\\*\\*63 - 1"):
        s.update(["a", "b"])
    with pytest.raises(OverflowError):
        s.add("b", 2)
    s.add("b", 1)  # exactly at the limit is fine
    assert s.total == 2**63 - 1
    t = CountMinSketch(8, 2)
    with pytest.raises(OverflowError):  # sum of int64 counts that would itself wrap
        t.update(["a", "b", "c"], counts=[2**62, 2**62, 2**62])
    assert t.total == 0 and before != s.to_bytes()
    u = CountMinSketch(8, 2)
    u.add("z", 2**62 + 1)
    with pytest.raises(OverflowError):
        u.merge(CountMinSketch.from_bytes(u.to_bytes()))


def test_huge_weights_are_exact() -> None:
    # above 2**53 the float bincount path would round: the add.at path must be used
    s = CountMinSketch(2000, 3)
    s.update(["big", "small"] * 10, counts=[2**58 + 1, 1] * 10)
    assert s.estimate("big") == 10 * (2**58 + 1) and s.estimate("small") >= 10
    assert CountMinSketch.from_bytes(s.to_bytes()) == s


# ---------------------------------------------------------------- merge


def test_merge_refusals() -> None:
    s = CountMinSketch(8, 2, seed=1)
    with pytest.raises(ValueError, match="width differs \\(8 != 9\\)"):
        s.merge(CountMinSketch(9, 2, seed=1))
    with pytest.raises(ValueError, match="seed differs"):
        s.merge(CountMinSketch(8, 2, seed=2))
    with pytest.raises(ValueError, match="conservative differs"):
        s.merge(CountMinSketch(8, 2, seed=1, conservative=True))
    with pytest.raises(ValueError, match="with itself"):
        s.merge(s)
    with pytest.raises(ValueError, match="cannot merge int into CountMinSketch"):
        s.merge(3)  # type: ignore[arg-type]


# ---------------------------------------------------------------- hypothesis


@settings(max_examples=60, deadline=None)
@given(STREAM, st.booleans(), st.integers(0, 2**32 - 1))
def test_update_equals_sequential_add(stream: list[object], weighted: bool, seed: int) -> None:
    a, b = CountMinSketch(seed=seed, **SMALL), CountMinSketch(seed=seed, **SMALL)
    counts = [len(str(x)) for x in stream] if weighted else None
    a.update(stream, counts=counts)  # type: ignore[arg-type]
    for i, x in enumerate(stream):
        b.add(x, 1 if counts is None else counts[i])  # type: ignore[arg-type]
    assert a.to_bytes() == b.to_bytes()


@settings(max_examples=60, deadline=None)
@given(STREAM, STREAM, STREAM)
def test_merge_equals_feeding_both(x: list[object], y: list[object], z: list[object]) -> None:
    a, b, c, both = (CountMinSketch(seed=3, **SMALL) for _ in range(4))
    a.update(x)  # type: ignore[arg-type]
    b.update(y)  # type: ignore[arg-type]
    c.update(z)  # type: ignore[arg-type]
    both.update(x + y + z)  # type: ignore[arg-type]
    ab = a.copy()
    ab.merge(b)
    ab.merge(c)
    bc = b.copy()
    bc.merge(c)
    bc.merge(a)  # commutative and associative
    assert ab.to_bytes() == both.to_bytes() == bc.to_bytes()


@settings(max_examples=60, deadline=None)
@given(st.lists(STREAM, max_size=5), st.lists(st.tuples(ITEM, st.integers(0, 5)), max_size=10))
def test_conservative_between_truth_and_plain(
    batches: list[list[object]], singles: list[tuple[object, int]]
) -> None:
    cons = CountMinSketch(conservative=True, **SMALL)
    plain = CountMinSketch(**SMALL)
    stream: list[object] = []
    for batch in batches:
        cons.update(batch)  # type: ignore[arg-type]
        plain.update(batch)  # type: ignore[arg-type]
        stream += batch
    for item, c in singles:
        cons.add(item, c)  # type: ignore[arg-type]
        plain.add(item, c)  # type: ignore[arg-type]
        stream += [item] * c
    truth = exact(stream)
    assert cons.total == plain.total == sum(truth.values())
    assert (cons._counters <= plain._counters).all()
    for key, n in truth.items():
        assert n <= cons.estimate(key) <= plain.estimate(key)  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(STREAM, st.randoms(use_true_random=False))
def test_conservative_batch_is_order_independent(stream: list[object], rnd: object) -> None:
    a, b = CountMinSketch(conservative=True, **SMALL), CountMinSketch(conservative=True, **SMALL)
    shuffled = list(stream)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a.update(stream)  # type: ignore[arg-type]
    b.update(shuffled)  # type: ignore[arg-type]
    assert a.to_bytes() == b.to_bytes()


@settings(max_examples=40, deadline=None)
@given(STREAM, STREAM)
def test_conservative_merge_is_valid_upper_bound(x: list[object], y: list[object]) -> None:
    a, b = CountMinSketch(conservative=True, **SMALL), CountMinSketch(conservative=True, **SMALL)
    a.update(x)  # type: ignore[arg-type]
    b.update(y)  # type: ignore[arg-type]
    a.merge(b)
    plain = CountMinSketch(**SMALL)
    plain.update(x + y)  # type: ignore[arg-type]
    for key, n in exact(x + y).items():
        assert n <= a.estimate(key) <= plain.estimate(key)  # type: ignore[arg-type]
    assert CountMinSketch.from_bytes(a.to_bytes()) == a


@settings(max_examples=60, deadline=None)
@given(STREAM, st.booleans(), st.integers(1, 300), st.integers(1, 6))
def test_bytes_round_trip(stream: list[object], conservative: bool, width: int, depth: int) -> None:
    s = CountMinSketch(width, depth, seed=11, conservative=conservative)
    s.update(stream)  # type: ignore[arg-type]
    blob = s.to_bytes()
    t = CountMinSketch.from_bytes(blob)
    assert t == s and t.to_bytes() == blob and t.total == s.total
    assert pickle.loads(pickle.dumps(s)) == s
    u = s.copy()
    u.add("new")
    assert u != s


def test_counter_width_is_minimal() -> None:
    s = CountMinSketch(100, 2)
    s.add("a", 255)
    small = len(s.to_bytes())
    s.add("a", 1)
    assert len(s.to_bytes()) - small == 200  # 1 -> 2 bytes per counter
    s.add("a", 2**40)
    assert CountMinSketch.from_bytes(s.to_bytes()).estimate("a") == 256 + 2**40


# ---------------------------------------------------------------- corruption


def _sample() -> CountMinSketch:
    s = CountMinSketch(5, 2, seed=4)
    s.update(["a", "b", "a", 3], counts=[1, 300, 2, 7])
    return s


def test_truncations_and_bit_flips_raise_value_error() -> None:
    blob = _sample().to_bytes()
    for cut in range(len(blob)):
        with pytest.raises(ValueError):
            CountMinSketch.from_bytes(blob[:cut])
    for pos in range(len(blob)):
        for bit in range(8):
            bad = bytearray(blob)
            bad[pos] ^= 1 << bit
            with pytest.raises(ValueError):
                CountMinSketch.from_bytes(bytes(bad))
    with pytest.raises(ValueError):
        CountMinSketch.from_bytes(blob + b"\0")
    with pytest.raises(ValueError, match="bad magic"):
        CountMinSketch.from_bytes(bytes(range(40)))
    with pytest.raises(TypeError):
        CountMinSketch.from_bytes("text")  # type: ignore[arg-type]


def test_foreign_family_raises() -> None:
    from sketches.spacesaving import SpaceSaving

    with pytest.raises(ValueError, match="bytes hold a SpaceSaving, not a CountMinSketch"):
        CountMinSketch.from_bytes(SpaceSaving(3).to_bytes())


CODEC = Codec("CountMinSketch", 1, "<IBIB")


@pytest.mark.parametrize(
    ("params", "payload", "match"),
    [
        ((4, 1, 0, 2), b"", "conservative flag 2"),
        ((2**32 - 1, 255, 0, 0), (0).to_bytes(8, "little") + b"\1", "payload of 9 bytes"),  # no 1 TB alloc
        ((0, 1, 0, 0), b"", "width must be"),
        ((4, 0, 0, 0), b"", "depth must be"),
        ((4, 1, 0, 0), b"\0" * 5, "payload too short"),
        ((4, 1, 0, 0), (0).to_bytes(8, "little") + b"\3" + b"\0" * 12, "counter size 3"),
        ((4, 1, 0, 0), (0).to_bytes(8, "little") + b"\1" + b"\0" * 3, "payload of"),
        ((2, 1, 0, 0), (5).to_bytes(8, "little") + b"\1" + b"\2\2", "row sums"),
        ((2, 1, 0, 1), (3).to_bytes(8, "little") + b"\1" + b"\2\2", "row sums"),
        ((1, 1, 0, 0), (2**64 - 1).to_bytes(8, "little") + b"\x08" + b"\xff" * 8, "negative"),
    ],
)
def test_inconsistent_payloads_with_valid_checksum(
    params: tuple[int, ...], payload: bytes, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        CountMinSketch.from_bytes(CODEC.dump(params, payload))


def test_valid_handmade_record_loads() -> None:
    s = CountMinSketch.from_bytes(CODEC.dump((2, 1, 0, 1), (4).to_bytes(8, "little") + b"\1" + b"\2\2"))
    assert s.conservative and s.estimate("x") == 2


# ---------------------------------------------------------------- accuracy


def zipf_stream(
    seed: int, distinct: int = 10_000, n: int = 200_000, s: float = 1.1
) -> tuple[np.ndarray, np.ndarray]:
    """Return (keys, true counts): a seeded Zipf(s) stream over ``distinct`` random int64 keys."""
    rng = np.random.default_rng(seed)
    keys = np.unique(rng.integers(0, 2**62, size=distinct))
    p = 1.0 / np.arange(1, len(keys) + 1) ** s
    idx = rng.choice(len(keys), size=n, p=p / p.sum())
    return keys[idx], keys


@pytest.mark.slow
@pytest.mark.parametrize("depth", [1, 5])
def test_overestimate_beyond_epsilon_n_has_probability_at_most_delta(depth: int) -> None:
    # epsilon = 0.001 -> width = ceil(e / 0.001) = 2719; depth 5 is from_error(delta=0.01) and
    # depth 1 (delta = 1/e) makes failures frequent enough for the bound to be tested for real.
    # Theory: for every key P(estimate - count > epsilon * N) <= delta = e^-depth. Pooling the K
    # (seed, key) pairs of 50 seeds, the failure count F has mean <= K * delta; treating the
    # pairs as Bernoulli trials (independent across seeds; within a seed keys share counters, so
    # this is an approximation), Var F <= K * delta * (1 - delta), and a Chernoff/normal tail at
    # 6 standard deviations (p < 1e-9) gives the allowed fraction delta + 6 * sqrt(delta * (1 -
    # delta) / K). Streams and hash seeds are fixed, so the test is deterministic.
    failures = pairs = 0
    worst = 0.0
    for seed in range(50):
        stream, _ = zipf_stream(seed)
        sketch = CountMinSketch(2719, depth, seed=seed)
        sketch.update(stream)
        uniq, truth = np.unique(stream, return_counts=True)
        over = sketch.estimate_many(uniq) - truth
        assert (over >= 0).all()  # never an underestimate
        failures += int((over > sketch.error_bound()).sum())
        pairs += len(uniq)
        worst = max(worst, float(over.max()) / sketch.total)
    delta = math.exp(-depth)
    allowed = delta + 6 * math.sqrt(delta * (1 - delta) / pairs)
    # measured (seeds 0..49, 448,384 pairs): depth 1 -> 0.040 (bound 0.368), depth 5 -> 6.7e-6 (bound 0.0067)
    assert failures / pairs <= allowed, (failures, pairs, worst)


@pytest.mark.slow
def test_conservative_never_worse_than_plain_on_zipf() -> None:
    for seed in range(10):
        stream, keys = zipf_stream(seed, n=100_000)
        plain = CountMinSketch(500, 3, seed=seed)
        cons = CountMinSketch(500, 3, seed=seed, conservative=True)
        plain.update(stream)
        for batch in np.array_split(stream, 20):
            cons.update(batch)
        truth = np.zeros(len(keys), dtype=np.int64)
        np.add.at(truth, np.searchsorted(keys, stream), 1)
        p, c = plain.estimate_many(keys), cons.estimate_many(keys)
        assert (truth <= c).all() and (c <= p).all()
        assert (p - truth).sum() > 2 * (c - truth).sum()  # and markedly better in total


# ---------------------------------------------------------------- C kernels


@settings(max_examples=150, deadline=None)
@given(
    hashes=st.lists(st.integers(0, 2**64 - 1), max_size=80),
    width=st.sampled_from([1, 2, 7, 64, 1000, 2**32 - 1]),
    depth=st.integers(1, 9),
    weighted=st.booleans(),
    strided=st.booleans(),
)
def test_c_kernels_match_the_numpy_path(
    hashes: list[int], width: int, depth: int, weighted: bool, strided: bool
) -> None:
    if width * depth > 2**20:  # the widest sketches only with a few rows' worth of memory
        width = 2**20 // depth
    h = np.array(hashes, dtype=np.uint64)
    weights = (
        np.arange(1, 2 * len(h) + 1, dtype=np.int64)[:: 2 if strided else 1][: len(h)] if weighted else None
    )
    c_sketch = CountMinSketch(width, depth, seed=3)
    np_sketch = CountMinSketch(width, depth, seed=3)
    c_sketch.update(h, weights)
    c_est = c_sketch.estimate_many(h)
    with mock.patch.object(countmin, "_chash", None):
        np_sketch.update(h, weights)
        np_est = np_sketch.estimate_many(h)
    assert np.array_equal(c_sketch._counters, np_sketch._counters)
    assert c_est.tolist() == np_est.tolist()


def test_c_kernels_in_use_and_after_from_bytes() -> None:
    assert countmin._chash is not None, "the C extension must be built for the fast path"
    s = CountMinSketch(50, 4, seed=1)
    assert s._in_c()
    s.update(["a", "b", "a"])
    back = CountMinSketch.from_bytes(s.to_bytes())
    assert back._in_c()
    back.update(["a"])
    assert back.estimate_many(["a", "b", "z"]).tolist() == [3, 1, 0]


def test_c_kernels_reject_inconsistent_buffers() -> None:
    assert countmin._chash is not None
    with pytest.raises(ValueError, match="counters k \\* m int64"):
        countmin._chash.cms_add(np.zeros(2, dtype=np.uint64), 3, 10, np.zeros(29, dtype=np.int64), None)
    with pytest.raises(ValueError, match="one output per hash"):
        countmin._chash.cms_min(
            np.zeros(2, dtype=np.uint64), 3, 10, np.zeros(30, dtype=np.int64), np.zeros(1, dtype=np.int64)
        )
