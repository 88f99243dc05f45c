"""Tests for sketches.dgim_table.DGIMTable: bit-for-bit equality with one DGIM per row."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sketches import dgim_table
from sketches.dgim import DGIM
from sketches.dgim_table import MAX_WINDOW, DGIMTable

events_st = st.lists(
    st.tuples(st.integers(0, 3), st.booleans(), st.integers(0, 40)), max_size=250
)  # (row, bit, reset if 0)


def replay(window: int, r: int, events: list[tuple[int, bool, int]], cuts: list[int]) -> None:
    """Feed ``events`` to a DGIMTable in chunks and to one DGIM per row; compare everything."""
    table = DGIMTable(window, r, size=4)
    refs = [DGIM(window, r) for _ in range(4)]
    rows = np.array([e[0] for e in events], dtype=np.intp)
    bits = np.array([e[1] for e in events], dtype=np.bool_)
    reset = np.array([e[2] == 0 for e in events], dtype=np.bool_)
    bounds = sorted({0, len(events), *[c % (len(events) + 1) for c in cuts]})
    for lo_i, hi_i in itertools.pairwise(bounds):
        est, lo, hi = table.add(rows[lo_i:hi_i], bits[lo_i:hi_i], reset[lo_i:hi_i])
        for j in range(lo_i, hi_i):
            row = int(rows[j])
            if reset[j]:
                refs[row] = DGIM(window, r)
            refs[row].add(int(bits[j]))
            if bits[j]:
                got = (int(est[j - lo_i]), int(lo[j - lo_i]), int(hi[j - lo_i]))
                assert got == (refs[row].count(), *refs[row].exact_bounds())
            else:
                assert est[j - lo_i] == -1
        assert table.count().tolist() == [d.count() for d in refs]
        assert [tuple(b) for b in table.exact_bounds().tolist()] == [d.exact_bounds() for d in refs]


@contextmanager
def backend(name: str) -> Iterator[None]:
    """``"c"``: the C extension (which must be built); ``"numpy"``: the numpy rounds."""
    assert dgim_table._chash is not None, "the C extension sketches._chash was not built"
    with patch.object(dgim_table, "_chash", dgim_table._chash if name == "c" else None):
        yield


@pytest.mark.parametrize("impl", ["c", "numpy"])
@pytest.mark.parametrize(
    ("window", "r"), [(1, 2), (2, 2), (7, 2), (10, 8), (10, 2), (20, 8), (33, 3), (64, 2), (64, 5)]
)
@settings(max_examples=60, deadline=None)
@given(events=events_st, cuts=st.lists(st.integers(0, 300), max_size=4))
def test_matches_dgim_bit_for_bit(
    impl: str, window: int, r: int, events: list[tuple[int, bool, int]], cuts: list[int]
) -> None:
    with backend(impl):
        replay(window, r, events, cuts)


@pytest.mark.parametrize("impl", ["c", "numpy"])
def test_long_random_streams_many_rows(impl: str) -> None:
    with backend(impl):
        long_random_streams()


def test_c_rejects_rows_out_of_range_before_changing_anything() -> None:
    table = DGIMTable(10, 2, size=3)
    table.add(np.array([0, 1]), np.array([True, True]))
    before = table.masks.copy()
    with pytest.raises(ValueError, match="rows must be in"):
        table.add(np.array([0, 3]), np.array([True, True]))
    assert (table.masks == before).all()


def long_random_streams() -> None:
    rng = np.random.default_rng(1)
    for window, r in [(10, 8), (20, 8), (16, 2), (50, 4)]:
        rows_n, n = 300, 20_000
        rows = rng.integers(0, rows_n, n)
        rows[rng.random(n) < 0.3] = 7  # one hot row: many rounds
        bits = rng.random(n) < 0.6
        reset = rng.random(n) < 0.001
        table = DGIMTable(window, r, size=rows_n)
        refs = [DGIM(window, r) for _ in range(rows_n)]
        est, _, _ = table.add(rows, bits, reset)
        for j in range(n):
            if reset[j]:
                refs[rows[j]] = DGIM(window, r)
            refs[rows[j]].add(int(bits[j]))
            if bits[j]:
                assert est[j] == refs[rows[j]].count()
        assert table.count().tolist() == [d.count() for d in refs]


def test_error_bound_levels_and_validation() -> None:
    t = DGIMTable(10, 8, size=2)
    assert (t.window, t.r, t.levels, len(t)) == (10, 8, 4, 2)
    assert t.error_bound == DGIM(10, 8).error_bound
    assert t.masks.shape == (2, 4) and t.count().tolist() == [0, 0]
    assert t.exact_bounds().tolist() == [[0, 0], [0, 0]]
    assert DGIMTable.levels_for(MAX_WINDOW) == 7
    with pytest.raises(ValueError, match="window"):
        DGIMTable(MAX_WINDOW + 1)
    with pytest.raises(ValueError, match="r must"):
        DGIMTable(10, 1)
    with pytest.raises(ValueError, match="shape"):
        DGIMTable(10, 2, masks=np.zeros((3, 2), dtype=np.uint64))
    with pytest.raises(ValueError, match="outside the window"):
        DGIMTable(4, 2, masks=np.full((1, 3), 16, dtype=np.uint8))
    with pytest.raises(ValueError, match="rows must"):
        t.add(np.array([2]), np.array([True]))
    with pytest.raises(ValueError, match="same length"):
        t.add(np.array([0]), np.array([True, False]))
    assert [a.tolist() for a in t.add(np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.bool_))] == [
        [],
        [],
        [],
    ]


def test_masks_round_trip_through_narrow_dtype() -> None:
    t = DGIMTable(10, 2, size=3)
    t.add(np.array([0, 0, 1, 0, 2, 0, 0]), np.ones(7, dtype=np.bool_))
    again = DGIMTable(10, 2, masks=t.masks.astype(np.uint16))
    assert again.count().tolist() == t.count().tolist()
    assert np.array_equal(again.masks, t.masks)
