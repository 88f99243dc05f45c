"""Tests of ``operators.entities.EntityTable``: lookups, inserts and eviction against a dict model,
the clock column, exact (bit-for-bit) pickling in every column encoding, and older snapshots."""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.entities import EntityTable, dumps_tables

U64 = np.uint64


def keys(*values: int) -> np.ndarray[Any, np.dtype[np.uint64]]:
    return np.array(values, dtype=U64)


def same_bits(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    """Equal dtype, shape and bytes (NaN payloads, -0.0 and -inf included)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_same_table(a: EntityTable, b: EntityTable) -> None:
    assert a.idle_ttl == b.idle_ttl and a.clock == b.clock and a.columns == b.columns
    assert same_bits(a.keys, b.keys)
    assert same_bits(a.last_seen, b.last_seen)
    for name in a.columns:
        assert same_bits(a[name], b[name]), name


def round_trip(table: EntityTable) -> EntityTable:
    out = pickle.loads(pickle.dumps(table, protocol=pickle.HIGHEST_PROTOCOL))
    assert isinstance(out, EntityTable)
    return out


# -- lookups, inserts, eviction --------------------------------------------------------------------


def test_new_keys_are_appended_and_merged_into_key_order() -> None:
    t = EntityTable({"n": (np.int64, 0)}, idle_ttl=10.0)
    assert t.rows(keys(50, 10, 50)).tolist() == [1, 0, 1]
    t["n"][t.rows(keys(50))] = 5
    assert t.rows(keys(30, 50, 70)).tolist() == [2, 1, 3]  # 30 and 70 appended
    assert t.find(keys(70, 71, 0, 10, 30)).tolist() == [3, -1, -1, 0, 2]
    assert t.keys.tolist() == [10, 30, 50, 70]  # reading the keys merges: rows in key order
    assert t["n"].tolist() == [0, 0, 5, 0]
    assert t.find(keys(70, 71, 0, 10)).tolist() == [3, -1, -1, 0]
    assert EntityTable({"n": (np.int64, 0)}, idle_ttl=1.0).find(keys(1)).tolist() == [-1]


def test_a_growing_table_merges_its_tail_and_keeps_spare_capacity_small() -> None:
    rng = np.random.default_rng(3)
    t = EntityTable({"v": (np.float64, 0.0)}, idle_ttl=10.0)
    model: dict[int, float] = {}
    for _ in range(200):
        ks = np.unique(rng.integers(0, 2**63, size=int(rng.integers(1, 400))).astype(U64))
        rows = t.rows(ks)
        t["v"][rows] = ks.astype(np.float64)
        model.update(zip(ks.tolist(), ks.astype(np.float64).tolist(), strict=True))
        assert len(t._tail_keys) <= 256 + t._sorted // 16 + 400  # merged once it outgrows that
        assert len(t._keys) <= max(16, len(t) + len(t) // 8 + 400)  # spare capacity bounded
        probe = rng.choice(np.array(sorted(model), dtype=U64), size=50)
        assert t["v"][t.find(probe)].tolist() == [model[k] for k in probe.tolist()]
    assert t.keys.tolist() == sorted(model) and t["v"].tolist() == [model[k] for k in sorted(model)]


def test_matches_a_dict_model_under_random_operations() -> None:
    rng = np.random.default_rng(7)
    ttl = 50.0
    t = EntityTable({"total": (np.float64, 0.0), "n": (np.int32, 0)}, idle_ttl=ttl)
    model: dict[int, list[float]] = {}  # key -> [total, n, last seen]
    now = 0.0
    for step in range(300):
        now += float(rng.exponential(2.0))
        ks = rng.integers(0, 400, size=int(rng.integers(0, 60))).astype(U64)
        if step % 2:  # a batch's distinct keys, ascending (the detectors' case: another path)
            ks = np.unique(ks)
        ts = now - rng.uniform(0, 5, size=len(ks))
        vals = rng.normal(size=len(ks))
        rows = t.rows(ks, ts)
        np.add.at(t["total"], rows, vals)
        np.add.at(t["n"], rows, 1)
        for k, v, s in zip(ks.tolist(), vals.tolist(), ts.tolist(), strict=True):
            m = model.setdefault(k, [0.0, 0, -math.inf])
            m[0] += v
            m[1] += 1
            m[2] = max(m[2], s)
        if step % 7 == 0:
            dropped = t.evict(now)
            stale = [k for k, m in model.items() if m[2] < now - ttl]
            assert dropped == len(stale)
            for k in stale:
                del model[k]
        if step % 50 == 0:
            t = round_trip(t)
        # through find, which leaves the tail of new keys in place; every 10 steps through keys,
        # which merges it
        order = sorted(model) if step % 10 else t.keys.tolist()
        assert order == sorted(model) and len(t) == len(model)
        rows = t.find(np.array(order, dtype=U64))
        assert (rows >= 0).all()
        assert np.allclose(t["total"][rows], [model[k][0] for k in order])
        assert t["n"][rows].tolist() == [model[k][1] for k in order]
        assert t.last_seen[rows].tolist() == [model[k][2] for k in order]


def test_lookup_and_store_match_a_dict_model_of_a_sparse_table() -> None:
    """A sparse table (rows only for values other than the default) through lookup and store,
    growing through tail merges: the same values as a dict."""
    rng = np.random.default_rng(11)
    t = EntityTable({"v": (np.int64, 0)}, idle_ttl=1.0, last_seen=False)
    model: dict[int, int] = {}
    for step in range(400):
        ks = np.unique(rng.integers(0, 3000, size=int(rng.integers(1, 80))).astype(U64))
        had, rows, values = t.lookup(ks, {"v": 0})
        assert values["v"].tolist() == [model.get(k, 0) for k in ks.tolist()]
        values["v"] += rng.integers(-1, 2, size=len(ks))  # some become 0 (the default) again
        t.store(ks, values, had, rows, keep=values["v"] != 0)
        for k, v in zip(ks.tolist(), values["v"].tolist(), strict=True):
            if v or k in model:  # rows that existed are kept current, whatever their value
                model[k] = v
        if step % 25 == 0:
            assert t.keys.tolist() == sorted(model)  # merges the tail
    assert len(t) == len(model) > 1000
    found = t.find(np.array(sorted(model), dtype=U64))
    assert t["v"][found].tolist() == [model[k] for k in sorted(model)]


def test_clock_column_drives_eviction_and_refuses_ts() -> None:
    t = EntityTable({"prev_ts": (np.float64, -np.inf), "x": (np.int64, 0)}, idle_ttl=10.0, clock="prev_ts")
    rows = t.rows(keys(3, 1, 2))
    t["prev_ts"][rows] = [100.0, 95.0, 89.0]
    assert np.shares_memory(t.last_seen, t["prev_ts"])
    assert t.evict(now=100.0) == 1 and t.keys.tolist() == [1, 3]
    with pytest.raises(ValueError, match="clock"):
        t.rows(keys(1), np.array([1.0]))
    with pytest.raises(ValueError, match="float64"):
        EntityTable({"x": (np.int64, 0)}, idle_ttl=1.0, clock="x")
    with pytest.raises(ValueError, match="float64"):
        EntityTable({"x": (np.float64, 0.0)}, idle_ttl=1.0, clock="y")
    assert t.nbytes == 2 * (8 + 8 + 8)


def test_drop_and_widen() -> None:
    t = EntityTable({"n": (np.uint32, 0)}, idle_ttl=1.0)
    rows = t.rows(keys(1, 2, 3, 4))  # before taking the column: an insert replaces the arrays
    t["n"][rows] = [1, 0, 3, 0]
    assert t.drop(t["n"] == 0) == 2 and t.keys.tolist() == [1, 3]
    with pytest.raises(ValueError):
        t.drop(np.zeros(5, dtype=bool))
    t.widen("n", np.int64)
    rows = t.rows(keys(9))
    t["n"][rows] = 2**40
    assert t["n"].dtype == np.int64 and t["n"].tolist() == [1, 3, 2**40]
    assert round_trip(t)["n"].dtype == np.int64
    with pytest.raises(KeyError):
        t.widen("missing", np.int64)


# -- pickling --------------------------------------------------------------------------------------


def awkward_table(n: int, seed: int) -> EntityTable:
    """Columns that exercise every encoding: mostly-default floats (NaN, -inf, -0.0 around),
    a column mostly equal to another, small and huge integers, booleans, dense floats."""
    rng = np.random.default_rng(seed)
    t = EntityTable(
        {
            "prev_ts": (np.float64, -math.inf),
            "ref": (np.float64, -math.inf),
            "mean": (np.float64, 0.0),
            "weight": (np.float64, 0.0),
            "last": (np.float64, math.nan),
            "alert": (np.float64, -math.inf),
            "count": (np.int64, 0),
            "big": (np.int64, 0),
            "mask": (np.uint16, 0),
            "armed": (np.bool_, True),
        },
        idle_ttl=100.0,
        clock="prev_ts",
    )
    rows = t.rows(rng.integers(0, 2**64, size=n, dtype=U64))
    m = len(rows)
    prev = 1.7e9 + rng.uniform(0, 1000, m)
    t["prev_ts"][rows] = prev
    ref = prev.copy()
    late = rng.random(m) < 0.1
    ref[late] += rng.uniform(0, 5, int(late.sum()))
    t["ref"][rows] = ref
    t["mean"][rows] = rng.normal(size=m)
    t["weight"][rows] = np.where(rng.random(m) < 0.95, 1.0, rng.random(m))  # mostly one value
    last = np.full(m, math.nan)
    last[rng.random(m) < 0.2] = -0.0
    last[rng.random(m) < 0.2] = 20.5
    nan_payload = np.array([0x7FF8_0000_0000_0001], dtype=np.uint64).view(np.float64)
    last[: min(3, m)] = nan_payload[0]  # a NaN with another payload than the default
    t["last"][rows] = last
    alert = np.full(m, -math.inf)
    alert[rng.random(m) < 0.01] = 1.7e9
    t["alert"][rows] = alert
    t["count"][rows] = rng.integers(0, 200, m)
    t["big"][rows] = rng.integers(-(2**62), 2**62, m)
    t["mask"][rows] = np.where(rng.random(m) < 0.05, rng.integers(1, 1024, m), 0)
    t["armed"][rows] = rng.random(m) < 0.97
    return t


@pytest.mark.parametrize("n", [0, 1, 7, 1000])
def test_pickle_is_bit_exact(n: int) -> None:
    t = awkward_table(n, n)
    back = round_trip(t)
    assert_same_table(t, back)
    # and it keeps working: inserts, lookups and eviction on the restored table
    new = keys(1, 2, 3)
    assert same_bits(back.rows(new), t.rows(new))
    assert back.evict(1.7e9 + 500.0) == t.evict(1.7e9 + 500.0)
    assert_same_table(t, back)


def test_pickle_is_smaller_than_the_live_table() -> None:
    t = awkward_table(20_000, 1)
    size = len(pickle.dumps(t, protocol=pickle.HIGHEST_PROTOCOL))
    # live: 8 (key) + 8 * 8 + 2 + 1 = 75 B per row; pickled: key, prev_ts, mean, big 8 B each,
    # ref ~10% (like prev_ts), count 1 B, weight ~5% (mostly 1.0), the mostly-default columns
    # a bitmap and a few values
    assert t.nbytes == 75 * len(t)
    assert size < 39 * len(t)
    enc = t.__getstate__()["cols"]
    assert enc["weight"][0] == "like" and enc["weight"][1][0] == "value"
    assert enc["weight"][1][1].tolist() == [1.0]
    assert enc["ref"][1] == ("column", "prev_ts") and enc["alert"][1] == ("default",)
    assert enc["count"][0] == "full" and enc["count"][1].dtype == np.uint8


def test_pickle_of_a_table_without_clock() -> None:
    t = EntityTable({"v": (np.float32, 1.5)}, idle_ttl=3.0)
    t.rows(keys(5, 6, 7), np.array([1.0, 2.0, 3.0]))
    t["v"][1] = np.float32(-2.25)
    back = round_trip(t)
    assert_same_table(t, back)
    assert back.clock is None and back.evict(4.5) == 1


def test_older_snapshot_format_loads() -> None:
    """State pickled by the table before version 2: insertion-ordered rows, own last-seen column."""
    old_state = {
        "idle_ttl": 5.0,
        "spec": {"n": ("<i8", 0), "prev_ts": ("<f8", -math.inf)},
        "keys": keys(30, 10, 20),
        "last_seen": np.array([3.0, 1.0, 2.0]),
        "cols": {"n": np.array([3, 1, 2]), "prev_ts": np.array([2.5, 0.5, 1.5])},
    }
    t = EntityTable.__new__(EntityTable)
    t.__setstate__(old_state)
    assert t.keys.tolist() == [10, 20, 30] and t["n"].tolist() == [1, 2, 3]
    assert t.last_seen.tolist() == [1.0, 2.0, 3.0] and t.clock is None
    assert t.rows(keys(20, 40), np.array([9.0, 9.0])).tolist() == [1, 3]
    t["prev_ts"][3] = 9.0
    t.use_clock("prev_ts")
    assert t.clock == "prev_ts" and t.evict(now=7.0) == 2  # prev_ts 0.5 and 1.5 are < 2.0
    assert t.keys.tolist() == [30, 40] and t["n"].tolist() == [3, 0]


def test_reserved_and_unknown_encodings_are_refused() -> None:
    with pytest.raises(ValueError, match="reserved"):
        EntityTable({"\x00last_seen": (np.float64, 0.0)}, idle_ttl=1.0)
    t = EntityTable({"x": (np.float64, 0.0)}, idle_ttl=1.0, clock="x")
    t.rows(keys(1))
    state = t.__getstate__()
    state["cols"]["x"] = ("zstd", b"")
    with pytest.raises(ValueError, match="encoding"):
        EntityTable.__new__(EntityTable).__setstate__(state)


# -- tables pickled against each other (dumps_tables) ----------------------------------------------


def _card_tables(n: int, seed: int = 5) -> tuple[EntityTable, EntityTable]:
    """An outlier-like table and a velocity-like one over the same cards (one lacks a few, one
    has a few more), the previous event times equal but for a few."""
    rng = np.random.default_rng(seed)
    ks = np.unique(rng.integers(0, 2**64, size=n, dtype=U64))
    a = EntityTable({"prev_ts": (np.float64, -math.inf), "mean": (np.float64, 0.0)}, 60.0, clock="prev_ts")
    rows = a.rows(ks[5:])
    prev = 1.7e9 + rng.uniform(0, 1000, len(rows))
    a["prev_ts"][rows] = prev
    a["mean"][rows] = rng.normal(size=len(rows))
    b = EntityTable({"prev_ts": (np.float64, -math.inf)}, 30.0, clock="prev_ts")
    rows_b = b.rows(ks[: n - 3])
    ts = np.concatenate([np.full(5, 1.7e9), prev[: len(rows_b) - 5]])
    ts[100:110] += 0.5
    b["prev_ts"][rows_b] = ts
    return a, b


def test_a_table_pickled_after_one_with_its_keys_stores_only_what_differs() -> None:
    a, b = _card_tables(20_000)
    a_alone = len(pickle.dumps(a, protocol=pickle.HIGHEST_PROTOCOL))
    together = dumps_tables((a, b))
    # b against a: a bitmap of a's rows (1 bit), the 5 keys a lacks, and the prev_ts that differ
    # (5 + 10 + the rows a lacks) with a bitmap of b's rows; alone it would cost 8 + 5 B per row
    assert len(together) - a_alone < 0.3 * len(b)
    back_a, back_b = pickle.loads(together)
    assert_same_table(a, back_a)
    assert_same_table(b, back_b)
    # and both keep working independently
    new = keys(1, 2)
    assert same_bits(back_b.rows(new), b.rows(new))
    assert back_b.evict(1.7e9 + 500.0) == b.evict(1.7e9 + 500.0)
    assert_same_table(b, back_b)
    assert_same_table(a, back_a)


def test_tables_with_unrelated_keys_are_pickled_as_usual() -> None:
    a, _ = _card_tables(2_000, seed=1)
    c, _ = _card_tables(2_000, seed=2)
    assert len(dumps_tables((a, c))) == len(pickle.dumps((a, c), protocol=pickle.HIGHEST_PROTOCOL))
    back_a, back_c = pickle.loads(dumps_tables((a, c)))
    assert_same_table(a, back_a)
    assert_same_table(c, back_c)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 2**64 - 1), unique=True, max_size=300),
    st.data(),
)
def test_dumps_tables_round_trips_any_overlap(universe: list[int], data: st.DataObject) -> None:
    def table() -> EntityTable:
        chosen = data.draw(st.lists(st.sampled_from(universe), unique=True) if universe else st.just([]))
        t = EntityTable({"v": (np.float64, 0.0), "n": (np.int64, 0)}, 10.0, clock="v")
        rows = t.rows(np.array(sorted(chosen), dtype=U64))
        value = st.sampled_from([0.0, -0.0, 1.5, math.nan, -math.inf])
        values = data.draw(st.lists(value, min_size=len(rows), max_size=len(rows)))
        t["v"][rows] = values
        t["n"][rows] = [int(k % 7) for k in sorted(chosen)]
        return t

    tables = [table(), table(), table()]
    back = pickle.loads(dumps_tables(tables))
    for t, u in zip(tables, back, strict=True):
        assert_same_table(t, u)


def test_a_table_without_last_seen_times_is_dropped_from_by_its_owner() -> None:
    t = EntityTable({"last": (np.int64, 0)}, idle_ttl=10.0, last_seen=False)
    rows = t.rows(keys(3, 1, 2))
    t["last"][rows] = [7, 1, 9]
    assert t.nbytes == 16 * 3  # key and "last": no last-seen column
    with pytest.raises(ValueError, match="last_seen=False"):
        t.rows(keys(4), np.array([1.0]))
    with pytest.raises(ValueError, match="last_seen=False"):
        t.evict(100.0)
    back = round_trip(t)
    assert back.drop(back["last"] < 5) == 1 and back.keys.tolist() == [2, 3]
    assert back.columns == ["last"] and back.clock is None


@pytest.mark.parametrize(
    ("values", "width"),
    [
        (1.7e9 + np.arange(1000) * 1.37, 5),  # event times over ~23 minutes
        (np.array([29_453_000, 29_453_001, 29_453_250], dtype=np.int64), 1),  # window ids
        (np.array([-3, 4, 100], dtype=np.int32), None),  # mixed signs: narrowed instead
        (np.array([0.5, -0.0, math.nan, -math.inf, 3e300]), None),  # nothing to gain
    ],
)
def test_columns_of_close_values_pickle_as_offsets(values: np.ndarray[Any, Any], width: int | None) -> None:
    t = EntityTable({"v": (values.dtype, 0)}, idle_ttl=1.0)
    rows = t.rows(np.arange(1, len(values) + 1, dtype=U64))
    t["v"][rows] = values
    enc = t.__getstate__()["cols"]["v"]
    assert (enc[0], enc[2]) == ("offset", width) if width else enc[0] != "offset"
    assert_same_table(t, round_trip(t))


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.floats(1.0e9, 1.0e9 + 50.0), min_size=1, max_size=200),
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=200),
    st.integers(0, 2**20),
)
def test_offset_encoded_columns_round_trip_bit_for_bit(
    times: list[float], ints: list[int], near: int
) -> None:
    for values in (
        np.array(times),
        np.array(ints, dtype=np.int64),
        np.array(ints, dtype=np.int64) % (near + 1),
    ):
        t = EntityTable({"v": (values.dtype, 0)}, idle_ttl=1.0)
        rows = t.rows(np.arange(1, len(values) + 1, dtype=U64))
        t["v"][rows] = values
        assert_same_table(t, round_trip(t))


def test_version_2_snapshots_still_load() -> None:
    """Version 3 added encodings; a version-2 state (full and like columns only) loads as before."""
    t = awkward_table(500, 4)
    state = t.__getstate__()
    n = len(t)
    state["cols"] = {
        name: ("full", t._cols[name][:n].copy()) if enc[0] == "offset" else enc
        for name, enc in state["cols"].items()  # in order: "like" may name an earlier column
    }
    state["version"] = 2
    back = EntityTable.__new__(EntityTable)
    back.__setstate__(state)
    assert_same_table(t, back)
