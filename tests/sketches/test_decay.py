"""Tests for sketches.decay.DecayingAggregate."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sketches.ams import AMSSketch
from sketches.decay import DecayedStats, DecayingAggregate

RTOL = 1e-9

values_st = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
times_st = st.floats(0.0, 100.0, allow_nan=False, allow_infinity=False)
events_st = st.lists(st.tuples(values_st, times_st), max_size=40)
half_life_st = st.floats(1.0, 1000.0)


def brute(values: np.ndarray, times: np.ndarray, rate: float, at: float) -> DecayedStats:
    """Direct definition: weights exp(-rate (at - t)), two-pass variance, in float64."""
    w = np.exp(-rate * (at - times))
    count = float(w.sum())
    if count == 0:
        return DecayedStats(0.0, 0.0, math.nan, math.nan)
    mean = float((w * values).sum() / count)
    return DecayedStats(
        float((w * values).sum()), count, mean, float((w * (values - mean) ** 2).sum() / count)
    )


def assert_close(got: DecayedStats, want: DecayedStats, values: np.ndarray) -> None:
    # Sums of signed values can cancel, so their error is relative to sum(w |v|); the mean to
    # max |v|, the variance to max |v|**2 (rounding of the inputs themselves).
    scale = float(np.abs(values).max()) if values.size else 0.0
    assert math.isclose(got.count, want.count, rel_tol=RTOL, abs_tol=0.0)
    abs_sum = want.count * scale
    assert abs(got.sum - want.sum) <= RTOL * abs_sum + 1e-300
    if want.count == 0:
        assert math.isnan(got.mean) and math.isnan(got.variance)
        return
    assert abs(got.mean - want.mean) <= RTOL * scale + 1e-300
    assert abs(got.variance - want.variance) <= RTOL * scale**2 + 1e-300


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of half_life and rate"),
        ({"half_life": 1.0, "rate": 1.0}, "exactly one of half_life and rate"),
        ({"half_life": 0.0}, "half_life must be a positive finite number, got 0.0"),
        ({"half_life": -2}, "half_life must be.*got -2"),
        ({"rate": math.inf}, "rate must be a positive finite number"),
        ({"rate": math.nan}, "rate must be"),
        ({"rate": True}, "rate must be"),
        ({"half_life": "1"}, "half_life must be"),
    ],
)
def test_bad_parameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DecayingAggregate(**kwargs)  # type: ignore[arg-type]


def test_rate_and_half_life() -> None:
    a = DecayingAggregate(half_life=10.0)
    assert a.rate == math.log(2) / 10.0
    assert math.isclose(a.half_life, 10.0)
    b = DecayingAggregate(rate=0.5)
    assert b.rate == 0.5
    with pytest.raises(AttributeError):
        b.rate = 1.0  # type: ignore[misc]
    assert "DecayingAggregate(rate=0.5" in repr(b)


# ---------------------------------------------------------------- basics


def test_empty() -> None:
    a = DecayingAggregate(half_life=1.0)
    s = a.value()
    assert (s.sum, s.count) == (0.0, 0.0) and math.isnan(s.mean) and math.isnan(s.variance)
    assert a.value(123.0).count == 0.0
    a.update([], [])
    assert a == DecayingAggregate(half_life=1.0)
    assert a.events == 0 and a.latest_ts == -math.inf


def test_half_life_semantics_and_queries() -> None:
    a = DecayingAggregate(half_life=2.0)
    a.add(10.0, ts=0.0)
    assert a.count(2.0) == pytest.approx(0.5, rel=1e-15)
    assert a.sum(4.0) == pytest.approx(2.5, rel=1e-15)
    assert a.mean(100.0) == 10.0
    assert a.variance() == 0.0
    assert a.value() == DecayedStats(10.0, 1.0, 10.0, 0.0)
    a.add(20.0, ts=-2.0)  # out of order: weight 1/2 at the latest time
    assert a.count() == pytest.approx(1.5, rel=1e-15)
    assert a.mean() == pytest.approx(40 / 3, rel=1e-15)
    with pytest.raises(ValueError, match="earlier than the latest event time"):
        a.value(-1.0)
    with pytest.raises(ValueError, match="at_ts must be a finite number"):
        a.value(math.nan)
    with pytest.raises(AttributeError):
        a.value().sum = 3.0  # type: ignore[misc]


def test_input_validation() -> None:
    a = DecayingAggregate(rate=1.0)
    with pytest.raises(ValueError, match="equal lengths"):
        a.update([1.0, 2.0], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="values must be finite"):
        a.add(math.nan, 0.0)
    with pytest.raises(ValueError, match="ts must be finite"):
        a.add(1.0, math.inf)
    with pytest.raises(ValueError):
        a.add("x", 0.0)  # type: ignore[arg-type]
    assert a.events == 0
    a.update(np.arange(5, dtype=np.int32), 3.0)  # one timestamp for the whole batch
    assert a.count() == 5.0 and a.mean() == 2.0 and a.variance() == 2.0


def test_underflowed_history_is_forgotten() -> None:
    a = DecayingAggregate(half_life=1.0)
    a.add(1e300, ts=0.0)
    a.add(-5.0, ts=5000.0)  # the first weight underflows to exactly 0
    assert a.value() == DecayedStats(-5.0, 1.0, -5.0, 0.0)
    a.add(7.0, ts=-10.0)  # weight 0 at the reference: counted as an event, no contribution
    assert a.value() == DecayedStats(-5.0, 1.0, -5.0, 0.0)
    assert a.events == 3


# ---------------------------------------------------------------- against brute force


@settings(max_examples=150, deadline=None)
@given(events=events_st, half_life=half_life_st, extra=st.floats(0.0, 50.0), batch=st.booleans())
def test_matches_brute_force(
    events: list[tuple[float, float]], half_life: float, extra: float, batch: bool
) -> None:
    a = DecayingAggregate(half_life=half_life)
    values = np.array([v for v, _ in events], dtype=np.float64)
    times = np.array([t for _, t in events], dtype=np.float64)
    if batch:
        a.update(values, times)
    else:
        for v, t in events:
            a.add(v, t)
    if not events:
        assert a.count(extra) == 0.0
        return
    at = float(times.max()) + extra
    assert_close(a.value(at), brute(values, times, a.rate, at), values)


@settings(max_examples=100, deadline=None)
@given(xs=events_st, ys=events_st, half_life=half_life_st, split=st.integers(0, 40))
def test_merge_and_update_match_feeding(
    xs: list[tuple[float, float]], ys: list[tuple[float, float]], half_life: float, split: int
) -> None:
    def feed(events: list[tuple[float, float]], chunk: int = 1) -> DecayingAggregate:
        agg = DecayingAggregate(half_life=half_life)
        for i in range(0, len(events), chunk):
            part = events[i : i + chunk]
            agg.update([v for v, _ in part], [t for _, t in part])
        return agg

    both = xs + ys
    merged = feed(xs)
    merged.merge(feed(ys))
    reverse = feed(ys)
    reverse.merge(feed(xs))
    chunked = feed(both, max(split, 1))
    if not both:
        assert merged == feed(both)
        return
    values = np.array([v for v, _ in both])
    times = np.array([t for _, t in both])
    at = float(times.max()) + 1.0
    want = brute(values, times, merged.rate, at)
    for agg in (merged, reverse, chunked, feed(both)):
        assert agg.events == len(both)
        assert agg.latest_ts == float(times.max())
        assert_close(agg.value(at), want, values)


@settings(max_examples=60, deadline=None)
@given(events=events_st, rate=st.floats(1e-6, 1e3))
def test_bytes_round_trip_exact(events: list[tuple[float, float]], rate: float) -> None:
    a = DecayingAggregate(rate=rate)
    for v, t in events:
        a.add(v, t)
    back = DecayingAggregate.from_bytes(a.to_bytes())
    assert back.to_bytes() == a.to_bytes()
    assert back == a and pickle.loads(pickle.dumps(a)) == a
    if events:
        assert back.value() == a.value()
    c = a.copy()
    c.add(1.0, 200.0)
    assert c != a


def test_merge_identity_and_errors() -> None:
    a = DecayingAggregate(half_life=3.0)
    a.update([1.0, 2.0, 4.0], [0.0, 1.0, 5.0])
    before = a.to_bytes()
    a.merge(DecayingAggregate(half_life=3.0))
    assert a.to_bytes() == before
    empty = DecayingAggregate(half_life=3.0)
    empty.merge(a)
    assert empty.value() == a.value()
    with pytest.raises(ValueError, match="rate differs"):
        a.merge(DecayingAggregate(half_life=4.0))
    with pytest.raises(ValueError, match="with itself"):
        a.merge(a)
    with pytest.raises(ValueError, match="cannot merge AMSSketch"):
        a.merge(AMSSketch(2, 2))  # type: ignore[arg-type]


# ---------------------------------------------------------------- long streams


def test_long_stream_over_many_half_lives() -> None:
    # 1e5 events over ~3000 half-lives: exp(rate * t) would overflow (beyond ~1024 half-lives),
    # and 100 updates rebase the stored sums 100 times (relative drift ~1e-14 each at most).
    rng = np.random.default_rng(42)
    n, half_life = 100_000, 1.0
    times = np.cumsum(rng.exponential(0.03, n))
    times += rng.normal(0.0, 0.5, n)  # out of order by a few half-lives
    assert times.max() / half_life > 2500
    values = rng.normal(50.0, 10.0, n) * rng.choice([1.0, -1.0, 1e3], n)
    agg = DecayingAggregate(half_life=half_life)
    for start in range(0, n, 1000):
        agg.update(values[start : start + 1000], times[start : start + 1000])
        latest = float(times[: start + 1000].max())
        seen = slice(0, start + 1000)
        assert_close(agg.value(latest), brute(values[seen], times[seen], agg.rate, latest), values[seen])
    for extra in (0.0, 0.7, 30.0):
        at = float(times.max()) + extra
        assert_close(agg.value(at), brute(values, times, agg.rate, at), values)


def test_long_stream_single_adds() -> None:
    rng = np.random.default_rng(1)
    n = 20_000
    times = np.cumsum(rng.exponential(1.0, n))
    values = rng.lognormal(3.0, 1.0, n)
    agg = DecayingAggregate(half_life=20.0)
    for v, t in zip(values.tolist(), times.tolist(), strict=True):
        agg.add(v, t)
    at = float(times[-1])
    assert_close(agg.value(at), brute(values, times, agg.rate, at), values)


# ---------------------------------------------------------------- corruption


def test_from_bytes_rejects_corruption() -> None:
    a = DecayingAggregate(half_life=5.0)
    a.update([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
    blob = a.to_bytes()
    for cut in range(len(blob)):
        with pytest.raises(ValueError):
            DecayingAggregate.from_bytes(blob[:cut])
    for pos in range(len(blob)):
        for bit in range(8):
            flipped = bytearray(blob)
            flipped[pos] ^= 1 << bit
            with pytest.raises(ValueError):
                DecayingAggregate.from_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="hold a AMSSketch"):
        DecayingAggregate.from_bytes(AMSSketch(2, 2).to_bytes())


def test_from_bytes_checks_state_behind_a_valid_checksum() -> None:
    from sketches.decay import _CODEC, _STATE

    for params, state in [
        ((1.0,), _STATE.pack(1, 0.0, -1.0, 0.0, 0.0, 0.0)),  # negative count
        ((1.0,), _STATE.pack(1, 0.0, 1.0, math.nan, 0.0, 0.0)),  # NaN sum
        ((1.0,), _STATE.pack(0, 3.0, 0.0, 0.0, 0.0, 0.0)),  # empty with a reference time
        ((1.0,), _STATE.pack(1, 0.0, 1.0, 1.0, 1.0, -1.0)),  # negative M2
        ((-1.0,), _STATE.pack(0, -math.inf, 0.0, 0.0, 0.0, 0.0)),  # negative rate
    ]:
        with pytest.raises(ValueError):
            DecayingAggregate.from_bytes(_CODEC.dump(params, state))
