"""Routing (split_by_shard), the per-batch key-hash memo, and the hashed duplicate-filter path."""

from __future__ import annotations

import math
import pickle
import threading
import weakref
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar
from unittest.mock import patch

import bytewax.operators as op
import numpy as np
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import events
from connectors.events import EventBatch, LazyColumns, Progress, Sample
from connectors.sources import PartitionProgress
from operators.detectors.entity import DuplicateDetector
from operators.routing import partition_key, shard_key
from operators.runtime import (
    Detector,
    DetectorGroup,
    DetectorSpec,
    Output,
    PartitionClock,
    _DetectorLogic,
    detector_step,
    event_clock,
    group_spec,
    group_specs,
    partition_shard,
    split_by_shard,
)
from sketches import AgingBloomFilter
from sketches.hashing import hash64_many


def _batch(n: int, seed: int = 0, distinct: int = 50) -> EventBatch:
    rng = np.random.default_rng(seed)
    keys = np.array([f"k{i}" for i in rng.integers(0, distinct, n)], dtype=object)
    other = np.array([f"o{i}" for i in rng.integers(0, 7, n)], dtype=object)
    return EventBatch(
        "demo", np.arange(n, dtype=np.int64) + 100, {"key": keys, "other": other, "x": rng.random(n)}
    )


def _reference_split(batch: EventBatch, key: str, shards: int, seed: int) -> list[tuple[str, EventBatch]]:
    shard = ((hash64_many(batch[key], seed) >> np.uint64(40)) % np.uint64(shards)).astype(np.intp)
    order = np.argsort(shard, kind="stable")
    cuts = np.flatnonzero(np.diff(shard[order])) + 1
    return [
        (shard_key(int(shard[idx[0]]), shards), batch.take(idx)) for idx in np.split(order, cuts) if len(idx)
    ]


@pytest.mark.parametrize(
    ("n", "shards", "seed"), [(0, 4, 0), (1, 16, 3), (500, 16, 0), (2000, 7, 12345), (300, 300, 1)]
)
def test_split_matches_reference_and_carries_hashes(n: int, shards: int, seed: int) -> None:
    batch = _batch(n, seed)
    got = split_by_shard(batch, "key", shards, seed)
    want = _reference_split(_batch(n, seed), "key", shards, seed)
    assert [k for k, _ in got] == [k for k, _ in want]
    for (_, g), (_, w) in zip(got, want, strict=True):
        assert g.positions.tolist() == w.positions.tolist()
        assert {c: v.tolist() for c, v in g.columns.items()} == {c: v.tolist() for c, v in w.columns.items()}
        assert set(g.hashes) == {("key", seed)}
        assert g.key_hashes("key", seed).tolist() == hash64_many(w["key"], seed).tolist()


def test_split_hashes_once_and_holds_no_sub_batch_on_the_batch() -> None:
    batch = _batch(1000)
    with patch("connectors.events.hash64_many", wraps=events.hash64_many) as hashed:
        first = split_by_shard(batch, "key", 16, 0)
        again = split_by_shard(batch, "key", 16, 0)
    assert hashed.call_count == 1  # the key hashes are memoised on the batch
    assert _layout(first) == _layout(again)  # the same parts, rebuilt (none kept on the batch)
    assert not batch.memo
    part = weakref.ref(first[0][1])
    del first, again
    assert part() is None  # freed with the caller's list: the batch holds no sub-batch
    assert _layout(split_by_shard(batch, "key", 16, 1)) != _layout(split_by_shard(batch, "key", 16, 0))
    assert ("key", 0) in batch.hashes and ("key", 1) in batch.hashes  # hashed once, kept


def _layout(parts: list[tuple[str, EventBatch]]) -> list[tuple[str, list[int]]]:
    return [(shard, part.positions.tolist()) for shard, part in parts]


def test_shared_arrays_are_read_only() -> None:
    batch = _batch(100)
    h = batch.key_hashes("key", 9)
    assert h is batch.key_hashes("key", 9)
    assert h.tolist() == hash64_many(batch["key"], 9).tolist()
    with pytest.raises(ValueError):
        h[0] = 1
    _, part = split_by_shard(batch, "key", 4, 0)[0]
    for arr in (part.positions, part["x"], part.key_hashes("key", 0)):
        with pytest.raises(ValueError):
            arr[0] = arr[0]
    assert batch["x"].flags.writeable  # the input batch's own columns are untouched


def test_take_and_concat_carry_hashes() -> None:
    batch = _batch(200)
    h = batch.key_hashes("key", 5)
    mask = batch["x"] > 0.5
    sub = batch.take(mask)
    assert sub.hashes[("key", 5)].tolist() == h[mask].tolist()
    idx = np.array([3, 1, 4, 1, 5])
    assert batch.take(idx).hashes[("key", 5)].tolist() == h[idx].tolist()
    both = EventBatch.concat([sub, batch.take(~mask)])
    assert both.hashes[("key", 5)].tolist() == np.concatenate([h[mask], h[~mask]]).tolist()
    assert ("key", 5) not in EventBatch.concat([sub, _batch(3)]).hashes  # only when every part has them


@pytest.mark.parametrize(("capacity", "fp_rate"), [(50, 1e-6), (2000, 0.01), (5, 0.3)])
def test_hashed_check_and_add_equals_filter(capacity: int, fp_rate: float) -> None:
    rng = np.random.default_rng(capacity)
    ref = AgingBloomFilter(capacity, fp_rate, ttl=60.0, seed=11)
    fast = AgingBloomFilter(capacity, fp_rate, ttl=60.0, seed=11)
    t = 1000.0
    for _ in range(40):
        n = int(rng.integers(0, 300))
        items = [f"i{v}" for v in rng.integers(0, 400, n)]
        ts = t + np.sort(rng.random(n) * 50.0) - rng.random(n) * 20.0 * (rng.random(n) < 0.1)  # some late
        t += float(rng.random() * 70.0)
        want = ref.check_and_add_many(items, ts)
        got = fast.check_and_add_hashes(hash64_many(items, 11), ts)
        assert got.tolist() == want.tolist()
        assert fast.to_bytes() == ref.to_bytes()


def test_duplicate_detector_reuses_routing_hashes_only_for_its_seed() -> None:
    batch = EventBatch(
        "fraud",
        np.arange(6, dtype=np.int64),
        {"tx_id": np.array(["a", "b", "a", "c", "b", "a"], dtype=object), "ts": np.arange(6.0)},
    )
    for routing_seed in (0, 7):
        det = DuplicateDetector(shards=1, seed=7)
        parts = split_by_shard(batch, "tx_id", 2, routing_seed)
        alerts = [a.trigger for _, part in parts for a in det.process(part)]
        assert sorted(alerts, key=int) == ["2", "4", "5"]


def test_split_gathers_only_the_columns_read_and_each_once() -> None:
    batch = _batch(1000)
    parts = [p for _, p in split_by_shard(batch, "key", 8, 0)]
    assert all(isinstance(p.columns, LazyColumns) and p.columns._done == {} for p in parts)
    assert parts[0]["x"].tolist() == _reference_split(batch, "key", 8, 0)[0][1]["x"].tolist()
    assert set(parts[0].columns._done) == {"x"}  # "key" and "other" were not copied
    assert parts[0]["x"].base is parts[1]["x"].base  # views of one gather shared by every shard
    assert parts[0]["x"] is parts[0]["x"]


def test_lazy_batches_pickle_and_concat_like_plain_ones() -> None:
    batch = _batch(400, distinct=9)
    parts = [p for _, p in split_by_shard(batch, "key", 4, 0)]
    for p in parts:
        back = pickle.loads(pickle.dumps(p))
        assert type(back.columns) is dict
        assert {c: v.tolist() for c, v in back.columns.items()} == {c: p[c].tolist() for c in p.columns}
    glued = EventBatch.concat(parts)
    order = np.concatenate([p.positions for p in parts])
    assert glued["other"].tolist() == batch.take(order - 100)["other"].tolist()
    with pytest.raises(KeyError):
        glued["missing"]


def test_project_keeps_only_named_columns_and_the_hashes() -> None:
    batch = _batch(50)
    batch.key_hashes("key", 0)
    small = batch.project(["x", "key"])
    assert list(small.columns) == ["x", "key"] and small.hashes is batch.hashes
    assert small["x"].tolist() == batch["x"].tolist()
    with pytest.raises(KeyError):
        small["other"]
    with pytest.raises(KeyError, match="no column 'nope'"):
        batch.project(["nope"])
    assert list(pickle.loads(pickle.dumps(small)).columns) == ["x", "key"]


class _RecordWorker(op.StatefulBatchLogic[str, str, None]):
    seen: ClassVar[dict[str, int]] = {}

    def on_batch(self, values: list[str]) -> tuple[list[str], bool]:
        for key in values:
            self.seen[key] = threading.get_ident()
        return [], op.StatefulBatchLogic.RETAIN

    def snapshot(self) -> None:
        return None


@pytest.mark.parametrize(("shards", "workers"), [(16, 2), (16, 4), (12, 3), (8, 8), (5, 2)])
def test_shard_keys_spread_evenly_over_bytewax_workers(shards: int, workers: int) -> None:
    # Bytewax's own routing decides: run a flow keyed by the shard keys on `workers` threads.
    keys = [shard_key(s, shards) for s in range(shards)]
    _RecordWorker.seen.clear()
    flow = Dataflow("shard_balance")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(keys)), lambda k: k)
    op.output("out", op.stateful_batch("record", keyed, lambda _: _RecordWorker()), TestingSink([]))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)  # type: ignore[no-untyped-call]
    groups: dict[int, list[int]] = {}
    for s, key in enumerate(keys):
        groups.setdefault(_RecordWorker.seen[key], []).append(s)
    assert sorted(map(sorted, groups.values())) == sorted(
        [s for s in range(shards) if s % workers == w] for w in range(min(workers, shards))
    )


@pytest.mark.parametrize(
    "values",
    [
        ["a", "b", "a", "é", ""],  # few distinct: codes
        [f"s{i}" for i in range(5)],  # distinct: joined text
        ["a\x00b", "c", "d", "e", "f"],  # a NUL inside: pickled
        [1, "x", None, 2.5, b"y"],  # not strings: pickled
        [["a"], "b", "c", "d", "e"],  # unhashable: pickled
    ],
)
def test_batches_pickle_their_columns_exactly(values: list[object]) -> None:
    col = np.empty(len(values), dtype=object)
    col[:] = values
    batch = EventBatch("demo", np.arange(5, dtype=np.int64), {"s": col, "x": np.linspace(0, 1, 5)})
    back = pickle.loads(pickle.dumps(batch))
    assert back["s"].tolist() == values and back["s"].dtype == object
    for one in ([5], [""], [None], []):  # single values and an empty column
        col1 = np.empty(len(one), dtype=object)
        col1[:] = one
        assert (
            pickle.loads(pickle.dumps(EventBatch("d", np.arange(len(one)), {"s": col1})))["s"].tolist() == one
        )
    assert back["x"].tolist() == batch["x"].tolist() and back["x"].dtype == np.float64


def test_a_batch_pickled_twice_is_encoded_once() -> None:
    # Timely pickles what it sends to another process twice: to size it, then to write it.
    names = np.array(["a", "b", "a", "c"], dtype=object)
    batch = EventBatch("demo", np.arange(4, dtype=np.int64), {"s": names, "x": np.arange(4.0)})
    batch.key_hashes("s", 7)
    with patch.object(events, "encode_column", wraps=events.encode_column) as encode:
        first, second = pickle.dumps(("key", batch)), pickle.dumps(("key", batch))
    assert encode.call_count == 2  # once per column, on the first pickling only
    assert first == second
    back = pickle.loads(second)[1]
    assert back["s"].tolist() == names.tolist() and back["x"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert back.positions.tolist() == [0, 1, 2, 3] and back.flow == "demo"
    assert back.key_hashes("s", 7).tolist() == batch.key_hashes("s", 7).tolist()
    # what travels is the batch, not its wire copy; a batch derived from it encodes afresh
    assert "_wire" not in back.__dict__ and "_wire" not in batch.__getstate__()
    assert "_wire" not in replace(batch, progress=None).__dict__


def test_balanced_key_table_is_what_the_search_finds() -> None:
    from operators import routing

    assert [routing.balanced_key(s) for s in range(64)] == list(routing._BALANCED_KEYS)
    assert shard_key(3, 64) == routing._BALANCED_KEYS[3] and shard_key(3, 65) == "0003"


# -- detectors keyed by one column share a step ----------------------------------------------


class _Recorder(Detector):
    """Sees batches; reports which columns it got and flushes one marker sample."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[list[str]] = []

    def process(self, batch: EventBatch) -> list[Output]:
        self.seen.append(list(batch.columns))
        return [Sample("demo", 0.0, 1.0, self.name, len(self.seen), {})]

    def flush(self) -> list[Output]:
        return [Sample("demo", 0.0, 1.0, self.name, 0, {})]


def _spec(
    name: str, key: str | None, columns: tuple[str, ...] | None = None, local: bool = False
) -> DetectorSpec:
    return DetectorSpec(name, key, partial(_Recorder, name), columns, (lambda b: b) if local else None)


def test_group_specs_puts_detectors_of_one_key_together_in_order() -> None:
    specs = [
        _spec("a", "card"),
        _spec("g", None),
        _spec("b", "merchant"),
        _spec("c", "card"),
        _spec("l", "card", local=True),
    ]
    assert [[s.name for s in g] for g in group_specs(specs)] == [["a", "c"], ["g"], ["b"], ["l"]]


def test_group_spec_unions_columns_and_gives_each_detector_its_own() -> None:
    spec = group_spec([_spec("a", "card", ("card", "amount", "ts")), _spec("c", "card", ("card", "ts"))])
    assert (spec.name, spec.key, spec.columns) == ("a__c", "card", ("card", "amount", "ts"))
    group = spec.factory()
    assert isinstance(group, DetectorGroup)
    cols = {name: np.zeros(3) for name in ("card", "amount", "ts", "other")}
    out = group.process(EventBatch("demo", np.arange(3), cols))
    assert [s.stratum for s in out if isinstance(s, Sample)] == [
        "a",
        "c",
    ]  # each member's outputs, in member order
    (a, _), (c, _) = group.members
    assert isinstance(a, _Recorder) and isinstance(c, _Recorder)
    assert (a.seen, c.seen) == ([["card", "amount", "ts"]], [["card", "ts"]])
    assert [s.stratum for s in group.flush() if isinstance(s, Sample)] == ["a", "c"]
    again = pickle.loads(pickle.dumps(group))  # a group is one shard's snapshot
    assert [d.seen for d, _ in again.members] == [[["card", "amount", "ts"]], [["card", "ts"]]]
    assert group_spec([_spec("x", "k", None), _spec("y", "k", ("k",))]).columns is None
    single = _spec("s", "k")
    assert group_spec([single]) is single


def test_group_spec_refuses_mixed_keys_and_local_steps() -> None:
    with pytest.raises(ValueError, match="not keyed by one column"):
        group_spec([_spec("a", "card"), _spec("b", "merchant")])
    with pytest.raises(ValueError, match="not keyed by one column"):
        group_spec([_spec("a", None), _spec("b", None)])
    with pytest.raises(ValueError, match="not keyed by one column"):
        group_spec([_spec("a", "card"), _spec("b", "card", local=True)])


# -- per-partition clocks -----------------------------------------------------------------------


def _part(name: str, ts: list[float], parts: tuple[str, ...] = ("a", "b"), state: str = "data") -> EventBatch:
    return EventBatch(
        "demo", np.arange(len(ts)), {"ts": np.array(ts, dtype=float)}, progress=Progress(name, parts, state)
    )


def test_one_partition_clock_is_the_running_maximum() -> None:
    clock = PartitionClock()
    ts = [3.0, 1.0, 7.0, 5.0]
    assert clock.clock_of(_part("a", ts, ("a",))).tolist() == [3.0, 3.0, 7.0, 7.0]
    assert clock.clock_of(_part("a", [6.0, 8.0], ("a",))).tolist() == [7.0, 8.0]
    plain = EventBatch("demo", np.arange(4), {"ts": np.array(ts)})
    assert clock.clock_of(plain) is None  # no progress: detectors take the running maximum
    assert event_clock(plain, plain["ts"], 4.0).tolist() == [4.0, 4.0, 7.0, 7.0]


def test_clock_is_the_least_progress_over_partitions() -> None:
    clock = PartitionClock()
    assert clock.clock_of(_part("a", [100.0, 200.0])).tolist() == [-math.inf, -math.inf]  # b unheard
    assert clock.clock_of(_part("b", [10.0, 50.0, 300.0])).tolist() == [10.0, 50.0, 200.0]
    assert clock.clock_of(_part("a", [250.0])).tolist() == [250.0]
    assert clock.clock_of(_part("b", [260.0])).tolist() == [250.0]  # never back, never past a
    assert clock.clock == 250.0


def test_ended_and_idle_partitions_stop_holding_the_clock() -> None:
    clock = PartitionClock()
    clock.clock_of(_part("a", [100.0]))
    assert clock.clock_of(_part("b", [0.0], state="final")).tolist() == []
    assert clock.clock_of(_part("a", [150.0])).tolist() == [150.0]  # b ended
    clock = PartitionClock()
    clock.clock_of(_part("b", [10.0]))
    clock.clock_of(_part("b", [], state="idle"))
    assert clock.clock_of(_part("a", [100.0])).tolist() == [100.0]  # b idle
    assert clock.clock_of(_part("b", [20.0])).tolist() == [100.0]  # b back: holds again, never back
    assert clock.clock_of(_part("a", [200.0])).tolist() == [100.0]


def test_a_partition_trailing_by_more_than_max_skew_is_ignored() -> None:
    clock = PartitionClock(max_skew=60.0)
    clock.clock_of(_part("b", [0.0]))
    assert clock.clock_of(_part("a", [30.0, 59.0, 61.0, 200.0])).tolist() == [0.0, 0.0, 61.0, 200.0]


def test_clock_survives_pickling_with_its_detector() -> None:
    logic = _DetectorLogic(_Recorder("x"), PartitionClock(max_skew=5.0))
    logic.on_batch([_part("a", [1.0, 2.0]), _part("b", [0.5])])
    detector, clock = pickle.loads(pickle.dumps(logic.snapshot()))
    assert isinstance(detector, _Recorder) and detector.seen == [["ts"], ["ts"]]
    assert (clock.maxima, clock.clock, clock.max_skew) == ({"a": 2.0, "b": 0.5}, 0.5, 5.0)


def test_detectors_get_one_clocked_batch_per_partition_run() -> None:
    got: list[tuple[list[float], list[float]]] = []

    class Clocked(Detector):
        def process(self, batch: EventBatch) -> list[Output]:
            assert batch.clock is not None
            got.append((batch["ts"].tolist(), batch.clock.tolist()))
            return []

    logic = _DetectorLogic(Clocked(), PartitionClock())
    marker = _part("b", [], state="idle")
    logic.on_batch([_part("a", [5.0]), _part("a", [6.0]), marker, _part("b", [1.0]), _part("a", [7.0])])
    # a's two batches are one run (b unheard: no clock yet); b's idle marker is no run; b
    # then holds the clock at its own progress
    assert got == [([5.0, 6.0], [-math.inf, -math.inf]), ([1.0], [1.0]), ([7.0], [1.0])]


def test_markers_reach_the_shards_but_no_detector() -> None:
    flow = Dataflow("markers")
    parts = ("a",)
    data = EventBatch("demo", np.arange(3), {"k": np.array(["x", "y", "z"], dtype=object), "ts": np.ones(3)})
    data.progress = Progress("a", parts)
    stream = op.input("in", flow, TestingSource([data, _part("a", [], parts, "final")]))
    spec = DetectorSpec("record", "k", partial(_Recorder, "r"))
    out: list[Any] = []
    op.output("out", detector_step("record", stream, spec, shards=4, seed=0), TestingSink(out))
    run_main(flow)
    # a process call per shard that got events, none for the marker; but the marker reached
    # every shard: all 4 exist and flush (a Sample of position 0 each)
    shards = {key for key, _ in split_by_shard(data, "k", 4, 0)}
    assert all(isinstance(s, Sample) for s in out)
    assert sorted(s.position for s in out if isinstance(s, Sample)) == [0] * 4 + [1] * len(shards)
    assert len(shards) < 4


_STRINGS = st.sampled_from(
    ["", "a", "b", "ab", "Café", "😀", "x\ud800y", "\udfff", "a\x00b", "\x00", "z" * 40]
)
_COLUMN_VALUES = st.lists(
    st.one_of(_STRINGS, st.text(max_size=6), st.sampled_from([1, None, 2.5, b"y", ("t",)])), max_size=60
)


@settings(max_examples=300, deadline=None)
@given(
    values=st.one_of(_COLUMN_VALUES, st.lists(_STRINGS, max_size=300)), probe=st.sampled_from([1, 4, 8192])
)
def test_c_column_codec_equals_python(values: list[object], probe: int) -> None:
    """The C codec writes the bytes the Python one does (or leaves the column to it) and reads
    them back to the same strings."""
    col = np.empty(len(values), dtype=object)
    col[:] = values
    assert events._cjsonl is not None, "the C extension connectors._cjsonl was not built"
    with patch.object(events, "_PROBE", probe):
        fast = events._cjsonl.encode_strings(col, probe)
        with patch.object(events, "_cjsonl", None):
            want = events.encode_column(col)
            if fast is None:
                assert want[0] == "pickle"
                return
            assert fast == want
            py_back = events.decode_column(col.dtype, *want, len(values))
        back = events.decode_column(col.dtype, *fast, len(values))
    assert back.tolist() == values == py_back.tolist()
    assert [type(v) for v in back.tolist()] == [str] * len(values)


def test_c_text_decoder_refuses_a_wrong_count() -> None:
    assert events._cjsonl is not None
    for blob, n in ((b"a\x00b", 1), (b"a\x00b", 3), (b"a", 0)):
        with pytest.raises(ValueError, match="different number of strings"):
            events._cjsonl.decode_text(blob, np.empty(n, dtype=object))
    out = np.empty(2, dtype=object)
    events._cjsonl.decode_text(b"a\x00", out)
    assert out.tolist() == ["a", ""]


def test_a_snapshot_is_the_state_at_its_epoch_end_however_late_it_is_pickled() -> None:
    logic = _DetectorLogic(_Recorder("x"), PartitionClock())
    logic.on_batch([_part("a", [1.0])])
    taken = logic.snapshot()
    assert logic.pending is not None and logic.pending() is taken  # nothing pickled yet
    logic.on_batch([_part("a", [2.0])])  # changes the state: the snapshot is frozen first
    assert logic.pending is None
    detector, clock = pickle.loads(pickle.dumps(taken))
    assert detector.seen == [["ts"]] and clock.maxima == {"a": 1.0}
    later = logic.snapshot()
    first = pickle.dumps(later)  # pickled at once: the logic lets go of it
    assert logic.pending is None
    logic.on_batch([_part("a", [3.0])])
    assert pickle.dumps(later) == first
    detector, clock = pickle.loads(first)
    assert len(detector.seen) == 2 and clock.maxima == {"a": 2.0}


def test_a_snapshot_nobody_holds_is_never_pickled() -> None:
    """Without recovery Bytewax drops each snapshot unpickled: the state is not pickled either."""
    logic = _DetectorLogic(_Recorder("x"), PartitionClock())
    pickled: list[int] = []
    logic.dumps = lambda: pickled.append(1) or b""  # type: ignore[method-assign]
    logic.on_batch([_part("a", [1.0])])
    logic.snapshot()  # dropped at once
    logic.on_batch([_part("a", [2.0])])
    logic.on_eof()
    assert pickled == []


# -- steps aligned with the input partitions ----------------------------------------------------


class _ReadOnce(StatefulSourcePartition[EventBatch, bool]):
    """One batch of events of partition ``name``, then the end; notes the reading thread."""

    readers: ClassVar[dict[str, int]] = {}

    def __init__(self, name: str, done: bool) -> None:
        self.name, self.done = name, done

    def next_batch(self) -> list[EventBatch]:
        if self.done:
            raise StopIteration
        self.done = True
        _ReadOnce.readers[self.name] = threading.get_ident()
        keys = np.array([f"{self.name}-{i}" for i in range(20)], dtype=object)
        return [EventBatch("demo", np.arange(20), {"k": keys, "ts": np.arange(20.0)})]

    def snapshot(self) -> bool:
        return self.done


class _Parts(FixedPartitionedSource[EventBatch, bool]):
    def __init__(self, names: list[str]) -> None:
        self.names = names

    def list_parts(self) -> list[str]:
        return self.names

    def build_part(self, step_id: str, for_part: str, resume_state: bool | None) -> _ReadOnce:
        return _ReadOnce(for_part, bool(resume_state))


class _OnThread(Detector):
    """Notes, per partition it is given, the thread it ran on and the clock it was given."""

    ran: ClassVar[dict[str, set[int]]] = {}
    clocks: ClassVar[dict[str, list[float]]] = {}

    def process(self, batch: EventBatch) -> list[Output]:
        assert batch.progress is not None and batch.clock is not None
        part = batch.progress.partition
        _OnThread.ran.setdefault(part, set()).add(threading.get_ident())
        _OnThread.clocks.setdefault(part, []).extend(batch.clock.tolist())
        return [Sample("demo", 0.0, 1.0, part, len(batch), {})]


@pytest.mark.parametrize(("parts", "workers"), [(4, 2), (4, 1), (6, 3), (3, 2), (8, 4)])
def test_an_aligned_step_runs_each_partition_on_the_worker_that_reads_it(parts: int, workers: int) -> None:
    # Bytewax's own partition assignment and routing decide, on `workers` threads.
    names = [f"{i}-topic" for i in range(parts)]
    _ReadOnce.readers.clear()
    _OnThread.ran.clear()
    _OnThread.clocks.clear()
    flow = Dataflow("aligned")
    stream = op.input("in", flow, PartitionProgress(_Parts(names), "demo"))
    spec = DetectorSpec("record", "k", _OnThread, ("k", "ts"))
    out: list[Any] = []
    op.output("out", detector_step("record", stream, spec, 4, 0, aligned=True), TestingSink(out))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)  # type: ignore[no-untyped-call]
    assert {n: {t} for n, t in _ReadOnce.readers.items()} == _OnThread.ran
    assert len(set(_ReadOnce.readers.values())) == min(parts, workers)
    # every partition whole in one call, clocked by its own progress alone (no other
    # partition holds it back, though none of them has been heard of by this shard)
    assert sorted((s.stratum, s.position) for s in out) == [(n, 20) for n in sorted(names)]
    assert all(c == [float(i) for i in range(20)] for c in _OnThread.clocks.values())


def test_partition_shard_keys_name_the_partition_set() -> None:
    batch = EventBatch("demo", np.arange(2), {"k": np.array(["x", "y"], dtype=object), "ts": np.ones(2)})
    batch.progress = Progress("1-t", ("0-t", "1-t"))
    key, part = partition_shard(batch, ("ts",))
    assert key == partition_key("1-t", ("0-t", "1-t")) and key.startswith("1-t#1/2.")
    assert list(part.columns) == ["ts"] and part.progress == Progress("1-t", ("1-t",))
    assert batch.progress == Progress("1-t", ("0-t", "1-t"))  # the shared batch is untouched
    # another set of partitions is other state, never this one's
    assert partition_key("1-t", ("0-t", "1-t", "2-t")) != key
    marker = replace(batch, progress=Progress("1-t", ("0-t", "1-t"), "final"))
    assert partition_shard(marker, ("ts",))[1].progress == Progress("1-t", ("1-t",), "final")
    with pytest.raises(ValueError, match="no progress"):
        partition_shard(replace(batch, progress=None), None)


def test_an_aligned_step_splits_batches_without_progress_by_hash() -> None:
    flow = Dataflow("unaligned_fallback")
    data = _batch(200)
    stream = op.input("in", flow, TestingSource([data]))
    spec = DetectorSpec("record", "key", partial(_Recorder, "r"))
    out: list[Any] = []
    op.output("out", detector_step("record", stream, spec, shards=4, seed=0, aligned=True), TestingSink(out))
    run_main(flow)
    assert len([s for s in out if s.position == 1]) == len(split_by_shard(data, "key", 4, 0))
