"""SpaceSaving: the top-k heavy hitters of a stream with a guaranteed error per reported item.

>>> from sketches.spacesaving import SpaceSaving
>>> ss = SpaceSaving(k=2)
>>> ss.update(["a", "b", "a", "c", "a"])
>>> ss.top(1)
[('a', 3, 0)]
"""

from __future__ import annotations

import struct
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from sketches._base import Sketch
from sketches._format import Codec, decode_items, encode_items
from sketches.countmin import INT64_MAX, as_counts, checked_total
from sketches.hashing import Item, Items, check_seed, hash64, hash64_many, unhash_ints

__all__ = ["SpaceSaving"]

_MAX_K: Final = 2**32 - 1
_CODEC: Final = Codec("SpaceSaving", version=1, params="<II")
_HEAD: Final = struct.Struct("<qIB")  # total, monitored items, bytes per stored counter
_DTYPES: Final[dict[int, str]] = {1: "<u1", 2: "<u2", 4: "<u4", 8: "<i8"}

# (hashes sorted ascending, counts, errors) of one summary
_Summary = tuple[NDArray[np.uint64], NDArray[np.int64], NDArray[np.int64]]


def _plain(item: Any) -> Any:
    """The stored representative of an item: plain Python str/bytes/int (so it encodes and re-hashes)."""
    if isinstance(item, np.generic):
        item = item.item()
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, str) and type(item) is not str:
        return str(item)
    return item


def _check_count(count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise TypeError(f"count must be an int, got {type(count).__name__}")
    if not 0 <= int(count) <= INT64_MAX:
        raise ValueError(f"count must be a non-negative int64, got {count!r}")
    return int(count)


def _exact_summary(
    hashes: NDArray[np.uint64], weights: NDArray[np.int64] | None
) -> tuple[_Summary, NDArray[np.intp]]:
    """Exact (hash, count, error=0) of a batch, sorted by hash, plus each hash's first position."""
    if len(hashes) == 0:
        return (hashes, np.zeros(0, np.int64), np.zeros(0, np.int64)), np.zeros(0, np.intp)
    order = np.argsort(hashes)
    ordered = hashes[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    first = np.minimum.reduceat(order, starts)
    if weights is None:
        counts = np.diff(np.append(starts, len(ordered))).astype(np.int64)
    else:
        counts = np.add.reduceat(weights[order], starts)
    keep = counts > 0  # zero-count items are not part of the stream
    summary = (ordered[starts][keep], counts[keep].astype(np.int64), np.zeros(int(keep.sum()), np.int64))
    return summary, first[keep]


def _batch_summary(hashes: NDArray[np.uint64], weights: NDArray[np.int64] | None) -> _Summary:
    """Exact (hash, count, error=0) of a batch, sorted by hash (a plain sort when unweighted)."""
    if weights is not None or len(hashes) == 0:
        return _exact_summary(hashes, weights)[0]
    ordered = np.sort(hashes)
    is_start = np.empty(len(ordered), dtype=np.bool_)
    is_start[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=is_start[1:])
    starts = np.flatnonzero(is_start)
    counts = np.empty(len(starts), dtype=np.int64)
    np.subtract(starts[1:], starts[:-1], out=counts[:-1])
    counts[-1] = len(ordered) - starts[-1]
    return ordered[starts], counts, np.zeros(len(starts), np.int64)


def _prune(batch: _Summary, monitored: NDArray[np.uint64], k: int) -> _Summary:
    """Drop batch items that cannot reach the top ``k`` of the merge; the result is unchanged.

    A batch-only item ``x`` gets ``c_b(x) + fill`` in the union. If ``k`` batch items have a
    larger ``c_b``, or an equal one and a smaller hash, each of them ends at least as high
    (monitored ones have ``c_a >= fill``) and wins the tie-break, so ``x`` is never kept.
    Monitored items are always kept: their union count also includes ``c_a``.
    """
    hb, cb, eb = batch
    if len(hb) <= 2 * k:
        return batch
    kth = _kth_largest(cb, k)
    keep = cb > kth
    keep[np.flatnonzero(cb == kth)[:k]] = True  # hb is sorted: the k smallest tied hashes
    pos = np.searchsorted(hb, monitored)
    inside = pos < len(hb)
    pos, mon = pos[inside], monitored[inside]
    keep[pos[hb[pos] == mon]] = True
    return hb[keep], cb[keep], eb[keep]


def _kth_largest(counts: NDArray[np.int64], k: int) -> int:
    """The ``k``-th largest count: a histogram when counts are small (batch counts usually are)."""
    top = int(counts.max())
    if top > 4 * len(counts):
        return int(np.partition(counts, len(counts) - k)[len(counts) - k])
    at_least = np.cumsum(np.bincount(counts, minlength=top + 1)[::-1])[::-1]  # items with count >= c
    return int(np.flatnonzero(at_least >= k)[-1])


def _representatives(items: Items, hashes: NDArray[np.uint64], new: list[int], seed: int) -> list[Any]:
    """The stored item for each new monitored hash: its first occurrence in the batch."""
    wanted = np.array(new, dtype=np.uint64)
    if isinstance(items, np.ndarray) and items.dtype.kind in "iu":
        # Integer hashing is a bijection: invert it instead of searching the batch.
        patterns = unhash_ints(wanted, seed)
        return (patterns if items.dtype.kind == "u" else patterns.view(np.int64)).tolist()  # type: ignore[no-any-return]
    flat = items.reshape(-1) if isinstance(items, np.ndarray) else items
    return [_plain(flat[i]) for i in _first_positions(hashes, wanted).tolist()]


_PREFILTER_BITS: Final = 16


def _first_positions(hashes: NDArray[np.uint64], wanted: NDArray[np.uint64]) -> NDArray[np.intp]:
    """Position of the first occurrence in ``hashes`` of each of ``wanted`` (all present)."""
    order = np.argsort(wanted)
    ranked = wanted[order]
    # A table on the low hash bits cuts the binary searches to the few likely hits.
    low = np.uint64((1 << _PREFILTER_BITS) - 1)
    table = np.zeros(1 << _PREFILTER_BITS, dtype=np.bool_)
    table[(ranked & low).astype(np.intp)] = True
    likely = np.flatnonzero(table[(hashes & low).astype(np.intp)])
    pos = np.minimum(np.searchsorted(ranked, hashes[likely]), len(ranked) - 1)
    hit = ranked[pos] == hashes[likely]
    first = np.full(len(ranked), len(hashes), dtype=np.intp)
    np.minimum.at(first, pos[hit], likely[hit])
    out = np.empty(len(wanted), dtype=np.intp)
    out[order] = first
    return out


def _combine(a: _Summary, fill_a: int, b: _Summary, fill_b: int) -> _Summary:
    """Union of two summaries (Agarwal et al. 2012): an item missing from one gets that one's fill.

    ``fill`` is a summary's minimum counter if it is full, else 0 (then it is exact). Returns
    the union, unsorted and untruncated. ``b``'s hashes must be sorted.
    """
    (ha, ca, ea), (hb, cb, eb) = a, b
    counts, errors = cb + fill_a, eb + fill_a
    pos = np.searchsorted(hb, ha)
    found = pos < len(hb)
    found[found] = hb[pos[found]] == ha[found]
    counts[pos[found]] += ca[found] - fill_a
    errors[pos[found]] += ea[found] - fill_a
    rest = ~found
    return (
        np.concatenate((hb, ha[rest])),
        np.concatenate((counts, ca[rest] + fill_b)),
        np.concatenate((errors, ea[rest] + fill_b)),
    )


def _top_k(summary: _Summary, k: int) -> _Summary:
    """The ``k`` largest counts (ties: smaller hash first), in canonical order: count desc, hash asc."""
    hashes, counts, errors = summary
    if len(counts) > k:
        kth = np.partition(counts, len(counts) - k)[len(counts) - k]
        above = np.flatnonzero(counts > kth)
        ties = np.flatnonzero(counts == kth)
        need = k - len(above)
        if need < len(ties):
            ties = ties[np.argpartition(hashes[ties], need - 1)[:need]]
        chosen = np.concatenate((above, ties))
        hashes, counts, errors = hashes[chosen], counts[chosen], errors[chosen]
    order = np.lexsort((hashes, -counts))
    return hashes[order], counts[order], errors[order]


class SpaceSaving(Sketch):
    """SpaceSaving top-k summary (Metwally, Agrawal & El Abbadi 2005), mergeable (Agarwal et al. 2012).

    Monitors at most ``k`` items, each with a counter ``count`` and an ``error``.

    Error guarantee, with ``N = total`` (sum of all counts): for every monitored item,
    ``count - error <= true count <= count`` and ``error <= N / k``; an unmonitored item's
    true count is at most the smallest counter (``<= N / k``). Hence every item with true
    count ``> N / k`` is monitored, and ``estimate`` is always an upper bound.

    Parameters
    ----------
    k : int
        Number of monitored items (counters), in ``[1, 2**32)``.
    seed : int, default 0
        Hash seed in ``[0, 2**32)``. Items are identified by ``hash64(item, seed)``.

    Raises
    ------
    ValueError
        If a parameter is out of range.

    Notes
    -----
    State: three numpy arrays (hash uint64, count int64, error int64) and a dict from hash to
    the first-seen item. The bytes hold the items themselves (their hashes are recomputed and
    checked on load) and counters in the fewest of 1, 2, 4 or 8 bytes.

    ``add`` is the classic algorithm (an unmonitored item replaces the smallest counter ``m``,
    with ``count = m + c`` and ``error = m``). ``update`` and ``merge`` use the mergeable
    summaries rule (see ``update``), so they are not bit-identical to sequential ``add``, but
    keep the same guarantees. While at most ``k`` distinct items have been seen, all three are
    exact and agree.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> keys = rng.zipf(1.5, size=100_000) % 10_000
    >>> ss = SpaceSaving(k=100)
    >>> ss.update(keys)
    >>> exact = np.bincount(keys)
    >>> sorted(item for item, _, _ in ss.top(5)) == sorted(np.argsort(-exact)[:5].tolist())
    True
    >>> all(c - e <= exact[i] <= c and e <= ss.total / ss.k for i, c, e in ss.top(100))
    True
    """

    __slots__ = ("_counts", "_errors", "_hashes", "_items", "_k", "_seed", "_slots", "_total")

    def __init__(self, k: int, seed: int = 0) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= _MAX_K:
            raise ValueError(f"k must be a positive int <= {_MAX_K}, got {k!r}")
        self._k = int(k)
        self._seed = check_seed(seed)
        self._total = 0
        self._set_state((np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64)), {})

    @classmethod
    def from_error(cls, epsilon: float, seed: int = 0) -> SpaceSaving:
        """Size a summary so that every error is at most ``epsilon * N``: ``k = ceil(1 / epsilon)``.

        Parameters
        ----------
        epsilon : float
            Relative error, in ``(0, 1)``.
        seed : int, default 0
            Hash seed.

        Returns
        -------
        SpaceSaving
            An empty summary.

        Raises
        ------
        ValueError
            If ``epsilon`` is not in ``(0, 1)``.

        Examples
        --------
        >>> SpaceSaving.from_error(0.001).k
        1000
        """
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 < epsilon < 1:
            raise ValueError(f"epsilon must be a float in (0, 1), got {epsilon!r}")
        return cls(int(np.ceil(1 / epsilon - 1e-9)), seed=seed)

    @property
    def k(self) -> int:
        """Maximum number of monitored items."""
        return self._k

    @property
    def seed(self) -> int:
        """Hash seed."""
        return self._seed

    @property
    def total(self) -> int:
        """Sum of all counts added (``N``)."""
        return self._total

    def __len__(self) -> int:
        return len(self._hashes)

    def _fill(self) -> int:
        """Upper bound on an unmonitored item's count: the smallest counter if full, else 0."""
        return int(self._counts.min()) if len(self._counts) >= self._k else 0

    def _set_state(self, summary: _Summary, items: dict[int, Any]) -> None:
        self._hashes, self._counts, self._errors = summary
        self._slots: dict[int, int] = {h: i for i, h in enumerate(self._hashes.tolist())}
        self._items: dict[int, Any] = items

    def _sorted_summary(self) -> _Summary:
        order = np.argsort(self._hashes)
        return self._hashes[order], self._counts[order], self._errors[order]

    def add(self, item: Item, count: int = 1) -> None:
        """Add ``count`` occurrences of ``item`` (classic SpaceSaving step).

        Parameters
        ----------
        item : str, bytes or int
            The item.
        count : int, default 1
            Non-negative number of occurrences.

        Raises
        ------
        TypeError
            If the item cannot be hashed or ``count`` is not an int.
        ValueError
            If ``count`` is negative.
        OverflowError
            If ``total`` would exceed ``2**63 - 1``.
        """
        count = _check_count(count)
        h = hash64(item, self._seed)
        self._total = checked_total(self._total, None, count)
        if count == 0:
            return
        slot = self._slots.get(h)
        if slot is not None:
            self._counts[slot] += count
        elif len(self._hashes) < self._k:
            self._hashes = np.append(self._hashes, np.uint64(h))
            self._counts = np.append(self._counts, np.int64(count))
            self._errors = np.append(self._errors, np.int64(0))
            self._slots[h] = len(self._hashes) - 1
            self._items[h] = _plain(item)
        else:
            self._replace_min(h, _plain(item), count)

    def _replace_min(self, h: int, item: Any, count: int) -> None:
        low = self._counts.min()
        ties = np.flatnonzero(self._counts == low)
        slot = int(ties[np.argmax(self._hashes[ties])])  # canonical last: smallest count, largest hash
        old = int(self._hashes[slot])
        del self._slots[old], self._items[old]
        self._hashes[slot], self._counts[slot], self._errors[slot] = h, low + count, low
        self._slots[h] = slot
        self._items[h] = item

    def update(self, items: Items, counts: Any = None) -> None:
        """Add a batch of items, each with count 1 or with its entry of ``counts``.

        Parameters
        ----------
        items : sequence of str/bytes/int, or numpy integer array
            The items.
        counts : array-like of int, optional
            Non-negative counts, same length as ``items``.

        Raises
        ------
        TypeError
            If an item cannot be hashed or ``counts`` are not integers.
        ValueError
            If ``counts`` has another length or a negative entry.
        OverflowError
            If ``total`` would exceed ``2**63 - 1``; the summary is then unchanged.

        Notes
        -----
        Vectorised: the batch is reduced to its exact summary (distinct hashes with summed
        counts, error 0), which is merged into this one by the mergeable-summaries rule: take
        the union; an item missing from this summary gets its fill (smallest counter if
        full, else 0) added to count and error; an item missing from the batch gets 0 (the
        batch summary is exact); keep the ``k`` largest counts (ties: smaller hash).

        So ``update(batch)`` is not bit-identical to ``add`` in a loop, but the guarantees
        hold: counts stay upper bounds, ``count - error`` lower bounds, the counters sum to
        at most ``N`` and every error is at most the smallest counter, hence ``<= N / k``.
        """
        if not isinstance(items, (np.ndarray, list, tuple)):
            items = list(items)
        hashes = hash64_many(items, self._seed)
        weights = None if counts is None else as_counts(counts, len(hashes))
        total = checked_total(self._total, weights, len(hashes))
        batch = _prune(_batch_summary(hashes, weights), self._hashes, self._k)
        merged = _top_k(_combine(self._sorted_summary(), self._fill(), batch, 0), self._k)
        reps = dict(self._items)
        new = [h for h in merged[0].tolist() if h not in reps]
        if new:
            reps.update(zip(new, _representatives(items, hashes, new, self._seed), strict=True))
        self._total = total
        self._set_state(merged, {h: reps[h] for h in merged[0].tolist()})

    def merge(self, other: SpaceSaving) -> None:
        """Merge ``other`` into this summary, in place (Agarwal et al. 2012).

        Parameters
        ----------
        other : SpaceSaving
            A summary with equal ``k`` and ``seed``.

        Raises
        ------
        ValueError
            If the parameters differ or ``other`` is this summary.
        OverflowError
            If the merged total would exceed ``2**63 - 1``.

        Notes
        -----
        Union of the monitored items; an item monitored by only one summary gets the other's
        fill (its smallest counter if full, else 0: a non-full summary is exact) added to
        count and error; the ``k`` largest counts are kept (ties: smaller hash). Counts stay
        upper bounds and ``count - error`` lower bounds of the true count in the combined
        stream; errors are at most ``N / k`` with ``N`` the combined total, because the kept
        counters sum to at most the two inputs' counter sums. The result is symmetric in its
        inputs (up to which item represents a hash) but not equal to feeding one stream after
        the other; where the union holds at most ``k`` items both are exact and equal.
        """
        self._check_mergeable(other, ("k", "seed"))
        if self._total + other._total > INT64_MAX:
            raise OverflowError(f"total count would exceed 2**63 - 1 ({self._total} + {other._total})")
        union = _combine(self._sorted_summary(), self._fill(), other._sorted_summary(), other._fill())
        merged = _top_k(union, self._k)
        reps = {**other._items, **self._items}
        self._total += other._total
        self._set_state(merged, {h: reps[h] for h in merged[0].tolist()})

    def estimate(self, item: Item) -> int:
        """Upper bound on the count of ``item``.

        Parameters
        ----------
        item : str, bytes or int
            The item.

        Returns
        -------
        int
            Its counter if monitored; else the smallest counter if ``k`` items are monitored,
            else 0 (then the summary is exact).
        """
        slot = self._slots.get(hash64(item, self._seed))
        return self._fill() if slot is None else int(self._counts[slot])

    def top(self, n: int | None = None) -> list[tuple[Any, int, int]]:
        """The ``n`` items with the largest counts, as ``(item, count, error)``.

        Parameters
        ----------
        n : int, optional
            How many; all monitored items by default.

        Returns
        -------
        list of (item, int, int)
            Sorted by count descending, ties by hash ascending; ``count - error <= true
            count <= count`` for each.

        Raises
        ------
        ValueError
            If ``n`` is negative.
        """
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0):
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        hashes, counts, errors = _top_k((self._hashes, self._counts, self._errors), self._k)
        stop = len(hashes) if n is None else int(n)
        return [
            (self._items[h], c, e)
            for h, c, e in zip(
                hashes[:stop].tolist(), counts[:stop].tolist(), errors[:stop].tolist(), strict=True
            )
        ]

    def to_bytes(self) -> bytes:
        """Compact versioned bytes: items (re-hashed on load) and counters in minimal width.

        Returns
        -------
        bytes
            Record readable by ``from_bytes``.
        """
        hashes, counts, errors = _top_k((self._hashes, self._counts, self._errors), self._k)
        peak = int(counts[0]) if len(counts) else 0
        size = next(s for s in (1, 2, 4, 8) if s == 8 or peak < 2 ** (8 * s))
        payload = b"".join(
            (
                _HEAD.pack(self._total, len(hashes), size),
                counts.astype(_DTYPES[size]).tobytes(),
                errors.astype(_DTYPES[size]).tobytes(),
                encode_items([self._items[h] for h in hashes.tolist()]),
            )
        )
        return _CODEC.dump((self._k, self._seed), payload)

    @classmethod
    def from_bytes(cls, data: bytes) -> SpaceSaving:
        """Rebuild a summary from ``to_bytes`` output.

        Parameters
        ----------
        data : bytes
            A SpaceSaving record.

        Returns
        -------
        SpaceSaving
            The summary.

        Raises
        ------
        ValueError
            If the bytes are not a valid SpaceSaving record (corrupt, truncated, foreign, or
            with counters that break the summary's invariants).
        """
        (k, seed), payload = _CODEC.load(data)
        sketch = cls(k, seed=seed)
        if len(payload) < _HEAD.size:
            raise ValueError("corrupt SpaceSaving bytes: payload too short")
        total, m, size = _HEAD.unpack_from(payload)
        end = _HEAD.size + 2 * m * size if size in _DTYPES else -1
        if m > k or end < 0 or len(payload) < end:
            raise ValueError(f"corrupt SpaceSaving bytes: {m} items with counter size {size}")
        cells = np.frombuffer(payload, dtype=_DTYPES[size], count=2 * m, offset=_HEAD.size).astype(np.int64)
        try:
            items = decode_items(payload[end:])
        except (KeyError, TypeError, ValueError) as exc:  # malformed tags inside valid JSON
            raise ValueError(f"corrupt SpaceSaving bytes: bad item block ({exc!r})") from exc
        if len(items) != m:
            raise ValueError(f"corrupt SpaceSaving bytes: {len(items)} items for {m} counters")
        try:
            hashes = hash64_many(items, seed)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"corrupt SpaceSaving bytes: {exc}") from exc
        summary = (hashes, cells[:m], cells[m:])
        _check_summary(summary, k, int(total))
        sketch._total = int(total)
        sketch._set_state(summary, dict(zip(hashes.tolist(), items, strict=True)))
        return sketch

    def __repr__(self) -> str:
        return f"SpaceSaving(k={self._k}, seed={self._seed}, monitored={len(self)}, total={self._total})"


def _check_summary(summary: _Summary, k: int, total: int) -> None:
    """Raise ``ValueError`` unless the decoded state satisfies the invariants ``to_bytes`` relies on."""
    hashes, counts, errors = summary
    problem = None
    if total < 0:
        problem = "negative total"
    elif len(counts) and (int(counts.min()) < 1 or int(errors.min()) < 0 or bool((errors > counts).any())):
        problem = "counts must be positive with 0 <= error <= count"
    elif sum(counts.tolist()) > total:
        problem = "counters sum above the total"
    elif len(counts) < k and (sum(counts.tolist()) != total or bool(errors.any())):
        problem = "a summary with fewer than k items must be exact"
    elif len(counts) and int(errors.max()) > int(counts.min()):
        problem = "an error exceeds the smallest counter"
    elif not np.array_equal(np.lexsort((hashes, -counts)), np.arange(len(counts))) or len(
        np.unique(hashes)
    ) != len(hashes):
        problem = "items are not distinct or not in canonical order"
    if problem:
        raise ValueError(f"corrupt SpaceSaving bytes: {problem}")
