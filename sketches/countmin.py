"""Count-Min sketch: frequency estimates with a one-sided additive error, mergeable and vectorised.

>>> from sketches.countmin import CountMinSketch
>>> cms = CountMinSketch(width=1000, depth=4, seed=1)
>>> cms.update(["a", "b", "a"])
>>> cms.estimate("a")
2
"""

from __future__ import annotations

import math
import struct
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from sketches._base import Sketch
from sketches._format import Codec
from sketches.hashing import Item, Items, check_seed, hash64, hash64_many, probe_indices, probe_indices_one

try:
    from sketches import _chash
except ImportError:  # pragma: no cover - built without a C compiler: the numpy path
    _chash = None  # type: ignore[assignment]

__all__ = ["CountMinSketch"]

INT64_MAX: Final = 2**63 - 1
_MAX_WIDTH: Final = 2**32 - 1
_MAX_DEPTH: Final = 255
_CODEC: Final = Codec("CountMinSketch", version=1, params="<IBIB")
_TOTAL: Final = struct.Struct("<qB")  # total, bytes per stored counter
_DTYPES: Final[dict[int, str]] = {1: "<u1", 2: "<u2", 4: "<u4", 8: "<i8"}
_CHUNK: Final = 1 << 15
_EXACT_FLOAT: Final = 2**53  # below this, float64 sums of non-negative ints are exact


def _check_size(name: str, value: object, upper: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= upper:
        raise ValueError(f"{name} must be a positive int <= {upper}, got {value!r}")
    return int(value)


def _check_count(count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise TypeError(f"count must be an int, got {type(count).__name__}")
    if not 0 <= int(count) <= INT64_MAX:
        raise ValueError(f"count must be a non-negative int64, got {count!r}")
    return int(count)


def as_counts(counts: Any, n: int) -> NDArray[np.int64]:
    """Validate per-item ``counts`` for a batch of ``n`` items; return them as ``int64``.

    Raises ``TypeError`` for non-integer counts and ``ValueError`` for a length mismatch,
    negative counts (the cash-register model) or counts beyond int64.
    """
    arr = np.asarray(counts)
    if arr.ndim != 1:
        raise TypeError(f"counts must be a 1-d sequence of ints, got shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"counts must have the same length as items ({n}), got {len(arr)}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind in "fO" and all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        # a list of Python ints beyond int64 turns into float or object arrays
        raise ValueError("counts must be non-negative int64 values, got an int out of that range")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"counts must be ints, got dtype {arr.dtype}")
    if arr.dtype.kind == "i" and int(arr.min()) < 0:
        raise ValueError(f"counts must be non-negative, got {int(arr.min())}")
    if arr.dtype.kind == "u" and int(arr.max()) > INT64_MAX:
        raise ValueError(f"counts must fit in int64, got {int(arr.max())}")
    return arr.astype(np.int64, copy=False)


def checked_total(total: int, counts: NDArray[np.int64] | None, n: int) -> int:
    """Return ``total`` plus the batch sum, or raise ``OverflowError`` past ``2**63 - 1``."""
    if counts is None:
        added = n
    elif counts.size and int(counts.max()) * counts.size > INT64_MAX:
        added = sum(int(c) for c in counts)  # rare: an int64 sum could wrap, so sum exactly
    else:
        added = int(counts.sum())
    if total + added > INT64_MAX:
        raise OverflowError(f"total count would exceed 2**63 - 1 ({total} + {added})")
    return total + added


class CountMinSketch(Sketch):
    """Count-Min sketch (Cormode & Muthukrishnan 2005) for non-negative counts.

    ``depth`` rows of ``width`` int64 counters; an item adds its count to one counter per
    row, chosen by ``probe_indices(hash64(item, seed), depth, width)``, and its estimate is
    the minimum of its counters.

    Error guarantee, with ``N = total`` (sum of all counts), ``epsilon = e / width`` and
    ``delta = e ** -depth``: for every item ``x``, ``estimate(x) >= count(x)`` always, and
    ``estimate(x) <= count(x) + epsilon * N`` with probability at least ``1 - delta``.

    Parameters
    ----------
    width : int
        Counters per row, in ``[1, 2**32)``.
    depth : int
        Number of rows, in ``[1, 255]``.
    seed : int, default 0
        Hash seed in ``[0, 2**32)``; sketches merge only with equal seeds.
    conservative : bool, default False
        Conservative update (Estan & Varghese 2002): raise an item's counters only as far as
        needed. Estimates are never above the plain sketch's and still never below the
        truth, but ``update(batch)`` differs from sequential ``add`` and ``merge`` gives an
        upper bound (see ``update`` and ``merge``).

    Raises
    ------
    ValueError
        If a parameter is out of range.

    Notes
    -----
    The sketch follows the cash-register model: counts are non-negative. Counters are int64
    and never wrap: adding past ``total == 2**63 - 1`` raises ``OverflowError``. The bytes
    store each counter in the fewest of 1, 2, 4 or 8 bytes that hold the largest one.

    Examples
    --------
    >>> import numpy as np
    >>> cms = CountMinSketch.from_error(epsilon=0.01, delta=0.01, seed=3)
    >>> keys = np.random.default_rng(0).integers(0, 500, size=20_000)
    >>> cms.update(keys)
    >>> exact = np.bincount(keys, minlength=500)
    >>> est = cms.estimate_many(np.arange(500))
    >>> bool((est >= exact).all()), bool((est - exact <= cms.error_bound()).mean() >= 0.99)
    (True, True)
    """

    __slots__ = ("_conservative", "_counters", "_depth", "_seed", "_total", "_width")

    def __init__(self, width: int, depth: int, seed: int = 0, conservative: bool = False) -> None:
        self._width = _check_size("width", width, _MAX_WIDTH)
        self._depth = _check_size("depth", depth, _MAX_DEPTH)
        self._seed = check_seed(seed)
        if not isinstance(conservative, (bool, np.bool_)):
            raise ValueError(f"conservative must be a bool, got {conservative!r}")
        self._conservative = bool(conservative)
        self._counters: NDArray[np.int64] = np.zeros((self._depth, self._width), dtype=np.int64)
        self._total = 0

    @classmethod
    def from_error(
        cls, epsilon: float, delta: float, seed: int = 0, conservative: bool = False
    ) -> CountMinSketch:
        """Size a sketch for additive error ``epsilon * N`` with failure probability ``delta``.

        Parameters
        ----------
        epsilon : float
            Relative additive error, in ``(0, 1)``: ``width = ceil(e / epsilon)``.
        delta : float
            Failure probability per query, in ``(0, 1)``: ``depth = ceil(ln(1 / delta))``.
        seed : int, default 0
            Hash seed.
        conservative : bool, default False
            Use conservative update.

        Returns
        -------
        CountMinSketch
            An empty sketch.

        Raises
        ------
        ValueError
            If ``epsilon`` or ``delta`` is not in ``(0, 1)`` or gives a size out of range.

        Examples
        --------
        >>> s = CountMinSketch.from_error(0.001, 0.01)
        >>> s.width, s.depth
        (2719, 5)
        """
        for name, value in (("epsilon", epsilon), ("delta", delta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ValueError(f"{name} must be a float in (0, 1), got {value!r}")
        width = math.ceil(math.e / epsilon)
        depth = max(1, math.ceil(math.log(1 / delta)))
        return cls(width, depth, seed=seed, conservative=conservative)

    @property
    def width(self) -> int:
        """Counters per row."""
        return self._width

    @property
    def depth(self) -> int:
        """Number of rows."""
        return self._depth

    @property
    def seed(self) -> int:
        """Hash seed."""
        return self._seed

    @property
    def conservative(self) -> bool:
        """Whether updates are conservative."""
        return self._conservative

    @property
    def total(self) -> int:
        """Sum of all counts added (``N``)."""
        return self._total

    @property
    def epsilon(self) -> float:
        """Relative additive error ``e / width``."""
        return math.e / self._width

    @property
    def delta(self) -> float:
        """Probability ``e ** -depth`` that one estimate exceeds ``count + epsilon * N``."""
        return math.exp(-self._depth)

    def error_bound(self) -> float:
        """Additive error ``epsilon * total`` that an estimate exceeds with probability <= ``delta``."""
        return self.epsilon * self._total

    def _rows(self, hashes: NDArray[np.uint64]) -> NDArray[np.intp]:
        """Flat counter indices, shape ``(n, depth)``: row ``r`` of item ``i`` at ``r * width + col``."""
        # Positions are < depth * width < 2**40, so the uint64 result views as intp without a copy.
        return probe_indices(hashes, self._depth, self._width, flat=True).view(np.intp)

    def _cells(self, item: Item) -> list[int]:
        """Flat counter indices of one item: ``probe_indices`` in scalar Python (numpy is slow for one)."""
        cols = probe_indices_one(hash64(item, self._seed), self._depth, self._width)
        return [r * self._width + col for r, col in enumerate(cols)]

    def add(self, item: Item, count: int = 1) -> None:
        """Add ``count`` occurrences of ``item``.

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
        flat = self._cells(item)
        self._total = checked_total(self._total, None, count)
        cells = self._counters.reshape(-1)
        if self._conservative:
            target = min(int(cells[i]) for i in flat) + count
            for i in flat:
                cells[i] = max(int(cells[i]), target)
        else:
            for i in flat:
                cells[i] += count

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
            If ``total`` would exceed ``2**63 - 1``; the sketch is then unchanged.

        Notes
        -----
        Plain mode: the result is bit-identical to calling ``add`` for each item in order
        (counter addition commutes).

        Conservative mode: the batch is first aggregated per distinct item (weight ``w_x``);
        with ``est(x)`` the minimum of ``x``'s counters *before* the batch, every counter
        ``c`` of ``x`` becomes ``max(c, est(x) + w_x)`` (``np.maximum.at``). The result does not
        depend on the order of items within the batch, so it may differ from sequential
        ``add`` (which sees earlier items' raises). Both invariants still hold:

        * Never an underestimate. By induction ``est(x) >= count(x)`` before the batch, so
          each counter of ``x`` ends ``>= count(x) + w_x``, the new true count; items not in
          the batch keep their counters or see them rise.
        * Never above the plain sketch ``P`` fed the same stream. By induction ``C <= P``
          cell-wise before the batch. For a cell ``c`` hit by ``x``,
          ``est(x) <= C[c] <= P[c]`` (``c`` is one of ``x``'s cells), so
          ``est(x) + w_x <= P[c] + sum of w_y over all y hitting c``, the plain update's new
          ``P[c]``; and ``C[c] <= P[c]`` too, so the maximum stays below it.
        """
        hashes = hash64_many(items, self._seed)
        weights = None if counts is None else as_counts(counts, len(hashes))
        self._total = checked_total(self._total, weights, len(hashes))
        if len(hashes) == 0:
            return
        if self._conservative:
            self._update_conservative(hashes, weights)
        else:
            self._update_plain(hashes, weights)

    def _update_plain(self, hashes: NDArray[np.uint64], weights: NDArray[np.int64] | None) -> None:
        if self._in_c():  # one pass, no (n, depth) index block: ~9x faster
            counts = None if weights is None else np.ascontiguousarray(weights)
            _chash.cms_add(np.ascontiguousarray(hashes), self._depth, self._width, self._counters, counts)
            return
        # Chunks keep the (n, depth) index block in cache; counter addition commutes.
        for start in range(0, hashes.size, _CHUNK):
            part = slice(start, start + _CHUNK)
            self._add_plain(hashes[part], None if weights is None else weights[part])

    def _add_plain(self, hashes: NDArray[np.uint64], weights: NDArray[np.int64] | None) -> None:
        flat = self._rows(hashes).reshape(-1)
        cells = self._counters.reshape(-1)
        if flat.size * 8 < cells.size:  # small batch: avoid a full-size bincount
            np.add.at(cells, flat, 1 if weights is None else np.repeat(weights, self._depth))
        elif weights is None:
            cells += np.bincount(flat, minlength=cells.size)
        elif int(weights.sum(dtype=np.float64)) < _EXACT_FLOAT:
            # float64 bincount is exact while every partial sum stays below 2**53
            cells += np.bincount(flat, weights=np.repeat(weights, self._depth), minlength=cells.size).astype(
                np.int64
            )
        else:
            np.add.at(cells, flat, np.repeat(weights, self._depth))

    def _update_conservative(self, hashes: NDArray[np.uint64], weights: NDArray[np.int64] | None) -> None:
        uniq, inverse = np.unique(hashes, return_inverse=True)
        summed = np.zeros(len(uniq), dtype=np.int64)
        np.add.at(summed, inverse, 1 if weights is None else weights)
        flat = self._rows(uniq)
        cells = self._counters.reshape(-1)
        target = cells[flat].min(axis=1) + summed
        np.maximum.at(cells, flat.reshape(-1), np.repeat(target, self._depth))

    def estimate(self, item: Item) -> int:
        """Estimated count of ``item``: never below it, above by ``<= epsilon * N`` w.p. ``1 - delta``.

        Parameters
        ----------
        item : str, bytes or int
            The item.

        Returns
        -------
        int
            The minimum of the item's counters.
        """
        cells = self._counters.reshape(-1)
        return min(int(cells[i]) for i in self._cells(item))

    def estimate_many(self, items: Items) -> NDArray[np.int64]:
        """Estimates for a batch of items (vectorised ``estimate``).

        Parameters
        ----------
        items : sequence of str/bytes/int, or numpy integer array
            The items.

        Returns
        -------
        numpy.ndarray of int64
            One estimate per item.
        """
        hashes = hash64_many(items, self._seed)
        if len(hashes) == 0:
            return np.zeros(0, dtype=np.int64)
        est: NDArray[np.int64]
        if self._in_c():
            est = np.empty(len(hashes), dtype=np.int64)
            _chash.cms_min(np.ascontiguousarray(hashes), self._depth, self._width, self._counters, est)
            return est
        est = self._counters.reshape(-1)[self._rows(hashes)].min(axis=1)
        return est

    def _in_c(self) -> bool:
        """Whether the C kernels (same probes, same counters as the numpy path) can run here."""
        flags = self._counters.flags
        return _chash is not None and self._depth > 0 and flags.c_contiguous and flags.writeable

    def merge(self, other: CountMinSketch) -> None:
        """Add ``other``'s counters into this sketch, in place.

        Parameters
        ----------
        other : CountMinSketch
            A sketch with equal width, depth, seed and mode.

        Raises
        ------
        ValueError
            If the parameters differ or ``other`` is this sketch.
        OverflowError
            If the merged total would exceed ``2**63 - 1``.

        Notes
        -----
        Plain mode: the result is bit-identical to one sketch fed both streams.
        Conservative mode: each input is ``>= true counts`` and ``<=`` its plain sketch
        cell-wise, so the sum is too: the merge is a valid overestimate, bounded by the plain
        sketch of the union, but it is an upper bound of, not equal to, sequential feeding.
        """
        self._check_mergeable(other, ("width", "depth", "seed", "conservative"))
        if self._total + other._total > INT64_MAX:
            raise OverflowError(f"total count would exceed 2**63 - 1 ({self._total} + {other._total})")
        self._counters += other._counters
        self._total += other._total

    def to_bytes(self) -> bytes:
        """Compact versioned bytes; counters use the fewest of 1, 2, 4 or 8 bytes each.

        Returns
        -------
        bytes
            Record readable by ``from_bytes``.
        """
        peak = int(self._counters.max())
        size = next(s for s in (1, 2, 4, 8) if s == 8 or peak < 2 ** (8 * s))
        payload = _TOTAL.pack(self._total, size) + self._counters.astype(_DTYPES[size]).tobytes()
        params = (self._width, self._depth, self._seed, int(self._conservative))
        return _CODEC.dump(params, payload)

    @classmethod
    def from_bytes(cls, data: bytes) -> CountMinSketch:
        """Rebuild a sketch from ``to_bytes`` output.

        Parameters
        ----------
        data : bytes
            A CountMinSketch record.

        Returns
        -------
        CountMinSketch
            The sketch.

        Raises
        ------
        ValueError
            If the bytes are not a valid CountMinSketch record (corrupt, truncated, foreign,
            inconsistent counters).
        """
        (width, depth, seed, conservative), payload = _CODEC.load(data)
        if conservative not in (0, 1):
            raise ValueError(f"corrupt CountMinSketch bytes: conservative flag {conservative}")
        _check_size("width", width, _MAX_WIDTH)
        _check_size("depth", depth, _MAX_DEPTH)
        if len(payload) < _TOTAL.size:
            raise ValueError("corrupt CountMinSketch bytes: payload too short")
        total, size = _TOTAL.unpack_from(payload)
        if size not in _DTYPES or len(payload) != _TOTAL.size + size * width * depth:
            raise ValueError(
                f"corrupt CountMinSketch bytes: payload of {len(payload)} bytes, counter size {size}"
            )
        # sizes are checked against the payload before allocating, so a forged header cannot
        # make us allocate width * depth counters that the bytes do not hold
        sketch = cls(width, depth, seed=seed, conservative=bool(conservative))
        counters = np.frombuffer(payload, dtype=_DTYPES[size], offset=_TOTAL.size).astype(np.int64)
        sketch._counters = counters.reshape(depth, width)
        sketch._total = int(total)
        sketch._check_state()
        return sketch

    def _check_state(self) -> None:
        # every row of a plain sketch sums to the total; conservative rows sum to at most it
        if self._total < 0 or (self._counters.size and int(self._counters.min()) < 0):
            raise ValueError("corrupt CountMinSketch bytes: negative counts")
        sums = self._counters.sum(axis=1, dtype=np.float64)
        bad = sums > self._total if self._conservative else sums != self._total
        if self._counters.size and self._total < _EXACT_FLOAT and bool(bad.any()):
            raise ValueError("corrupt CountMinSketch bytes: row sums do not match the total")

    def __repr__(self) -> str:
        mode = ", conservative=True" if self._conservative else ""
        return (
            f"CountMinSketch(width={self._width}, depth={self._depth}, seed={self._seed}{mode}, "
            f"total={self._total})"
        )
