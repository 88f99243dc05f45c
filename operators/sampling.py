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

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from connectors.events import EventBatch, Sample
from operators.runtime import Detector, Output
from sketches import StratifiedReservoir

__all__ = ["FLOW_SAMPLING", "TRANSFORMS", "StratumSpec", "WindowSampler", "sampler_for"]

_MASK64: Final = (1 << 64) - 1


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


class _Window:
    """One open window: its reservoir (items are sampler sequence numbers) and the sampled
    events, ``seq -> (position, event dict)``, for exactly the items currently sampled."""

    __slots__ = ("events", "reservoir")

    def __init__(self, reservoir: StratifiedReservoir) -> None:
        self.reservoir = reservoir
        self.events: dict[int, tuple[int, dict[str, Any]]] = {}

    def __getstate__(self) -> tuple[StratifiedReservoir, dict[int, tuple[int, dict[str, Any]]]]:
        return self.reservoir, self.events

    def __setstate__(self, state: tuple[StratifiedReservoir, dict[int, tuple[int, dict[str, Any]]]]) -> None:
        self.reservoir, self.events = state


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
        Sample size per stratum and window.
    seed : int, default 0
        Seed of the reservoirs' randomness, in ``[0, 2**32)``.
    lateness : float, default 5.0
        The watermark is the largest ``ts`` seen minus ``lateness``.
    offset : float, default 0.0
        Window alignment.
    name : str, default "sampling"
        Step name (not written into samples).

    Raises
    ------
    ValueError
        If ``length`` is not positive, ``lateness`` is negative, or a reservoir parameter
        is out of range.

    Notes
    -----
    Window closing follows the shared event-time rules: the watermark after each event is
    the running maximum of ``ts`` (input order) minus ``lateness``; a window closes once the
    watermark reaches its end and emits its samples; an event whose window is already
    closed when it arrives is late, counted in :attr:`late` and ignored; :meth:`flush`
    closes every open window.

    Window ``k`` has the reservoir salt ``k`` (mod ``2**64``), so windows draw independent
    random streams. The reservoirs' items are per-sampler sequence numbers (their random
    choices depend only on each stratum's arrival order, not on the items), and the event
    dicts are built only for sequence numbers that are in a sample after a batch: a batch
    costs a few numpy passes plus dict building for the few newly sampled events. As
    ``StratifiedReservoir.update`` equals sequential ``add`` calls, the samples do not depend
    on batch boundaries. ``Sample.event`` holds the event's columns (its position is
    ``Sample.position``); samples are emitted window by window, strata in order of first
    appearance, items in reservoir slot order.
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
        StratifiedReservoir(k_per_stratum, seed)  # validate k and seed now, not at the first event
        self.flow = flow
        self.name = name
        self.length = float(length)
        self.offset = float(offset)
        self.lateness = float(lateness)
        self.stratum = stratum if isinstance(stratum, StratumSpec) else StratumSpec(stratum)
        self.k_per_stratum = k_per_stratum
        self.seed = seed
        self.late = 0
        """Events dropped because their window had closed."""
        self._max_ts = -math.inf
        self._seq = 0
        self._windows: dict[int, _Window] = {}

    @property
    def watermark(self) -> float:
        """Largest ``ts`` seen minus ``lateness`` (``-inf`` before the first event)."""
        return self._max_ts - self.lateness

    @property
    def open_windows(self) -> list[tuple[float, float]]:
        """``(start, end)`` of the open windows, in time order."""
        return [self._bounds(k) for k in sorted(self._windows)]

    def _bounds(self, k: int) -> tuple[float, float]:
        return k * self.length + self.offset, (k + 1) * self.length + self.offset

    def process(self, batch: EventBatch) -> list[Output]:
        """Sample a batch of events (input order); return the samples of windows it closes.

        Parameters
        ----------
        batch : EventBatch
            Events with ``ts`` and the stratum column.

        Returns
        -------
        list of Sample
        """
        n = len(batch)
        if n == 0:
            return []
        ts = np.asarray(batch["ts"], dtype=np.float64)
        running = np.maximum.accumulate(np.maximum(ts, self._max_ts))
        watermark = running - self.lateness
        win = np.floor((ts - self.offset) / self.length).astype(np.int64)
        end = (win + 1) * self.length + self.offset
        keep = np.flatnonzero(end > watermark)
        self.late += n - len(keep)
        self._max_ts = float(running[-1])
        if len(keep):
            self._offer(batch, keep, win[keep])
        return self._close(self.watermark)

    def flush(self) -> list[Output]:
        """Close every open window and return their samples."""
        return self._close(math.inf)

    def _offer(self, batch: EventBatch, keep: NDArray[np.intp], win: NDArray[np.int64]) -> None:
        strata = self.stratum.strata(batch)[keep]
        seq0 = self._seq
        seq = np.arange(seq0, seq0 + len(keep), dtype=np.int64)
        self._seq += len(keep)
        order = np.argsort(win, kind="stable")
        cuts = np.flatnonzero(np.diff(win[order])) + 1
        for idx in np.split(order, cuts):
            k = int(win[idx[0]])
            w = self._windows.get(k)
            if w is None:
                res = StratifiedReservoir(self.k_per_stratum, self.seed, salt=k & _MASK64)
                w = self._windows[k] = _Window(res)
            w.reservoir.update(seq[idx], strata[idx])
            self._refresh(w, batch, keep, seq0)

    def _refresh(self, w: _Window, batch: EventBatch, keep: NDArray[np.intp], seq0: int) -> None:
        """Make ``w.events`` hold exactly the sampled sequence numbers' events."""
        sampled = [s for items in w.reservoir.samples().values() for s in items]
        live = set(sampled)
        for s in [s for s in w.events if s not in live]:
            del w.events[s]
        new = np.array([s for s in sampled if s not in w.events], dtype=np.int64)
        if not len(new):
            return
        rows = keep[new - seq0]
        positions = batch.positions[rows].tolist()
        names = list(batch.columns)
        cols = [batch.columns[c][rows].tolist() for c in names]
        for s, pos, values in zip(new.tolist(), positions, zip(*cols, strict=True), strict=True):
            w.events[s] = (pos, dict(zip(names, values, strict=True)))

    def _close(self, watermark: float) -> list[Output]:
        out: list[Output] = []
        for k in sorted(self._windows):
            start, end = self._bounds(k)
            if end > watermark:
                break
            w = self._windows.pop(k)
            for stratum, items in w.reservoir.samples().items():
                for s in items:
                    pos, event = w.events[s]
                    out.append(Sample(self.flow, start, end, str(stratum), pos, event))
        return out


def sampler_for(flow: str, k_per_stratum: int = 20, seed: int = 0, lateness: float = 5.0) -> WindowSampler:
    """The sampler of ``flow`` with its window length and stratum from :data:`FLOW_SAMPLING`.

    Raises
    ------
    KeyError
        If ``flow`` has no sampling configuration.
    """
    length, spec = FLOW_SAMPLING[flow]
    return WindowSampler(flow, length, spec, k_per_stratum=k_per_stratum, seed=seed, lateness=lateness)
