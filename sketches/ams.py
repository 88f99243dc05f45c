"""AMS (tug-of-war) sketch of the second frequency moment F2 = sum of squared item frequencies."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from sketches._base import Sketch
from sketches._format import Codec
from sketches.hashing import Item, Items, check_seed, fmix64, hash64, hash64_many

__all__ = ["AMSSketch"]

_CODEC: Final = Codec("AMSSketch", version=1, params="<III")
_F1: Final = struct.Struct("<q")
_ROW_SALT: Final = 0x9E3779B97F4A7C15  # row r remixes the item hash with (r + 1) * golden ratio
_MAX_CELLS: Final = 1 << 28
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


def _wrap64(value: int) -> int:
    """Two's-complement int64 wrap-around, as the int64 counters do."""
    return (value + 2**63) % 2**64 - 2**63


def _check_size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 < int(value) < 2**32:
        raise ValueError(f"{name} must be a positive int below 2**32, got {value!r}")
    return int(value)


def _check_count(count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise TypeError(f"count must be an int, got {type(count).__name__}")
    if not _INT64_MIN <= int(count) <= _INT64_MAX:
        raise ValueError(f"count must fit in int64, got {count}")
    return int(count)


class AMSSketch(Sketch):
    """Fast AMS ("tug-of-war") sketch estimating F2, the sum of squared item frequencies.

    ``depth`` rows of ``width`` signed counters. Every item goes to one bucket ``b_r(x)`` per
    row and adds ``s_r(x) * count`` there, with a sign ``s_r(x) = +-1``; both come from one
    remix of the item hash per row. A row estimates F2 by the sum of its squared counters,
    and ``estimate_f2()`` is the median over rows. This is the fast form of AMS (as in
    Count-Sketch / Thorup-Zhang): one row has the variance bound of a mean of ``width``
    classic AMS estimators at the cost of one counter update per row.

    Parameters
    ----------
    width : int
        Counters per row (the "mean" part), ``1 <= width < 2**32``.
    depth : int
        Rows (the "median" part), ``1 <= depth < 2**32``.
    seed : int, default 0
        Hash seed in ``[0, 2**32)``; only sketches with equal seeds can be merged.

    Raises
    ------
    ValueError
        If a parameter is out of range.

    Notes
    -----
    Guarantee. Write ``f_x`` for the net frequency of item ``x``. One row gives
    ``Y = sum_b C_b**2 = F2 + sum_{x != y} f_x f_y s(x) s(y) [b(x) = b(y)]``, so ``E[Y] = F2``
    and, with 4-wise independent signs and pairwise independent buckets,
    ``Var[Y] = (2 / width) * sum_{x != y} f_x**2 f_y**2 <= 2 F2**2 / width``. By Chebyshev,
    ``P(|Y - F2| > eps F2) <= 2 / (width eps**2) = p``. The median of ``depth`` rows is off
    by more than ``eps F2`` only if at least half the rows are, which by the Chernoff bound
    ``P(Bin(d, p) >= d/2) <= (4 p (1 - p))**(d/2)`` happens with probability at most
    ``delta`` for ``width = ceil(16 / eps**2)`` (so ``p = 1/8``) and
    ``depth = ceil(2 ln(1/delta) / ln(16/7))`` (``from_error``). This choice of ``p``
    (nearly) minimises the total ``width * depth``.

    The turnstile model is supported: counts may be negative, F2 then refers to the net
    frequencies. ``estimate_f1()`` is the exact net total count (tracked, not estimated).

    The per-row bucket and sign come from MurmurHash3's 64-bit finaliser applied to the item
    hash xor a per-row constant. That mixing is not provably 4-wise independent, so the
    bound above is the ideal-hash guarantee; the seeded tests check it empirically on
    skewed and uniform streams. Counters and F1 are int64 and wrap around on overflow (no checks).

    Examples
    --------
    >>> import numpy as np
    >>> ams = AMSSketch.from_error(epsilon=0.1, delta=0.01, seed=1)
    >>> keys = np.random.default_rng(0).zipf(1.5, 20_000) % 5_000
    >>> ams.update(keys)
    >>> true_f2 = float((np.bincount(keys).astype(float) ** 2).sum())
    >>> abs(ams.estimate_f2() - true_f2) < 0.1 * true_f2
    True
    >>> ams.estimate_f1()
    20000
    """

    __slots__ = ("_counters", "_depth", "_f1", "_seed", "_width")

    def __init__(self, width: int, depth: int, seed: int = 0) -> None:
        self._width = _check_size("width", width)
        self._depth = _check_size("depth", depth)
        if self._width * self._depth > _MAX_CELLS:
            raise ValueError(f"width * depth must be at most 2**28 counters, got {self._width * self._depth}")
        self._seed = check_seed(seed)
        self._counters: NDArray[np.int64] = np.zeros((self._depth, self._width), dtype=np.int64)
        self._f1 = 0

    @classmethod
    def from_error(cls, epsilon: float, delta: float, seed: int = 0) -> AMSSketch:
        """Size a sketch so that ``P(|est - F2| > epsilon F2) <= delta``.

        Parameters
        ----------
        epsilon : float
            Relative error, ``0 < epsilon < 1``.
        delta : float
            Failure probability, ``0 < delta < 1``.
        seed : int, default 0
            Hash seed.

        Returns
        -------
        AMSSketch
            With ``width = ceil(16 / epsilon**2)`` and ``depth = ceil(2 ln(1/delta) / ln(16/7))``
            (see the class Notes for the derivation).

        Raises
        ------
        ValueError
            If ``epsilon`` or ``delta`` is not in ``(0, 1)``.

        Examples
        --------
        >>> s = AMSSketch.from_error(0.1, 0.05)
        >>> (s.width, s.depth)
        (1600, 8)
        """
        for name, value in (("epsilon", epsilon), ("delta", delta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
        width = math.ceil(16.0 / epsilon**2)
        depth = max(1, math.ceil(2.0 * math.log(1.0 / delta) / math.log(16.0 / 7.0)))
        return cls(width, depth, seed)

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

    def _cells(self, hashes: NDArray[np.uint64]) -> tuple[NDArray[np.intp], NDArray[np.int64]]:
        """Flat counter index and sign (+-1) of each item in each row, shape ``(n, depth)``."""
        salts = (np.arange(1, self._depth + 1, dtype=np.uint64) * np.uint64(_ROW_SALT))[None, :]
        mixed = fmix64(hashes[:, None] ^ salts)
        buckets = (mixed >> np.uint64(1)) % np.uint64(self._width)
        offsets = (np.arange(self._depth, dtype=np.uint64) * np.uint64(self._width))[None, :]
        flat = (buckets + offsets).astype(np.intp)
        signs = (mixed & np.uint64(1)).astype(np.int64) * 2 - 1
        return flat, signs

    def add(self, item: Item, count: int = 1) -> None:
        """Add ``count`` (may be negative) occurrences of ``item``.

        Parameters
        ----------
        item : str, bytes or int
            The item.
        count : int, default 1
            Occurrences to add; negative counts delete (turnstile model).

        Raises
        ------
        TypeError
            If the item cannot be hashed or ``count`` is not an int.
        """
        c = _check_count(count)
        flat, signs = self._cells(np.array([hash64(item, self._seed)], dtype=np.uint64))
        self._counters.reshape(-1)[flat[0]] += signs[0] * c
        self._f1 = _wrap64(self._f1 + c)

    def update(self, items: Items, counts: Sequence[int] | NDArray[np.integer] | None = None) -> None:
        """Add a batch of items (vectorised); the state equals calling ``add`` for each in order.

        Parameters
        ----------
        items : list of str/bytes/int or numpy integer array
            The items.
        counts : sequence of int or numpy integer array, optional
            Per-item counts (default 1 each), same length as ``items``; may be negative.

        Raises
        ------
        ValueError
            If ``counts`` has another length than ``items``.
        TypeError
            If ``counts`` is not integer or an item cannot be hashed.
        """
        hashes = hash64_many(items, self._seed)
        weights = self._weights(counts, len(hashes))
        if len(hashes) == 0:
            return
        flat, signs = self._cells(hashes)
        np.add.at(self._counters.reshape(-1), flat.reshape(-1), (signs * weights[:, None]).reshape(-1))
        self._f1 = _wrap64(self._f1 + int(weights.sum()))

    @staticmethod
    def _weights(counts: Sequence[int] | NDArray[np.integer] | None, n: int) -> NDArray[np.int64]:
        if counts is None:
            return np.ones(n, dtype=np.int64)
        arr = np.asarray(counts)
        if arr.size == 0 and arr.dtype.kind == "f":
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"counts must be integers, got dtype {arr.dtype}")
        if arr.shape != (n,):
            raise ValueError(f"counts must have one entry per item ({n}), got shape {arr.shape}")
        if arr.dtype == np.uint64 and n and int(arr.max()) > _INT64_MAX:
            raise ValueError("counts must fit in int64")
        return arr.astype(np.int64)

    def estimate_f2(self) -> float:
        """Estimate F2 = sum of squared (net) item frequencies: the median over rows of the
        sum of squared counters.

        Returns
        -------
        float
            The estimate (0.0 for an empty sketch).
        """
        squares = self._counters.astype(np.float64) ** 2
        return float(np.median(squares.sum(axis=1)))

    def estimate_f1(self) -> int:
        """The exact net total count F1 = sum of all counts added (for skew ratios F2 / F1**2)."""
        return self._f1

    def merge(self, other: AMSSketch) -> None:
        """Add ``other`` into this sketch in place: counters add up, so the result is
        bit-identical to one sketch fed both streams.

        Raises
        ------
        ValueError
            If ``other`` is not an AMSSketch with equal width, depth and seed, or is ``self``.
        """
        self._check_mergeable(other, ("width", "depth", "seed"))
        self._counters += other._counters
        self._f1 = _wrap64(self._f1 + other._f1)

    def to_bytes(self) -> bytes:
        """Versioned, checksummed bytes: parameters, then F1 and the int64 counters."""
        payload = _F1.pack(self._f1) + self._counters.astype("<i8").tobytes()
        return _CODEC.dump((self._width, self._depth, self._seed), payload)

    @classmethod
    def from_bytes(cls, data: bytes) -> AMSSketch:
        """Rebuild a sketch from ``to_bytes`` output.

        Raises
        ------
        ValueError
            If ``data`` is not a valid AMSSketch record (corrupt, truncated, foreign).
        """
        (width, depth, seed), payload = _CODEC.load(data)
        sketch = cls(width, depth, seed)
        expected = _F1.size + 8 * width * depth
        if len(payload) != expected:
            raise ValueError(f"corrupt AMSSketch bytes: payload of {len(payload)} bytes, expected {expected}")
        (sketch._f1,) = _F1.unpack_from(payload)
        counters = np.frombuffer(payload, dtype="<i8", offset=_F1.size).reshape(depth, width)
        sketch._counters = counters.astype(np.int64)
        return sketch

    def __repr__(self) -> str:
        return f"AMSSketch(width={self._width}, depth={self._depth}, seed={self._seed}, f1={self._f1})"
