"""One seeded, process-stable 64-bit hash of stream items, shared by every sketch.

Definition (stable across processes, machines and versions of this library):

* ``str`` is encoded as UTF-8; ``str``, ``bytes``, ``bytearray`` and ``memoryview`` hash to
  the low 64 bits of MurmurHash3_x64_128 of those bytes with a 32-bit seed, that is
  ``mmh3.hash128(item, seed) & (2**64 - 1)``. So ``"abc"`` and ``b"abc"`` hash alike.
* ``int`` (Python or numpy, and ``bool``) must fit in int64 or uint64; it is taken as its
  64-bit two's-complement pattern ``v`` and hashed as ``fmix64(fmix64(v ^ k) + k)`` with
  ``k = fmix64(seed + 0x9E3779B97F4A7C15)``, where ``fmix64`` is MurmurHash3's 64-bit
  finaliser. This is a bijection of the 64-bit patterns for a fixed seed, so distinct
  int64 keys never collide (``-1`` and ``2**64 - 1`` share a pattern and a hash).
* Anything else raises ``TypeError``. Python's ``hash()`` is never used: it is salted per
  process, so sketches built in two processes would silently disagree.

The batch path (``hash64_many``) runs in a small C extension, for object columns and lists
of str/bytes/int and in one pass for integer arrays; without the extension it falls back to
``mmh3`` and vectorised numpy with identical results. ``BACKEND`` says which one is in use.

>>> hash64("abc", seed=7) == hash64(b"abc", seed=7)
True
>>> import numpy as np
>>> int(hash64_many(np.array([5, -1]), seed=3)[1]) == hash64(-1, seed=3)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, TypeAlias

import mmh3
import numpy as np
from numpy.typing import NDArray

try:
    from sketches import _chash
except ImportError:  # pragma: no cover - exercised only where the extension failed to build
    _chash = None  # type: ignore[assignment]

__all__ = [
    "BACKEND",
    "Item",
    "Items",
    "check_seed",
    "fmix64",
    "hash64",
    "hash64_many",
    "hash_codes",
    "probe_indices",
    "probe_indices_one",
    "small_codes",
    "unhash_ints",
]

Item: TypeAlias = str | bytes | bytearray | memoryview | int | np.integer
Items: TypeAlias = Sequence[Item] | NDArray[np.integer] | NDArray[np.bool_]

BACKEND: Final[str] = "c" if _chash is not None else "mmh3"

_MASK64: Final = (1 << 64) - 1
_GOLDEN: Final = 0x9E3779B97F4A7C15
_F1: Final = 0xFF51AFD7ED558CCD
_F2: Final = 0xC4CEB9FE1A85EC53
_SECOND_PROBE: Final = 0x6A09E667F3BCC909  # decorrelates the second probe hash from the first


def check_seed(seed: int) -> int:
    """Return ``seed`` if it is an int in ``[0, 2**32)``, else raise ``ValueError``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def _fmix64_int(k: int) -> int:
    k ^= k >> 33
    k = (k * _F1) & _MASK64
    k ^= k >> 33
    k = (k * _F2) & _MASK64
    return k ^ (k >> 33)


def fmix64(values: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """MurmurHash3's 64-bit finaliser applied element-wise (returns a new array)."""
    x = values.astype(np.uint64, copy=True)
    _fmix64_inplace(x)
    return x


def _fmix64_inplace(x: NDArray[np.uint64]) -> None:
    if _in_c(x):
        _chash.mix_into(x, 0, 1)
        return
    tmp = np.empty_like(x)
    for mult in (_F1, _F2):
        np.right_shift(x, np.uint64(33), out=tmp)
        x ^= tmp
        x *= np.uint64(mult)
    np.right_shift(x, np.uint64(33), out=tmp)
    x ^= tmp


_F1_INV: Final = pow(_F1, -1, 1 << 64)
_F2_INV: Final = pow(_F2, -1, 1 << 64)


def _unfmix64_inplace(x: NDArray[np.uint64]) -> None:
    tmp = np.empty_like(x)
    for mult in (_F2_INV, _F1_INV):
        np.right_shift(x, np.uint64(33), out=tmp)
        x ^= tmp  # x ^ (x >> 33) is its own inverse because 33 >= 32
        x *= np.uint64(mult)
    np.right_shift(x, np.uint64(33), out=tmp)
    x ^= tmp


def unhash_ints(hashes: NDArray[np.uint64], seed: int = 0) -> NDArray[np.uint64]:
    """Invert the integer hash: the 64-bit patterns whose ``hash64`` under ``seed`` is ``hashes``.

    Integer hashing is a bijection, so a sketch fed integers can recover its items from their
    hashes instead of remembering them (view the result as int64 for signed items).

    >>> import numpy as np
    >>> unhash_ints(hash64_many(np.array([7, 2**40]), seed=5), seed=5).tolist()
    [7, 1099511627776]
    """
    key = np.uint64(_int_key(check_seed(seed)))
    x = hashes.astype(np.uint64, copy=True)
    _unfmix64_inplace(x)
    x -= key
    _unfmix64_inplace(x)
    x ^= key
    return x


def _int_key(seed: int) -> int:
    return _fmix64_int((seed + _GOLDEN) & _MASK64)


def _hash_int(value: int, seed: int) -> int:
    if not -(2**63) <= value < 2**64:
        raise ValueError(f"integer item out of range: items must fit in int64 or uint64, got {value}")
    key = _int_key(seed)
    return _fmix64_int((_fmix64_int((value & _MASK64) ^ key) + key) & _MASK64)


def _hash_py(item: object, seed: int) -> int:
    if isinstance(item, (str, bytes, bytearray, memoryview)):
        return int(mmh3.hash128(item, seed, signed=False)) & _MASK64  # type: ignore[arg-type]
    if isinstance(item, (int, np.integer)):
        return _hash_int(int(item), seed)
    raise TypeError(f"cannot hash item of type {type(item).__name__}: expected str, bytes or int")


def hash64(item: Item, seed: int = 0) -> int:
    """Hash one item to an unsigned 64-bit int (see the module docstring for the definition)."""
    if _chash is not None:
        return _chash.hash_one(item, seed)
    return _hash_py(item, check_seed(seed))


_CHUNK: Final = 1 << 15  # int hashing in cache-sized chunks: ~2x faster than whole-array passes


def _in_c(x: NDArray[np.uint64]) -> bool:
    """Whether the C extension can mix ``x`` in place (one pass instead of numpy's dozen)."""
    flags = x.flags
    in_place = flags.c_contiguous and flags.writeable and flags.aligned
    return _chash is not None and x.dtype == np.uint64 and in_place


def _hash_int_array(values: NDArray[np.integer] | NDArray[np.bool_], seed: int) -> NDArray[np.uint64]:
    key = np.uint64(_int_key(seed))
    out = values.astype(np.uint64)
    if _in_c(out):
        _chash.mix_into(out, int(key), 2)
        return out
    for start in range(0, out.size, _CHUNK):
        x = out[start : start + _CHUNK]
        x ^= key
        _fmix64_inplace(x)
        x += key
        _fmix64_inplace(x)
    return out


def hash64_many(items: Items, seed: int = 0) -> NDArray[np.uint64]:
    """Hash a batch of items to a ``uint64`` array, equal to ``[hash64(i, seed) for i in items]``.

    ``items`` is a sequence of str/bytes/int or a numpy integer (or bool) array of any shape,
    which is flattened. Raises ``TypeError`` for other item types.
    """
    check_seed(seed)
    if isinstance(items, np.ndarray):
        if items.dtype.kind in "iub":
            return _hash_int_array(items.reshape(-1), seed)
        if _chash is not None and items.dtype == object:
            # the object pointers in place, with no list of them first (~30 % faster)
            flat = np.ascontiguousarray(items.reshape(-1))
            out = np.empty(len(flat), dtype=np.uint64)
            _chash.hash_array_into(flat.ctypes.data, len(flat), seed, out)
            return out
        if items.dtype.kind in "USO":
            items = items.reshape(-1).tolist()
        else:
            raise TypeError(f"cannot hash a numpy array of dtype {items.dtype}: expected integers")
    if _chash is not None:
        if not isinstance(items, (list, tuple)):
            items = list(items)
        out = np.empty(len(items), dtype=np.uint64)
        _chash.hash_into(items, seed, out)
        return out
    return np.fromiter((_hash_py(i, seed) for i in items), dtype=np.uint64, count=len(items))


def hash_codes(values: NDArray[Any]) -> tuple[NDArray[np.int64], NDArray[np.intp]] | None:
    """Group equal values by their 64-bit hash, checked: ``(codes, first)`` or ``None``.

    Parameters
    ----------
    values : numpy.ndarray
        A 1-d array of items ``hash64_many`` takes (str, bytes, int; object, unicode, bytes
        or integer dtype).

    Returns
    -------
    codes : numpy.ndarray of int64
        ``codes[i]`` numbers ``values[i]``'s group, ``0 ..`` in ascending order of the groups'
        hashes under seed 0 (``np.unique``'s inverse of the hashes).
    first : numpy.ndarray of intp
        ``first[c]`` is the index of group ``c``'s first value (``np.unique``'s index).
    None
        Instead, when a value does not hash, or two different values share a hash (checked,
        never assumed): then group by equality.

    Examples
    --------
    >>> codes, first = hash_codes(np.array(["c", "a", "c", "b"], dtype=object))
    >>> codes.tolist(), first.tolist()  # hash order: "b" < "a" < "c"
    ([2, 1, 2, 0], [3, 1, 0])
    >>> hash_codes(np.array(["a", b"a"], dtype=object)) is None  # equal hashes, unequal items
    True
    """
    try:
        hashes = hash64_many(values, 0)
    except (TypeError, OverflowError, ValueError):
        return None
    codes, first = _unique_codes(hashes)
    if not bool((values[first][codes] == values).all()):  # a hash collision
        return None
    return codes, first


SMALL_CODES_MAX: Final = 64
"""The largest ``limit`` of :func:`small_codes` (the C extension's address table size)."""


def small_codes(values: NDArray[Any], limit: int = SMALL_CODES_MAX) -> NDArray[np.int64] | None:
    """Number the strings of an object array by equality, ``0, 1, ...`` in order of first
    appearance, or ``None`` when there are more than ``limit`` (at most 64) distinct values, a
    value is not a ``str``, or the C extension is missing (then group another way).

    A column of few distinct strings (an event type) holds the same few objects over and
    over, interned by the parsers, so this is ~40x faster than :func:`hash_codes` on it.

    Examples
    --------
    >>> small_codes(np.array(["b", "a", "b", "c"], dtype=object)).tolist()
    [0, 1, 0, 2]
    >>> small_codes(np.array(["b", "a", "c"], dtype=object), limit=2) is None
    True
    >>> small_codes(np.array(["b", 1], dtype=object)) is None
    True
    """
    if _chash is None or values.dtype != object or not 0 <= limit <= SMALL_CODES_MAX:
        return None
    flat = np.ascontiguousarray(values.reshape(-1))
    out = np.empty(len(flat), dtype=np.int64)
    if _chash.small_codes(flat.ctypes.data, len(flat), limit, out) < 0:
        return None
    return out


_FEW_DISTINCT: Final = 16
"""Up to this many distinct values, a comparison pass per value beats sorting with an index."""


def _unique_codes(values: NDArray[np.uint64]) -> tuple[NDArray[np.int64], NDArray[np.intp]]:
    """``np.unique(values, return_index=True, return_inverse=True)``'s inverse and index, faster.

    >>> v = np.array([7, 3, 7, 9, 3], dtype=np.uint64)
    >>> [x.tolist() for x in _unique_codes(v)]
    [[1, 0, 1, 2, 0], [1, 0, 3]]
    """
    n = len(values)
    ordered = np.sort(values)  # no index: far faster than the (stable) argsort np.unique uses
    starts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1  # where the other distinct values start
    if len(starts) >= _FEW_DISTINCT:
        order = np.argsort(values)  # unstable is fine: a group's first index is its least one
        in_order = np.zeros(n, dtype=np.int64)
        in_order[starts] = 1
        codes = np.empty(n, dtype=np.int64)
        codes[order] = np.cumsum(in_order, out=in_order)
        first: NDArray[np.intp] = np.minimum.reduceat(order, np.concatenate(([0], starts)))
        return codes, first
    codes = np.zeros(n, dtype=np.int64)
    first = np.zeros(len(starts) + (n > 0), dtype=np.intp)
    if n:
        first[0] = np.argmin(values)  # the first occurrence of the least value
    for code, value in enumerate(ordered[starts], 1):
        is_value = values == value
        codes += is_value * code
        first[code] = np.argmax(is_value)  # its first occurrence
    return codes, first


def probe_indices(hashes: NDArray[np.uint64], k: int, m: int, *, flat: bool = False) -> NDArray[np.uint64]:
    """``k`` probe positions in ``[0, m)`` per hash, by double hashing of one 64-bit hash.

    With ``a`` the low and ``b`` the high 32 bits of the hash (``b`` forced odd), probe ``i``
    is ``((a + i * b) mod 2**32) * m >> 32`` (Lemire's multiply-shift range reduction, no
    division) when ``m <= 2**32``; for larger ``m`` it is ``(h + i * step) mod m`` with
    ``step = 1 + (fmix64(h ^ c) mod (m - 1))``. So one hash per item yields all rows of a
    Count-Min sketch or all probes of a Bloom filter. Returns an array of shape
    ``(len(hashes), k)``; ``probe_indices_one`` is the same for one hash. With ``flat=True``
    probe ``i`` is offset by ``i * m``: positions in a row-major ``(k, m)`` table, one row per
    probe (the layout of a Count-Min sketch).

    >>> import numpy as np
    >>> h = hash64_many(["a", "b"], seed=1)
    >>> probe_indices(h, 3, 1000).tolist()[1] == probe_indices_one(int(h[1]), 3, 1000)
    True
    """
    out = np.empty((hashes.size, k), dtype=np.uint64)
    probe = _probe_small if m <= _SMALL_M else _probe_large
    for start in range(0, hashes.size, _CHUNK):
        probe(hashes[start : start + _CHUNK], out[start : start + _CHUNK], m, flat)
    return out


_SMALL_M: Final = 1 << 32
_LOW32: Final = np.uint64(0xFFFFFFFF)


def _probe_small(hashes: NDArray[np.uint64], out: NDArray[np.uint64], m: int, flat: bool) -> None:
    pos = hashes & _LOW32
    step = (hashes >> np.uint64(32)) | np.uint64(1)
    scaled = np.empty_like(pos)
    m64 = np.uint64(m)
    for i in range(out.shape[1]):
        if i:
            pos += step
            pos &= _LOW32
        np.multiply(pos, m64, out=scaled)
        scaled >>= np.uint64(32)
        if flat and i:
            scaled += np.uint64(i * m)
        out[:, i] = scaled


def _probe_large(hashes: NDArray[np.uint64], out: NDArray[np.uint64], m: int, flat: bool) -> None:
    m64 = np.uint64(m)
    pos = hashes % m64
    step = fmix64(hashes ^ np.uint64(_SECOND_PROBE))
    step %= np.uint64(m - 1)
    step += np.uint64(1)
    wrap = np.empty(hashes.size, dtype=np.bool_)
    for i in range(out.shape[1]):
        if i:
            pos += step  # both < m <= 2**63, so no overflow
            np.greater_equal(pos, m64, out=wrap)
            np.subtract(pos, m64, out=pos, where=wrap)
        out[:, i] = pos + np.uint64(i * m) if flat else pos


def probe_indices_one(hash_value: int, k: int, m: int) -> list[int]:
    """``probe_indices`` for one hash, in plain Python (numpy is slow for a single item)."""
    if m <= _SMALL_M:
        a, b = hash_value & 0xFFFFFFFF, (hash_value >> 32) | 1
        return [(((a + i * b) & 0xFFFFFFFF) * m) >> 32 for i in range(k)]
    pos = hash_value % m
    step = _fmix64_int(hash_value ^ _SECOND_PROBE) % (m - 1) + 1
    out = [pos]
    for _ in range(1, k):
        pos = (pos + step) % m
        out.append(pos)
    return out
