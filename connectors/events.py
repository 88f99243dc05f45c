"""The event contract between sources, detectors and sinks: schemas, columnar batches, dead letters.

Events travel through a flow as :class:`EventBatch` objects: one numpy column per schema field
plus each event's ``position`` in its input (line index of a file, sequence number of the
generator, offset of a Kafka partition). Detectors work on whole columns; one Python call per
batch, never per event. A record that cannot become an event becomes a :class:`DeadLetter`.

Timestamps are float64 seconds since the epoch (UTC), parsed from RFC 3339 or epoch numbers.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from sketches.hashing import hash64_many

try:
    from connectors import _cjsonl
except ImportError:  # pragma: no cover - built without a C compiler: the Python codec
    _cjsonl = None  # type: ignore[assignment]

__all__ = [
    "RAW_LIMIT",
    "SCHEMAS",
    "Anomaly",
    "DeadLetter",
    "EventBatch",
    "Field",
    "LazyColumns",
    "Progress",
    "Sample",
    "Schema",
    "gathered",
    "sliced",
]

RAW_LIMIT: Final = 4096
"""Bytes of a bad record's raw text kept in ``dead_letters.raw`` (the rest is cut)."""


@dataclass(frozen=True)
class Field:
    """One event field: ``kind`` is ``str``, ``float``, ``int`` or ``ts``; bounds are inclusive."""

    name: str
    kind: str
    required: bool = True
    low: float | None = None
    high: float | None = None

    @property
    def dtype(self) -> Any:
        return {"str": object, "float": np.float64, "int": np.int64, "ts": np.float64}[self.kind]


@dataclass(frozen=True)
class Schema:
    """The fields of one flow's events, in canonical order."""

    flow: str
    fields: tuple[Field, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


SCHEMAS: Final[dict[str, Schema]] = {
    "fraud": Schema(
        "fraud",
        (
            Field("tx_id", "str"),
            Field("card_id", "str"),
            Field("merchant_id", "str"),
            Field("amount", "float", low=0.0, high=1e9),
            Field("type", "str"),
            Field("ts", "ts"),
        ),
    ),
    "ddos": Schema(
        "ddos",
        (
            Field("client_ip", "str"),
            Field("endpoint", "str"),
            Field("status", "int", low=100, high=599),
            Field("bytes", "int", low=0, high=2**40),
            Field("ts", "ts"),
        ),
    ),
    "iot": Schema(
        "iot",
        (
            Field("device_id", "str"),
            Field("zone", "str"),
            Field("temperature", "float", low=-273.15, high=1e4),
            Field("payload", "str"),
            Field("ts", "ts"),
        ),
    ),
    "sentiment": Schema(
        "sentiment",
        (
            Field("brand", "str"),
            Field("sentiment", "float", low=-1.0, high=1.0),
            Field("text", "str", required=False),
            Field("ts", "ts"),
        ),
    ),
}


@dataclass(frozen=True)
class Progress:
    """Where a batch came from, for per-partition event-time clocks (``operators.runtime``).

    ``partition``: the source partition the batch was read from; ``partitions``: every
    partition of that source (a shard waits for each of them before its clock moves);
    ``state``: ``"data"`` (a batch of events), ``"final"`` (the partition has ended: an empty
    marker batch) or ``"idle"`` (the partition has had nothing for a while: an empty marker
    batch; it counts again with its next events).
    """

    partition: str
    partitions: tuple[str, ...]
    state: str = "data"

    def __post_init__(self) -> None:
        if self.state not in ("data", "final", "idle"):
            raise ValueError(f"Progress.state must be 'data', 'final' or 'idle', got {self.state!r}")
        if self.partition not in self.partitions:
            raise ValueError(f"Progress: partition {self.partition!r} is not among {self.partitions!r}")


@dataclass
class EventBatch:
    """A batch of one flow's events as columns (numpy arrays of equal length).

    String columns are numpy ``object`` arrays of ``str``; ``ts`` is float64 epoch seconds;
    ``positions`` (int64) says where each event sat in its input.

    ``hashes`` memoises :meth:`key_hashes`: ``(column, seed) -> hash64_many(column, seed)``,
    read-only arrays. One batch object is shared by every step of a worker, so the routing of
    several steps keyed by one column, and the detectors keyed by it, hash it once. A batch
    and its columns are never modified after it is built (the memo relies on it).
    """

    flow: str
    positions: NDArray[np.int64]
    columns: Mapping[str, NDArray[Any]] = field(default_factory=dict)
    hashes: dict[tuple[str, int], NDArray[np.uint64]] = field(default_factory=dict, repr=False, compare=False)
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    """Other per-batch results that are a pure function of the batch (the entity detectors' grouping)."""
    progress: Progress | None = field(default=None, compare=False)
    """The source partition it came from (set by ``connectors.sources.PartitionProgress``)."""
    progress_ts: NDArray[np.float64] | None = field(default=None, repr=False, compare=False)
    """Per event, the running maximum of ``ts`` in the batch it was cut from, when events were
    dropped from it before routing (the sampler's preselection), so that clocks are those of
    the whole batch; None: the running maximum of this batch's ``ts``."""
    read_at: float | None = field(default=None, repr=False, compare=False)
    """Wall-clock time (``time.time()``) of its source partition's first read request, on the
    partition's first batch only (set by ``connectors.sources.PartitionProgress``): where the
    flow's summary starts its clock, so the reading and parsing of the first batches count."""
    clock: NDArray[np.float64] | None = field(default=None, repr=False, compare=False)
    """Per event, the shard's event-time clock, set by the runtime before a detector sees the
    batch (see ``operators.runtime.PartitionClock``); None: the running maximum of ``ts``."""

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, name: str) -> NDArray[Any]:
        return self.columns[name]

    def __reduce__(self) -> tuple[Any, ...]:
        # Timely pickles every item it sends to another process twice, once to size the message
        # and once to write it (``Message::length_in_bytes``, then ``into_bytes``): the columns
        # are encoded on the first call only, and both calls hand over the same bytes.
        wire = self.__dict__.get(_WIRE)
        if wire is None:
            wire = self.__dict__[_WIRE] = pickle.dumps(self.__getstate__(), protocol=pickle.HIGHEST_PROTOCOL)
        return (_from_wire, (wire,))

    def __getstate__(self) -> dict[str, Any]:
        # Batches travel between workers pickled. The memo holds derived objects only
        # (recomputed on demand); the hashes travel along; string columns go as joined text.
        state = dict(self.__dict__)
        state.pop(_WIRE, None)
        state["memo"] = {}
        state["clock"] = None  # a shard's view, set again where the batch is processed
        state["columns"] = {name: (col.dtype, *encode_column(col)) for name, col in self.columns.items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        n = len(state["positions"])
        state["columns"] = {
            name: decode_column(dtype, encoding, parts, n)
            for name, (dtype, encoding, parts) in state["columns"].items()
        }
        self.__dict__.update(state)

    def key_hashes(self, column: str, seed: int) -> NDArray[np.uint64]:
        """``hash64_many(self[column], seed)``, computed once per batch, column and seed.

        The array is read-only and shared by every caller; copy it before changing it.

        >>> b = EventBatch("demo", np.arange(2), {"k": np.array(["a", "b"], dtype=object)})
        >>> b.key_hashes("k", 3) is b.key_hashes("k", 3)
        True
        >>> b.key_hashes("k", 3).tolist() == hash64_many(["a", "b"], 3).tolist()
        True
        """
        key = (column, int(seed))
        cached = self.hashes.get(key)
        if cached is None:
            cached = hash64_many(self.columns[column], key[1])
            cached.flags.writeable = False
            self.hashes[key] = cached
        return cached

    @classmethod
    def from_records(
        cls, flow: str, records: Sequence[Mapping[str, Any]], positions: Sequence[int]
    ) -> EventBatch:
        """Build a batch from already-validated records (dicts with every schema field)."""
        schema = SCHEMAS[flow]
        columns = {}
        for f in schema.fields:
            values = [r.get(f.name) for r in records]
            if f.kind == "str":
                col = np.empty(len(values), dtype=object)
                col[:] = ["" if v is None else v for v in values]
            else:
                col = np.asarray(values, dtype=f.dtype)
            columns[f.name] = col
        return cls(flow, np.asarray(positions, dtype=np.int64), columns)

    @classmethod
    def concat(cls, batches: Sequence[EventBatch]) -> EventBatch:
        """One batch holding ``batches`` in order (they must be of one flow).

        Key hashes memoised by every part are carried over (concatenated), and so are the
        progress (if all parts share it) and the clocks (if all parts have one)."""
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        columns = LazyColumns(tuple(first.columns), lambda name: np.concatenate([b[name] for b in batches]))
        progress = first.progress if all(b.progress == first.progress for b in batches) else None
        out = cls(
            first.flow,
            np.concatenate([b.positions for b in batches]),
            columns,
            progress=progress,
            progress_ts=_concat_all([b.progress_ts for b in batches]),
            clock=_concat_all([b.clock for b in batches]),
        )
        for key in first.hashes:
            if all(key in b.hashes for b in batches[1:]):
                out.hashes[key] = _read_only(np.concatenate([b.hashes[key] for b in batches]))
        return out

    def take(self, index: NDArray[Any]) -> EventBatch:
        """The events selected by an integer index array or a boolean mask, in that order.

        Memoised key hashes are carried over (selected alike)."""
        out = EventBatch(
            self.flow,
            self.positions[index],
            {k: v[index] for k, v in self.columns.items()},
            progress=self.progress,
            progress_ts=None if self.progress_ts is None else self.progress_ts[index],
            clock=None if self.clock is None else self.clock[index],
        )
        for key, h in self.hashes.items():
            out.hashes[key] = _read_only(h[index])
        return out

    def project(self, names: Sequence[str]) -> EventBatch:
        """The same events with only the columns ``names`` (views; memoised results shared).

        What a step sends to another worker is pickled whole: a step that reads few columns
        sends only those.

        >>> b = EventBatch("demo", np.arange(2), {"k": np.array(["a", "b"], dtype=object), "x": np.ones(2)})
        >>> list(b.project(["x"]).columns)
        ['x']
        """
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise KeyError(f"batch of flow {self.flow!r} has no column {missing[0]!r}")
        columns = self.columns
        # hashes and memo are shared: they are functions of the events, whatever columns show
        return replace(self, columns=LazyColumns(names, lambda n: columns[n]))

    def records(self) -> Iterator[dict[str, Any]]:
        """The events as plain dicts (for JSON Lines, samples and tests)."""
        names = list(self.columns)
        cols = [self.columns[n].tolist() for n in names]
        for row in zip(*cols, strict=True):
            yield dict(zip(names, row, strict=True))

    def to_jsonl(self) -> str:
        """The events as JSON Lines (``ts`` as epoch seconds), one line per event."""
        return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in self.records())


_WIRE: Final = "_wire"
"""Where a batch keeps its pickled state once pickled (:meth:`EventBatch.__reduce__`); batches
never change after they are built, and one sent to another process is dropped once sent."""


def _from_wire(wire: bytes) -> EventBatch:
    batch = EventBatch.__new__(EventBatch)
    batch.__setstate__(pickle.loads(wire))
    return batch


COLUMN_PARTS: Final = {"raw": 1, "text": 1, "codes": 2, "pickle": 1}
"""Byte strings sent per column, by encoding."""


def encode_column(col: Any) -> tuple[str, list[bytes]]:
    """A column as ``(encoding, byte strings)`` for :func:`decode_column`.

    ``"raw"``: a numeric array's bytes. ``"text"``: the strings joined by NUL, UTF-8 (an event's
    strings hold no NUL). ``"codes"``: a column of few distinct strings (judged on its first
    values, like :class:`connectors.parsing._Interner`) as its distinct strings (as ``"text"``)
    and int32 codes, so that equal values share one object where it is decoded too.
    ``"pickle"``: any other object column (not all ``str``, or a string holding NUL). Several
    times cheaper than pickling the strings one by one.
    """
    if col.dtype != object:
        return "raw", [np.ascontiguousarray(col).tobytes()]
    if _cjsonl is not None:  # the same bytes, ~2-3x faster
        fast = _cjsonl.encode_strings(np.ascontiguousarray(col), _PROBE)
        if fast is not None:
            return fast
    values = col.tolist()
    probe = values[:_PROBE]
    try:  # a value that is not a str (or not hashable) raises TypeError in join or set
        if 2 * len(set(probe)) <= len(probe):
            distinct = list(dict.fromkeys(values))
            joined = "\x00".join(distinct)
            if joined.count("\x00") == len(distinct) - 1:
                index = {v: i for i, v in enumerate(distinct)}
                codes = np.fromiter(map(index.__getitem__, values), dtype=np.int32, count=len(values))
                return "codes", [joined.encode("utf-8", "surrogatepass"), codes.tobytes()]
        text: str | None = "\x00".join(values)
    except TypeError:
        text = None
    if text is not None and text.count("\x00") == len(values) - 1:
        return "text", [text.encode("utf-8", "surrogatepass")]
    return "pickle", [pickle.dumps(col, protocol=pickle.HIGHEST_PROTOCOL)]


def decode_column(dtype: Any, encoding: str, parts: list[bytes], n: int) -> Any:
    """The inverse of :func:`encode_column` (``n`` values of ``dtype``)."""
    if encoding == "raw":
        return np.frombuffer(parts[0], dtype=dtype).copy()
    if encoding == "pickle":
        return pickle.loads(parts[0])
    if encoding == "text" and _cjsonl is not None:
        out = np.empty(n, dtype=object)
        _cjsonl.decode_text(parts[0], out)
        return out
    values = parts[0].decode("utf-8", "surrogatepass").split("\x00")
    if encoding == "text":
        return np.fromiter(values, dtype=object, count=n)
    distinct = np.fromiter(values, dtype=object, count=len(values))
    return distinct[np.frombuffer(parts[1], dtype=np.int32)]


_PROBE: Final = 8192


def _concat_all(arrays: list[NDArray[np.float64] | None]) -> NDArray[np.float64] | None:
    """The arrays concatenated, or None if one of them is None."""
    present = [a for a in arrays if a is not None]
    return np.concatenate(present) if len(present) == len(arrays) else None


def _read_only(array: NDArray[Any]) -> NDArray[Any]:
    array.flags.writeable = False
    return array


class LazyColumns(Mapping[str, NDArray[Any]]):
    """Columns computed on first use by ``make(name)`` and kept (read-only).

    A batch cut into parts (by shard) or glued from parts gets its columns this way: a
    column that no reader asks for is never copied, and one that is asked for is copied once.

    >>> cols = LazyColumns(("a", "b"), lambda name: np.arange(3) * (2 if name == "b" else 1))
    >>> cols["b"].tolist(), list(cols), cols["b"] is cols["b"]
    ([0, 2, 4], ['a', 'b'], True)
    """

    def __init__(self, names: Sequence[str], make: Callable[[str], NDArray[Any]]) -> None:
        self._names, self._make = tuple(names), make
        self._done: dict[str, NDArray[Any]] = {}

    def __getitem__(self, name: str) -> NDArray[Any]:
        col = self._done.get(name)
        if col is None:
            if name not in self._names:
                raise KeyError(name)
            col = self._done[name] = _read_only(self._make(name))
        return col

    def __contains__(self, name: object) -> bool:
        return name in self._names  # without computing it (Mapping's default would)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def gathered(columns: Mapping[str, NDArray[Any]], order: NDArray[np.intp]) -> LazyColumns:
    """``columns`` reordered by ``order``, each column gathered on first use."""
    return LazyColumns(tuple(columns), lambda name: columns[name][order])


def sliced(columns: Mapping[str, NDArray[Any]], start: int, stop: int) -> LazyColumns:
    """Events ``start`` to ``stop`` of ``columns`` (views), each taken on first use."""
    return LazyColumns(tuple(columns), lambda name: columns[name][start:stop])


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not become an event: where it was, why, and its raw bytes (cut)."""

    flow: str
    source: str
    position: int
    reason: str
    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) > RAW_LIMIT:
            object.__setattr__(self, "raw", self.raw[:RAW_LIMIT])


@dataclass(frozen=True)
class Sample:
    """One event kept by a flow's stratified reservoir for a window (the ``samples`` table)."""

    flow: str
    window_start: float
    window_end: float
    stratum: str
    position: int
    event: dict[str, Any]
    partition: str = ""
    """The input partition ``position`` refers to, for sources of several partitions (Kafka
    partitions, files): positions alone repeat across them. Empty for one-partition sources."""

    @property
    def sample_id(self) -> str:
        key = f"{self.flow}|{self.window_start!r}|{self.window_end!r}|{self.stratum}|{self.position}"
        if self.partition:
            key += f"|{self.partition}"
        return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Anomaly:
    """Ground truth: an anomaly the generator injected, for precision/recall (``dataflows.evaluate``).

    A detector's alert matches it when detector and entity are equal and the alert's
    ``event_ts`` lies in ``[start, end]``.
    """

    detector: str
    entity: str
    start: float
    end: float
