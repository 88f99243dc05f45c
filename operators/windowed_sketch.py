"""Sketches per Bytewax window, for users who compose their own per-item keyed flows.

These operators fold each key's items of each window into a sketch with Bytewax 0.21.1's own
windowing (:func:`bytewax.operators.windowing.fold_window` with any ``Clock`` and
``Windower``: ``TumblingWindower``, ``SlidingWindower``, ``SessionWindower``) and emit the
sketch when the window closes, on ``WindowOut.down`` as ``(key, (window_id, sketch))``;
``WindowOut.meta`` gives each window's open/close times and ``WindowOut.late`` the late items.

- :func:`windowed_sketch`: any sketch, built by ``factory`` and fed by ``add``;
- :func:`windowed_distinct`: a :class:`~sketches.HyperLogLog` of an item field (distinct count);
- :func:`windowed_dgim`: a :class:`~sketches.DGIM` of a bit field (ones among the last ``N``
  bits of the window, e.g. of a session);
- :func:`windowed_decay`: a :class:`~sketches.DecayingAggregate` of a value field over
  event time (decayed mean at the window's latest event).

Caveats of Bytewax's windowing (see ``/work/shared/notes/bytewax.md``), and why sketchwatch's
own flows do not use these operators but the vectorised shard detectors of
:mod:`operators.runtime` (one state object per shard, event-time watermarks computed from
the data alone):

- ``EventClock``'s watermark is the largest timestamp seen minus ``wait_for_system_duration``
  *plus the system time elapsed since*: window closing depends on the wall clock, so a replay
  (a resume after a crash, a backfill run at full speed) can close windows at other points
  and put other items in ``late``. Results are deterministic only when every item arrives
  within the wait duration, in order enough, and the flow does not stall.
- After downtime longer than the wait duration, a resumed flow closes half-full windows at
  once and may later emit the *same window id a second time* with the rest of its items.
  Downstream sinks must tolerate (or merge) repeated ``(key, window_id)`` results.
- Watermarks are *per key*: a quiet key's windows close only when that key sees a later item,
  a notification fires (system time) or input ends. Once all of a key's windows have closed
  its clock state is dropped, so a later out-of-order item reopens a window already emitted
  instead of going to ``late``.
- Every item costs several Python calls (clock, windower, folder) and every (key, window)
  holds its own sketch, pickled whole at every snapshot: fine for thousands of items per
  second over modest key counts; the shard detectors handle millions of events per second
  by updating many entities' state with numpy per batch (see the notes' throughput table).

Session windows can merge when items arrive out of timestamp order (``ordered=False``, or
resumed state); the sketch of the later-opened session is then merged into the earlier one
(``merge``; for DGIM, :func:`dgim_concat`). With ``ordered=True`` (the default of
:func:`windowed_sketch` and :func:`windowed_dgim`), items are applied in timestamp order
once the watermark passes them, so sessions only grow at their end and never merge.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from bytewax.dataflow import operator
from bytewax.operators import KeyedStream
from bytewax.operators.windowing import Clock, EventClock, Windower, WindowOut, fold_window

from sketches import DGIM, DecayingAggregate, HyperLogLog

__all__ = ["dgim_concat", "windowed_decay", "windowed_dgim", "windowed_distinct", "windowed_sketch"]

X = TypeVar("X")


S = TypeVar("S")


def _merge_into(first: Any, second: Any) -> Any:
    """Default session-window merger: ``first.merge(second)``, returning ``first``."""
    first.merge(second)
    return first


class _Folder:
    """``fold_window`` folder calling ``add(sketch, item)`` and returning the sketch."""

    def __init__(self, add: Callable[[Any, Any], None]) -> None:
        self.add = add

    def __call__(self, sketch: Any, item: Any) -> Any:
        self.add(sketch, item)
        return sketch


@operator
def windowed_sketch(
    step_id: str,
    up: KeyedStream[X],
    clock: Clock[X, Any],
    windower: Windower[Any],
    factory: Callable[[], S],
    add: Callable[[S, X], None],
    merge: Callable[[S, S], S] | None = None,
    ordered: bool = True,
) -> WindowOut[X, S]:
    """Fold each key's items per window into a fresh sketch; emit it when the window closes.

    Parameters
    ----------
    step_id : str
        Unique step id (renaming it starts the state empty on resume).
    up : KeyedStream
        Keyed items ``(key, item)``.
    clock : Clock
        Bytewax clock, e.g. ``EventClock(ts_getter, wait_for_system_duration)`` with
        timezone-aware UTC datetimes.
    windower : Windower
        ``TumblingWindower``, ``SlidingWindower`` or ``SessionWindower``.
    factory : callable
        ``factory()`` returns an empty sketch (called once per key and window).
    add : callable
        ``add(sketch, item)`` folds one item in (mutating the sketch).
    merge : callable, optional
        ``merge(first, second) -> sketch`` for session windows that merge (``first`` opened
        earlier). Default: ``first.merge(second)``.
    ordered : bool, default True
        Apply items in timestamp order (needed by order-sensitive sketches such as DGIM);
        ``False`` applies them in arrival order, with less buffering.

    Returns
    -------
    WindowOut
        ``down``: ``(key, (window_id, sketch))`` once per closed window; ``late`` and
        ``meta`` as for Bytewax's windowing operators.

    Notes
    -----
    The sketch is the window state: Bytewax deep-copies it at every snapshot (sketches pickle
    as their versioned bytes). See the module docstring for Bytewax's windowing caveats.

    Examples
    --------
    >>> from datetime import datetime, timedelta, timezone
    >>> import bytewax.operators as op
    >>> from bytewax.dataflow import Dataflow
    >>> from bytewax.operators.windowing import EventClock, TumblingWindower
    >>> from bytewax.testing import TestingSink, TestingSource, run_main
    >>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> items = [("/a", f"ip{i % 7}", t0 + timedelta(seconds=i)) for i in range(60)]
    >>> flow = Dataflow("demo")
    >>> keyed = op.key_on("key", op.input("in", flow, TestingSource(items)), lambda x: x[0])
    >>> clock = EventClock(lambda x: x[2], wait_for_system_duration=timedelta(seconds=5))
    >>> out = windowed_sketch("hll", keyed, clock, TumblingWindower(timedelta(seconds=30), t0),
    ...                       lambda: HyperLogLog(p=12), lambda h, x: h.add(x[1]))
    >>> got: list = []
    >>> est = op.map("est", out.down, lambda kv: (kv[0], kv[1][0], kv[1][1].estimate()))
    >>> op.output("out", est, TestingSink(got))
    >>> run_main(flow)
    >>> [(k, w, round(e)) for k, w, e in got]
    [('/a', 0, 7), ('/a', 1, 7)]
    """
    return fold_window(
        "fold_window",
        up,
        clock,
        windower,
        factory,
        _Folder(add),
        _merge_into if merge is None else merge,
        ordered,
    )


def dgim_concat(first: DGIM, second: DGIM) -> DGIM:
    """Merge two DGIM windows of one key as ``first``'s bits followed by ``second``'s.

    Used when Bytewax merges two session windows (``second`` opened later). ``DGIM.merge``
    aligns sketches on one time axis (both ending at the same bit); concatenation instead
    shifts ``second``'s bucket timestamps past ``first``'s position, then merges, so the
    result counts ones among the last ``window`` bits of the concatenated stream with
    ``DGIM.merge``'s guarantee (``exact_bounds`` accounts for it).

    Returns
    -------
    DGIM
        ``first``, updated in place.

    Examples
    --------
    >>> a, b = DGIM(window=100, r=4), DGIM(window=100, r=4)
    >>> a.update([1] * 30); b.update([0] * 10 + [1] * 20)
    >>> lo, hi = dgim_concat(a, b).exact_bounds()
    >>> lo <= 50 <= hi, a.position
    (True, 60)
    """
    shift = first.position
    moved = second.copy()
    # DGIM keeps, per bucket size, the positions of its buckets' newest ones: shifting them
    # moves the stream (a private detail of sketches.dgim, kept in this one place).
    moved._levels = [[ts + shift for ts in level] for level in moved._levels]
    moved._position = shift + second.position
    first.merge(moved)  # first is behind: it is advanced with zeros to the joint position
    return first


class _AddBit:
    def __init__(self, bit_getter: Callable[[Any], bool | int]) -> None:
        self.bit_getter = bit_getter

    def __call__(self, sketch: DGIM, item: Any) -> None:
        sketch.add(1 if self.bit_getter(item) else 0)


class _AddDistinct:
    def __init__(self, item_getter: Callable[[Any], Any]) -> None:
        self.item_getter = item_getter

    def __call__(self, sketch: HyperLogLog, item: Any) -> None:
        sketch.add(self.item_getter(item))


class _AddDecay:
    def __init__(self, value_getter: Callable[[Any], float], ts_getter: Callable[[Any], datetime]) -> None:
        self.value_getter = value_getter
        self.ts_getter = ts_getter

    def __call__(self, sketch: DecayingAggregate, item: Any) -> None:
        sketch.add(float(self.value_getter(item)), self.ts_getter(item).timestamp())


class _Factory:
    """Picklable-by-value factory of an empty sketch (a class and its keyword arguments)."""

    def __init__(self, cls: type[Any], **kwargs: Any) -> None:
        self.cls = cls
        self.kwargs = kwargs

    def __call__(self) -> Any:
        return self.cls(**self.kwargs)


@operator
def windowed_distinct(
    step_id: str,
    up: KeyedStream[X],
    clock: Clock[X, Any],
    windower: Windower[Any],
    item_getter: Callable[[X], Any],
    p: int = 12,
    seed: int = 0,
    ordered: bool = False,
) -> WindowOut[X, HyperLogLog]:
    """Distinct count of ``item_getter(item)`` per key and window (a HyperLogLog).

    Parameters
    ----------
    step_id, up, clock, windower
        As for :func:`windowed_sketch`.
    item_getter : callable
        The item to count (str, bytes or int), e.g. the client id.
    p : int, default 12
        HyperLogLog precision: ``2**p`` registers, relative standard error about
        ``1.04 / sqrt(2**p)`` (``HyperLogLog.rse``).
    seed : int, default 0
        Hash seed (equal seeds are needed to merge sketches across windows or keys).
    ordered : bool, default False
        Distinct counts do not depend on order, so items are applied as they arrive.

    Returns
    -------
    WindowOut
        ``down``: ``(key, (window_id, HyperLogLog))``; use ``estimate()``,
        ``lower_bound()`` and ``upper_bound()``. Merged session windows take the union.
    """
    return windowed_sketch(
        "sketch",
        up,
        clock,
        windower,
        _Factory(HyperLogLog, p=p, seed=seed),
        _AddDistinct(item_getter),
        None,
        ordered,
    )


@operator
def windowed_dgim(
    step_id: str,
    up: KeyedStream[X],
    clock: Clock[X, Any],
    windower: Windower[Any],
    bit_getter: Callable[[X], bool | int],
    window: int,
    r: int = 2,
) -> WindowOut[X, DGIM]:
    """Ones among the last ``window`` bits of each key's window, in timestamp order (DGIM).

    Parameters
    ----------
    step_id, up, clock, windower
        As for :func:`windowed_sketch` (items are applied in timestamp order).
    bit_getter : callable
        The bit of an item (truthy = 1), e.g. "the request failed".
    window : int
        DGIM window ``N`` in bits (items).
    r : int, default 2
        Buckets per size; ``count()`` is within ``DGIM.error_bound`` (``1 / (r + 1)`` for
        ``r >= 3``) of the truth and ``exact_bounds()`` contains it.

    Returns
    -------
    WindowOut
        ``down``: ``(key, (window_id, DGIM))``; ``count()`` answers "how many of the last
        ``window`` items of this window had the bit set". Merged session windows are
        concatenated (:func:`dgim_concat`).
    """
    return windowed_sketch(
        "sketch",
        up,
        clock,
        windower,
        _Factory(DGIM, window=window, r=r),
        _AddBit(bit_getter),
        dgim_concat,
        True,
    )


@operator
def windowed_decay(
    step_id: str,
    up: KeyedStream[X],
    clock: EventClock[X],
    windower: Windower[Any],
    value_getter: Callable[[X], float],
    half_life: float,
) -> WindowOut[X, DecayingAggregate]:
    """Exponentially decayed mean (and sum, count, variance) of a value per key and window.

    Parameters
    ----------
    step_id, up, windower
        As for :func:`windowed_sketch`.
    clock : EventClock
        Event-time clock; its ``ts_getter`` also gives the decay's event times.
    value_getter : callable
        The value of an item.
    half_life : float
        Seconds of event time for a weight to halve.

    Returns
    -------
    WindowOut
        ``down``: ``(key, (window_id, DecayingAggregate))``; ``mean()`` is the decayed mean
        at the window's latest event (weights ``exp(-ln2 (T - t) / half_life)``), exact up
        to rounding; ``value(at_ts=...)`` queries a later time, e.g. the window's close.
        Merged session windows combine exactly (``DecayingAggregate.merge``).
    """
    return windowed_sketch(
        "sketch",
        up,
        clock,
        windower,
        _Factory(DecayingAggregate, half_life=half_life),
        _AddDecay(value_getter, clock.ts_getter),
        None,
        False,
    )
