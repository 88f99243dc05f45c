"""Stratified reservoir samples of every tumbling event-time window (the ``samples`` table).

:class:`WindowSampler` is a global-key :class:`~operators.runtime.Detector`: it keeps one
:class:`sketches.StratifiedReservoir` per open tumbling window and, when the window closes,
emits a :class:`~connectors.events.Sample` per sampled event. Strata come from a column, or
from a column through a *named* transform (:data:`TRANSFORMS`), so the sampler pickles without
lambdas. :func:`sampler_for` builds the sampler each flow uses.

>>> import numpy as np
>>> from connectors.events import EventBatch
>>> s = WindowSampler("ddos", length=30.0, stratum=StratumSpec("status", "status_class"), k_per_stratum=2)
>>> batch = EventBatch("ddos", np.arange(5), {
...     "status": np.array([200, 404, 200, 503, 201]), "ts": np.array([0.0, 1.0, 2.0, 3.0, 4.0])})
>>> sorted((x.stratum, x.position) for x in s.process(batch) + s.flush())
[('2xx', 0), ('2xx', 2), ('4xx', 1), ('5xx', 3)]
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from connectors.events import EventBatch, Sample
from operators.runtime import Detector, Output, event_clock
from operators.windows import group_rows
from sketches.hashing import check_seed, fmix64, hash64, hash64_many, hash_codes, small_codes

__all__ = ["FLOW_SAMPLING", "TRANSFORMS", "StratumSpec", "WindowSampler", "sampler_for"]


def status_class(status: NDArray[Any]) -> NDArray[Any]:
    """HTTP status codes to their class: ``404 -> "4xx"`` (vectorised)."""
    classes = np.asarray(status).astype(np.int64) // 100
    out: NDArray[Any] = np.char.add(classes.astype(str), "xx")
    return out


def as_str(column: NDArray[Any]) -> NDArray[Any]:
    """Any column as strings (``str(value)`` per value)."""
    arr = np.asarray(column)
    if arr.dtype.kind == "O":
        return np.array([str(x) for x in arr.tolist()], dtype=object)
    out: NDArray[Any] = arr.astype(str)
    return out


TRANSFORMS: Final[dict[str, Callable[[NDArray[Any]], NDArray[Any]]]] = {
    "status_class": status_class,
    "str": as_str,
}
"""Named column transforms a :class:`StratumSpec` may use (extend by adding module-level functions)."""


@dataclass(frozen=True)
class StratumSpec:
    """How an event's stratum is derived: a column, optionally through a named transform.

    Parameters
    ----------
    column : str
        The event column.
    transform : str or None, default None
        A key of :data:`TRANSFORMS`, or None to use the column's values (strings) as is.

    Raises
    ------
    ValueError
        If ``transform`` is not a known name.
    """

    column: str
    transform: str | None = None

    def __post_init__(self) -> None:
        if self.transform is not None and self.transform not in TRANSFORMS:
            raise ValueError(f"unknown stratum transform {self.transform!r}; known: {sorted(TRANSFORMS)}")

    def strata(self, batch: EventBatch) -> NDArray[Any]:
        """The stratum (a str) of each event of ``batch``."""
        col = batch[self.column]
        if self.transform is None:
            return col if col.dtype.kind in "OU" else as_str(col)
        return TRANSFORMS[self.transform](col)


FLOW_SAMPLING: Final[dict[str, tuple[float, StratumSpec]]] = {
    "fraud": (60.0, StratumSpec("type")),
    "ddos": (30.0, StratumSpec("status", "status_class")),
    "iot": (300.0, StratumSpec("zone")),
    "sentiment": (300.0, StratumSpec("brand")),
}
"""Each flow's sampling window length (seconds) and stratum."""


class WindowSampler(Detector):
    """Keep ``k_per_stratum`` uniformly sampled events per stratum of each tumbling window.

    Parameters
    ----------
    flow : str
        Flow name written into each sample.
    length : float
        Window length in seconds; windows are ``[k length + offset, (k + 1) length + offset)``.
    stratum : str or StratumSpec
        A column name, or a :class:`StratumSpec` (column + named transform).
    k_per_stratum : int, default 20
        Sample size per stratum and window, in ``[1, 2**31)``.
    seed : int, default 0
        Seed of the sampling priorities, in ``[0, 2**32)``.
    lateness : float, default 5.0
        The watermark is the largest ``ts`` seen minus ``lateness``.
    offset : float, default 0.0
        Window alignment.
    name : str, default "sampling"
        Step name (not written into samples).

    Raises
    ------
    ValueError
        If ``length`` is not positive, ``lateness`` is negative, or ``k_per_stratum`` or
        ``seed`` is out of range.

    Notes
    -----
    Bottom-k (priority) sampling: every event gets the priority
    ``fmix64(hash64(position, seed) ^ fmix64(window))`` and a window keeps, per stratum, the
    ``k`` events of smallest priority: a uniform random sample without replacement of size
    ``min(k, n)`` (each event kept with probability ``min(1, k / n)``), windows independent.
    The sample is a function of the window's set of events, not of their order: the same
    for any batch boundaries, any number of workers, and after a resume. That also makes it
    cheap to run in parallel: :meth:`preselect` cuts a batch down to the few events that can
    be in a sample (the bottom ``k`` of each window and stratum within the batch, as the
    bottom ``k`` of a union is the bottom ``k`` of the parts' bottom ``k``s) on the worker that
    read it, so only those travel to the single global sampler. Events of different input
    partitions with the same position tie (their sample ids would collide too): positions
    identify events within a flow.

    Window closing follows the shared event-time rules: the watermark after each event is
    the shard's clock (the running maximum of ``ts`` in input order; with several input
    partitions the least of theirs, see ``operators.runtime.PartitionClock``) minus
    ``lateness``; a window closes once the
    watermark reaches its end and emits its samples; an event whose window is already
    closed when it arrives is late, counted in :attr:`late` and ignored; :meth:`flush`
    closes every open window. Samples are emitted window by window, strata sorted, events by
    priority; ``Sample.event`` holds the event's columns (its position is ``Sample.position``).
    """

    def __init__(
        self,
        flow: str,
        length: float,
        stratum: str | StratumSpec,
        k_per_stratum: int = 20,
        seed: int = 0,
        lateness: float = 5.0,
        offset: float = 0.0,
        name: str = "sampling",
    ) -> None:
        if not (math.isfinite(length) and length > 0):
            raise ValueError(f"{name}: window length must be positive seconds, got {length!r}")
        if not (math.isfinite(lateness) and lateness >= 0):
            raise ValueError(f"{name}: lateness must be >= 0 seconds, got {lateness!r}")
        if (
            isinstance(k_per_stratum, bool)
            or not isinstance(k_per_stratum, int)
            or not 1 <= k_per_stratum < 2**31
        ):
            raise ValueError(f"{name}: k_per_stratum must be an int in [1, 2**31), got {k_per_stratum!r}")
        self.flow = flow
        self.name = name
        self.length = float(length)
        self.offset = float(offset)
        self.lateness = float(lateness)
        self.stratum = stratum if isinstance(stratum, StratumSpec) else StratumSpec(stratum)
        self.k_per_stratum = k_per_stratum
        self.seed = check_seed(seed)
        self.late = 0
        """Events dropped because their window had closed."""
        self._max_ts = -math.inf
        # window -> stratum -> up to k (priority, position, event, partition), smallest priorities
        self._windows: dict[int, dict[str, list[tuple[Any, ...]]]] = {}

    @property
    def watermark(self) -> float:
        """The clock (largest ``ts`` seen, or the partition clock) minus ``lateness``."""
        return self._max_ts - self.lateness

    @property
    def open_windows(self) -> list[tuple[float, float]]:
        """``(start, end)`` of the open windows, in time order."""
        return [self._bounds(k) for k in sorted(self._windows)]

    def _bounds(self, k: int) -> tuple[float, float]:
        return k * self.length + self.offset, (k + 1) * self.length + self.offset

    def _on_time(
        self, batch: EventBatch, ts: NDArray[np.float64], max_ts: float
    ) -> tuple[NDArray[np.intp], NDArray[np.int64], float]:
        """Rows not late under the shard's clock (``operators.runtime.event_clock``, from
        ``max_ts``), their windows, and the new clock."""
        clock = event_clock(batch, ts, max_ts)
        win = self._windows_of(ts)
        rows = np.flatnonzero((win + 1) * self.length + self.offset > clock - self.lateness)
        return rows, win[rows], float(clock[-1])

    def _windows_of(self, ts: NDArray[np.float64]) -> NDArray[np.int64]:
        return np.floor((ts - self.offset) / self.length).astype(np.int64)

    def _priorities(
        self, batch: EventBatch, rows: NDArray[np.intp], win: NDArray[np.int64]
    ) -> NDArray[np.uint64]:
        """Priorities of events ``rows`` of ``batch`` (in windows ``win``): a hash of position
        and window, and of the partition when the source has several (positions repeat)."""
        salt = fmix64(win.astype(np.uint64) ^ np.uint64(_WINDOW_SALT))
        part = _partition(batch)
        if part:
            salt ^= np.uint64(hash64(part, self.seed))
        return fmix64(hash64_many(batch.positions[rows], self.seed) ^ salt)

    def _bottom_k(
        self, batch: EventBatch, rows: NDArray[np.intp], win: NDArray[np.int64], prefix: bool = False
    ) -> NDArray[np.intp]:
        """Of ``rows`` (in windows ``win``), those among the ``k`` smallest priorities of their
        window and stratum (``prefix``: of their window and stratum up to them, in input order)."""
        k = self.k_per_stratum
        if len(rows) <= k:
            return rows
        codes = _codes(self.stratum.strata(batch))[rows]
        group = (win - win.min()) * (int(codes.max()) + 1) + codes  # (window, stratum) as one int
        prio = self._priorities(batch, rows, win)
        pick = _prefix_bottom_k if prefix else _bottom_k
        chosen = [members[pick(prio[members], k)] for _, members in group_rows(group)]
        return np.sort(rows[np.concatenate(chosen)])

    def preselect(self, batch: EventBatch) -> EventBatch:
        """The events of ``batch`` that can be in a sample, in input order (see Notes).

        A pure function of the batch and the sampler's parameters (not its state), run on
        each worker before the global sampler; the last event is always kept, and each kept
        event carries the running maximum of ``ts`` of the whole batch (``progress_ts``), so
        the sampler's clocks are those of the whole batch. Feeding the sampler the
        preselected batches gives exactly the samples of the whole batches.

        With one input partition the sampler's clock is at least the running maximum of the
        batch's ``ts``: events late within the batch are dropped, and of the rest the ``k``
        smallest priorities of each window and stratum are kept. With several, the clock may
        trail the batch (another partition lags), so which events are late is unknown here;
        it is always a window's later events in input order (the clock never goes back), so
        an event is kept if its priority is among the ``k`` smallest of its window and
        stratum *so far* in the batch (about ``k (1 + ln(n / k))`` of a group of ``n``).
        """
        if len(batch) == 0:
            return batch
        ts = np.asarray(batch["ts"], dtype=np.float64)
        running = np.maximum.accumulate(ts if batch.progress_ts is None else batch.progress_ts)
        win = self._windows_of(ts)
        if batch.progress is None or len(batch.progress.partitions) == 1:
            rows = np.flatnonzero((win + 1) * self.length + self.offset > running - self.lateness)
            picked = self._bottom_k(batch, rows, win[rows])
        else:
            picked = self._bottom_k(batch, np.arange(len(batch), dtype=np.intp), win, prefix=True)
        last = len(batch) - 1  # picked is sorted and distinct: the last row goes at its end
        chosen = picked if len(picked) and picked[-1] == last else np.append(picked, np.intp(last))
        out = batch.take(chosen)
        out.progress_ts = running[chosen]
        return out

    def process(self, batch: EventBatch) -> list[Output]:
        """Sample a batch of events (input order); return the samples of windows it closes.

        Parameters
        ----------
        batch : EventBatch
            Events with ``ts`` and the stratum column (whole, or cut by :meth:`preselect`).

        Returns
        -------
        list of Sample
        """
        n = len(batch)
        if n == 0:
            return []
        ts = np.asarray(batch["ts"], dtype=np.float64)
        keep, win, self._max_ts = self._on_time(batch, ts, self._max_ts)
        self.late += n - len(keep)
        if len(keep):
            self._offer(batch.take(self._bottom_k(batch, keep, win)))
        return self._close(self.watermark)

    def flush(self) -> list[Output]:
        """Close every open window and return their samples."""
        return self._close(math.inf)

    def _offer(self, batch: EventBatch) -> None:
        """Merge the events into their windows' and strata's bottom-k lists, one (window,
        stratum) group at a time. An event enters as its row number; only the rows still kept
        at the end become dicts. The same lists as inserting the events one by one in input
        order: a stable sort by priority keeps earlier items first among equal priorities."""
        ts = np.asarray(batch["ts"], dtype=np.float64)
        win = self._windows_of(ts)
        prio = self._priorities(batch, np.arange(len(batch)), win).tolist()
        strata = self.stratum.strata(batch)
        codes = _codes(strata)
        part = _partition(batch)
        positions = batch.positions.tolist()
        k = self.k_per_stratum
        touched = []
        for _, rows in group_rows((win - win.min()) * (int(codes.max()) + 1) + codes):
            first = int(rows[0])
            kept = self._windows.setdefault(int(win[first]), {}).setdefault(str(strata[first]), [])
            offered = [(prio[r], positions[r], r, part) for r in rows.tolist()]
            kept[:] = sorted(kept + offered, key=_PRIORITY)[:k]
            touched.append(kept)
        new = [item[2] for kept in touched for item in kept if type(item[2]) is int]
        events = dict(zip(new, batch.take(np.asarray(new, dtype=np.intp)).records(), strict=True))
        for kept in touched:  # (items of older snapshots have no partition: 3 long)
            kept[:] = [(*it[:2], events[it[2]], *it[3:]) if type(it[2]) is int else it for it in kept]

    def _close(self, watermark: float) -> list[Output]:
        out: list[Output] = []
        for k in sorted(self._windows):
            start, end = self._bounds(k)
            if end > watermark:
                break
            for stratum, kept in sorted(self._windows.pop(k).items()):
                out.extend(Sample(self.flow, start, end, stratum, *_sampled(item)) for item in kept)
        return out


_WINDOW_SALT: Final = 0x5A17_C0DE_D0E5_CAFE


def _bottom_k(prio: NDArray[np.uint64], k: int) -> NDArray[np.intp]:
    """Indices of the ``k`` smallest of ``prio`` (all if there are no more)."""
    if len(prio) <= k:
        return np.arange(len(prio), dtype=np.intp)
    return np.argpartition(prio, k - 1)[:k]


def _prefix_bottom_k(prio: NDArray[np.uint64], k: int) -> NDArray[np.intp]:
    """Indices ``i`` whose ``prio[i]`` is among the ``k`` smallest of ``prio[: i + 1]``.

    Blocks of doubling size: after a prefix of ``s`` values only those below its ``k``-th
    smallest can qualify (about ``k`` per block for random priorities), and just those are
    checked one by one, so the Python work is ``~k log2(n / k)`` steps.

    >>> _prefix_bottom_k(np.array([5, 3, 9, 1, 7, 2], dtype=np.uint64), 2).tolist()
    [0, 1, 3, 5]
    """
    n = len(prio)
    if n <= k:
        return np.arange(n, dtype=np.intp)
    kept = list(range(k))
    top = sorted(prio[:k].tolist())  # the k smallest so far, ascending
    start = k
    while start < n:
        stop = min(n, 2 * start)
        block = prio[start:stop]
        for j in np.flatnonzero(block < top[-1]).tolist():
            v = int(block[j])
            if v < top[-1]:
                bisect.insort(top, v)
                top.pop()
                kept.append(start + j)
        start = stop
    return np.asarray(kept, dtype=np.intp)


_PRIORITY: Final = itemgetter(0)
"""A kept item's priority (its first element), the sort key of the bottom-k lists."""


def _sampled(item: tuple[Any, ...]) -> tuple[int, dict[str, Any], str]:
    """Position, event and partition of a kept ``(priority, position, event[, partition])``
    (snapshots from before partitions hold three)."""
    return item[1], item[2], item[3] if len(item) > 3 else ""


def _partition(batch: EventBatch) -> str:
    """The batch's input partition if its source has several, else ``""``."""
    p = batch.progress
    return p.partition if p is not None and len(p.partitions) > 1 else ""


def _codes(strata: NDArray[Any]) -> NDArray[np.intp]:
    """Equal strata get equal int codes: by identity and equality when they are few strings,
    else by 64-bit hash (fast, checked), else by sorting."""
    few = small_codes(strata)
    if few is not None:
        return few
    grouped = hash_codes(strata)
    return _sorted_codes(strata) if grouped is None else grouped[0]


def _sorted_codes(strata: NDArray[Any]) -> NDArray[np.intp]:
    codes: NDArray[np.intp] = np.unique(strata.astype(str), return_inverse=True)[1].reshape(-1)
    return codes


def sampler_for(flow: str, k_per_stratum: int = 20, seed: int = 0, lateness: float = 5.0) -> WindowSampler:
    """The sampler of ``flow`` with its window length and stratum from :data:`FLOW_SAMPLING`.

    Raises
    ------
    KeyError
        If ``flow`` has no sampling configuration.
    """
    length, spec = FLOW_SAMPLING[flow]
    return WindowSampler(flow, length, spec, k_per_stratum=k_per_stratum, seed=seed, lateness=lateness)
