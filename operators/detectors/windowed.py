"""Window detectors: counts, distinct counts, rates, skew and spikes per event-time window, plus a
trailing z-score.

All window detectors share :class:`PaneDetector`: the window grid of :mod:`operators.windows`
is cut into *panes* of one ``step`` (a tumbling window is one pane; a sliding window of length
``P * step`` is ``P`` consecutive panes). Each event goes to exactly one pane, so it is hashed
and counted once however many windows hold it; a window is evaluated by merging its panes'
sketches (Count-Min, AMS counters and exact sums add up exactly; SpaceSaving merges). Windows
close in window order as soon as the shard's watermark reaches their end, *between* the events
of a batch when the watermark crosses an end mid-batch (:meth:`operators.windows.Plan.segments`),
so a window holds exactly the events that arrived before it closed and the alerts do not depend
on batch boundaries. Late events (all their windows closed on arrival) are counted in
``late_events`` and ignored. Baselines are :class:`operators.windows.Ewma` (per entity, updated
at window close, empty windows count as 0, idle entities evicted without changing results).
``flush()`` closes every window that holds events.

Window alerts have ``event_ts = window_end`` and ``trigger = "window:<id>"``.

>>> import numpy as np
>>> from connectors.events import EventBatch
>>> det = SlidingRate(threshold=3)
>>> batch = EventBatch("ddos", np.arange(5), {
...     "client_ip": np.array(["10.0.0.1"] * 4 + ["10.0.0.2"], dtype=object),
...     "endpoint": np.array(["/"] * 5, dtype=object), "status": np.full(5, 200),
...     "bytes": np.full(5, 100), "ts": np.array([1.0, 2.0, 3.0, 4.0, 4.5])})
>>> [(a.entity, a.window_start, a.window_end, a.score) for a in det.process(batch) + det.flush()]
[('10.0.0.1', -25.0, 5.0, 4.0), ('10.0.0.1', -20.0, 10.0, 4.0), ('10.0.0.1', -15.0, 15.0, 4.0), \
('10.0.0.1', -10.0, 20.0, 4.0), ('10.0.0.1', -5.0, 25.0, 4.0), ('10.0.0.1', 0.0, 30.0, 4.0)]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from connectors.events import EventBatch
from operators.alerts import Alert
from operators.runtime import Detector, Output, event_clock
from operators.windows import NEVER, Ewma, Plan, Sliding, Tumbling, WindowClock, Windows, group_rows
from sketches import AMSSketch, CountMinSketch, HyperLogLog, SpaceSaving
from sketches.hashing import fmix64, hash64_many

__all__ = [
    "PaneDetector",
    "SlidingRate",
    "SlidingSpike",
    "TrailingZScore",
    "WindowedCountSurge",
    "WindowedDistinctSurge",
    "WindowedSkew",
]

KEY_SEED: Final = 0x5EED_3A1D
"""Seed of the entity-key hash (independent of the runtime's shard hash)."""
_U64 = NDArray[np.uint64]
_GLOBAL: Final = np.zeros(1, dtype=np.uint64)
_OBJ = NDArray[np.object_]
_TYPE_SALT: Final = 0x7E9E_5A17_0000_0001
"""Mixed into the type hash before it is combined with the merchant's (xor of equal hashes is 0)."""
_SCALE: Final = 10**9
"""Fixed point of exact sentiment sums (integer sums add up the same in any order)."""


def _distinct(keys: _U64) -> tuple[_U64, NDArray[np.intp], NDArray[np.intp]]:
    """``np.unique(keys, return_index=True, return_counts=True)``, from an unstable sort (much
    faster than the stable one): each run's smallest index is its first occurrence."""
    if len(keys) == 0:
        return keys, np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    order = np.argsort(keys)
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    counts = np.diff(np.append(starts, len(keys)))
    return ordered[starts], np.minimum.reduceat(order, starts), counts


def _missing(keys: _U64, wanted: _U64) -> NDArray[np.bool_]:
    """Which of ``wanted`` are not in the sorted ``keys``."""
    if len(keys) == 0:
        return np.ones(len(wanted), dtype=np.bool_)
    found = keys[np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)]
    missing: NDArray[np.bool_] = found != wanted
    return missing


def _insert(keys: _U64, new_keys: _U64, *columns: tuple[_OBJ, _OBJ]) -> tuple[NDArray[Any], ...]:
    """Sorted ``keys`` with the sorted ``new_keys`` (none of them in ``keys``) merged in, and
    each ``(column, new values)`` of ``columns`` (parallel to the keys) likewise."""
    if len(keys) == 0:
        return (new_keys, *(new for _, new in columns))
    pos = np.searchsorted(keys, new_keys)
    return (np.insert(keys, pos, new_keys), *(np.insert(old, pos, new) for old, new in columns))


def _union(keys: _U64, names: _OBJ, new_keys: _U64, new_names: _OBJ) -> tuple[_U64, _OBJ]:
    """Sorted distinct keys of both (sorted, distinct) sets, each with its first-seen name."""
    new = _missing(keys, new_keys)
    out, out_names = _insert(keys, new_keys[new], (names, new_names[new]))
    return out, out_names


def _lookup(keys: _U64, names: _OBJ, wanted: list[int]) -> list[Any]:
    pos = np.searchsorted(keys, np.asarray(wanted, dtype=np.uint64))
    return [
        str(names[p]) if p < len(keys) and keys[p] == w else str(w) for p, w in zip(pos, wanted, strict=True)
    ]


class PaneDetector(Detector):
    """Base of the window detectors: panes keyed by id, closing in window order, late counting.

    Subclasses set ``flow`` and ``name`` and implement :meth:`_prepare` (per-batch columns,
    e.g. key hashes), :meth:`_new_pane`, :meth:`_add` (events of one pane, in input order) and
    :meth:`_evaluate` (one closing window, its panes in order).
    """

    flow = "flow"

    def __init__(self, windows: Windows, lateness: float) -> None:
        if windows.panes is None:
            raise ValueError(
                f"{type(self).__name__}: window length must be a multiple of its step, got {windows}"
            )
        self.windows = windows
        self.clock = WindowClock(windows, lateness)
        self.late_events = 0
        self._closed = NEVER  # largest window id evaluated
        self._panes: dict[int, Any] = {}

    # -- hooks ----------------------------------------------------------------------------------
    def _prepare(self, batch: EventBatch) -> dict[str, Any]:
        raise NotImplementedError

    def _new_pane(self) -> Any:
        raise NotImplementedError

    def _add(self, pane: Any, cols: dict[str, Any], idx: NDArray[np.intp]) -> None:
        raise NotImplementedError

    def _evaluate(self, window_id: int, panes: list[Any]) -> list[Alert]:
        raise NotImplementedError

    def _evict(self) -> None:
        """Drop idle per-entity state (called after each batch)."""

    # -- driver ---------------------------------------------------------------------------------
    def process(self, batch: EventBatch) -> list[Output]:
        if len(batch) == 0:
            return []
        plan: Plan = self.clock.plan(batch["ts"], batch.clock)
        self.late_events += int(plan.late.sum())
        cols = self._prepare(batch)
        out: list[Output] = []
        if self.windows.panes == 1:
            # A tumbling window reads only its own pane, which takes no more events once the
            # window is closed: every pane can take all its events before the closings.
            self._add_rows(cols, np.flatnonzero(~plan.late), plan.latest)
        else:
            # A sliding window reads later panes too: add between the closings, in order.
            for start, stop, closed in plan.segments():
                out += self._close_upto(closed)
                self._add_rows(cols, start + np.flatnonzero(~plan.late[start:stop]), plan.latest)
        out += self._close_upto(plan.closed_after)
        self._evict()
        return out

    def _add_rows(self, cols: dict[str, Any], rows: NDArray[np.intp], panes: NDArray[np.int64]) -> None:
        """Add events ``rows`` to their panes (``panes``: the pane of every event of the batch)."""
        for pane_id, members in group_rows(panes[rows]):
            pane = self._panes.get(pane_id)
            if pane is None:
                pane = self._panes[pane_id] = self._new_pane()
            self._add(pane, cols, rows[members])

    def flush(self) -> list[Output]:
        pending = self._pending()
        return self._close_upto(max(pending)) if pending else []

    def _pending(self) -> list[int]:
        """Ids of the windows that hold events and are not closed yet, in order."""
        p = self.windows.panes or 1
        return sorted({j - d for j in self._panes for d in range(p)})

    def _close_upto(self, upto: int) -> list[Output]:
        if upto <= self._closed:
            return []
        p = self.windows.panes or 1
        out: list[Output] = []
        for w in self._pending():
            if self._closed < w <= upto:
                out += self._evaluate(w, [self._panes[j] for j in range(w, w + p) if j in self._panes])
        self._closed = upto
        for j in [j for j in self._panes if j <= upto]:
            del self._panes[j]
        return out

    def _alert(
        self, entity: str, window_id: int, score: float, threshold: float, evidence: dict[str, Any]
    ) -> Alert:
        start, end = self.windows.bounds(window_id)
        return Alert(
            flow=self.flow,
            detector=self.name,
            entity=entity,
            event_ts=end,
            score=float(score),
            threshold=float(threshold),
            window_start=start,
            window_end=end,
            trigger=f"window:{window_id}",
            evidence=evidence,
        )


# ---------------------------------------------------------------------------------------- counts


class _CountPane:
    """A pane's Count-Min sketch of entity keys plus the distinct keys seen (hash -> name)."""

    def __init__(self, cms: CountMinSketch) -> None:
        self.cms = cms
        self.keys = np.zeros(0, dtype=np.uint64)
        self.names = np.zeros(0, dtype=object)

    def add(self, keys: _U64, name_of: Callable[[NDArray[np.intp]], _OBJ]) -> None:
        """Count ``keys``; ``name_of(rows)`` names the rows (of ``keys``) that are the first of
        a key new to the pane, so names are built for new keys only."""
        new, rows = self._count(keys)
        self.keys, self.names = _insert(self.keys, new, (self.names, name_of(rows)))

    def _count(self, keys: _U64) -> tuple[_U64, NDArray[np.intp]]:
        """Count ``keys``; the keys new to the pane (sorted) and the row of each one's first."""
        distinct, first, counts = _distinct(keys)
        self.cms.update(distinct, counts)  # the same counters as one by one, fewer hashes
        new = _missing(self.keys, distinct)
        return distinct[new], first[new]

    def name(self, row: int) -> str:
        """The name of the key in ``row`` of :attr:`keys`."""
        return str(self.names[row])


class _PairPane(_CountPane):
    """A :class:`_CountPane` whose names are ``"{first}/{second}"``, kept as their two parts
    (references to the batch's strings, no new ones) and joined only for an alert."""

    def __init__(self, cms: CountMinSketch) -> None:
        super().__init__(cms)
        self.seconds = np.zeros(0, dtype=object)

    def add_pairs(self, keys: _U64, firsts: _OBJ, seconds: _OBJ, idx: NDArray[np.intp]) -> None:
        """Count ``keys``; key ``i`` is named by ``firsts[idx[i]]`` and ``seconds[idx[i]]``."""
        new, first = self._count(keys)
        rows = idx[first]
        parts = (self.names, firsts[rows]), (self.seconds, seconds[rows])
        self.keys, self.names, self.seconds = _insert(self.keys, new, *parts)

    def name(self, row: int) -> str:
        return f"{self.names[row]}/{self.seconds[row]}"


def _cms_evidence(cms: CountMinSketch) -> dict[str, Any]:
    return {
        "width": cms.width,
        "depth": cms.depth,
        "epsilon": cms.epsilon,
        "delta": cms.delta,
        "error_bound": cms.error_bound(),
        "window_events": cms.total,
    }


class WindowedCountSurge(PaneDetector):
    """fraud ``merchant_surge``: a (merchant, type) with far more transactions than usual in a minute.

    Entity ``f"{merchant_id}/{type}"``; tumbling ``window`` seconds. Per window of the shard: a
    Count-Min sketch sized by ``epsilon`` / ``delta`` and the distinct entities seen. At close,
    every entity seen is evaluated: ``count`` (Count-Min estimate, an overestimate by at most
    ``epsilon * N`` w.p. ``1 - delta``) against ``max(min_count, factor * baseline)``, where the
    baseline is the :class:`~operators.windows.Ewma` of its past windows' estimates; only after
    ``warmup`` windows of history. Entities idle for ``idle_ttl`` seconds start afresh.
    """

    flow = "fraud"
    name = "merchant_surge"

    def __init__(
        self,
        *,
        window: float = 60.0,
        lateness: float = 5.0,
        epsilon: float = 0.001,
        delta: float = 0.001,
        alpha: float = 0.1,
        min_count: int = 30,
        factor: float = 5.0,
        warmup: int = 5,
        idle_ttl: float = 3600.0,
        seed: int = 0,
    ) -> None:
        super().__init__(Tumbling(window), lateness)
        self.epsilon, self.delta, self.seed = epsilon, delta, seed
        self.min_count, self.factor, self.warmup = min_count, factor, warmup
        self.ewma = Ewma(self.windows, alpha, idle_ttl)

    def _prepare(self, batch: EventBatch) -> dict[str, Any]:
        # One key per (merchant, type) from the column hashes (the merchant's is the routing
        # hash, already computed); the "merchant/type" name only for distinct keys (_add).
        merchant = batch.key_hashes("merchant_id", self.seed)
        kind = fmix64(batch.key_hashes("type", self.seed) ^ np.uint64(_TYPE_SALT))
        key = fmix64(merchant ^ kind)
        return {"key": key, "merchant": batch["merchant_id"], "type": batch["type"]}

    def _new_pane(self) -> _CountPane:
        return _PairPane(CountMinSketch.from_error(self.epsilon, self.delta, seed=self.seed))

    def _add(self, pane: _CountPane, cols: dict[str, Any], idx: NDArray[np.intp]) -> None:
        if isinstance(pane, _PairPane):
            pane.add_pairs(cols["key"][idx], cols["merchant"], cols["type"], idx)
            return

        def name_of(first: NDArray[np.intp]) -> _OBJ:  # a pane from an older snapshot
            rows = idx[first]
            names: _OBJ = cols["merchant"][rows] + "/" + cols["type"][rows]
            return names

        pane.add(cols["key"][idx], name_of)

    def _evaluate(self, window_id: int, panes: list[_CountPane]) -> list[Alert]:
        (pane,) = panes
        count = pane.cms.estimate_many(pane.keys)
        step = self.ewma.close(pane.keys, window_id, count.astype(np.float64))
        threshold = np.maximum(float(self.min_count), self.factor * step.baseline)
        hit = np.flatnonzero((count >= threshold) & (step.history >= self.warmup))
        if len(hit) == 0:
            return []
        cms = _cms_evidence(pane.cms)
        return [
            self._alert(
                pane.name(i),
                window_id,
                count[i],
                threshold[i],
                {
                    "count": int(count[i]),
                    **cms,
                    "baseline": float(step.baseline[i]),
                    "history_windows": int(step.history[i]),
                    "min_count": self.min_count,
                    "factor": self.factor,
                    "alpha": self.ewma.alpha,
                },
            )
            for i in hit.tolist()
        ]

    def _evict(self) -> None:
        self.ewma.evict(self.clock.watermark)


# ------------------------------------------------------------------------------ distinct counts


class _DistinctPane:
    """A pane's HyperLogLog of client IPs per endpoint (endpoint hash -> sketch, name, requests)."""

    def __init__(self) -> None:
        self.hll: dict[int, HyperLogLog] = {}
        self.names: dict[int, str] = {}
        self.requests: dict[int, int] = {}


class WindowedDistinctSurge(PaneDetector):
    """ddos ``endpoint_distinct_ips``: an endpoint hit by far more distinct client IPs than usual.

    Entity = endpoint; tumbling ``window`` seconds; per endpoint-window a ``HyperLogLog(p)`` of
    ``client_ip`` (fed per (window, endpoint) group in input order, so the HIP estimate does not
    depend on batch boundaries). Alert if the estimate ``>= max(min_distinct, factor *
    baseline)`` after ``warmup`` windows; evidence has ``lower_bound(2)`` / ``upper_bound(2)``.
    """

    flow = "ddos"
    name = "endpoint_distinct_ips"

    def __init__(
        self,
        *,
        window: float = 30.0,
        lateness: float = 5.0,
        p: int = 12,
        alpha: float = 0.1,
        min_distinct: int = 200,
        factor: float = 4.0,
        warmup: int = 3,
        idle_ttl: float = 3600.0,
        seed: int = 0,
    ) -> None:
        super().__init__(Tumbling(window), lateness)
        self.p, self.seed = p, seed
        self.min_distinct, self.factor, self.warmup = min_distinct, factor, warmup
        self.ewma = Ewma(self.windows, alpha, idle_ttl)

    def _prepare(self, batch: EventBatch) -> dict[str, Any]:
        return {
            "endpoint": batch["endpoint"],
            "key": hash64_many(batch["endpoint"], KEY_SEED),
            "ip": batch["client_ip"],
        }

    def _new_pane(self) -> _DistinctPane:
        return _DistinctPane()

    def _add(self, pane: _DistinctPane, cols: dict[str, Any], idx: NDArray[np.intp]) -> None:
        keys = cols["key"][idx]
        order = np.argsort(keys, kind="stable")  # stable: each group keeps input order
        idx, keys = idx[order], keys[order]
        cuts = np.flatnonzero(np.diff(keys)) + 1
        for group in np.split(np.arange(len(idx)), cuts):
            k = int(keys[group[0]])
            hll = pane.hll.get(k)
            if hll is None:
                hll = pane.hll[k] = HyperLogLog(self.p, seed=self.seed)
                pane.names[k] = str(cols["endpoint"][idx[group[0]]])
                pane.requests[k] = 0
            hll.update(cols["ip"][idx[group]])
            pane.requests[k] += len(group)

    def _evaluate(self, window_id: int, panes: list[_DistinctPane]) -> list[Alert]:
        (pane,) = panes
        hashes = sorted(pane.hll)
        keys = np.asarray(hashes, dtype=np.uint64)
        est = np.array([pane.hll[k].estimate() for k in hashes], dtype=np.float64)
        step = self.ewma.close(keys, window_id, est)
        threshold = np.maximum(float(self.min_distinct), self.factor * step.baseline)
        hit = np.flatnonzero((est >= threshold) & (step.history >= self.warmup))
        out = []
        for i in hit.tolist():
            hll = pane.hll[hashes[i]]
            evidence = {
                "estimate": float(est[i]),
                "lower_bound": hll.lower_bound(2),
                "upper_bound": hll.upper_bound(2),
                "rse": hll.rse,
                "requests": pane.requests[hashes[i]],
                "baseline": float(step.baseline[i]),
                "history_windows": int(step.history[i]),
                "p": self.p,
                "min_distinct": self.min_distinct,
                "factor": self.factor,
                "alpha": self.ewma.alpha,
            }
            out.append(self._alert(pane.names[hashes[i]], window_id, est[i], threshold[i], evidence))
        return out

    def _evict(self) -> None:
        self.ewma.evict(self.clock.watermark)


# ----------------------------------------------------------------------------------------- rates


class _RatePane(_CountPane):
    def __init__(self, cms: CountMinSketch, top: SpaceSaving) -> None:
        super().__init__(cms)
        self.top = top

    def add(self, keys: _U64, name_of: Callable[[NDArray[np.intp]], _OBJ]) -> None:
        super().add(keys, name_of)
        self.top.update(keys)


class SlidingRate(PaneDetector):
    """ddos ``ip_rate``: an IP sending ``>= threshold`` requests in a sliding window.

    Entity = client_ip; windows of ``length`` seconds every ``step`` seconds. Per pane (one step)
    a Count-Min sketch of the IP keys, the distinct IPs seen and a ``SpaceSaving(top_k)``; a
    window merges its panes. At close, each distinct IP of the window whose Count-Min estimate
    is ``>= threshold`` alerts once (score = estimate). Evidence: the estimate and its error
    bound, the window's top talkers ``[ip, count, error]`` from the merged SpaceSaving.

    Caveat: SpaceSaving's batch update is not bit-identical to one-at-a-time adds, so
    ``evidence["top_talkers"]`` may differ in its counts (not in its guarantees) when the same
    events are cut into other batches; everything else, alert ids included, does not.
    """

    flow = "ddos"
    name = "ip_rate"

    def __init__(
        self,
        *,
        length: float = 30.0,
        step: float = 5.0,
        lateness: float = 5.0,
        threshold: int = 300,
        epsilon: float = 0.001,
        delta: float = 0.001,
        top_k: int = 16,
        seed: int = 0,
    ) -> None:
        super().__init__(Sliding(length, step), lateness)
        self.threshold, self.epsilon, self.delta, self.top_k, self.seed = (
            threshold,
            epsilon,
            delta,
            top_k,
            seed,
        )

    def _prepare(self, batch: EventBatch) -> dict[str, Any]:
        return {"ip": batch["client_ip"], "key": hash64_many(batch["client_ip"], KEY_SEED)}

    def _new_pane(self) -> _RatePane:
        cms = CountMinSketch.from_error(self.epsilon, self.delta, seed=self.seed)
        return _RatePane(cms, SpaceSaving(self.top_k, seed=self.seed))

    def _add(self, pane: _RatePane, cols: dict[str, Any], idx: NDArray[np.intp]) -> None:
        pane.add(cols["key"][idx], lambda first: cols["ip"][idx[first]])

    def _evaluate(self, window_id: int, panes: list[_RatePane]) -> list[Alert]:
        if sum(p.cms.total for p in panes) < self.threshold:
            return []  # no IP can reach the threshold
        cms = CountMinSketch(panes[0].cms.width, panes[0].cms.depth, seed=self.seed)
        keys, names = np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=object)
        for p in panes:
            cms.merge(p.cms)
            keys, names = _union(keys, names, p.keys, p.names)
        count = cms.estimate_many(keys)
        hit = np.flatnonzero(count >= self.threshold)
        if len(hit) == 0:
            return []
        top = SpaceSaving(self.top_k, seed=self.seed)
        for p in panes:
            top.merge(p.top)
        ranked = top.top()
        talkers = [
            [name, c, e]
            for name, (_, c, e) in zip(_lookup(keys, names, [int(t[0]) for t in ranked]), ranked, strict=True)
        ]
        base = {
            **_cms_evidence(cms),
            "top_talkers": talkers,
            "top_k": self.top_k,
            "threshold": self.threshold,
        }
        return [
            self._alert(str(names[i]), window_id, count[i], self.threshold, {"count": int(count[i]), **base})
            for i in hit.tolist()
        ]


# ------------------------------------------------------------------------------------------ skew


class WindowedSkew(PaneDetector):
    """ddos ``traffic_skew``: traffic concentrated on few IPs, ``skew = F2 / F1**2`` per window.

    Global (entity ``"all"``); tumbling ``window`` seconds; an ``AMSSketch`` (sized by ``epsilon``,
    ``delta``: ``|F2 estimate - F2| <= epsilon F2`` w.p. ``1 - delta``) over client IPs per window;
    F1 is exact. Alert if ``skew >= max(min_skew, factor * baseline)`` after ``warmup`` windows.
    Windows with fewer than ``min_events`` requests are ignored (no alert, no baseline update).
    """

    flow = "ddos"
    name = "traffic_skew"

    def __init__(
        self,
        *,
        window: float = 30.0,
        lateness: float = 5.0,
        epsilon: float = 0.1,
        delta: float = 0.05,
        alpha: float = 0.1,
        min_skew: float = 0.002,
        factor: float = 5.0,
        warmup: int = 3,
        min_events: int = 100,
        idle_ttl: float = 3600.0,
        seed: int = 0,
    ) -> None:
        super().__init__(Tumbling(window), lateness)
        self.epsilon, self.delta, self.seed = epsilon, delta, seed
        self.min_skew, self.factor, self.warmup = min_skew, factor, warmup
        self.min_events = min_events
        self.ewma = Ewma(self.windows, alpha, idle_ttl)

    def _prepare(self, batch: EventBatch) -> dict[str, Any]:
        return {"key": hash64_many(batch["client_ip"], KEY_SEED)}

    def _new_pane(self) -> AMSSketch:
        return AMSSketch.from_error(self.epsilon, self.delta, seed=self.seed)

    def _add(self, pane: AMSSketch, cols: dict[str, Any], idx: NDArray[np.intp]) -> None:
        items, counts = np.unique(cols["key"][idx], return_counts=True)  # same counters, fewer updates
        pane.update(items, counts)

    def _evaluate(self, window_id: int, panes: list[AMSSketch]) -> list[Alert]:
        (ams,) = panes
        f1, f2 = ams.estimate_f1(), ams.estimate_f2()
        if f1 < self.min_events:
            # F2/F1^2 of a handful of events says nothing (one event gives 1.0); such a window
            # (e.g. the partial first one) neither alerts nor moves the baseline.
            return []
        skew = f2 / float(f1) ** 2
        step = self.ewma.close(_GLOBAL, window_id, np.array([skew]))
        baseline, history = float(step.baseline[0]), int(step.history[0])
        threshold = max(self.min_skew, self.factor * baseline)
        if skew < threshold or history < self.warmup:
            return []
        evidence = {
            "skew": skew,
            "f2": f2,
            "f1": f1,
            "relative_error": self.epsilon,
            "delta": self.delta,
            "width": ams.width,
            "depth": ams.depth,
            "baseline": baseline,
            "history_windows": history,
            "min_skew": self.min_skew,
            "factor": self.factor,
        }
        return [self._alert("all", window_id, skew, threshold, evidence)]

    def _evict(self) -> None:
        self.ewma.evict(self.clock.watermark)


# ---------------------------------------------------------------------------------------- spikes


class _SpikePane:
    """Exact per-brand sums of one pane: sorted key hashes, names, negatives, totals, sum of
    sentiment in fixed point (``round(s * 1e9)``, so sums are exact in any order)."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, dtype=np.uint64)
        self.names = np.zeros(0, dtype=object)
        self.sums = np.zeros((0, 3), dtype=np.int64)


def _group_sum(keys: _U64, names: _OBJ, values: NDArray[np.int64]) -> tuple[_U64, _OBJ, NDArray[np.int64]]:
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    sums = np.zeros((len(uniq), values.shape[1]), dtype=np.int64)
    np.add.at(sums, inverse.reshape(-1), values)
    return uniq, names[first], sums


class SlidingSpike(PaneDetector):
    """sentiment ``brand_spike``: a burst of negative posts about a brand in a sliding window.

    Entity = brand; windows of ``length`` seconds every ``step`` seconds. Per brand-window, exact
    negative count (``sentiment <= neg``), total and mean sentiment (summed per pane with a numpy
    group-by). Baseline: EWMA of the brand's past windows' negative counts. Alert if
    ``negative >= max(min_negative, factor * baseline)`` and ``mean <= mean_max``, after
    ``warmup`` windows. The mean is computed from sentiments rounded to 1e-9.
    """

    flow = "sentiment"
    name = "brand_spike"

    def __init__(
        self,
        *,
        length: float = 300.0,
        step: float = 60.0,
        lateness: float = 5.0,
        neg: float = -0.5,
        alpha: float = 0.1,
        min_negative: int = 30,
        factor: float = 3.0,
        mean_max: float = -0.2,
        warmup: int = 5,
        idle_ttl: float = 3600.0,
    ) -> None:
        super().__init__(Sliding(length, step), lateness)
        self.neg, self.min_negative, self.factor, self.mean_max, self.warmup = (
            neg,
            min_negative,
            factor,
            mean_max,
            warmup,
        )
        self.ewma = Ewma(self.windows, alpha, idle_ttl)

    def _prepare(self, batch: EventBatch) -> dict[str, Any]:
        s = np.asarray(batch["sentiment"], dtype=np.float64)
        values = np.stack(
            [
                (s <= self.neg).astype(np.int64),
                np.ones(len(s), dtype=np.int64),
                np.round(s * _SCALE).astype(np.int64),
            ],
            axis=1,
        )
        return {"brand": batch["brand"], "key": hash64_many(batch["brand"], KEY_SEED), "values": values}

    def _new_pane(self) -> _SpikePane:
        return _SpikePane()

    def _add(self, pane: _SpikePane, cols: dict[str, Any], idx: NDArray[np.intp]) -> None:
        pane.keys, pane.names, pane.sums = _group_sum(
            np.concatenate((pane.keys, cols["key"][idx])),
            np.concatenate((pane.names, cols["brand"][idx])),
            np.concatenate((pane.sums, cols["values"][idx])),
        )

    def _evaluate(self, window_id: int, panes: list[_SpikePane]) -> list[Alert]:
        keys, names, sums = _group_sum(
            np.concatenate([p.keys for p in panes]),
            np.concatenate([p.names for p in panes]),
            np.concatenate([p.sums for p in panes]),
        )
        negative, total = sums[:, 0], sums[:, 1]
        mean = sums[:, 2] / (total.astype(np.float64) * _SCALE)
        step = self.ewma.close(keys, window_id, negative.astype(np.float64))
        threshold = np.maximum(float(self.min_negative), self.factor * step.baseline)
        hit = np.flatnonzero(
            (negative >= threshold) & (mean <= self.mean_max) & (step.history >= self.warmup)
        )
        return [
            self._alert(
                str(names[i]),
                window_id,
                negative[i],
                threshold[i],
                {
                    "negative": int(negative[i]),
                    "total": int(total[i]),
                    "mean_sentiment": float(mean[i]),
                    "baseline": float(step.baseline[i]),
                    "history_windows": int(step.history[i]),
                    "neg": self.neg,
                    "mean_max": self.mean_max,
                    "min_negative": self.min_negative,
                    "factor": self.factor,
                },
            )
            for i in hit.tolist()
        ]

    def _evict(self) -> None:
        self.ewma.evict(self.clock.watermark)


# ------------------------------------------------------------------------------ trailing z-score


def _range_sums(
    src_key: NDArray[np.int64], src_val: NDArray[np.int64], lo: NDArray[np.int64], hi: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Per query, the column sums of ``src_val`` over sources with ``lo <= key < hi`` (exact ints)."""
    order = np.argsort(src_key, kind="stable")
    keys = src_key[order]
    prefix = np.zeros((len(keys) + 1, src_val.shape[1]), dtype=np.int64)
    np.cumsum(src_val[order], axis=0, out=prefix[1:])
    out: NDArray[np.int64] = prefix[np.searchsorted(keys, hi)] - prefix[np.searchsorted(keys, lo)]
    return out


class TrailingZScore(Detector):
    """iot ``zone_zscore``: a reading far from its zone's recent readings.

    Each on-time reading ``i`` (``ts >= watermark`` at its arrival; late ones are counted in
    ``late_events`` and ignored) is compared with the readings of its zone that **arrived
    before it** (earlier in input order, this batch or earlier ones) with ``ts`` in
    ``[ts_i - length, ts_i)``: ``z = (x_i - mean) / sd`` (population sd, floored at one
    ``resolution`` step). Alert if ``|z| >= z`` and the window holds ``>= min_count`` readings;
    event alert (``event_ts = ts``, ``trigger = str(position)``, no window fields). Then the
    reading joins its zone's history (outliers included).

    Exact and vectorised: values are quantised to ``resolution`` (int64), so window sums are
    exact integers whatever the order of additions. The history keeps a shard's readings with
    ``ts >= watermark - length`` (nothing older can fall in an on-time reading's window), so
    idle zones disappear with their readings. A batch is answered in two parts: readings of the
    history (all arrived earlier) via one sort + prefix sums + ``searchsorted`` over keys
    ``(zone, ts rank)``; pairs inside the batch ("arrived earlier *and* ts in range" is a 2-D
    dominance query, since ts is not monotone in arrival order) by divide and conquer over the
    arrival index: at level ``l`` the readings whose per-zone arrival index has bit ``l`` clear
    answer the ones with it set in the same block of ``2**(l+1)``; each pair is counted at
    exactly one level (``log2`` of the largest per-zone batch size levels, all numpy).
    """

    flow = "iot"
    name = "zone_zscore"

    def __init__(
        self,
        *,
        length: float = 300.0,
        lateness: float = 5.0,
        z: float = 5.0,
        min_count: int = 30,
        resolution: float = 0.01,
    ) -> None:
        if not (length > 0 and resolution > 0):
            raise ValueError(f"length and resolution must be positive, got {length}, {resolution}")
        self.length, self.lateness, self.z, self.min_count, self.resolution = (
            float(length),
            float(lateness),
            float(z),
            int(min_count),
            float(resolution),
        )
        self.max_ts = -math.inf
        self.late_events = 0
        self._zone = np.zeros(0, dtype=np.uint64)
        self._ts = np.zeros(0, dtype=np.float64)
        self._q = np.zeros(0, dtype=np.int64)

    def process(self, batch: EventBatch) -> list[Output]:
        n = len(batch)
        if n == 0:
            return []
        ts = np.asarray(batch["ts"], dtype=np.float64)
        after = event_clock(batch, ts, self.max_ts)  # the shard's clock (max_ts: its value)
        before = np.concatenate(([self.max_ts], after[:-1]))
        self.max_ts = float(after[-1])
        on_time = ts >= before - self.lateness
        self.late_events += int(n - on_time.sum())
        idx = np.flatnonzero(on_time)
        zone = hash64_many(batch["zone"], KEY_SEED)[idx]
        t = ts[idx]
        q = np.round(np.asarray(batch["temperature"], dtype=np.float64)[idx] / self.resolution).astype(
            np.int64
        )
        sums = self._window_sums(zone, t, q)
        out: list[Output] = []
        count = sums[:, 0]
        ok = count >= max(self.min_count, 1)
        if ok.any():
            c = count.astype(np.float64)
            mean = np.where(ok, sums[:, 1] / np.maximum(c, 1.0), 0.0)
            var = np.where(ok, sums[:, 2] / np.maximum(c, 1.0) - mean * mean, 0.0)
            sd = np.maximum(np.sqrt(np.maximum(var, 0.0)), 1.0)
            zs = (q - mean) / sd
            res = self.resolution
            for i in np.flatnonzero(ok & (np.abs(zs) >= self.z)).tolist():
                e = int(idx[i])
                out.append(
                    Alert(
                        flow=self.flow,
                        detector=self.name,
                        entity=str(batch["zone"][e]),
                        event_ts=float(t[i]),
                        score=float(abs(zs[i])),
                        threshold=self.z,
                        trigger=str(int(batch.positions[e])),
                        evidence={
                            "z": float(zs[i]),
                            "value": float(q[i] * res),
                            "mean": float(mean[i] * res),
                            "sd": float(sd[i] * res),
                            "count": int(count[i]),
                            "trailing_start": float(t[i] - self.length),
                            "trailing_end": float(t[i]),
                            "resolution": res,
                            "min_count": self.min_count,
                        },
                    )
                )
        keep = np.concatenate((self._ts, t)) >= self.max_ts - self.lateness - self.length
        self._zone = np.concatenate((self._zone, zone))[keep]
        self._ts = np.concatenate((self._ts, t))[keep]
        self._q = np.concatenate((self._q, q))[keep]
        return out

    def _window_sums(self, zone: _U64, t: NDArray[np.float64], q: NDArray[np.int64]) -> NDArray[np.int64]:
        """Per batch reading: (count, sum q, sum q**2) over its zone's earlier-arriving readings
        with ts in ``[t - length, t)``."""
        n, h = len(t), len(self._ts)
        out = np.zeros((n, 3), dtype=np.int64)
        if n == 0:
            return out
        all_ts = np.concatenate((self._ts, t))
        uniq_ts = np.unique(all_ts)
        width = len(uniq_ts) + 1
        rank = np.searchsorted(uniq_ts, all_ts).astype(np.int64)  # exact: every ts is in uniq_ts
        lo = np.searchsorted(uniq_ts, t - self.length).astype(np.int64)
        hi = rank[h:]
        _, code = np.unique(np.concatenate((self._zone, zone)), return_inverse=True)
        code = code.reshape(-1).astype(np.int64)
        vals = np.stack([np.ones(h + n, dtype=np.int64), np.concatenate((self._q, q))], axis=1)
        vals = np.concatenate((vals, vals[:, 1:] ** 2), axis=1)
        qcode = code[h:]
        if h:  # the history arrived before the whole batch
            out += _range_sums(code[:h] * width + rank[:h], vals[:h], qcode * width + lo, qcode * width + hi)
        # per-zone arrival index of the batch readings
        order = np.argsort(qcode, kind="stable")
        sorted_code = qcode[order]
        starts = np.flatnonzero(np.concatenate(([True], sorted_code[1:] != sorted_code[:-1])))
        group_start = np.repeat(starts, np.diff(np.concatenate((starts, [n]))))
        local = np.empty(n, dtype=np.int64)
        local[order] = np.arange(n) - group_start
        bvals = vals[h:]
        level = 0
        while (1 << level) < int(local.max()) + 1:
            block = local >> (level + 1)
            right = ((local >> level) & 1).astype(np.bool_)
            nblock = int(block.max()) + 1
            group = (qcode * nblock + block) * width
            src, qry = ~right, right
            out[qry] += _range_sums(
                group[src] + rank[h:][src], bvals[src], group[qry] + lo[qry], group[qry] + hi[qry]
            )
            level += 1
        return out
