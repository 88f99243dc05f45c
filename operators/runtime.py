"""Run detectors as Bytewax stateful operators, one state object per shard of entities.

The design card. A detector holds *many* entities' state (numpy columns, sketches) and sees
whole batches. Events are routed by a hash of their entity column to one of ``shards`` keys,
so Bytewax's per-key machinery (routing to workers, snapshots, resume) costs one Python call
per shard per batch instead of one per event, and a snapshot pickles a few arrays per shard.
Because an entity always lands in the same shard and a shard sees its events in input order,
the alerts do not depend on the number of workers or on how events were cut into batches.

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

import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
import numpy as np
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic

from connectors.events import EventBatch, Sample, gathered, sliced
from operators.alerts import Alert
from operators.routing import shard_key

__all__ = [
    "GLOBAL_KEY",
    "Detector",
    "DetectorGroup",
    "DetectorSpec",
    "Output",
    "detector_step",
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


def split_by_shard(
    batch: EventBatch, key: str | None, shards: int, seed: int
) -> list[tuple[str, EventBatch]]:
    """Cut a batch into per-shard sub-batches (input order kept within each).

    The key column is hashed once per batch (:meth:`EventBatch.key_hashes`); every sub-batch
    carries its events' hashes of that column under ``(key, seed)``, so a detector keyed by the
    same column with the same seed does not hash it again. The split is memoised on the batch:
    steps keyed by the same column get the same sub-batch objects (detectors never modify a
    batch), so only the first of them pays for the routing.
    """
    if key is None or shards == 1:
        return [(GLOBAL_KEY, batch)] if len(batch) else []
    memo_key = ("split_by_shard", key, shards, int(seed))
    cached: list[tuple[str, EventBatch]] | None = batch.memo.get(memo_key)
    if cached is None:
        cached = _split(batch, key, shards, int(seed))
        batch.memo[memo_key] = cached
    return list(cached)


def _split(batch: EventBatch, key: str, shards: int, seed: int) -> list[tuple[str, EventBatch]]:
    hashes = batch.key_hashes(key, seed)
    # The high hash bits pick the shard; detectors use the full hash, so both stay independent.
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
        )
        out.append((shard_key(s, shards), part))
        start = stop
    return out


class _DetectorLogic(StatefulBatchLogic[EventBatch, Output, bytes]):
    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    def on_batch(self, values: list[EventBatch]) -> tuple[Iterable[Output], bool]:
        return self.detector.process(EventBatch.concat(values)), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Output], bool]:
        return self.detector.flush(), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        # Bytes are immutable: later processing cannot alter a snapshot already taken.
        return pickle.dumps(self.detector, protocol=pickle.HIGHEST_PROTOCOL)


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
    step_id: str, events: Stream[EventBatch], spec: DetectorSpec, shards: int, seed: int
) -> Stream[Output]:
    """Route ``events`` to shards by ``spec.key`` and run ``spec``'s detector on each shard."""

    def route(batch: EventBatch) -> list[tuple[str, EventBatch]]:
        parts = split_by_shard(batch, spec.key, shards, seed)
        if spec.columns is None:
            return parts
        return [(shard, part.project(spec.columns)) for shard, part in parts]

    def build(resume: bytes | None) -> _DetectorLogic:
        return _DetectorLogic(pickle.loads(resume) if resume is not None else spec.factory())

    if spec.local is not None:
        events = op.map(f"{step_id}_local", events, spec.local)
    keyed = op.flat_map(f"{step_id}_route", events, route)
    out = op.stateful_batch(step_id, keyed, build)
    return op.map(f"{step_id}_out", out, _value)


def _value(key_value: tuple[str, Any]) -> Any:
    return key_value[1]
