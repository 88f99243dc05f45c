"""Edge-triggered alerts on an exponentially decayed per-entity mean (sentiment ``decayed_sentiment``).

Each entity (a brand) keeps a decayed weight ``W`` and a decayed sum ``S`` of its values, with
the weights of :class:`sketches.DecayingAggregate`: an event at event time ``t`` weighs
``exp(-ln2 (T - t) / half_life)`` at the entity's reference time ``T``, its latest event time.
After an event is folded in, the detector alerts when the decayed mean ``S / W`` is at or below
``floor`` while ``W >= min_weight`` and the entity is *armed*, then disarms it; the entity is
re-armed once the mean recovers above ``floor + hysteresis``. One crisis yields one alert, not
one per negative post.

>>> import numpy as np
>>> from connectors.events import EventBatch
>>> det = DecayedMeanDetector("sentiment", "decayed_sentiment", "brand", "sentiment", min_weight=3.0)
>>> batch = EventBatch("sentiment", np.arange(6), {
...     "brand": np.array(["acme"] * 6, dtype=object),
...     "sentiment": np.array([0.2, -0.9, -0.9, -0.9, -0.8, -0.9]),
...     "ts": np.arange(6.0)})
>>> [(a.entity, a.trigger) for a in det.process(batch)]  # one alert, at the 4th post
[('acme', '3')]
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from connectors.events import EventBatch
from operators.alerts import Alert
from operators.entities import EntityTable
from operators.runtime import Detector, Output, event_clock
from operators.segments import segmented_cumsum
from sketches.hashing import hash64_many

__all__ = ["DecayedMeanDetector"]

_KEY_SEED: Final = 0x5EED_DECA
"""Seed of the entity-key hash (independent of the runtime's shard hash)."""

_CHUNK_HALF_LIVES: Final = 32.0
"""Prefix sums are anchored per run of at most this many half-lives of event time, so the
anchored weights stay within ``[2**-32, 1]`` (no overflow, no loss of relative precision)."""

FloatArray = NDArray[np.float64]


class DecayedMeanDetector(Detector):
    """Decayed mean of ``value_column`` per entity, with an armed/disarmed alert state.

    Parameters
    ----------
    flow : str
        Flow name written into each alert.
    name : str
        Detector name (``Alert.detector``), e.g. ``"decayed_sentiment"``.
    entity_column : str
        Column naming the entity (``brand``); it is also the alert's ``entity``.
    value_column : str
        Numeric column to average (``sentiment``).
    half_life : float, default 600.0
        Seconds of event time for a weight to halve.
    floor : float, default -0.4
        Alert when the decayed mean is ``<= floor``.
    min_weight : float, default 20.0
        ... and the decayed weight (decayed event count) is ``>= min_weight``.
    hysteresis : float, default 0.1
        A disarmed entity re-arms when its mean rises above ``floor + hysteresis``.
    idle_ttl : float or None, default None
        Seconds of event time without events after which an entity's state is forgotten
        (``None``: ``20 * half_life``, when the old weight has decayed by ``2**-20``).

    Raises
    ------
    ValueError
        If ``half_life``, ``idle_ttl`` or ``min_weight`` is not positive or ``hysteresis`` is
        negative.

    Notes
    -----
    Semantics, per entity in input order (event time only): the reference time ``T`` is the
    largest timestamp seen; an event at ``t`` first moves ``T`` to ``max(T, t)`` (decaying
    ``W`` and ``S`` by ``exp(-rate dT)``), then adds ``exp(-rate (T - t))`` to ``W`` and that
    times the value to ``S`` (out-of-order events weigh less than 1), exactly like
    ``DecayingAggregate``. An event arriving more than ``idle_ttl`` after ``T`` starts the
    entity afresh (zero weight, armed). Entities idle for ``2 * idle_ttl`` behind the
    shard's latest timestamp are evicted from the table; a later event of theirs would have
    reset them anyway, so eviction never changes an alert unless an event arrives more than
    ``idle_ttl`` out of order.

    Vectorisation. Per batch the events are stably sorted by entity; running reference
    times are a segmented running maximum and the decayed sums are prefix sums:
    ``W_i = exp(-rate (T_i - a)) * (W_0 exp(-rate (a - T_0)) + sum_{j <= i} exp(rate (t_j - a)))``
    for an anchor ``a`` (the run's latest time), in runs of at most 32 half-lives. The
    arm/disarm state machine only depends on the last *decisive* event before each event
    (one whose mean is at/below the floor with enough weight, or above the re-arm level), so
    it is vectorised too: no Python loop per event or per entity. Results equal the
    sequential definition up to floating-point rounding (relative ``~1e-12``), so alerts do
    not depend on batch boundaries.

    Alert: ``event_ts`` is the triggering event's ``ts``, ``trigger`` its ``str(position)``,
    ``score`` the decayed mean, ``threshold`` the floor.
    """

    def __init__(
        self,
        flow: str,
        name: str,
        entity_column: str,
        value_column: str,
        half_life: float = 600.0,
        floor: float = -0.4,
        min_weight: float = 20.0,
        hysteresis: float = 0.1,
        idle_ttl: float | None = None,
    ) -> None:
        if not (math.isfinite(half_life) and half_life > 0):
            raise ValueError(f"{name}: half_life must be positive seconds, got {half_life!r}")
        if not min_weight > 0:
            raise ValueError(f"{name}: min_weight must be positive, got {min_weight!r}")
        if not hysteresis >= 0:
            raise ValueError(f"{name}: hysteresis must be >= 0, got {hysteresis!r}")
        ttl = 20.0 * half_life if idle_ttl is None else float(idle_ttl)
        if not ttl > 0:
            raise ValueError(f"{name}: idle_ttl must be positive seconds, got {idle_ttl!r}")
        self.flow = flow
        self.name = name
        self.entity_column = entity_column
        self.value_column = value_column
        self.half_life = float(half_life)
        self.rate = math.log(2.0) / self.half_life
        self.floor = float(floor)
        self.min_weight = float(min_weight)
        self.hysteresis = float(hysteresis)
        self.idle_ttl = ttl
        self._max_ts = -math.inf
        self._table = EntityTable(
            {
                "weight": (np.float64, 0.0),
                "sum": (np.float64, 0.0),
                "ref": (np.float64, -np.inf),
                "armed": (np.bool_, True),
            },
            idle_ttl=ttl,
        )

    def __len__(self) -> int:
        """Number of entities held."""
        return len(self._table)

    def state(self, entity: str) -> tuple[float, float, float, bool] | None:
        """``(weight, sum, reference time, armed)`` of ``entity``, or None if it is not held.

        The weight and sum are decayed to the entity's reference time (its latest event).
        """
        row = int(self._table.find(hash64_many([entity], _KEY_SEED))[0])
        if row < 0:
            return None
        t = self._table
        return (float(t["weight"][row]), float(t["sum"][row]), float(t["ref"][row]), bool(t["armed"][row]))

    def process(self, batch: EventBatch) -> list[Output]:
        """Fold a batch of this shard's events (input order) and return the new alerts.

        Parameters
        ----------
        batch : EventBatch
            Events with ``ts``, the entity column and the value column.

        Returns
        -------
        list of Alert
            In input order of the triggering events.
        """
        n = len(batch)
        if n == 0:
            return []
        ts = np.asarray(batch["ts"], dtype=np.float64)
        values = np.asarray(batch[self.value_column], dtype=np.float64)
        names = batch[self.entity_column]
        table = self._table
        rows = table.rows(hash64_many(names, _KEY_SEED), ts)

        order = np.argsort(rows, kind="stable")  # by entity, input order within
        r, t, v = rows[order], ts[order], values[order]
        start = np.ones(n, dtype=np.bool_)
        start[1:] = r[1:] != r[:-1]
        gidx = np.cumsum(start) - 1
        grows = r[start]
        ref0 = table["ref"][grows]

        # Running reference time per entity: segmented running max, exact via ranks.
        by_t = np.argsort(t, kind="stable")
        rank = np.empty(n, dtype=np.int64)
        rank[by_t] = np.arange(n, dtype=np.int64)
        offset = gidx.astype(np.int64) * n
        run_max = t[by_t[np.maximum.accumulate(offset + rank) - offset]]
        ref = np.maximum(run_max, ref0[gidx])
        prev_ref = np.empty(n, dtype=np.float64)
        prev_ref[1:] = ref[:-1]
        prev_ref[start] = ref0
        with np.errstate(invalid="ignore"):
            reset = (t - prev_ref) > self.idle_ttl  # also every new entity (ref0 = -inf)

        # Segments: an entity's events since its last reset (or the batch start).
        seg_start = start | reset
        sidx = np.cumsum(seg_start) - 1
        sfirst = np.flatnonzero(seg_start)
        s_reset = reset[sfirst]
        s_group = gidx[sfirst]
        s_weight = np.where(s_reset, 0.0, table["weight"][grows][s_group])
        s_sum = np.where(s_reset, 0.0, table["sum"][grows][s_group])
        s_ref = np.where(s_reset, t[sfirst], ref0[s_group])
        s_armed = np.where(s_reset, True, table["armed"][grows][s_group])

        weight, total = self._decayed_sums(t, v, ref, seg_start, sidx, sfirst, s_weight, s_sum, s_ref)

        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / weight
        low = (mean <= self.floor) & (weight >= self.min_weight)
        high = mean > self.floor + self.hysteresis
        decisive = np.flatnonzero(low | high)
        # Armed before a decisive event = "the previous decisive event of its segment was a
        # recovery", or the segment's initial state for its first decisive event.
        d_seg = sidx[decisive]
        first_d = np.ones(len(decisive), dtype=np.bool_)
        first_d[1:] = d_seg[1:] != d_seg[:-1]
        armed_before = np.empty(len(decisive), dtype=np.bool_)
        armed_before[1:] = high[decisive[:-1]]
        armed_before[first_d] = s_armed[d_seg[first_d]]
        fired = decisive[low[decisive] & armed_before]

        # New state per entity: its last event's weight, sum, reference time and armed flag.
        last = np.append(np.flatnonzero(start)[1:] - 1, n - 1)
        seg_of_last = sidx[last]
        armed_after = s_armed[seg_of_last]
        if len(decisive):
            last_d = np.full(len(sfirst), -1, dtype=np.intp)
            ends = np.append(np.flatnonzero(first_d)[1:] - 1, len(decisive) - 1)
            last_d[d_seg[ends]] = decisive[ends]
            has = last_d[seg_of_last] >= 0
            armed_after[has] = high[last_d[seg_of_last[has]]]
        table["weight"][grows] = weight[last]
        table["sum"][grows] = total[last]
        table["ref"][grows] = ref[last]
        table["armed"][grows] = armed_after

        alerts = self._alerts(batch, order, fired, t, mean, weight)
        self._max_ts = float(event_clock(batch, ts, self._max_ts)[-1])
        # Entities idle 2 * idle_ttl behind the shard's latest time (they would reset anyway).
        table.evict(now=self._max_ts - self.idle_ttl)
        return alerts

    def _decayed_sums(
        self,
        t: FloatArray,
        v: FloatArray,
        ref: FloatArray,
        seg_start: NDArray[np.bool_],
        sidx: NDArray[np.intp],
        sfirst: NDArray[np.intp],
        s_weight: FloatArray,
        s_sum: FloatArray,
        s_ref: FloatArray,
    ) -> tuple[FloatArray, FloatArray]:
        """Decayed weight and sum after each event (entity-sorted arrays, see class Notes)."""
        n = len(t)
        rate = self.rate
        # Units: runs of a segment spanning at most _CHUNK_HALF_LIVES of reference time.
        span = _CHUNK_HALF_LIVES * self.half_life
        chunk = np.floor((ref - ref[sfirst][sidx]) / span).astype(np.int64)
        u_start = seg_start.copy()
        u_start[1:] |= chunk[1:] != chunk[:-1]
        uidx = np.cumsum(u_start) - 1
        ufirst = np.flatnonzero(u_start)
        ulast = np.empty(len(ufirst), dtype=np.intp)
        ulast[:-1] = ufirst[1:] - 1
        ulast[-1] = n - 1
        anchor = ref[ulast]  # ref is non-decreasing within a unit
        e = np.exp(rate * (t - anchor[uidx]))
        local_w, local_s = segmented_cumsum(np.stack([e, e * v]), ufirst[uidx])
        u_total_w = local_w[ulast]
        u_total_s = local_s[ulast]

        # Initial state of each unit, decayed to its anchor. Units after a segment's first
        # one start from the previous unit's end: a short loop over chunk levels (1 usually).
        u_chunk = chunk[ufirst]
        u_seg = sidx[ufirst]
        init_w = np.zeros(len(ufirst))
        init_s = np.zeros(len(ufirst))
        first_units = u_chunk == 0
        factor = np.exp(-rate * (anchor[first_units] - s_ref[u_seg[first_units]]))
        init_w[first_units] = s_weight[u_seg[first_units]] * factor
        init_s[first_units] = s_sum[u_seg[first_units]] * factor
        later = np.flatnonzero(~first_units)
        if later.size:
            # Unit u (u > 0 within its segment) starts from unit u - 1's end state.
            levels = u_chunk[later]
            for level in np.unique(levels).tolist():
                u = later[levels == level]
                f = np.exp(-rate * (anchor[u] - anchor[u - 1]))
                init_w[u] = (init_w[u - 1] + u_total_w[u - 1]) * f
                init_s[u] = (init_s[u - 1] + u_total_s[u - 1]) * f
        back = np.exp(rate * (anchor[uidx] - ref))
        weight = back * (init_w[uidx] + local_w)
        total = back * (init_s[uidx] + local_s)
        return weight, total

    def _alerts(
        self,
        batch: EventBatch,
        order: NDArray[np.intp],
        fired: NDArray[np.intp],
        t: FloatArray,
        mean: FloatArray,
        weight: FloatArray,
    ) -> list[Output]:
        if not len(fired):
            return []
        fired = fired[np.argsort(order[fired], kind="stable")]  # input order
        src = order[fired]
        entities = batch[self.entity_column][src].tolist()
        positions = batch.positions[src].tolist()
        out: list[Output] = []
        for entity, pos, ts, m, w in zip(
            entities, positions, t[fired].tolist(), mean[fired].tolist(), weight[fired].tolist(), strict=True
        ):
            evidence: dict[str, Any] = {
                "decayed_mean": m,
                "decayed_weight": w,
                "half_life": self.half_life,
                "floor": self.floor,
                "min_weight": self.min_weight,
                "rearm_above": self.floor + self.hysteresis,
            }
            out.append(
                Alert(
                    flow=self.flow,
                    detector=self.name,
                    entity=str(entity),
                    event_ts=ts,
                    score=m,
                    threshold=self.floor,
                    trigger=str(pos),
                    evidence=evidence,
                )
            )
        return out
