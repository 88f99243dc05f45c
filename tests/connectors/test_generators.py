"""The synthetic generators: determinism, resumability, schema, and the injected anomalies."""

from __future__ import annotations

import time
import weakref
from collections import Counter
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from connectors.events import SCHEMAS, Anomaly, EventBatch
from connectors.generators import FLOWS, GENERATORS, generator, ground_truth, ground_truth_for

SEED = 11


def _run(flow: str, n: int, seed: int = SEED, start: int = 0, batch_size: int = 10_000) -> EventBatch:
    return EventBatch.concat(list(generator(flow)(n, seed, start, batch_size)))


def _equal(a: EventBatch, b: EventBatch) -> bool:
    if not np.array_equal(a.positions, b.positions) or list(a.columns) != list(b.columns):
        return False
    return all(np.array_equal(a[c], b[c]) for c in a.columns)


def _by(truth: list[Anomaly], detector: str) -> list[Anomaly]:
    return [a for a in truth if a.detector == detector]


@pytest.mark.parametrize("flow", FLOWS)
def test_deterministic(flow: str) -> None:
    assert _equal(_run(flow, 25_000), _run(flow, 25_000))
    assert not _equal(_run(flow, 25_000), _run(flow, 25_000, seed=SEED + 1))


@pytest.mark.parametrize("batch_size", [4_000, 10_000, 25_000])  # below, at and above a chunk
def test_a_yielded_batch_is_not_held_by_the_generator(batch_size: int) -> None:
    """A batch cut from chunks lives only as long as its consumer keeps it (the generator keeps
    no reference to it or to its pieces while the consumer runs)."""
    batches = generator("fraud")(60_000, SEED, 0, batch_size)
    first = next(batches)
    ref = weakref.ref(first)
    del first
    assert ref() is None
    assert len(next(batches)) == batch_size


@pytest.mark.parametrize("flow", FLOWS)
def test_resume_gives_the_tail(flow: str) -> None:
    n = 43_217
    full = _run(flow, n)
    for start in (0, 1, 9_999, 10_000, 23_456, n - 1, n):
        for batch_size in (1_000, 7_777, 10_000, 50_000):
            tail = list(generator(flow)(n, SEED, start, batch_size))
            assert all(1 <= len(b) <= batch_size for b in tail)
            assert all(len(b) == batch_size for b in tail[:-1])
            if start == n:
                assert tail == []
                continue
            got = EventBatch.concat(tail)
            assert _equal(got, full.take(np.arange(start, n)))


@pytest.mark.parametrize("flow", FLOWS)
def test_positions_and_schema(flow: str) -> None:
    batches = list(generator(flow)(30_001, SEED, 0, 4_096))
    positions = np.concatenate([b.positions for b in batches])
    assert np.array_equal(positions, np.arange(30_001))
    schema = SCHEMAS[flow]
    for b in batches:
        assert b.flow == flow
        assert b.positions.dtype == np.int64
        assert tuple(b.columns) == schema.names
        for f in schema.fields:
            col = b[f.name]
            assert col.dtype == np.dtype(f.dtype), (f.name, col.dtype)
            assert len(col) == len(b)
            if f.kind == "str":
                assert all(isinstance(v, str) and v for v in col)
            else:
                assert np.isfinite(col).all()
                if f.low is not None:
                    assert (col >= f.low).all() and (col <= f.high).all(), f.name
    ts = np.concatenate([b["ts"] for b in batches])
    start = 1767225600.0
    nominal = start + np.arange(30_001) / GENERATORS[flow].RATE
    assert (ts <= nominal + 1e-6).all() and (ts >= nominal - 2.0 - 1e-6).all()
    assert 0 < np.sum(np.diff(ts) < 0) < 0.05 * len(ts)  # a few out of order


def test_bad_arguments() -> None:
    gen = generator("fraud")
    for args in ((-1, 1, 0, 10), (10, -1, 0, 10), (10, 1, 11, 10), (10, 1, 0, 0), (10, 1, 0, 1.5)):
        with pytest.raises(ValueError):
            list(gen(*args))
    with pytest.raises(ValueError, match="unknown flow"):
        generator("nope")


@pytest.mark.parametrize("flow", ["fraud", "ddos", "iot"])
def test_ground_truth_small_and_scaling(flow: str) -> None:
    small = ground_truth(flow, 20_000, SEED)
    assert small
    big = ground_truth(flow, 400_000, SEED)
    assert len(big) > 5 * len(small)
    assert ground_truth_for(flow)(20_000, SEED) == small
    assert all(a.start <= a.end and a.detector in GENERATORS[flow].DETECTORS for a in big)


def test_sentiment_ground_truth_needs_a_warmup() -> None:
    assert ground_truth("sentiment", 20_000, SEED) == []
    mid = ground_truth("sentiment", 300_000, SEED)
    big = ground_truth("sentiment", 1_000_000, SEED)
    assert Counter(a.detector for a in mid) == {"brand_spike": 3, "decayed_sentiment": 3}
    assert Counter(a.detector for a in big) == {"brand_spike": 10, "decayed_sentiment": 10}


def _strings(col: NDArray[Any]) -> list[str]:
    return [str(v) for v in col]


def _runs(keys: NDArray[Any], ts: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[Any]]:
    """Stable order by entity then input position, and the sorted entities."""
    order = np.argsort(keys, kind="stable")
    return order, keys[order]


# --------------------------------------------------------------------------------- fraud
@pytest.fixture(scope="module")
def fraud_run() -> tuple[EventBatch, list[Anomaly]]:
    n = 400_000
    return _run("fraud", n), ground_truth("fraud", n, SEED)


def test_fraud_duplicates_are_exactly_the_replays(fraud_run: tuple[EventBatch, list[Anomaly]]) -> None:
    events, truth = fraud_run
    dups = _by(truth, "duplicate_tx")
    assert len(dups) == 400
    counts = Counter(_strings(events["tx_id"]))
    repeated = {tx for tx, c in counts.items() if c > 1}
    assert repeated == {a.entity for a in dups}
    assert all(counts[a.entity] == 2 for a in dups)
    where = {tx: i for i, tx in enumerate(_strings(events["tx_id"]))}  # last occurrence
    for a in dups:
        i = where[a.entity]
        assert events["ts"][i] == a.start == a.end
        first = int(a.entity[3:])
        assert 1.0 <= a.start - events["ts"][first] <= 202.0


def _rapid_alerts(events: EventBatch) -> dict[str, list[float]]:
    """Exact card_velocity without DGIM error or cooldown: >= 8 of the last 10 gaps < 10 s."""
    cards = events["card_id"]
    order, keys = _runs(cards, events["ts"])
    ts = events["ts"][order]
    same = np.concatenate([[False], keys[1:] == keys[:-1]])
    rapid = same & (np.diff(ts, prepend=ts[0]) < 10.0)
    csum = np.concatenate([[0], np.cumsum(rapid)])
    first = np.searchsorted(keys, keys, side="left")
    idx = np.arange(len(keys))
    lo = np.maximum(idx - 9, first)
    ones = csum[idx + 1] - csum[lo]
    out: dict[str, list[float]] = {}
    for i in np.flatnonzero(ones >= 8):
        out.setdefault(str(keys[i]), []).append(float(ts[i]))
    return out


def _covered(alerts: dict[str, list[float]], truth: list[Anomaly]) -> tuple[int, int, int]:
    """(alerts inside some anomaly of their entity, alerts outside, anomalies without an alert)."""
    inside = outside = 0
    for entity, times in alerts.items():
        spans = [(a.start, a.end) for a in truth if a.entity == entity]
        for t in times:
            if any(s <= t <= e for s, e in spans):
                inside += 1
            else:
                outside += 1
    missed = sum(not any(a.start <= t <= a.end for t in alerts.get(a.entity, ())) for a in truth)
    return inside, outside, missed


def test_fraud_card_velocity(fraud_run: tuple[EventBatch, list[Anomaly]]) -> None:
    events, truth = fraud_run
    bursts = _by(truth, "card_velocity")
    assert len(bursts) == 20
    inside, outside, missed = _covered(_rapid_alerts(events), bursts)
    assert inside >= len(bursts) and outside == 0 and missed == 0


def test_fraud_amount_outliers(fraud_run: tuple[EventBatch, list[Anomaly]]) -> None:
    events, truth = fraud_run
    outliers = _by(truth, "amount_outlier")
    assert len(outliers) == 200
    cards = events["card_id"]
    for a in outliers[:50]:
        mine = np.flatnonzero(cards == a.entity)
        at = mine[events["ts"][mine] == a.start]
        assert len(at) == 1
        before = mine[mine < at[0]]
        assert len(before) >= 8
        logs = np.log(events["amount"][before])
        z = (np.log(events["amount"][at[0]]) - logs.mean()) / logs.std()
        assert z >= 4.0 and events["amount"][at[0]] >= 10 * np.exp(logs.mean())


def test_fraud_merchant_counts() -> None:
    n = 700_000
    events, truth = _run("fraud", n), ground_truth("fraud", n, SEED)
    surges = _by(truth, "merchant_surge")
    assert len(surges) == 7
    keys = np.array(
        [f"{m}/{t}" for m, t in zip(_strings(events["merchant_id"]), _strings(events["type"]), strict=True)]
    )
    minute = (events["ts"] // 60).astype(np.int64)
    counts = Counter(zip(keys.tolist(), minute.tolist(), strict=True))
    busy = {(k, w * 60.0) for (k, w), c in counts.items() if c >= 30}
    assert busy == {(a.entity, a.start) for a in surges}
    normal = [c for (k, w), c in counts.items() if (k, w * 60.0) not in busy]
    assert max(normal) < 30


# ---------------------------------------------------------------------------------- ddos
def test_ddos_floods() -> None:
    n = 1_000_000
    events, truth = _run("ddos", n), ground_truth("ddos", n, SEED)
    ip = events["client_ip"]
    ts = events["ts"]
    # exact sliding 30 s / 5 s counts per IP
    slot = (ts // 5.0).astype(np.int64)
    per = Counter(zip(ip.tolist(), slot.tolist(), strict=True))
    heavy: dict[str, list[float]] = {}
    for (who, s), c in per.items():
        if c < 20:
            continue
        for end in range(s + 1, s + 7):
            total = sum(per.get((who, k), 0) for k in range(end - 6, end))
            if total >= 300:
                heavy.setdefault(who, []).append(end * 5.0)
    _, outside, missed = _covered(heavy, _by(truth, "ip_rate"))
    assert outside == 0 and missed == 0 and len(_by(truth, "ip_rate")) >= 5
    # distinct IPs per endpoint window
    for a in _by(truth, "endpoint_distinct_ips"):
        mask = (events["endpoint"] == a.entity) & (ts >= a.start) & (ts < a.start + 30.0)
        assert len(set(ip[mask].tolist())) >= 1_000
    assert _by(truth, "traffic_skew")
    counts = Counter(ip.tolist())
    normal_max = max(c for who, c in counts.items() if who not in heavy)
    assert normal_max / (n / 1000.0) < 2.0  # req/s of the busiest normal client


# ----------------------------------------------------------------------------------- iot
@pytest.fixture(scope="module")
def iot_run() -> tuple[EventBatch, list[Anomaly]]:
    n = 400_000
    return _run("iot", n), ground_truth("iot", n, SEED)


def test_iot_duplicate_payloads(iot_run: tuple[EventBatch, list[Anomaly]]) -> None:
    events, truth = iot_run
    dups = _by(truth, "duplicate_payload")
    assert len(dups) == 400
    pairs = Counter(zip(_strings(events["device_id"]), _strings(events["payload"]), strict=True))
    repeated = Counter(d for (d, _), c in pairs.items() if c > 1 for _ in range(c - 1))
    assert repeated == Counter(a.entity for a in dups)
    assert max(pairs.values()) == 2


def test_iot_stuck_and_breaches(iot_run: tuple[EventBatch, list[Anomaly]]) -> None:
    events, truth = iot_run
    order, keys = _runs(events["device_id"], events["ts"])
    temp = events["temperature"][order]
    ts = events["ts"][order]
    same_dev = keys[2:] == keys[:-2]
    triple = same_dev & (temp[2:] == temp[1:-1]) & (temp[1:-1] == temp[:-2])
    stuck: dict[str, list[float]] = {}
    for i in np.flatnonzero(triple):
        stuck.setdefault(str(keys[i + 2]), []).append(float(ts[i + 2]))
    _, outside, missed = _covered(stuck, _by(truth, "stuck_sensor"))
    assert outside == 0 and missed == 0 and len(_by(truth, "stuck_sensor")) == 40
    hot = temp >= 80.0
    breach: dict[str, list[float]] = {}
    for j in map(int, np.flatnonzero(hot)):
        lo = max(j - 19, int(np.searchsorted(keys, keys[j], side="left")))
        if hot[lo : j + 1].sum() >= 5:
            breach.setdefault(str(keys[j]), []).append(float(ts[j]))
    _, outside, missed = _covered(breach, _by(truth, "threshold_breaches"))
    assert outside == 0 and missed == 0 and len(_by(truth, "threshold_breaches")) == 8


def test_iot_zscores(iot_run: tuple[EventBatch, list[Anomaly]]) -> None:
    events, truth = iot_run
    zone = events["zone"]
    for a in _by(truth, "zone_zscore"):
        inside = (zone == a.entity) & (events["ts"] >= a.start) & (events["ts"] <= a.end)
        window = (zone == a.entity) & (events["ts"] >= a.start - 300.0) & (events["ts"] < a.start)
        mean, sd = events["temperature"][window].mean(), events["temperature"][window].std()
        assert window.sum() >= 30
        assert (np.abs(events["temperature"][inside] - mean) / sd >= 5.0).any()
    # normal readings: never 5 sd off the zone mean
    means = {z: np.median(events["temperature"][zone == z]) for z in set(zone.tolist())}
    dev = np.abs(events["temperature"] - np.array([means[z] for z in zone.tolist()]))
    assert ((dev > 10.0) & (events["temperature"] < 80.0)).sum() == len(_by(truth, "zone_zscore")) - 8


# ----------------------------------------------------------------------------- sentiment
def test_sentiment_crisis() -> None:
    n = 600_000
    events, truth = _run("sentiment", n), ground_truth("sentiment", n, SEED)
    crises = _by(truth, "decayed_sentiment")
    assert len(crises) == 6
    brand, sent, ts = events["brand"], events["sentiment"], events["ts"]
    for a in crises:
        start, end = a.start + 2.0, a.end - 600.0
        during = (brand == a.entity) & (ts >= start + 3) & (ts < end - 3)
        before = (brand == a.entity) & (ts >= start - 1_200) & (ts < start - 600)
        rate_during = during.sum() / (end - start - 6)
        rate_before = before.sum() / 600.0
        assert 2.5 <= rate_during / rate_before <= 3.5
        assert sent[during].mean() < -0.7
        # the decayed mean (half-life 600 s) crosses -0.4 inside the crisis
        mine = (brand == a.entity) & (ts < end)
        w = np.exp2((ts[mine] - end) / 600.0)
        assert np.sum(w * sent[mine]) / np.sum(w) <= -0.4
    normal = np.ones(len(ts), dtype=bool)
    for a in crises:
        normal &= ~((brand == a.entity) & (ts >= a.start) & (ts <= a.end))
    assert 0.08 <= sent[normal].mean() <= 0.12


# ---------------------------------------------------------------------------------- speed
@pytest.mark.parametrize("flow", FLOWS)
def test_generation_rate(flow: str, capsys: pytest.CaptureFixture[str]) -> None:
    n = 300_000
    ground_truth(flow, n, SEED)  # plan once (cached)
    t0 = time.perf_counter()
    count = sum(len(b) for b in generator(flow)(n, SEED, 0, 10_000))
    rate = count / (time.perf_counter() - t0)
    assert count == n
    with capsys.disabled():
        print(f"\n{flow}: {rate / 1e6:.2f} M events/s")
