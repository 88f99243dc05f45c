"""Per-entity event detectors: duplicates, amount outliers, velocity, threshold breaches, stuck sensors.

Every detector here is an *event* detector: it looks at each event of its shard, in input
order, against the state its entity had just before that event, and alerts on the event itself
(``event_ts`` = the event's ``ts``, ``trigger`` = ``str(position)``, no window).

============================  ===============================  ============================================
class                         used for (flow: detector)        state per shard
============================  ===============================  ============================================
:class:`DuplicateDetector`    fraud: duplicate_tx,             one :class:`sketches.AgingBloomFilter`
                              iot: duplicate_payload
:class:`OutlierDetector`      fraud: amount_outlier            two :class:`EntityTable` (decayed mean/var)
:class:`VelocityDetector`     fraud: card_velocity             DGIM per entity (two EntityTables)
:class:`BreachDetector`       iot: threshold_breaches          DGIM per entity (two EntityTables)
:class:`StuckDetector`        iot: stuck_sensor                :class:`EntityTable` (last value, run)
============================  ===============================  ============================================

Batch-boundary invariance. Each batch is grouped by entity with a *stable* sort of the entity
key hashes, so an entity's events stay in input order; per-event quantities that depend on
earlier events (previous timestamp, run lengths, prefix sums) are computed with shifts and
cumulative sums within the groups, seeded with the state carried from earlier batches.

Idle entities. The shard clock at an event is the largest ``ts`` the shard has seen up to and
including it (input order). An entity whose previous event (in input order) lies more than
``idle_ttl`` seconds before the shard clock *at its next event* starts afresh at that event, as
if never seen. Eviction at the end of a batch drops only entities that this rule would reset
at their next event (previous event more than ``idle_ttl`` before the shard clock *now*: the
clock only grows), so eviction bounds memory without making alerts depend on where batches
are cut. (One exception: velocity forgets a quiet card between ``gap + lateness`` and twice
that after its last event, so an event later than ``lateness`` behind the shard clock may or
may not find its predecessor, depending on when the last sweep ran.) An entity's previous event time is a
column of its table (``prev_ts``), which is also the table's eviction clock: no separate
last-seen column. The OutlierDetector and StuckDetector evict after every batch; the DGIM
detectors sweep their state whenever the shard clock has advanced by ``idle_ttl / 16`` since
the last sweep, so they hold no entity idle longer than about ``17 / 16 * idle_ttl``; an
entity with an empty DGIM and no alert they hold only about as long as its previous event can
still change a bit (``recall``, velocity's ``gap + lateness``, swept every ``recall``: at most
``2 * recall``; none for breaches), which bounds their state by the recent entities.

>>> import numpy as np
>>> from connectors.events import EventBatch
>>> batch = EventBatch("iot", np.arange(5), {
...     "device_id": np.array(["d1", "d1", "d2", "d1", "d1"], dtype=object),
...     "temperature": np.array([20.5, 20.5, 20.5, 20.5, 20.5]),
...     "ts": np.arange(5.0)})
>>> [(a.entity, a.trigger, a.score) for a in StuckDetector().process(batch)]
[('d1', '3', 3.0)]
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from connectors.events import EventBatch
from operators.alerts import Alert
from operators.entities import EntityTable
from operators.runtime import Detector, Output, event_clock
from operators.segments import exclusive_segmented_cumsum, hash_order
from sketches import DGIM, AgingBloomFilter
from sketches.dgim_table import MAX_WINDOW as DGIM_TABLE_MAX_WINDOW
from sketches.dgim_table import DGIMTable
from sketches.hashing import check_seed, fmix64, hash64_many

__all__ = [
    "ENTITY_SEED",
    "BreachDetector",
    "DuplicateDetector",
    "OutlierDetector",
    "StuckDetector",
    "VelocityDetector",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
BoolArray = NDArray[np.bool_]
KeyArray = NDArray[np.uint64]

ENTITY_SEED: Final = 0x5EED_E417
"""The entity detectors' default ``key_seed``: the seed of their entity-key hash. The flows
pass their routing seed instead (``SKETCHWATCH_SEED``), so a detector keys its tables by the
hashes the shard split computed and carried, and never hashes the entity strings again (~4 %
of the fraud flow). Snapshots from before ``key_seed`` keep this one (a class attribute); a
snapshot keyed by another seed cannot go back to a version without ``key_seed`` (its entities
would silently start afresh)."""

_BLOOM_SEED: Final = 0x5EED_D0B1
"""Default hash seed of the duplicate filters (independent of the runtime's shard hash, whose
high bits are constant-ish within a shard)."""

_KEY_PART_SEED: Final = 0x5EED_0C01
"""Seed of the per-column hashes combined into one multi-column duplicate key."""

_MAX_SPAN_HALF_LIVES: Final = 600.0
"""A batch whose event times span more half-lives than this is processed in halves, so decay
weights relative to one reference time never underflow (``2**-600`` is far from ``1e-308``)."""

_LN2: Final = math.log(2.0)

_DUP_CHUNK: Final = 1 << 15
"""Events per ``check_and_add_many`` call of the duplicate filter."""

_EVICT_EVERY: Final = 1.0 / 16
"""The entity detectors drop idle entities when the shard clock has advanced by this fraction
of ``idle_ttl`` since the last sweep, not at every batch (an eviction rebuilds a table: ~15 ms
at a million rows). An idle row kept a little longer changes nothing: an entity whose previous
event is more than ``idle_ttl`` back starts afresh whether or not its row is still there
(velocity's recent table, swept every ``recall``: for events within ``lateness``)."""

DEFAULT_LATENESS: Final = 60.0
"""VelocityDetector's default ``lateness`` (seconds an event may trail the shard clock)."""


# -- shared helpers --------------------------------------------------------------------------


def _positive(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def _non_negative(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return v


def _int_at_least(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _groups(batch: EventBatch, column: str, seed: int) -> _Groups:
    """:class:`_Groups` of ``batch`` by the hashes of ``column`` under ``seed``, memoised on the
    batch (read-only arrays), like the hashes: amount_outlier and card_velocity group the same
    sub-batch by card, and the hashes are the routing ones when ``seed`` is the routing seed."""
    key = ("entity_groups", column, seed)
    groups: _Groups | None = batch.memo.get(key)
    if groups is None:
        groups = batch.memo[key] = _Groups(batch.key_hashes(column, seed))
        for name in _Groups.__slots__:
            getattr(groups, name).flags.writeable = False
    return groups


def _timestamps(batch: EventBatch) -> FloatArray:
    return np.asarray(batch["ts"], dtype=np.float64)


class _Groups:
    """A batch grouped by entity: a stable sort of the key hashes (input order within groups).

    Attributes (arrays in sorted order unless noted): ``order`` (batch index of each sorted
    event), ``keys`` (sorted key hashes), ``first`` (first event of its entity in the batch),
    ``starts``/``ends`` (group bounds, one per entity), ``gid`` (group of each sorted event).
    """

    __slots__ = ("ends", "first", "gid", "keys", "order", "starts")

    def __init__(self, keys: KeyArray) -> None:
        self.order: IntArray
        self.keys: KeyArray
        self.order, self.keys = hash_order(keys)
        n = len(keys)
        self.first: BoolArray = np.ones(n, dtype=np.bool_)
        np.not_equal(self.keys[1:], self.keys[:-1], out=self.first[1:])
        self.starts: IntArray = np.flatnonzero(self.first)
        self.ends: IntArray = np.append(self.starts[1:], n)
        self.gid: IntArray = np.cumsum(self.first) - 1

    @property
    def unique_keys(self) -> KeyArray:
        return self.keys[self.starts]


def _previous(values: FloatArray, groups: _Groups, stored: FloatArray) -> FloatArray:
    """Per sorted event, the value of the previous event of its entity (``stored`` for the first)."""
    prev = np.empty_like(values)
    prev[1:] = values[:-1]
    prev[groups.starts] = stored
    return prev


# -- duplicates ------------------------------------------------------------------------------


class DuplicateDetector(Detector):
    """Re-occurrence of a key (one or more columns) within ``ttl`` seconds of event time.

    Used for fraud ``duplicate_tx`` (``key_columns=("tx_id",)``, entity ``tx_id``; the
    defaults) and iot ``duplicate_payload`` (``key_columns=("device_id", "payload")``, entity
    ``device_id``, ``ttl=3600.0``, ``capacity=2_000_000``, ``fp_rate=1e-7``).

    One :class:`sketches.AgingBloomFilter` per shard, sized for ``ceil(capacity / shards)``
    distinct keys per ``ttl`` seconds, is fed every event with
    :meth:`~sketches.AgingBloomFilter.check_and_add_many` at its ``ts`` (vectorised over the
    batch). A repeat inside one batch is reported at its second occurrence, exactly as if the
    events had come one by one.

    Parameters
    ----------
    flow : str, default "fraud"
        Flow name written into each alert.
    name : str, default "duplicate_tx"
        Detector name (``Alert.detector``).
    key_columns : tuple of str, default ("tx_id",)
        Columns whose values together form the key. With several columns, each column is
        hashed on its own (64 bits, seeded per column position) and the hashes are chained
        with a 64-bit mixer into one integer item: unambiguous for any values (no separator
        that a value could contain) and vectorised.
    entity_column : str, default "tx_id"
        Column giving the alert's ``entity``.
    ttl : float, default 300.0
        Seconds of event time a key is remembered (the filter's generation length).
    capacity : int, default 200_000
        Distinct keys expected per ``ttl`` seconds over *all* shards.
    fp_rate : float, default 1e-6
        Target false-positive rate of one check.
    shards : int, default 1
        Number of shards the runtime splits the events into (``SKETCHWATCH_SHARDS``).
    seed : int, default 0x5EEDD0B1
        Hash seed of the filter.

    Raises
    ------
    ValueError
        If ``key_columns`` is empty or a number is out of range.

    Notes
    -----
    Guarantee (from the aging filter): a key seen at ``t`` is reported again at every
    re-occurrence at ``t' in [t, t + ttl)`` (no false negatives; for late events, ``t`` is
    effectively the shard clock), never because of an occurrence ``>= 2 ttl`` earlier, and
    either way in between (generation boundaries). A key never seen is reported with
    probability at most about ``fp_rate`` while each shard receives at most
    ``capacity / shards`` distinct keys per ``ttl``; more raises the rate (see
    ``estimated_fp_rate`` in the evidence). Multi-column keys add a 64-bit hash collision
    chance (about ``n**2 / 2**65`` for ``n`` keys alive), negligible next to ``fp_rate``.

    Alerts: ``score = threshold = 1.0`` (a key present in the filter). Evidence: ``key``
    (column -> value), ``ttl``, ``fp_rate`` (configured), ``estimated_fp_rate`` (from the fill
    of the two generation filters at the end of the batch that raised the alert, so it may
    differ slightly between replays cut into other batches), ``capacity_per_shard``,
    ``shards``, ``num_bits``, ``num_hashes``.
    """

    def __init__(
        self,
        flow: str = "fraud",
        name: str = "duplicate_tx",
        key_columns: tuple[str, ...] = ("tx_id",),
        entity_column: str = "tx_id",
        ttl: float = 300.0,
        capacity: int = 200_000,
        fp_rate: float = 1e-6,
        shards: int = 1,
        seed: int = _BLOOM_SEED,
    ) -> None:
        if not key_columns:
            raise ValueError(f"{name}: key_columns must name at least one column")
        self.flow = flow
        self.name = name
        self.key_columns = tuple(key_columns)
        self.entity_column = entity_column
        self.shards = _int_at_least("shards", shards, 1)
        self.capacity = _int_at_least("capacity", capacity, 1)
        self.capacity_per_shard = -(-self.capacity // self.shards)
        self.filter = AgingBloomFilter(self.capacity_per_shard, fp_rate, ttl, seed)

    @property
    def ttl(self) -> float:
        return self.filter.ttl

    @property
    def fp_rate(self) -> float:
        return self.filter.fp_rate

    def estimated_fp_rate(self) -> float:
        """False-positive rate of a check now, from the fill of both generation filters."""
        return self.filter.estimated_fp_rate()

    def _hashes(self, batch: EventBatch) -> KeyArray:
        """The filter's hash of each event's key: ``hash64_many(item, seed)`` of the item the
        filter is fed (the key value, or the chained column hashes of a multi-column key).
        A single-column key reuses the hashes the runtime computed for routing when the column
        and seed match (:meth:`EventBatch.key_hashes`)."""
        cols = self.key_columns
        seed = self.filter.seed
        if len(cols) == 1:
            return batch.key_hashes(cols[0], seed)
        combined = hash64_many(batch[cols[0]], _KEY_PART_SEED)
        for j, col in enumerate(cols[1:], start=1):
            combined = fmix64(combined) ^ hash64_many(batch[col], (_KEY_PART_SEED + j) % 2**32)
        return hash64_many(combined, seed)

    def process(self, batch: EventBatch) -> list[Output]:
        if len(batch) == 0:
            return []
        ts = _timestamps(batch)
        hashes = self._hashes(batch)
        # In chunks: the same answers as one call (the filter is sequential), but the probe
        # arrays (events x hashes) stay cache-sized.
        check = self.filter.check_and_add_hashes
        # With several input partitions the filter keeps generations by each event's own time
        # and drops them by the shard's partition clock (operators.runtime.PartitionClock).
        clock = batch.clock
        if len(ts) <= _DUP_CHUNK:
            dup = check(hashes, ts, clock)
        else:
            dup = np.concatenate(
                [
                    check(
                        hashes[lo : lo + _DUP_CHUNK],
                        ts[lo : lo + _DUP_CHUNK],
                        None if clock is None else clock[lo : lo + _DUP_CHUNK],
                    )
                    for lo in range(0, len(ts), _DUP_CHUNK)
                ]
            )
        hits = np.flatnonzero(dup)
        if not len(hits):
            return []
        estimated = self.estimated_fp_rate()
        entities = batch[self.entity_column][hits].tolist()
        keys = [batch[c][hits].tolist() for c in self.key_columns]
        positions = batch.positions[hits].tolist()
        times = ts[hits].tolist()
        common = {
            "ttl": self.ttl,
            "fp_rate": self.fp_rate,
            "estimated_fp_rate": estimated,
            "capacity_per_shard": self.capacity_per_shard,
            "shards": self.shards,
            "num_bits": self.filter.num_bits,
            "num_hashes": self.filter.num_hashes,
        }
        out: list[Output] = []
        for j in range(len(hits)):
            key = {c: keys[i][j] for i, c in enumerate(self.key_columns)}
            out.append(
                Alert(
                    flow=self.flow,
                    detector=self.name,
                    entity=str(entities[j]),
                    event_ts=times[j],
                    score=1.0,
                    threshold=1.0,
                    trigger=str(positions[j]),
                    evidence={"key": key, **common},
                )
            )
        return out


# -- amount outliers ----------------------------------------------------------------------------

_OUTLIER_COLUMNS: Final[dict[str, tuple[Any, Any]]] = {
    "prev_ts": (np.float64, -math.inf),
    "mean": (np.float64, 0.0),
}
"""OutlierDetector state of every entity: previous event time (the eviction clock) and decayed
mean of the log values."""

_HISTORY_COLUMNS: Final[dict[str, tuple[Any, Any]]] = {
    "weight": (np.float64, 1.0),
    "m2": (np.float64, 0.0),
    "ref": (np.float64, -math.inf),
    "count": (np.uint32, 1),  # widened to int64 if a count ever passes 2**32 - 1
}
"""OutlierDetector state of the entities with more than one event since they (re)started: decayed
weight, decayed sum of squared deviations, reference time and count. An entity without a row here
is in the state one event leaves: weight 1.0, m2 0.0, reference time = its previous event time,
count 1 (exactly the values a first event computes)."""

_ONE_BITS: Final = np.array([1.0]).view(np.uint64)[0]


def _single_event(
    weight: FloatArray, m2: FloatArray, ref: FloatArray, prev_ts: FloatArray, count: NDArray[Any]
) -> BoolArray:
    """Where the state is bit for bit the single-event one (``1.0, 0.0, prev_ts, 1``)."""
    same: BoolArray = (
        (weight.view(np.uint64) == _ONE_BITS)
        & (m2.view(np.uint64) == 0)
        & (ref.view(np.uint64) == prev_ts.view(np.uint64))
        & (count == 1)
    )
    return same


def _split_outlier_table(old: EntityTable, idle_ttl: float) -> tuple[EntityTable, EntityTable]:
    """The two tables of an OutlierDetector pickled with one table of every column."""
    table = EntityTable(_OUTLIER_COLUMNS, idle_ttl=idle_ttl, clock="prev_ts")
    rows = table.rows(old.keys)
    table["prev_ts"][rows] = old["prev_ts"]
    table["mean"][rows] = old["mean"]
    history = EntityTable(_HISTORY_COLUMNS, idle_ttl=idle_ttl, clock="ref")
    count = old["count"]
    keep = ~_single_event(old["weight"], old["m2"], old["ref"], old["prev_ts"], count)
    if len(count) and count.max() > np.iinfo(np.uint32).max:
        history.widen("count", np.int64)
    rows = history.rows(old.keys[keep])
    for name in _HISTORY_COLUMNS:
        history[name][rows] = old[name][keep]
    return table, history


class _EntityKeyed(Detector):
    """A detector whose tables are keyed by the hashes of ``entity_column`` under ``key_seed``
    (see ``ENTITY_SEED``)."""

    entity_column: str
    key_seed: int = ENTITY_SEED  # what a snapshot from before the parameter was keyed by

    def _grouped(self, batch: EventBatch) -> _Groups:
        return _groups(batch, self.entity_column, self.key_seed)


class OutlierDetector(_EntityKeyed):
    """An entity's value far above its own decayed history, on a log scale (fraud ``amount_outlier``).

    Per entity (card) the state keeps the decayed weight, mean and ``M2`` of ``log(value)``
    with the weights of :class:`sketches.DecayingAggregate`: an event at ``t`` weighs
    ``exp(-ln2 (T - t) / half_life)`` at the entity's reference time ``T`` (its latest event
    time), plus the exact number of events folded in. Each event is compared with the state
    *before* it (which includes earlier events of the same entity in the same batch), then
    folded in, outliers included. An out-of-order event (``ts`` before the entity's reference
    time) is folded in with its weight below 1, like ``DecayingAggregate``.

    Memory: two :class:`~operators.entities.EntityTable` s. ``table`` holds every entity's
    previous event time and mean (24 bytes with its key); ``history`` holds weight, ``M2``,
    reference time and count (uint32 until a count needs more) only for the entities whose
    state differs from the one a single event leaves (weight 1, ``M2`` 0, reference time =
    previous event time, count 1): seen once since they (re)started, an entity costs no
    ``history`` row, and the values read for it are exactly the ones that row would hold.

    Alert when all hold: ``prior >= min_history`` (exact count of prior events since the
    entity's state began), ``z = (log(value) - mean) / sd >= z`` and
    ``value >= ratio * exp(mean)`` (``exp(mean)`` is the decayed geometric mean, the card's
    "typical" value). If ``sd`` is 0 (all history equal), ``z`` is ``+inf`` for a value above
    the mean. Values that are not positive and finite are ignored (neither compared nor folded
    in); they also do not advance the clock.

    Parameters
    ----------
    flow : str, default "fraud"
    name : str, default "amount_outlier"
    entity_column : str, default "card_id"
    value_column : str, default "amount"
    half_life : float, default 86400.0
        Seconds of event time for a weight to halve.
    min_history : int, default 5
        Prior events an entity needs before it can alert.
    z : float, default 4.0
        Minimum z-score of ``log(value)``.
    ratio : float, default 10.0
        Minimum ``value / exp(mean)``.
    idle_ttl : float, default 604800.0
        Seconds (7 days) without events after which an entity starts afresh (module docstring).
    key_seed : int, default ENTITY_SEED
        Seed of the entity-key hash; the flows pass their routing seed (see ``ENTITY_SEED``).

    Raises
    ------
    ValueError
        If a number is out of range.

    Notes
    -----
    Vectorised per batch: events are grouped by entity (stable sort), and the state before
    each event is the entity's stored state plus exclusive prefix sums of the decayed weights,
    centered values and squared centered values of the entity's earlier events in the batch,
    all relative to one reference time per entity and batch (values centered at the stored
    mean, so ``E[u**2] - E[u]**2`` loses no precision). Cost: a sort and a dozen numpy passes
    per batch, no Python per event (Python work only per alert). The floats differ from a
    one-event-at-a-time fold only by rounding (relative ``~1e-12``), so a decision can depend
    on the batch cut only for a ``z`` or ratio within that of its threshold.

    Evidence: ``value``, ``log_value``, ``mean`` and ``sd`` (of the log values), ``z`` (``None``
    when infinite), ``typical_value`` (``exp(mean)``), ``ratio_to_typical``, ``prior_count``,
    ``history_weight`` (decayed weight of the history at the event's time), ``half_life``,
    ``min_history``, ``z_threshold``, ``ratio_threshold``. ``score = z``, ``threshold = z``
    (the parameter).
    """

    def __init__(
        self,
        flow: str = "fraud",
        name: str = "amount_outlier",
        entity_column: str = "card_id",
        value_column: str = "amount",
        half_life: float = 86400.0,
        min_history: int = 5,
        z: float = 4.0,
        ratio: float = 10.0,
        idle_ttl: float = 7 * 86400.0,
        key_seed: int = ENTITY_SEED,
    ) -> None:
        self.flow = flow
        self.key_seed = check_seed(key_seed)
        self.name = name
        self.entity_column = entity_column
        self.value_column = value_column
        self.half_life = _positive("half_life", half_life)
        self.min_history = _int_at_least("min_history", min_history, 1)
        self.z = _non_negative("z", z)
        self.ratio = _positive("ratio", ratio)
        self.idle_ttl = _positive("idle_ttl", idle_ttl)
        self._rate = _LN2 / self.half_life
        self._clock = -math.inf
        self._swept = -math.inf  # shard clock at the last sweep of ``history``
        self.table = EntityTable(_OUTLIER_COLUMNS, idle_ttl=self.idle_ttl, clock="prev_ts")
        self.history = EntityTable(_HISTORY_COLUMNS, idle_ttl=self.idle_ttl, clock="ref")

    @property
    def n_entities(self) -> int:
        """Entities currently held in state."""
        return len(self.table)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "history" not in state:  # a snapshot from before the history table: split its table
            self._swept = -math.inf
            self.table, self.history = _split_outlier_table(state["table"], self.idle_ttl)

    def process(self, batch: EventBatch) -> list[Output]:
        values = np.asarray(batch[self.value_column], dtype=np.float64)
        ts = _timestamps(batch)
        ok = np.isfinite(values) & (values > 0) & np.isfinite(ts)
        if not ok.all():
            batch, values, ts = batch.take(ok), values[ok], ts[ok]
        out: list[Output] = []
        self._process(batch, np.log(values), ts, out)
        if len(batch) and self._clock >= self._swept + _EVICT_EVERY * self.idle_ttl:
            self._swept = self._clock
            self.table.evict(self._clock)
            # ref >= prev_ts: these entities just left ``table`` too
            self.history.evict(self._clock)
            self._sweep_history()
        return out

    def _sweep_history(self) -> None:
        """Drop the history rows that are not needed: entities no longer in ``table`` (evicted
        with a reference time after their previous event) and entities whose state is back to
        the single-event one (a reset, then one event). Neither changes a result: a row of an
        entity not in ``table`` is never read (its next event resets it) and is overwritten."""
        hist = self.history
        rows = self.table.find(hist.keys)
        gone = rows < 0
        prev_ts = self.table["prev_ts"][np.where(gone, 0, rows)] if len(self.table) else hist["ref"]
        hist.drop(gone | _single_event(hist["weight"], hist["m2"], hist["ref"], prev_ts, hist["count"]))

    def _process(self, batch: EventBatch, lv: FloatArray, ts: FloatArray, out: list[Output]) -> None:
        n = len(ts)
        if n == 0:
            return
        if n > 1 and self._rate * (ts.max() - ts.min()) > _MAX_SPAN_HALF_LIVES * _LN2:
            half = n // 2
            self._process(batch.take(np.arange(half)), lv[:half], ts[:half], out)
            self._process(batch.take(np.arange(half, n)), lv[half:], ts[half:], out)
            return
        g = self._grouped(batch)
        order = g.order
        sts, slv = ts[order], lv[order]
        clock = event_clock(batch, ts, self._clock)[order]
        self._clock = float(clock.max())
        table = self.table
        keys = g.unique_keys
        rows_g = table.rows(keys)  # new entities get the defaults (prev_ts = -inf)
        stored_ts = table["prev_ts"][rows_g]
        prev = _previous(sts, g, stored_ts)
        reset = prev < clock - self.idle_ttl
        # without a history row: the single-event state 1.0, 0.0, prev_ts, 1
        in_history, hist_rows, st = self.history.lookup(
            keys, {"weight": 1.0, "m2": 0.0, "ref": stored_ts, "count": 1}
        )
        st_weight, st_m2, st_ref, st_count = st["weight"], st["m2"], st["ref"], st["count"]

        # segments: runs of an entity's events sharing one history (a reset starts a new one)
        seg_start = g.first | reset
        ss = np.flatnonzero(seg_start)
        seg = np.cumsum(seg_start) - 1
        applies = ~reset[ss]  # the stored state is the segment's prior (only at a group's first)
        gs = g.gid[ss]
        ref0 = np.where(applies, st_ref[gs], -np.inf)
        ref_t = np.maximum(np.maximum.reduceat(sts, ss), ref0)
        with np.errstate(invalid="ignore", over="ignore"):
            decay0 = np.where(applies, np.exp(-self._rate * (ref_t - ref0)), 0.0)
        w0 = np.where(applies, st_weight[gs], 0.0) * decay0
        m20 = np.where(applies, st_m2[gs], 0.0) * decay0
        center = np.where(applies & (w0 > 0), table["mean"][rows_g[gs]], slv[ss])
        count0 = np.where(applies, st_count[gs], 0)

        w = np.exp(-self._rate * (ref_t[seg] - sts))
        u = slv - center[seg]
        wu = w * u
        wuu = wu * u

        # sums over each event's earlier events of its segment, never across segments: earlier
        # events' weights can be tiny and a batch-wide cumsum would drown them in rounding
        e0, e1, e2 = exclusive_segmented_cumsum(np.stack([w, wu, wuu]), ss[seg])
        s0 = w0[seg] + e0
        s1 = e1
        s2 = m20[seg] + e2
        prior = count0[seg] + (np.arange(n) - ss[seg])

        # new state per entity: its last segment, through its last event
        last = g.ends - 1
        ls = seg[last]
        t0, t1, t2 = s0[last] + w[last], s1[last] + wu[last], s2[last] + wuu[last]
        new_ts = sts[last]
        table["mean"][rows_g] = center[ls] + t1 / t0
        table["prev_ts"][rows_g] = new_ts
        new_m2 = np.maximum(t2 - t1 * t1 / t0, 0.0)
        new_ref = ref_t[ls]
        new_count = prior[last] + 1
        # history rows: entities that had one (kept current, whatever their state now) and
        # those past the single-event state
        hist = self.history
        if new_count.max() > np.iinfo(hist["count"].dtype).max:
            hist.widen("count", np.int64)
        values = {"weight": t0, "m2": new_m2, "ref": new_ref, "count": new_count}
        hist.store(
            keys, values, in_history, hist_rows, ~_single_event(t0, new_m2, new_ref, new_ts, new_count)
        )

        # decisions
        candidate = (prior >= self.min_history) & (s0 > 0)
        if not candidate.any():
            return
        with np.errstate(invalid="ignore", divide="ignore"):
            shift = s1 / s0
            mean = center[seg] + shift
            var = np.maximum(s2 / s0 - shift * shift, 0.0)
        sd = np.sqrt(var)
        dev = slv - mean
        tiny = 1e-12 * (1.0 + np.abs(mean))
        flat = sd <= tiny
        with np.errstate(invalid="ignore", divide="ignore"):
            zs = np.where(flat, np.where(dev > tiny, np.inf, 0.0), dev / np.where(flat, 1.0, sd))
        hit = candidate & (zs >= self.z) & (dev >= math.log(self.ratio))
        idx = np.flatnonzero(hit)
        if not len(idx):
            return
        idx = idx[np.argsort(order[idx], kind="stable")]  # alerts in input order
        bi = order[idx]
        entities = batch[self.entity_column][bi].tolist()
        positions = batch.positions[bi].tolist()
        weight_at = s0[idx] * np.exp(-self._rate * (sts[idx] - ref_t[seg[idx]]))
        for j, i in enumerate(idx.tolist()):
            zi = float(zs[i])
            value = math.exp(float(slv[i]))
            typical = math.exp(float(mean[i]))
            out.append(
                Alert(
                    flow=self.flow,
                    detector=self.name,
                    entity=str(entities[j]),
                    event_ts=float(sts[i]),
                    score=zi,
                    threshold=self.z,
                    trigger=str(positions[j]),
                    evidence={
                        "value": value,
                        "log_value": float(slv[i]),
                        "mean": float(mean[i]),
                        "sd": float(sd[i]) if not flat[i] else 0.0,
                        "z": zi if math.isfinite(zi) else None,
                        "typical_value": typical,
                        "ratio_to_typical": value / typical,
                        "prior_count": int(prior[i]),
                        "history_weight": float(weight_at[j]),
                        "half_life": self.half_life,
                        "min_history": self.min_history,
                        "z_threshold": self.z,
                        "ratio_threshold": self.ratio,
                    },
                )
            )


# -- DGIM counters: velocity and threshold breaches ---------------------------------------------


def _is_hot(masks: list[NDArray[Any]], last_alert: FloatArray) -> BoolArray:
    """Entities with a bucket or an alert: the ones the DGIM detectors' ``hot`` table holds."""
    hot: BoolArray = last_alert != -np.inf
    for mask in masks:
        hot |= mask != 0
    return hot


def _mask_dtype(window: int) -> type[np.unsignedinteger[Any]]:
    """The narrowest unsigned dtype holding a ``window``-bit DGIMTable mask (state columns)."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if window <= np.iinfo(dtype).bits:
            return dtype
    return np.uint64


class _DGIMDetector(_EntityKeyed):
    """Per entity a DGIM over one bit per event; alert when its estimate reaches ``threshold``.

    An alert is raised only at an event whose own bit is 1 (the estimate first reaches the
    threshold at such an event anyway; after a cooldown, an entity whose window still holds
    old ones alerts again only at a new 1-bit, not at an ordinary event). Subclasses define
    :meth:`_bits` (the bit of each event, in sorted order) and :meth:`_evidence` (their extra
    evidence). State per entity: its DGIM buckets as a row of a
    :class:`sketches.dgim_table.DGIMTable` (bit masks per bucket size, vectorised across
    entities; the same buckets and estimates as one :class:`sketches.DGIM` per entity), its
    previous timestamp and its last alert time. Windows longer than 64 events fall back to one
    :class:`sketches.DGIM` object per entity.

    Memory (the table path). Most entities' DGIM is empty (no 1-bit among their last
    ``last_n`` events) and they never alerted, so the state is held in two tables: for the
    *hot* entities only (a bucket or an alert), their masks, last alert time and previous
    timestamp (``_hot``), and the *recent* entities' previous timestamps (``_table``, 16 bytes
    per entity with its key). An entity missing from ``_hot`` has an empty DGIM and no alert,
    exactly what a row of defaults would hold; for such an entity the previous timestamp
    matters only to the bit of its next event (a reset of an empty DGIM changes nothing), so
    ``_table`` keeps it only about as long as it can (:attr:`recall`, swept every ``recall``:
    at most twice that, for events within the lateness): the rapid gap plus the allowed
    lateness for velocity, not at all for breaches (whose bits ignore it), instead of every
    entity for ``idle_ttl``. The eviction sweeps drop from ``_hot`` the idle entities
    and the entities that went cold again, and from ``_table`` the entities seen more than
    ``recall`` before the shard clock.
    """

    _uses_prev: bool = True
    """Whether :meth:`_bits` reads the previous timestamp (False: ``_table`` is never written)."""

    recall: float
    """Seconds of event time for which a cold entity's previous timestamp can still change the
    bit of its next event, when that event is at most ``lateness`` (velocity) behind the shard
    clock: ``_table`` forgets it after that, with no change to any bit or alert."""

    def __init__(
        self,
        flow: str,
        name: str,
        entity_column: str,
        last_n: int,
        r: int,
        threshold: int,
        cooldown: float,
        idle_ttl: float,
        recall: float,
        key_seed: int = ENTITY_SEED,
    ) -> None:
        self.flow = flow
        self.key_seed = check_seed(key_seed)
        self.name = name
        self.entity_column = entity_column
        self.last_n = _int_at_least("last_n", last_n, 1)
        self.r = _int_at_least("r", r, 2)
        self.threshold = _int_at_least("threshold", threshold, 1)
        self.cooldown = _non_negative("cooldown", cooldown)
        self.idle_ttl = _positive("idle_ttl", idle_ttl)
        self.recall = min(recall, self.idle_ttl)
        self.error_bound = DGIM(self.last_n, self.r).error_bound  # also validates window and r
        self._clock = -math.inf
        self._swept = -math.inf  # shard clock at the last eviction sweep
        self._swept_recent = -math.inf  # ... and at the last sweep of ``_table``
        self._states: dict[int, list[Any]] = {}  # the per-object path (last_n > 64)
        self._table: EntityTable | None = None  # the vectorised path (last_n <= 64): recent entities
        self._hot: EntityTable | None = None  # ... and the entities with buckets or an alert
        if self.last_n <= DGIM_TABLE_MAX_WINDOW:
            self._table = self._recent_table()
            self._hot = EntityTable(self._hot_columns(), self.idle_ttl, clock="prev_ts")

    def _recent_table(self) -> EntityTable:
        return EntityTable({"prev_ts": (np.float64, -math.inf)}, self._recent_ttl, clock="prev_ts")

    @property
    def _recent_ttl(self) -> float:
        # EntityTable needs a positive TTL; with no recall the table is never written
        return max(self.recall, 1e-9)

    def _hot_columns(self) -> dict[str, tuple[Any, Any]]:
        mask_dtype = _mask_dtype(self.last_n)
        columns: dict[str, tuple[Any, Any]] = {
            "prev_ts": (np.float64, -math.inf),
            "last_alert": (np.float64, -math.inf),
        }
        columns.update({f"m{j}": (mask_dtype, 0) for j in range(DGIMTable.levels_for(self.last_n))})
        return columns

    @property
    def n_entities(self) -> int:
        """Entities currently held in state (a sorted union of the two tables' keys)."""
        if self._table is None or self._hot is None:
            return len(self._states)
        return len(np.union1d(self._table.keys, self._hot.keys))

    def _bits(self, batch: EventBatch, g: _Groups, sts: FloatArray, prev: FloatArray) -> BoolArray:
        """The bit of each event in sorted order; ``prev`` is the entity's previous event time
        (``-inf`` at an entity's first event since it was new or reset)."""
        raise NotImplementedError

    def _evidence(self, batch: EventBatch, index: int, ts: float, prev_ts: float) -> dict[str, Any]:
        raise NotImplementedError

    def process(self, batch: EventBatch) -> list[Output]:
        if len(batch) == 0:
            return []
        if self._table is not None and self._hot is not None:
            return self._process_table(batch, self._table, self._hot)
        return self._process_objects(batch)

    def _process_table(self, batch: EventBatch, table: EntityTable, hot: EntityTable) -> list[Output]:
        """Vectorised across entities: one :class:`DGIMTable` row per entity (the same buckets
        as one ``DGIM`` per entity), the cooldown chain in Python over the candidate events only."""
        ts = _timestamps(batch)
        g = self._grouped(batch)
        sts = ts[g.order]
        clock = event_clock(batch, ts, self._clock)[g.order]
        self._clock = float(clock.max())
        keys = g.unique_keys
        levels = DGIMTable.levels_for(self.last_n)
        # a cold entity (no row in hot): an empty DGIM, no alert, its previous time in table
        # if recent (else -inf: too far back to change its bit, and a reset changes nothing)
        mask_names = [f"m{j}" for j in range(levels)]
        defaults = {"last_alert": -np.inf, "prev_ts": -np.inf, **dict.fromkeys(mask_names, 0)}
        was_hot, hot_rows, stored = hot.lookup(keys, defaults)
        rows = table.rows(keys) if self._uses_prev else None
        if rows is not None:
            cold = np.ones(len(keys), dtype=np.bool_)
            cold[was_hot] = False
            stored["prev_ts"][cold] = table["prev_ts"][rows[cold]]
        prev = _previous(sts, g, stored["prev_ts"])
        reset = prev < clock - self.idle_ttl
        bits = self._bits(batch, g, sts, np.where(reset, -np.inf, prev))
        masks = np.stack([stored[m] for m in mask_names], axis=1).astype(np.uint64)
        dgims = DGIMTable(self.last_n, self.r, masks=masks)
        est, lo, hi = dgims.add(g.gid, bits, reset)
        last_ts = sts[g.ends - 1]
        if rows is not None:
            table["prev_ts"][rows] = last_ts

        # Cooldown, in input order per entity, over the 1-bit events whose estimate is high enough;
        # a reset (at or before an event) forgets the entity's last alert.
        last_alert = stored["last_alert"]
        idx = np.arange(len(sts))
        last_reset = np.maximum.accumulate(np.where(reset, idx, -1))
        alert_at = g.starts - 1  # per entity: sorted index of its last alert (start - 1: earlier)
        thr, cooldown = self.threshold, self.cooldown
        hits: list[int] = []
        cand = np.flatnonzero(bits & (est >= thr))
        if len(cand):
            gid_l, ts_l, lr_l = g.gid[cand].tolist(), sts[cand].tolist(), last_reset[cand].tolist()
            la_d: dict[int, float] = {}
            at_d: dict[int, int] = {}
            for i, k, t, lr in zip(cand.tolist(), gid_l, ts_l, lr_l, strict=True):
                la = la_d[k] if k in la_d else float(last_alert[k])
                if lr > (at_d[k] if k in at_d else int(alert_at[k])):
                    la = -math.inf
                if t - la >= cooldown:
                    la, at_d[k] = t, i
                    hits.append(i)
                la_d[k] = la
            if at_d:
                alerted = np.fromiter(at_d.keys(), dtype=np.intp, count=len(at_d))
                alert_at[alerted] = np.fromiter(at_d.values(), dtype=np.intp, count=len(at_d))
                last_alert[alerted] = [la_d[k] for k in at_d]
        last_alert[last_reset[g.ends - 1] > alert_at] = -np.inf

        # Write back the entities that were hot (whatever their state now) or are now; the
        # others stay out of ``hot``.
        new_masks = dgims.masks
        values: dict[str, NDArray[Any]] = {m: new_masks[:, j] for j, m in enumerate(mask_names)}
        values.update(last_alert=last_alert, prev_ts=last_ts)
        hot.store(keys, values, was_hot, hot_rows, _is_hot([values[m] for m in mask_names], last_alert))
        self._sweep(table, hot, mask_names)
        if not hits:
            return []
        return self._alerts(batch, g, sts, prev, [(i, int(est[i]), (int(lo[i]), int(hi[i]))) for i in hits])

    def _sweep(self, table: EntityTable, hot: EntityTable, mask_names: list[str]) -> None:
        """Every ``1/16`` of ``idle_ttl`` of shard clock, drop the idle and the cold-again
        entities from ``hot``; every ``recall``, the entities seen before ``recall`` from
        ``table`` (which then holds at most ``2 * recall`` of them, of the events within the
        lateness: sweeping it more often, for a small table, cost more than its rows)."""
        if self._clock >= self._swept + _EVICT_EVERY * self.idle_ttl:
            self._swept = self._clock
            hot.evict(self._clock)
            hot.drop(~_is_hot([hot[m] for m in mask_names], hot["last_alert"]))
        if len(table) and self._clock >= self._swept_recent + self.recall:
            self._swept_recent = self._clock
            table.evict(self._clock)

    def _process_objects(self, batch: EventBatch) -> list[Output]:
        """One :class:`sketches.DGIM` object per entity, one Python step per event (windows
        longer than a :class:`DGIMTable` supports)."""
        ts = _timestamps(batch)
        g = self._grouped(batch)
        sts = ts[g.order]
        clock = event_clock(batch, ts, self._clock)[g.order]
        self._clock = float(clock.max())
        states = self._states
        keys = g.unique_keys.tolist()
        stored = [states.get(k) for k in keys]
        prev = _previous(sts, g, np.array([-math.inf if s is None else s[1] for s in stored]))
        reset = prev < clock - self.idle_ttl
        bits = self._bits(batch, g, sts, np.where(reset, -np.inf, prev))

        bits_l, reset_l, ts_l = bits.tolist(), reset.tolist(), sts.tolist()
        starts, ends = g.starts.tolist(), g.ends.tolist()
        last_n, r, thr, cooldown = self.last_n, self.r, self.threshold, self.cooldown
        hits: list[tuple[int, int, tuple[int, int]]] = []
        for k, key in enumerate(keys):
            st = stored[k]
            for i in range(starts[k], ends[k]):
                if reset_l[i] or st is None:
                    st = [DGIM(last_n, r), -math.inf, -math.inf, 0]
                    states[key] = st
                dgim = st[0]
                t = ts_l[i]
                st[1] = t
                if not bits_l[i]:
                    dgim.add(0)
                    continue
                dgim.add(1)
                st[3] += 1
                if st[3] >= thr and t - st[2] >= cooldown:
                    est = dgim.count()
                    st[3] = est
                    if est >= thr:
                        st[2] = t
                        hits.append((i, est, dgim.exact_bounds()))
        self._evict()
        if not hits:
            return []
        return self._alerts(batch, g, sts, prev, hits)

    def _alerts(
        self,
        batch: EventBatch,
        g: _Groups,
        sts: FloatArray,
        prev: FloatArray,
        hits: list[tuple[int, int, tuple[int, int]]],
    ) -> list[Output]:
        """Alerts for ``hits`` (sorted index, estimate, exact bounds), in input order."""
        hits = sorted(hits, key=lambda h: int(g.order[h[0]]))
        last_n, r, thr, cooldown = self.last_n, self.r, self.threshold, self.cooldown
        out: list[Output] = []
        entity_col = batch[self.entity_column]
        for i, est, (lo, hi) in hits:
            b = int(g.order[i])
            t = float(sts[i])
            out.append(
                Alert(
                    flow=self.flow,
                    detector=self.name,
                    entity=str(entity_col[b]),
                    event_ts=t,
                    score=float(est),
                    threshold=float(thr),
                    trigger=str(int(batch.positions[b])),
                    evidence={
                        "estimate": est,
                        "exact_bounds": [lo, hi],
                        "error_bound": self.error_bound,
                        "last_n": last_n,
                        "r": r,
                        "threshold": thr,
                        "cooldown": cooldown,
                        **self._evidence(batch, b, t, float(prev[i])),
                    },
                )
            )
        return out

    def _evict(self) -> None:
        if self._clock < self._swept + _EVICT_EVERY * self.idle_ttl:
            return
        self._swept = self._clock
        cutoff = self._clock - self.idle_ttl
        stale = [k for k, st in self._states.items() if st[1] < cutoff]
        for k in stale:
            del self._states[k]

    def _split_table(self) -> None:
        """Convert the single table of an older snapshot (every column for every entity) into
        ``_table`` (previous timestamps; the next sweep keeps the recent ones) and ``_hot``
        (entities with buckets or an alert)."""
        old = self._table
        assert old is not None
        self._table = self._recent_table()
        rows = self._table.rows(old.keys)
        self._table["prev_ts"][rows] = old["prev_ts"]
        columns = self._hot_columns()
        self._hot = EntityTable(columns, self.idle_ttl, clock="prev_ts")
        masks = [name for name in columns if name.startswith("m")]
        hot = old["last_alert"] != -np.inf
        for name in masks:
            hot |= old[name] != 0
        rows = self._hot.rows(old.keys[hot])
        for name in columns:
            self._hot[name][rows] = old[name][hot]

    def __getstate__(self) -> dict[str, Any]:
        if self._table is not None:  # the table pickles its live rows only
            return dict(self.__dict__)
        # Compact: one array per scalar field and the DGIMs' versioned bytes in one blob.
        state = {k: v for k, v in self.__dict__.items() if k != "_states"}
        sts = list(self._states.values())
        blobs = [st[0].to_bytes() for st in sts]
        state["_keys"] = np.fromiter(self._states.keys(), dtype=np.uint64, count=len(sts))
        state["_prev_ts"] = np.array([st[1] for st in sts], dtype=np.float64)
        state["_last_alert"] = np.array([st[2] for st in sts], dtype=np.float64)
        state["_upper"] = np.array([st[3] for st in sts], dtype=np.int64)
        state["_lengths"] = np.array([len(b) for b in blobs], dtype=np.uint32)
        state["_blob"] = b"".join(blobs)
        return state

    def _default_recall(self, state: dict[str, Any]) -> float:
        """:attr:`recall` for a snapshot from before it (``state``: its attributes)."""
        return float(state["idle_ttl"]) if self._uses_prev else 0.0

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "recall" not in state:  # a snapshot from before the recent table
            recall = min(self._default_recall(state), state["idle_ttl"])
            state = {**state, "recall": recall, "_swept_recent": -math.inf}
        if state.get("_table") is not None:
            self.__dict__.update(state)
            if state.get("_hot") is None:  # a snapshot from before the hot table: split it
                self._split_table()
            assert self._table is not None
            self._table.idle_ttl = self._recent_ttl  # an older table kept idle_ttl
            if not self._uses_prev:  # an older breach table: nothing of it is ever read
                self._table = self._recent_table()
            return
        state = dict(state)
        state.setdefault("_table", None)
        state.setdefault("_hot", None)
        keys, prev_ts = state.pop("_keys").tolist(), state.pop("_prev_ts").tolist()
        last_alert, upper = state.pop("_last_alert").tolist(), state.pop("_upper").tolist()
        lengths, blob = state.pop("_lengths").tolist(), state.pop("_blob")
        self.__dict__.update(state)
        self._states = {}
        offset = 0
        for k, p, a, u, length in zip(keys, prev_ts, last_alert, upper, lengths, strict=True):
            self._states[k] = [DGIM.from_bytes(blob[offset : offset + length]), p, a, u]
            offset += length


class VelocityDetector(_DGIMDetector):
    """Bursts of an entity's events close together in time (fraud ``card_velocity``).

    Per entity (card) a :class:`sketches.DGIM` over the last ``last_n`` events counts the events
    that came within ``gap`` seconds of the entity's previous event (``|ts - previous ts| <=
    gap``, previous in input order; the first event of an entity has bit 0). Alert at a rapid
    event when the DGIM estimate is ``>= min_rapid``, at most once per ``cooldown`` seconds of
    event time per entity (the next alert needs ``ts >= last alert ts + cooldown``). Only rapid
    events trigger, so the ones of a finished burst, still inside the last ``last_n`` events
    after the cooldown, do not make the entity's next ordinary event alert.

    Parameters
    ----------
    flow : str, default "fraud"
    name : str, default "card_velocity"
    entity_column : str, default "card_id"
    last_n : int, default 10
        DGIM window, in events of the entity.
    r : int, default 8
        DGIM buckets per size (relative error ``<= 1 / (r + 1)``; exact up to ``r`` ones).
    gap : float, default 10.0
        Seconds within which an event counts as rapid.
    min_rapid : int, default 8
        Estimate at which to alert.
    cooldown : float, default 300.0
    idle_ttl : float, default 3600.0
        An entity idle this long starts afresh (module docstring).
    lateness : float, default 60.0
        Seconds an event may trail the shard clock and still get its exact bit. An entity
        with an empty DGIM is remembered for ``gap + lateness`` (:attr:`recall`) to twice that
        after its last event (the table is swept every ``recall``), not ``idle_ttl``: an
        event later than ``lateness`` may miss its predecessor (bit 0). It bounds the state
        to the entities of the last ``2 * (gap + lateness)`` seconds plus the bursting ones.
    key_seed : int, default ENTITY_SEED
        Seed of the entity-key hash; the flows pass their routing seed (see ``ENTITY_SEED``).

    Notes
    -----
    Guarantee: the estimate is within ``error_bound * true`` of the true count of rapid events
    among the entity's last ``last_n`` events (``exact_bounds`` always holds the truth); with
    ``r >= last_n`` or counts ``<= r`` it is exact. Cost: the batch is grouped by entity and
    the bits computed with numpy; then one Python step per event (``DGIM.add`` is sequential),
    and ``DGIM.count`` only when the estimate could reach the threshold.

    Evidence: ``estimate``, ``exact_bounds``, ``error_bound``, ``last_n``, ``r``,
    ``threshold``, ``cooldown``, ``gap``, ``seconds_since_previous``. ``score`` = estimate,
    ``threshold`` = ``min_rapid``.
    """

    def __init__(
        self,
        flow: str = "fraud",
        name: str = "card_velocity",
        entity_column: str = "card_id",
        last_n: int = 10,
        r: int = 8,
        gap: float = 10.0,
        min_rapid: int = 8,
        cooldown: float = 300.0,
        idle_ttl: float = 3600.0,
        lateness: float = DEFAULT_LATENESS,
        key_seed: int = ENTITY_SEED,
    ) -> None:
        self.gap = _non_negative("gap", gap)
        self.lateness = _non_negative("lateness", lateness)
        recall = self.gap + self.lateness
        super().__init__(
            flow, name, entity_column, last_n, r, min_rapid, cooldown, idle_ttl, recall, key_seed
        )

    def _default_recall(self, state: dict[str, Any]) -> float:
        return float(state["gap"]) + float(state["lateness"])  # as __init__ (lateness: below)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__({"lateness": DEFAULT_LATENESS, **state})

    def _bits(self, batch: EventBatch, g: _Groups, sts: FloatArray, prev: FloatArray) -> BoolArray:
        with np.errstate(invalid="ignore"):
            bits: BoolArray = np.abs(sts - prev) <= self.gap
        return bits

    def _evidence(self, batch: EventBatch, index: int, ts: float, prev_ts: float) -> dict[str, Any]:
        return {"gap": self.gap, "seconds_since_previous": ts - prev_ts}


class BreachDetector(_DGIMDetector):
    """Repeated readings at or above a limit among an entity's recent readings (iot ``threshold_breaches``).

    Per entity (device) a :class:`sketches.DGIM` over the last ``last_n`` readings counts
    those with ``value >= limit``. Alert at a breaching reading when the estimate is
    ``>= min_breaches``, at most once per ``cooldown`` seconds of event time per entity.

    Parameters
    ----------
    flow : str, default "iot"
    name : str, default "threshold_breaches"
    entity_column : str, default "device_id"
    value_column : str, default "temperature"
    limit : float, default 80.0
    last_n : int, default 20
        DGIM window, in readings of the entity.
    r : int, default 8
    min_breaches : int, default 5
        Estimate at which to alert.
    cooldown : float, default 600.0
    idle_ttl : float, default 3600.0
        An entity idle this long starts afresh (module docstring).
    key_seed : int, default ENTITY_SEED
        Seed of the entity-key hash; the flows pass their routing seed (see ``ENTITY_SEED``).

    Notes
    -----
    Guarantee and cost as :class:`VelocityDetector`. NaN values count as no breach.

    Evidence: ``estimate``, ``exact_bounds``, ``error_bound``, ``last_n``, ``r``,
    ``threshold``, ``cooldown``, ``limit``, ``value``. ``score`` = estimate, ``threshold`` =
    ``min_breaches``.
    """

    _uses_prev = False  # the bits are the readings alone: a cold entity's previous time never matters

    def __init__(
        self,
        flow: str = "iot",
        name: str = "threshold_breaches",
        entity_column: str = "device_id",
        value_column: str = "temperature",
        limit: float = 80.0,
        last_n: int = 20,
        r: int = 8,
        min_breaches: int = 5,
        cooldown: float = 600.0,
        idle_ttl: float = 3600.0,
        key_seed: int = ENTITY_SEED,
    ) -> None:
        super().__init__(
            flow, name, entity_column, last_n, r, min_breaches, cooldown, idle_ttl, 0.0, key_seed
        )
        self.value_column = value_column
        self.limit = float(limit)

    def _bits(self, batch: EventBatch, g: _Groups, sts: FloatArray, prev: FloatArray) -> BoolArray:
        values = np.asarray(batch[self.value_column], dtype=np.float64)[g.order]
        bits: BoolArray = values >= self.limit
        return bits

    def _evidence(self, batch: EventBatch, index: int, ts: float, prev_ts: float) -> dict[str, Any]:
        return {"limit": self.limit, "value": float(batch[self.value_column][index])}


# -- stuck sensors -------------------------------------------------------------------------------


class StuckDetector(_EntityKeyed):
    """A sensor repeating exactly the same value (iot ``stuck_sensor``).

    Per entity (device) an :class:`~operators.entities.EntityTable` row keeps the last value
    and the length of the current run of identical consecutive values (input order). Alert at
    the reading where the run length reaches ``consecutive``: once per run, not again until the
    value changes (or the entity is reset after ``idle_ttl``).

    Parameters
    ----------
    flow : str, default "iot"
    name : str, default "stuck_sensor"
    entity_column : str, default "device_id"
    value_column : str, default "temperature"
    consecutive : int, default 3
        Identical readings in a row that make a stuck run (at least 2).
    idle_ttl : float, default 3600.0
        An entity idle this long starts afresh (module docstring).
    key_seed : int, default ENTITY_SEED
        Seed of the entity-key hash; the flows pass their routing seed (see ``ENTITY_SEED``).

    Raises
    ------
    ValueError
        If ``consecutive < 2`` or ``idle_ttl`` is not positive.

    Notes
    -----
    Exact (no sketch). Vectorised: stable sort by entity, run starts where the value changes
    (``!=``, so NaN never repeats), run lengths from the index of the latest run start
    (``np.maximum.accumulate``), the first run of each entity continuing the stored run when
    its first value equals the stored last value. No Python per event.

    Evidence: ``value``, ``run_length``, ``consecutive``. ``score`` = run length (=
    ``consecutive``), ``threshold`` = ``consecutive``.
    """

    def __init__(
        self,
        flow: str = "iot",
        name: str = "stuck_sensor",
        entity_column: str = "device_id",
        value_column: str = "temperature",
        consecutive: int = 3,
        idle_ttl: float = 3600.0,
        key_seed: int = ENTITY_SEED,
    ) -> None:
        self.flow = flow
        self.key_seed = check_seed(key_seed)
        self.name = name
        self.entity_column = entity_column
        self.value_column = value_column
        self.consecutive = _int_at_least("consecutive", consecutive, 2)
        self.idle_ttl = _positive("idle_ttl", idle_ttl)
        self._clock = -math.inf
        self._swept = -math.inf  # shard clock at the last eviction sweep
        self.table = EntityTable(
            {"prev_ts": (np.float64, -math.inf), "last": (np.float64, np.nan), "run": (np.int64, 0)},
            idle_ttl=self.idle_ttl,
            clock="prev_ts",
        )

    @property
    def n_entities(self) -> int:
        """Entities currently held in state."""
        return len(self.table)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._swept = -math.inf  # absent from snapshots of versions that evicted every batch
        self.__dict__.update(state)
        if self.table.clock is None:  # a snapshot from before the table's clock column
            self.table.use_clock("prev_ts")

    def process(self, batch: EventBatch) -> list[Output]:
        n = len(batch)
        if n == 0:
            return []
        ts = _timestamps(batch)
        g = self._grouped(batch)
        order = g.order
        sts = ts[order]
        values = np.asarray(batch[self.value_column], dtype=np.float64)[order]
        clock = event_clock(batch, ts, self._clock)[order]
        self._clock = float(clock.max())
        table = self.table
        rows = table.rows(g.unique_keys)
        prev = _previous(sts, g, table["prev_ts"][rows])
        reset = prev < clock - self.idle_ttl
        prev_value = _previous(values, g, table["last"][rows])
        brk = reset | (values != prev_value)  # a new run starts here
        idx = np.arange(n)
        run_start = np.maximum.accumulate(np.where(brk | g.first, idx, 0))
        continues = ~brk[run_start]  # the run began at a group's first event, continuing the stored run
        carried = np.where(continues, table["run"][rows][g.gid], 0)
        run = idx - run_start + 1 + carried

        last = g.ends - 1
        table["last"][rows] = values[last]
        table["run"][rows] = run[last]
        table["prev_ts"][rows] = sts[last]
        if self._clock >= self._swept + _EVICT_EVERY * self.idle_ttl:
            self._swept = self._clock
            table.evict(self._clock)

        idx_hit = np.flatnonzero(run == self.consecutive)
        if not len(idx_hit):
            return []
        idx_hit = idx_hit[np.argsort(order[idx_hit], kind="stable")]
        bi = order[idx_hit]
        entities = batch[self.entity_column][bi].tolist()
        positions = batch.positions[bi].tolist()
        out: list[Output] = []
        for j, i in enumerate(idx_hit.tolist()):
            out.append(
                Alert(
                    flow=self.flow,
                    detector=self.name,
                    entity=str(entities[j]),
                    event_ts=float(sts[i]),
                    score=float(run[i]),
                    threshold=float(self.consecutive),
                    trigger=str(positions[j]),
                    evidence={
                        "value": float(values[i]),
                        "run_length": int(run[i]),
                        "consecutive": self.consecutive,
                    },
                )
            )
        return out
