"""Flow factories and sources for ``bench.flows`` (run in subprocesses with ``python -m bytewax.run``).

- :func:`generated_flow`: the fraud flow fed :class:`MemorySource` batches from the generator,
  card ids remapped to ``cards`` distinct values and merchants to ``merchants`` (0: unchanged),
  pre-generated in memory (``preload``: the flow's summary then times only the detectors) or
  generated lazily (for peak RSS).
- :func:`files_flow`: the fraud flow on several JSONL files, one input partition per file.
- ``python -m bench._measure latency ...``: the fraud flow on a paced source, alert latency.

The flow is ``dataflows.common.build_flow`` unchanged; only its source (and, for latency, its
sink) is swapped by patching the names ``build_flow`` looks up while it builds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from numpy.typing import NDArray

import dataflows.common
from connectors.config import DEFAULTS, Config
from connectors.events import EventBatch
from connectors.files import FileSource
from connectors.generators import generator
from connectors.sql import SqlSink
from dataflows.fraud import detectors
from operators.alerts import Alert

__all__ = ["MemorySource", "MultiFileSource", "files_flow", "generated_flow", "remapped"]

_K_CARD, _K_MERCHANT = 2_654_435_761, 40_503  # odd, not multiples of 5: bijective mod 10**k


def remapped(events: int, seed: int, batch: int, cards: int, merchants: int) -> Iterator[EventBatch]:
    """The fraud generator's batches, ``card_id`` -> ``card-<p*K % cards>`` (all ``cards`` ids
    active once ``events >= cards``) and likewise ``merchant_id``; 0 keeps a column."""
    ids = {"card_id": ("card-", _K_CARD, cards), "merchant_id": ("m-", _K_MERCHANT, merchants)}
    # bound to no name here: nothing of a batch is held while the flow runs (d measures the
    # flow's memory, not this harness's)
    yield from map(partial(_remapped_batch, ids=ids), generator("fraud")(events, seed, 0, batch))


def _remapped_batch(b: EventBatch, ids: dict[str, tuple[str, int, int]]) -> EventBatch:
    p = b.positions.astype(np.int64)
    cols = {}
    for name in b.columns:  # replaced columns are never built (lazy)
        prefix, k, count = ids.get(name, ("", 0, 0))
        cols[name] = _ids(prefix, p * k % count) if count else b.columns[name]
    return EventBatch(b.flow, b.positions, cols)


def _ids(prefix: str, numbers: NDArray[np.int64]) -> NDArray[np.object_]:
    return np.char.add(prefix, numbers.astype(str)).astype(object)


class _IterPartition(StatefulSourcePartition[EventBatch, int]):
    def __init__(self, it: Iterator[EventBatch]) -> None:
        self.it, self.done = it, 0

    def next_batch(self) -> list[EventBatch]:
        b = next(self.it)  # StopIteration ends the partition
        self.done += 1
        return [b]

    def snapshot(self) -> int:
        return self.done


class MemorySource(FixedPartitionedSource[EventBatch, int]):
    """Event batches from :func:`remapped`, pre-generated (``preload``) or lazily; one partition."""

    def __init__(self, events: int, cards: int, merchants: int, batch: int, preload: bool) -> None:
        self.args = (events, 7, batch, cards, merchants)
        self.batches = list(remapped(*self.args)) if preload else None

    def list_parts(self) -> list[str]:
        return ["memory"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _IterPartition:
        it = iter(self.batches) if self.batches is not None else remapped(*self.args)
        return _IterPartition(it)


class MultiFileSource(FixedPartitionedSource[Any, Any]):
    """Several JSONL files, one partition per file (each a ``connectors.files.FileSource``)."""

    def __init__(self, paths: list[str], batch: int, parse_ahead: bool = False) -> None:
        self.sources = {
            Path(p).name: FileSource(p, "fraud", batch_size=batch, parse_ahead=parse_ahead) for p in paths
        }

    def list_parts(self) -> list[str]:
        return list(self.sources)

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> Any:
        return self.sources[for_part].build_part(step_id, for_part, resume_state)


BATCH = int(DEFAULTS["SKETCHWATCH_BATCH"])
"""Source batch size: the flows' own default, so the benchmark measures what users run."""


def _config(db: str, batch: int, partitioned_by: str = "") -> Config:
    env = {
        "SKETCHWATCH_SINKS": f"sqlite:///{db}",
        "SKETCHWATCH_BATCH": str(batch),
        "SKETCHWATCH_PARTITIONED_BY": partitioned_by,
    }
    if "SKETCHWATCH_SHARDS" in os.environ:  # to compare shard counts; the default otherwise
        env["SKETCHWATCH_SHARDS"] = os.environ["SKETCHWATCH_SHARDS"]
    return Config.from_env("fraud", env)


def _build(config: Config, source: Any, sinks: list[Any] | None = None) -> Dataflow:
    return dataflows.common.build_flow("fraud", detectors(config), config, source=source, sinks=sinks)


def generated_flow(
    events: int, db: str, cards: int = 0, merchants: int = 0, preload: bool = True, batch: int = BATCH
) -> Dataflow:
    """The fraud flow on generator batches (see :func:`remapped`), alerts into SQLite ``db``."""
    return _build(_config(db, batch), MemorySource(events, cards, merchants, batch, preload))


def files_flow(
    paths: list[str], db: str, batch: int = BATCH, parse_ahead: bool = False, partitioned_by: str = ""
) -> Dataflow:
    """The fraud flow on JSONL ``paths`` (one partition each), alerts into SQLite ``db``;
    ``parse_ahead``: each file read and parsed in a helper process (``SKETCHWATCH_PARSE_AHEAD``);
    ``partitioned_by``: ``SKETCHWATCH_PARTITIONED_BY`` (the files are split by those columns)."""
    return _build(_config(db, batch, partitioned_by), MultiFileSource(paths, batch, parse_ahead))


# -- latency -----------------------------------------------------------------------------------

EMITTED: dict[int, float] = {}
"""Batch index -> ``perf_counter`` when the paced source emitted it (same process)."""
LATENCIES: list[float] = []


class _PacedPartition(StatefulSourcePartition[EventBatch, int]):
    def __init__(self, batches: list[EventBatch], rate: float) -> None:
        self.batches, self.rate, self.i = batches, rate, 0
        self.t0 = time.perf_counter()
        self.w0 = datetime.now(timezone.utc)

    def _due(self, i: int) -> float:
        return i * len(self.batches[0]) / self.rate

    def next_batch(self) -> list[EventBatch]:
        if self.i >= len(self.batches):
            raise StopIteration
        if time.perf_counter() - self.t0 < self._due(self.i):
            return []
        b = self.batches[self.i]
        EMITTED[self.i] = time.perf_counter()
        self.i += 1
        return [b]

    def next_awake(self) -> datetime | None:
        return self.w0 + timedelta(seconds=self._due(self.i))

    def snapshot(self) -> int:
        return self.i


class PacedSource(FixedPartitionedSource[EventBatch, int]):
    """Pre-generated batches emitted at ``rate`` events per second of wall time."""

    def __init__(self, events: int, batch: int, rate: float) -> None:
        self.batches, self.rate = list(generator("fraud")(events, 7, 0, batch)), rate

    def list_parts(self) -> list[str]:
        return ["paced"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _PacedPartition:
        return _PacedPartition(self.batches, self.rate)


class _LatencyPartition(StatelessSinkPartition[Any]):
    def __init__(self, inner: StatelessSinkPartition[Any], batch: int) -> None:
        self.inner, self.batch = inner, batch

    def write_batch(self, items: list[Any]) -> None:
        self.inner.write_batch(items)
        now = time.perf_counter()
        for a in items:
            if isinstance(a, Alert) and a.trigger.isdigit():
                LATENCIES.append(now - EMITTED[int(a.trigger) // self.batch])

    def close(self) -> None:
        self.inner.close()


class LatencySink(DynamicSink[Any]):
    """A ``SqlSink`` that records, per event alert, write time minus its batch's emission time."""

    def __init__(self, inner: SqlSink, batch: int) -> None:
        self.inner, self.batch = inner, batch

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LatencyPartition:
        return _LatencyPartition(self.inner.build(step_id, worker_index, worker_count), self.batch)


def latency(events: int, batch: int, rate: float) -> dict[str, Any]:
    """Run the fraud flow on a paced source in this process; alert latency percentiles (ms)."""
    from bytewax.testing import run_main

    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "alerts.db")
        config = _config(db, batch)
        flow = _build(
            config, PacedSource(events, batch, rate), [LatencySink(SqlSink(f"sqlite:///{db}"), batch)]
        )
        run_main(flow)  # type: ignore[no-untyped-call]
    lat = np.array(LATENCIES) * 1e3
    pct = {f"p{q}": float(np.percentile(lat, float(q) / (10 if q == 999 else 1))) for q in (50, 99, 999)}
    return {"alerts": len(lat), "batch": batch, "rate": rate, **pct, "max": float(lat.max())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bench helper: paced-latency run")
    parser.add_argument("what", choices=["latency"])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100_000.0)
    args = parser.parse_args(argv)
    print(json.dumps(latency(args.events, args.batch, args.rate)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
