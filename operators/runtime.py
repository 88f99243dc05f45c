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
from typing import Any, Final

import bytewax.operators as op
import numpy as np
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic

from connectors.events import EventBatch, Sample, gathered, sliced
from operators.alerts import Alert

__all__ = ["GLOBAL_KEY", "Detector", "DetectorSpec", "Output", "detector_step", "shard_key", "split_by_shard"]

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


def shard_key(shard: int, shards: int) -> str:
    """The Bytewax state key of ``shard`` (of ``shards``): chosen so workers get equal shares.

    Bytewax routes a state key to worker ``h(key) % workers``, where ``h`` is SipHash-1-3
    with a zero key over the key's UTF-8 bytes and a ``0xff`` terminator (Rust's ``str``
    hashing; Bytewax 0.21.1, checked by a test against its routing). With plain names the
    split is luck: ``0000``-``0015`` land 10/6 on two workers. Shard ``s`` gets the first key
    ``"{s:04d}.{k}"`` with ``h % 840 == s % 840``; as 840 is a multiple of every count from 2
    to 8, shard ``s`` goes to worker ``s % workers`` for up to 8 workers, so the shards are
    spread as evenly as they can be. Beyond 64 shards, plain names (balanced on average).
    """
    if shards > len(_BALANCED_KEYS):
        return f"{shard:04d}"
    return _BALANCED_KEYS[shard]


def balanced_key(shard: int) -> str:
    """The first ``"{shard:04d}.{k}"`` that Bytewax routes to ``shard % workers`` for 2 to 8
    workers (its route hash is ``shard`` mod 840). :data:`_BALANCED_KEYS` holds the first 64."""
    k = 0
    while _bytewax_route_hash(f"{shard:04d}.{k}") % _LCM_2_TO_8 != shard % _LCM_2_TO_8:
        k += 1
    return f"{shard:04d}.{k}"


_LCM_2_TO_8: Final = 840
_BALANCED_KEYS: Final = (
    "0000.724",
    "0001.14",
    "0002.1975",
    "0003.2523",
    "0004.3",
    "0005.1006",
    "0006.651",
    "0007.380",
    "0008.1296",
    "0009.893",
    "0010.1185",
    "0011.95",
    "0012.788",
    "0013.1782",
    "0014.226",
    "0015.33",
    "0016.140",
    "0017.846",
    "0018.871",
    "0019.801",
    "0020.262",
    "0021.3847",
    "0022.878",
    "0023.276",
    "0024.1977",
    "0025.1486",
    "0026.272",
    "0027.354",
    "0028.380",
    "0029.0",
    "0030.190",
    "0031.273",
    "0032.957",
    "0033.713",
    "0034.1219",
    "0035.2516",
    "0036.242",
    "0037.1416",
    "0038.2879",
    "0039.178",
    "0040.52",
    "0041.1905",
    "0042.963",
    "0043.19",
    "0044.459",
    "0045.869",
    "0046.185",
    "0047.60",
    "0048.597",
    "0049.1778",
    "0050.2422",
    "0051.1498",
    "0052.186",
    "0053.114",
    "0054.1678",
    "0055.1368",
    "0056.215",
    "0057.916",
    "0058.1097",
    "0059.1772",
    "0060.2790",
    "0061.328",
    "0062.1135",
    "0063.1319",
)
"""``balanced_key(s)`` for shards 0 to 63, computed once (a test checks them)."""


_M64: Final = (1 << 64) - 1


def _bytewax_route_hash(key: str) -> int:
    """SipHash-1-3 (key 0, 0) of ``key``'s UTF-8 bytes and ``0xff``: Rust's ``DefaultHasher``
    over a ``String``, which Bytewax uses to pick a state key's worker."""
    data = key.encode() + b"\xff"
    v = [0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573]
    end = len(data) - len(data) % 8
    for i in range(0, end, 8):
        _sip_absorb(v, int.from_bytes(data[i : i + 8], "little"))
    _sip_absorb(v, ((len(data) & 0xFF) << 56) | int.from_bytes(data[end:], "little"))
    v[2] ^= 0xFF
    for _ in range(3):
        _sip_round(v)
    return (v[0] ^ v[1] ^ v[2] ^ v[3]) & _M64


def _sip_absorb(v: list[int], m: int) -> None:
    v[3] ^= m
    _sip_round(v)  # one compression round: SipHash-1-3
    v[0] ^= m


def _sip_round(v: list[int]) -> None:
    v0, v1, v2, v3 = v
    v0 = (v0 + v1) & _M64
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & _M64
    v3 = _rotl(v3, 16) ^ v2
    v0 = (v0 + v3) & _M64
    v3 = _rotl(v3, 21) ^ v0
    v2 = (v2 + v1) & _M64
    v1 = _rotl(v1, 17) ^ v2
    v2 = _rotl(v2, 32)
    v[:] = v0, v1, v2, v3


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


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
