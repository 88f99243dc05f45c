"""Aging Bloom filter: "seen within the last ``ttl`` seconds of event time", by generations.

Event time is cut into generations ``g = floor(t / ttl)`` aligned to the epoch, so the state
depends only on the events (replayable, and filters of different workers line up for
merging). One Bloom filter is kept per live generation: normally the clock's generation and
the one before it; with a low-watermark ``clock`` (per-partition watermarks) also the
generations of events that run ahead of the clock.
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
    Words,
    _check_int,
    _pack,
    _popcount,
    _unpack,
    check_fp_rate,
    optimal_size,
    probe_hashes,
)
from sketches.hashing import Item, Items, check_seed, hash64_many

__all__ = ["AgingBloomFilter"]

# Version 1: exactly two generations, the clock's and the one before (every state of the
# default mode). Version 2: any set of generations, each stored with its number. ``to_bytes``
# writes version 1 whenever the non-empty generations fit it, so default-mode bytes are
# unchanged; ``from_bytes`` reads both.
_CODEC_V1: Final = Codec("AgingBloomFilter", version=1, params="<QddIBd")
_CODEC: Final = Codec("AgingBloomFilter", version=2, params="<QddIBdI")
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

    Every operation has an *effective time* ``e = max(ts, clock)`` and a generation
    ``g = floor(e / ttl)`` (exact floor, epoch-aligned). An insertion goes into the filter of
    generation ``g``; a check looks at the filters of generations ``g`` and ``g - 1``, and at
    ``g + 1`` if it exists (only with an explicit ``clock``: a partition running ahead put
    items there, and a lagging copy of one is a repeat too). Generations older than
    ``floor(clock / ttl) - 1`` are dropped.

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
    Clock. Queries (``contains*``) never move the clock. Updates (``add``, ``update``,
    ``check_and_add*``) run in one of two modes, chosen per call:

    * default (``clock=None``): the clock is the largest timestamp inserted so far, so every
      insertion and check counts at the clock: a late event (``ts < clock``) is inserted
      into, and checked against, the clock's generation. Two generations are live: the
      clock's and the one before.
    * watermark (``clock=`` given, per event or per call): ``clock`` is the caller's low
      watermark (how far every input partition has progressed), non-decreasing within a
      call and raised to the filter's clock if below it; the filter's clock becomes the
      largest given clock (not the largest ``ts``). An event ahead of the clock counts at its
      own ``ts``, in its own generation, so a partition that runs ahead neither rotates away
      the generations that lagging partitions still need nor mixes its items with older
      ones. Generations from ``floor(clock / ttl) - 1`` up to the newest event's are kept
      (one ``num_bits`` array each), so memory grows with ``(max ts - clock) / ttl``: the
      caller must bound the skew between partitions.

    The default mode is the watermark mode with ``clock`` = running maximum of ``ts``; the
    modes can be mixed on one filter.

    Guarantees, ignoring false positives, for an item inserted at effective time ``t``
    (generation ``g = floor(t / ttl)``) and a check processed after it at effective time
    ``t'``. The exact rule: the check reports the item iff ``floor(t' / ttl)`` is ``g - 1``,
    ``g`` or ``g + 1`` (``g - 1`` arises only with an explicit clock). The generations a
    check looks at are never dropped before it, because the check's own clock is at most
    ``t'``. Hence:

    * ``t <= t' < t + ttl``: reported present (no false negatives inside the TTL);
    * ``t' >= t + 2 ttl``: forgotten, i.e. reported absent except for a false positive;
    * ``t + ttl <= t' < t + 2 ttl``: may be either, depending on the generation boundary;
    * ``t' < t`` (a check processed later but at an earlier time, e.g. a lagging
      partition's copy of an item a leading partition inserted first): present within
      ``t - ttl < t'``, and never for ``t' < t - 2 ttl``, the mirror of the rules above.

    In terms of the events' own timestamps, with watermarks: an event at or ahead of its
    clock counts at its own ``ts``. So for an insertion at ``ts`` and a later check at
    ``ts'``, both at or ahead of their clocks, whatever the skew: ``ts <= ts' < ts + ttl``
    is found, ``ts' >= ts + 2 ttl`` is not reported, and the same holds mirrored for
    ``ts' < ts``. A *late* check (``ts' <`` its clock ``c``, ``c >= ts``) counts at
    ``c``: it finds the item iff ``c < (floor(ts / ttl) + 2) ttl``, the clock at which the
    item's generation is dropped (somewhere in ``(ts + ttl, ts + 2 ttl]``), so always while
    ``c <= ts + ttl``. A late insertion counts at its clock ``c``: it is kept until the
    clock reaches ``(floor(c / ttl) + 2) ttl <= c + 2 ttl`` and is present for checks
    inside ``[c, c + ttl)``.

    The constructor already takes error targets, so there is no ``from_error``. A
    generation spans ``ttl`` seconds; ``capacity`` counts the distinct items of one.

    False positives: with at most ``capacity`` distinct items per generation, each of the
    two filters a check looks at answers falsely with probability about ``fp_rate / 2``
    (see ``BloomFilter``), so by the union bound a check is a false positive with
    probability at most ``~fp_rate``.

    Speed: a batch is split into runs of consecutive events of equal generation, one
    vectorised probe per run; events of different generations interleaved one by one cost
    one probe call each.

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

    With a low watermark, a partition running ahead keeps its own generations:

    >>> w = AgingBloomFilter(capacity=1_000, fp_rate=0.01, ttl=60.0)
    >>> w.check_and_add_many(["lead", "lead"], ts=[500.0, 700.0], clock=0.0).tolist()
    [False, False]
    >>> w.check_and_add_many(["lag", "lag"], ts=[10.0, 50.0], clock=[10.0, 50.0]).tolist()
    [False, True]
    >>> w.clock, w.generations
    (50.0, (0, 8, 11))
    """

    __slots__ = ("_capacity", "_clock", "_fp_rate", "_gen", "_gens", "_k", "_m", "_seed", "_ttl")

    def __init__(self, capacity: int, fp_rate: float, ttl: float, seed: int = 0) -> None:
        self._capacity = _check_int("capacity", capacity, 1, 2**48)
        self._fp_rate = check_fp_rate(fp_rate)
        self._ttl = _check_ttl(ttl)
        self._seed = check_seed(seed)
        self._m, self._k = optimal_size(self._capacity, self._fp_rate / 2)
        self._gens: dict[int, Words] = {}  # generation -> bit array, created on demand
        self._clock: float | None = None
        self._gen: int | None = None  # generation of the clock

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
        """Bits of each generation filter."""
        return self._m

    @property
    def num_hashes(self) -> int:
        """Probes per item."""
        return self._k

    @property
    def clock(self) -> float | None:
        """The filter's clock (see the class notes), or ``None`` before the first insertion."""
        return self._clock

    @property
    def generation(self) -> int | None:
        """Generation ``floor(clock / ttl)`` of the clock, or ``None`` before the first insertion."""
        return self._gen

    @property
    def generations(self) -> tuple[int, ...]:
        """Generations that hold a filter (``num_bits`` bits each), ascending.

        At most two (the clock's and the one before) in the default mode; with a watermark
        ``clock`` also those of events ahead of the clock. A generation's filter may be empty.
        """
        return tuple(sorted(self._gens))

    # -- time -------------------------------------------------------------------------------

    def _timestamps(self, ts: TimeStamps, n: int, name: str = "ts") -> NDArray[np.float64]:
        try:
            arr = np.asarray(ts, dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"{name} must be a number or an array of numbers, got {ts!r}") from exc
        if arr.ndim == 0:
            arr = np.full(n, arr, dtype=np.float64)
        elif arr.shape != (n,):
            raise ValueError(
                f"{name} must be a scalar or a 1-D array of {n} timestamps, got shape {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} must be finite, got {float(arr[~np.isfinite(arr)][0])!r}")
        return arr

    def _generations(self, ts: NDArray[np.float64], name: str = "ts") -> NDArray[np.int64]:
        # floor_divide is the exact floor of ts / ttl (fmod-based), so g <= ts / ttl < g + 1 holds
        with np.errstate(over="ignore", invalid="ignore"):
            gens = np.floor_divide(ts, self._ttl)
        if len(gens) and not (np.abs(gens) < _MAX_GENERATION).all():
            raise ValueError(
                f"{name} / ttl out of range (|{name} / ttl| must be below 2**53) for ttl={self._ttl}"
            )
        return gens.astype(np.int64)

    def _schedule(
        self, ts: TimeStamps, n: int, clock: TimeStamps | None
    ) -> tuple[list[tuple[int, int, int, int]], float, int]:
        """Validate a batch; return its runs and the clock (and its generation) after it.

        A run is ``(start, stop, generation, clock generation at stop - 1)`` over consecutive
        events of equal effective generation. Nothing is changed, so a bad batch applies
        nothing.
        """
        times = self._timestamps(ts, n)
        if clock is None:
            clocks = np.maximum.accumulate(times)
        else:
            clocks = self._timestamps(self._no_watermark_yet(clock, times), n, "clock")
            if n > 1 and (clocks[1:] < clocks[:-1]).any():
                j = int(np.flatnonzero(clocks[1:] < clocks[:-1])[0])
                raise ValueError(
                    f"clock must be non-decreasing within a call, got {clocks[j]!r} then {clocks[j + 1]!r}"
                )
        if self._clock is not None:
            clocks = np.maximum(clocks, self._clock)
        if clock is None:
            gens = cgens = self._generations(clocks)  # every event counts at the clock
        else:
            cgens = self._generations(clocks, "clock")
            gens = self._generations(np.maximum(times, clocks))
        cuts = [0, *(np.flatnonzero(gens[1:] != gens[:-1]) + 1).tolist(), n]
        runs = [(a, b, int(gens[a]), int(cgens[b - 1])) for a, b in itertools.pairwise(cuts)]
        return runs, float(clocks[-1]), int(cgens[-1])

    def _no_watermark_yet(self, clock: TimeStamps, times: NDArray[np.float64]) -> TimeStamps:
        """``clock`` with ``-inf`` ("no watermark yet": some input has not been heard from) as
        the filter's own clock, or before it has one a time no event is before
        (``min(0, ts)``; event times are epoch seconds): the clock does not move, so no
        generation is dropped and no event counts as late."""
        try:
            raw = np.asarray(clock, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            return clock  # _timestamps words the error
        if not (raw == -np.inf).any():
            return clock
        low = self._clock if self._clock is not None else min(0.0, float(times.min()))
        return np.where(raw == -np.inf, low, raw)

    def _check_empty(self, ts: TimeStamps, clock: TimeStamps | None) -> None:
        """Validate the arguments of an empty batch, which changes nothing (not even the clock)."""
        self._timestamps(ts, 0)
        if clock is not None:
            self._timestamps(clock, 0, "clock")

    def _filter(self, gen: int, clock_gen: int) -> Words:
        """The filter of generation ``gen`` (created if missing), after dropping generations
        older than ``clock_gen - 1``."""
        for old in [g for g in self._gens if g < clock_gen - 1]:
            del self._gens[old]
        words = self._gens.get(gen)
        if words is None:
            words = self._gens[gen] = np.zeros((self._m + 63) // 64, dtype=np.uint64)
        return words

    def _retain(self) -> None:
        """Drop the generations older than the one before the clock's."""
        if self._gen is not None:
            for old in [g for g in self._gens if g < self._gen - 1]:
                del self._gens[old]

    # -- updates ----------------------------------------------------------------------------

    def add(self, item: Item, ts: float, clock: float | None = None) -> None:
        """Add one item seen at event time ``ts``.

        Parameters
        ----------
        item : str, bytes or int
            The item.
        ts : float or int
            Event time in seconds; a late ``ts`` (below the clock) counts at the clock.
        clock : float or int, optional
            Low watermark (see the class notes); ``None``: the largest ``ts`` inserted.

        Raises
        ------
        ValueError
            If ``ts`` or ``clock`` is NaN or infinite.
        """
        self.update([item], ts, clock=clock)

    def update(self, items: Items, ts: TimeStamps, clock: TimeStamps | None = None) -> None:
        """Add a batch; the same state as ``add`` for each item in turn.

        Parameters
        ----------
        items : sequence of str/bytes/int, or numpy integer array
            The items.
        ts : float, int or array of them
            One event time for the whole batch, or one per item.
        clock : float, int or array of them, optional
            Low watermark per item (or one for the batch), non-decreasing; see
            ``check_and_add_hashes``. ``None``: the running maximum of ``ts``.

        Raises
        ------
        ValueError
            If a timestamp or clock is NaN or infinite, ``ts`` or ``clock`` has the wrong
            shape, or ``clock`` decreases.
        """
        self._apply(hash64_many(items, self._seed), ts, clock, SET)

    def check_and_add(self, item: Item, ts: float, clock: float | None = None) -> bool:
        """Report whether ``item`` was (probably) seen within the TTL, then add it at ``ts``.

        Parameters
        ----------
        item : str, bytes or int
            The item.
        ts : float or int
            Event time in seconds.
        clock : float or int, optional
            Low watermark (see the class notes); ``None``: the largest ``ts`` inserted.

        Returns
        -------
        bool
            ``True`` if the item was (probably) present at the effective time.

        Raises
        ------
        ValueError
            If ``ts`` or ``clock`` is NaN or infinite.
        """
        return bool(self.check_and_add_many([item], ts, clock=clock)[0])

    def check_and_add_many(
        self, items: Items, ts: TimeStamps, clock: TimeStamps | None = None
    ) -> NDArray[np.bool_]:
        """Test-and-set a batch with the semantics of ``check_and_add`` applied in order.

        A repeat within the batch is reported at its second occurrence if it is still within
        the TTL by then; the batch is split where the effective generation changes.

        Parameters
        ----------
        items : sequence of str/bytes/int, or numpy integer array
            The items.
        ts : float, int or array of them
            One event time for the whole batch, or one per item.
        clock : float, int or array of them, optional
            Low watermark per item (or one for the batch); see ``check_and_add_hashes``.

        Returns
        -------
        numpy.ndarray of bool
            ``True`` where the item was (probably) present.

        Raises
        ------
        ValueError
            If a timestamp or clock is NaN or infinite, ``ts`` or ``clock`` has the wrong
            shape, or ``clock`` decreases.
        """
        return self.check_and_add_hashes(hash64_many(items, self._seed), ts, clock=clock)

    def check_and_add_hashes(
        self, hashes: NDArray[np.uint64], ts: TimeStamps, clock: TimeStamps | None = None
    ) -> NDArray[np.bool_]:
        """``check_and_add_many`` for items already hashed with ``hash64_many(items, self.seed)``.

        For callers that hashed the items anyway (e.g. to route them to a shard): the same
        answers and the same filter state as ``check_and_add_many(items, ts)``, without hashing
        twice.

        Parameters
        ----------
        hashes : numpy.ndarray of uint64
            ``hash64_many(items, self.seed)``.
        ts : float, int or array of them
            One event time for the whole batch, or one per item.
        clock : float, int or array of them, optional
            ``None`` (default): the clock is the running maximum of ``ts`` and every event
            counts at it. Otherwise the low watermark of each event (or one for the batch):
            non-decreasing within the call, raised to the filter's clock if below it;
            ``-inf`` means no watermark yet (the clock stays where it is). Event
            ``i`` counts at ``e_i = max(ts_i, clock_i)``: it is checked against generations
            ``floor(e_i / ttl)``, the one before and (if a partition ahead created it) the one
            after, and inserted into the first, in input order; generations older than
            ``floor(clock_i / ttl) - 1`` are dropped, and the filter's clock becomes
            ``clock[-1]``.

        Returns
        -------
        numpy.ndarray of bool
            ``True`` where the item was (probably) present.

        Raises
        ------
        ValueError
            If ``hashes`` is not a uint64 array, a timestamp or clock is NaN or infinite,
            ``ts`` or ``clock`` has the wrong shape, or ``clock`` decreases.

        Examples
        --------
        >>> from sketches.hashing import hash64_many
        >>> f = AgingBloomFilter(capacity=100, fp_rate=0.01, ttl=60.0)
        >>> f.check_and_add_hashes(hash64_many(["a", "b", "a"], f.seed), 0.0).tolist()
        [False, False, True]

        A partition running ahead (``ts`` 200) of the watermark (0) keeps its own generation:
        its repeat 200 s later is not a duplicate, and the lagging copy at 30 s still is.

        >>> h = hash64_many(["x", "x", "x"], f.seed)
        >>> f.check_and_add_hashes(h, [10.0, 200.0, 30.0], clock=[0.0, 0.0, 30.0]).tolist()
        [False, False, True]
        """
        if not isinstance(hashes, np.ndarray) or hashes.dtype != np.uint64:
            raise ValueError("hashes must be a numpy uint64 array from sketches.hashing.hash64_many")
        return self._apply(hashes.reshape(-1), ts, clock, CHECK_AND_SET)

    def _apply(
        self, hashes: NDArray[np.uint64], ts: TimeStamps, clock: TimeStamps | None, mode: int
    ) -> NDArray[np.bool_]:
        """Insert a batch run by run (``mode`` is ``SET`` or ``CHECK_AND_SET``); return the
        answers, empty for ``SET``."""
        n = len(hashes)
        if not n:
            self._check_empty(ts, clock)
            return np.zeros(0, dtype=np.bool_)
        runs, self._clock, self._gen = self._schedule(ts, n, clock)
        out = np.zeros(0 if mode == SET else n, dtype=np.bool_)
        # No _retain() needed: the last run's clock generation is the new clock's, so its
        # _filter call already dropped what _retain would, and nothing older is created.
        for start, stop, gen, clock_gen in runs:
            part, words = hashes[start:stop], self._filter(gen, clock_gen)
            if mode == SET:
                probe_hashes(words, part, self._k, self._m, SET)
            else:
                out[start:stop] = probe_hashes(words, part, self._k, self._m, mode, self._gens.get(gen - 1))
                self._check_ahead(part, gen, out[start:stop])
        return out

    def _check_ahead(self, hashes: NDArray[np.uint64], gen: int, out: NDArray[np.bool_]) -> None:
        """OR into ``out`` the items present in generation ``gen + 1``: it exists only when a
        partition runs ahead of the clock, and a lagging copy of an item seen there is a
        repeat within the TTL in the other direction of time (its inserts go to ``gen``)."""
        ahead = self._gens.get(gen + 1)
        if ahead is not None:
            out |= probe_hashes(ahead, hashes, self._k, self._m, TEST)

    def estimated_fp_rate(self) -> float:
        """False-positive rate of a check at the clock, from the fill of the generation
        filters it looks at (the clock's, the one before and, if it exists, the one after)."""
        if self._gen is None:
            return 0.0
        absent = 1.0
        for g in (self._gen - 1, self._gen, self._gen + 1):
            absent *= 1.0 - self._fill_rate(self._gens.get(g))
        return float(1.0 - absent)

    def _fill_rate(self, words: Words | None) -> float:
        # the same arithmetic as BloomFilter.estimated_fp_rate: fill_ratio ** k
        return 0.0 if words is None else float((_popcount(words) / self._m) ** self._k)

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

        Item ``i`` is checked against generations ``floor(max(ts_i, clock) / ttl)`` and the
        one before, as ``check_and_add_many`` would check it, without inserting it.

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
        out = np.zeros(len(hashes), dtype=np.bool_)
        if self._gen is None or not len(hashes):
            return out
        gens = np.maximum(gens, self._gen)
        lo, hi = int(gens.min()), int(gens.max())
        if lo == hi:
            groups: list[tuple[int, NDArray[np.intp] | slice]] = [(lo, slice(None))]
        else:
            order = np.argsort(gens, kind="stable")
            ordered = gens[order]
            cuts = [0, *(np.flatnonzero(np.diff(ordered)) + 1).tolist(), len(ordered)]
            groups = [(int(ordered[a]), order[a:b]) for a, b in itertools.pairwise(cuts)]
        for gen, where in groups:
            part = hashes[where]
            cur, prev = self._gens.get(gen), self._gens.get(gen - 1)
            if cur is None:
                cur, prev = prev, None
            if cur is None:
                found = np.zeros(len(part), dtype=np.bool_)
            else:
                found = probe_hashes(cur, part, self._k, self._m, TEST, prev)
            self._check_ahead(part, gen, found)
            out[where] = found  # ``where`` may be an index array: out[where] is then a copy
        return out

    # -- merge and bytes --------------------------------------------------------------------

    def merge(self, other: AgingBloomFilter) -> None:
        """Union in place, generation by generation.

        Filters of equal generation are OR-ed, the clock becomes the larger clock, and
        generations older than the one before the new clock's are dropped. In the default
        mode, if each side was fed its events in non-decreasing time order, the result is
        bit-identical to one filter fed the union of both streams in time order (late events
        in the inputs are kept at the generation they were inserted into).

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
        if self._gen is None or self._clock is None or other._clock > self._clock:
            self._clock, self._gen = other._clock, other._gen
        for gen, words in other._gens.items():
            if gen < self._gen - 1:
                continue
            mine = self._gens.get(gen)
            if mine is None:
                self._gens[gen] = words.copy()
            else:
                np.bitwise_or(mine, words, out=mine)
        self._retain()

    def to_bytes(self) -> bytes:
        """Versioned, checksummed bytes: parameters, clock and the packed bit arrays.

        Version 1 (two arrays: the clock's generation and the one before) whenever every
        non-empty generation is one of those two, else version 2 (each non-empty generation
        with its number, ascending). Empty generations are not stored.
        """
        has_clock = self._clock is not None
        clock = self._clock or 0.0
        m = self._m
        live = {g: w for g, w in sorted(self._gens.items()) if w.any()}
        if self._gen is None or set(live) <= {self._gen, self._gen - 1}:
            empty = bytes((m + 7) // 8)
            cur, prev = (live.get(g) for g in ((self._gen or 0), (self._gen or 0) - 1))
            payload = (empty if cur is None else _pack(cur, m)) + (empty if prev is None else _pack(prev, m))
            head = (self._capacity, self._fp_rate, self._ttl, self._seed, has_clock, clock)
            return _CODEC_V1.dump(head, payload)
        numbers = np.array(list(live), dtype="<i8").tobytes()
        payload = numbers + b"".join(_pack(w, m) for w in live.values())
        params = (self._capacity, self._fp_rate, self._ttl, self._seed, has_clock, clock, len(live))
        return _CODEC.dump(params, payload)

    @classmethod
    def from_bytes(cls, data: bytes) -> AgingBloomFilter:
        """Rebuild a filter from ``to_bytes()`` (format version 1 or 2).

        Raises
        ------
        ValueError
            If ``data`` is not an intact ``AgingBloomFilter`` record.
        """
        v1 = isinstance(data, (bytes, bytearray, memoryview)) and bytes(data[4:5]) == b"\x01"
        params, payload = (_CODEC_V1 if v1 else _CODEC).load(data)
        capacity, fp_rate, ttl, seed, has_clock, clock = params[:6]
        count = 2 if v1 else params[6]
        try:
            num_bits, _ = optimal_size(capacity, check_fp_rate(fp_rate) / 2)
            _check_ttl(ttl)
        except ValueError as exc:
            raise ValueError(f"corrupt AgingBloomFilter bytes: {exc}") from exc
        half = (num_bits + 7) // 8
        size = count * half + (0 if v1 else 8 * count)
        if len(payload) != size:
            raise ValueError(f"corrupt AgingBloomFilter bytes: {len(payload)} payload bytes, expected {size}")
        if has_clock not in (0, 1) or not math.isfinite(clock) or (not has_clock and clock != 0.0):
            raise ValueError("corrupt AgingBloomFilter bytes: bad clock")
        if not has_clock and (any(payload) or (not v1 and count)):
            raise ValueError("corrupt AgingBloomFilter bytes: bits set before any insertion")
        f = cls(capacity, fp_rate, ttl, seed)
        if not has_clock:
            return f
        f._clock = float(clock)
        f._gen = gen = int(f._generations(np.array([clock]), "clock")[0])
        if v1:
            numbers = [gen, gen - 1]
        else:
            numbers = np.frombuffer(payload[: 8 * count], dtype="<i8").astype(np.int64).tolist()
            payload = payload[8 * count :]
            if any(b <= a for a, b in itertools.pairwise(numbers)):
                raise ValueError("corrupt AgingBloomFilter bytes: generations not strictly ascending")
            if numbers and (numbers[0] < gen - 1 or numbers[-1] >= _MAX_GENERATION):
                raise ValueError("corrupt AgingBloomFilter bytes: generation out of range")
        for j, number in enumerate(numbers):
            words = _unpack(payload[j * half : (j + 1) * half], num_bits, "AgingBloomFilter")
            if words.any():
                f._gens[number] = words
        return f

    def __repr__(self) -> str:
        return (
            f"AgingBloomFilter(capacity={self._capacity}, fp_rate={self._fp_rate}, ttl={self._ttl}, "
            f"seed={self._seed}, clock={self._clock})"
        )
