"""Tests for operators.detectors.decayed.DecayedMeanDetector and operators.sampling.WindowSampler."""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from scipy.stats import chisquare  # type: ignore[import-untyped]

from connectors.events import EventBatch, Progress, Sample
from operators import sampling
from operators.alerts import Alert
from operators.detectors.decayed import DecayedMeanDetector
from operators.runtime import Detector, Output, PartitionClock, _DetectorLogic
from operators.sampling import FLOW_SAMPLING, StratumSpec, WindowSampler, sampler_for
from sketches import DecayingAggregate, hashing
from sketches.hashing import fmix64, hash64

T0 = 1767225600.0


# ---------------------------------------------------------------- helpers


def sentiment_events(n: int, seed: int, brands: int = 6) -> EventBatch:
    """Sentiment-like events with crises (runs of negative posts), jitter and idle gaps."""
    rng = np.random.default_rng(seed)
    ts = T0 + np.cumsum(rng.exponential(0.5, n)) + rng.uniform(0.0, 2.0, n)  # up to 2 s out of order
    brand = rng.integers(0, brands, n)
    values = np.clip(rng.normal(0.1, 0.35, n), -1.0, 1.0)
    for _ in range(max(1, n // 500)):  # crises: one brand's posts turn negative for a while
        b, at = int(rng.integers(0, brands)), int(rng.integers(0, n))
        span = slice(at, at + int(rng.integers(300, 900)))
        hit = brand[span] == b
        values[span][hit] = np.clip(rng.normal(-0.8, 0.15, int(hit.sum())), -1.0, 1.0)
    # brand 0 goes silent for a long stretch (longer than idle_ttl in the tests below)
    quiet = (brand == 0) & (ts > ts[n // 3]) & (ts < ts[n // 3] + 4000.0)
    brand[quiet] = 1
    names = np.array([f"brand{b}" for b in brand.tolist()], dtype=object)
    return EventBatch(
        "sentiment", np.arange(n, dtype=np.int64), {"brand": names, "sentiment": values, "ts": ts}
    )


def random_splits(batch: EventBatch, seed: int, pieces: int) -> Iterator[EventBatch]:
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(batch)), size=pieces - 1, replace=False))
    for idx in np.split(np.arange(len(batch)), cuts):
        yield batch.take(idx)


def run(det: Detector, batches: Iterator[EventBatch] | list[EventBatch]) -> list[Output]:
    out: list[Output] = []
    for b in batches:
        out.extend(det.process(b))
    out.extend(det.flush())
    return out


def reference_decayed(
    batch: EventBatch, half_life: float, floor: float, min_weight: float, hysteresis: float, ttl: float
) -> tuple[list[tuple[str, int, float, float, float]], dict[str, tuple[float, float, float, bool]]]:
    """Sequential definition, one event at a time: alerts (entity, position, ts, mean, weight)."""
    rate = math.log(2.0) / half_life
    state: dict[str, list[Any]] = {}
    alerts = []
    for name, v, t, pos in zip(
        batch["brand"].tolist(),
        batch["sentiment"].tolist(),
        batch["ts"].tolist(),
        batch.positions.tolist(),
        strict=True,
    ):
        st = state.get(name)
        if st is None or t - st[2] > ttl:
            st = state[name] = [0.0, 0.0, t, True]
        w, s, ref, armed = st
        if t > ref:
            f = math.exp(-rate * (t - ref))
            w, s, ref = w * f, s * f, t
        e = math.exp(-rate * (ref - t))
        w, s = w + e, s + e * v
        mean = s / w
        if armed and mean <= floor and w >= min_weight:
            alerts.append((name, pos, t, mean, w))
            armed = False
        elif not armed and mean > floor + hysteresis:
            armed = True
        state[name] = [w, s, ref, armed]
    return alerts, {k: (v[0], v[1], v[2], v[3]) for k, v in state.items()}


def decayed(**kw: Any) -> DecayedMeanDetector:
    params: dict[str, Any] = {"half_life": 60.0, "min_weight": 5.0, "idle_ttl": 1200.0}
    params.update(kw)
    return DecayedMeanDetector("sentiment", "decayed_sentiment", "brand", "sentiment", **params)


def alert_key(a: Output) -> tuple[str, str, float]:
    assert isinstance(a, Alert)
    return (a.entity, a.trigger, a.event_ts)


# ---------------------------------------------------------------- DecayedMeanDetector


def test_decayed_matches_sequential_definition() -> None:
    batch = sentiment_events(6000, seed=1)
    det = decayed()
    alerts = run(det, [batch])
    want, state = reference_decayed(batch, 60.0, -0.4, 5.0, 0.1, 1200.0)
    assert len(want) >= 5  # crises fire, and re-arming lets a brand fire again
    assert [alert_key(a) for a in alerts] == [(e, str(p), t) for e, p, t, _, _ in want]
    for a, (_, _, _, mean, weight) in zip(alerts, want, strict=True):
        assert isinstance(a, Alert)
        assert math.isclose(a.score, mean, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(a.evidence["decayed_weight"], weight, rel_tol=1e-9)
        assert a.threshold == -0.4 and a.detector == "decayed_sentiment" and a.flow == "sentiment"
        assert a.window_start is None and a.window_end is None
        assert a.evidence_json()  # JSON-serialisable
    for name, (w, s, ref, armed) in state.items():
        got = det.state(name)
        assert got is not None
        assert math.isclose(got[0], w, rel_tol=1e-9)
        assert math.isclose(got[1], s, rel_tol=1e-9, abs_tol=1e-9 * w)
        assert got[2] == ref and got[3] == armed


def test_decayed_mean_equals_decaying_aggregate() -> None:
    batch = sentiment_events(3000, seed=2, brands=3)
    det = decayed(idle_ttl=1e9)  # never reset: the plain DecayingAggregate definition
    run(det, random_splits(batch, seed=5, pieces=17))
    for name in set(batch["brand"].tolist()):
        mask = batch["brand"] == name
        agg = DecayingAggregate(half_life=60.0)
        for v, t in zip(batch["sentiment"][mask].tolist(), batch["ts"][mask].tolist(), strict=True):
            agg.add(v, t)
        got = det.state(name)
        assert got is not None
        weight, total, ref, _ = got
        assert ref == agg.latest_ts
        assert math.isclose(weight, agg.count(), rel_tol=1e-9)
        assert math.isclose(total / weight, agg.mean(), rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_decayed_batch_boundary_invariance(seed: int) -> None:
    batch = sentiment_events(4000, seed=10 + seed)
    whole = [alert_key(a) for a in run(decayed(), [batch])]
    assert whole
    for pieces in (2, 7, 60, 400):
        split = [alert_key(a) for a in run(decayed(), random_splits(batch, seed * 100 + pieces, pieces))]
        assert split == whole


def test_decayed_long_batch_uses_several_chunks() -> None:
    # half_life 1 s over ~1000 s of event time in one batch: many 32-half-life runs per entity.
    batch = sentiment_events(3000, seed=3, brands=2)
    det = decayed(half_life=1.0, min_weight=1.5, idle_ttl=1e9)
    alerts = run(det, [batch])
    want, state = reference_decayed(batch, 1.0, -0.4, 1.5, 0.1, 1e9)
    assert [alert_key(a) for a in alerts] == [(e, str(p), t) for e, p, t, _, _ in want]
    for name, (w, _, _, _) in state.items():
        got = det.state(name)
        assert got is not None and math.isclose(got[0], w, rel_tol=1e-9)


def test_decayed_edge_triggered_and_rearm() -> None:
    det = decayed(min_weight=2.0)
    vals = [-0.9] * 5 + [0.9] * 10 + [-0.9] * 20

    def ev(i: int) -> EventBatch:
        return EventBatch(
            "sentiment",
            np.array([i]),
            {
                "brand": np.array(["b"], dtype=object),
                "sentiment": np.array([vals[i]]),
                "ts": np.array([T0 + i]),
            },
        )

    batches = [ev(i) for i in range(len(vals))]
    triggers = [a.trigger for a in run(det, batches) if isinstance(a, Alert)]
    # One alert per negative run (edge-triggered), the second only after re-arming.
    assert len(triggers) == 2 and int(triggers[0]) < 5 and int(triggers[1]) >= 15
    want, _ = reference_decayed(EventBatch.concat(batches), 60.0, -0.4, 2.0, 0.1, 1200.0)
    assert triggers == [str(p) for _, p, _, _, _ in want]


def test_decayed_pickle_midstream_and_eviction() -> None:
    batch = sentiment_events(4000, seed=4)
    whole = [alert_key(a) for a in run(decayed(), [batch])]
    parts = list(random_splits(batch, seed=9, pieces=10))
    det = decayed()
    out: list[Output] = []
    for b in parts:
        out.extend(det.process(b))
        det = pickle.loads(pickle.dumps(det))
    assert [alert_key(a) for a in out] == whole
    # brand0 was silent for > 2 * idle_ttl at some point: it was evicted and came back fresh.
    det = decayed(idle_ttl=600.0)
    quiet_start = float(batch["ts"][len(batch) // 3])
    det.process(batch.take(batch["ts"] < quiet_start + 3000.0))
    assert det.state("brand0") is None and det.state("brand1") is not None
    assert len(det) == 5


def test_decayed_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="half_life"):
        decayed(half_life=0.0)
    with pytest.raises(ValueError, match="hysteresis"):
        decayed(hysteresis=-1.0)
    assert decayed().process(EventBatch("sentiment", np.zeros(0, dtype=np.int64), {})) == []


# ---------------------------------------------------------------- WindowSampler


def ddos_events(n: int, seed: int, stragglers: bool = True) -> EventBatch:
    rng = np.random.default_rng(seed)
    ts = T0 + np.arange(n) * 0.05 + rng.uniform(0.0, 2.0, n)
    straggler = rng.random(n) < (0.01 if stragglers else 0.0)  # a few stragglers, some of them late
    ts[straggler] -= rng.uniform(5.0, 40.0, int(straggler.sum()))
    status = rng.choice([200, 201, 204, 301, 404, 500, 503], size=n, p=[0.6, 0.1, 0.1, 0.1, 0.07, 0.02, 0.01])
    ip = np.array([f"10.0.0.{i}" for i in rng.integers(0, 50, n).tolist()], dtype=object)
    cols = {"client_ip": ip, "status": status.astype(np.int64), "bytes": rng.integers(0, 9999, n), "ts": ts}
    return EventBatch("ddos", np.arange(100, 100 + n, dtype=np.int64), cols)


def sample_key(s: Output) -> tuple[float, float, str, int]:
    assert isinstance(s, Sample)
    return (s.window_start, s.window_end, s.stratum, s.position)


def reference_bottom_k(batch: EventBatch, length: float, k: int, seed: int) -> tuple[list[Any], int]:
    """Sequential definition: the lateness rule event by event, then per window and stratum the
    ``k`` events of smallest ``fmix64(hash64(position, seed) ^ fmix64(window ^ salt))``."""
    wm, late = -math.inf, 0
    groups: dict[tuple[int, str], list[tuple[int, int, dict[str, Any]]]] = {}
    for rec, pos in zip(batch.records(), batch.positions.tolist(), strict=True):
        wm = max(wm, rec["ts"] - 5.0)
        w = math.floor(rec["ts"] / length)
        if (w + 1) * length <= wm:
            late += 1
            continue
        salt = int(fmix64(np.array([w ^ sampling._WINDOW_SALT], dtype=np.uint64))[0])
        prio = int(fmix64(np.array([hash64(pos, seed) ^ salt], dtype=np.uint64))[0])
        groups.setdefault((w, f"{rec['status'] // 100}xx"), []).append((prio, pos, rec))
    want = [
        (w * length, (w + 1) * length, s, pos, rec)
        for (w, s), items in sorted(groups.items())
        for _, pos, rec in sorted(items, key=lambda x: x[0])[:k]
    ]
    return want, late


def test_sampler_matches_sequential_bottom_k() -> None:
    batch = ddos_events(5000, seed=1)
    sampler = WindowSampler("ddos", 30.0, StratumSpec("status", "status_class"), k_per_stratum=5, seed=7)
    got = run(sampler, [batch])
    want, late = reference_bottom_k(batch, 30.0, 5, 7)
    assert late == sampler.late and late > 0  # the stragglers
    assert [(*sample_key(s), s.event) for s in got if isinstance(s, Sample)] == want
    assert {s.stratum for s in got if isinstance(s, Sample)} == {"2xx", "3xx", "4xx", "5xx"}


@pytest.mark.parametrize("pieces", [1, 7, 300])
def test_preselected_batches_give_the_same_samples(pieces: int) -> None:
    batch = ddos_events(4000, seed=5)
    whole = run(sampler_for("ddos", k_per_stratum=3, seed=2), [batch])
    template = sampler_for("ddos", k_per_stratum=3, seed=2)
    parts = [template.preselect(b) for b in random_splits(batch, pieces, pieces)] if pieces > 1 else [batch]
    assert sum(len(p) for p in parts) < len(batch) or pieces == 1
    assert run(sampler_for("ddos", k_per_stratum=3, seed=2), parts) == whole


def _partitioned_chunks(seed: int, chunk: int, lag: int) -> list[EventBatch]:
    """ddos events in two partitions (even and odd events; positions per partition, like
    offsets), read by turns in chunks, partition b starting ``lag`` chunks behind a."""
    batch = ddos_events(4000, seed=seed)
    parts = ("a", "b")
    chunks: dict[str, list[EventBatch]] = {}
    for name, first in zip(parts, (0, 1), strict=True):
        mine = batch.take(np.arange(first, len(batch), 2))
        mine = EventBatch(mine.flow, np.arange(len(mine), dtype=np.int64), dict(mine.columns))
        mine.progress = Progress(name, parts)
        chunks[name] = [
            mine.take(np.arange(lo, min(lo + chunk, len(mine)))) for lo in range(0, len(mine), chunk)
        ]
    order = chunks["a"][:lag]
    for i in range(max(len(chunks["a"]), len(chunks["b"]))):
        order += chunks["b"][i : i + 1] + chunks["a"][i + lag : i + lag + 1]
    return order


def _clocked_run(det: Detector, batches: list[EventBatch]) -> list[Output]:
    """``det`` as a shard runs it: with a partition clock."""
    logic = _DetectorLogic(det, PartitionClock())
    out: list[Output] = []
    for b in batches:
        out += logic.on_batch([b])[0]
    return out + list(logic.on_eof()[0])


@pytest.mark.parametrize(("seed", "chunk", "lag"), [(1, 100, 3), (2, 250, 1), (3, 40, 12)])
def test_preselection_is_exact_under_partition_clocks(seed: int, chunk: int, lag: int) -> None:
    # Partition b trails a by several chunks: the sampler's clock is b's progress, far behind
    # the batches of a; which events of a are late is unknown to the preselection.
    chunks = _partitioned_chunks(seed, chunk, lag)
    whole = _clocked_run(sampler_for("ddos", k_per_stratum=3, seed=2), chunks)
    template = sampler_for("ddos", k_per_stratum=3, seed=2)
    parts = [template.preselect(b) for b in chunks]
    assert sum(map(len, parts)) < sum(map(len, chunks))
    assert _clocked_run(sampler_for("ddos", k_per_stratum=3, seed=2), parts) == whole
    samples = [s for s in whole if isinstance(s, Sample)]
    assert {s.partition for s in samples} == {"a", "b"}  # positions repeat across partitions
    assert len({s.sample_id for s in samples}) == len(samples)


def test_prefix_bottom_k_equals_its_definition() -> None:
    rng = np.random.default_rng(4)
    for n, k in [(0, 3), (5, 3), (200, 1), (1000, 7)]:
        prio = rng.integers(0, 2**63, n, dtype=np.uint64)
        want = [i for i in range(n) if int((prio[:i] < prio[i]).sum()) < k]
        assert sampling._prefix_bottom_k(prio, k).tolist() == want


def test_samples_do_not_depend_on_arrival_order_within_a_window() -> None:
    # Two workers' events (even and odd positions) arrive interleaved in 1-s chunks, in
    # either order; no event is displaced by more than the lateness, so none is late.
    batch = ddos_events(3000, seed=8, stragglers=False)
    whole = sorted(map(sample_key, run(sampler_for("ddos", k_per_stratum=4), [batch])))
    chunks = [
        batch.take(np.arange(start + w, min(start + 40, 3000), 2))
        for start in range(0, 3000, 40)
        for w in (0, 1)
    ]
    swapped = [chunks[i ^ 1] for i in range(len(chunks))]
    for parts in (chunks, swapped):
        sampler = sampler_for("ddos", k_per_stratum=4)
        assert sorted(map(sample_key, run(sampler, parts))) == whole and sampler.late == 0


def test_sample_inclusion_is_uniform() -> None:
    # 60 events in one window and stratum, k = 6: each kept with probability 1/10 over seeds
    n, k, seeds = 60, 6, 2000
    batch = EventBatch("iot", np.arange(n), {"zone": np.full(n, "z", dtype=object), "ts": np.zeros(n)})
    counts = np.zeros(n)
    for seed in range(seeds):
        for s in run(WindowSampler("iot", 10.0, "zone", k_per_stratum=k, seed=seed), [batch]):
            assert isinstance(s, Sample)
            counts[s.position] += 1
    assert counts.sum() == k * seeds
    assert chisquare(counts).pvalue > 1e-3  # seeded: deterministic


@pytest.mark.parametrize("seed", range(4))
def test_sampler_batch_boundary_invariance(seed: int) -> None:
    batch = ddos_events(4000, seed=20 + seed)
    whole = [sample_key(s) for s in run(sampler_for("ddos", k_per_stratum=3, seed=1), [batch])]
    for pieces in (3, 50, 700):
        sampler = sampler_for("ddos", k_per_stratum=3, seed=1)
        assert [sample_key(s) for s in run(sampler, random_splits(batch, seed + pieces, pieces))] == whole


def test_sampler_closes_on_watermark_and_counts_late() -> None:
    s = WindowSampler("iot", 10.0, "zone", k_per_stratum=2)

    def ev(pos: int, ts: float, zone: str = "z1") -> EventBatch:
        return EventBatch(
            "iot", np.array([pos]), {"zone": np.array([zone], dtype=object), "ts": np.array([ts])}
        )

    assert s.process(ev(0, 1.0)) == [] and s.process(ev(1, 9.0, "z2")) == []
    assert s.process(ev(2, 14.0)) == []  # watermark 9 < 10: window [0, 10) still open
    assert s.process(ev(3, 9.5)) == []  # in time for [0, 10)
    out = s.process(ev(4, 15.0))  # watermark 10 closes [0, 10)
    assert sorted((x.stratum, x.position) for x in out if isinstance(x, Sample)) == [
        ("z1", 0),
        ("z1", 3),
        ("z2", 1),
    ]
    assert s.process(ev(5, 2.0)) == [] and s.late == 1
    assert s.open_windows == [(10.0, 20.0)]
    rest = s.flush()
    assert [(x.window_start, x.position) for x in rest if isinstance(x, Sample)] == [(10.0, 2), (10.0, 4)]
    assert s.open_windows == []


def test_sampler_events_pickle_and_independent_windows() -> None:
    batch = ddos_events(3000, seed=3)
    whole = run(WindowSampler("ddos", 30.0, StratumSpec("status", "status_class"), k_per_stratum=4), [batch])
    sampler = WindowSampler("ddos", 30.0, StratumSpec("status", "status_class"), k_per_stratum=4)
    out: list[Output] = []
    for b in random_splits(batch, seed=2, pieces=9):
        out.extend(sampler.process(b))
        sampler = pickle.loads(pickle.dumps(sampler))
    out.extend(sampler.flush())
    assert out == whole
    by_pos = {p: r for p, r in zip(batch.positions.tolist(), batch.records(), strict=True)}
    for s in out:
        assert isinstance(s, Sample) and s.event == by_pos[s.position]
        assert s.window_start <= s.event["ts"] < s.window_end and s.stratum == f"{s.event['status'] // 100}xx"
    # The 2xx strata of successive windows: k of ~600 events each, chosen independently.
    counts: dict[float, int] = {}
    for s in out:
        if isinstance(s, Sample) and s.stratum == "2xx":
            counts[s.window_start] = counts.get(s.window_start, 0) + 1
    assert set(counts.values()) == {4}


def test_sampler_specs_and_errors() -> None:
    assert set(FLOW_SAMPLING) == {"fraud", "ddos", "iot", "sentiment"}
    assert sampler_for("iot").length == 300.0 and sampler_for("fraud").stratum == StratumSpec("type")
    with pytest.raises(ValueError, match="unknown stratum transform"):
        StratumSpec("status", "nope")
    with pytest.raises(ValueError, match="length"):
        WindowSampler("x", 0.0, "a")
    with pytest.raises(ValueError):
        WindowSampler("x", 1.0, "a", k_per_stratum=0)
    # a numeric column without a transform is sampled by its string values
    s = WindowSampler("ddos", 30.0, "status", k_per_stratum=1)
    b = EventBatch("ddos", np.array([0, 1]), {"status": np.array([200, 404]), "ts": np.array([0.0, 1.0])})
    assert sorted(x.stratum for x in s.process(b) + s.flush() if isinstance(x, Sample)) == ["200", "404"]


def test_decayed_precision_with_heavy_neighbours() -> None:
    # Many heavy entities and one light entity in one batch, half-life 1 s: the light entity's
    # early events have anchored weights ~2**-30; its sums must not absorb rounding from others.
    rng = np.random.default_rng(6)
    heavy = [(f"heavy{i}", 0.0 + j * 1e-3, 0.5) for i in range(60) for j in range(800)]
    light = [("light", 1.0 + j, 0.9 if j < 8 else -0.9) for j in range(31)]
    rows = heavy + light
    order = np.argsort([t for _, t, _ in rows], kind="stable")
    names = np.array([rows[i][0] for i in order], dtype=object)
    batch = EventBatch(
        "sentiment",
        np.arange(len(rows), dtype=np.int64),
        {
            "brand": names,
            "sentiment": np.array([rows[i][2] for i in order]) + rng.normal(0, 1e-3, len(rows)),
            "ts": np.array([rows[i][1] for i in order]),
        },
    )
    det = decayed(half_life=1.0, min_weight=1.2, idle_ttl=1e9)
    alerts = run(det, [batch])
    want, _ = reference_decayed(batch, 1.0, -0.4, 1.2, 0.1, 1e9)
    assert [alert_key(a) for a in alerts] == [(e, str(p), t) for e, p, t, _, _ in want] and want
    for a, (_, _, _, mean, weight) in zip(alerts, want, strict=True):
        assert isinstance(a, Alert)
        assert math.isclose(a.score, mean, rel_tol=1e-9)
        assert math.isclose(a.evidence["decayed_weight"], weight, rel_tol=1e-9)


@pytest.mark.parametrize("distinct", [1, 3, 16, 17, 500])
def test_stratum_codes_group_by_equality(distinct: int) -> None:
    rng = np.random.default_rng(distinct)
    strata = np.array([f"s{i}" for i in rng.integers(0, distinct, 2000)], dtype=object)
    codes = sampling._codes(strata)
    assert ((codes[:, None] == codes[None, :]) == (strata[:, None] == strata[None, :])).all()
    assert sorted(set(codes.tolist())) == list(range(len(set(strata.tolist()))))  # dense


def test_stratum_codes_survive_hash_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def colliding(values: Any, seed: int) -> np.ndarray[Any, np.dtype[np.uint64]]:
        calls.append(len(values))
        return np.zeros(len(values), dtype=np.uint64)

    # more strata than small_codes takes are grouped by sketches.hashing.hash_codes, which
    # looks hash64_many up there
    monkeypatch.setattr(hashing, "hash64_many", colliding)
    strata = np.array([f"s{i:03d}" for i in range(100)] * 2, dtype=object)
    assert sampling._codes(strata).tolist() == list(range(100)) * 2  # the sorted fallback's codes
    assert calls == [200]  # the hash path ran, and its collision was caught


def test_few_stratum_strings_are_coded_by_equality_in_order_of_appearance() -> None:
    # equal strings that are different objects (not interned) get one code too
    strata = np.array(["bb", "aa", "".join(["b", "b"]), "cc", "aa"], dtype=object)
    assert strata[0] is not strata[2]
    assert sampling._codes(strata).tolist() == [0, 1, 0, 2, 1]


def test_sampler_state_from_before_partitions_takes_new_events() -> None:
    # kept items of older snapshots are (priority, position, event): new events merge with them
    batch = ddos_events(3000, seed=9)
    head, tail = batch.take(np.arange(1500)), batch.take(np.arange(1500, 3000))
    whole = run(sampler_for("ddos", k_per_stratum=3, seed=1), [head, tail])
    old = sampler_for("ddos", k_per_stratum=3, seed=1)
    first = old.process(head)  # no flush: windows stay open
    for strata in old._windows.values():
        for name, kept in strata.items():
            assert all(item[3] == "" for item in kept)  # one partition
            strata[name] = [item[:3] for item in kept]
    resumed = pickle.loads(pickle.dumps(old))
    got = first + run(resumed, [tail])
    assert [(*sample_key(s), s.event) for s in got] == [(*sample_key(s), s.event) for s in whole]  # type: ignore[union-attr]
