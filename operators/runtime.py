"""Run detectors as Bytewax stateful operators, one state object per shard of entities.

The design card. A detector holds *many* entities' state (numpy columns, sketches) and sees
whole batches. Events are routed by a hash of their entity column to one of ``shards`` keys,
so Bytewax's per-key machinery (routing to workers, snapshots, resume) costs one Python call
per shard per batch instead of one per event, and a snapshot pickles a few arrays per shard.
Because an entity always lands in the same shard and a shard sees its events in input order,
the alerts do not depend on the number of workers or on how events were cut into batches.
Input already partitioned by the entity column (``aligned``) keeps one shard per source
partition instead, on the worker that reads it, so those events are never exchanged.

>>> import numpy as np
>>> from connectors.events import EventBatch
>>> batch = EventBatch("demo", np.arange(4), {"user": np.array(["a", "b", "a", "c"], dtype=object)})
>>> parts = split_by_shard(batch, "user", shards=8, seed=0)
>>> sorted(pos for _, part in parts for pos in part.positions.tolist())
[0, 1, 2, 3]
>>> all(len(set(part["user"].tolist())) >= 1 for _, part in parts)
True
"""

from __future__ import annotations

import math
import pickle
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import bytewax.operators as op
import numpy as np
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic
from numpy.typing import NDArray

from connectors.events import EventBatch, Progress, Sample, gathered, sliced
from operators.alerts import Alert
from operators.entities import dumps_tables
from operators.routing import partition_key, shard_key

__all__ = [
    "GLOBAL_KEY",
    "Detector",
    "DetectorGroup",
    "DetectorSpec",
    "Output",
    "PartitionClock",
    "detector_step",
    "event_clock",
    "group_spec",
    "group_specs",
    "split_by_shard",
]

GLOBAL_KEY = "all"
Output = Alert | Sample


class Detector:
    """One detector's state for one shard of entities.

    Subclasses implement :meth:`process` (a batch of this shard's events, in input order) and
    may implement :meth:`flush` (end of input: close open windows). Contract: the alerts must
    not depend on where batch boundaries fall, decisions use event time only, and the object
    must pickle compactly (it is the Bytewax snapshot of the shard).
    """

    name = "detector"

    def process(self, batch: EventBatch) -> list[Output]:
        raise NotImplementedError

    def flush(self) -> list[Output]:
        return []


def event_clock(batch: EventBatch, ts: NDArray[np.float64], carried: float) -> NDArray[np.float64]:
    """Per event of ``batch`` (whose timestamps are ``ts``), the shard's event-time clock after
    it, never below ``carried`` (the clock before the batch): the runtime's partition clock
    (:class:`PartitionClock`, in :attr:`EventBatch.clock`) when set, else the running maximum
    of ``ts``. Detectors judge lateness, idleness and expiry by it, never by a lone ``ts``.

    >>> import numpy as np
    >>> b = EventBatch("demo", np.arange(3), {"ts": np.array([5.0, 3.0, 9.0])})
    >>> event_clock(b, b["ts"], 4.0).tolist()
    [5.0, 5.0, 9.0]
    """
    if batch.clock is not None:
        clock = np.array(batch.clock, dtype=np.float64)
    else:
        clock = np.maximum.accumulate(ts if batch.progress_ts is None else batch.progress_ts)
    np.maximum(clock, carried, out=clock)
    return clock


@dataclass(frozen=True)
class DetectorSpec:
    """How a flow runs a detector: its step name, the column its entities are keyed by
    (``None``: one global state), and a factory for a fresh shard state.

    What travels between workers is cut to what the detector needs: ``columns`` lists the
    columns it reads (``None``: all; a detector that reads another fails with ``KeyError``,
    so a wrong list shows in any test), and ``local`` is an optional reduction, a pure
    function of a batch run on the worker that holds it, before routing."""

    name: str
    key: str | None
    factory: Callable[[], Detector]
    columns: tuple[str, ...] | None = None
    local: Callable[[EventBatch], EventBatch] | None = None


def shard_keys(key: str | None, shards: int) -> list[str]:
    """Every state key :func:`split_by_shard` may route a batch keyed by ``key`` to."""
    if key is None or shards == 1:
        return [GLOBAL_KEY]
    return [shard_key(s, shards) for s in range(shards)]


def split_by_shard(
    batch: EventBatch, key: str | None, shards: int, seed: int
) -> list[tuple[str, EventBatch]]:
    """Cut a batch into per-shard sub-batches (input order kept within each).

    The key column is hashed once per batch (:meth:`EventBatch.key_hashes`); every sub-batch
    carries its events' hashes of that column under ``(key, seed)``, so a detector keyed by the
    same column with the same seed does not hash it again. The split is not kept on the batch:
    a flow's steps are keyed by distinct columns (:func:`group_specs`; a spec with a ``local``
    reduction splits its own reduced batch), and a memo would hold every step's sub-batches
    until the last step had read the batch (~10 MB per 100,000 events).
    """
    if key is None or shards == 1:
        return [(GLOBAL_KEY, batch)] if len(batch) else []
    return _split(batch, key, shards, int(seed))


def _split(batch: EventBatch, key: str, shards: int, seed: int) -> list[tuple[str, EventBatch]]:
    hashes = batch.key_hashes(key, seed)
    # The high hash bits pick the shard; the entity detectors key their tables by the full hash
    # (exact lookups: the bits a shard's keys share cost nothing).
    shard = (hashes >> np.uint64(40)) % np.uint64(shards)
    # A stable sort of small integers (radix sort for 16 bits) keeps input order within shards.
    shard = shard.astype(np.uint16 if shards <= 1 << 16 else np.intp)
    order = np.argsort(shard, kind="stable")
    counts = np.bincount(shard, minlength=shards).tolist()
    # One gather per column, on first use (a detector reads few of the columns), then each
    # sub-batch is a slice (a view) of the gathered arrays, shared by every step of this key.
    positions = batch.positions[order]
    positions.flags.writeable = False
    columns = gathered(batch.columns, order)
    sorted_hashes = hashes[order]
    sorted_hashes.flags.writeable = False
    progress_ts = None if batch.progress_ts is None else batch.progress_ts[order]
    out = []
    start = 0
    hash_key = (key, seed)
    for s, count in enumerate(counts):
        if not count:
            continue
        stop = start + count
        part = EventBatch(
            batch.flow,
            positions[start:stop],
            sliced(columns, start, stop),
            {hash_key: sorted_hashes[start:stop]},
            progress=batch.progress,
            progress_ts=None if progress_ts is None else progress_ts[start:stop],
        )
        out.append((shard_key(s, shards), part))
        start = stop
    return out


def partition_shard(batch: EventBatch, columns: tuple[str, ...] | None) -> tuple[str, EventBatch]:
    """``batch`` (with ``columns`` only, if given) under the state key of its source partition
    (:func:`~operators.routing.partition_key`), clocked by that partition alone: the shard
    holds no other partition's entities, so no other partition's progress holds it back."""
    p = batch.progress
    if p is None:
        raise ValueError("partition_shard: the batch has no progress (its source partition is unknown)")
    part = batch if columns is None or p.state != "data" else batch.project(columns)
    # A fresh memo: what is memoised belongs to the batch it was built on, not to this copy.
    own = replace(part, progress=Progress(p.partition, (p.partition,), p.state), memo={})
    return partition_key(p.partition, p.partitions), own


class PartitionClock:
    """A shard's event-time clock: the least progress over the source's partitions.

    A detector's clock used to be the running maximum of the timestamps it saw. With several
    input partitions read by turns (Bytewax takes one batch per partition in turn), one
    partition's batch can run far ahead of another's, and the clock it pushes forward would
    make the other partition's events late (windows closed, duplicate generations rotated
    away). So each partition's progress (the running maximum of its timestamps) is kept, and
    the clock after each event is the least of them: of this partition's running maximum and
    of every other partition the source announced (:class:`~connectors.events.Progress`)
    that has not ended or gone idle. A partition not heard from yet holds the clock back; one
    trailing the most advanced by more than ``max_skew`` seconds does not (its events are
    then late), which bounds what the detectors keep open. The clock never goes back.

    Batches without progress (sources not wrapped in ``PartitionProgress``) get no clock: the
    detectors then take the running maximum of their timestamps, as with one partition.

    >>> import numpy as np
    >>> from connectors.events import EventBatch, Progress
    >>> def batch(part, ts):
    ...     return EventBatch("demo", np.arange(len(ts)), {"ts": np.array(ts, dtype=float)},
    ...                       progress=Progress(part, ("a", "b")))
    >>> c = PartitionClock(max_skew=3600.0)
    >>> c.clock_of(batch("a", [10.0, 50.0])).tolist()  # "b" not heard from yet: no progress
    [-inf, -inf]
    >>> c.clock_of(batch("b", [5.0, 20.0, 60.0])).tolist()  # now the least of a's 50 and b's
    [5.0, 20.0, 50.0]
    """

    def __init__(self, max_skew: float = math.inf) -> None:
        self.max_skew = float(max_skew)
        self.maxima: dict[str, float] = {}
        self.announced: set[str] = set()
        self.quiet: set[str] = set()  # ended or idle
        self.clock = -math.inf

    def clock_of(self, batch: EventBatch) -> NDArray[np.float64] | None:
        """The clock after each event of ``batch`` (None without progress); markers (ended,
        idle) only update the state and get an empty clock."""
        p = batch.progress
        if p is None:
            return None
        self.announced.update(p.partitions)
        if p.state != "data":
            self.quiet.add(p.partition)
            return np.zeros(0)
        self.quiet.discard(p.partition)
        ts = np.asarray(batch["ts"], dtype=np.float64)
        running = event_clock(batch, ts, self.maxima.get(p.partition, -math.inf))  # batch.clock unset here
        if len(running):
            self.maxima[p.partition] = float(running[-1])
        clock = np.minimum(running, self._others(p.partition, running))
        np.maximum(clock, self.clock, out=clock)
        if len(clock):
            self.clock = float(clock[-1])
        return clock

    def _others(self, own: str, running: NDArray[np.float64]) -> NDArray[np.float64]:
        """Per event (``running``: ``own``'s progress after it), the least progress of the other
        partitions that hold the clock back: heard from and within ``max_skew`` of the most
        advanced, or announced and never heard from (``-inf``)."""
        others = {q: self.maxima.get(q) for q in self.announced - self.quiet - {own}}
        low = np.full(len(running), np.inf)
        if not others:
            return low
        if any(m is None for m in others.values()):
            return np.full(len(running), -np.inf)
        seen = [m for m in others.values() if m is not None]
        top = np.maximum(running, max(seen))
        for m in seen:
            np.minimum(low, np.where(m >= top - self.max_skew, m, np.inf), out=low)
        return low


class _Snapshot:
    """A shard's state (detector and clock) at the end of an epoch, pickled only when Bytewax
    pickles this (its snapshot step, which comes right after): the state is not held twice or
    pickled twice. If the logic is about to change the state while Bytewax still holds this,
    it calls :meth:`freeze` first, which pickles the state as it still is. The logic holds it
    weakly: without recovery Bytewax drops it unpickled, and then it is never pickled at all."""

    __slots__ = ("__weakref__", "_frozen", "_logic")

    def __init__(self, logic: _DetectorLogic) -> None:
        self._logic: _DetectorLogic | None = logic
        self._frozen: bytes | None = None

    def freeze(self) -> None:
        """Pickle the state now (the logic lets go of this snapshot)."""
        logic, self._logic = self._logic, None
        if logic is not None:
            if logic.pending is not None and logic.pending() is self:
                logic.pending = None
            self._frozen = logic.dumps()

    def __reduce__(self) -> tuple[Any, ...]:
        self.freeze()
        return (pickle.loads, (self._frozen,))


class _DetectorLogic(StatefulBatchLogic[EventBatch, Output, _Snapshot]):
    def __init__(self, detector: Detector, clock: PartitionClock) -> None:
        self.detector = detector
        self.clock = clock
        # the latest snapshot while Bytewax holds it, until pickled or frozen
        self.pending: weakref.ref[_Snapshot] | None = None

    def _changing(self) -> None:
        snapshot = self.pending() if self.pending is not None else None
        self.pending = None
        if snapshot is not None:
            snapshot.freeze()

    def dumps(self) -> bytes:
        """The pickled ``(detector, clock)``, what a resumed shard is built from."""
        return dumps_tables((self.detector, self.clock))

    def on_batch(self, values: list[EventBatch]) -> tuple[Iterable[Output], bool]:
        self._changing()
        out: list[Output] = []
        for run in _runs_by_progress(values):
            batch = EventBatch.concat(run)
            clock = self.clock.clock_of(batch)
            if len(batch):
                if clock is not None:
                    batch = _with_clock(batch, clock)
                out += self.detector.process(batch)
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Output], bool]:
        self._changing()
        return self.detector.flush(), StatefulBatchLogic.RETAIN

    def snapshot(self) -> _Snapshot:
        self._changing()
        snapshot = _Snapshot(self)
        self.pending = weakref.ref(snapshot)
        return snapshot


def _runs_by_progress(values: list[EventBatch]) -> list[list[EventBatch]]:
    """``values`` cut into runs of consecutive batches of one partition (one clock each)."""
    runs: list[list[EventBatch]] = []
    for b in values:
        if (
            runs
            and runs[-1][-1].progress == b.progress
            and (b.progress is None or b.progress.state == "data")
        ):
            runs[-1].append(b)
        else:
            runs.append([b])
    return runs


def _with_clock(batch: EventBatch, clock: NDArray[np.float64]) -> EventBatch:
    """``batch`` (shared memo and hashes) carrying the shard's ``clock``."""
    return replace(batch, clock=clock)


class DetectorGroup(Detector):
    """Several detectors keyed by one column, run on each shard of one step.

    They share the routing and, between workers, the exchange of their events: the batch
    travels once with the union of their columns instead of once per detector (fraud's
    amount_outlier and card_velocity, iot's three device detectors). Each detector still sees
    only its own columns (a projection, which shares the batch's memoised hashes and groups).
    """

    name = "group"

    def __init__(self, members: list[tuple[Detector, tuple[str, ...] | None]]) -> None:
        self.members = members

    def process(self, batch: EventBatch) -> list[Output]:
        out: list[Output] = []
        for detector, columns in self.members:
            out += detector.process(batch if columns is None else batch.project(columns))
        return out

    def flush(self) -> list[Output]:
        return [alert for detector, _ in self.members for alert in detector.flush()]


def group_specs(specs: list[DetectorSpec]) -> list[list[DetectorSpec]]:
    """``specs`` as the steps that run them: those keyed by one entity column (and without a
    ``local`` reduction) together, the others alone; in order of first appearance."""
    groups: dict[Any, list[DetectorSpec]] = {}
    for spec in specs:
        shared = spec.key is not None and spec.local is None
        groups.setdefault(("key", spec.key) if shared else ("alone", spec.name), []).append(spec)
    return list(groups.values())


def group_spec(specs: list[DetectorSpec]) -> DetectorSpec:
    """One spec running ``specs`` (all keyed by one column) as a :class:`DetectorGroup`, under
    the step id of their names joined by ``__``; a single spec is returned as it is."""
    if len(specs) == 1:
        return specs[0]
    keys = {s.key for s in specs}
    if len(keys) != 1 or None in keys or any(s.local is not None for s in specs):
        raise ValueError(
            f"group_spec: {[s.name for s in specs]} are not keyed by one column without local steps"
        )
    columns: tuple[str, ...] | None = None
    if all(s.columns is not None for s in specs):
        columns = tuple(dict.fromkeys(c for s in specs for c in s.columns or ()))

    def factory() -> Detector:
        return DetectorGroup([(s.factory(), s.columns) for s in specs])

    return DetectorSpec("__".join(s.name for s in specs), specs[0].key, factory, columns)


def detector_step(
    step_id: str,
    events: Stream[EventBatch],
    spec: DetectorSpec,
    shards: int,
    seed: int,
    max_skew: float = math.inf,
    aligned: bool = False,
) -> Stream[Output]:
    """Route ``events`` to shards by ``spec.key`` and run ``spec``'s detector on each shard,
    with a :class:`PartitionClock` per shard (``max_skew``: see there).

    ``aligned``: the input is partitioned by ``spec.key`` already (every entity's events are in
    one source partition), so each source partition's events go whole to a shard of their own
    on the worker that reads them (:func:`partition_shard`), not split by hash; batches
    without progress (a source not wrapped in ``PartitionProgress``) are split as usual."""

    every_shard = shard_keys(spec.key, shards)

    def route(batch: EventBatch) -> list[tuple[str, EventBatch]]:
        if aligned and batch.progress is not None:
            return [partition_shard(batch, spec.columns)]
        if batch.progress is not None and batch.progress.state != "data":
            return [(shard, batch) for shard in every_shard]  # a partition ended or went idle
        parts = split_by_shard(batch, spec.key, shards, seed)
        if spec.columns is None:
            return parts
        return [(shard, part.project(spec.columns)) for shard, part in parts]

    def build(resume: Any) -> _DetectorLogic:
        if resume is None:
            return _DetectorLogic(spec.factory(), PartitionClock(max_skew))
        # (detector, clock); pickled bytes of it or of a bare detector from older versions
        state = pickle.loads(resume) if isinstance(resume, bytes) else resume
        if isinstance(state, Detector):  # a snapshot from before partition clocks
            return _DetectorLogic(state, PartitionClock(max_skew))
        detector, clock = state
        return _DetectorLogic(detector, clock)

    if spec.local is not None:
        events = op.map(f"{step_id}_local", events, spec.local)
    keyed = op.flat_map(f"{step_id}_route", events, route)
    out = op.stateful_batch(step_id, keyed, build)
    return op.map(f"{step_id}_out", out, _value)


def _value(key_value: tuple[str, Any]) -> Any:
    return key_value[1]
