"""DGIM (Datar-Gionis-Indyk-Motwani) count of ones in a sliding window of a bit stream."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from sketches._base import Sketch
from sketches._format import Codec

__all__ = ["DGIM"]

# params: window, r, position (bits seen), merge depth
_CODEC: Final = Codec("DGIM", version=1, params="<QIQH")
_MAX_WINDOW: Final = 2**62
_MAX_R: Final = 2**16

Runs = list[tuple[int, int]]  # (timestamp, multiplicity), oldest first


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
    return int(value)


def _pair_up(queue: list[int], incoming: Runs, r: int) -> tuple[list[int], Runs]:
    """Settle one level: append ``incoming`` to the FIFO ``queue`` and merge its two oldest
    buckets while more than ``r`` remain, as adding them one by one would.

    Returns the buckets left at this level and the carries (newer timestamp of each merged
    pair) for the next level, run-length encoded so that huge equal-timestamp batches are cheap.
    """
    runs: Runs = [(ts, 1) for ts in queue] + incoming
    total = sum(m for _, m in runs)
    merges = 0 if total <= r else (total - r + 1) // 2
    carries: Runs = []
    kept: list[int] = []
    start = 0
    for ts, mult in runs:
        end = start + mult
        paired_end = min(end, 2 * merges)
        if paired_end > start:
            odd = paired_end // 2 - start // 2  # odd indices in [start, paired_end)
            if odd:
                carries.append((ts, odd))
        kept.extend([ts] * (end - max(start, 2 * merges)) if end > 2 * merges else [])
        start = end
    return kept, carries


class DGIM(Sketch):
    """Approximate count of ones among the last ``window`` bits of a stream (DGIM).

    Ones are grouped into buckets whose sizes are powers of two; a bucket keeps only the
    position of its most recent one. There are at most ``r`` buckets of each size: when a
    size reaches ``r + 1`` buckets, its two oldest merge into one of twice the size (keeping
    the newer timestamp). Buckets whose newest one has left the window are dropped. Memory is
    ``O(r log N)`` buckets of ``O(log N)`` bits each, i.e. ``O(r log**2 N)`` bits.

    Parameters
    ----------
    window : int
        Window length ``N`` in bits, ``1 <= window <= 2**62``.
    r : int, default 2
        Maximum number of buckets per size, ``2 <= r <= 65536``; larger is more accurate.

    Raises
    ------
    ValueError
        If a parameter is out of range.

    Notes
    -----
    Estimate. For a query over the last ``last`` bits, let ``B`` (size ``2**k``) be the
    oldest bucket whose timestamp is inside the range and ``S`` the total size of the newer
    buckets. All ones of the newer buckets are inside, none of the older ones, and between 1
    and ``2**k`` of ``B``'s, so the truth ``T`` lies in ``[S + 1, S + 2**k]``
    (``exact_bounds``). ``count`` returns ``S + 2**k - floor(2**k / 2)`` ("all buckets minus
    half the oldest"; exact when ``k = 0``).

    Error bound (for this merge rule). Once a size has merged, its count stays in
    ``[r - 1, r]``: a merge leaves ``r - 1``, arrivals add one, and expiry only removes the
    oldest (largest) buckets. A bucket of size ``2**k`` exists only after every smaller size
    has merged, so each size ``2**j < 2**k`` has at least ``r - 1`` buckets, all newer than
    ``B``: ``S >= (r - 1)(2**k - 1)``. For ``k >= 1`` the error is at most
    ``2**(k-1) - 1`` when ``T = S + 1`` and ``2**(k-1)`` when ``T = S + 2**k``, giving
    relative errors below ``1 / (2 (r - 1))`` and at most ``1 / (r + 1)`` respectively. Hence
    ``|count - T| <= eps(r) * T`` with ``eps(r) = max(1 / (2 (r - 1)), 1 / (r + 1))``:
    ``1/2`` for ``r = 2``, ``1/4`` for ``r = 3`` and ``1 / (r + 1)`` for larger ``r``
    (``error_bound``). The count is exact (0) when no one is in range.

    Merging is defined only for sketches on the same time axis (``merge``): the result counts
    the ones of both streams, with a weaker guarantee stated there.

    Examples
    --------
    >>> import numpy as np
    >>> bits = np.random.default_rng(0).random(50_000) < 0.3
    >>> d = DGIM(window=1000, r=2)
    >>> d.update(bits)
    >>> true = int(bits[-1000:].sum())
    >>> abs(d.count() - true) <= d.error_bound * true
    True
    >>> lo, hi = d.exact_bounds()
    >>> lo <= true <= hi
    True
    """

    __slots__ = ("_depth", "_levels", "_position", "_r", "_window")

    def __init__(self, window: int, r: int = 2) -> None:
        self._window = _check_int("window", window, 1, _MAX_WINDOW)
        self._r = _check_int("r", r, 2, _MAX_R)
        self._position = 0
        self._depth = 0
        # _levels[j]: timestamps of the buckets of size 2**j, oldest first
        self._levels: list[list[int]] = []

    @property
    def window(self) -> int:
        """Window length in bits."""
        return self._window

    @property
    def r(self) -> int:
        """Maximum number of buckets per size."""
        return self._r

    @property
    def position(self) -> int:
        """Number of bits seen so far (the position of the latest bit, 1-based)."""
        return self._position

    @property
    def merge_depth(self) -> int:
        """0 for a sketch fed by ``add``/``update`` only; else the depth of the merge tree."""
        return self._depth

    @property
    def error_bound(self) -> float:
        """Relative error bound ``eps(r) = max(1 / (2 (r - 1)), 1 / (r + 1))`` of ``count``
        for a sketch that was never merged (see the class Notes)."""
        return max(1.0 / (2 * (self._r - 1)), 1.0 / (self._r + 1))

    def _expire(self) -> None:
        cutoff = self._position - self._window
        levels = self._levels
        while levels:
            top = levels[-1]
            while top and top[0] <= cutoff:
                top.pop(0)
            if top:
                return
            levels.pop()

    def _insert_one(self, ts: int) -> None:
        levels = self._levels
        carry = ts
        j = 0
        while True:
            if j == len(levels):
                levels.append([carry])
                return
            level = levels[j]
            level.append(carry)
            if len(level) <= self._r:
                return
            level.pop(0)
            carry = level.pop(0)  # the newer of the two oldest
            j += 1

    def add(self, bit: int | bool) -> None:
        """Append one bit (0/1 or bool) to the stream.

        Raises
        ------
        ValueError
            If ``bit`` is not 0, 1, True or False.
        """
        if bit not in (0, 1) or isinstance(bit, float):
            raise ValueError(f"bit must be 0 or 1, got {bit!r}")
        self._position += 1
        self._expire()
        if bit:
            self._insert_one(self._position)

    def update(self, bits: Sequence[int | bool] | NDArray[np.integer] | NDArray[np.bool_]) -> None:
        """Append a batch of bits; same state as calling ``add`` for each in order.

        Only the ones cost work: the loop runs over the positions of the ones, and expiry is
        applied lazily before each insertion (which removes the same buckets as per-bit expiry).

        Raises
        ------
        ValueError
            If an element is not 0/1.
        """
        arr = np.asarray(bits)
        if arr.size == 0:
            return
        if arr.dtype.kind not in "biu":
            raise ValueError(f"bits must be 0/1 integers or bools, got dtype {arr.dtype}")
        arr = arr.reshape(-1)
        if arr.dtype.kind != "b" and (int(arr.min()) < 0 or int(arr.max()) > 1):
            raise ValueError("bits must be 0 or 1")
        start = self._position
        for offset in np.flatnonzero(arr).tolist():
            self._position = start + offset + 1
            self._expire()
            self._insert_one(self._position)
        self._position = start + arr.size
        self._expire()

    def _touching(self, last: int | None) -> tuple[int, int]:
        """``(S, size of B)`` for the last ``last`` bits (``(0, 0)`` when no bucket is in range)."""
        if last is None:
            last = self._window
        last = _check_int("last", last, 1, self._window)
        cutoff = self._position - last
        total = 0
        for j, level in enumerate(self._levels):
            inside = sum(1 for ts in level if ts > cutoff)
            if inside < len(level) or j == len(self._levels) - 1:
                # the oldest touching bucket is at this level (older levels are all outside)
                if inside == 0:  # B is the oldest bucket of the previous level
                    return (total - (1 << (j - 1)), 1 << (j - 1)) if j else (0, 0)
                return total + (inside - 1) * (1 << j), 1 << j
            total += len(level) << j
        return 0, 0

    def count(self, last: int | None = None) -> int:
        """Estimated number of ones among the last ``last`` bits.

        Parameters
        ----------
        last : int, optional
            Query range, ``1 <= last <= window`` (default ``window``).

        Returns
        -------
        int
            All buckets in range minus half the oldest one (rounded down): within
            ``error_bound * true`` of the truth for a never-merged sketch.

        Raises
        ------
        ValueError
            If ``last`` is out of range.
        """
        newer, size = self._touching(last)
        return newer + size - size // 2

    def exact_bounds(self, last: int | None = None) -> tuple[int, int]:
        """An interval ``(lo, hi)`` guaranteed to contain the true count of the last ``last`` bits.

        ``(S + 1, S + 2**k)`` for a never-merged sketch (class Notes); merged sketches widen
        ``lo`` as stated in ``merge``.

        Raises
        ------
        ValueError
            If ``last`` is out of range.
        """
        newer, size = self._touching(last)
        if size == 0:
            return 0, 0
        lo = newer + 1
        if self._depth:
            num, den = (self._r - 1) ** self._depth, self._r**self._depth
            lo = max(1, -(-lo * num // den))
        return lo, newer + size

    def _all_runs(self) -> Runs:
        return [(ts, 1 << j) for j, level in enumerate(self._levels) for ts in level]

    def merge(self, other: DGIM) -> None:
        """Merge a DGIM of another stream on the same time axis (equal ``window`` and ``r``,
        e.g. two shards of one clock); the result counts the ones of both streams.

        Positions are aligned first: a sketch that is behind is advanced with zeros to the
        later ``position`` (bits it has not seen count as zeros), so merging a fresh sketch
        works. DGIM windows of streams on different time axes are not mergeable, and even
        aligned ones lose resolution: the exact sketch of the summed stream is not
        recoverable from the buckets. The merge treats every bucket of either sketch as all
        its ones arriving at its timestamp and inserts these ones, oldest first, into a fresh
        structure (in ``O(r log N)`` steps, run-length encoded). Merging with a sketch that
        holds no bucket (after alignment) leaves the other unchanged, so the result is not
        bit-identical to feeding one sketch, but it is commutative.

        Guarantee. The surrogate stream never undercounts a range: only the oldest in-range
        bucket of each input can be partial, and it over-counts by less than its size ``s``
        while its input's truth is at least ``(r - 1)(s - 1) + 1``. So for inputs that were
        never merged, the surrogate count ``C`` satisfies ``T <= C < T r / (r - 1)`` for the
        true total ``T``, and ``count`` (a DGIM of the surrogate) lies in
        ``[(1 - eps) T, (1 + eps) T r / (r - 1)]`` with ``eps = error_bound`` (for ``r = 2``:
        between half and three times the truth). Each further level of merging multiplies the
        upper factor by ``r / (r - 1)`` (``merge_depth``); ``exact_bounds`` accounts for it.

        Raises
        ------
        ValueError
            If ``other`` is not a DGIM with equal window and r, or is ``self``.
        """
        self._check_mergeable(other, ("window", "r"))
        position = max(self._position, other._position)
        self._position = position
        self._expire()
        aligned = other.copy()
        aligned._position = position
        aligned._expire()
        if not aligned._levels:
            return
        if not self._levels:
            self._levels, self._depth = aligned._levels, aligned._depth
            return
        carry = sorted(self._all_runs() + aligned._all_runs())
        levels: list[list[int]] = []
        while carry:
            kept, carry = _pair_up([], carry, self._r)
            levels.append(kept)
        self._levels = levels
        self._depth = max(self._depth, aligned._depth) + 1

    def _check(self) -> None:
        """Raise ``ValueError`` naming the first broken structural invariant."""
        levels, r = self._levels, self._r
        if levels and not levels[-1]:
            raise ValueError("DGIM invariant: the largest size has no bucket")
        for j, level in enumerate(levels):
            if len(level) > r:
                raise ValueError(f"DGIM invariant: {len(level)} buckets of size 2**{j}, more than r={r}")
            if j < len(levels) - 1 and len(level) < r - 1:
                raise ValueError(
                    f"DGIM invariant: {len(level)} buckets of size 2**{j} below the largest size"
                )
        ordered = [ts for level in levels for ts in reversed(level)]  # newest to oldest
        sizes = [1 << j for j, level in enumerate(levels) for _ in level]
        strict = self._depth == 0
        for i in range(len(ordered) - 1):
            gap = ordered[i] - ordered[i + 1]
            if gap < (sizes[i] if strict else 0):
                raise ValueError(
                    f"DGIM invariant: bucket timestamps {ordered[i]} then {ordered[i + 1]} are not "
                    "decreasing by at least the newer bucket's size from newest to oldest"
                )
        if ordered:
            if ordered[0] > self._position or ordered[-1] <= self._position - self._window:
                raise ValueError("DGIM invariant: a bucket lies outside the window")
            if ordered[-1] < (sizes[-1] if strict else 1):
                raise ValueError("DGIM invariant: the oldest bucket holds more ones than positions")

    def to_bytes(self) -> bytes:
        """Versioned, checksummed bytes: per-size bucket counts then bucket ages (u32 or u64)."""
        dtype = "<u4" if self._window <= 2**32 else "<u8"
        counts = np.array([len(level) for level in self._levels], dtype="<u1" if self._r < 256 else "<u2")
        ages = np.array([self._position - ts for level in self._levels for ts in level], dtype=dtype)
        payload = struct.pack("<B", len(self._levels)) + counts.tobytes() + ages.tobytes()
        return _CODEC.dump((self._window, self._r, self._position, self._depth), payload)

    @classmethod
    def from_bytes(cls, data: bytes) -> DGIM:
        """Rebuild a sketch from ``to_bytes`` output.

        Raises
        ------
        ValueError
            If ``data`` is not a valid DGIM record or breaks an invariant.
        """
        (window, r, position, depth), payload = _CODEC.load(data)
        sketch = cls(window, r)
        sketch._position, sketch._depth = int(position), int(depth)
        if not payload:
            raise ValueError("corrupt DGIM bytes: empty payload")
        nlevels = payload[0]
        width = 1 if r < 256 else 2
        head = 1 + nlevels * width
        if len(payload) < head:
            raise ValueError("corrupt DGIM bytes: truncated bucket counts")
        counts = np.frombuffer(payload, dtype="<u1" if width == 1 else "<u2", count=nlevels, offset=1)
        itemsize = 4 if window <= 2**32 else 8
        if len(payload) != head + itemsize * int(counts.sum()):
            raise ValueError("corrupt DGIM bytes: payload length does not match the bucket counts")
        ages = np.frombuffer(payload, dtype=f"<u{itemsize}", offset=head).tolist()
        levels, i = [], 0
        for c in counts.tolist():
            levels.append([position - age for age in ages[i : i + c]])
            i += c
        sketch._levels = levels
        sketch._check()
        return sketch

    def __repr__(self) -> str:
        return f"DGIM(window={self._window}, r={self._r}, position={self._position}, buckets={self._n()})"

    def _n(self) -> int:
        return sum(len(level) for level in self._levels)
