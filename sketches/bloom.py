"""Bloom filter: approximate set membership with no false negatives.

The bit array is stored packed (64 bits per ``uint64`` word) and serialised packed, one bit
per bit. Probe positions come from ``probe_indices(hash64_many(items, seed), k, m)`` so that
single-item and batch paths, and the aging filter built on top, agree bit for bit.
"""

from __future__ import annotations

import math
from typing import Final, cast

import numpy as np
from numpy.typing import NDArray

from sketches._base import Sketch
from sketches._format import Codec
from sketches.hashing import Item, Items, check_seed, hash64, hash64_many, probe_indices

try:
    from sketches import _chash
except ImportError:  # pragma: no cover - built without a C compiler: the numpy path
    _chash = None  # type: ignore[assignment]

__all__ = ["BloomFilter"]

MAX_BITS: Final = 2**40
MAX_HASHES: Final = 255

_CODEC: Final = Codec("BloomFilter", version=1, params="<QBI")
_SIX: Final = np.uint64(6)
_LOW6: Final = np.uint64(63)
_ONE: Final = np.uint64(1)

Positions = NDArray[np.uint64]
Words = NDArray[np.uint64]


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
    return int(value)


def check_fp_rate(fp_rate: object) -> float:
    """Return ``fp_rate`` as a float if it lies in the open interval (0, 1), else raise ``ValueError``."""
    if isinstance(fp_rate, bool) or not isinstance(fp_rate, (int, float, np.floating, np.integer)):
        raise ValueError(f"fp_rate must be a float in (0, 1), got {fp_rate!r}")
    value = float(fp_rate)
    if not 0.0 < value < 1.0:
        raise ValueError(f"fp_rate must be a float in (0, 1), got {fp_rate!r}")
    return value


def optimal_size(capacity: int, fp_rate: float) -> tuple[int, int]:
    """``(num_bits, num_hashes)`` for ``capacity`` items at false-positive rate ``fp_rate``.

    ``m = ceil(-n ln p / (ln 2)**2)`` and ``k = max(1, round(m / n * ln 2))``.
    """
    n = _check_int("capacity", capacity, 1, 2**48)
    p = check_fp_rate(fp_rate)
    m = math.ceil(-n * math.log(p) / math.log(2) ** 2)
    if m > MAX_BITS:
        raise ValueError(f"capacity {n} at fp_rate {p!r} needs {m} bits, more than the maximum 2**40")
    k = max(1, round(m / n * math.log(2)))
    if k > MAX_HASHES:
        raise ValueError(f"fp_rate {p!r} needs {k} hash functions, more than the maximum {MAX_HASHES}")
    return m, k


def _bit_masks(flat: Positions) -> tuple[NDArray[np.intp], Words]:
    # intp word indices keep np.bitwise_or.at on its fast path
    return (flat >> _SIX).astype(np.intp), np.left_shift(_ONE, flat & _LOW6)


def _test_bits(words: Words, pos: Positions) -> NDArray[np.bool_]:
    """Whether each bit position of ``pos`` (any shape) is set in ``words``."""
    return ((words[(pos >> _SIX).astype(np.intp)] >> (pos & _LOW6)) & _ONE).astype(np.bool_)


def _set_bits(words: Words, flat: Positions) -> None:
    """Set the bit positions ``flat`` (1-D) in ``words`` in place."""
    idx, masks = _bit_masks(flat)
    np.bitwise_or.at(words, idx, masks)


def _sorted_pairs(positions: Positions, rows: Positions, row_bits: int) -> tuple[Positions, Positions]:
    """``(position, row)`` pairs sorted by position, then row (rows are below ``2**row_bits``)."""
    if int(positions.max(initial=0)).bit_length() + row_bits <= 64:
        # one plain sort of packed keys is much faster than a stable argsort or lexsort
        keys = np.sort((positions << np.uint64(row_bits)) | rows)
        return keys >> np.uint64(row_bits), keys & np.uint64((1 << row_bits) - 1)
    order = np.lexsort((rows, positions))  # only for batches of more than 2**24 items
    return positions[order], rows[order]


def _check_and_set(words: Words, pos: Positions) -> NDArray[np.bool_]:
    """Test-and-set a batch of ``(n, k)`` probes in ``words``, with sequential semantics.

    Item ``j`` is reported present iff each of its probes was set before the call or by an
    earlier item ``i < j`` of the batch, exactly as if items were tested and set one by one.
    """
    n, k = pos.shape
    flat = pos.reshape(-1)
    fresh = np.flatnonzero(~_test_bits(words, flat))  # probes whose bit was not set before
    positions = flat[fresh]
    rows = (fresh // k).astype(np.uint64)
    spos, srow = _sorted_pairs(positions, rows, max(1, (n - 1).bit_length()))
    first = np.ones(len(spos), dtype=np.bool_)
    first[1:] = spos[1:] != spos[:-1]
    # a fresh position is set by the first row that probes it: that row, and only rows that are
    # first for some position, still miss a bit when their turn comes
    present = np.ones(n, dtype=np.bool_)
    present[srow[first].astype(np.intp)] = False
    _set_bits(words, spos[first])
    return present


TEST: Final = 0
SET: Final = 1
CHECK_AND_SET: Final = 2
_C_MAX_BITS: Final = 2**32


def probe_hashes(
    words: Words, hashes: NDArray[np.uint64], k: int, m: int, mode: int, prev: Words | None = None
) -> NDArray[np.bool_]:
    """Bloom probes of pre-hashed items in ``words``, item after item.

    ``mode`` is ``TEST`` (all ``k`` bits of the item set), ``SET`` (set them; the result is
    empty) or ``CHECK_AND_SET`` (test, then set: a repeat within the batch is found at its
    second occurrence). With ``prev``, an item also tests present if all its bits are set in
    ``prev`` (the older generation of an aging filter). The C kernel and the numpy path give
    identical results; numpy is used without the extension or for ``m > 2**32``.
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64).reshape(-1)
    out = np.zeros(0 if mode == SET else hashes.size, dtype=np.bool_)
    if _chash is not None and m <= _C_MAX_BITS:
        _chash.bloom_probe(hashes, k, m, words, prev, out, mode)
        return out
    pos = probe_indices(hashes, k, m)
    if mode == SET:
        _set_bits(words, pos.reshape(-1))
        return out
    out[:] = _check_and_set(words, pos) if mode == CHECK_AND_SET else _test_bits(words, pos).all(axis=1)
    if prev is not None:
        out |= _test_bits(prev, pos).all(axis=1)
    return out


def _pack(words: Words, num_bits: int) -> bytes:
    """The first ``num_bits`` bits, least significant first, in ``ceil(num_bits / 8)`` bytes."""
    return words.astype("<u8").tobytes()[: (num_bits + 7) // 8]


def _unpack(payload: bytes, num_bits: int, name: str) -> Words:
    """Inverse of ``_pack``; raise ``ValueError`` on a wrong length or set padding bits."""
    nbytes = (num_bits + 7) // 8
    if len(payload) != nbytes:
        raise ValueError(f"corrupt {name} bytes: {len(payload)} payload bytes, expected {nbytes}")
    if num_bits % 8 and payload[-1] >> (num_bits % 8):
        raise ValueError(f"corrupt {name} bytes: bits set beyond num_bits")
    nwords = (num_bits + 63) // 64
    padded = payload + bytes(8 * nwords - nbytes)
    return np.frombuffer(padded, dtype="<u8").astype(np.uint64)


def _popcount(words: Words) -> int:
    if hasattr(np, "bitwise_count"):
        return int(np.bitwise_count(words).sum())
    return int(np.unpackbits(words.view(np.uint8)).sum())  # pragma: no cover - numpy < 2.0


class BloomFilter(Sketch):
    """Approximate set membership: no false negatives, tunable false-positive rate.

    ``k`` probe positions of an ``m``-bit array are set per item (double hashing of one
    seeded 64-bit hash); an item is reported present iff all its ``k`` bits are set.

    Parameters
    ----------
    num_bits : int
        Size ``m`` of the bit array, in ``[1, 2**40]``.
    num_hashes : int
        Number ``k`` of probes per item, in ``[1, 255]``.
    seed : int, default 0
        Hash seed in ``[0, 2**32)``; filters merge only with equal seeds.

    Raises
    ------
    ValueError
        If a parameter is out of range.

    Notes
    -----
    Error guarantee: an added item is always reported present (no false negatives). After
    ``n`` distinct insertions the probability that a never-added item is reported present is

    .. math:: p \\approx (1 - e^{-kn/m})^k,

    which ``estimated_fp_rate()`` estimates from the actual fill as ``fill_ratio ** k``.
    ``from_error(n, p)`` picks ``m = ceil(-n ln p / (ln 2)^2)`` and ``k = round(m / n ln 2)``,
    which makes that rate ``~p`` at ``n`` insertions. The state is ``ceil(m / 8)`` bytes.

    Examples
    --------
    >>> from sketches.bloom import BloomFilter
    >>> bf = BloomFilter.from_error(capacity=10_000, fp_rate=0.01, seed=1)
    >>> bf.update([f"user-{i}" for i in range(10_000)])
    >>> all(bf.contains_many([f"user-{i}" for i in range(10_000)]))
    True
    >>> fp = float(bf.contains_many([f"other-{i}" for i in range(100_000)]).mean())
    >>> abs(fp - 0.01) < 0.003  # 0.01 +- 10 standard deviations of the measured rate
    True
    >>> bf.check_and_add_many(["a", "b", "a"]).tolist()
    [False, False, True]
    """

    __slots__ = ("_num_bits", "_num_hashes", "_seed", "_words")

    def __init__(self, num_bits: int, num_hashes: int, seed: int = 0) -> None:
        self._num_bits = _check_int("num_bits", num_bits, 1, MAX_BITS)
        self._num_hashes = _check_int("num_hashes", num_hashes, 1, MAX_HASHES)
        self._seed = check_seed(seed)
        self._words: Words = np.zeros((self._num_bits + 63) // 64, dtype=np.uint64)

    @classmethod
    def from_error(cls, capacity: int, fp_rate: float, seed: int = 0) -> BloomFilter:
        """A filter sized for ``capacity`` distinct items at false-positive rate ``fp_rate``.

        Parameters
        ----------
        capacity : int
            Expected number ``n`` of distinct items, at least 1.
        fp_rate : float
            Target false-positive rate ``p`` at ``n`` items, in ``(0, 1)``.
        seed : int, default 0
            Hash seed.

        Returns
        -------
        BloomFilter
            With ``m = ceil(-n ln p / (ln 2)^2)`` bits and ``k = max(1, round(m / n ln 2))``.

        Raises
        ------
        ValueError
            If ``capacity`` or ``fp_rate`` is out of range, or ``m`` exceeds ``2**40``.

        Examples
        --------
        >>> bf = BloomFilter.from_error(1_000, 0.01)
        >>> (bf.num_bits, bf.num_hashes)
        (9586, 7)
        """
        num_bits, num_hashes = optimal_size(capacity, fp_rate)
        return cls(num_bits, num_hashes, seed)

    @property
    def num_bits(self) -> int:
        """Size ``m`` of the bit array."""
        return self._num_bits

    @property
    def num_hashes(self) -> int:
        """Number ``k`` of probes per item."""
        return self._num_hashes

    @property
    def seed(self) -> int:
        """Hash seed."""
        return self._seed

    @property
    def fill_ratio(self) -> float:
        """Fraction of the ``m`` bits that are set."""
        return _popcount(self._words) / self._num_bits

    def estimated_fp_rate(self) -> float:
        """Current false-positive probability estimated from the fill: ``fill_ratio ** k``.

        Returns
        -------
        float
            Probability that an item never added is reported present.
        """
        return float(self.fill_ratio**self._num_hashes)

    def _run(self, hashes: NDArray[np.uint64], mode: int) -> NDArray[np.bool_]:
        return probe_hashes(self._words, hashes, self._num_hashes, self._num_bits, mode)

    def _hash_one(self, item: Item) -> NDArray[np.uint64]:
        return np.array([hash64(item, self._seed)], dtype=np.uint64)

    def add(self, item: Item) -> None:
        """Add one item (str, bytes or int).

        Parameters
        ----------
        item : str, bytes or int
            The item.
        """
        self._run(self._hash_one(item), SET)

    def update(self, items: Items) -> None:
        """Add a batch of items; the same state as ``add`` for each in turn.

        Parameters
        ----------
        items : sequence of str/bytes/int, or numpy integer array
            The items.
        """
        self._run(hash64_many(items, self._seed), SET)

    def __contains__(self, item: object) -> bool:
        return bool(self._run(self._hash_one(cast(Item, item)), TEST)[0])

    def contains_many(self, items: Items) -> NDArray[np.bool_]:
        """Membership of each item of a batch.

        Parameters
        ----------
        items : sequence of str/bytes/int, or numpy integer array
            The items to look up.

        Returns
        -------
        numpy.ndarray of bool
            ``True`` where the item is (probably) present.
        """
        return self._run(hash64_many(items, self._seed), TEST)

    def check_and_add(self, item: Item) -> bool:
        """Report whether ``item`` was (probably) present, then add it.

        Parameters
        ----------
        item : str, bytes or int
            The item.

        Returns
        -------
        bool
            ``True`` if the item was (probably) already present before this call.
        """
        return bool(self._run(self._hash_one(item), CHECK_AND_SET)[0])

    def check_and_add_many(self, items: Items) -> NDArray[np.bool_]:
        """Test-and-set a batch with the semantics of ``check_and_add`` applied in order.

        ``result[j]`` is ``True`` iff each of item ``j``'s probe bits was set before the call
        or by an earlier item of the same batch; so a repeat within the batch is reported at
        its second occurrence.

        Parameters
        ----------
        items : sequence of str/bytes/int, or numpy integer array
            The items.

        Returns
        -------
        numpy.ndarray of bool
            ``True`` where the item was (probably) already present.

        Examples
        --------
        >>> BloomFilter(1024, 3).check_and_add_many([1, 2, 1, 1]).tolist()
        [False, False, True, True]
        """
        return self._run(hash64_many(items, self._seed), CHECK_AND_SET)

    def merge(self, other: BloomFilter) -> None:
        """Union in place: afterwards ``self`` holds every item of either filter.

        The result is bit-identical to one filter fed both streams.

        Parameters
        ----------
        other : BloomFilter
            A filter with the same ``num_bits``, ``num_hashes`` and ``seed``.

        Raises
        ------
        ValueError
            If the parameters differ, ``other`` is another class, or ``other is self``.
        """
        self._check_mergeable(other, ("num_bits", "num_hashes", "seed"))
        np.bitwise_or(self._words, other._words, out=self._words)

    def to_bytes(self) -> bytes:
        """Versioned, checksummed bytes: parameters plus the packed bit array."""
        return _CODEC.dump((self._num_bits, self._num_hashes, self._seed), _pack(self._words, self._num_bits))

    @classmethod
    def from_bytes(cls, data: bytes) -> BloomFilter:
        """Rebuild a filter from ``to_bytes()``.

        Raises
        ------
        ValueError
            If ``data`` is not an intact ``BloomFilter`` record.
        """
        (num_bits, num_hashes, seed), payload = _CODEC.load(data)
        try:
            _check_int("num_bits", num_bits, 1, MAX_BITS)
            _check_int("num_hashes", num_hashes, 1, MAX_HASHES)
        except ValueError as exc:
            raise ValueError(f"corrupt BloomFilter bytes: {exc}") from exc
        words = _unpack(payload, num_bits, "BloomFilter")  # checks the length before allocating
        bf = cls(num_bits, num_hashes, seed)
        bf._words = words
        return bf

    def __repr__(self) -> str:
        return (
            f"BloomFilter(num_bits={self._num_bits}, num_hashes={self._num_hashes}, seed={self._seed}, "
            f"fill_ratio={self.fill_ratio:.4f})"
        )
