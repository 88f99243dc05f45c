"""Synthetic HTTP requests (flow ``ddos``) with injected floods and their ground truth.

Normal traffic: 1,000 requests/s of event time from 20,000 client IPs in ``10.0.0.0/8``
(popularity ``1/(rank + 500)``: the busiest IP sends ~0.5 req/s) to 50 endpoints (popularity
``rank**-1.3``: the top endpoint gets ~35 % of requests, the 25 quietest under 5 req/s each);
status codes mostly 2xx/3xx with some 4xx/5xx; response sizes lognormal.

Injected (counts for ``n_events = 1_000_000``; they scale with ``n_events``):

- ``ip_rate`` (~7; as many as fit of the contract's 10): one known client IP floods one endpoint
  for 60..120 s; floods follow each other 10..40 s apart without overlapping. A flood starting
  >= 600 s after the previous fast one ended is *fast* (100..120 req/s), the others *slow*
  (15..20 req/s, >= 450 requests per 30 s against ``ip_rate``'s 300). Runs shorter than 300 s:
  one fast flood over 30..50 % of the run. Truth: ``[first, last request + 30 + 5 + 5]``.
  Why two speeds: a flood holding a share ``f`` of a window's requests gives a skew of about
  ``f**2``, so the contract's 20..40 req/s stays under ``traffic_skew``'s ``min_skew = 0.002``
  (40 req/s: 0.0016) and back-to-back 20..40 req/s floods hold the EWMA baseline near 0.001
  (``5 * baseline`` = 0.005); a fast flood lifts it to ~0.003 for minutes. Hence slow floods at
  15..20 req/s and fast ones at 100..120 req/s (skew >= 0.011), >= 600 s apart: the expected
  skew then beats the threshold by >= 1.6x (seeds 1-3, 10M events).
- ``traffic_skew`` (entity ``"all"``): the fast floods after the 150 s warm-up (~1 per 1M
  events, ~12 per 10M), found by running the expected window skews through the detector's rule (see
  ``_Planner.skew_truth``). Truth: ``[flood start, flood end + 30 + 5 + 30]``.
- ``endpoint_distinct_ips`` (~10, only after 150 s): 1,000..3,000 new IPs (``172.16.0.0/12``,
  one request each) hit one of the quiet endpoints inside one aligned 30 s window. Truth:
  ``[window start, window end + 5 + 30]``. One flood per endpoint per 20 windows.
"""

from __future__ import annotations

import math
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
    cumulative,
    iter_batches,
    jitter,
    plan_rng,
    scaled_count,
    sort_anomalies,
    take_cdf,
)

__all__ = ["DETECTORS", "ENDPOINTS", "FLOW", "RATE", "generate", "ground_truth"]

FLOW: Final = "ddos"
RATE: Final = 1_000.0
"""Requests per second of event time."""
DETECTORS: Final = ("endpoint_distinct_ips", "ip_rate", "traffic_skew")
"""Detectors with ground truth in this flow."""

N_IPS: Final = 20_000
ENDPOINTS: Final = (
    "/",
    "/api/login",
    "/api/search",
    "/api/products",
    "/api/cart",
    "/static/app.js",
    "/static/app.css",
    "/api/users/me",
    "/api/recommendations",
    "/api/checkout",
    "/api/orders",
    "/images/logo.png",
    "/api/reviews",
    "/api/inventory",
    "/api/session",
    "/api/logout",
    "/api/wishlist",
    "/api/payments",
    "/api/shipping",
    "/api/coupons",
    "/api/notifications",
    "/api/settings",
    "/api/addresses",
    "/api/returns",
    "/api/support",
    "/api/faq",
    "/api/stores",
    "/api/gift-cards",
    "/api/loyalty",
    "/api/newsletter",
    "/api/feedback",
    "/api/careers",
    "/api/press",
    "/api/affiliates",
    "/api/partners",
    "/api/legal/terms",
    "/api/legal/privacy",
    "/api/status",
    "/api/health",
    "/api/metrics",
    "/api/admin/login",
    "/api/admin/users",
    "/api/admin/reports",
    "/api/export",
    "/api/import",
    "/api/webhooks",
    "/api/oauth/token",
    "/api/oauth/authorize",
    "/api/password/reset",
    "/api/register",
)
_ENDPOINT_LABELS: Final = np.array(ENDPOINTS, dtype=object)
_ENDPOINT_SHARE: Final = (np.arange(1, len(ENDPOINTS) + 1, dtype=np.float64) ** -1.3) / np.sum(
    np.arange(1, len(ENDPOINTS) + 1, dtype=np.float64) ** -1.3
)
_ENDPOINT_CDF: Final = cumulative(_ENDPOINT_SHARE)
_STATUS: Final = np.array([200, 201, 204, 301, 304, 400, 401, 403, 404, 429, 500, 502, 503], dtype=np.int64)
_STATUS_CDF: Final = cumulative(
    np.array([0.70, 0.04, 0.02, 0.02, 0.08, 0.02, 0.03, 0.01, 0.04, 0.01, 0.015, 0.005, 0.01])
)
_DTYPES: Final = {f.name: f.dtype for f in SCHEMAS[FLOW].fields}

_WINDOW = 30.0  # endpoint_distinct_ips / traffic_skew tumbling windows, ip_rate window length
_STEP = 5.0  # ip_rate slide
_LATENESS = 5.0
_WARMUP = 150.0  # 5 windows: the detectors need 3
_SKEW_RECOVERY = 600.0
_MIN_SKEW = 0.002  # traffic_skew defaults
_SKEW_FACTOR = 5.0
_ALPHA = 0.1
_QUIET = 166.0  # most expected requests per window of an endpoint eligible for a distinct-IP flood


@dataclass(frozen=True)
class _Population:
    ips: NDArray[np.object_]
    ip_cdf: NDArray[np.float64]


def _ip(value: int, first: int) -> str:
    return f"{first}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


@lru_cache(maxsize=8)
def _population(seed: int) -> _Population:
    rng = np.random.default_rng([seed, 4242])
    values = rng.choice(2**24, size=N_IPS, replace=False)
    ips = np.empty(N_IPS, dtype=object)
    ips[:] = [_ip(int(v), 10) for v in values]
    rank = rng.permutation(N_IPS)
    return _Population(ips, cumulative(1.0 / (rank + 500.0)))


def _new_ip(k: int) -> str:
    """The ``k``-th flood address in 172.16.0.0/12 (never a normal client)."""
    return f"172.{16 + ((k >> 16) & 15)}.{(k >> 8) & 255}.{k & 255}"


def _ts(positions: NDArray[np.int64]) -> NDArray[np.float64]:
    return START_TIME + positions / RATE


@dataclass(frozen=True)
class _Plan:
    overrides: Overrides
    anomalies: tuple[Anomaly, ...]


class _Planner:
    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self.span = n / RATE
        self.rng = plan_rng(seed, n)
        self.pop = _population(seed)
        self.pool = PositionPool(n)
        self.anomalies: list[Anomaly] = []
        self.ov = Overrides(_DTYPES)
        self.ov.group("req", ("client_ip", "endpoint", "status", "bytes", "ts"))
        self.new_ips = 0
        self.flood_ips: set[str] = set()

    def add(
        self, positions: NDArray[np.int64], ips: NDArray[Any], endpoint: int, status: NDArray[np.int64]
    ) -> None:
        k = len(positions)
        self.pool.take(positions)
        self.ov.add(
            "req",
            positions,
            client_ip=ips,
            endpoint=np.full(k, ENDPOINTS[endpoint], dtype=object),
            status=status,
            bytes=self.rng.integers(200, 2_000, size=k),
            ts=_ts(positions),
        )

    def ip_floods(self) -> None:
        """One IP flooding an endpoint; floods follow each other 10..40 s apart, never overlapping.

        A flood starting >= 600 s after the previous fast flood ended (the skew baseline has
        recovered) runs at 100..120 req/s, which ``traffic_skew`` must catch; the others run at
        15..20 req/s (skew <= 0.0005, under ``min_skew``; ``ip_rate`` still sees >= 450 per 30 s).
        Runs shorter than 300 s get one fast flood over 30..50 % of the run (``ip_rate`` only:
        ``traffic_skew`` is still warming up).
        """
        rng = self.rng
        count = scaled_count(self.n, 100_000, feasible=self.span >= 20.0)
        floods: list[tuple[float, float, NDArray[np.int64]]] = []
        clock = _WARMUP if self.span >= 300.0 else 0.5
        last_fast = -math.inf
        for _ in range(count):
            if self.span >= 300.0:
                duration = rng.uniform(60.0, 120.0)
                fs = clock + rng.uniform(10.0, 40.0)
                if fs + duration > self.span - 1.0:
                    break
                fast = fs - last_fast >= _SKEW_RECOVERY
            else:
                duration = rng.uniform(0.3, 0.5) * self.span
                fs = rng.uniform(0.5, self.span - duration - 0.5)
                fast = True
            rate = int(rng.integers(100, 121)) if fast else int(rng.integers(15, 21))
            positions = self.pool.sample(
                rng, math.ceil(fs * RATE), math.floor((fs + duration) * RATE), round(rate * duration)
            )
            if positions is None:  # cannot happen: floods come first and never overlap
                continue
            clock = fs + duration
            if fast:
                last_fast = clock
            ip = int(rng.integers(N_IPS))
            while self.pop.ips[ip] in self.flood_ips:
                ip = int(rng.integers(N_IPS))
            self.flood_ips.add(self.pop.ips[ip])
            endpoint = int(take_cdf(_ENDPOINT_CDF, rng.random(1))[0])
            status = np.where(rng.random(len(positions)) < 0.8, 200, 429).astype(np.int64)
            self.add(positions, np.full(len(positions), self.pop.ips[ip], dtype=object), endpoint, status)
            first, last = (float(t) for t in _ts(positions[[0, -1]]))
            self.anomalies.append(
                Anomaly("ip_rate", str(self.pop.ips[ip]), first, last + _WINDOW + _LATENESS + _STEP)
            )
            if first >= START_TIME + _WARMUP:
                floods.append((first, last, positions))
        self.skew_truth(floods)

    def skew_truth(self, floods: list[tuple[float, float, NDArray[np.int64]]]) -> None:
        """``traffic_skew`` truth: floods grouped as the detector can tell them apart.

        Floods whose alert intervals overlap form one anomaly. The expected skew of every 30 s
        window (normal skew plus ``sum(flood count**2) / F1**2``) is run through the detector's
        rule (EWMA baseline, alpha 0.1, threshold ``max(0.002, 5 * baseline)``); a group whose
        best window stays under 1.25x its threshold (masked by the baseline an earlier flood
        raised) is merged into the previous anomaly instead of standing alone.
        """
        if not floods:
            return
        n_windows = math.ceil(self.span / _WINDOW) + 1
        sq = np.zeros(n_windows)
        for _, _, positions in floods:
            sq += np.bincount((positions / RATE // _WINDOW).astype(np.int64), minlength=n_windows) ** 2
        f1 = RATE * _WINDOW
        shares = np.diff(np.concatenate([[0.0], self.pop.ip_cdf]))
        base = 1.0 / f1 + float(np.sum(shares**2))
        skew = base + sq / f1**2
        ratio = np.zeros(n_windows)
        baseline = base
        for w in range(n_windows):
            ratio[w] = skew[w] / max(_MIN_SKEW, _SKEW_FACTOR * baseline)
            baseline += _ALPHA * (skew[w] - baseline)
        groups: list[list[float]] = []
        for first, last, _ in sorted(floods, key=lambda f: f[0]):
            end = last + _WINDOW + _LATENESS + _WINDOW
            lo = int((first - START_TIME) // _WINDOW)
            hi = int((last - START_TIME) // _WINDOW) + 1
            best = float(ratio[lo : hi + 1].max())
            if best < 0.7:
                continue
            if groups and (first <= groups[-1][1] or best < 1.25):
                groups[-1][1] = max(groups[-1][1], end)
            else:
                groups.append([first, end])
        for first, end in groups:
            self.anomalies.append(Anomaly("traffic_skew", "all", first, end))

    def endpoint_floods(self) -> None:
        rng = self.rng
        first = math.ceil(_WARMUP / _WINDOW)
        last = math.floor(self.span / _WINDOW) - 1
        count = scaled_count(self.n, 100_000, feasible=last >= first)
        quiet = np.flatnonzero(_ENDPOINT_SHARE * RATE * _WINDOW <= _QUIET)
        calendar = Calendar()
        for _ in range(count):
            for _attempt in range(50):
                k = int(rng.integers(first, last + 1))
                endpoint = int(rng.choice(quiet))
                if not calendar.free(endpoint, k - 20, k + 20):
                    continue
                ws = k * _WINDOW
                size = int(rng.integers(1_000, 3_001))
                positions = self.pool.sample(
                    rng, math.ceil((ws + 1.0) * RATE), math.floor((ws + _WINDOW - 1.0) * RATE), size
                )
                if positions is None:
                    continue
                calendar.book(endpoint, k, k)
                ips = np.empty(size, dtype=object)
                ips[:] = [_new_ip(self.new_ips + i) for i in range(size)]
                self.new_ips += size
                status = np.where(rng.random(size) < 0.7, 200, 401).astype(np.int64)
                self.add(positions, ips, endpoint, status)
                start = START_TIME + ws
                self.anomalies.append(
                    Anomaly(
                        "endpoint_distinct_ips",
                        ENDPOINTS[endpoint],
                        start,
                        start + _WINDOW + _LATENESS + _WINDOW,
                    )
                )
                break

    def build(self) -> _Plan:
        self.ip_floods()
        self.endpoint_floods()
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
    ip = take_cdf(pop.ip_cdf, rng.random(m))
    endpoint = take_cdf(_ENDPOINT_CDF, rng.random(m))
    status = _STATUS[take_cdf(_STATUS_CDF, rng.random(m))]
    size = np.rint(np.exp(7.5 + rng.standard_normal(m))).astype(np.int64)
    back = jitter(rng, m)
    positions = np.arange(lo, hi, dtype=np.int64)
    columns: dict[str, NDArray[Any]] = {
        "client_ip": pop.ips[ip],
        "endpoint": _ENDPOINT_LABELS[endpoint],
        "status": status,
        "bytes": size,
        "ts": _ts(positions) - back,
    }
    plan.overrides.apply(columns, lo, hi)
    return EventBatch(FLOW, positions, columns)


def generate(n_events: int, seed: int, start: int = 0, batch_size: int = 10_000) -> Iterator[EventBatch]:
    """Requests at positions ``start .. n_events - 1``, in batches of ``batch_size``.

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
        Columns ``client_ip, endpoint, status, bytes, ts`` of flow ``ddos``.

    Examples
    --------
    >>> batch = next(generate(1_000, seed=1, batch_size=3))
    >>> batch.positions.tolist(), batch["client_ip"][0].startswith("10.")
    ([0, 1, 2], True)
    """
    check_args(n_events, seed, start, batch_size)
    return iter_batches(lambda c: _chunk(n_events, seed, c), n_events, start, batch_size)


def ground_truth(n_events: int, seed: int) -> list[Anomaly]:
    """The anomalies injected into ``generate(n_events, seed)``, sorted by detector then start.

    Examples
    --------
    >>> [a.detector for a in ground_truth(20_000, 1)]
    ['ip_rate']
    """
    check_args(n_events, seed, 0, 1)
    return list(_plan(n_events, seed).anomalies)
