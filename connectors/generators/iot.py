"""Synthetic sensor readings (flow ``iot``) with injected faults and their ground truth.

Normal traffic: 2,000 devices in 20 zones (100 each) report once per *cycle* of 10 s (200
readings/s): cycle ``k`` holds positions ``2000 k .. 2000 k + 1999`` in a random order, so a
device's readings are 0..20 s apart and its ``seq`` is the cycle number. Temperature = zone mean
(15..30) + 2.0 z (z clipped to +-3.5), rounded to 0.01 with the last digit's parity forced to the
cycle's parity, so two consecutive readings of a device are never equal (no chance stuck runs).
``payload = f"{device_id}:{seq}"`` is unique per reading.

Injected (counts for ``n_events = 1_000_000``; they scale with ``n_events``):

- ``duplicate_payload`` (~1,000): an extra reading of a device replays the payload of its
  reading 1..350 cycles (10 s .. ~1 h) earlier (replacing some other device's reading).
  Truth: ``[ts, ts]`` of the replay, entity = device_id.
- ``zone_zscore`` (~50): a reading 20..40 degrees above or below its zone mean. Truth:
  ``[ts, ts]``, entity = zone. Zone faults (these and breaches) are >= 35 cycles apart per zone.
- ``stuck_sensor`` (~100): a device repeats one value for 3..6 consecutive readings. Truth:
  ``[ts of the 3rd, ts of the last]``, entity = device_id.
- ``threshold_breaches`` (~20): a device reads 85..95 for 8..15 consecutive readings. Truth:
  ``[first, last breach ts + 10]``, entity = device_id; such readings are z-score outliers of
  their zone too, so each run also gives ``zone_zscore`` truth ``[first, last breach ts]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from connectors.events import SCHEMAS, Anomaly, EventBatch
from connectors.generators._common import (
    CHUNK,
    START_TIME,
    Calendar,
    Overrides,
    PositionPool,
    check_args,
    chunk_rng,
    iter_batches,
    jitter,
    labels,
    plan_rng,
    scaled_count,
    sort_anomalies,
)

__all__ = ["DETECTORS", "FLOW", "RATE", "generate", "ground_truth"]

FLOW: Final = "iot"
RATE: Final = 200.0
"""Readings per second of event time."""
DETECTORS: Final = ("duplicate_payload", "zone_zscore", "stuck_sensor", "threshold_breaches")
"""Detectors with ground truth in this flow."""

N_DEVICES: Final = 2_000
N_ZONES: Final = 20
CYCLE: Final = N_DEVICES
"""Positions per reporting cycle (every device once)."""
_CYCLES_PER_CHUNK: Final = CHUNK // CYCLE
NOISE: Final = 2.0
_DEVICE_IDS: Final = labels("dev-{:05d}", N_DEVICES)
_ZONE_IDS: Final = labels("zone-{:02d}", N_ZONES)
_DEVICE_PREFIX: Final = [f"dev-{i:05d}:" for i in range(N_DEVICES)]
_DTYPES: Final = {f.name: f.dtype for f in SCHEMAS[FLOW].fields}
_ZONE_GAP = 35  # cycles between two zone faults of one zone (> the 300 s z-score window)


@dataclass(frozen=True)
class _Population:
    zone_of: NDArray[np.int64]
    zone_mean: NDArray[np.float64]


@lru_cache(maxsize=8)
def _population(seed: int) -> _Population:
    rng = np.random.default_rng([seed, 4242])
    zone_of = rng.permutation(N_DEVICES) % N_ZONES
    zone_mean = np.round(rng.uniform(15.0, 30.0, N_ZONES), 1)
    return _Population(zone_of.astype(np.int64), zone_mean)


def _ts(positions: NDArray[np.int64]) -> NDArray[np.float64]:
    return START_TIME + positions / RATE


def _perms(rng: np.random.Generator) -> list[NDArray[np.int64]]:
    # The first draws of a chunk: the device order of each of its cycles.
    return [rng.permutation(N_DEVICES) for _ in range(_CYCLES_PER_CHUNK)]


def _quantise(values: NDArray[np.float64], seq: NDArray[np.int64]) -> NDArray[np.float64]:
    """Round to 0.01 with the last digit's parity equal to ``seq``'s (consecutive readings differ)."""
    cents = np.rint(values * 100.0).astype(np.int64)
    cents += (cents - seq) % 2
    return cents / 100.0


class _Slots:
    """Position of (device, cycle) for the planner (device order cached per chunk)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._inv: dict[int, list[NDArray[np.int64]]] = {}

    def position(self, device: int, cycle: int) -> int:
        c, j = divmod(cycle, _CYCLES_PER_CHUNK)
        if c not in self._inv:
            self._inv[c] = [np.argsort(p) for p in _perms(chunk_rng(self.seed, c))]
        return cycle * CYCLE + int(self._inv[c][j][device])


@dataclass(frozen=True)
class _Plan:
    overrides: Overrides
    anomalies: tuple[Anomaly, ...]


class _Planner:
    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self.full_cycles = n // CYCLE
        self.rng = plan_rng(seed, n)
        self.pop = _population(seed)
        self.pool = PositionPool(n)
        self.slots = _Slots(seed)
        self.devices = Calendar()
        self.zones = Calendar()
        self.anomalies: list[Anomaly] = []
        self.ov = Overrides(_DTYPES)
        self.ov.group("temperature", ("temperature", "ts"))
        self.ov.group("replay", ("device_id", "zone", "temperature", "payload", "ts"))

    def reading(self, device: int, cycles: range) -> NDArray[np.int64]:
        return np.array([self.slots.position(device, k) for k in cycles], dtype=np.int64)

    def normal_value(self, device: int, cycle: int) -> float:
        z = float(np.clip(self.rng.standard_normal(), -3.5, 3.5))
        value = self.pop.zone_mean[self.pop.zone_of[device]] + NOISE * z
        return float(_quantise(np.array([value]), np.array([cycle]))[0])

    def set_temperatures(
        self, positions: NDArray[np.int64], values: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        self.pool.take(positions)
        ts = _ts(positions)
        self.ov.add("temperature", positions, temperature=values, ts=ts)
        return ts

    def pick(self, length: int, first: int, device_pad: int, zone_pad: int | None) -> tuple[int, int] | None:
        """A device and a start cycle whose run of ``length`` cycles fits and is free."""
        last_start = self.full_cycles - length - 1
        if last_start < first:
            return None
        for _attempt in range(100):
            k0 = int(self.rng.integers(first, last_start + 1))
            device = int(self.rng.integers(N_DEVICES))
            if not self.devices.free(device, k0 - device_pad, k0 + length + device_pad):
                continue
            zone = int(self.pop.zone_of[device])
            if zone_pad is not None and not self.zones.free(zone, k0 - zone_pad, k0 + length + zone_pad):
                continue
            positions = self.reading(device, range(k0 - 1, k0 + length + 1))
            if (
                not all(self.pool.is_free(int(p)) for p in positions if p < self.n)
                or max(positions) >= self.n
            ):
                continue
            self.devices.book(device, k0 - device_pad, k0 + length + device_pad)
            if zone_pad is not None:
                self.zones.book(zone, k0, k0 + length - 1)
            # the neighbours stay normal: no replay may replace them
            self.pool.take(positions[[0, -1]])
            return device, k0
        return None

    def breaches(self) -> None:
        for _ in range(scaled_count(self.n, 50_000, feasible=self.full_cycles >= 10)):
            length = int(self.rng.integers(8, min(15, self.full_cycles - 2) + 1))
            found = self.pick(length, 1, 25, _ZONE_GAP)
            if found is None:
                continue
            device, k0 = found
            cycles = np.arange(k0, k0 + length)
            values = _quantise(self.rng.uniform(85.0, 95.0, length), cycles)
            ts = self.set_temperatures(self.reading(device, range(k0, k0 + length)), values)
            first, last = float(ts[0]), float(ts[-1])
            self.anomalies.append(Anomaly("threshold_breaches", str(_DEVICE_IDS[device]), first, last + 10.0))
            zone = str(_ZONE_IDS[self.pop.zone_of[device]])
            self.anomalies.append(Anomaly("zone_zscore", zone, first, last))

    def zscores(self) -> None:
        for _ in range(scaled_count(self.n, 20_000, feasible=self.full_cycles >= 4)):
            found = self.pick(1, 2, 2, _ZONE_GAP)
            if found is None:
                continue
            device, k = found
            zone = int(self.pop.zone_of[device])
            delta = self.rng.uniform(20.0, 40.0) * (1.0 if self.rng.random() < 0.5 else -1.0)
            value = _quantise(np.array([self.pop.zone_mean[zone] + delta]), np.array([k]))
            ts = self.set_temperatures(self.reading(device, range(k, k + 1)), value)
            self.anomalies.append(Anomaly("zone_zscore", str(_ZONE_IDS[zone]), float(ts[0]), float(ts[0])))

    def stuck(self) -> None:
        for _ in range(scaled_count(self.n, 10_000, feasible=self.full_cycles >= 6)):
            length = int(self.rng.integers(3, 7))
            found = self.pick(length, 1, 2, None)
            if found is None:
                continue
            device, k0 = found
            value = self.normal_value(device, k0)  # parity of k0: differs from the reading before
            ts = self.set_temperatures(self.reading(device, range(k0, k0 + length)), np.full(length, value))
            self.anomalies.append(
                Anomaly("stuck_sensor", str(_DEVICE_IDS[device]), float(ts[2]), float(ts[-1]))
            )

    def replays(self) -> None:
        count = scaled_count(self.n, 1_000, feasible=self.n > 2 * CYCLE)
        rng = self.rng
        replays: set[int] = set()
        sources: set[int] = set()
        pairs: set[tuple[int, int]] = set()
        for _attempt in range(50 * count):
            if len(replays) >= count:
                break
            p = int(rng.integers(CYCLE, self.n))
            if not self.pool.is_free(p) or p in sources:
                continue
            k = p // CYCLE
            device = int(rng.integers(N_DEVICES))
            if not self.devices.free(device, k - 2, k + 2):
                continue
            k_src = k - int(rng.integers(1, min(350, k) + 1))
            q = self.slots.position(device, k_src)
            if q in replays or (device, k_src) in pairs:
                continue
            replays.add(p)
            sources.add(q)
            pairs.add((device, k_src))
            self.pool.take([p])
            ts = _ts(np.array([p], dtype=np.int64))
            self.ov.add(
                "replay",
                [p],
                device_id=[_DEVICE_IDS[device]],
                zone=[_ZONE_IDS[self.pop.zone_of[device]]],
                temperature=[self.normal_value(device, k)],
                payload=[f"{_DEVICE_PREFIX[device]}{k_src}"],
                ts=ts,
            )
            self.anomalies.append(
                Anomaly("duplicate_payload", str(_DEVICE_IDS[device]), float(ts[0]), float(ts[0]))
            )

    def build(self) -> _Plan:
        self.breaches()
        self.zscores()
        self.stuck()
        self.replays()
        return _Plan(self.ov.freeze(), tuple(sort_anomalies(self.anomalies)))


@lru_cache(maxsize=4)
def _plan(n_events: int, seed: int) -> _Plan:
    return _Planner(n_events, seed).build()


def _chunk(n_events: int, seed: int, c: int) -> EventBatch:
    pop = _population(seed)
    plan = _plan(n_events, seed)
    lo = c * CHUNK
    hi = min(lo + CHUNK, n_events)
    m = hi - lo
    rng = chunk_rng(seed, c)
    device = np.concatenate(_perms(rng))[:m]
    z = np.clip(rng.standard_normal(m), -3.5, 3.5)
    back = jitter(rng, m)
    positions = np.arange(lo, hi, dtype=np.int64)
    seq = positions // CYCLE
    zone = pop.zone_of[device]
    payload = np.empty(m, dtype=object)
    prefixes = _DEVICE_PREFIX
    parts = []
    for k in range(lo // CYCLE, (hi - 1) // CYCLE + 1):
        a, b = max(k * CYCLE, lo) - lo, min((k + 1) * CYCLE, hi) - lo
        s = str(k)
        parts.extend([prefixes[d] + s for d in device[a:b].tolist()])
    payload[:] = parts
    columns: dict[str, NDArray[Any]] = {
        "device_id": _DEVICE_IDS[device],
        "zone": _ZONE_IDS[zone],
        "temperature": _quantise(pop.zone_mean[zone] + NOISE * z, seq),
        "payload": payload,
        "ts": _ts(positions) - back,
    }
    plan.overrides.apply(columns, lo, hi)
    return EventBatch(FLOW, positions, columns)


def generate(n_events: int, seed: int, start: int = 0, batch_size: int = 10_000) -> Iterator[EventBatch]:
    """Readings at positions ``start .. n_events - 1``, in batches of ``batch_size``.

    Parameters
    ----------
    n_events : int
        Events in the whole run (anomalies are planned for this length).
    seed : int
        Non-negative seed; the same arguments always give the same events.
    start : int, default 0
        First position; the events equal the tail of a run started at 0.
    batch_size : int, default 10_000
        Events per batch (the last may be shorter); changes only where batches are cut.

    Yields
    ------
    EventBatch
        Columns ``device_id, zone, temperature, payload, ts`` of flow ``iot``.

    Examples
    --------
    >>> batch = next(generate(4_000, seed=1, batch_size=2_000))
    >>> len(set(batch["device_id"])), batch["payload"][0].endswith(":0")
    (2000, True)
    """
    check_args(n_events, seed, start, batch_size)
    return iter_batches(lambda c: _chunk(n_events, seed, c), n_events, start, batch_size)


def ground_truth(n_events: int, seed: int) -> list[Anomaly]:
    """The anomalies injected into ``generate(n_events, seed)``, sorted by detector then start.

    Examples
    --------
    >>> sorted({a.detector for a in ground_truth(20_000, 1)})
    ['duplicate_payload', 'stuck_sensor', 'threshold_breaches', 'zone_zscore']
    """
    check_args(n_events, seed, 0, 1)
    return list(_plan(n_events, seed).anomalies)
