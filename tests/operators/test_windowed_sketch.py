"""Tests for operators.windowed_sketch: sketches per Bytewax window, compared with exact answers."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import bytewax.operators as op
import numpy as np
import pytest
from bytewax.dataflow import Dataflow
from bytewax.operators import KeyedStream
from bytewax.operators.windowing import (
    EventClock,
    SessionWindower,
    SlidingWindower,
    TumblingWindower,
    WindowMetadata,
    WindowOut,
)
from bytewax.testing import TestingSink, TestingSource, run_main

from operators.windowed_sketch import (
    dgim_concat,
    windowed_decay,
    windowed_dgim,
    windowed_distinct,
    windowed_sketch,
)
from sketches import DGIM, HyperLogLog

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
WAIT = timedelta(seconds=5)


class Item(NamedTuple):
    key: str
    value: Any
    ts: datetime


def get_ts(item: Item) -> datetime:
    return item.ts


def get_key(item: Item) -> str:
    return item.key


def fixed_now() -> datetime:
    # A frozen system clock: the watermark depends on event time only, so the tests are exact.
    return T0


def clock(wait: timedelta = WAIT) -> EventClock[Item]:
    return EventClock(get_ts, wait_for_system_duration=wait, now_getter=fixed_now)


class Result(NamedTuple):
    down: dict[tuple[str, int], Any]
    meta: dict[tuple[str, int], WindowMetadata]
    late: list[Item]


def run_windowed(items: list[Item], build: Callable[[KeyedStream[Item]], WindowOut[Item, Any]]) -> Result:
    down: list[tuple[str, tuple[int, Any]]] = []
    meta: list[tuple[str, tuple[int, WindowMetadata]]] = []
    late: list[tuple[str, tuple[int, Item]]] = []
    flow = Dataflow("windowed_sketch_test")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(items, batch_size=500)), get_key)
    out = build(keyed)
    op.output("down", out.down, TestingSink(down))
    op.output("meta", out.meta, TestingSink(meta))
    op.output("late", out.late, TestingSink(late))
    run_main(flow)  # type: ignore[no-untyped-call]
    result = Result({}, {(k, w): m for k, (w, m) in meta}, [x for _, (_, x) in late])
    for k, (w, sketch) in down:
        assert (k, w) not in result.down  # one result per key and window
        result.down[(k, w)] = sketch
    return result


def is_late(items: list[Item], wait: timedelta = WAIT) -> list[bool]:
    """Bytewax's rule with a frozen system clock: late iff ts < (key's max ts so far) - wait."""
    top: dict[str, datetime] = {}
    out = []
    for it in items:
        prev = top.get(it.key)
        out.append(prev is not None and it.ts < prev - wait)
        top[it.key] = it.ts if prev is None else max(prev, it.ts)
    return out


def secs(x: float) -> timedelta:
    return timedelta(seconds=x)


# ---------------------------------------------------------------- tumbling + HyperLogLog


def test_tumbling_distinct_within_three_rse() -> None:
    rng = np.random.default_rng(1)
    items: list[Item] = []
    truth: dict[tuple[str, int], set[str]] = defaultdict(set)
    for w in range(4):
        for key in ("/a", "/b"):
            pool = int(rng.integers(100, 3000))
            ids = rng.integers(0, pool, 2 * pool)
            offs = np.sort(rng.uniform(0.0, 30.0, len(ids)))
            items += [
                Item(key, f"{key}-ip{i}", T0 + secs(30 * w + o))
                for i, o in zip(ids.tolist(), offs, strict=True)
            ]
    items.sort(key=lambda it: it.ts)
    # stragglers: 10 s behind (late) and 3 s behind (within the 5 s wait), interleaved
    extra = [(j, Item("/a", f"late{j}", items[j].ts - secs(10))) for j in range(3000, 9000, 500)]
    extra += [(j, Item("/b", f"ok{j}", items[j].ts - secs(3))) for j in range(3001, 9000, 500)]
    for j, it in sorted(extra, key=lambda x: x[0], reverse=True):
        items.insert(j, it)
    late_flags = is_late(items)
    for it, late in zip(items, late_flags, strict=True):
        if not late:
            truth[(it.key, int((it.ts - T0).total_seconds() // 30))].add(it.value)

    res = run_windowed(
        items,
        lambda up: windowed_distinct(
            "distinct", up, clock(), TumblingWindower(length=secs(30), align_to=T0), lambda it: it.value, p=12
        ),
    )
    assert set(res.down) == set(truth) and len(truth) == 8
    assert sorted(res.late) == sorted(it for it, late in zip(items, late_flags, strict=True) if late)
    assert res.late  # the 10 s stragglers
    for kw, hll in res.down.items():
        assert isinstance(hll, HyperLogLog)
        exact = len(truth[kw])
        assert abs(hll.estimate() - exact) <= 3 * hll.rse * exact, (kw, hll.estimate(), exact)
        m = res.meta[kw]
        assert m.open_time == T0 + secs(30 * kw[1]) and m.close_time == m.open_time + secs(30)


# ---------------------------------------------------------------- sliding + DecayingAggregate


def test_sliding_decay_exact() -> None:
    rng = np.random.default_rng(2)
    n = 3000
    offs = np.sort(rng.uniform(0.0, 300.0, n)) + rng.uniform(0.0, 2.0, n)  # jitter < wait
    items = [
        Item(f"brand{b}", float(v), T0 + secs(float(o)))
        for b, v, o in zip(rng.integers(0, 3, n).tolist(), rng.normal(0.1, 0.35, n), offs, strict=True)
    ]
    assert not any(is_late(items))
    half_life = 30.0
    res = run_windowed(
        items,
        lambda up: windowed_decay(
            "decay",
            up,
            clock(),
            SlidingWindower(length=secs(60), offset=secs(20), align_to=T0),
            lambda it: it.value,
            half_life=half_life,
        ),
    )
    rate = math.log(2.0) / half_life
    expected = {
        (it.key, w)
        for it in items
        for w in range(
            int(((it.ts - T0).total_seconds() - 60) // 20) + 1, int((it.ts - T0).total_seconds() // 20) + 1
        )
    }
    assert set(res.down) == expected
    for (key, w), agg in res.down.items():
        m = res.meta[(key, w)]
        assert m.close_time - m.open_time == secs(60) and m.open_time == T0 + secs(20 * w)
        sel = [it for it in items if it.key == key and m.open_time <= it.ts < m.close_time]
        t = np.array([it.ts.timestamp() for it in sel])
        v = np.array([it.value for it in sel])
        wts = np.exp(-rate * (t.max() - t))
        assert agg.events == len(sel)
        assert math.isclose(agg.count(), wts.sum(), rel_tol=1e-9)
        assert math.isclose(agg.mean(), (wts * v).sum() / wts.sum(), rel_tol=1e-9, abs_tol=1e-12)
        at = m.close_time.timestamp()
        assert math.isclose(agg.count(at_ts=at), np.exp(-rate * (at - t)).sum(), rel_tol=1e-9)


# ---------------------------------------------------------------- session + DGIM


def test_session_dgim_within_bound() -> None:
    rng = np.random.default_rng(3)
    items: list[Item] = []
    sessions: list[tuple[str, list[tuple[float, int]]]] = []
    start = 0.0
    for s in range(6):
        key = f"dev{s % 2}"
        length = int(rng.integers(40, 400))
        offs = start + np.cumsum(rng.uniform(0.1, 1.0, length))
        p = 0.2 + 0.6 * rng.random()
        bits = (rng.random(length) < p).astype(int)
        sessions.append((key, list(zip(offs.tolist(), bits.tolist(), strict=True))))
        # small disorder within the wait; the operator applies items in timestamp order
        jitter = offs + rng.uniform(0.0, 2.0, length) * (rng.random(length) < 0.1)
        items += [
            Item(key, b, T0 + secs(float(o))) for o, b in zip(jitter.tolist(), bits.tolist(), strict=True)
        ]
        start = float(offs[-1]) + (0.0 if s % 2 == 0 else 100.0)  # a gap > 30 s between sessions per key
    items.sort(key=lambda it: it.ts + secs(rng.uniform(0.0, 1.5)))  # arrival order: a little disorder
    assert not any(is_late(items))
    res = run_windowed(
        items,
        lambda up: windowed_dgim(
            "dgim", up, clock(), SessionWindower(gap=secs(30)), lambda it: it.value, window=64, r=3
        ),
    )
    assert len(res.down) == len(sessions)
    for kw, dgim in res.down.items():
        m = res.meta[kw]
        in_order = sorted((it for it in items if it.key == kw[0]), key=lambda it: it.ts)
        in_session = [it.value for it in in_order if m.open_time <= it.ts <= m.close_time]
        truth = int(sum(in_session[-64:]))
        assert isinstance(dgim, DGIM) and dgim.position == len(in_session) and dgim.merge_depth == 0
        assert abs(dgim.count() - truth) <= dgim.error_bound * truth
        lo, hi = dgim.exact_bounds()
        assert lo <= truth <= hi


# ---------------------------------------------------------------- session merges (out of order)


def bridged_items() -> list[Item]:
    """Two sessions of one key, then an out-of-order item that bridges them."""
    first = [Item("k", i, T0 + secs(i)) for i in range(0, 11)]
    second = [Item("k", i, T0 + secs(i)) for i in range(30, 41)]
    return [*first, *second, Item("k", 20, T0 + secs(20))]


def test_session_merge_distinct_union() -> None:
    items = bridged_items()
    res = run_windowed(
        items,
        lambda up: windowed_distinct(
            "distinct",
            up,
            clock(secs(100)),
            SessionWindower(gap=secs(12)),
            lambda it: it.value,
            ordered=False,
        ),
    )
    assert len(res.down) == 1
    ((kw, hll),) = res.down.items()
    assert round(hll.estimate()) == len(items)  # small sets are counted exactly (sparse HLL)
    assert res.meta[kw].merged_ids  # the two sessions were merged


def test_session_merge_dgim_concat() -> None:
    items = bridged_items()
    res = run_windowed(
        items,
        lambda up: windowed_sketch(
            "dgim",
            up,
            clock(secs(100)),
            SessionWindower(gap=secs(12)),
            lambda: DGIM(window=16, r=2),
            lambda d, it: d.add(it.value % 2),
            merge=dgim_concat,
            ordered=False,
        ),
    )
    ((kw, dgim),) = res.down.items()
    assert res.meta[kw].merged_ids and dgim.position == len(items)
    # the earlier-opened session's items (arrival order, incl. the bridge), then the later one's
    stream = [it.value % 2 for it in [*items[:11], items[-1], *items[11:22]]]
    lo, hi = dgim.exact_bounds()
    assert lo <= sum(stream[-16:]) <= hi


@pytest.mark.parametrize("seed", range(20))
def test_dgim_concat_bounds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a_bits = (rng.random(int(rng.integers(1, 300))) < rng.random()).astype(int)
    b_bits = (rng.random(int(rng.integers(1, 300))) < rng.random()).astype(int)
    window = int(rng.integers(1, 400))
    a, b = DGIM(window, r=3), DGIM(window, r=3)
    a.update(a_bits)
    b.update(b_bits)
    out = dgim_concat(a, b)
    both = np.concatenate([a_bits, b_bits])
    truth = int(both[-window:].sum())
    lo, hi = out.exact_bounds()
    assert out.position == len(both) and lo <= truth <= hi
    out._check()
