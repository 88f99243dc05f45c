"""Synthetic card transactions (flow ``fraud``) with injected fraud patterns and their ground truth.

Normal traffic: 500 tx/s of event time; 50,000 cards chosen uniformly (each card ~ one tx per
100 s, so only ~10 % of a card's gaps are under 10 s), each card with its own lognormal amount
scale (``log`` amount ~ mu_card + 0.5 z, z clipped to +-3); 2,000 merchants with a mild Zipf-like
popularity (the busiest merchant/type pair sees ~10 tx per minute); types purchase 35 %, refund
15 %, withdrawal 25 %, transfer 25 %. ``tx_id`` is ``f"tx-{position:09d}"``, unique unless replayed.

Injected (counts for ``n_events = 1_000_000``; they scale with ``n_events``):

- ``duplicate_tx`` (~1,000): an event replays the ``tx_id`` and card of an earlier one 1..200 s
  before, as a payment submitted twice (an amount usual for the card; merchant and type are the
  normal event's), so a topic keyed by card holds both copies in one partition. Truth:
  ``[ts, ts]`` of the replay, entity = tx_id.
- ``amount_outlier`` (~500): a card gets 8..12 planned prior transactions (gaps 15..60 s; runs
  shorter than 10 minutes use one 10.5..12 s gap then seven 1..3 s gaps, on a card with no other
  transaction within 12 s, so ``card_velocity`` stays quiet), then an amount 30..100x its typical
  amount. Truth: ``[ts, ts]`` of the outlier, entity = card_id.
- ``card_velocity`` (~50): a card makes 12..16 transactions 1..3 s apart. Truth: from the first
  burst transaction to the last of the card's following transactions at which 7 or more of its
  last 10 gaps could still be under 10 s (gaps under 12 s counted, to absorb jitter).
- ``merchant_surge`` (~10, only after 10 minutes): 60..120 extra transactions of one
  (merchant, type) inside one aligned minute. Truth: ``[window start, window end + 5 + 60]``,
  entity = ``f"{merchant_id}/{type}"``.

Each injected card, merchant/type key is used by one anomaly only (keys: one per 30 minutes).
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
    labels,
    plan_rng,
    scaled_count,
    sort_anomalies,
    take_cdf,
)

__all__ = ["DETECTORS", "FLOW", "RATE", "generate", "ground_truth"]

FLOW: Final = "fraud"
RATE: Final = 500.0
"""Transactions per second of event time."""
DETECTORS: Final = ("duplicate_tx", "merchant_surge", "amount_outlier", "card_velocity")
"""Detectors with ground truth in this flow."""

N_CARDS: Final = 50_000
N_MERCHANTS: Final = 2_000
TYPES: Final = ("purchase", "refund", "withdrawal", "transfer")
_TYPE_CDF: Final = cumulative(np.array([0.35, 0.15, 0.25, 0.25]))
SIGMA: Final = 0.5
"""Standard deviation of a card's log amounts (the normal draw is clipped to +-3 sigma)."""
_CARD_IDS: Final = labels("card-{:06d}", N_CARDS)
_MERCHANT_IDS: Final = labels("m-{:04d}", N_MERCHANTS)
_TYPE_LABELS: Final = np.array(TYPES, dtype=object)
_LOW4: Final = [f"{i:04d}" for i in range(CHUNK)]
_DTYPES: Final = {f.name: f.dtype for f in SCHEMAS[FLOW].fields}

_WINDOW = 60.0  # merchant_surge tumbling window
_LATENESS = 5.0
_SURGE_WARMUP = 600.0
_RAPID_GUARD = 12.0  # "rapid" gap (10 s) plus the 2 s jitter


@dataclass(frozen=True)
class _Population:
    card_mu: NDArray[np.float64]
    merchant_cdf: NDArray[np.float64]


@lru_cache(maxsize=8)
def _population(seed: int) -> _Population:
    rng = np.random.default_rng([seed, 4242])
    card_mu = np.log(40.0) + 0.8 * rng.standard_normal(N_CARDS)
    rank = rng.permutation(N_MERCHANTS)
    merchant_cdf = cumulative(1.0 / (rank + 1000.0))
    return _Population(card_mu, merchant_cdf)


def _ts(positions: NDArray[np.int64]) -> NDArray[np.float64]:
    return START_TIME + positions / RATE


def _normal_cards(seed: int, chunk: int, m: int) -> NDArray[np.int64]:
    # The first draw of a chunk: the planner reads it to know which card sits where.
    return chunk_rng(seed, chunk).integers(0, N_CARDS, size=m)


class _Cards:
    """Normal card index at any position (cached per chunk) for the planner."""

    def __init__(self, seed: int, n: int) -> None:
        self.seed, self.n = seed, n
        self._cache: dict[int, NDArray[np.int32]] = {}

    def chunk(self, c: int) -> NDArray[np.int32]:
        if c not in self._cache:
            m = min(CHUNK, self.n - c * CHUNK)
            self._cache[c] = _normal_cards(self.seed, c, m).astype(np.int32)
        return self._cache[c]

    def positions_of(self, card: int, lo: int, hi: int) -> NDArray[np.int64]:
        lo, hi = max(lo, 0), min(hi, self.n)
        found = []
        for c in range(lo // CHUNK, (hi - 1) // CHUNK + 1 if hi > lo else lo // CHUNK):
            idx = np.flatnonzero(self.chunk(c) == card) + c * CHUNK
            found.append(idx[(idx >= lo) & (idx < hi)])
        return np.concatenate(found).astype(np.int64) if found else np.empty(0, dtype=np.int64)


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
        self.card_changed = np.zeros(n, dtype=bool)
        self.cards = _Cards(seed, n)
        self.used_cards: set[int] = set()
        self.anomalies: list[Anomaly] = []
        self.ov = Overrides(_DTYPES)
        self.ov.group("tx", ("card_id", "merchant_id", "amount", "type", "ts"))
        self.ov.group("replay", ("tx_id", "card_id", "amount", "ts"))
        self.bursts: list[tuple[int, NDArray[np.int64]]] = []

    # -- helpers ---------------------------------------------------------------------------
    def fresh_card(self) -> int:
        while True:
            card = int(self.rng.integers(N_CARDS))
            if card not in self.used_cards:
                return card

    def place(self, times: NDArray[np.float64]) -> NDArray[np.int64] | None:
        """Free, increasing positions at (or just after) event times ``times`` (seconds from start)."""
        out = []
        prev = -1
        for t in times:
            p = self.pool.next_free(max(math.ceil(t * RATE), prev + 1))
            if p < 0:
                return None
            out.append(p)
            prev = p
        return np.asarray(out, dtype=np.int64)

    def add_tx(
        self, positions: NDArray[np.int64], cards: NDArray[np.int64], amounts: NDArray[np.float64]
    ) -> None:
        k = len(positions)
        merchant = take_cdf(self.pop.merchant_cdf, self.rng.random(k))
        typ = take_cdf(_TYPE_CDF, self.rng.random(k))
        self.add_events(positions, cards, merchant, typ, amounts)

    def add_events(
        self,
        positions: NDArray[np.int64],
        cards: NDArray[np.int64],
        merchant: NDArray[np.int64],
        typ: NDArray[np.int64],
        amounts: NDArray[np.float64],
    ) -> None:
        self.pool.take(positions)
        self.card_changed[positions] = True
        self.ov.add(
            "tx",
            positions,
            card_id=_CARD_IDS[cards],
            merchant_id=_MERCHANT_IDS[merchant],
            amount=amounts,
            type=_TYPE_LABELS[typ],
            ts=_ts(positions),
        )

    def normal_amounts(self, cards: NDArray[np.int64]) -> NDArray[np.float64]:
        z = np.clip(self.rng.standard_normal(len(cards)), -3.0, 3.0)
        return np.round(np.exp(self.pop.card_mu[cards] + SIGMA * z), 2).astype(np.float64)

    # -- anomalies -------------------------------------------------------------------------
    def amount_outliers(self) -> None:
        count = scaled_count(self.n, 2_000, feasible=self.span >= 36.0)
        for _ in range(count):
            for _attempt in range(20):
                if self.amount_outlier():
                    break

    def amount_outlier(self) -> bool:
        rng = self.rng
        long_run = self.span >= 600.0
        if long_run:
            gaps = rng.uniform(15.0, 60.0, int(rng.integers(8, 13)))
        else:
            gaps = np.concatenate([rng.uniform(10.5, 12.0, 1), rng.uniform(1.0, 3.0, 7)])
        span = float(gaps.sum())
        if self.span - 1.0 < span + 1.0:
            return False
        t_out = rng.uniform(span + 1.0, self.span - 1.0)
        times = t_out - span + np.concatenate([[0.0], np.cumsum(gaps)])
        card = self.fresh_card()
        if not long_run:
            lo = math.floor((times[0] - _RAPID_GUARD) * RATE)
            hi = math.ceil((times[-1] + _RAPID_GUARD) * RATE) + 1
            if len(self.cards.positions_of(card, lo, hi)):
                return False
        positions = self.place(times)
        if positions is None:
            return False
        self.used_cards.add(card)
        cards = np.full(len(positions), card, dtype=np.int64)
        amounts = self.normal_amounts(cards)
        amounts[-1] = round(math.exp(self.pop.card_mu[card]) * rng.uniform(30.0, 100.0), 2)
        self.add_tx(positions, cards, amounts)
        t = float(_ts(positions[-1:])[0])
        self.anomalies.append(Anomaly("amount_outlier", str(_CARD_IDS[card]), t, t))
        return True

    def card_bursts(self) -> None:
        count = scaled_count(self.n, 20_000, feasible=self.span >= 36.0)
        for _ in range(count):
            for _attempt in range(20):
                if self.card_burst():
                    break

    def card_burst(self) -> bool:
        rng = self.rng
        gaps = rng.uniform(1.0, 3.0, int(rng.integers(12, 17)) - 1)
        span = float(gaps.sum())
        if self.span - 1.0 < span + 1.0:
            return False
        t0 = rng.uniform(1.0, self.span - 1.0 - span)
        positions = self.place(t0 + np.concatenate([[0.0], np.cumsum(gaps)]))
        if positions is None:
            return False
        card = self.fresh_card()
        self.used_cards.add(card)
        cards = np.full(len(positions), card, dtype=np.int64)
        self.add_tx(positions, cards, self.normal_amounts(cards))
        self.bursts.append((card, positions))
        return True

    def burst_truth(self, card: int, positions: NDArray[np.int64]) -> Anomaly:
        """The burst's interval: up to the last later transaction that may still see >= 7 rapid of 10."""
        last = int(positions[-1])
        end = float(_ts(positions[-1:])[0])
        window = [True] * 10
        prev = end
        c = last // CHUNK
        seen = 0
        while c * CHUNK < self.n and seen < 10:
            idx = np.flatnonzero(self.cards.chunk(c) == card) + c * CHUNK
            idx = idx[idx > last]
            idx = idx[~self.card_changed[idx]]
            for t in _ts(idx):
                window = [*window[1:], (t - prev) < _RAPID_GUARD]
                prev = float(t)
                seen += 1
                if sum(window) >= 7:
                    end = float(t)
                if seen >= 10 or sum(window) <= 4:
                    seen = 10
                    break
            c += 1
        start = float(_ts(positions[:1])[0])
        return Anomaly("card_velocity", str(_CARD_IDS[card]), start, end)

    def merchant_surges(self) -> None:
        first = math.ceil(_SURGE_WARMUP / _WINDOW)
        last = math.floor(self.span / _WINDOW) - 1
        count = scaled_count(self.n, 100_000, feasible=last >= first)
        calendar = Calendar()
        rng = self.rng
        for _ in range(count):
            for _attempt in range(50):
                k = int(rng.integers(first, last + 1))
                key = (int(rng.integers(N_MERCHANTS)), int(rng.integers(len(TYPES))))
                if not calendar.free(key, k - 30, k + 30):
                    continue
                extra = int(rng.integers(60, 121))
                ws = k * _WINDOW
                positions = self.pool.sample(
                    rng, math.ceil((ws + 1.0) * RATE), math.floor((ws + _WINDOW - 1.0) * RATE), extra
                )
                if positions is None:
                    continue
                calendar.book(key, k, k)
                cards = np.array([self.fresh_card() for _ in range(extra)], dtype=np.int64)
                merchant = np.full(extra, key[0], dtype=np.int64)
                typ = np.full(extra, key[1], dtype=np.int64)
                self.add_events(positions, cards, merchant, typ, self.normal_amounts(cards))
                entity = f"{_MERCHANT_IDS[key[0]]}/{TYPES[key[1]]}"
                start = START_TIME + ws
                self.anomalies.append(
                    Anomaly("merchant_surge", entity, start, start + _WINDOW + _LATENESS + _WINDOW)
                )
                break

    def duplicates(self) -> None:
        count = scaled_count(self.n, 1_000, feasible=self.span > 2.0)
        rng = self.rng
        replays: set[int] = set()
        sources: set[int] = set()
        lo = math.ceil(1.5 * RATE)
        if lo >= self.n:
            return
        for _attempt in range(50 * count):
            if len(replays) >= count:
                break
            p = int(rng.integers(lo, self.n))
            if not self.pool.is_free(p) or p in sources:
                continue
            lag = rng.uniform(1.0, min(200.0, p / RATE - 0.2))
            q = p - round(lag * RATE)
            if q < 0 or q in replays or q in sources or self.card_changed[q]:
                continue
            card = int(self.cards.chunk(q // CHUNK)[q % CHUNK])
            if card in self.used_cards:  # an injected card: its anomaly's spacing stays as planned
                continue
            replays.add(p)
            sources.add(q)
            self.pool.take([p])
            self.card_changed[p] = True
            tx = f"tx-{q:09d}"
            t = float(_ts(np.array([p], dtype=np.int64))[0])
            amount = self.normal_amounts(np.array([card]))
            self.ov.add("replay", [p], tx_id=[tx], card_id=[_CARD_IDS[card]], amount=amount, ts=[t])
            self.anomalies.append(Anomaly("duplicate_tx", tx, t, t))

    def build(self) -> _Plan:
        self.amount_outliers()
        self.card_bursts()
        self.merchant_surges()
        self.duplicates()
        for card, positions in self.bursts:
            self.anomalies.append(self.burst_truth(card, positions))
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
    card = rng.integers(0, N_CARDS, size=m)  # first draw: see _normal_cards
    merchant = take_cdf(pop.merchant_cdf, rng.random(m))
    typ = take_cdf(_TYPE_CDF, rng.random(m))
    z = np.clip(rng.standard_normal(m), -3.0, 3.0)
    back = jitter(rng, m)
    positions = np.arange(lo, hi, dtype=np.int64)
    tx = np.empty(m, dtype=object)
    prefix = f"tx-{c:05d}"
    tx[:] = [prefix + s for s in _LOW4[:m]]
    columns: dict[str, NDArray[Any]] = {
        "tx_id": tx,
        "card_id": _CARD_IDS[card],
        "merchant_id": _MERCHANT_IDS[merchant],
        "amount": np.round(np.exp(pop.card_mu[card] + SIGMA * z), 2),
        "type": _TYPE_LABELS[typ],
        "ts": _ts(positions) - back,
    }
    plan.overrides.apply(columns, lo, hi)
    return EventBatch(FLOW, positions, columns)


def generate(n_events: int, seed: int, start: int = 0, batch_size: int = 10_000) -> Iterator[EventBatch]:
    """Transactions at positions ``start .. n_events - 1``, in batches of ``batch_size``.

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
        Columns ``tx_id, card_id, merchant_id, amount, type, ts`` of flow ``fraud``.

    Examples
    --------
    >>> batch = next(generate(20_000, seed=1, batch_size=5))
    >>> batch.positions.tolist(), batch["tx_id"][0]
    ([0, 1, 2, 3, 4], 'tx-000000000')
    """
    check_args(n_events, seed, start, batch_size)
    return iter_batches(lambda c: _chunk(n_events, seed, c), n_events, start, batch_size)


def ground_truth(n_events: int, seed: int) -> list[Anomaly]:
    """The anomalies injected into ``generate(n_events, seed)``, sorted by detector then start.

    Examples
    --------
    >>> truth = ground_truth(20_000, 1)
    >>> sorted({a.detector for a in truth})
    ['amount_outlier', 'card_velocity', 'duplicate_tx']
    """
    check_args(n_events, seed, 0, 1)
    return list(_plan(n_events, seed).anomalies)
