"""Sorting hash keys into groups and prefix sums within runs, against plain references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import segments
from operators.segments import exclusive_segmented_cumsum, hash_order, segmented_cumsum
from sketches.hashing import hash64_many

_U64 = st.integers(0, 2**64 - 1)


def _check(keys: np.ndarray) -> None:
    order, ordered = hash_order(keys)
    want = np.argsort(keys, kind="stable")
    assert order.dtype == np.intp and order.tolist() == want.tolist()
    assert ordered.tolist() == keys[want].tolist()


@settings(max_examples=300, deadline=None)
@given(
    distinct=st.lists(_U64, min_size=1, max_size=40),
    picks=st.lists(st.integers(0, 10**6), max_size=300),
    shift=st.sampled_from([0, 8, 40, 56, 63]),
)
def test_hash_order_is_the_stable_argsort(distinct: list[int], picks: list[int], shift: int) -> None:
    # any keys, repeated in any order; shifting left forces shared high bits (small keys) or
    # only high bits (large ones), both paths of the fast sort
    values = np.array(distinct, dtype=np.uint64) << np.uint64(shift)
    _check(values[np.array(picks, dtype=np.intp) % len(values)] if picks else values[:0])


def test_hash_order_on_real_hashes_and_forced_collisions() -> None:
    rng = np.random.default_rng(5)
    cards = np.array([f"card-{i}" for i in rng.integers(0, 30_000, 100_000)], dtype=object)
    _check(hash64_many(cards, 3))
    # two keys equal in their top 47 bits, interleaved: the fast order would mix them
    keys = np.array([(1 << 40) + 1, 1 << 40] * 50_000, dtype=np.uint64)
    _check(keys)
    _check(np.zeros(0, dtype=np.uint64))
    _check(np.array([5], dtype=np.uint64))


@settings(max_examples=200, deadline=None)
@given(runs=st.lists(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=20), min_size=1, max_size=20))
def test_segmented_cumsums_equal_a_loop_per_run(runs: list[list[float]]) -> None:
    x = np.array([v for run in runs for v in run])[None, :]
    first = np.concatenate(
        [
            np.full(len(run), start)
            for run, start in zip(runs, np.cumsum([0] + [len(r) for r in runs[:-1]]), strict=True)
        ]
    )
    inclusive = [s for run in runs for s in np.cumsum(run).tolist()]
    exclusive = [s for run in runs for s in [0.0, *np.cumsum(run)[:-1].tolist()]]
    assert np.allclose(segmented_cumsum(x, first)[0], inclusive, rtol=1e-12, atol=1e-6)
    assert np.allclose(exclusive_segmented_cumsum(x, first)[0], exclusive, rtol=1e-12, atol=1e-6)


def test_the_c_scan_and_the_numpy_scan_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 40, 3_000)
    first = np.repeat(np.cumsum(np.concatenate([[0], lengths[:-1]])), lengths).astype(np.intp)
    x = rng.standard_normal((3, len(first))) * np.exp(rng.uniform(-30, 30, len(first)))
    c = segmented_cumsum(x, first), exclusive_segmented_cumsum(x, first)
    scale = segmented_cumsum(np.abs(x), first)  # rounding is relative to the sum of |terms|
    monkeypatch.setattr(segments, "_chash", None)
    numpy = segmented_cumsum(x, first), exclusive_segmented_cumsum(x, first)
    for a, b in zip(c, numpy, strict=True):
        assert (np.abs(a - b) <= 40 * np.finfo(float).eps * scale).all()
    assert (c[1][:, first == np.arange(len(first))] == 0.0).all()
