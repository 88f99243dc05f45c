"""Aging Bloom filter: "seen within the last ``ttl`` seconds of event time", by rotating generations.

Event time is cut into generations ``g = floor(ts / ttl)`` aligned to the epoch, so the
state depends only on the events (replayable, and filters of different workers line up for
merging). Two Bloom filters are kept: the current generation and the one before it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from sketches._base import Sketch
from sketches._format import Codec
from sketches.bloom import (
    CHECK_AND_SET,
    SET,
    TEST,
    BloomFilter,
    _check_int,
    _pack,
    _unpack,
    check_fp_rate,
    optimal_size,
    probe_hashes,
)
from sketches.hashing import Item, Items, check_seed, hash64_many

__all__ = ["AgingBloomFilter"]

_CODEC: Final = Codec("AgingBloomFilter", version=1, params="<QddIBd")
_MAX_GENERATION: Final = 2**53  # generations are exact integers in float64 below this

TimeStamps = (
    float | int | np.floating | np.integer | Sequence[float] | NDArray[np.floating] | NDArray[np.integer]
)


def _check_ttl(ttl: object) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float, np.integer, np.floating)):
        raise ValueError(f"ttl must be a positive finite number of seconds, got {ttl!r}")
    value = float(ttl)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"ttl must be a positive finite number of seconds, got {ttl!r}")
    return value


class AgingBloomFilter(Sketch):
    """Time-decayed membership: was the item seen within the last ``ttl`` seconds of event time?

    Generation ``g = floor(ts / ttl)`` (exact floor, epoch-aligned). An item added at
    generation ``g`` goes into the current filter; a query at generation ``g`` checks the
    filters of generations ``g`` and ``g - 1``; older generations are dropped on rotation.

    Parameters
    ----------
    capacity : int
        Distinct items expected per generation (per ``ttl`` seconds), at least 1.
    fp_rate : float
        Target false-positive rate of a query, in ``(0, 1)``. Each generation's filter is
        sized by ``BloomFilter.from_error(capacity, fp_rate / 2)``.
    ttl : float
        Time to live in seconds of event time (a positive finite int or float).
    seed : int, default 0
        Hash seed in ``[0, 2**32)``.

    Raises
    ------
    ValueError
        If a parameter is out of range.

    Notes
    -----
    Clock: the filter's clock is the largest timestamp seen by ``add``/``update``/
    ``check_and_add*``. An operation at ``ts`` is processed at the *effective time*
    ``max(ts, clock)``: a late event (``ts < clock``) is inserted into, and a late query
    checked against, the clock's generation. Queries (``contains*``) never move the clock.

    Guarantees, for an item added at event time ``t`` no earlier than the clock and a later
    query at effective time ``t'``:

    * ``t <= t' < t + ttl``: reported present (no false negatives inside the TTL), because
      ``floor(t' / ttl) <= floor(t / ttl) + 1``;
    * ``t' >= t + 2 ttl``: forgotten, i.e. reported absent except for a false positive,
      because ``floor(t' / ttl) >= floor(t / ttl) + 2``;
    * ``t + ttl <= t' < t + 2 ttl``: may be either, depending on the generation boundary.

    A late insertion (``t`` < clock) is kept until ``clock + 2 ttl`` instead, and is always
    present for queries inside ``[clock, t + ttl)``.

    The constructor already takes error targets, so there is no ``from_error``. A
    generation spans ``ttl`` seconds; ``capacity`` counts the distinct items of one.

    False positives: with at most ``capacity`` distinct items per generation, each of the
    two filters answers falsely with probability about ``fp_rate / 2`` (see
    ``BloomFilter``), so by the union bound a query is a false positive with probability
    at most ``~fp_rate``.

    Examples
    --------
    >>> from sketches.aging_bloom import AgingBloomFilter
    >>> f = AgingBloomFilter(capacity=10_000, fp_rate=0.01, ttl=60.0, seed=1)
    >>> f.update([f"user-{i}" for i in range(10_000)], ts=1000.0)
    >>> bool(f.contains_many([f"user-{i}" for i in range(10_000)], ts=1059.9).all())
    True
    >>> bool(f.contains("user-1", ts=1000.0 + 2 * 60.0))
    False
    >>> fp = float(f.contains_many([f"x-{i}" for i in range(100_000)], ts=1001.0).mean())
    >>> fp <= 0.01 + 0.003  # at most fp_rate, +- 10 standard deviations of the measurement
    True
    >>> g = AgingBloomFilter(capacity=1_000, fp_rate=0.01, ttl=60.0)
    >>> g.check_and_add_many(["a", "b", "a", "a"], ts=[0.0, 10.0, 59.0, 180.0]).tolist()
    [False, False, True, False]
    """

    __slots__ = ("_capacity", "_clock", "_cur", "_fp_rate", "_gen", "_prev", "_seed", "_ttl")

    def __init__(self, capacity: int, fp_rate: float, ttl: float, seed: int = 0) -> None:
        self._capacity = _check_int("capacity", capacity, 1, 2**48)
        self._fp_rate = check_fp_rate(fp_rate)
        self._ttl = _check_ttl(ttl)
        self._seed = check_seed(seed)
        self._cur = BloomFilter.from_error(self._capacity, self._fp_rate / 2, self._seed)
        self._prev = BloomFilter(self._cur.num_bits, self._cur.num_hashes, self._seed)
        self._clock: float | None = None
        self._gen: int | None = None  # generation of the clock; _cur holds it, _prev the one before

    @property
    def capacity(self) -> int:
        """Distinct items per generation the filters are sized for."""
        return self._capacity

    @property
    def fp_rate(self) -> float:
        """Target false-positive rate of a query."""
        return self._fp_rate

    @property
    def ttl(self) -> float:
        """Time to live, in seconds of event time."""
        return self._ttl

    @property
    def seed(self) -> int:
        """Hash seed."""
        return self._seed

    @property
    def num_bits(self) -> int:
        """Bits of each of the two generation filters."""
        return self._cur.num_bits

    @property
    def num_hashes(self) -> int:
        """Probes per item."""
        return self._cur.num_hashes

    @property
    def clock(self) -> float | None:
        """Largest event time inserted so far, or ``None`` before the first insertion."""
        return self._clock

    @property
    def generation(self) -> int | None:
        """Generation ``floor(clock / ttl)`` of the clock, or ``None`` before the first insertion."""
        return self._gen

    # -- time -------------------------------------------------------------------------------

    def _timestamps(self, ts: TimeStamps, n: int) -> NDArray[np.float64]:
        try:
            arr = np.asarray(ts, dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"ts must be a number or an array of numbers, got {ts!r}") from exc
        if arr.ndim == 0:
            arr = np.full(n, arr, dtype=np.float64)
        elif arr.shape != (n,):
            raise ValueError(f"ts must be a scalar or a 1-D array of {n} timestamps, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"ts must be finite, got {float(arr[~np.isfinite(arr)][0])!r}")
        return arr

    def _generations(self, ts: NDArray[np.float64]) -> NDArray[np.int64]:
        # floor_divide is the exact floor of ts / ttl (fmod-based), so g <= ts / ttl < g + 1 holds
        with np.errstate(over="ignore", invalid="ignore"):
            gens = np.floor_divide(ts, self._ttl)
        if len(gens) and not (np.abs(gens) < _MAX_GENERATION).all():
            raise ValueError(f"ts / ttl out of range (|ts / ttl| must be below 2**53) for ttl={self._ttl}")
        return gens.astype(np.int64)

    def _probe(
        self, hashes: NDArray[np.uint64], mode: int, prev: NDArray[np.uint64] | None = None
    ) -> NDArray[np.bool_]:
        return probe_hashes(self._cur._words, hashes, self._cur.num_hashes, self._cur.num_bits, mode, prev)

    def _rotate(self, gen: int) -> None:
        """Advance the current generation to ``gen`` (never backwards), dropping old filters."""
        if self._gen is None:
            self._gen = gen
            return
        if gen <= self._gen:
            return
        if gen == self._gen + 1:
            self._prev, self._cur = self._cur, self._prev
            self._cur._words.fill(0)
        else:
            self._cur._words.fill(0)
            self._prev._words.fill(0)
        self._gen = gen

    def _runs(self, ts: NDArray[np.float64]) -> list[tuple[int, int, int]]:
        """Split a batch into ``(start, stop, generation)`` runs of equal effective generation."""
        eff = np.maximum.accumulate(self._generations(ts)) if len(ts) else np.zeros(0, np.int64)
        if self._gen is not None:
            eff = np.maximum(eff, self._gen)
        cuts = [0, *(np.flatnonzero(np.diff(eff)) + 1).tolist(), len(eff)]
        return [(a, b, int(eff[a])) for a, b in itertools.pairwise(cuts) if b > a]

    def _advance_clock(self, ts: NDArray[np.float64]) -> None:
        if len(ts):
            top = float(ts.max())
            self._clock = top if self._clock is None else max(self._clock, top)

    # -- updates ----------------------------------------------------------------------------

    def add(self, item: Item, ts: float) -> None:
        """Add one item seen at event time ``ts``.

        Parameters
        ----------
        item : str, bytes or int
            The item.
        ts : float or int
            Event time in seconds; a late ``ts`` (below the clock) counts at the clock.

        Raises
        ------
        ValueError
            If ``ts`` is NaN or infinite.
        """
        self.update([item], ts)

    def update(self, items: Items, ts: TimeStamps) -> None:
        """Add a batch; the same state as ``add`` for each item in turn.

        Parameters
        ----------
        items : sequence of str/bytes/int, or numpy integer array
            The items.
        ts : float, int or array of them
            One event time for the whole batch, or one per item.

        Raises
        ------
        ValueError
            If a timestamp is NaN or infinite, or ``ts`` has the wrong shape.
        """
        hashes = hash64_many(items, self._seed)
        times = self._timestamps(ts, len(hashes))
        for start, stop, gen in self._runs(times):
            self._rotate(gen)
            self._probe(hashes[start:stop], SET)
        self._advance_clock(times)

    def check_and_add(self, item: Item, ts: float) -> bool:
        """Report whether ``item`` was (probably) seen within the TTL, then add it at ``ts``.

        Parameters
        ----------
        item : str, bytes or int
            The item.
        ts : float or int
            Event time in seconds.

        Returns
        -------
        bool
            ``True`` if the item was (probably) present at effective time ``max(ts, clock)``.

        Raises
        ------
        ValueError
            If ``ts`` is NaN or infinite.
        """
        return bool(self.check_and_add_many([item], ts)[0])

    def check_and_add_many(self, items: Items, ts: TimeStamps) -> NDArray[np.bool_]:
        """Test-and-set a batch with the semantics of ``check_and_add`` applied in order.

        A repeat within the batch is reported at its second occurrence if it is still within
        the TTL by then; the batch is split where the clock changes generation.

        Parameters
        ----------
        items : sequence of str/bytes/int, or numpy integer array
            The items.
        ts : float, int or array of them
            One event time for the whole batch, or one per item.

        Returns
        -------
        numpy.ndarray of bool
            ``True`` where the item was (probably) present.

        Raises
        ------
        ValueError
            If a timestamp is NaN or infinite, or ``ts`` has the wrong shape.
        """
        return self.check_and_add_hashes(hash64_many(items, self._seed), ts)

    def check_and_add_hashes(self, hashes: NDArray[np.uint64], ts: TimeStamps) -> NDArray[np.bool_]:
        """``check_and_add_many`` for items already hashed with ``hash64_many(items, self.seed)``.

        For callers that hashed the items anyway (e.g. to route them to a shard): the same
        answers and the same filter state as ``check_and_add_many(items, ts)``, without hashing
        twice.

        >>> from sketches.hashing import hash64_many
        >>> f = AgingBloomFilter(capacity=100, fp_rate=0.01, ttl=60.0)
        >>> f.check_and_add_hashes(hash64_many(["a", "b", "a"], f.seed), 0.0).tolist()
        [False, False, True]
        """
        if not isinstance(hashes, np.ndarray) or hashes.dtype != np.uint64:
            raise ValueError("hashes must be a numpy uint64 array from sketches.hashing.hash64_many")
        hashes = hashes.reshape(-1)
        times = self._timestamps(ts, len(hashes))
        out = np.zeros(len(hashes), dtype=np.bool_)
        for start, stop, gen in self._runs(times):
            self._rotate(gen)
            out[start:stop] = self._probe(hashes[start:stop], CHECK_AND_SET, self._prev._words)
        self._advance_clock(times)
        return out

    def estimated_fp_rate(self) -> float:
        """False-positive rate of a check now, from the fill of both generation filters."""
        cur, prev = self._cur.estimated_fp_rate(), self._prev.estimated_fp_rate()
        return float(1.0 - (1.0 - cur) * (1.0 - prev))

    # -- queries ----------------------------------------------------------------------------

    def contains(self, item: Item, ts: float) -> bool:
        """Whether ``item`` was (probably) seen within the TTL at event time ``ts``.

        Parameters
        ----------
        item : str, bytes or int
            The item.
        ts : float or int
            Query time; below the clock it counts as the clock. The clock is not moved.

        Returns
        -------
        bool
            ``True`` if the item is (probably) present.

        Raises
        ------
        ValueError
            If ``ts`` is NaN or infinite.
        """
        return bool(self.contains_many([item], ts)[0])

    def contains_many(self, items: Items, ts: TimeStamps) -> NDArray[np.bool_]:
        """Membership of each item of a batch at its query time (does not move the clock).

        Parameters
        ----------
        items : sequence of str/bytes/int, or numpy integer array
            The items.
        ts : float, int or array of them
            One query time for the whole batch, or one per item.

        Returns
        -------
        numpy.ndarray of bool
            ``True`` where the item is (probably) present.

        Raises
        ------
        ValueError
            If a timestamp is NaN or infinite, or ``ts`` has the wrong shape.
        """
        hashes = hash64_many(items, self._seed)
        gens = self._generations(self._timestamps(ts, len(hashes)))
        if self._gen is None:
            return np.zeros(len(hashes), dtype=np.bool_)
        ahead = np.maximum(gens, self._gen) - self._gen  # 0: both filters live, 1: only _cur, 2+: none
        in_cur = self._probe(hashes, TEST)
        in_prev = probe_hashes(self._prev._words, hashes, self._cur.num_hashes, self._cur.num_bits, TEST)
        present: NDArray[np.bool_] = ((ahead == 0) & (in_cur | in_prev)) | ((ahead == 1) & in_cur)
        return present

    # -- merge and bytes --------------------------------------------------------------------

    def merge(self, other: AgingBloomFilter) -> None:
        """Union in place, generation by generation.

        Filters of equal generation are OR-ed; the two newest generations of either side are
        kept and the clock becomes the larger clock. If each side was fed its events in
        non-decreasing time order, the result is bit-identical to one filter fed the union
        of both streams in time order (late events in the inputs are kept at the generation
        they were inserted into).

        Parameters
        ----------
        other : AgingBloomFilter
            A filter with the same ``capacity``, ``fp_rate``, ``ttl`` and ``seed``.

        Raises
        ------
        ValueError
            If the parameters differ, ``other`` is another class, or ``other is self``.
        """
        self._check_mergeable(other, ("capacity", "fp_rate", "ttl", "seed"))
        if other._gen is None or other._clock is None:
            return
        top = other._gen if self._gen is None else max(self._gen, other._gen)
        self._rotate(top)
        for words, gen in ((other._cur._words, other._gen), (other._prev._words, other._gen - 1)):
            if gen == top:
                np.bitwise_or(self._cur._words, words, out=self._cur._words)
            elif gen == top - 1:
                np.bitwise_or(self._prev._words, words, out=self._prev._words)
        self._clock = other._clock if self._clock is None else max(self._clock, other._clock)

    def to_bytes(self) -> bytes:
        """Versioned, checksummed bytes: parameters, clock and the two packed bit arrays."""
        has_clock = self._clock is not None
        params = (self._capacity, self._fp_rate, self._ttl, self._seed, has_clock, self._clock or 0.0)
        m = self.num_bits
        return _CODEC.dump(params, _pack(self._cur._words, m) + _pack(self._prev._words, m))

    @classmethod
    def from_bytes(cls, data: bytes) -> AgingBloomFilter:
        """Rebuild a filter from ``to_bytes()``.

        Raises
        ------
        ValueError
            If ``data`` is not an intact ``AgingBloomFilter`` record.
        """
        (capacity, fp_rate, ttl, seed, has_clock, clock), payload = _CODEC.load(data)
        try:
            num_bits, _ = optimal_size(capacity, check_fp_rate(fp_rate) / 2)
            _check_ttl(ttl)
        except ValueError as exc:
            raise ValueError(f"corrupt AgingBloomFilter bytes: {exc}") from exc
        half = (num_bits + 7) // 8
        if len(payload) != 2 * half:
            raise ValueError(
                f"corrupt AgingBloomFilter bytes: {len(payload)} payload bytes, expected {2 * half}"
            )
        if has_clock not in (0, 1) or not math.isfinite(clock) or (not has_clock and clock != 0.0):
            raise ValueError("corrupt AgingBloomFilter bytes: bad clock")
        if not has_clock and any(payload):
            raise ValueError("corrupt AgingBloomFilter bytes: bits set before any insertion")
        f = cls(capacity, fp_rate, ttl, seed)
        f._cur._words = _unpack(payload[:half], f.num_bits, "AgingBloomFilter")
        f._prev._words = _unpack(payload[half:], f.num_bits, "AgingBloomFilter")
        if has_clock:
            f._clock = float(clock)
            f._gen = int(f._generations(np.array([clock]))[0])
        return f

    def __repr__(self) -> str:
        return (
            f"AgingBloomFilter(capacity={self._capacity}, fp_rate={self._fp_rate}, ttl={self._ttl}, "
            f"seed={self._seed}, clock={self._clock})"
        )
