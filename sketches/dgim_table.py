"""Many DGIM counters (one per entity) in one numpy array, updated vectorised across entities.

A :class:`DGIMTable` holds, per row, exactly the state of a :class:`sketches.DGIM` with the
same ``window`` and ``r`` fed the same bits (``add``/``update`` only, never merged): the same
buckets, hence bit-for-bit the same ``count`` and ``exact_bounds``. It exists for detectors
that keep one small DGIM per entity (cards, devices): instead of one Python object and one
Python call per event, a batch of events of many entities is applied in a few numpy rounds.

Representation. For ``window <= 64`` a row's buckets are ``levels`` bit masks, one per bucket
size ``2**j``: bit ``a`` of mask ``j`` is set when a bucket of size ``2**j`` has its most
recent one ``a`` bits ago (its *age*; the DGIM timestamp is ``position - a``). Every DGIM
timestamp is distinct and inside the window (age ``< window``), so a mask needs ``window``
bits and a row needs no position counter: appending a bit shifts all masks left by one, which
also expires the buckets that leave the window. Merging the two oldest buckets of size
``2**j`` clears the highest set bit of mask ``j`` and moves the next-highest one to mask
``j + 1``. A bucket of size ``2**k`` needs at least ``(r - 1)(2**k - 1)`` ones in newer
buckets, all inside the window, so ``k <= log2(window)``: ``levels = window.bit_length()``.

>>> from sketches import DGIM
>>> table = DGIMTable(window=10, r=2, size=3)
>>> rows = np.array([0, 1, 0, 0, 2, 0])
>>> bits = np.array([1, 1, 1, 0, 1, 1], dtype=bool)
>>> estimate, lo, hi = table.add(rows, bits)
>>> estimate.tolist()  # after each 1-bit (-1 at 0-bits)
[1, 1, 2, -1, 1, 2]
>>> d = DGIM(10, 2)
>>> d.update([1, 1, 0, 1])
>>> (d.count(), d.exact_bounds()) == (int(table.count()[0]), tuple(table.exact_bounds()[0]))
True
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

try:
    from sketches import _chash
except ImportError:  # pragma: no cover - built without a C compiler: numpy rounds
    _chash = None  # type: ignore[assignment]

__all__ = ["DGIMTable"]

MAX_WINDOW: Final = 64
"""Largest window a :class:`DGIMTable` supports (one 64-bit mask per bucket size)."""

_MAX_R: Final = 2**16

U64 = NDArray[np.uint64]
I64 = NDArray[np.int64]
IntArray = NDArray[np.intp]
BoolArray = NDArray[np.bool_]


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
    return int(value)


class DGIMTable:
    """Rows of DGIM counters over the last ``window`` bits, updated vectorised across rows.

    Parameters
    ----------
    window : int
        Window length ``N`` in bits, ``1 <= window <= 64``.
    r : int, default 2
        Maximum number of buckets per size, ``2 <= r <= 65536``.
    size : int, default 0
        Number of rows, all empty (no ones seen).
    masks : ndarray, optional
        Initial state, shape ``(rows, levels)`` of unsigned integers (as returned by
        :attr:`masks`); overrides ``size``.

    Raises
    ------
    ValueError
        If a parameter is out of range or ``masks`` has the wrong shape or holds bits outside
        the window.

    Notes
    -----
    Every row behaves exactly as a :class:`sketches.DGIM` ``(window, r)`` fed the same bits
    (see the module docstring for the representation), so ``count`` and ``exact_bounds`` carry
    DGIM's guarantees. :meth:`add` runs event by event in the C extension (a few ns per event);
    without it, a few numpy operations per *round*, where round ``i`` applies the ``i``-th 1-bit
    of every row that has one (many rows with a few events each are cheap, one row with many
    events degenerates towards per-event work). Both give the same state and outputs.

    Examples
    --------
    >>> table = DGIMTable(window=4, r=2, size=2)
    >>> _ = table.add(np.array([0, 0, 0, 1]), np.array([1, 1, 1, 1], dtype=bool))
    >>> table.count().tolist(), table.exact_bounds().tolist()
    ([2, 1], [[2, 3], [1, 1]])
    >>> _ = table.add(np.array([0, 0, 0, 0]), np.zeros(4, dtype=bool))
    >>> table.count().tolist()  # all ones of row 0 left the window
    [0, 1]
    """

    __slots__ = ("_full", "_levels", "_masks", "_r", "_sizes", "_window")

    def __init__(
        self, window: int, r: int = 2, size: int = 0, masks: NDArray[np.unsignedinteger] | None = None
    ) -> None:
        self._window = _check_int("window", window, 1, MAX_WINDOW)
        self._r = _check_int("r", r, 2, _MAX_R)
        self._levels = self._window.bit_length()
        self._full = np.uint64((1 << self._window) - 1)
        self._sizes: I64 = np.left_shift(np.int64(1), np.arange(self._levels, dtype=np.int64))
        if masks is None:
            self._masks: U64 = np.zeros((_check_int("size", size, 0, 2**62), self._levels), dtype=np.uint64)
        else:
            arr = np.asarray(masks)
            if arr.ndim != 2 or arr.shape[1] != self._levels or arr.dtype.kind != "u":
                raise ValueError(
                    f"masks must be unsigned, shape (rows, {self._levels}), got {arr.dtype} {arr.shape}"
                )
            self._masks = arr.astype(np.uint64, order="C")  # the C kernel needs rows contiguous
            if np.any(self._masks & ~self._full):
                raise ValueError("masks hold buckets outside the window")

    @staticmethod
    def levels_for(window: int) -> int:
        """Number of bucket sizes (``window.bit_length()``), the width of :attr:`masks`."""
        return _check_int("window", window, 1, MAX_WINDOW).bit_length()

    @property
    def window(self) -> int:
        """Window length in bits."""
        return self._window

    @property
    def r(self) -> int:
        """Maximum number of buckets per size."""
        return self._r

    @property
    def levels(self) -> int:
        """Number of bucket sizes ``2**0 .. 2**(levels - 1)``."""
        return self._levels

    @property
    def masks(self) -> U64:
        """The state, shape ``(rows, levels)``: bit ``a`` of ``masks[i, j]`` is a bucket of size
        ``2**j`` whose most recent one is ``a`` bits old (a view; writes change the table)."""
        return self._masks

    @property
    def error_bound(self) -> float:
        """Relative error bound of ``count``, as :attr:`sketches.DGIM.error_bound`."""
        return max(1.0 / (2 * (self._r - 1)), 1.0 / (self._r + 1))

    def __len__(self) -> int:
        return len(self._masks)

    # -- queries ---------------------------------------------------------------------------------

    def _total_and_top(self, masks: U64) -> tuple[I64, I64]:
        """Per row: total size of all buckets and size of the oldest (largest) one (0 if none)."""
        counts = np.bitwise_count(masks).astype(np.int64)
        total: I64 = counts @ self._sizes
        nonzero = masks != 0
        top = self._levels - 1 - np.argmax(nonzero[:, ::-1], axis=1)
        top_size: I64 = np.where(nonzero.any(axis=1), self._sizes[top], 0)
        return total, top_size

    def count(self, rows: IntArray | slice | None = None) -> I64:
        """Estimated number of ones among the last ``window`` bits of each row.

        Parameters
        ----------
        rows : int array or slice, optional
            Rows to query (default all).

        Returns
        -------
        ndarray of int64
            All buckets minus half the oldest one, as :meth:`sketches.DGIM.count`.
        """
        total, top = self._total_and_top(self._masks[slice(None) if rows is None else rows])
        out: I64 = total - top // 2
        return out

    def exact_bounds(self, rows: IntArray | slice | None = None) -> I64:
        """Per row ``(lo, hi)`` containing the true count, as :meth:`sketches.DGIM.exact_bounds`.

        Returns
        -------
        ndarray of int64, shape (rows, 2)
            ``(0, 0)`` for a row with no bucket.
        """
        total, top = self._total_and_top(self._masks[slice(None) if rows is None else rows])
        lo = np.where(top > 0, total - top + 1, 0)
        out: I64 = np.stack([lo, total], axis=1)
        return out

    # -- updates ---------------------------------------------------------------------------------

    def _highest_bit(self, x: U64) -> U64:
        """The highest set bit of each (nonzero) value."""
        s = 1
        while s < self._window:
            x = x | (x >> np.uint64(s))
            s *= 2
        out: U64 = x ^ (x >> np.uint64(1))
        return out

    def _shift(self, m: U64, by: U64) -> None:
        """Append ``by`` zero bits to the rows of ``m`` (in place; ``by`` per row)."""
        m <<= np.minimum(by, np.uint64(63))[:, None]
        m &= self._full
        m[by >= np.uint64(self._window)] = 0

    def _push_one(self, m: U64) -> None:
        """Append one 1-bit to every row of ``m`` whose masks were already shifted (in place)."""
        m[:, 0] |= np.uint64(1)
        over = np.bitwise_count(m[:, 0]) > self._r
        j = 0
        while over.any():
            # merge the two oldest buckets of size 2**j: drop the oldest, carry the newer one
            idx = np.flatnonzero(over)
            level = m[idx, j]
            level ^= self._highest_bit(level)
            carry = self._highest_bit(level)
            m[idx, j] = level ^ carry
            m[idx, j + 1] |= carry
            j += 1
            over = np.zeros(len(m), dtype=np.bool_)
            over[idx] = np.bitwise_count(m[idx, j]) > self._r

    def add(self, rows: IntArray, bits: BoolArray, reset: BoolArray | None = None) -> tuple[I64, I64, I64]:
        """Append one bit per event to its row, events applied in input order.

        Parameters
        ----------
        rows : int array
            Row of each event (repeats allowed).
        bits : bool array
            The bit of each event.
        reset : bool array, optional
            Per event: empty the row (as a fresh ``DGIM``) just before applying the event's bit.

        Returns
        -------
        estimate, lo, hi : ndarray of int64
            Per event, ``count()`` and ``exact_bounds()`` of its row right after a 1-bit; ``-1``
            at 0-bits (not computed).

        Raises
        ------
        ValueError
            If the arrays differ in length or a row is out of range.

        Examples
        --------
        >>> t = DGIMTable(window=8, r=2, size=1)
        >>> est, lo, hi = t.add(np.zeros(6, dtype=np.intp), np.array([1, 1, 1, 1, 1, 1], dtype=bool))
        >>> est.tolist(), lo.tolist(), hi.tolist()
        ([1, 2, 2, 3, 4, 5], [1, 2, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6])
        """
        rows = np.asarray(rows, dtype=np.intp)
        bits = np.asarray(bits, dtype=np.bool_)
        n = len(rows)
        if len(bits) != n or (reset is not None and len(reset) != n):
            raise ValueError("rows, bits and reset must have the same length")
        estimate = np.full(n, -1, dtype=np.int64)
        lo, hi = estimate.copy(), estimate.copy()
        if n == 0:
            return estimate, lo, hi
        if rows.min() < 0 or rows.max() >= len(self._masks):
            raise ValueError(f"rows must be in [0, {len(self._masks)})")
        if _chash is not None:
            resets = None if reset is None else np.ascontiguousarray(reset, dtype=np.bool_)
            _chash.dgim_add(
                self._masks,
                np.ascontiguousarray(rows),
                np.ascontiguousarray(bits),
                resets,
                self._window,
                self._r,
                estimate,
                lo,
                hi,
            )
            return estimate, lo, hi
        return self._add_rounds(rows, bits, reset, estimate, lo, hi)

    def _add_rounds(
        self, rows: IntArray, bits: BoolArray, reset: BoolArray | None, estimate: I64, lo: I64, hi: I64
    ) -> tuple[I64, I64, I64]:
        """:meth:`add` in numpy rounds (without the C extension; the reference of its tests)."""
        n = len(rows)
        # group the events by row, input order kept within a row
        if n == 1 or bool(np.all(rows[1:] >= rows[:-1])):
            order = np.arange(n)  # already grouped (e.g. rows = group ids of a grouped batch)
        else:
            order = np.argsort(rows, kind="stable")
        srows = rows[order]
        sbits = bits[order]
        first = np.ones(n, dtype=np.bool_)
        np.not_equal(srows[1:], srows[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        ends = np.append(starts[1:], n)
        gid = np.cumsum(first) - 1
        resets_upto = np.zeros(n + 1, dtype=np.int64)  # resets among sorted events [0, i)
        if reset is not None:
            np.cumsum(np.asarray(reset, dtype=np.bool_)[order], out=resets_upto[1:])
        ones = np.flatnonzero(sbits)
        ngroups = len(starts)
        # previous 1-bit of the same row (or the event before the row's first)
        prev_one = np.empty(len(ones), dtype=np.intp)
        if len(ones):
            prev_one[0] = starts[gid[ones[0]]] - 1
            same = gid[ones[1:]] == gid[ones[:-1]]
            prev_one[1:] = np.where(same, ones[:-1], starts[gid[ones[1:]]] - 1)
        shift = (ones - prev_one).astype(np.uint64)
        clear = resets_upto[ones + 1] > resets_upto[prev_one + 1]
        # rows sorted by number of ones, descending: round i works on a prefix
        ones_per = np.bincount(gid[ones], minlength=ngroups)
        # (a stable sort of small integers is a radix sort)
        small = bool(ngroups) and int(ones_per.max()) < 2**15
        neg = np.negative(ones_per, dtype=np.int16 if small else np.int64)
        local = np.argsort(neg, kind="stable")
        rank_of_group = np.empty(ngroups, dtype=np.intp)
        rank_of_group[local] = np.arange(ngroups)
        m = self._masks[srows[starts[local]]]
        if len(ones):
            one_rank = np.arange(len(ones)) - np.searchsorted(gid[ones], gid[ones])
            by_round = np.lexsort((rank_of_group[gid[ones]], one_rank))
            bounds = np.searchsorted(one_rank[by_round], np.arange(int(one_rank.max()) + 2))
            for i in range(len(bounds) - 1):
                sel = by_round[bounds[i] : bounds[i + 1]]
                k = len(sel)
                part = m[:k]
                c = clear[sel]
                if c.any():
                    part[c] = 0
                self._shift(part, shift[sel])
                self._push_one(part)
                total, top = self._total_and_top(part)
                events = order[ones[sel]]
                estimate[events] = total - top // 2
                lo[events] = total - top + 1
                hi[events] = total
        # trailing zeros (and resets) after each row's last 1-bit
        last_one = starts - 1
        if len(ones):
            is_last = np.ones(len(ones), dtype=np.bool_)
            np.not_equal(gid[ones[1:]], gid[ones[:-1]], out=is_last[:-1])
            last_one[gid[ones[is_last]]] = ones[is_last]
        trail = (ends - 1 - last_one)[local].astype(np.uint64)
        cleared = (resets_upto[ends] > resets_upto[last_one + 1])[local]
        m[cleared] = 0
        self._shift(m, trail)
        self._masks[srows[starts[local]]] = m
        return estimate, lo, hi
