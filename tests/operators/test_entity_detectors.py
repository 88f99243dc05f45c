"""Tests of the per-entity event detectors (operators/detectors/entity.py).

Small hand-made cases with exact expectations, naive one-event-at-a-time reference models (built
on the sketches directly) as oracles, batch-boundary invariance under random cuts, pickle
round-trips mid-stream, idle eviction and a statistical check of the amount-outlier detector.
"""

from __future__ import annotations

import base64
import itertools
import math
import pickle
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from connectors import events
from connectors.events import EventBatch, Progress
from operators.alerts import Alert
from operators.detectors.entity import (
    DEFAULT_LATENESS,
    ENTITY_SEED,
    BreachDetector,
    DuplicateDetector,
    OutlierDetector,
    StuckDetector,
    VelocityDetector,
)
from operators.runtime import Detector, Output, PartitionClock, _DetectorLogic, split_by_shard
from sketches import DGIM, DecayingAggregate
from sketches.hashing import hash64_many

Factory = Callable[[], Detector]


# -- helpers -------------------------------------------------------------------------------------


def make_batch(flow: str, **columns: Sequence[Any]) -> EventBatch:
    """A batch with positions 0..n-1; str columns become object arrays, others float arrays."""
    cols: dict[str, np.ndarray[Any, Any]] = {}
    n = 0
    for name, values in columns.items():
        values = list(values)
        n = len(values)
        if values and isinstance(values[0], str):
            col = np.empty(n, dtype=object)
            col[:] = values
        else:
            col = np.asarray(values, dtype=np.float64)
        cols[name] = col
    return EventBatch(flow, np.arange(n, dtype=np.int64), cols)


def alerts_only(outputs: Sequence[Output]) -> list[Alert]:
    assert all(isinstance(o, Alert) for o in outputs)
    return [o for o in outputs if isinstance(o, Alert)]


def run(detector: Detector, batch: EventBatch, cuts: Sequence[int] = ()) -> list[Alert]:
    """Feed ``batch`` cut at ``cuts`` (sorted indices) and collect the alerts."""
    bounds = [0, *cuts, len(batch)]
    out: list[Alert] = []
    for lo, hi in itertools.pairwise(bounds):
        out.extend(alerts_only(detector.process(batch.take(np.arange(lo, hi)))))
    out.extend(alerts_only(detector.flush()))
    return out


def random_cuts(n: int, rng: np.random.Generator) -> list[int]:
    k = int(rng.integers(1, 40))
    return sorted(set(rng.integers(1, n, size=k).tolist()))


def signature(alerts: Sequence[Alert]) -> list[tuple[str, str, str, float, float]]:
    return sorted((a.alert_id, a.entity, a.trigger, a.event_ts, round(a.score, 6)) for a in alerts)


def triggers(alerts: Sequence[Alert]) -> list[str]:
    return [a.trigger for a in alerts]


# -- synthetic streams --------------------------------------------------------------------------


def fraud_stream(n: int, seed: int, cards: int = 40) -> EventBatch:
    """Cards with their own amount scales, replayed tx ids, 50x outliers, bursts, ts jitter."""
    rng = np.random.default_rng(seed)
    card = rng.integers(0, cards, n)
    repeat = rng.random(n) < 0.25  # same card as the event before: bursts
    for i in range(1, n):
        if repeat[i]:
            card[i] = card[i - 1]
    ts = 1_767_225_600.0 + np.cumsum(rng.exponential(0.6, n)) + rng.uniform(0.0, 2.0, n)
    scale = np.exp(rng.normal(3.0, 1.0, cards))
    amount = scale[card] * rng.lognormal(0.0, 0.5, n)
    amount[rng.random(n) < 0.01] *= 50.0
    amount[rng.random(n) < 0.002] = 0.0  # ignored by the outlier detector
    tx = [f"tx{i}" for i in range(n)]
    for i in np.flatnonzero(rng.random(n) < 0.03).tolist():
        if i > 0:
            tx[i] = tx[int(rng.integers(max(0, i - 60), i))]  # replay within ~60 events (< 60 s)
    return make_batch(
        "fraud",
        tx_id=tx,
        card_id=[f"c{c}" for c in card.tolist()],
        amount=amount.tolist(),
        ts=ts.tolist(),
    )


def iot_stream(n: int, seed: int, devices: int = 25) -> EventBatch:
    """Devices with coarse (often repeating) readings, breach spells and replayed payloads."""
    rng = np.random.default_rng(seed)
    dev = rng.integers(0, devices, n)
    ts = 1_767_225_600.0 + np.cumsum(rng.exponential(0.4, n)) + rng.uniform(0.0, 2.0, n)
    temp = np.round(rng.normal(20.0, 0.6, n))
    hot = rng.random(n) < 0.2
    temp[hot] = rng.choice([79.0, 85.0, 90.0], size=int(hot.sum()))
    payload = [f"d{d}:{int(rng.integers(0, 400))}" for d in dev.tolist()]
    return make_batch(
        "iot",
        device_id=[f"d{d}" for d in dev.tolist()],
        temperature=temp.tolist(),
        payload=payload,
        ts=ts.tolist(),
    )


# -- reference models (one event at a time, straight from the definitions) -----------------------


def ref_outlier(
    batch: EventBatch, half_life: float, min_history: int, z: float, ratio: float, idle_ttl: float
) -> list[str]:
    state: dict[str, list[Any]] = {}  # entity -> [aggregate, count, prev_ts]
    clock = -math.inf
    out = []
    for card, amount, t, pos in zip(
        batch["card_id"].tolist(),
        batch["amount"].tolist(),
        batch["ts"].tolist(),
        batch.positions.tolist(),
        strict=True,
    ):
        if not amount > 0:
            continue
        clock = max(clock, t)
        st = state.get(card)
        if st is None or st[2] < clock - idle_ttl:
            st = state[card] = [DecayingAggregate(half_life=half_life), 0, -math.inf]
        lv = math.log(amount)
        if st[1] >= min_history:
            stats = st[0].value()
            d = lv - stats.mean
            sd = math.sqrt(stats.variance)
            flat = sd <= 1e-12 * (1 + abs(stats.mean))
            zz = (math.inf if d > 0 else 0.0) if flat else d / sd
            if zz >= z and d >= math.log(ratio):
                out.append(str(pos))
        st[0].add(lv, t)
        st[1] += 1
        st[2] = t
    return out


def ref_dgim(
    batch: EventBatch,
    entity_column: str,
    bit_of: Callable[[int, float, float], bool],
    last_n: int,
    r: int,
    threshold: int,
    cooldown: float,
    idle_ttl: float,
) -> list[str]:
    state: dict[str, list[Any]] = {}  # entity -> [dgim, prev_ts, last_alert]
    clock = -math.inf
    out = []
    for i, (entity, t) in enumerate(zip(batch[entity_column].tolist(), batch["ts"].tolist(), strict=True)):
        clock = max(clock, t)
        st = state.get(entity)
        if st is None or st[1] < clock - idle_ttl:
            st = state[entity] = [DGIM(last_n, r), -math.inf, -math.inf]
        bit = bit_of(i, t, st[1])
        st[0].add(bit)
        st[1] = t
        if bit and t - st[2] >= cooldown and st[0].count() >= threshold:
            st[2] = t
            out.append(str(int(batch.positions[i])))
    return out


def ref_stuck(batch: EventBatch, consecutive: int, idle_ttl: float) -> list[str]:
    state: dict[str, list[float]] = {}  # entity -> [last value, run, prev_ts]
    clock = -math.inf
    out = []
    for entity, v, t, pos in zip(
        batch["device_id"].tolist(),
        batch["temperature"].tolist(),
        batch["ts"].tolist(),
        batch.positions.tolist(),
        strict=True,
    ):
        clock = max(clock, t)
        st = state.get(entity)
        if st is None or st[2] < clock - idle_ttl:
            st = state[entity] = [math.nan, 0, -math.inf]
        st[1] = st[1] + 1 if v == st[0] else 1
        st[0], st[2] = v, t
        if st[1] == consecutive:
            out.append(str(pos))
    return out


def ref_duplicates(keys: Sequence[Any]) -> list[str]:
    seen: set[Any] = set()
    out = []
    for i, k in enumerate(keys):
        if k in seen:
            out.append(str(i))
        seen.add(k)
    return out


# -- detector configurations used by the generic tests ------------------------------------------

FRAUD_N = 3000
IOT_N = 3000


def velocity_factory() -> Detector:
    return VelocityDetector(min_rapid=4, cooldown=20.0, idle_ttl=90.0)


def breach_factory() -> Detector:
    return BreachDetector(last_n=10, r=2, min_breaches=3, cooldown=30.0, idle_ttl=60.0)


def outlier_factory() -> Detector:
    return OutlierDetector(half_life=300.0, min_history=3, z=2.5, ratio=4.0, idle_ttl=120.0)


def stuck_factory() -> Detector:
    return StuckDetector(consecutive=3, idle_ttl=40.0)


def dup_tx_factory() -> Detector:
    return DuplicateDetector(shards=4)


def dup_payload_factory() -> Detector:
    return DuplicateDetector(
        flow="iot",
        name="duplicate_payload",
        key_columns=("device_id", "payload"),
        entity_column="device_id",
        ttl=3600.0,
        capacity=2_000_000,
        fp_rate=1e-7,
        shards=16,
    )


CASES: dict[str, tuple[Factory, Callable[[int, int], EventBatch], int]] = {
    "duplicate_tx": (dup_tx_factory, fraud_stream, FRAUD_N),
    "duplicate_payload": (dup_payload_factory, iot_stream, IOT_N),
    "amount_outlier": (outlier_factory, fraud_stream, FRAUD_N),
    "card_velocity": (velocity_factory, fraud_stream, FRAUD_N),
    "threshold_breaches": (breach_factory, iot_stream, IOT_N),
    "stuck_sensor": (stuck_factory, iot_stream, IOT_N),
}


# -- exact small cases ---------------------------------------------------------------------------


def test_duplicate_tx_exact() -> None:
    batch = make_batch(
        "fraud",
        tx_id=["a", "b", "a", "c", "b", "a", "a"],
        card_id=["x"] * 7,
        ts=[0.0, 1.0, 2.0, 3.0, 700.0, 701.0, 702.0],
    )
    alerts = run(DuplicateDetector(ttl=300.0), batch)
    # "a" again at 2 (within ttl); "b" at 700 and "a" at 701 are >= 2 ttl later: forgotten;
    # "a" at 702 repeats the one at 701 in the same batch.
    assert triggers(alerts) == ["2", "6"]
    a = alerts[0]
    assert (a.flow, a.detector, a.entity, a.event_ts) == ("fraud", "duplicate_tx", "a", 2.0)
    assert (a.score, a.threshold, a.window_start, a.window_end) == (1.0, 1.0, None, None)
    assert a.evidence["key"] == {"tx_id": "a"}
    assert a.evidence["ttl"] == 300.0 and a.evidence["fp_rate"] == 1e-6
    assert 0.0 <= a.evidence["estimated_fp_rate"] < 1e-12
    a.evidence_json()  # JSON-serialisable


def test_duplicate_payload_multi_column_is_unambiguous() -> None:
    batch = make_batch(
        "iot",
        device_id=["d1", "d2", "d1", "a\x1fb", "a", "d1"],
        payload=["p", "p", "p", "c", "b\x1fc", "q"],
        ts=[0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
    )
    alerts = run(dup_payload_factory(), batch)
    assert triggers(alerts) == ["2"]
    assert alerts[0].entity == "d1" and alerts[0].detector == "duplicate_payload"
    assert alerts[0].evidence["key"] == {"device_id": "d1", "payload": "p"}


def test_duplicate_capacity_is_divided_by_shards() -> None:
    det = DuplicateDetector(capacity=200_000, shards=16)
    assert det.capacity_per_shard == 12_500 and det.filter.capacity == 12_500


def test_outlier_exact_and_matches_decaying_aggregate() -> None:
    day = 86400.0
    hist = [10.0, 11.0, 9.0, 10.0, 12.0]
    times = [0.0, 0.5 * day, 1.0 * day, 1.2 * day, 2.0 * day]
    batch = make_batch(
        "fraud",
        card_id=["c1"] * 5 + ["c1", "c2", "c2", "c2", "c2", "c2", "c1"],
        amount=[*hist, 300.0, 10.0, 11.0, 9.0, 10.0, 300.0, 11.0],
        ts=[*times, 2.5 * day, 0.0, 1.0, 2.0, 3.0, 4.0, 2.6 * day],
    )
    alerts = run(OutlierDetector(), batch)
    assert triggers(alerts) == ["5"]  # c2 has only 4 prior events at its 300
    a = alerts[0]
    assert (a.entity, a.event_ts, a.threshold) == ("c1", 2.5 * day, 4.0)
    agg = DecayingAggregate(half_life=day)
    agg.update(np.log(hist), times)
    stats = agg.value()
    ev = a.evidence
    assert ev["prior_count"] == 5 and ev["half_life"] == day
    assert ev["mean"] == pytest.approx(stats.mean, rel=1e-12)
    assert ev["sd"] == pytest.approx(math.sqrt(stats.variance), rel=1e-9)
    assert ev["z"] == pytest.approx((math.log(300.0) - stats.mean) / math.sqrt(stats.variance), rel=1e-9)
    assert a.score == pytest.approx(ev["z"])
    assert ev["history_weight"] == pytest.approx(agg.count(at_ts=2.5 * day), rel=1e-12)
    assert ev["ratio_to_typical"] == pytest.approx(300.0 / math.exp(stats.mean))
    a.evidence_json()


def test_outlier_needs_both_z_and_ratio_and_handles_zero_sd() -> None:
    batch = make_batch(
        "fraud",
        card_id=["c"] * 9,
        amount=[10.0] * 5 + [99.0, 10.0, 101.0, 10.0],
        ts=[float(i) for i in range(9)],
    )
    alerts = run(OutlierDetector(), batch)
    # 99 < 10 * 10 fails the ratio although sd = 0 (z = inf); then history is no longer flat.
    assert triggers(alerts) == []
    flat = make_batch("fraud", card_id=["c"] * 7, amount=[10.0] * 5 + [101.0, 10.0], ts=list(range(7)))
    alerts = run(OutlierDetector(), flat)
    assert triggers(alerts) == ["5"]
    assert alerts[0].score == math.inf and alerts[0].evidence["z"] is None
    assert alerts[0].evidence["sd"] == 0.0
    assert math.isfinite(alerts[0].to_record()["score"])
    alerts[0].evidence_json()


def test_outlier_out_of_order_event_gets_its_decayed_weight() -> None:
    day = 86400.0
    vals, times = [10.0, 20.0, 15.0, 12.0, 30.0], [0.0, 2 * day, 1 * day, 3 * day, 0.5 * day]
    batch = make_batch("fraud", card_id=["c"] * 6, amount=[*vals, 1e4], ts=[*times, 3 * day])
    alerts = run(OutlierDetector(), batch)
    agg = DecayingAggregate(half_life=day)
    for v, t in zip(vals, times, strict=True):
        agg.add(math.log(v), t)
    assert triggers(alerts) == ["5"]
    assert alerts[0].evidence["mean"] == pytest.approx(agg.mean(), rel=1e-12)


def test_velocity_exact() -> None:
    ts = [float(t) for t in range(10)] + [310.0, 311.0, 900.0, 901.0]
    batch = make_batch("fraud", card_id=["c"] * 14, ts=ts)
    alerts = run(VelocityDetector(), batch)
    # bits 0,1,1,...: the 8th rapid event (position 8) reaches 8; position 9 is in cooldown;
    # 310 is not rapid; 311 is rapid with 9 rapid among the last 10 and the cooldown over;
    # 901 is rapid with 8 rapid among the last 10 (positions 4..13) 590 s after the last alert.
    assert triggers(alerts) == ["8", "11", "13"]
    a = alerts[0]
    assert (a.entity, a.score, a.threshold, a.detector) == ("c", 8.0, 8.0, "card_velocity")
    lo, hi = a.evidence["exact_bounds"]
    assert lo <= 8 <= hi and a.evidence["estimate"] == 8
    assert a.evidence["last_n"] == 10 and a.evidence["r"] == 8
    assert a.evidence["seconds_since_previous"] == 1.0
    a.evidence_json()


def test_breach_exact() -> None:
    temps = [81.0, 70.0, 85.0, 90.0, 80.0, 60.0, 99.0, 99.0, 99.0]
    batch = make_batch("iot", device_id=["d"] * 9, temperature=temps, ts=[10.0 * i for i in range(9)])
    alerts = run(BreachDetector(), batch)
    assert triggers(alerts) == ["6"]  # the 5th reading >= 80; then cooldown (600 s)
    assert alerts[0].evidence["value"] == 99.0 and alerts[0].evidence["limit"] == 80.0
    assert alerts[0].score == 5.0 and alerts[0].threshold == 5.0


def test_stuck_exact_and_across_batches() -> None:
    temps = [20.0, 20.0, 20.0, 20.0, 21.0, 21.0, 22.0, 21.0, 21.0, 21.0, 21.0]
    batch = make_batch(
        "iot",
        device_id=["d"] * 6 + ["e"] + ["d"] * 4,
        temperature=temps,
        ts=[float(i) for i in range(11)],
    )
    for cuts in ([], [1], [2, 3], [5, 6, 7, 8], list(range(1, 11))):
        alerts = run(StuckDetector(), batch, cuts)
        # d: 20 x4 (alert at its 3rd), 21, 21, [e 22], 21 x4 (its run of 21 reaches 3 at position 7)
        assert triggers(alerts) == ["2", "7"]
    assert alerts[0].evidence == {"value": 20.0, "run_length": 3, "consecutive": 3}


def test_empty_batches() -> None:
    for factory, stream, _ in CASES.values():
        det = factory()
        empty = stream(10, 0).take(np.zeros(0, dtype=np.intp))
        assert det.process(empty) == [] and det.flush() == []


def test_parameter_validation() -> None:
    with pytest.raises(ValueError, match="key_columns"):
        DuplicateDetector(key_columns=())
    with pytest.raises(ValueError, match="half_life"):
        OutlierDetector(half_life=0.0)
    with pytest.raises(ValueError, match="consecutive"):
        StuckDetector(consecutive=1)
    with pytest.raises(ValueError, match="r must"):
        VelocityDetector(r=1)
    with pytest.raises(ValueError, match="idle_ttl"):
        BreachDetector(idle_ttl=-1.0)


# -- oracles on random streams -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_against_reference_models(seed: int) -> None:
    fraud, iot = fraud_stream(FRAUD_N, seed), iot_stream(IOT_N, seed)

    got = triggers(run(outlier_factory(), fraud))
    assert got == ref_outlier(fraud, 300.0, 3, 2.5, 4.0, 120.0) and len(got) >= 10

    def rapid(i: int, t: float, prev_ts: float) -> bool:
        return abs(t - prev_ts) <= 10.0

    got = triggers(run(velocity_factory(), fraud))
    assert got == ref_dgim(fraud, "card_id", rapid, 10, 8, 4, 20.0, 90.0) and len(got) >= 10

    temps = iot["temperature"]

    def hot(i: int, t: float, prev_ts: float) -> bool:
        return bool(temps[i] >= 80.0)

    got = triggers(run(breach_factory(), iot))
    assert got == ref_dgim(iot, "device_id", hot, 10, 2, 3, 30.0, 60.0) and len(got) >= 10

    got = triggers(run(stuck_factory(), iot))
    assert got == ref_stuck(iot, 3, 40.0) and len(got) >= 10

    got = triggers(run(dup_tx_factory(), fraud))
    assert got == ref_duplicates(fraud["tx_id"].tolist()) and len(got) >= 10

    pairs = list(zip(iot["device_id"].tolist(), iot["payload"].tolist(), strict=True))
    got = triggers(run(dup_payload_factory(), iot))
    assert got == ref_duplicates(pairs) and len(got) >= 10


# -- batch-boundary invariance, snapshot/resume, eviction -----------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_batch_boundary_invariance(name: str) -> None:
    factory, stream, n = CASES[name]
    batch = stream(n, 7)
    whole = signature(run(factory(), batch))
    assert len(whole) >= 10
    singles = signature(run(factory(), batch, list(range(1, n))))
    assert singles == whole
    rng = np.random.default_rng(11)
    for _ in range(8):
        assert signature(run(factory(), batch, random_cuts(n, rng))) == whole


@pytest.mark.parametrize("name", list(CASES))
def test_pickle_round_trip_mid_stream(name: str) -> None:
    factory, stream, n = CASES[name]
    batch = stream(n, 3)
    whole = signature(run(factory(), batch))
    rng = np.random.default_rng(5)
    for _ in range(3):
        cut = int(rng.integers(1, n))
        live = factory()
        head = run(live, batch.take(np.arange(cut)))
        restored = pickle.loads(pickle.dumps(live, protocol=pickle.HIGHEST_PROTOCOL))
        tail = batch.take(np.arange(cut, n))
        resumed = run(restored, tail, random_cuts(len(tail), rng))
        assert signature(resumed) == signature(run(live, tail))
        assert signature(head + resumed) == whole


def test_dgim_state_pickles_compactly() -> None:
    det = VelocityDetector(min_rapid=4, cooldown=20.0, idle_ttl=90.0, lateness=1e9)  # all kept
    run(det, fraud_stream(FRAUD_N, 4, cards=400))
    assert det.n_entities > 100
    size = len(pickle.dumps(det, protocol=pickle.HIGHEST_PROTOCOL))
    assert size < 120 * det.n_entities  # type: ignore[attr-defined]


def idle_batch(
    entity_column: str, value_column: str, flow: str, idle_ttl: float, value: float = 10.0
) -> EventBatch:
    """100 entities active at t in [0, 100), then one entity far later."""
    n = 100
    columns: dict[str, Sequence[Any]] = {
        entity_column: [f"e{i}" for i in range(n)] + ["late"],
        value_column: [value] * (n + 1),
        "ts": [float(i) for i in range(n)] + [n + idle_ttl + 1.0],
    }
    return make_batch(flow, **columns)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: OutlierDetector(idle_ttl=500.0),
        lambda: VelocityDetector(idle_ttl=500.0, lateness=1000.0),  # recall: idle_ttl
        lambda: BreachDetector(idle_ttl=500.0),
        lambda: StuckDetector(idle_ttl=500.0),
    ],
)
def test_idle_entities_are_evicted(factory: Factory) -> None:
    det: Any = factory()
    ecol = "card_id" if isinstance(det, (OutlierDetector, VelocityDetector)) else "device_id"
    vcol = "amount" if isinstance(det, OutlierDetector) else "temperature"
    # breaches keep no cold entity (their bits ignore the previous time): readings at the limit
    # make every device hot (a bucket), so that idle ones are evicted from the hot table
    value = 80.0 if isinstance(det, BreachDetector) else 10.0
    batch = idle_batch(ecol, vcol, "fraud" if ecol == "card_id" else "iot", 500.0, value)
    det.process(batch.take(np.arange(100)))
    assert det.n_entities == 100
    det.process(batch.take(np.arange(100, 101)))
    assert det.n_entities == 1  # all others idle > idle_ttl before the shard clock
    size_after = len(pickle.dumps(det))
    fresh: Any = factory()
    fresh.process(batch.take(np.arange(100, 101)))
    assert size_after <= len(pickle.dumps(fresh)) + 64


def test_idle_entity_starts_afresh() -> None:
    # five events, then an outlier after more than idle_ttl: no history any more, no alert ...
    batch = make_batch(
        "fraud",
        card_id=["c"] * 6,
        amount=[10.0, 11.0, 9.0, 10.0, 12.0, 500.0],
        ts=[0.0, 1.0, 2.0, 3.0, 4.0, 1000.0],
    )
    assert run(OutlierDetector(idle_ttl=900.0), batch) == []
    # ... whereas within idle_ttl it alerts; batch cuts do not matter either way
    assert triggers(run(OutlierDetector(idle_ttl=1000.0), batch, [5])) == ["5"]
    assert run(OutlierDetector(idle_ttl=900.0), batch, [5]) == []


# -- statistics ----------------------------------------------------------------------------------


def test_outlier_false_alarms_rare_and_injected_outliers_caught() -> None:
    rng = np.random.default_rng(2026)
    cards, per_card = 5000, 20
    n = cards * per_card
    card = np.repeat(np.arange(cards), per_card)
    rng.shuffle(card)  # interleaved cards, each with 20 events
    ts = 1_767_225_600.0 + np.sort(rng.uniform(0.0, 3 * 86400.0, n))
    scale = np.exp(rng.normal(3.5, 1.0, cards))
    amount = scale[card] * rng.lognormal(0.0, 0.5, n)
    # inject 30x at the 15th event of 300 cards (14 prior events)
    rank = np.empty(n, dtype=np.int64)
    order = np.argsort(card, kind="stable")
    rank[order] = np.arange(n) - np.repeat(np.arange(cards) * per_card, per_card)
    victims = rng.choice(cards, 300, replace=False)
    injected = np.isin(card, victims) & (rank == 14)
    amount[injected] = scale[card[injected]] * 30.0
    batch = make_batch(
        "fraud", card_id=[f"c{c}" for c in card.tolist()], amount=amount.tolist(), ts=ts.tolist()
    )
    alerts = run(OutlierDetector(), batch, list(range(10_000, n, 10_000)))
    hit = np.zeros(n, dtype=np.bool_)
    hit[[int(a.trigger) for a in alerts]] = True
    false_rate = float((hit & ~injected).sum()) / float((~injected).sum())
    recall = float((hit & injected).sum()) / float(injected.sum())
    assert false_rate < 1e-4
    assert recall >= 0.95


# -- DGIM detectors: the vectorised DGIMTable path against one DGIM object per entity ------------


def _object_path(factory: Factory) -> Detector:
    det: Any = factory()
    det._table = None  # force the per-entity DGIM objects (the path of last_n > 64)
    out: Detector = det
    return out


def full_signature(alerts: Sequence[Alert]) -> list[tuple[Any, ...]]:
    return [(a.entity, a.trigger, a.event_ts, a.score, sorted(a.evidence.items())) for a in alerts]


@pytest.mark.parametrize(
    ("factory", "stream"),
    [
        (lambda: VelocityDetector(min_rapid=4, cooldown=20.0, idle_ttl=90.0), fraud_stream),
        (lambda: VelocityDetector(last_n=7, r=2, min_rapid=3, cooldown=5.0, idle_ttl=30.0), fraud_stream),
        (lambda: VelocityDetector(last_n=64, r=3, min_rapid=12, cooldown=0.0, idle_ttl=200.0), fraud_stream),
        (lambda: BreachDetector(last_n=10, r=2, min_breaches=3, cooldown=30.0, idle_ttl=60.0), iot_stream),
        (lambda: BreachDetector(last_n=33, r=2, min_breaches=2, cooldown=0.0, idle_ttl=20.0), iot_stream),
    ],
)
def test_table_path_equals_object_path(factory: Factory, stream: Callable[[int, int], EventBatch]) -> None:
    batch = stream(4000, 13)
    rng = np.random.default_rng(3)
    expected = full_signature(run(_object_path(factory), batch))
    assert len(expected) >= 5
    for _ in range(3):
        assert full_signature(run(factory(), batch, random_cuts(len(batch), rng))) == expected


def test_long_window_uses_dgim_objects_and_matches_reference() -> None:
    fraud = fraud_stream(FRAUD_N, 5)
    det = VelocityDetector(last_n=80, min_rapid=4, cooldown=20.0, idle_ttl=90.0)
    assert det._table is None

    def rapid(i: int, t: float, prev_ts: float) -> bool:
        return abs(t - prev_ts) <= 10.0

    got = triggers(run(det, fraud, [100, 1500]))
    assert got == ref_dgim(fraud, "card_id", rapid, 80, 8, 4, 20.0, 90.0) and len(got) >= 10
    restored = pickle.loads(pickle.dumps(det))
    assert restored.n_entities == det.n_entities and restored._table is None


def test_dgim_table_snapshot_bytes_per_entity() -> None:
    det = VelocityDetector(idle_ttl=1e9, lateness=1e9)  # every entity kept
    run(det, fraud_stream(20_000, 4, cards=5000))
    assert det.n_entities > 4000
    # every entity: key and previous ts (8 B each); the hot ones (about half of these bursty
    # cards) also key, previous ts, last alert (mostly -inf: a bitmap) and 4 masks of 10 bits
    assert len(pickle.dumps(det, protocol=pickle.HIGHEST_PROTOCOL)) < 30 * det.n_entities


# -- memory layout: the tables, older snapshots -------------------------------------------------


def test_dgim_hot_table_holds_only_entities_with_buckets_or_alerts() -> None:
    det = VelocityDetector(min_rapid=3, cooldown=20.0, idle_ttl=90.0, lateness=80.0)  # recall: 90
    batch = fraud_stream(FRAUD_N, 8)
    run(det, batch, [700, 1900])
    table, hot = det._table, det._hot
    assert table is not None and hot is not None
    assert table.columns == ["prev_ts"] and 0 < len(hot) <= len(table)
    rows = table.find(hot.keys)
    assert (rows >= 0).all()  # hot entities are a subset, with the same previous ts
    assert hot["prev_ts"].tolist() == table["prev_ts"][rows].tolist()
    # a sweep drops the entities that went cold (empty DGIM, never alerted): here all of them,
    # after 10 rapid-free events each (a gap > 10 s between consecutive events of a card)
    names = sorted(set(batch["card_id"].tolist()))
    t0 = float(batch["ts"].max()) + 11.0
    n = 10 * len(names)
    quiet = make_batch(
        "fraud",
        tx_id=[f"q{i}" for i in range(n)],
        card_id=names * 10,
        amount=[10.0] * n,
        ts=[t0 + 11.0 * (i // len(names)) for i in range(n)],
    )
    before = len(hot)
    assert (hot["m0"] != 0).any()
    det.process(quiet)
    det._swept = -math.inf  # force a sweep at the next batch
    det.process(make_batch("fraud", tx_id=["z"], card_id=[names[0]], amount=[1.0], ts=[t0 + 110.0]))
    assert det.n_entities == len(names)
    assert len(hot) < before  # only the cards that alerted (and were not reset since) stay
    assert (hot["last_alert"] != -np.inf).all()
    assert not any(hot[f"m{j}"].any() for j in range(4))


@pytest.mark.parametrize("seed", [3, 4])
def test_velocity_forgets_cold_entities_after_gap_plus_lateness_with_the_same_alerts(seed: int) -> None:
    """Sparse cards (each back after ~20 minutes) with bursts, ts jitter up to 2 s: remembering
    cold cards for gap + lateness (10 + 3 s) instead of idle_ttl gives the same alerts, in any
    batch cuts, and a table of the recent cards only."""
    batch = fraud_stream(FRAUD_N, seed, cards=2000)
    cuts = random_cuts(len(batch), np.random.default_rng(seed))

    def velocity(lateness: float) -> VelocityDetector:
        return VelocityDetector(min_rapid=3, cooldown=20.0, idle_ttl=3600.0, lateness=lateness)

    short, full = velocity(3.0), velocity(1e9)
    assert (short.recall, full.recall) == (13.0, 3600.0)
    got = triggers(run(short, batch, cuts))
    assert got == triggers(run(full, batch)) and len(got) >= 5
    table = short._table
    assert table is not None and full._table is not None
    assert len(table) < len(full._table) / 20
    # no row of a card seen more than recall (plus one sweep interval, recall) before the clock
    assert (table["prev_ts"] >= short._clock - 2 * short.recall).all()


def test_velocity_hot_card_quiet_past_recall_keeps_its_previous_time_in_the_hot_table() -> None:
    """A bursting card (buckets: hot) quiet for longer than recall but less than idle_ttl is
    swept from the recent table and keeps its previous time in the hot one: the same bits and
    alerts as a detector that keeps every card."""

    def velocity(lateness: float) -> VelocityDetector:
        return VelocityDetector(gap=10.0, lateness=lateness, min_rapid=2, last_n=4, cooldown=0.0)

    short, full = velocity(0.0), velocity(1e9)
    batches = [
        make_batch("fraud", card_id=["a", "a"], ts=[0.0, 1.0]),  # a rapid bit: "a" is hot
        make_batch("fraud", card_id=["b"], ts=[100.0]),  # clock 100: the recent table sweeps "a"
        make_batch("fraud", card_id=["a", "a"], ts=[105.0, 106.0]),  # 106 is a's second 1-bit
    ]
    got = [triggers(alerts_only(short.process(b))) for b in batches[:2]]
    assert short._table is not None and short._hot is not None
    a_key = short._hot.keys
    assert len(a_key) == 1 and (short._table.find(a_key) < 0).all()  # only in the hot table
    got.append(triggers(alerts_only(short.process(batches[2]))))
    assert got == [triggers(alerts_only(full.process(b))) for b in batches] == [[], [], ["1"]]


def test_velocity_event_later_than_lateness_misses_its_forgotten_predecessor() -> None:
    det = VelocityDetector(gap=10.0, lateness=5.0, min_rapid=2, last_n=4, cooldown=0.0)
    cards = make_batch("fraud", card_id=["a", "b"], ts=[100.0, 130.0])
    det.process(cards)  # the clock is at 130: "a" (at 100) is past recall (15 s), forgotten
    assert det._table is not None and len(det._table) == 1
    late = make_batch("fraud", card_id=["a", "a"], ts=[105.0, 106.0])
    alerts = alerts_only(det.process(late))
    # 105 trails the clock by 25 s > lateness: its predecessor is forgotten (bit 0), and one
    # rapid event (106) is no alert; with lateness 30 both are rapid and 106 alerts
    assert alerts == []
    within = VelocityDetector(gap=10.0, lateness=30.0, min_rapid=2, last_n=4, cooldown=0.0)
    within.process(cards)
    assert triggers(alerts_only(within.process(late))) == ["1"]


def test_velocity_with_no_gap_nor_lateness_still_sees_equal_times_across_batches() -> None:
    det = VelocityDetector(gap=0.0, lateness=0.0, min_rapid=2, last_n=4, cooldown=0.0)
    assert det.recall == 0.0
    batch = make_batch("fraud", card_id=["a"] * 3, ts=[100.0] * 3)
    whole = VelocityDetector(gap=0.0, lateness=0.0, min_rapid=2, last_n=4, cooldown=0.0)
    assert triggers(run(det, batch, [1, 2])) == triggers(run(whole, batch)) == ["2"]


def test_an_older_velocity_state_forgets_its_quiet_cards_with_the_same_alerts() -> None:
    """A state from before ``recall`` (its table held every card for idle_ttl) resumes with the
    default lateness: the next sweep shrinks the table, and the alerts are those of a detector
    that ran with it all along."""
    batch = fraud_stream(FRAUD_N, 5, cards=2000)
    head, tail = batch.take(np.arange(1500)), batch.take(np.arange(1500, len(batch)))
    old = VelocityDetector(min_rapid=3, cooldown=20.0, lateness=1e9)  # recall: idle_ttl (3600)
    run(old, head)
    state = {k: v for k, v in old.__dict__.items() if k not in ("recall", "_swept_recent", "lateness")}
    assert state["_table"].idle_ttl == 3600.0 and len(state["_table"]) > 800
    resumed = VelocityDetector.__new__(VelocityDetector)
    resumed.__setstate__(state)
    assert (resumed.lateness, resumed.recall) == (DEFAULT_LATENESS, 10.0 + DEFAULT_LATENESS)
    live = VelocityDetector(min_rapid=3, cooldown=20.0)
    run(live, head)
    expected = triggers(run(live, tail, [300]))
    assert triggers(run(resumed, tail, [300])) == expected and len(expected) >= 2
    assert resumed._table is not None and len(resumed._table) < 200


def test_outlier_count_widens_past_uint32() -> None:
    det = OutlierDetector(min_history=2, idle_ttl=1e9)
    batch = make_batch("fraud", card_id=["a", "a", "a"], amount=[10.0, 11.0, 9.0], ts=[0.0, 1.0, 2.0])
    det.process(batch)
    hist = det.history
    assert hist["count"].dtype == np.uint32 and hist["count"].tolist() == [3]
    hist["count"][0] = 2**32 - 2
    det.process(make_batch("fraud", card_id=["a", "a", "a"], amount=[10.0, 10.0, 500.0], ts=[3.0, 4.0, 5.0]))
    assert hist["count"].dtype == np.int64 and hist["count"].tolist() == [2**32 + 1]
    restored = pickle.loads(pickle.dumps(det))
    assert restored.history["count"].dtype == np.int64


def test_outlier_history_holds_only_entities_past_their_first_event() -> None:
    det = OutlierDetector(idle_ttl=100.0)
    det.process(
        make_batch("fraud", card_id=["a", "b", "a", "c"], amount=[5.0, 6.0, 7.0, 8.0], ts=[0.0, 1, 2, 3])
    )
    assert det.n_entities == 3 and det.table.columns == ["prev_ts", "mean"]
    assert len(det.history) == 1  # only "a" has two events; "b" and "c" are in the one-event state
    assert det.history["count"].tolist() == [2] and det.history["ref"].tolist() == [2.0]
    # "a" and "c" idle past idle_ttl: evicted from both tables
    det.process(make_batch("fraud", card_id=["b", "b"], amount=[1.0, 2.0], ts=[90.0, 150.0]))
    assert det.n_entities == 1 and det.history["count"].tolist() == [3]
    # "b" idle past idle_ttl, then one event: reset to the one-event state; a sweep drops its row
    det._swept = -math.inf
    det.process(make_batch("fraud", card_id=["b"], amount=[3.0], ts=[400.0]))
    assert det.n_entities == 1 and len(det.history) == 0
    det.process(make_batch("fraud", card_id=["b"], amount=[3.0], ts=[401.0]))
    assert det.history["count"].tolist() == [2]


# Detectors pickled by the previous state layout (one EntityTable v1 per detector: rows in
# insertion order, an own last-seen column; the DGIM detectors with all columns in one table),
# after the first 400 events of the streams below (zlib + base64).
_OLD_SNAPSHOTS = {
    "outlier": (
        "eNprYJ1awsYABj1S+QWpRYkl+UXFeimpJanJYFZqXklmSeWUHn7/0pKczNQiF6jMlMlTNBun1E7R6GFJy8kvn9LDmlaUWJoy"
        "pYclLzE3dUoPX2JufmleSXw+RNuUHl6ISfHJ+TmluXlTetiTE4tS4jOBOnjKEnNKU+ESbBCdU3o4MxJz0uJzMtNSp7g7fJWA"
        "OJI7NzMvPiOzGOiEyinezD2MVUBJBqgPWIHOz8wHCnBABTgyU3JS40tKcoBifjBF8UBVQCPtHlwWFPBqXNHDFp+ck5+cPcXd"
        "8VZoXu0pJ9Me1pLEpBygJ4QQIQJ2fWZq8ZQeblewR0LASmChkCGIsICluCA1GRw0bOWpmekZQK8w26RZTHGHOpOhDRhKuamJ"
        "eVjEmXKNsIgyF6WmwYT/f4ALsyZDAorZJtNiijdIhL2gKLUsvqQYU3FpD0t2aiVQQjivNLegUg8Y3EWpekB2alFmMtBT8WlF"
        "+blJpWlpqaCo1ZiWALU9VzVSYJmJDuONzLbuf98ymVbtZJw7e5EWs+gshUnbRPY4Bvsf2LfKJCSx5HAx75RT51L+ryma8XXZ"
        "9vqDgSbuR2Pl27wlGydUN+gvZWl297sQk3tgnf5KrRkxHVc9tubnfpv49hnQF2AHAemUksoCUIj2MJVaTOnsaJ8SNEUDFMM2"
        "U/z8/Lz+AwGY8GYomZLkzdM6pYfReUoJUFEPZ05icUl8cWpq3pQMQ4TT+cUba/NCbzmaOp0C0zOWvq4C0V8d08D8NTFuYFru"
        "oE81iNaU5QXz4/b/BvNNl8wFq0/0VAbzn5vnguVZuuMrQfSUDNMepjQkp2ZYYndohg3YmSzAFF4MTiwyyM6sfGIT2//bxEH4"
        "zqzHJr8dHDYtejA7/be7w5W04EytP2YOG0wvOIRWOzo0VPc8dqh2cuhJCjCe8cvZYcbCsEvsQPUMQjcEbvwyd3hwc2nen3/K"
        "Dh0hSunPq1wcZNZtSKj84+QwJcMZ4YgMeWSrHwd9mSz2T8AhSe+cU3HRK/sCgR//bd8xO0wqlT06jVXQ4V9U7bpscVYHhzv6"
        "CcUVAg4RKqFvsqYyOwjyXlM6sJnRIfDqxJYL2xgcPP9tEnQT4nDI2tcyd+1HAYeujrpy5yt/7VGtVkK2+uHv/jdMN6QcHPgs"
        "ykxKxBw0NMu0HzaZOLxe/zLzykZBh6Mz20tVXio61K38wiMkbeHgxh2iv3aTksPc55sjp5coOSgebGq0U5VzKCzw3XjM1MjB"
        "a7+3f4mbmoOx8QUZwV+KaL5WpW+6QLZaA9lqUSitBKUNoLQ4lFaG0qpQWgNNvQSU5oLSmlBaDUqDk2Qm0UkyQxtbuFT9WkzV"
        "cClQsMYMl9LSpNIkPQCrVm2T"
    ),
    "velocity": (
        "eNq9VFtIFFEYnp1d74rSBSuyBDNUZE1bS8ooy9psY7upIFnT7O4ZZ3FuzZzRVhOVyAxP0OVUUkhQKWTSW4VhpUREQtFDQehb"
        "RD1E0IsGCdnZsxs7Gz7USz/D/Of7L/N95z+H6Uq4XJPAUEMrVA3oPFR1wxkAEPjpCigwCEMYZdUDSfWTZXU0hS/hwm7cgQuQ"
        "Q5DUVowSBJ03Axg5FF4GGGX4eT3AtUS7CI58ifOrkikrGCXRfJA0JEq8ATkFe1KRTceeZJQCRR0YoioFsMeOkv0qWamtCnZv"
        "c0WlJgcDEuAglEjMG42lAV1Xdc6nmkoAu7eOHX+xkjwokfMTCc3YXTVVp3RMbi8nEaMVaNASSeIMyENgkO2QLOR9EtnAotg4"
        "qPQgyaO0nXQXtbTk9wTEzJgKh6EBPx1LkqaDFg6SJnulUIHd898iJT0YpdId8xLQ4QJZVl4Xjppl2BOBpfGwLB6ut0ATOZpB"
        "iFAuVkxZCznJtHXgJGugB/1EPSfoquwzBQGEz6/gyrEIKSPnN2QNuYpt74M9fT9ng+zwqG3g+s0i+9JruRcfLBmrOrRv/Mmw"
        "q5aHz4wMPPk6MD+i988MPeycOOByPz+yusezvPt8e1fJoOOU2/umUR6/V3KnqL+x993u+6o8e+HrJ3I7qCDiAzCkhUeHWLMC"
        "n+09gw/iAnLKtkrs9Xr3zBOjLw8Dsc+Tfhoj2w4MSRFKoUMzAFCwWBaTnpnd3aHUTVW1/bhFff/gl7awn6kSKB5p3EX9qom9"
        "7WFfmJNB8dGncxSX3x6g9XxNHsWfN8o0r+VuDoU9FjcgVrBIFTctLFTcQmU6yAU36K3I+b8yq2MixFwr9dUbLSet1B+z22hL"
        "afLbE1bq/T6jzUrdkH+Y4nOlObQ+/VEOpS79cJd6Rx+3AHVemHpZlLqJfcl2Mo/to/Zp5pVtmp1j25nvTKudDpXc2b8cqrjW"
        "+tGwdbFMvNkYBov1lpbCP1sWsviW4n9uMU0fsjfxGvkNrYmkTZ/zF85z+qQ="
    ),
    "breach": (
        "eNq1VFtIFFEYPrvuruutsuyhsJRurGTrNVCwXDNbcWsTcSnpMu7MnmkGZ2e2mTOahKZJpXAQylOQPRSGTxIRQVAk2EN0eegl"
        "X9Qe6iECH8Iw6PZgZ85uuoIPgnQY5jvff875/+//z+Hvcd4cdwI28FYtBvUw0nTDG4EICmwGVSSjToLXHdJhWJAOJxbIECno"
        "JV3Egx2ionUQnCJriGCHGo5CgjciSYeGpCkRjmfHoEFwVtwVJ2iKGVUJTovAdlmAnBwh2KWEDcSpJJCDbToJuHHaogcSSMFu"
        "QaMzrUMlft/BhFq3HFEgh5BCbcGELQPquqZzvGaqEeKvfn7+VS79sIsTFE1oI/6a6ZAqNo25qMXogDGUZEnlDBRGVGcXVcOh"
        "MK9YeSxVhImXrTwy6lgezWzLvzJI65dUOIwYFFhtUmM6bOcQPZRSJVYQ/8JcfMtVgtNZxmEF6miFVXu02LKa5SQQpyXLaely"
        "WraclidREzvaYCdVsEk1o7FOLy2/Dr10DnVZoMlwoq5FeVMUoXWnnluNcQ1g75GhUlf9p7wRlczkBEeKi44+Mh5IbSXzLwof"
        "d0/eOTtZP+2+9OzX/ane4HDl5gufY6HRfT19278cyx4+8efHya9bprqftPCZc5dvDIyK37N+E+xkAihGUGfMqhy2mxVkoP8a"
        "aSIeesm2KhIMBhsW6GC/AECED6RfIdhWSxDdhNNYzQwIVSLtX5La2PCNV0PTNbujdtHC16250ML3L48z/DCYyey335iMu8aa"
        "GJ/pn2XcV3ub4fzsDEMiVWK7mCRNOrCyMMnHZDnoizbYI9j2f2X5l4JK+cmhBu+WNVtbJkbrTll47t2QYOH4WPUZC/Oy85n9"
        "48XTzNXDYXerhblvewMW4nvXQxb+fIpWCLXTCuVJhOpx2MCEA4ANNkr67MC9C4AdwAZqRwDItwPg9gFgt9sAKyJ9g6ssorQn"
        "OchqB5FaklwUrN1F4dpdFK3ZhWnyOLM9rJhwsVdmIBhlrcjUaVtyKnJUps3L1xw/bfLev/Ra+Os="
    ),
    "stuck": (
        "eNqlUktoE1EUzd/UJoI/8EfdVIxYU/9E6CKhakqjsUTjZ+OYmbxhhkxmwsx70SxsU0Vt4eHCXoXWXaWr4kIEF+5cCLq2myZu"
        "XIjQhVQq+FvUNy+JiSGK4F3Meffe8+47994pe+/v9ji40W1GAZkZbJhWOIswkvgJ6VjFJaDBs5hIueP1OEzBnnG4DiHqkTXj"
        "KlC3amCgHj2TR0ADls0VLKRbjEqDtRqCZGgkrwPtyqKiKiFBzTJqMaMR9CvVjVGeiyAmq9MtGbqFJILVIoKEm/rVrIYEjDWI"
        "R5N10T5B0gwpB/FYJa3LqXkf9eKMqLHbG5rtcAEqsljJE1zLOU5pNKGsa9bzWAUk1TrTMhbryT0gRyA+9rWWv80CJtHtsBqB"
        "hO2vKZioKGCrQV1dblAJ9eRQiSU26iRfKIVZmyYKszMyVYlpEWTTyItElpE90NCDkdpFx96TUwd9Q+92zupQ3ZSc3d9/6on1"
        "WMkdWHnR93R04eHlhaGKf+z5t0eL48mZY5uvvS+k5/aVb/Z8OL1+5sKPLxc/bl0cfXZJDCzfuDc5J38Ofgfq5QIYZnGpYDdO"
        "XSQCkxN3IAUhNlnnACSTyeFVZvyTcGAQE2tvAXUOAmYk2mVPg60U6aD0NqWODH8S9XQltivvkm3s9ceQjW9enuH49m6Ax6df"
        "E+775lPcr04scT86OM1xZanKEZQQdckt0pS+zsKUfi7Lw/4ci+9wS6usmh2J1vBQtLN/+Hcsn+8cZ3xQjjYfVba3PuWso6vN"
        "/xO62tDdlucTUP95AkrP39bx6sqO/1xHS9+EiEQM/wSjP3a0"
    ),
}

_OLD_CASES: dict[str, tuple[Factory, Callable[[], EventBatch]]] = {
    "outlier": (
        lambda: OutlierDetector(min_history=3, z=2.0, ratio=3.0, idle_ttl=60.0),
        lambda: fraud_stream(800, 21, cards=12),
    ),
    "velocity": (
        lambda: VelocityDetector(min_rapid=3, cooldown=20.0, idle_ttl=60.0),
        lambda: fraud_stream(800, 21, cards=12),
    ),
    "breach": (
        lambda: BreachDetector(min_breaches=3, cooldown=30.0, idle_ttl=60.0),
        lambda: iot_stream(800, 22, devices=10),
    ),
    "stuck": (lambda: StuckDetector(idle_ttl=60.0), lambda: iot_stream(800, 22, devices=10)),
}


@pytest.mark.parametrize("name", list(_OLD_CASES))
def test_snapshot_of_the_previous_layout_resumes_identically(name: str) -> None:
    factory, stream = _OLD_CASES[name]
    batch = stream()
    head, tail = batch.take(np.arange(400)), batch.take(np.arange(400, len(batch)))
    live = factory()
    run(live, head)
    expected = full_signature(run(live, tail, [150]))
    old: Any = pickle.loads(zlib.decompress(base64.b64decode("".join(_OLD_SNAPSHOTS[name]))))
    assert type(old) is type(live)
    assert old.key_seed == ENTITY_SEED  # keyed as it was: the class attribute
    assert old.n_entities == factory_entities(factory, head)
    if isinstance(old, (VelocityDetector, BreachDetector)):  # from before recall: the defaults
        recall = min(10.0 + DEFAULT_LATENESS, 60.0) if name == "velocity" else 0.0
        assert old.recall == recall == live.recall
    # the same alerts; the old state's floats were summed in another order (last bits differ)
    got = full_signature(run(old, tail, [150]))
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert g[3] == pytest.approx(e[3], rel=1e-9)
        assert [k for k, _ in g[4]] == [k for k, _ in e[4]]
        for (_, gv), (_, ev) in zip(g[4], e[4], strict=True):
            assert gv == (pytest.approx(ev, rel=1e-9, abs=1e-12) if isinstance(ev, float) else ev)
    assert len(expected) >= 1 or name == "stuck"


def factory_entities(factory: Factory, batch: EventBatch) -> int:
    det: Any = factory()
    det.process(batch)
    return int(det.n_entities)


def test_outlier_keeps_precision_when_a_batch_spans_many_half_lives() -> None:
    # Out-of-order events and a 5-s half-life: within a batch, early events weigh ~2**-600
    # relative to later ones. A batch-wide cumsum drowned them (garbage means, ZeroDivisionError).
    rng = np.random.default_rng(0)
    n, cards = 4000, 30
    card = rng.integers(0, cards, n)
    ts = np.cumsum(rng.exponential(1.0, n)) + rng.uniform(0, 40, n) * (rng.random(n) < 0.2)
    amount = np.exp(rng.normal(3, 1, cards))[card] * rng.lognormal(0, 0.4, n)
    names = np.array([f"c{x}" for x in card], dtype=object)
    batch = EventBatch("fraud", np.arange(n), {"card_id": names, "amount": amount, "ts": ts})

    def make() -> OutlierDetector:
        return OutlierDetector(min_history=2, z=1.0, ratio=1.5, idle_ttl=200.0, half_life=5.0)

    whole = make().process(batch)
    one, single = make(), []
    for i in range(n):
        single += one.process(batch.take(np.array([i])))
    assert [a.alert_id for a in whole] == [a.alert_id for a in single] and len(whole) > 100
    for a, b in zip(whole, single, strict=True):
        assert a.evidence["mean"] == pytest.approx(b.evidence["mean"], rel=1e-9, abs=1e-9)


def test_duplicates_across_partitions_heard_from_late_are_found() -> None:
    # Partition "b" delivers two batches (0..800 s, then 800..1600 s) before "a" is heard from at
    # all (as when another process reads "a"): the shard's clock is unknown (-inf) meanwhile, so
    # the filter must keep every generation; "a"'s early copies then find "b"'s.
    parts = ("a", "b")

    def part(name: str, ids: list[str], ts: list[float]) -> EventBatch:
        batch = make_batch("fraud", tx_id=ids, ts=ts)
        batch.progress = Progress(name, parts)
        return batch

    detector = DuplicateDetector(flow="fraud", name="duplicate_tx", ttl=300.0, capacity=10_000, fp_rate=1e-9)
    logic = _DetectorLogic(detector, PartitionClock())
    b0 = part("b", ["t1", "t2", "x"], [1.0, 5.0, 700.0])
    b1 = part("b", ["t3", "y"], [900.0, 1500.0])
    a0 = part("a", ["t1", "t3", "t2", "z"], [3.0, 950.0, 400.0, 1600.0])  # t2: 395 s apart
    found = [o.entity for b in (b0, b1, a0) for o in logic.on_batch([b])[0] if isinstance(o, Alert)]
    assert found == ["t1", "t3"]


def test_an_idle_entity_not_yet_swept_starts_afresh_like_an_evicted_one() -> None:
    """Eviction runs every idle_ttl / 16 of shard clock: a row idle past idle_ttl may still be
    there when its entity returns, and must count for nothing."""
    outlier = OutlierDetector(idle_ttl=100.0, min_history=3, z=2.0, ratio=2.0)
    stuck = StuckDetector(idle_ttl=100.0, consecutive=3)
    # sweeps at 0 and 99.5; "a" (last event at 0.5) is not idle at either, then "z" moves the
    # clock to 103 (no sweep: < 99.5 + 100 / 16): "a" is idle past idle_ttl but still has rows
    outlier.process(make_batch("fraud", card_id=["a"] * 4, amount=[10.0] * 4, ts=[0.0, 0.1, 0.2, 0.5]))
    stuck.process(make_batch("iot", device_id=["a", "a"], temperature=[20.0, 20.0], ts=[0.0, 0.5]))
    for det, batch in (
        (outlier, make_batch("fraud", card_id=["z", "z"], amount=[1.0, 1.0], ts=[99.5, 103.0])),
        (stuck, make_batch("iot", device_id=["z", "z"], temperature=[1.0, 2.0], ts=[99.5, 103.0])),
    ):
        det.process(batch.take(np.array([0])))
        det.process(batch.take(np.array([1])))
        assert det.n_entities == 2  # type: ignore[attr-defined]
    # "a" returns at 104: a tenfold amount is no outlier of a history that has expired, and an
    # equal reading starts a new run instead of completing the old one
    assert outlier.process(make_batch("fraud", card_id=["a"], amount=[100.0], ts=[104.0])) == []
    assert stuck.process(make_batch("iot", device_id=["a"], temperature=[20.0], ts=[104.0])) == []
    fresh = OutlierDetector(idle_ttl=100.0, min_history=3, z=2.0, ratio=2.0)
    fresh.process(make_batch("fraud", card_id=["a"], amount=[100.0], ts=[104.0]))
    rows = outlier.table.find(fresh.table.keys)
    assert outlier.table["mean"][rows].tolist() == fresh.table["mean"].tolist()
    (row,) = outlier.history.find(fresh.table.keys).tolist()  # kept current: the one-event state
    state = [outlier.history[name][row] for name in ("weight", "m2", "ref", "count")]
    assert state == [1.0, 0.0, 104.0, 1]


# -- the entity-key seed: the routing hashes, carried by the shard split -------------------------

_KEYED: dict[str, tuple[Callable[..., Detector], Callable[[int, int], EventBatch], str]] = {
    "amount_outlier": (
        lambda **kw: OutlierDetector(half_life=300.0, min_history=3, z=2.5, ratio=4.0, idle_ttl=120.0, **kw),
        fraud_stream,
        "card_id",
    ),
    "card_velocity": (
        lambda **kw: VelocityDetector(min_rapid=4, cooldown=20.0, idle_ttl=90.0, **kw),
        fraud_stream,
        "card_id",
    ),
    "threshold_breaches": (
        lambda **kw: BreachDetector(last_n=10, r=2, min_breaches=3, cooldown=30.0, idle_ttl=60.0, **kw),
        iot_stream,
        "device_id",
    ),
    "stuck_sensor": (lambda **kw: StuckDetector(consecutive=3, idle_ttl=40.0, **kw), iot_stream, "device_id"),
}


@pytest.mark.parametrize("name", list(_KEYED))
def test_alerts_do_not_depend_on_the_entity_key_seed(name: str) -> None:
    make, stream, _ = _KEYED[name]
    batch = stream(FRAUD_N, 13)
    default = make()
    assert default.key_seed == ENTITY_SEED  # type: ignore[attr-defined]
    expected = full_signature(run(default, batch, [1000, 1900]))
    assert len(expected) >= 3
    other = make(key_seed=12345)
    head = run(other, batch.take(np.arange(1000)))
    restored: Any = pickle.loads(pickle.dumps(other, protocol=pickle.HIGHEST_PROTOCOL))
    assert restored.key_seed == 12345
    tail = run(restored, batch.take(np.arange(1000, len(batch))), [900])
    assert full_signature(head + tail) == expected
    with pytest.raises(ValueError, match="seed"):
        make(key_seed=-1)


@pytest.mark.parametrize("name", list(_KEYED))
def test_a_detector_keyed_by_the_routing_seed_does_not_hash_its_entities_again(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, stream, column = _KEYED[name]
    seeds: list[int] = []

    def spy(items: Any, seed: int = 0) -> Any:
        if items.dtype == object and str(items[0]).startswith(("c", "d")):  # a card or device id
            seeds.append(seed)
        return hash64_many(items, seed)

    monkeypatch.setattr(events, "hash64_many", spy)
    parts = split_by_shard(stream(600, 5), column, shards=4, seed=7)
    assert seeds == [7]  # the routing hash
    for key_seed, hashed in ((7, []), (ENTITY_SEED, [ENTITY_SEED] * len(parts))):
        seeds.clear()
        for _, part in parts:
            make(key_seed=key_seed).process(part)
        assert seeds == hashed
