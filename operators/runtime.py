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

from connectors.events import EventBatch, Sample
from operators.alerts import Alert
from sketches.hashing import hash64_many

__all__ = ["GLOBAL_KEY", "Detector", "DetectorSpec", "Output", "detector_step", "split_by_shard"]

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
    (``None``: one global state), and a factory for a fresh shard state."""

    name: str
    key: str | None
    factory: Callable[[], Detector]


def split_by_shard(
    batch: EventBatch, key: str | None, shards: int, seed: int
) -> list[tuple[str, EventBatch]]:
    """Cut a batch into per-shard sub-batches (input order kept within each)."""
    if key is None or shards == 1:
        return [(GLOBAL_KEY, batch)] if len(batch) else []
    # The high hash bits pick the shard; detectors use the full hash, so both stay independent.
    shard = ((hash64_many(batch[key], seed) >> np.uint64(40)) % np.uint64(shards)).astype(np.intp)
    order = np.argsort(shard, kind="stable")
    cuts = np.flatnonzero(np.diff(shard[order])) + 1
    out = []
    for idx in np.split(order, cuts):
        if len(idx):
            out.append((f"{int(shard[idx[0]]):04d}", batch.take(idx)))
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


def detector_step(
    step_id: str, events: Stream[EventBatch], spec: DetectorSpec, shards: int, seed: int
) -> Stream[Output]:
    """Route ``events`` to shards by ``spec.key`` and run ``spec``'s detector on each shard."""

    def route(batch: EventBatch) -> list[tuple[str, EventBatch]]:
        return split_by_shard(batch, spec.key, shards, seed)

    def build(resume: bytes | None) -> _DetectorLogic:
        return _DetectorLogic(pickle.loads(resume) if resume is not None else spec.factory())

    keyed = op.flat_map(f"{step_id}_route", events, route)
    out = op.stateful_batch(step_id, keyed, build)
    return op.map(f"{step_id}_out", out, _value)


def _value(key_value: tuple[str, Any]) -> Any:
    return key_value[1]
