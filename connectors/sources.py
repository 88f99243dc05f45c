"""Synthetic input: a flow's deterministic event generator as a resumable Bytewax source.

The generator function of a flow (from :mod:`connectors.generators`) follows :data:`GenerateFn`:
``generate(n_events, seed, start, batch_size)`` yields the events with positions
``start .. n_events - 1`` in order, in batches of at most ``batch_size``, and the same arguments
always yield the same events; starting at ``start`` yields exactly the tail of a run started at 0.

Delivery: exactly-once input. The resume state is the next position; a resumed run calls the
generator again with ``start`` = that position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.events import EventBatch

__all__ = ["GenerateFn", "GeneratorSource"]

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
