"""BASELINE PEER (not sketchwatch): the fraud detectors the straightforward per-event Bytewax way.

This is the reference design a team would write from the Flink job it ports: parse every JSON
line with ``json.loads`` into a dict, ``op.key_on`` by entity and ``op.stateful_map`` with one
sketch object per key from the best per-item libraries, one Python call per event and step.
``bench.flows`` times it next to ``dataflows.fraud`` on the same file; it is written as well as
that design allows (no deliberate slowness) and gives the same alerts up to sketch error
(``tests/bench/test_baseline.py``). Run::

    BENCH_INPUT=events.jsonl BENCH_DB=baseline.db python -m bytewax.run bench.baseline_fraud

or ``python -m bytewax.run "bench.baseline_fraud:build('events.jsonl', 'baseline.db')"``.

Detectors (same parameters as the fraud flow's defaults):

- ``duplicate_tx``: keyed by a shard of the ``tx_id`` (``crc32 % 16``, as the Flink design keys
  its Bloom state by shard; a key per ``tx_id`` would make the filter pointless). Per shard two
  rotating pyprobables ``BloomFilter`` (mmh3 double hashing, FP 1e-6, sized for
  ``200_000 / 16`` ids per TTL): the generation is ``floor(shard clock / 300 s)``; when it
  advances the current filter becomes the previous one (two steps: both are new). An id is a
  duplicate when either filter holds it; it is then added to the current one.
- ``merchant_surge``: keyed by ``merchant_id/type``; an explicit per-key 60-s tumbling window
  inside ``stateful_map`` (a datasketches ``count_min_sketch`` per key and open window, sized
  for the one item it counts: 5 hashes x 55 buckets), closed when the key's event-time
  watermark (its largest ``ts`` minus 5 s lateness) passes the window end; events of closed
  windows are dropped as late. The baseline is the same bias-corrected EWMA (alpha 0.1, empty
  windows count 0) as sketchwatch: alert when ``count >= max(30, 5 x baseline)`` after 5 windows.
  Chosen over Bytewax's ``TumblingWindower``/``EventClock`` because that clock mixes in system
  time (not deterministic on replay) and keeps the EWMA in a second keyed step. Difference to
  sketchwatch: the watermark is per key, not per shard, so a window closes at its key's next
  event and the last open window of each key is never evaluated (``stateful_map`` has no end of
  input hook).
- ``amount_outlier``: keyed by ``card_id``; plain Python floats: the decayed (half-life 1 day)
  weighted mean and variance of ``log(amount)``; alert when at least 5 prior events, z >= 4 and
  amount >= 10 x exp(mean); then the event is folded in.
- ``card_velocity``: keyed by ``card_id``; a ``deque(maxlen=10)`` of "within 10 s of the
  previous transaction" bits (exact, where sketchwatch uses a DGIM); alert at a rapid event when
  8 or more of the last 10 are rapid, at most once per 300 s.

Cards and merchants idle for an hour (a week for outliers) start afresh, measured per key.
Alerts are ``operators.alerts.Alert`` written by the same ``connectors.sql.SqlSink`` as sketchwatch.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections import deque
from datetime import datetime
from typing import Any

import bytewax.operators as op
import datasketches as ds  # type: ignore[import-untyped]
import mmh3
from bytewax.connectors.files import FileSource
from bytewax.dataflow import Dataflow, Stream
from probables import BloomFilter

from connectors.sql import SqlSink
from operators.alerts import Alert

__all__ = ["build", "parse"]

FLOW = "fraud"
SHARDS = 16
DUP_TTL, DUP_CAPACITY, DUP_FP = 300.0, 200_000, 1e-6
SURGE_WINDOW, SURGE_LATENESS, SURGE_MIN, SURGE_FACTOR, SURGE_WARMUP, SURGE_ALPHA = 60.0, 5.0, 30, 5.0, 5, 0.1
CMS_HASHES, CMS_BUCKETS = 5, 55
OUT_HALF_LIFE, OUT_MIN_HISTORY, OUT_Z, OUT_RATIO, OUT_IDLE = 86_400.0, 5, 4.0, 10.0, 604_800.0
VEL_LAST_N, VEL_GAP, VEL_MIN_RAPID, VEL_COOLDOWN = 10, 10.0, 8, 300.0
IDLE_TTL = 3600.0
_MASK64 = (1 << 64) - 1
_LOG_RATIO = math.log(OUT_RATIO)
_RATE = math.log(2.0) / OUT_HALF_LIFE

Event = dict[str, Any]


def parse(line: str) -> Event:
    """One JSON line as a dict, ``ts`` as epoch seconds (numbers or RFC 3339 strings)."""
    ev: Event = json.loads(line)
    ts = ev["ts"]
    if isinstance(ts, str):
        ev["ts"] = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    return ev


def _mmh3_hashes(key: Any, depth: int = 1) -> list[int]:
    """pyprobables hash function: ``depth`` hashes by double hashing of one 128-bit mmh3."""
    h1, h2 = mmh3.hash64(key if isinstance(key, (str, bytes)) else str(key), signed=False)
    return [(h1 + i * h2) & _MASK64 for i in range(depth)]


# -- duplicate_tx ------------------------------------------------------------------------------


def _bloom() -> BloomFilter:
    return BloomFilter(
        est_elements=-(-DUP_CAPACITY // SHARDS), false_positive_rate=DUP_FP, hash_function=_mmh3_hashes
    )


class DupState:
    """Two rotating Bloom filters of one shard."""

    __slots__ = ("cur", "gen", "prev")

    def __init__(self) -> None:
        self.cur, self.prev, self.gen = _bloom(), _bloom(), -1

    def __getstate__(self) -> tuple[bytes, bytes, int]:
        return bytes(self.cur), bytes(self.prev), self.gen

    def __setstate__(self, state: tuple[bytes, bytes, int]) -> None:
        cur, prev, self.gen = state
        self.cur = BloomFilter.frombytes(cur, hash_function=_mmh3_hashes)
        self.prev = BloomFilter.frombytes(prev, hash_function=_mmh3_hashes)


def _dup_shard(ev: Event) -> str:
    return str(zlib.crc32(ev["tx_id"].encode()) % SHARDS)


def duplicate_tx(state: DupState | None, ev: Event) -> tuple[DupState, Alert | None]:
    """Report ``ev`` if its ``tx_id`` is in either generation filter; then remember it."""
    if state is None:
        state = DupState()
    ts = ev["ts"]
    gen = int(ts // DUP_TTL)
    if gen > state.gen:
        if gen == state.gen + 1:
            state.prev, state.cur = state.cur, _bloom()
        elif state.gen >= 0:
            state.prev, state.cur = _bloom(), _bloom()
        state.gen = gen
    tx = ev["tx_id"]
    hashes = _mmh3_hashes(tx, state.cur.number_hashes)
    if state.cur.check_alt(hashes) or state.prev.check_alt(hashes):
        alert = Alert(FLOW, "duplicate_tx", tx, ts, 1.0, 1.0, trigger=tx, evidence={"key": {"tx_id": tx}})
        state.cur.add_alt(hashes)
        return state, alert
    state.cur.add_alt(hashes)
    return state, None


# -- merchant_surge ----------------------------------------------------------------------------


def _cms() -> Any:
    return ds.count_min_sketch(CMS_HASHES, CMS_BUCKETS)


class SurgeState:
    """One merchant/type: open windows (id -> Count-Min), watermark and EWMA baseline."""

    __slots__ = ("closed", "ewma_first", "ewma_last", "ewma_sum", "max_ts", "windows")

    def __init__(self) -> None:
        self.windows: dict[int, Any] = {}
        self.max_ts = -math.inf
        self.closed = -(1 << 62)
        self.ewma_sum, self.ewma_first, self.ewma_last = 0.0, 0, -(1 << 62)

    def __getstate__(self) -> tuple[Any, ...]:
        wins = {w: c.serialize() for w, c in self.windows.items()}
        return wins, self.max_ts, self.closed, self.ewma_sum, self.ewma_first, self.ewma_last

    def __setstate__(self, s: tuple[Any, ...]) -> None:
        wins, self.max_ts, self.closed, self.ewma_sum, self.ewma_first, self.ewma_last = s
        self.windows = {w: ds.count_min_sketch.deserialize(b) for w, b in wins.items()}


def _surge_close(state: SurgeState, entity: str, w: int) -> Alert | None:
    count = state.windows.pop(w).get_estimate(entity)
    a = SURGE_ALPHA
    idle = w * SURGE_WINDOW - (state.ewma_last + 1) * SURGE_WINDOW >= IDLE_TTL
    if state.ewma_last < -(1 << 61) or idle:
        total, hist = 0.0, 0
    else:
        total, hist = state.ewma_sum * (1 - a) ** (w - state.ewma_last - 1), w - state.ewma_first
    baseline = total / (1 - (1 - a) ** hist) if hist > 0 else 0.0
    state.ewma_sum, state.ewma_first, state.ewma_last = (1 - a) * total + a * count, w - hist, w
    state.closed = w
    threshold = max(float(SURGE_MIN), SURGE_FACTOR * baseline)
    if count >= threshold and hist >= SURGE_WARMUP:
        start = w * SURGE_WINDOW
        evidence = {"count": count, "baseline": baseline, "history_windows": hist}
        return Alert(
            FLOW, "merchant_surge", entity, start + SURGE_WINDOW, float(count), threshold,
            start, start + SURGE_WINDOW, f"window:{w}", evidence,
        )  # fmt: skip
    return None


def _surge_key(ev: Event) -> str:
    return f"{ev['merchant_id']}/{ev['type']}"


def merchant_surge(state: SurgeState | None, ev: Event) -> tuple[SurgeState, Alert | None]:
    """Count ``ev`` in its window; close the key's windows its watermark has passed."""
    if state is None:
        state = SurgeState()
    ts = ev["ts"]
    entity = _surge_key(ev)
    if ts > state.max_ts:
        state.max_ts = ts
    watermark = state.max_ts - SURGE_LATENESS
    w = int(ts // SURGE_WINDOW)
    if w > state.closed and (w + 1) * SURGE_WINDOW > watermark:
        cms = state.windows.get(w)
        if cms is None:
            cms = state.windows[w] = _cms()
        cms.update(entity)
    alert = None
    for open_w in sorted(state.windows):
        if (open_w + 1) * SURGE_WINDOW > watermark:
            break
        alert = _surge_close(state, entity, open_w) or alert
    return state, alert


# -- amount_outlier ----------------------------------------------------------------------------


class OutlierState:
    """One card: decayed weight, mean and M2 of log amounts at reference time ``ref``."""

    __slots__ = ("count", "m2", "mean", "prev_ts", "ref", "weight")

    def __init__(self) -> None:
        self.weight, self.mean, self.m2, self.ref, self.count, self.prev_ts = (
            0.0,
            0.0,
            0.0,
            -math.inf,
            0,
            -math.inf,
        )

    def __getstate__(self) -> tuple[float, float, float, float, int, float]:
        return self.weight, self.mean, self.m2, self.ref, self.count, self.prev_ts

    def __setstate__(self, s: tuple[float, float, float, float, int, float]) -> None:
        self.weight, self.mean, self.m2, self.ref, self.count, self.prev_ts = s


def amount_outlier(state: OutlierState | None, ev: Event) -> tuple[OutlierState, Alert | None]:
    """Compare ``log(amount)`` with the card's decayed history, then fold it in."""
    ts, amount = ev["ts"], ev["amount"]
    if state is None or ts - state.prev_ts > OUT_IDLE:
        state = OutlierState()
    if not (amount > 0 and math.isfinite(amount)):
        return state, None
    lv = math.log(amount)
    alert = None
    if state.count >= OUT_MIN_HISTORY and state.weight > 0:
        sd = math.sqrt(max(state.m2 / state.weight, 0.0))
        dev = lv - state.mean
        tiny = 1e-12 * (1.0 + abs(state.mean))
        z = (math.inf if dev > tiny else 0.0) if sd <= tiny else dev / sd
        if z >= OUT_Z and dev >= _LOG_RATIO:
            card = ev["card_id"]
            evidence = {"value": amount, "mean": state.mean, "sd": sd, "prior_count": state.count}
            alert = Alert(FLOW, "amount_outlier", card, ts, z, OUT_Z, trigger=ev["tx_id"], evidence=evidence)
    # fold in: decay the history to the new reference time, weighted Welford update
    if ts > state.ref:
        decay = math.exp(-_RATE * (ts - state.ref)) if state.ref > -math.inf else 0.0
        state.weight *= decay
        state.m2 *= decay
        state.ref = ts
        w = 1.0
    else:
        w = math.exp(-_RATE * (state.ref - ts))
    total = state.weight + w
    delta = lv - state.mean
    state.mean += w * delta / total
    state.m2 += w * delta * (lv - state.mean)
    state.weight = total
    state.count += 1
    state.prev_ts = ts
    return state, alert


# -- card_velocity -----------------------------------------------------------------------------


class VelocityState:
    """One card: its last ``VEL_LAST_N`` rapid bits, previous ``ts`` and last alert time."""

    __slots__ = ("bits", "last_alert", "ones", "prev_ts")

    def __init__(self) -> None:
        self.bits: deque[bool] = deque(maxlen=VEL_LAST_N)
        self.ones, self.prev_ts, self.last_alert = 0, -math.inf, -math.inf

    def __getstate__(self) -> tuple[list[bool], int, float, float]:
        return list(self.bits), self.ones, self.prev_ts, self.last_alert

    def __setstate__(self, s: tuple[list[bool], int, float, float]) -> None:
        bits, self.ones, self.prev_ts, self.last_alert = s
        self.bits = deque(bits, maxlen=VEL_LAST_N)


def card_velocity(state: VelocityState | None, ev: Event) -> tuple[VelocityState, Alert | None]:
    """Push ``ev``'s rapid bit; alert at a rapid event when enough of the last N are rapid."""
    ts = ev["ts"]
    if state is None or ts - state.prev_ts > IDLE_TTL:
        state = VelocityState()
    rapid = abs(ts - state.prev_ts) <= VEL_GAP
    bits = state.bits
    if len(bits) == VEL_LAST_N and bits[0]:
        state.ones -= 1
    bits.append(rapid)
    state.prev_ts = ts
    if not rapid:
        return state, None
    state.ones += 1
    if state.ones >= VEL_MIN_RAPID and ts - state.last_alert >= VEL_COOLDOWN:
        state.last_alert = ts
        card = ev["card_id"]
        alert = Alert(
            FLOW, "card_velocity", card, ts, float(state.ones), float(VEL_MIN_RAPID), trigger=ev["tx_id"],
            evidence={"count": state.ones, "last_n": VEL_LAST_N, "gap": VEL_GAP},
        )  # fmt: skip
        return state, alert
    return state, None


# -- the dataflow ------------------------------------------------------------------------------


def _value(kv: tuple[str, Alert | None]) -> Alert | None:
    return kv[1]


def _card(ev: Event) -> str:
    return str(ev["card_id"])


def build(path: str, db: str, batch_size: int = 1000) -> Dataflow:
    """The baseline fraud flow: JSON Lines file ``path`` in, alerts into SQLite file ``db``."""
    flow = Dataflow("baseline_fraud")
    lines = op.input("source", flow, FileSource(path, batch_size=batch_size))
    events: Stream[Event] = op.map("parse", lines, parse)
    steps: list[tuple[str, Any, Any]] = [
        ("duplicate_tx", _dup_shard, duplicate_tx),
        ("merchant_surge", _surge_key, merchant_surge),
        ("amount_outlier", _card, amount_outlier),
        ("card_velocity", _card, card_velocity),
    ]
    outs: list[Stream[Alert]] = []
    for name, key, mapper in steps:
        keyed = op.key_on(f"{name}_key", events, key)
        out = op.stateful_map(name, keyed, mapper)
        outs.append(op.filter_map(f"{name}_alerts", out, _value))
    op.output("sink", op.merge("alerts", *outs), SqlSink(f"sqlite:///{db}"))
    return flow


def __getattr__(name: str) -> Any:
    if name == "flow":  # ``python -m bytewax.run bench.baseline_fraud``
        return build(os.environ["BENCH_INPUT"], os.environ.get("BENCH_DB", "baseline.db"))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
