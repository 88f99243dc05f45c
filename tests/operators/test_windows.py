from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.windows import NEVER, Ewma, Sliding, Tumbling, WindowClock, Windows, group_rows

T0 = 1767225600.0
GRIDS = [
    Tumbling(60.0),
    Tumbling(30.0, offset=7.5),
    Sliding(30.0, 5.0),
    Sliding(300.0, 60.0),
    Sliding(10.0, 4.0),
]
TS = st.lists(st.floats(-50.0, 400.0, allow_nan=False).map(lambda x: round(x, 2)), min_size=1, max_size=60)


def brute_windows(w: Windows, t: float) -> list[int]:
    k0 = int(np.floor((t - w.offset) / w.step))
    return [k for k in range(k0 - w.per_event - 2, k0 + 3) if w.start(k) <= t < w.end(k)]


@pytest.mark.parametrize("w", GRIDS, ids=repr)
@given(ts=TS)
@settings(max_examples=40, deadline=None)
def test_membership_matches_definition(w: Windows, ts: list[float]) -> None:
    arr = np.asarray(ts) + T0
    event, window = w.windows_of(arr)
    got = [[int(k) for k in window[event == i]] for i in range(len(arr))]
    assert got == [brute_windows(w, t) for t in arr]
    assert all(len(g) == w.panes for g in got) if w.panes else all(1 <= len(g) <= w.per_event for g in got)
    assert w.latest(arr).tolist() == [g[-1] for g in got]
    assert w.earliest(arr).tolist() == [g[0] for g in got]


@pytest.mark.parametrize("w", GRIDS, ids=repr)
@given(wm=st.floats(-100.0, 500.0, allow_nan=False))
@settings(max_examples=40, deadline=None)
def test_closed_upto_is_the_last_window_ending_by_the_watermark(w: Windows, wm: float) -> None:
    k = w.closed_upto(wm)
    assert w.end(k) <= wm < w.end(k + 1)


def test_bounds_and_never() -> None:
    assert Tumbling(60.0).bounds(-1) == (-60.0, 0.0)
    assert Sliding(30.0, 5.0).bounds(3) == (15.0, 45.0)
    assert Sliding(10.0, 4.0).panes is None and Sliding(10.0, 4.0).per_event == 3
    assert Tumbling(60.0).closed_upto(-np.inf) == NEVER
    with pytest.raises(ValueError, match="step"):
        Sliding(5.0, 10.0)


def test_clock_late_events_and_closing() -> None:
    clock = WindowClock(Sliding(30.0, 10.0), lateness=5.0)  # window k = [10k, 10k + 30)
    plan = clock.plan(np.array([1.0, 12.0, 44.0, 9.0, 38.0, 100.0]))
    # watermarks before arrival: -inf, -4, 7, 39, 39, 39 -> last closed window ids:
    assert plan.closed_before.tolist() == [NEVER, -4, -3, 0, 0, 0]
    # 9 s lies in windows -2, -1, 0: all closed when it arrives (watermark 39)
    assert plan.late.tolist() == [False, False, False, True, False, False]
    pairs = list(zip(plan.event.tolist(), plan.window.tolist(), strict=True))
    assert [k for e, k in pairs if e == 0] == [-2, -1, 0]
    assert [k for e, k in pairs if e == 3] == []
    assert [k for e, k in pairs if e == 4] == [1, 2, 3]
    assert plan.segments() == [(0, 1, NEVER), (1, 2, -4), (2, 3, -3), (3, 6, 0)]
    assert plan.closed_after == clock.closed == 6  # watermark 95: windows ending by 95
    later = clock.plan(np.array([50.0, 70.0, 99.0]))
    assert later.late.tolist() == [True, False, False]
    assert later.window[later.event == 1].tolist() == [7]  # windows 5 and 6 closed already


def test_event_is_late_only_when_all_its_windows_are_closed() -> None:
    clock = WindowClock(Sliding(30.0, 10.0), lateness=0.0)
    plan = clock.plan(np.array([40.0, 25.0, 5.0]))  # watermark 40 closes windows ending <= 40
    assert plan.late.tolist() == [False, False, True]
    assert plan.window[plan.event == 1].tolist() == [2]  # only [20, 50) is still open


@given(ts=TS, cuts=st.lists(st.integers(0, 60), max_size=6))
@settings(max_examples=60, deadline=None)
def test_plan_is_batch_boundary_invariant(ts: list[float], cuts: list[int]) -> None:
    arr = np.asarray(ts) + T0
    whole = WindowClock(Sliding(30.0, 5.0), lateness=5.0).plan(arr)
    clock = WindowClock(Sliding(30.0, 5.0), lateness=5.0)
    bounds = sorted({0, len(arr), *[min(c, len(arr)) for c in cuts]})
    late, closed, pairs = [], [], []
    for a, b in itertools.pairwise(bounds):
        clock = pickle.loads(pickle.dumps(clock))
        plan = clock.plan(arr[a:b])
        late += plan.late.tolist()
        closed += plan.closed_before.tolist()
        pairs += list(zip((plan.event + a).tolist(), plan.window.tolist(), strict=True))
    assert late == whole.late.tolist()
    assert closed == whole.closed_before.tolist()
    assert pairs == list(zip(whole.event.tolist(), whole.window.tolist(), strict=True))
    assert clock.closed == whole.closed_after
    # closed_before is the running watermark, and late means every window is closed
    assert np.all(np.diff(whole.closed_before) >= 0)
    assert (whole.late == (whole.latest <= whole.closed_before)).all()


def test_ewma_closed_form_warmup_and_reset() -> None:
    ewma = Ewma(Tumbling(60.0), alpha=0.1, idle_ttl=600.0)
    key = np.array([42], dtype=np.uint64)
    first = ewma.close(key, 10, np.array([10.0]))
    assert (first.baseline.tolist(), first.history.tolist()) == ([0.0], [0])
    assert ewma.close(key, 11, np.array([20.0])).baseline[0] == pytest.approx(10.0)  # the first value
    # unnormalised sum 0.9 * 1 + 0.1 * 20 = 2.9; empty windows 12, 13, 14 count as 0
    step = ewma.close(key, 15, np.array([0.0]))
    assert step.baseline[0] == pytest.approx(2.9 * 0.9**3 / (1 - 0.9**5))
    xs = [10.0, 20.0, 0.0, 0.0, 0.0]
    assert step.baseline[0] == pytest.approx(
        sum(0.1 * 0.9 ** (4 - i) * x for i, x in enumerate(xs)) / (1 - 0.9**5)
    )
    assert step.history.tolist() == [5]
    assert Ewma.decay(np.array([1.0]), 2, 0.5).tolist() == [0.25]
    # idle for >= 600 s between windows: starts afresh
    assert ewma.peek(key, 15 + 11).history.tolist() == [0]
    assert ewma.peek(key, 15 + 10).history.tolist() == [15]


@given(
    windows=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40), st.integers(0, 50)), max_size=40),
    every=st.integers(1, 5),
)
@settings(max_examples=40, deadline=None)
def test_ewma_eviction_never_changes_results(windows: list[tuple[int, int, int]], every: int) -> None:
    a = Ewma(Tumbling(60.0), alpha=0.2, idle_ttl=300.0)
    b = Ewma(Tumbling(60.0), alpha=0.2, idle_ttl=300.0)
    seen = set()
    for i, w in enumerate(sorted({w for _, w, _ in windows})):
        ks = sorted({k for k, ww, _ in windows if ww == w})
        keys = np.array(ks, dtype=np.uint64)
        vals = np.array([float(sum(v for k2, ww, v in windows if ww == w and k2 == k)) for k in ks])
        ra, rb = a.close(keys, w, vals), b.close(keys, w, vals)
        assert ra.baseline.tolist() == rb.baseline.tolist() and ra.history.tolist() == rb.history.tolist()
        seen.add(w)
        if i % every == 0:
            b.evict(float(Tumbling(60.0).end(w)))  # watermark at the end of the closed window


@given(ids=st.lists(st.sampled_from([-(2**40), -3, 0, 1, 7, 70_000, 2**40]), max_size=40))
@settings(max_examples=60, deadline=None)
def test_group_rows_lists_each_id_with_its_rows_in_order(ids: list[int]) -> None:
    arr = np.array(ids, dtype=np.int64)
    got = [(k, rows.tolist()) for k, rows in group_rows(arr)]
    assert got == [(k, [i for i, x in enumerate(ids) if x == k]) for k in sorted(set(ids))]
