"""Deterministic event-time windows for detectors: window grids, a watermark clock, EWMA baselines.

No wall clock anywhere: everything is a function of the events' ``ts`` in input order, so the
same input always closes the same windows with the same contents, wherever batches are cut.

Semantics (the contract of ``/tmp/detectors.md``, section "Event-time windows"):

* **Windows.** Window ``k`` (an ``int``) is ``[start(k), end(k))`` with
  ``start(k) = offset + k * step``. :class:`Tumbling` has ``step = length`` and
  ``end(k) = start(k + 1)`` (the windows partition time). :class:`Sliding` has
  ``end(k) = start(k + P)`` when ``length = P * step`` (``P`` panes per window), else
  ``start(k) + length``; an event lies in every window with ``start <= ts < end``
  (``length / step`` of them when that is an integer).
* **Watermark.** A shard's watermark after ``i`` events is its clock minus ``lateness``: the
  clock is ``max(ts[:i])`` (``-inf`` before the first event), carried across batches with
  ``np.maximum.accumulate``; with several input partitions, the least of the partitions'
  (``operators.runtime.PartitionClock``). Event ``i`` *arrives* under the watermark of the
  events before it.
* **Closing.** A window is closed as soon as the watermark reaches its end (``end <= watermark``),
  i.e. logically right after the event that lifted the watermark there, even in the middle of a
  batch. An event is added only to its windows that are still open when it arrives; an event
  whose windows are all closed is **late**: counted and ignored. Windows close in window order.
  :meth:`Plan.segments` cuts a batch where the set of closed windows changes, so a detector that
  closes windows between segments behaves exactly as one that saw the events one at a time.
* **Baselines.** :class:`Ewma` keeps, per entity, an exponentially weighted moving average of the
  entity's past window values, updated when each window closes, in window order; windows of that
  entity without events count as 0 (closed form: ``g`` empty windows multiply the baseline by
  ``(1 - alpha) ** g``).

>>> w = Tumbling(60.0)
>>> w.bounds(2)
(120.0, 180.0)
>>> clock = WindowClock(w, lateness=5.0)
>>> plan = clock.plan(np.array([10.0, 62.0, 50.0, 130.0, 54.0]))
>>> plan.window.tolist(), plan.late.tolist()  # the event at 54 s arrives after window 0 closed
([0, 1, 0, 2], [False, False, False, False, True])
>>> plan.closed_after, clock.watermark
(1, 125.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from operators.entities import EntityTable

__all__ = [
    "NEVER",
    "Ewma",
    "EwmaStep",
    "Plan",
    "Sliding",
    "Tumbling",
    "WindowClock",
    "Windows",
    "group_rows",
]

NEVER: Final = -(2**62)
"""Window id meaning "no window is closed yet" (below every real window id)."""

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]


class Windows:
    """A grid of event-time windows: window ``k`` is ``[start(k), end(k))``; see the module docstring.

    Parameters
    ----------
    length : float
        Window length in seconds (> 0).
    step : float
        Distance between consecutive window starts (> 0, at most ``length``).
    offset : float, default 0.0
        Start of window 0.
    """

    def __init__(self, length: float, step: float, offset: float = 0.0) -> None:
        if not (math.isfinite(length) and math.isfinite(step) and math.isfinite(offset)):
            raise ValueError(f"window length, step and offset must be finite, got {length}, {step}, {offset}")
        if not 0 < step <= length:
            raise ValueError(f"window step must be in (0, length={length}], got {step}")
        self.length = float(length)
        self.step = float(step)
        self.offset = float(offset)
        ratio = self.length / self.step
        self.panes: int | None = round(ratio) if abs(ratio - round(ratio)) < 1e-9 else None
        """Windows per event (``length / step``) when it is an integer, else ``None``."""
        self.per_event = math.ceil(ratio - 1e-9)
        """Most windows an event can lie in."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length}, step={self.step}, offset={self.offset})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and repr(other) == repr(self)

    def __hash__(self) -> int:
        return hash(repr(self))

    def start(self, ids: Any) -> Any:
        """Start of window(s) ``ids`` (vectorised)."""
        return self.offset + np.asarray(ids, dtype=np.int64) * self.step

    def end(self, ids: Any) -> Any:
        """End of window(s) ``ids`` (exclusive; vectorised)."""
        ids = np.asarray(ids, dtype=np.int64)
        return self.start(ids + self.panes) if self.panes is not None else self.start(ids) + self.length

    def bounds(self, window_id: int) -> tuple[float, float]:
        """``(start, end)`` of one window as Python floats."""
        return float(self.start(window_id)), float(self.end(window_id))

    def latest(self, ts: F64) -> I64:
        """Id of the latest window holding each ``ts``: the largest ``k`` with ``start(k) <= ts``."""
        ts = np.asarray(ts, dtype=np.float64)
        k = np.floor((ts - self.offset) / self.step).astype(np.int64)
        k -= self.start(k) > ts  # float rounding fix-ups: the definition is start(k) <= ts
        k += self.start(k + 1) <= ts
        return k

    def earliest(self, ts: F64) -> I64:
        """Id of the earliest window holding each ``ts``: the smallest ``k`` with ``end(k) > ts``."""
        ts = np.asarray(ts, dtype=np.float64)
        return self._earliest(ts, self.latest(ts))

    def _earliest(self, ts: F64, latest: I64) -> I64:
        k = latest - self.per_event + 1
        for _ in range(2):
            k += self.end(k) <= ts
            k -= self.end(k - 1) > ts
        return k

    def closed_upto(self, watermark: Any) -> Any:
        """Largest window id whose end is ``<= watermark`` (:data:`NEVER` for ``-inf``)."""
        wm = np.asarray(watermark, dtype=np.float64)
        finite = np.isfinite(wm)
        safe = np.where(finite, wm, self.offset)
        k = self.latest(safe - self.length) if self.panes is None else self.latest(safe) - self.panes
        k = np.where(finite, k, NEVER).astype(np.int64)
        k += np.where(finite, self.end(k + 1) <= wm, False)
        k -= np.where(finite, self.end(k) > wm, False)
        return int(k) if k.ndim == 0 else k

    def windows_of(self, ts: F64, latest: I64 | None = None) -> tuple[NDArray[np.intp], I64]:
        """All ``(event_index, window_id)`` pairs with ``start <= ts < end``, by event then window
        (``latest``: ``self.latest(ts)`` if already known)."""
        ts = np.asarray(ts, dtype=np.float64)
        hi = self.latest(ts) if latest is None else latest
        lo = self._earliest(ts, hi)
        counts = np.maximum(hi - lo + 1, 0)
        event = np.repeat(np.arange(len(ts), dtype=np.intp), counts)
        first = np.cumsum(counts) - counts
        window = lo[event] + (np.arange(len(event), dtype=np.int64) - first[event])
        return event, window


class Tumbling(Windows):
    """Back-to-back windows ``[offset + k * length, offset + (k + 1) * length)``.

    >>> Tumbling(30.0).windows_of(np.array([0.0, 29.9, 30.0]))[1].tolist()
    [0, 0, 1]
    """

    def __init__(self, length: float, offset: float = 0.0) -> None:
        super().__init__(length, length, offset)


class Sliding(Windows):
    """Overlapping windows ``[offset + k * step, offset + k * step + length)``.

    >>> event, window = Sliding(30.0, 10.0).windows_of(np.array([25.0]))
    >>> window.tolist()  # the windows starting at 0, 10 and 20
    [0, 1, 2]
    """

    def __init__(self, length: float, step: float, offset: float = 0.0) -> None:
        super().__init__(length, step, offset)


def group_rows(ids: I64) -> list[tuple[int, NDArray[np.intp]]]:
    """Each distinct id, ascending, with the indices holding it in input order.

    >>> [(k, rows.tolist()) for k, rows in group_rows(np.array([5, 3, 5, 4]))]
    [(3, [1]), (4, [3]), (5, [0, 2])]
    """
    if len(ids) == 0:
        return []
    low, high = int(ids.min()), int(ids.max())
    if low == high:
        return [(low, np.arange(len(ids), dtype=np.intp))]
    # A stable sort of 16-bit ints is a linear radix sort; window ids rarely span more.
    narrow = (ids - low).astype(np.uint16) if high - low < 1 << 16 else ids
    order = np.argsort(narrow, kind="stable")
    ordered = ids[order]
    cuts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    firsts = ordered[np.concatenate(([0], cuts))].tolist()
    return list(zip(firsts, np.split(order, cuts), strict=True))


@dataclass
class Plan:
    """How one batch meets the windows: which events go to which open windows, what closes when.

    Attributes
    ----------
    windows : Windows
        The window grid.
    ts : numpy float64 array
        The batch's timestamps, in input order.
    latest : numpy int64 array
        Per event, its latest window (for pane-based detectors: the pane it falls in).
    late : numpy bool array
        Per event, whether all its windows were closed at its arrival.
    closed_before : numpy int64 array
        Per event, the largest window id closed when it arrived (non-decreasing).
    closed_after : int
        Largest window id closed once the whole batch is in.
    """

    windows: Windows
    ts: F64
    latest: I64
    late: NDArray[np.bool_]
    closed_before: I64
    closed_after: int

    @cached_property
    def _pairs(self) -> tuple[NDArray[np.intp], I64]:
        # Built on first use: pane detectors need only ``latest``.
        event, window = self.windows.windows_of(self.ts, self.latest)
        keep = window > self.closed_before[event]
        return event[keep], window[keep]

    @property
    def event(self) -> NDArray[np.intp]:
        """Event index of the on-time ``(event, window)`` pairs (windows still open when the
        event arrived), sorted by event then window."""
        return self._pairs[0]

    @property
    def window(self) -> I64:
        """Window id of the on-time ``(event, window)`` pairs (see :attr:`event`)."""
        return self._pairs[1]

    def segments(self) -> list[tuple[int, int, int]]:
        """``(start, stop, closed)`` event ranges over which the set of closed windows is constant:
        close every window ``<= closed`` first, then add events ``start:stop``."""
        n = len(self.late)
        if n == 0:
            return []
        cuts = np.flatnonzero(np.diff(self.closed_before)) + 1
        starts = np.concatenate(([0], cuts)).tolist()
        stops = [*cuts.tolist(), n]
        return [(a, b, int(self.closed_before[a])) for a, b in zip(starts, stops, strict=True)]

    def pair_range(self, start: int, stop: int) -> slice:
        """The slice of :attr:`event` / :attr:`window` holding events ``start:stop``."""
        lo, hi = np.searchsorted(self.event, [start, stop])
        return slice(int(lo), int(hi))


class WindowClock:
    """A shard's event-time watermark ``max(ts seen) - lateness``, carried across batches (with
    several input partitions: the runtime's partition clock minus ``lateness``).

    Parameters
    ----------
    windows : Windows
        The window grid the clock closes.
    lateness : float, default 5.0
        Seconds the watermark trails the largest timestamp seen.
    """

    def __init__(self, windows: Windows, lateness: float = 5.0) -> None:
        if not (math.isfinite(lateness) and lateness >= 0):
            raise ValueError(f"lateness must be a finite number of seconds >= 0, got {lateness!r}")
        self.windows = windows
        self.lateness = float(lateness)
        self.max_ts = -math.inf

    @property
    def watermark(self) -> float:
        """Current watermark (``-inf`` before any event)."""
        return self.max_ts - self.lateness

    @property
    def closed(self) -> int:
        """Largest window id closed under the current watermark."""
        return int(self.windows.closed_upto(self.watermark))

    def arrival_watermarks(self, ts: F64, clock: F64 | None = None) -> F64:
        """Watermark each event arrives under (the events before it, this batch and earlier ones);
        advances the clock past the batch. ``clock``: the shard's clock after each event (the
        runtime's partition clock, see ``operators.runtime.event_clock``) instead of the running
        maximum of ``ts``; ``max_ts`` then holds that clock."""
        ts = np.asarray(ts, dtype=np.float64)
        if len(ts) == 0:
            return np.zeros(0)
        after = ts if clock is None else np.asarray(clock, dtype=np.float64)
        running = np.maximum.accumulate(np.concatenate(([self.max_ts], after)))
        self.max_ts = float(running[-1])
        return running[:-1] - self.lateness

    def plan(self, ts: F64, clock: F64 | None = None) -> Plan:
        """Assign a batch's events (``ts`` in input order) to open windows; advance the clock
        (``clock``: see :meth:`arrival_watermarks`)."""
        ts = np.asarray(ts, dtype=np.float64)
        arrivals = self.arrival_watermarks(ts, clock)
        closed = np.asarray(self.windows.closed_upto(arrivals), dtype=np.int64).reshape(-1)
        latest = self.windows.latest(ts)
        return Plan(self.windows, ts, latest, latest <= closed, closed, self.closed)

    def __getstate__(self) -> dict[str, Any]:
        return {"windows": self.windows, "lateness": self.lateness, "max_ts": self.max_ts}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


@dataclass
class EwmaStep:
    """What :meth:`Ewma.close` found for each key of a closing window."""

    baseline: F64
    """The EWMA of the key's earlier windows, decayed over its empty windows (0 for a new key)."""
    history: I64
    """Windows of the key before this one, counted from the window of its first event."""


class Ewma:
    """Per-entity EWMA of past window values, updated at window close in window order.

    Bias-corrected (zero-initialised) EWMA over the entity's windows since the window of its first
    event, empty windows counting as 0. With ``x_0 .. x_{n-1}`` the values of the ``n = history``
    windows before window ``w`` (``x_0`` the entity's first window), the baseline seen by ``w`` is
    ``sum_i alpha (1 - alpha)**(n-1-i) x_i / (1 - (1 - alpha)**n)`` (0 for a new entity). So after
    one window it equals that window's value, every window counts with weight ``alpha`` relative
    to the past (a partial first window fades as fast as the rest), and ``g`` empty windows
    multiply the unnormalised sum by ``(1 - alpha) ** g`` (closed form, no per-window work).
    ``history = w - first`` counts the entity's windows (empty ones included) before ``w``.

    An entity idle for ``idle_ttl`` seconds or more (``start(w) - end(last) >= idle_ttl``) starts
    afresh, as a new one. :meth:`evict` drops only entities that will certainly start afresh, so
    eviction never changes a result: with watermark ``W`` every window still to close ends after
    ``W``, so an entity with ``end(last) < W - length - idle_ttl`` is reset at its next window.

    >>> ewma = Ewma(Tumbling(60.0), alpha=0.5, idle_ttl=3600.0)
    >>> keys = np.array([7], dtype=np.uint64)
    >>> steps = [ewma.close(keys, w, np.array([x])) for w, x in [(0, 8.0), (1, 4.0), (3, 0.0)]]
    >>> [round(float(s.baseline[0]), 4) for s in steps]
    [0.0, 8.0, 2.2857]
    """

    def __init__(self, windows: Windows, alpha: float = 0.1, idle_ttl: float = 3600.0) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        self.windows = windows
        self.alpha = float(alpha)
        # "sum": the unnormalised EWMA sum_i alpha (1 - alpha)**(last - w_i) x_i after window "last"
        # no last-seen column: "last" says when an entity was last seen (evict)
        self.table = EntityTable(
            {"sum": (np.float64, 0.0), "first": (np.int64, 0), "last": (np.int64, 0)},
            idle_ttl,
            last_seen=False,
        )

    @staticmethod
    def decay(baseline: F64, gaps: Any, alpha: float) -> F64:
        """``baseline * (1 - alpha) ** gaps``: the EWMA after ``gaps`` windows of value 0."""
        return np.asarray(baseline, dtype=np.float64) * (1.0 - alpha) ** np.asarray(gaps, dtype=np.float64)

    def _state(self, keys: NDArray[np.uint64], window_id: int) -> tuple[F64, I64]:
        """Unnormalised sum decayed to just before ``window_id``, and history (0: starts afresh)."""
        rows = self.table.find(keys)
        if not len(self.table):
            return np.zeros(len(keys)), np.zeros(len(keys), dtype=np.int64)
        known = rows >= 0
        safe = np.where(known, rows, 0)
        last = self.table["last"][safe]
        idle = self.windows.start(window_id) - self.windows.end(last) >= self.table.idle_ttl
        fresh = ~known | idle
        total = self.decay(self.table["sum"][safe], window_id - last - 1, self.alpha)
        hist = window_id - self.table["first"][safe]
        return np.where(fresh, 0.0, total), np.where(fresh, 0, hist).astype(np.int64)

    def peek(self, keys: NDArray[np.uint64], window_id: int) -> EwmaStep:
        """What :meth:`close` would report, without updating anything."""
        total, hist = self._state(keys, window_id)
        norm = 1.0 - (1.0 - self.alpha) ** hist.astype(np.float64)
        return EwmaStep(np.where(hist > 0, total / np.where(hist > 0, norm, 1.0), 0.0), hist)

    def close(self, keys: NDArray[np.uint64], window_id: int, values: F64) -> EwmaStep:
        """Close window ``window_id`` for distinct ``keys`` with ``values``; returns the state before."""
        total, hist = self._state(keys, window_id)
        norm = 1.0 - (1.0 - self.alpha) ** hist.astype(np.float64)
        step = EwmaStep(np.where(hist > 0, total / np.where(hist > 0, norm, 1.0), 0.0), hist)
        rows = self.table.rows(keys)
        a = self.alpha
        self.table["sum"][rows] = (1 - a) * total + a * np.asarray(values, dtype=np.float64)
        self.table["first"][rows] = window_id - hist
        self.table["last"][rows] = window_id
        return step

    def evict(self, watermark: float) -> int:
        """Drop entities that will start afresh anyway (see the class docstring)."""
        if not math.isfinite(watermark) or not len(self.table):
            return 0
        table = self.table
        return table.drop(self.windows.end(table["last"]) < watermark - self.windows.length - table.idle_ttl)
