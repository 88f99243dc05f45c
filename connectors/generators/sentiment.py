"""Synthetic brand mentions (flow ``sentiment``) with injected crises and their ground truth.

Normal traffic: 200 posts/s of event time about 50 brands (popularity ``1/(rank + 10)``: from
~1.9 to ~11 posts/s per brand); sentiment ~ normal(0.1, 0.35) clipped to [-1, 1] and rounded to
0.001; ``text`` is a short phrase matching the brand and the sentiment.

Injected (counts for ``n_events = 1_000_000``; they scale with ``n_events``): ~1 crisis per
100k posts after a 30 minute warm-up (10 minutes when the run is too short for 30): for 7..10
minutes a brand gets 3x its normal volume (posts of other brands are reassigned to it) and
*all* its posts have sentiment ~ normal(-0.8, 0.15). The contract says 5..10 minutes, but with
``decayed_sentiment``'s half-life of 600 s the decayed mean (3x volume at -0.79 mixed with the
prior posts at +0.1) reaches the floor -0.4 only after ~308 s, so 5 minutes would never fire.
One brand has at most one crisis per hour (plus an hour before and after). Truth, entity = brand:

- ``brand_spike``: ``[crisis start - 2, crisis end + 300 + 60 + 5]`` (sliding 300/60 s windows);
- ``decayed_sentiment``: ``[crisis start - 2, crisis end + 600]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from connectors.events import Anomaly, EventBatch
from connectors.generators._common import (
    CHUNK,
    START_TIME,
    Calendar,
    check_args,
    chunk_rng,
    cumulative,
    iter_batches,
    jitter,
    labels,
    plan_rng,
    scaled_count,
    sort_anomalies,
    take_cdf,
)

__all__ = ["DETECTORS", "FLOW", "RATE", "generate", "ground_truth"]

FLOW: Final = "sentiment"
RATE: Final = 200.0
"""Posts per second of event time."""
DETECTORS: Final = ("brand_spike", "decayed_sentiment")
"""Detectors with ground truth in this flow."""

N_BRANDS: Final = 50
_BRAND_IDS: Final = labels("brand-{:02d}", N_BRANDS)
_PHRASES: Final = (
    "{} is a disaster, never again",
    "really disappointed with {}",
    "{} is ok I guess",
    "pretty happy with {}",
    "absolutely love {}!",
)
_TEXTS: Final = np.array([p.format(b) for b in _BRAND_IDS for p in _PHRASES], dtype=object)
_BUCKETS: Final = np.array([-0.6, -0.2, 0.2, 0.6])
_WINDOW = 300.0
_STEP = 60.0
_LATENESS = 5.0
_HALF_LIFE = 600.0


@dataclass(frozen=True)
class _Crisis:
    start: float  # absolute event time
    end: float
    brand: int
    share: float  # probability that another brand's post in the crisis is reassigned to it


@dataclass(frozen=True)
class _Population:
    weights: NDArray[np.float64]
    cdf: NDArray[np.float64]


@lru_cache(maxsize=8)
def _population(seed: int) -> _Population:
    rng = np.random.default_rng([seed, 4242])
    weights = (1.0 / (rng.permutation(N_BRANDS) + 10.0)).astype(np.float64)
    weights /= weights.sum()
    return _Population(weights, cumulative(weights))


def _ts(positions: NDArray[np.int64]) -> NDArray[np.float64]:
    return START_TIME + positions / RATE


@dataclass(frozen=True)
class _Plan:
    crises: tuple[_Crisis, ...]
    anomalies: tuple[Anomaly, ...]


@lru_cache(maxsize=4)
def _plan(n_events: int, seed: int) -> _Plan:
    rng = plan_rng(seed, n_events)
    pop = _population(seed)
    span = n_events / RATE
    warmup = 1800.0 if span >= 1800.0 + 600.0 + 60.0 else 600.0
    count = scaled_count(n_events, 100_000, feasible=span >= warmup + 420.0 + 60.0)
    calendar = Calendar()
    crises: list[_Crisis] = []
    anomalies: list[Anomaly] = []
    for _ in range(count):
        for _attempt in range(50):
            duration = rng.uniform(420.0, 600.0)
            if span - duration - 60.0 < warmup:
                continue
            start = rng.uniform(warmup, span - duration - 60.0)
            brand = int(rng.integers(N_BRANDS))
            if not calendar.free(brand, start - 3600.0, start + duration + 3600.0):
                continue
            calendar.book(brand, start, start + duration)
            w = float(pop.weights[brand])
            t0, t1 = START_TIME + start, START_TIME + start + duration
            crises.append(_Crisis(t0, t1, brand, 2.0 * w / (1.0 - w)))
            entity = str(_BRAND_IDS[brand])
            anomalies.append(Anomaly("brand_spike", entity, t0 - 2.0, t1 + _WINDOW + _STEP + _LATENESS))
            anomalies.append(Anomaly("decayed_sentiment", entity, t0 - 2.0, t1 + _HALF_LIFE))
            break
    return _Plan(tuple(crises), tuple(sort_anomalies(anomalies)))


def _chunk(n_events: int, seed: int, c: int) -> EventBatch:
    pop = _population(seed)
    plan = _plan(n_events, seed)
    lo = c * CHUNK
    hi = min(lo + CHUNK, n_events)
    m = hi - lo
    rng = chunk_rng(seed, c)
    brand = take_cdf(pop.cdf, rng.random(m))
    sentiment = np.clip(0.1 + 0.35 * rng.standard_normal(m), -1.0, 1.0)
    back = jitter(rng, m)
    u = rng.random(m)
    crisis_z = rng.standard_normal(m)
    positions = np.arange(lo, hi, dtype=np.int64)
    nominal = _ts(positions)
    active = [k for k in plan.crises if k.start <= nominal[-1] and k.end > nominal[0]]
    if active:
        original = brand.copy()
        busy = np.isin(original, [k.brand for k in active])
        offset = 0.0
        inside = []
        for k in active:
            during = (nominal >= k.start) & (nominal < k.end)
            brand[during & ~busy & (u >= offset) & (u < offset + k.share)] = k.brand
            offset += k.share
            inside.append(during)
        for k, during in zip(active, inside, strict=True):
            hit = during & (brand == k.brand)
            sentiment[hit] = np.clip(-0.8 + 0.15 * crisis_z[hit], -1.0, 1.0)
    sentiment = np.round(sentiment, 3)
    columns: dict[str, NDArray[Any]] = {
        "brand": _BRAND_IDS[brand],
        "sentiment": sentiment,
        "text": _TEXTS[brand * len(_PHRASES) + np.searchsorted(_BUCKETS, sentiment)],
        "ts": nominal - back,
    }
    return EventBatch(FLOW, positions, columns)


def generate(n_events: int, seed: int, start: int = 0, batch_size: int = 10_000) -> Iterator[EventBatch]:
    """Posts at positions ``start .. n_events - 1``, in batches of ``batch_size``.

    Parameters
    ----------
    n_events : int
        Events in the whole run (crises are planned for this length).
    seed : int
        Non-negative seed; the same arguments always give the same events.
    start : int, default 0
        First position; the events equal the tail of a run started at 0.
    batch_size : int, default 10_000
        Events per batch (the last may be shorter); changes only where batches are cut.

    Yields
    ------
    EventBatch
        Columns ``brand, sentiment, text, ts`` of flow ``sentiment``.

    Examples
    --------
    >>> batch = next(generate(100, seed=1))
    >>> len(batch), bool((abs(batch["sentiment"]) <= 1).all())
    (100, True)
    """
    check_args(n_events, seed, start, batch_size)
    return iter_batches(lambda c: _chunk(n_events, seed, c), n_events, start, batch_size)


def ground_truth(n_events: int, seed: int) -> list[Anomaly]:
    """The anomalies injected into ``generate(n_events, seed)``, sorted by detector then start.

    Runs shorter than ~1,080 s of event time (216,000 posts) have no crisis.

    Examples
    --------
    >>> ground_truth(20_000, 1)
    []
    >>> sorted({a.detector for a in ground_truth(300_000, 1)})
    ['brand_spike', 'decayed_sentiment']
    """
    check_args(n_events, seed, 0, 1)
    return list(_plan(n_events, seed).anomalies)
