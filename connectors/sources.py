"""Sources: a flow's deterministic event generator as a resumable Bytewax source, and
:class:`PartitionProgress`, which tells the detectors where every batch came from.

The generator function of a flow (from :mod:`connectors.generators`) follows :data:`GenerateFn`:
``generate(n_events, seed, start, batch_size)`` yields the events with positions
``start .. n_events - 1`` in order, in batches of at most ``batch_size``, and the same arguments
always yield the same events; starting at ``start`` yields exactly the tail of a run started at 0.

Delivery: exactly-once input. The resume state is the next position; a resumed run calls the
generator again with ``start`` = that position.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Generic, TypeVar

import numpy as np
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.events import SCHEMAS, EventBatch, Progress

__all__ = ["GenerateFn", "GeneratorSource", "PartitionProgress"]

S = TypeVar("S")

GenerateFn = Callable[[int, int, int, int], Iterator[EventBatch]]
"""``generate(n_events, seed, start, batch_size) -> Iterator[EventBatch]``."""


class GeneratorSource(FixedPartitionedSource[EventBatch, int]):
    """A flow's generator as a Bytewax input with one partition (``generate:<flow>``).

    Parameters
    ----------
    flow : str
        Flow name (names the partition).
    generate : GenerateFn
        The flow's generator function; see the module docstring for its contract.
    n_events : int
        Events in the whole run.
    seed : int
        Generator seed.
    batch_size : int, default 10_000
        Largest batch the generator is asked for.

    Notes
    -----
    Each ``next_batch()`` returns a list with one ``EventBatch``. The partition checks that
    positions continue where the previous batch stopped and raises RuntimeError if a generator
    breaks the contract (a resumed run would otherwise skip or repeat events silently).

    Examples
    --------
    >>> import numpy as np
    >>> def generate(n_events, seed, start, batch_size):
    ...     for lo in range(start, n_events, batch_size):
    ...         pos = np.arange(lo, min(lo + batch_size, n_events))
    ...         yield EventBatch("demo", pos, {"x": pos * seed})
    >>> part = GeneratorSource("demo", generate, 5, 3, batch_size=2).build_part("in", "generate:demo", 3)
    >>> [b.positions.tolist() for b in part.next_batch()], part.snapshot()
    ([[3, 4]], 5)
    """

    def __init__(
        self, flow: str, generate: GenerateFn, n_events: int, seed: int, batch_size: int = 10_000
    ) -> None:
        if n_events < 0:
            raise ValueError(f"n_events must be >= 0, got {n_events}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.flow = flow
        self.generate = generate
        self.n_events = n_events
        self.seed = seed
        self.batch_size = batch_size

    @property
    def part_name(self) -> str:
        return f"generate:{self.flow}"

    def list_parts(self) -> list[str]:
        """One partition, ``generate:<flow>``."""
        return [self.part_name]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _GeneratorPartition:
        """Start the generator at 0, or at the snapshot's next position."""
        if for_part != self.part_name:
            raise ValueError(f"step {step_id!r}: partition {for_part!r} is not {self.part_name!r}")
        return _GeneratorPartition(self, 0 if resume_state is None else resume_state)


class _GeneratorPartition(StatefulSourcePartition[EventBatch, int]):
    def __init__(self, src: GeneratorSource, start: int) -> None:
        self._name = getattr(src.generate, "__qualname__", repr(src.generate))
        self._next = start
        self._n = src.n_events
        self._it = src.generate(src.n_events, src.seed, start, src.batch_size)
        self._batch_size = src.batch_size

    def next_batch(self) -> list[EventBatch]:
        if self._next >= self._n:
            raise StopIteration
        try:
            batch = next(self._it)
        except StopIteration:
            raise RuntimeError(
                f"generator {self._name} stopped at position {self._next} of {self._n}"
            ) from None
        n = len(batch)
        if n == 0:
            return []
        first, last = int(batch.positions[0]), int(batch.positions[-1])
        if first != self._next or last != first + n - 1 or n > self._batch_size or last >= self._n:
            raise RuntimeError(
                f"generator {self._name} broke its contract: expected positions from {self._next} "
                f"below {self._n} in at most {self._batch_size} events, got {first}..{last} ({n} events)"
            )
        self._next = last + 1
        return [batch]

    def snapshot(self) -> int:
        return self._next


class PartitionProgress(FixedPartitionedSource[Any, S], Generic[S]):
    """``source`` with every event batch stamped with its :class:`~connectors.events.Progress`.

    The detectors keep one event-time clock per source partition (``operators.runtime``): a
    shard's clock is the least progress over the partitions, so the events of a partition read
    behind the others (Bytewax reads one batch per partition in turn; a backlog of several
    Kafka partitions or files) are not late for windows that another partition's events would
    otherwise have closed. For that, each batch says which partition it came from and which
    partitions exist, and a partition says when it has ended (an empty ``"final"`` batch) or
    has had no events for ``idle_after`` seconds of wall time (an empty ``"idle"`` batch, so a
    quiet Kafka partition does not hold every clock back; it counts again with its next
    events). Items other than event batches (dead letters) pass unchanged; resume states are
    the wrapped source's own.

    Parameters
    ----------
    source : FixedPartitionedSource
        The wrapped source (its items: ``EventBatch`` and anything else).
    flow : str
        The flow's name (marker batches are empty batches of this flow).
    idle_after : float, default 30.0
        Seconds without events after which a partition is announced idle.
    """

    def __init__(self, source: FixedPartitionedSource[Any, S], flow: str, idle_after: float = 30.0) -> None:
        if not idle_after > 0:
            raise ValueError(f"idle_after must be a positive number of seconds, got {idle_after!r}")
        self.source, self.flow, self.idle_after = source, flow, float(idle_after)
        self._parts: tuple[str, ...] | None = None

    def list_parts(self) -> list[str]:
        return list(self._all_parts())

    def _all_parts(self) -> tuple[str, ...]:
        # Asked once per worker (a Kafka source asks the broker each time).
        if self._parts is None:
            self._parts = tuple(sorted(self.source.list_parts()))
        return self._parts

    def build_part(self, step_id: str, for_part: str, resume_state: S | None) -> _ProgressPartition[S]:
        inner = self.source.build_part(step_id, for_part, resume_state)
        return _ProgressPartition(inner, self.flow, Progress(for_part, self._all_parts()), self.idle_after)


class _ProgressPartition(StatefulSourcePartition[Any, S]):
    def __init__(
        self, inner: StatefulSourcePartition[Any, S], flow: str, progress: Progress, idle_after: float
    ) -> None:
        self._inner, self._flow, self._progress, self._idle_after = inner, flow, progress, idle_after
        self._asked: float | None = None  # wall clock of the first next_batch: the summary's start
        self._told = False  # whether a batch has carried it
        self._last_data = time.monotonic()
        self._idle = False
        self._ended = False

    def next_batch(self) -> list[Any]:
        if self._ended:
            raise StopIteration
        if self._asked is None:
            self._asked = time.time()
        try:
            items = self._inner.next_batch()
        except StopIteration:
            self._ended = True
            return [self._marker("final")]
        now = time.monotonic()
        stamped = [self._stamp(x) for x in items]
        if not self._told:  # the first events carry when reading began
            first = next((x for x in stamped if isinstance(x, EventBatch)), None)
            if first is not None:
                first.read_at, self._told = self._asked, True
        if any(isinstance(x, EventBatch) for x in stamped):
            self._last_data, self._idle = now, False
        elif not self._idle and now - self._last_data >= self._idle_after:
            self._idle = True
            stamped.append(self._marker("idle"))
        return stamped

    def _stamp(self, item: Any) -> Any:
        if isinstance(item, EventBatch):
            item.progress = self._progress
        return item

    def _marker(self, state: str) -> EventBatch:
        p = self._progress
        schema = SCHEMAS.get(self._flow)
        columns = {f.name: np.zeros(0, dtype=f.dtype) for f in schema.fields} if schema else {}
        return EventBatch(
            self._flow,
            np.zeros(0, dtype=np.int64),
            columns,
            progress=Progress(p.partition, p.partitions, state),
        )

    def next_awake(self) -> datetime | None:
        return self._inner.next_awake()

    def snapshot(self) -> S:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()
