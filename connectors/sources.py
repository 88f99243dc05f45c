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
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Generic, TypeVar

import numpy as np
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.events import SCHEMAS, EventBatch, Progress

__all__ = ["GenerateFn", "GeneratorSource", "Layout", "PartitionProgress", "saved_state", "unpack_saved"]

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


class PartitionProgress(FixedPartitionedSource[Any, Any], Generic[S]):
    """``source`` with every event batch stamped with its :class:`~connectors.events.Progress`.

    The detectors keep one event-time clock per source partition (``operators.runtime``): a
    shard's clock is the least progress over the partitions, so the events of a partition read
    behind the others (Bytewax reads one batch per partition in turn; a backlog of several
    Kafka partitions or files) are not late for windows that another partition's events would
    otherwise have closed. For that, each batch says which partition it came from and which
    partitions exist, and a partition says when it has ended (an empty ``"final"`` batch) or
    has had no events for ``idle_after`` seconds of wall time (an empty ``"idle"`` batch, so a
    quiet Kafka partition does not hold every clock back; it counts again with its next
    events). Items other than event batches (dead letters) pass unchanged.

    A partition's resume state is the wrapped source's, saved with the input's layout: every
    partition and the ``aligned`` columns (the steps that keep a shard per input partition,
    ``SKETCHWATCH_PARTITIONED_BY``). A resume under another layout while any step is aligned
    (partitions added, the setting changed) would leave per-partition state behind unread, so
    :meth:`build_part` refuses it, before anything is read. States of older versions (the
    wrapped source's alone) resume unchecked.

    Parameters
    ----------
    source : FixedPartitionedSource
        The wrapped source (its items: ``EventBatch`` and anything else).
    flow : str
        The flow's name (marker batches are empty batches of this flow).
    idle_after : float, default 30.0
        Seconds without events after which a partition is announced idle.
    aligned : tuple of str, default ()
        The columns whose steps are aligned with the input partitions.
    """

    def __init__(
        self,
        source: FixedPartitionedSource[Any, S],
        flow: str,
        idle_after: float = 30.0,
        aligned: tuple[str, ...] = (),
    ) -> None:
        if not idle_after > 0:
            raise ValueError(f"idle_after must be a positive number of seconds, got {idle_after!r}")
        self.source, self.flow, self.idle_after = source, flow, float(idle_after)
        self.aligned = tuple(sorted(set(aligned)))  # the layout's canonical form
        self._parts: tuple[str, ...] | None = None

    def list_parts(self) -> list[str]:
        return list(self._all_parts())

    def _all_parts(self) -> tuple[str, ...]:
        # Asked once per worker (a Kafka source asks the broker each time).
        if self._parts is None:
            self._parts = tuple(sorted(self.source.list_parts()))
        return self._parts

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _ProgressPartition[S]:
        layout = Layout(self._all_parts(), self.aligned)
        inner_state, saved_under = unpack_saved(resume_state)
        if saved_under is not None:
            layout.check_resume(saved_under)
        inner = self.source.build_part(step_id, for_part, inner_state)
        return _ProgressPartition(
            inner, self.flow, Progress(for_part, layout.partitions), self.idle_after, layout
        )


@dataclass(frozen=True)
class Layout:
    """What a partition's saved state depends on: every input partition (sorted) and the
    columns whose steps keep a shard per partition."""

    partitions: tuple[str, ...]
    aligned: tuple[str, ...]

    def check_resume(self, saved: Layout) -> None:
        """Raise ``ValueError`` (what changed, what to do) if state saved under ``saved`` cannot
        be resumed under this layout: with any aligned step, both must be equal."""
        if saved.aligned != self.aligned:
            raise ValueError(
                f"SKETCHWATCH_PARTITIONED_BY: steps aligned by {_names(self.aligned)} now, by "
                f"{_names(saved.aligned)} in the recovery store: {_START_OVER}"
            )
        if self.aligned and saved.partitions != self.partitions:
            raise ValueError(
                f"SKETCHWATCH_PARTITIONED_BY: the input has partitions {list(self.partitions)} now, "
                f"{list(saved.partitions)} in the recovery store: {_START_OVER}"
            )


SAVED: Final = "sketchwatch.source-state.v1"
"""Tag of a partition's resume state: ``(SAVED, wrapped source's state, partitions, aligned)``,
builtins only (``python -m recovery inspect`` shows them without importing this module)."""


def saved_state(inner: Any, layout: Layout) -> tuple[str, Any, tuple[str, ...], tuple[str, ...]]:
    """A partition's resume state: the wrapped source's ``inner`` state under ``layout``."""
    return (SAVED, inner, layout.partitions, layout.aligned)


def unpack_saved(state: Any) -> tuple[Any, Layout | None]:
    """``(wrapped source's state, layout)`` of a resume state; a state of an older version (the
    wrapped source's alone) has no layout."""
    if isinstance(state, tuple) and len(state) == 4 and state[0] == SAVED:
        return state[1], Layout(tuple(state[2]), tuple(state[3]))
    return state, None


def _names(columns: tuple[str, ...]) -> str:
    return repr(",".join(columns)) if columns else "no column"


_START_OVER = (
    "aligned steps keep their state per input partition, and would leave it behind unread. Start "
    "over: `python -m recovery reset DIR --yes` (and empty the sinks, or accept that the new run's "
    "alerts are added to the old ones)"
)


class _ProgressPartition(StatefulSourcePartition[Any, Any], Generic[S]):
    def __init__(
        self,
        inner: StatefulSourcePartition[Any, S],
        flow: str,
        progress: Progress,
        idle_after: float,
        layout: Layout,
    ) -> None:
        self._inner, self._flow, self._progress, self._idle_after = inner, flow, progress, idle_after
        self._layout = layout
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
        first = next((x for x in stamped if isinstance(x, EventBatch)), None)
        if first is not None:
            if not self._told:  # the partition's first events carry when reading began
                first.read_at, self._told = self._asked, True
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

    def snapshot(self) -> tuple[str, Any, tuple[str, ...], tuple[str, ...]]:
        return saved_state(self._inner.snapshot(), self._layout)

    def close(self) -> None:
        self._inner.close()
