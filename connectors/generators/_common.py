"""Machinery shared by the four synthetic generators: chunked RNGs, an anomaly plan, re-batching.

Every generator produces its events in fixed chunks of :data:`CHUNK` positions; chunk ``c``
draws from its own ``np.random.default_rng([seed, c])``, so any chunk can be rebuilt alone and
``generate(..., start=s)`` yields exactly the tail of a full run. Injected anomalies come from a
global plan drawn once from ``np.random.default_rng([seed, n_events, 999])``: the plan lists
*overrides* (positions and the column values written there, replacing normal events so the
event count stays ``n_events``) and the ground truth. Overridden events get their nominal
timestamp (no jitter) so the ground truth can name exact times.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from connectors.events import Anomaly, EventBatch

__all__ = [
    "CHUNK",
    "JITTER_FRACTION",
    "JITTER_MAX",
    "PLAN_SALT",
    "START_TIME",
    "Calendar",
    "Overrides",
    "PositionPool",
    "check_args",
    "chunk_rng",
    "cumulative",
    "iter_batches",
    "jitter",
    "labels",
    "plan_rng",
    "scaled_count",
    "sort_anomalies",
    "take_cdf",
]

START_TIME: Final = 1767225600.0
"""Event time of position 0: 2026-01-01T00:00:00Z."""
CHUNK: Final = 10_000
"""Positions per generation chunk (each chunk has its own RNG)."""
PLAN_SALT: Final = 999
"""Third element of the plan RNG's seed sequence ``[seed, n_events, PLAN_SALT]``."""
JITTER_FRACTION: Final = 0.02
"""Share of normal events whose timestamp is moved back (out of order)."""
JITTER_MAX: Final = 2.0
"""Largest backwards jitter in seconds (well below the detectors' 5 s lateness)."""

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
ObjArray = NDArray[np.object_]


def chunk_rng(seed: int, chunk: int) -> np.random.Generator:
    """The RNG of chunk ``chunk`` (positions ``chunk * CHUNK ...``)."""
    return np.random.default_rng([seed, chunk])


def plan_rng(seed: int, n_events: int) -> np.random.Generator:
    """The RNG of the global anomaly plan of a run of ``n_events``."""
    return np.random.default_rng([seed, n_events, PLAN_SALT])


def check_args(n_events: int, seed: int, start: int, batch_size: int) -> None:
    """Validate ``generate`` arguments.

    Raises
    ------
    ValueError
        If ``n_events < 0``, ``seed < 0``, ``start`` outside ``[0, n_events]`` or ``batch_size < 1``.
    """
    for name, value in (("n_events", n_events), ("seed", seed), ("start", start), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if n_events < 0:
        raise ValueError(f"n_events must be >= 0, got {n_events}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not 0 <= start <= n_events:
        raise ValueError(f"start must be in [0, n_events={n_events}], got {start}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def labels(fmt: str, count: int) -> ObjArray:
    """An object array of ``fmt.format(i)`` for ``i < count`` (an id vocabulary)."""
    out = np.empty(count, dtype=object)
    out[:] = [fmt.format(i) for i in range(count)]
    return out


def cumulative(weights: NDArray[Any]) -> FloatArray:
    """Normalised cumulative distribution of ``weights`` (last element exactly 1)."""
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    return cdf


def take_cdf(cdf: FloatArray, u: FloatArray) -> IntArray:
    """Inverse-CDF sampling: the category index of each uniform ``u`` in ``[0, 1)``."""
    return np.searchsorted(cdf, u, side="right").astype(np.int64)


def jitter(rng: np.random.Generator, m: int) -> FloatArray:
    """Backward timestamp jitter for ``m`` events: ``JITTER_FRACTION`` of them move back by up to 2 s.

    Always draws two arrays of ``m`` values (a fixed draw count keeps chunks reproducible).
    """
    moved = rng.random(m) < JITTER_FRACTION
    amount = rng.random(m) * JITTER_MAX
    return np.where(moved, amount, 0.0)


def scaled_count(n_events: int, per: float, feasible: bool = True) -> int:
    """Anomalies to inject: ``round(n_events / per)``, at least 1 when ``feasible`` and ``n_events > 0``."""
    if not feasible or n_events <= 0:
        return 0
    return max(1, round(n_events / per))


def sort_anomalies(anomalies: list[Anomaly]) -> list[Anomaly]:
    """Ground truth in a canonical order (detector, start, entity)."""
    return sorted(anomalies, key=lambda a: (a.detector, a.start, a.entity, a.end))


@dataclass
class _Group:
    names: tuple[str, ...]
    positions: list[int] = field(default_factory=list)
    values: dict[str, list[Any]] = field(default_factory=dict)
    pos: IntArray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    cols: dict[str, NDArray[Any]] = field(default_factory=dict)


class Overrides:
    """Planned replacements of normal events: per group, positions and the values of some columns.

    Parameters
    ----------
    dtypes : dict
        Column name -> numpy dtype (``object`` for strings) of the flow's schema.

    Notes
    -----
    Groups are declared with :meth:`group`; :meth:`add` appends events; :meth:`freeze` sorts
    them; :meth:`apply` writes the overrides falling into ``[lo, hi)`` into a chunk's columns.
    A position must belong to one group at most (the planner's :class:`PositionPool` ensures it).
    """

    def __init__(self, dtypes: dict[str, Any]) -> None:
        self._dtypes = dtypes
        self._groups: dict[str, _Group] = {}
        self._frozen = False

    def group(self, name: str, columns: Sequence[str]) -> None:
        """Declare group ``name`` overriding ``columns``."""
        self._groups[name] = _Group(tuple(columns), values={c: [] for c in columns})

    def add(
        self, name: str, positions: Sequence[int] | IntArray, **columns: Sequence[Any] | NDArray[Any]
    ) -> None:
        """Append events to group ``name``: ``positions`` and one value per position for each column."""
        g = self._groups[name]
        pos = [int(p) for p in positions]
        if set(columns) != set(g.names):
            raise ValueError(f"group {name!r} overrides {g.names}, got {tuple(columns)}")
        for c in g.names:
            vals = list(np.asarray(columns[c], dtype=object).reshape(-1))
            if len(vals) != len(pos):
                raise ValueError(f"group {name!r}: {len(vals)} values of {c!r} for {len(pos)} positions")
            g.values[c].extend(vals)
        g.positions.extend(pos)

    def freeze(self) -> Overrides:
        """Sort every group by position; returns ``self``."""
        for g in self._groups.values():
            pos = np.asarray(g.positions, dtype=np.int64)
            order = np.argsort(pos, kind="stable")
            g.pos = pos[order]
            for c in g.names:
                dtype = self._dtypes[c]
                arr = (
                    np.empty(len(pos), dtype=dtype)
                    if dtype is object
                    else np.asarray(g.values[c], dtype=dtype)
                )
                if dtype is object:
                    arr[:] = g.values[c]
                g.cols[c] = arr[order]
            g.positions, g.values = [], {}
        self._frozen = True
        return self

    def apply(self, columns: dict[str, NDArray[Any]], lo: int, hi: int) -> None:
        """Write the overrides at positions ``[lo, hi)`` into ``columns`` (indexed from ``lo``)."""
        for g in self._groups.values():
            a, b = np.searchsorted(g.pos, [lo, hi])
            if a == b:
                continue
            idx = g.pos[a:b] - lo
            for c in g.names:
                columns[c][idx] = g.cols[c][a:b]

    def positions(self, name: str) -> IntArray:
        """The sorted positions of group ``name`` (after :meth:`freeze`)."""
        return self._groups[name].pos

    def count(self) -> int:
        """Overridden positions in all groups."""
        return sum(len(g.pos) for g in self._groups.values())


class PositionPool:
    """Which positions of a run the planner has already used (a bitmap of ``n_events`` bytes)."""

    def __init__(self, n_events: int) -> None:
        self.n = n_events
        self.taken = np.zeros(n_events, dtype=bool)

    def take(self, positions: Sequence[int] | IntArray) -> None:
        """Mark ``positions`` as used."""
        self.taken[np.asarray(positions, dtype=np.int64)] = True

    def is_free(self, position: int) -> bool:
        """True when ``position`` is inside the run and unused."""
        return 0 <= position < self.n and not self.taken[position]

    def next_free(self, position: int) -> int:
        """The first free position ``>= position``, or -1 when none is left in the run."""
        position = max(position, 0)
        step = 64
        while position < self.n:
            rest = np.flatnonzero(~self.taken[position : position + step])
            if len(rest):
                return int(position + rest[0])
            position += step
            step *= 2
        return -1

    def sample(self, rng: np.random.Generator, lo: int, hi: int, count: int) -> IntArray | None:
        """``count`` distinct free positions drawn uniformly from ``[lo, hi)``, sorted (None if too few)."""
        lo, hi = max(lo, 0), min(hi, self.n)
        if hi <= lo:
            return None
        free = np.flatnonzero(~self.taken[lo:hi]) + lo
        if len(free) < count:
            return None
        return np.sort(rng.choice(free, size=count, replace=False)).astype(np.int64)


class Calendar:
    """Busy intervals per entity, to keep injected anomalies of one entity apart."""

    def __init__(self) -> None:
        self._busy: dict[Any, list[tuple[float, float]]] = {}

    def free(self, entity: Any, lo: float, hi: float) -> bool:
        """True when ``[lo, hi]`` overlaps none of ``entity``'s busy intervals."""
        return all(hi < a or lo > b for a, b in self._busy.get(entity, ()))

    def book(self, entity: Any, lo: float, hi: float) -> None:
        """Mark ``[lo, hi]`` busy for ``entity``."""
        self._busy.setdefault(entity, []).append((lo, hi))


def _piece(batch: EventBatch, a: int, b: int) -> EventBatch:
    return EventBatch(batch.flow, batch.positions[a:b], {k: v[a:b] for k, v in batch.columns.items()})


def iter_batches(
    make_chunk: Callable[[int], EventBatch], n_events: int, start: int, batch_size: int
) -> Iterator[EventBatch]:
    """Yield positions ``start .. n_events - 1`` in batches of ``batch_size`` (the last may be shorter).

    Parameters
    ----------
    make_chunk : callable
        ``make_chunk(c)`` returns the events of chunk ``c`` (positions ``c * CHUNK`` up to
        ``min((c + 1) * CHUNK, n_events)``).
    n_events, start, batch_size : int
        As in ``generate``.
    """
    pending: list[EventBatch] = []
    held = 0
    chunk = start // CHUNK
    skip = start - chunk * CHUNK
    while chunk * CHUNK < n_events:
        part = make_chunk(chunk)
        if skip:
            part = _piece(part, skip, len(part))
            skip = 0
        chunk += 1
        if not pending and len(part) == batch_size:
            pending.append(part)
            del part  # bound to no name here while the caller runs (as below)
            yield _drained(pending)
            continue
        offset = 0
        while offset < len(part):
            take = min(batch_size - held, len(part) - offset)
            pending.append(_piece(part, offset, offset + take))
            held += take
            offset += take
            if held == batch_size:
                held = 0
                yield _drained(pending)  # bound to no name here: not held while the caller runs
    if pending:
        yield _drained(pending)


def _drained(pending: list[EventBatch]) -> EventBatch:
    """One batch of ``pending`` (which it empties), holding the pieces itself (lazily joined)."""
    out = EventBatch.concat(list(pending))
    pending.clear()
    return out
