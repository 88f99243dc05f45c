"""Reservoir samples of a stream: uniform, stratified and weighted, deterministic and mergeable.

All randomness is counter-based: the uniform used for the ``n``-th offered item is a hash of
``n`` under the sketch's ``seed``, remixed with a 64-bit *domain* derived from the ``salt``
(and, for merges and strata, from what is being drawn)::

    bits(n) = fmix64(hash64(n, seed) ^ domain)        u(n) = (bits(n) >> 11) / 2**53

So a sample is a pure function of ``(seed, salt, stream)``: it is the same in every process,
and the state to snapshot is just ``(seed, salt, n, items[, keys])`` with no RNG object.

Reservoirs whose samples will be merged should be given distinct ``salt`` values (for
example the worker index): with equal salts two reservoirs use the same uniform at equal
stream positions, so the *joint* distribution of the merged sample is correlated (each
item's inclusion probability is still exact). ``salt`` is not a structural parameter:
reservoirs with different salts merge.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

import numpy as np
from numpy.typing import NDArray

from sketches._base import Sketch
from sketches._format import Codec, decode_items, encode_items
from sketches.hashing import check_seed, fmix64, hash64, hash64_many, hash_codes

__all__ = ["Reservoir", "StratifiedReservoir", "WeightedReservoir"]

Stratum: TypeAlias = str | bytes | int
StratumLike: TypeAlias = str | bytes | int | np.integer[Any]
Batch: TypeAlias = Sequence[Any] | NDArray[Any]

_MASK64: Final = (1 << 64) - 1
_F1: Final = 0xFF51AFD7ED558CCD
_F2: Final = 0xC4CEB9FE1A85EC53
_K_MAX: Final = 2**32 - 1
_TWO_M53: Final = 2.0**-53
_TWO_M52: Final = 2.0**-52
# Domain tags keep the uniforms of the stream, of merge decisions and of each side apart.
_TAG_STREAM: Final = 0x5EED_0001
_TAG_COUNT: Final = 0x5EED_0002
_TAG_SIDE_A: Final = 0x5EED_0003
_TAG_SIDE_B: Final = 0x5EED_0004
_STRATUM_TYPE: Final[dict[type, int]] = {str: 1, bytes: 2, int: 3}


# ---------------------------------------------------------------- counter-based randomness


def _fmix64(k: int) -> int:
    k ^= k >> 33
    k = (k * _F1) & _MASK64
    k ^= k >> 33
    k = (k * _F2) & _MASK64
    return k ^ (k >> 33)


def _mix(*values: int) -> int:
    """A 64-bit domain key from a tuple of ints (a chain of bijective mixes)."""
    h = 0x243F6A8885A308D3
    for v in values:
        h = _fmix64(((h * 0x100000001B3) ^ (v & _MASK64)) & _MASK64)
    return h


def _bits_one(counter: int, seed: int, domain: int) -> int:
    return _fmix64(hash64(counter, seed) ^ domain)


def _bits_many(counters: NDArray[np.uint64], seed: int, domain: int) -> NDArray[np.uint64]:
    return fmix64(hash64_many(counters, seed) ^ np.uint64(domain))


def _unit(bits: NDArray[np.uint64]) -> NDArray[np.float64]:
    """Top 53 bits as a float in ``[0, 1)`` (exact)."""
    return (bits >> np.uint64(11)).astype(np.float64) * _TWO_M53


# ---------------------------------------------------------------- validation helpers


def _check_k(name: str, k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 < int(k) <= _K_MAX:
        raise ValueError(f"{name} must be a positive int (at most 2**32 - 1), got {k!r}")
    return int(k)


def _check_salt(salt: object) -> int:
    if isinstance(salt, bool) or not isinstance(salt, (int, np.integer)) or not 0 <= int(salt) <= _MASK64:
        raise ValueError(f"salt must be an int in [0, 2**64), got {salt!r}")
    return int(salt)


def _k_from_error(epsilon: float, delta: float) -> int:
    if not (isinstance(epsilon, (int, float)) and 0 < epsilon < 1):
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon!r}")
    if not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return min(_K_MAX, math.ceil(math.log(2.0 / delta) / (2.0 * epsilon * epsilon)))


def _native(item: Any) -> Any:
    """numpy scalars become Python values, so a sample never depends on how items arrived."""
    return item.item() if isinstance(item, np.generic) else item


def _as_batch(items: object, what: str = "items") -> Batch:
    if isinstance(items, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be a list, tuple or numpy array of items, got {type(items).__name__}")
    if isinstance(items, np.ndarray):
        if items.ndim != 1:
            raise ValueError(f"{what} must be a 1-D array, got shape {items.shape}")
        return items
    if isinstance(items, (list, tuple)):
        return items
    if isinstance(items, Sequence):
        return list(items)
    raise TypeError(f"{what} must be a list, tuple or numpy array of items, got {type(items).__name__}")


def _take(seq: Batch, idx: NDArray[np.int64]) -> list[Any]:
    if isinstance(seq, np.ndarray):
        out: list[Any] = seq[idx].tolist()
        return out
    return [_native(seq[i]) for i in idx.tolist()]


def _load_items(data: bytes, name: str) -> list[Any]:
    try:
        return decode_items(data)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ValueError(f"corrupt {name} bytes: bad item block ({exc})") from exc


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MASK64


# ---------------------------------------------------------------- Reservoir


class Reservoir(Sketch):
    """Uniform random sample of ``k`` items from a stream (Vitter's Algorithm R).

    After ``n`` items every ``k``-subset of the stream is equally likely to be the sample
    (all items if ``n <= k``), so each item is kept with probability ``min(1, k / n)``.
    Error guarantee: the fraction ``p_hat`` of sampled items with any property estimates the
    stream fraction ``p`` with ``P(|p_hat - p| > eps) <= 2 exp(-2 k eps**2)`` (Hoeffding's
    bound, which holds for sampling without replacement), i.e.
    ``eps = sqrt(ln(2 / delta) / (2 k))`` with probability ``1 - delta``.

    Parameters
    ----------
    k : int
        Sample size, in ``[1, 2**32)``.
    seed : int, default 0
        Seed of the counter-based randomness, in ``[0, 2**32)``. Must match to merge.
    salt : int, default 0
        Keyword only, in ``[0, 2**64)``. Decorrelates reservoirs that will be merged (give
        each partial reservoir its own salt); may differ between merged reservoirs.

    Raises
    ------
    ValueError
        If a parameter is out of range.

    Notes
    -----
    The uniform of the ``n``-th item is a hash of ``n`` (see the module docstring). Item
    ``n > k`` replaces slot ``j = floor(u(n) * n)`` when ``j < k``. ``update`` computes all
    ``j`` of a batch at once and lets the last write to a slot win, which is exactly the
    sequential result. Items are stored as given (numpy scalars as Python values); to
    snapshot them they must be str, bytes, int, float, bool, None or tuples, lists and
    str-keyed dicts of those.

    Examples
    --------
    >>> from sketches.reservoir import Reservoir
    >>> r = Reservoir(1000, seed=1)
    >>> r.update(list(range(10_000)))
    >>> len(r), r.n
    (1000, 10000)
    >>> p_hat = sum(x % 2 == 0 for x in r.sample) / len(r)
    >>> abs(p_hat - 0.5) < math.sqrt(math.log(2 / 1e-3) / (2 * 1000))
    True
    >>> Reservoir.from_bytes(r.to_bytes()) == r
    True
    """

    __slots__ = ("_domain", "_items", "_k", "_n", "_salt", "_seed")

    _codec: Final = Codec("Reservoir", version=1, params="<IIQQ")

    def __init__(self, k: int, seed: int = 0, *, salt: int = 0) -> None:
        self._k = _check_k("k", k)
        self._seed = check_seed(seed)
        self._salt = _check_salt(salt)
        self._domain = _mix(_TAG_STREAM, self._salt)
        self._n = 0
        self._items: list[Any] = []

    @classmethod
    def from_error(cls, epsilon: float, delta: float = 0.01, seed: int = 0, *, salt: int = 0) -> Reservoir:
        """Reservoir whose sample fractions are within ``epsilon`` with probability ``1 - delta``.

        ``k = ceil(ln(2 / delta) / (2 epsilon**2))`` (Hoeffding).

        Parameters
        ----------
        epsilon : float
            Additive error of a sample proportion, in ``(0, 1)``.
        delta : float, default 0.01
            Failure probability, in ``(0, 1)``.
        seed, salt : int
            As for the constructor.

        Returns
        -------
        Reservoir

        Raises
        ------
        ValueError
            If ``epsilon`` or ``delta`` is not in ``(0, 1)``.

        Examples
        --------
        >>> Reservoir.from_error(0.05, 0.01).k
        1060
        """
        return cls(_k_from_error(epsilon, delta), seed, salt=salt)

    # -- parameters and state

    @property
    def k(self) -> int:
        """Sample size."""
        return self._k

    @property
    def seed(self) -> int:
        """Seed of the randomness."""
        return self._seed

    @property
    def salt(self) -> int:
        """Salt of this reservoir's random stream."""
        return self._salt

    @property
    def n(self) -> int:
        """Number of items offered so far (including merged reservoirs)."""
        return self._n

    @property
    def sample(self) -> list[Any]:
        """A copy of the sample: ``min(k, n)`` items, in slot order."""
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Reservoir(k={self._k}, seed={self._seed}, salt={self._salt}, n={self._n})"

    # -- updates

    def add(self, item: Any) -> None:
        """Offer one item.

        Parameters
        ----------
        item : Any
            Any value (see the class Notes for what can be snapshot).
        """
        self._n += 1
        n = self._n
        if n <= self._k:
            self._items.append(_native(item))
            return
        j = int((_bits_one(n, self._seed, self._domain) >> 11) * _TWO_M53 * n)
        if j < self._k:
            self._items[j] = _native(item)

    def update(self, items: Batch) -> None:
        """Offer a batch of items; the same state as ``add`` for each item in order.

        Parameters
        ----------
        items : list, tuple or 1-D numpy array
            Items in stream order.

        Raises
        ------
        TypeError
            If ``items`` is a str/bytes or not a sequence.
        ValueError
            If ``items`` is a numpy array that is not 1-D.
        """
        seq = _as_batch(items)
        self._offer(seq, None)

    def _offer(self, seq: Batch, idx: NDArray[np.int64] | None) -> None:
        """Offer ``seq[idx]`` (all of ``seq`` if ``idx`` is None) in order."""
        m = len(seq) if idx is None else len(idx)
        if m == 0:
            return
        n0 = self._n
        fill = max(0, min(self._k - n0, m))
        if fill:
            local = np.arange(fill, dtype=np.int64)
            self._items.extend(_take(seq, local if idx is None else idx[local]))
        if m > fill:
            pos = np.arange(n0 + fill + 1, n0 + m + 1, dtype=np.uint64)
            slots = (_unit(_bits_many(pos, self._seed, self._domain)) * pos.astype(np.float64)).astype(
                np.int64
            )
            hit = np.flatnonzero(slots < self._k)
            if hit.size:
                # Last write to a slot wins: keep the first occurrence in reversed order.
                uniq, first_rev = np.unique(slots[hit][::-1], return_index=True)
                local = hit[::-1][first_rev] + fill
                values = _take(seq, local if idx is None else idx[local])
                for slot, value in zip(uniq.tolist(), values, strict=True):
                    self._items[slot] = value
        self._n = n0 + m

    # -- merge

    def merge(self, other: Reservoir) -> None:
        """Merge a reservoir of a disjoint stream in place: the result samples the union.

        Parameters
        ----------
        other : Reservoir
            Same ``k`` and ``seed``; left unchanged.

        Raises
        ------
        ValueError
            If ``other`` is not a Reservoir, is ``self``, or ``k`` or ``seed`` differ.

        Notes
        -----
        With ``n1 = self.n`` and ``n2 = other.n``: if ``n1 + n2 <= k`` both samples are the
        whole streams and the result is their concatenation, bit-identical to one reservoir
        fed the first stream then the second. Otherwise the merge draws how many of the ``k``
        slots come from the first stream with the sequential rule "take from the first with
        probability ``r1 / (r1 + r2)``", ``r1, r2`` the stream items not yet taken; this makes
        the count hypergeometric, exactly the law of how many items of the first stream a
        uniform ``k``-subset of the union holds. It then takes that many items uniformly
        without replacement from each sample. A uniform subset of a uniform subset of a
        stream is a uniform subset of the stream, so given independent reservoirs (distinct
        salts) the result is a uniform ``k``-subset of the union; each item's inclusion
        probability is exactly ``k / (n1 + n2)`` in any case. The draws are counter-based
        uniforms in domains derived from ``(n1, n2, salts)``: deterministic given the two
        states. The merged reservoir keeps its own salt; later items use stream positions
        ``> n1 + n2``, which no reservoir with that salt has used.
        """
        self._check_mergeable(other, ("k", "seed"))
        n1, n2 = self._n, other._n
        if n2 == 0:
            return
        if n1 + n2 <= self._k:
            self._items.extend(other._items)
            self._n = n1 + n2
            return
        ctx = (n1, n2, self._salt, other._salt)
        from_self = self._merge_count(n1, n2, _mix(_TAG_COUNT, *ctx))
        mine = self._subsample(self._items, from_self, _mix(_TAG_SIDE_A, *ctx))
        theirs = self._subsample(other._items, self._k - from_self, _mix(_TAG_SIDE_B, *ctx))
        self._items = mine + theirs
        self._n = n1 + n2

    def _merge_count(self, n1: int, n2: int, domain: int) -> int:
        """How many of the ``k`` slots come from the first stream (hypergeometric draw)."""
        u = _unit(_bits_many(np.arange(1, self._k + 1, dtype=np.uint64), self._seed, domain)).tolist()
        r1, r2 = n1, n2
        for ui in u:
            if ui * (r1 + r2) < r1:
                r1 -= 1
            else:
                r2 -= 1
        return n1 - r1

    def _subsample(self, items: list[Any], count: int, domain: int) -> list[Any]:
        """``count`` items drawn uniformly without replacement, kept in slot order."""
        if count >= len(items):
            return list(items)
        keys = _bits_many(np.arange(1, len(items) + 1, dtype=np.uint64), self._seed, domain)
        chosen = np.sort(np.argsort(keys, kind="stable")[:count])
        return [items[i] for i in chosen.tolist()]

    # -- bytes

    def to_bytes(self) -> bytes:
        """Versioned, checksummed bytes: parameters, ``n`` and the sampled items.

        Raises
        ------
        TypeError
            If a sampled item cannot be stored (see the class Notes).
        """
        return self._codec.dump((self._k, self._seed, self._salt, self._n), encode_items(self._items))

    @classmethod
    def from_bytes(cls, data: bytes) -> Reservoir:
        """Rebuild a reservoir from ``to_bytes`` output.

        Raises
        ------
        ValueError
            If ``data`` is corrupt, truncated, of another family or inconsistent.
        """
        (k, seed, salt, n), payload = cls._codec.load(data)
        name = cls.__name__
        try:
            out = cls(k, seed, salt=salt)
        except ValueError as exc:
            raise ValueError(f"corrupt {name} bytes: {exc}") from exc
        items = _load_items(payload, name)
        if len(items) != min(k, n):
            raise ValueError(f"corrupt {name} bytes: {len(items)} items for k={k}, n={n}")
        out._n = n
        out._items = items
        return out

    @classmethod
    def _restore(cls, k: int, seed: int, salt: int, n: int, items: list[Any]) -> Reservoir:
        out = cls(k, seed, salt=salt)
        out._n = n
        out._items = items
        return out


# ---------------------------------------------------------------- StratifiedReservoir


def _check_stratum(stratum: object) -> Stratum:
    if isinstance(stratum, np.integer):
        stratum = int(stratum)
    if isinstance(stratum, bool):
        return int(stratum)
    if isinstance(stratum, (str, bytes, int)):
        if isinstance(stratum, int) and not -(2**63) <= stratum <= _MASK64:
            raise ValueError(f"integer stratum must fit in int64 or uint64, got {stratum}")
        return stratum
    raise TypeError(f"stratum must be str, bytes or int, got {type(stratum).__name__}")


def _group_by_hash(seq: NDArray[Any]) -> tuple[list[Stratum], list[NDArray[np.int64]]] | None:
    """``_group`` of an object array through 64-bit hashes (C speed), or ``None`` when an item
    does not hash or two distinct strata share a hash: then the caller groups by equality."""
    grouped = hash_codes(seq)
    if grouped is None:
        return None
    by_hash, first = grouped
    rank = np.argsort(first, kind="stable")  # strata in order of first appearance
    remap = np.empty(len(first), dtype=np.int64)
    remap[rank] = np.arange(len(first), dtype=np.int64)
    codes = remap[by_hash]
    reps = seq[first[rank]]
    return [_check_stratum(r) for r in reps.tolist()], _positions_by_code(codes, len(reps))


def _positions_by_code(codes: NDArray[np.int64], n: int) -> list[NDArray[np.int64]]:
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.cumsum(np.bincount(codes, minlength=n))[:-1])


def _group(strata: object, m: int) -> tuple[list[Stratum], list[NDArray[np.int64]]]:
    """Distinct strata in order of first appearance, and the positions of each (in order)."""
    seq = _as_batch(strata, "strata")
    if len(seq) != m:
        raise ValueError(f"strata must have one entry per item: got {len(seq)} strata for {m} items")
    if m == 0:
        return [], []
    if isinstance(seq, np.ndarray) and seq.dtype.kind == "O":
        grouped = _group_by_hash(seq)
        if grouped is not None:
            return grouped
        seq = seq.tolist()  # mixed types do not sort; group them by equality below
    if isinstance(seq, np.ndarray):
        if seq.dtype.kind not in "iuUS":
            raise TypeError(f"strata array must hold str, bytes or int, got dtype {seq.dtype}")
        uniq, first, inv = np.unique(seq, return_index=True, return_inverse=True)
        rank = np.argsort(first, kind="stable")
        remap = np.empty(len(uniq), dtype=np.int64)
        remap[rank] = np.arange(len(uniq), dtype=np.int64)
        codes = remap[inv.reshape(-1)]
        reps = [_check_stratum(s) for s in uniq[rank].tolist()]
    else:
        lookup: dict[Any, int] = {}
        try:
            code_list = [lookup.setdefault(s, len(lookup)) for s in seq]
        except TypeError as exc:
            raise TypeError(f"stratum must be str, bytes or int: {exc}") from exc
        codes = np.asarray(code_list, dtype=np.int64)
        reps = [_check_stratum(s) for s in lookup]
    return reps, _positions_by_code(codes, len(reps))


class StratifiedReservoir(Sketch):
    """One uniform reservoir per stratum, so a rare stratum is never crowded out.

    Stratum ``s`` keeps a uniform sample of ``k_s`` of its ``n_s`` items (Algorithm R, see
    ``Reservoir``); each of its items is kept with probability ``min(1, k_s / n_s)`` and
    every stratum seen is kept, however rare. Error guarantee per stratum: a sample fraction
    is within ``eps = sqrt(ln(2 / delta) / (2 min(k_s, n_s)))`` of the stratum's fraction with
    probability ``1 - delta`` (Hoeffding), and exact when ``n_s <= k_s``.

    Parameters
    ----------
    k_per_stratum : int or dict
        The sample size of every stratum, or a dict ``stratum -> k``.
    seed : int, default 0
        Seed of the randomness, in ``[0, 2**32)``. Must match to merge.
    default_k : int or None, default None
        Keyword only; with a dict, the sample size of strata not in it. If None, adding an
        item of a stratum not in the dict raises ``ValueError``. Not allowed with an int.
    salt : int, default 0
        Keyword only, in ``[0, 2**64)``: as for ``Reservoir``.

    Raises
    ------
    ValueError
        If a size or the seed or salt is out of range, or ``default_k`` is given with an int.
    TypeError
        If a stratum is not str, bytes or int.

    Notes
    -----
    Strata are str, bytes or int (numpy ints and bools become ints). Stratum ``s`` uses its
    own random stream, with salt ``mix(salt, type(s), hash64(s, seed))``, so strata are
    independent. The state is the per-stratum ``(n_s, items)``; memory grows with the number
    of strata. Reading an unseen stratum gives an empty sample and ``n == 0``.

    Examples
    --------
    >>> from sketches.reservoir import StratifiedReservoir
    >>> s = StratifiedReservoir(5, seed=3)
    >>> s.update(list(range(100_001)), ["common"] * 100_000 + ["rare"])
    >>> s.sample("rare"), s.n("rare"), s.n("common"), len(s.sample("common"))
    ([100000], 1, 100000, 5)
    >>> StratifiedReservoir({"a": 2}, default_k=1).k_for("b")
    1
    """

    __slots__ = ("_default_k", "_k", "_kmap", "_res", "_salt", "_seed")

    _codec: Final = Codec("StratifiedReservoir", version=1, params="<IQII")

    def __init__(
        self,
        k_per_stratum: int | Mapping[Stratum, int],
        seed: int = 0,
        *,
        default_k: int | None = None,
        salt: int = 0,
    ) -> None:
        self._kmap: dict[Stratum, int] = {}
        if isinstance(k_per_stratum, Mapping):
            self._k = 0
            for s, ks in k_per_stratum.items():
                self._kmap[_check_stratum(s)] = _check_k(f"k_per_stratum[{s!r}]", ks)
            self._default_k = None if default_k is None else _check_k("default_k", default_k)
        else:
            self._k = _check_k("k_per_stratum", k_per_stratum)
            if default_k is not None:
                raise ValueError(f"default_k only applies when k_per_stratum is a dict, got {default_k!r}")
            self._default_k = None
        self._seed = check_seed(seed)
        self._salt = _check_salt(salt)
        self._res: dict[Stratum, Reservoir] = {}

    @classmethod
    def from_error(
        cls, epsilon: float, delta: float = 0.01, seed: int = 0, *, salt: int = 0
    ) -> StratifiedReservoir:
        """Per-stratum sample fractions within ``epsilon`` with probability ``1 - delta`` each.

        ``k = ceil(ln(2 / delta) / (2 epsilon**2))`` for every stratum (Hoeffding).

        Parameters
        ----------
        epsilon : float
            Additive error of a stratum's sample proportion, in ``(0, 1)``.
        delta : float, default 0.01
            Failure probability per stratum, in ``(0, 1)``.
        seed, salt : int
            As for the constructor.

        Returns
        -------
        StratifiedReservoir

        Raises
        ------
        ValueError
            If ``epsilon`` or ``delta`` is not in ``(0, 1)``.

        Examples
        --------
        >>> StratifiedReservoir.from_error(0.1, 0.05).k_per_stratum
        185
        """
        return cls(_k_from_error(epsilon, delta), seed, salt=salt)

    # -- parameters and state

    @property
    def k_per_stratum(self) -> int | dict[Stratum, int]:
        """The common sample size, or a copy of the per-stratum dict."""
        return self._k if self._k else dict(self._kmap)

    @property
    def default_k(self) -> int | None:
        """Sample size of strata missing from the dict (None: they are refused)."""
        return self._default_k

    @property
    def seed(self) -> int:
        """Seed of the randomness."""
        return self._seed

    @property
    def salt(self) -> int:
        """Salt of this sketch's random streams."""
        return self._salt

    @property
    def strata(self) -> list[Stratum]:
        """Strata seen so far, in order of first appearance."""
        return list(self._res)

    def k_for(self, stratum: StratumLike) -> int:
        """Sample size of ``stratum``.

        Raises
        ------
        ValueError
            If the stratum is not in the dict and there is no ``default_k``.
        """
        s = _check_stratum(stratum)
        if self._k:
            return self._k
        if s in self._kmap:
            return self._kmap[s]
        if self._default_k is not None:
            return self._default_k
        raise ValueError(f"unknown stratum {s!r}: not in k_per_stratum and no default_k")

    def n(self, stratum: StratumLike) -> int:
        """Items seen in ``stratum`` (0 if unseen)."""
        res = self._res.get(_check_stratum(stratum))
        return 0 if res is None else res.n

    def sample(self, stratum: StratumLike) -> list[Any]:
        """A copy of the sample of ``stratum`` (empty if unseen)."""
        res = self._res.get(_check_stratum(stratum))
        return [] if res is None else res.sample

    def samples(self) -> dict[Stratum, list[Any]]:
        """All samples, ``stratum -> items``, in order of first appearance."""
        return {s: r.sample for s, r in self._res.items()}

    def __repr__(self) -> str:
        return (
            f"StratifiedReservoir(k_per_stratum={self.k_per_stratum!r}, seed={self._seed}, "
            f"default_k={self._default_k}, salt={self._salt}, strata={len(self._res)})"
        )

    # -- updates

    def _stratum_salt(self, s: Stratum) -> int:
        return _mix(self._salt, _STRATUM_TYPE[type(s)], hash64(s, self._seed))

    def _reservoir(self, s: Stratum) -> Reservoir:
        res = self._res.get(s)
        if res is None:
            res = self._res[s] = Reservoir(self.k_for(s), self._seed, salt=self._stratum_salt(s))
        return res

    def add(self, item: Any, stratum: StratumLike) -> None:
        """Offer one item of ``stratum``.

        Raises
        ------
        ValueError
            If the stratum has no sample size (see ``default_k``).
        TypeError
            If the stratum is not str, bytes or int.
        """
        self._reservoir(_check_stratum(stratum)).add(item)

    def update(self, items: Batch, strata: Sequence[StratumLike] | NDArray[Any]) -> None:
        """Offer a batch; the same state as ``add`` for each ``(item, stratum)`` in order.

        Parameters
        ----------
        items : list, tuple or 1-D numpy array
            Items in stream order.
        strata : list, tuple or 1-D numpy array
            The stratum of each item, same length.

        Raises
        ------
        ValueError
            If the lengths differ or a stratum has no sample size (nothing is added then).
        TypeError
            If a stratum is not str, bytes or int.
        """
        seq = _as_batch(items)
        reps, groups = _group(strata, len(seq))
        for s in reps:  # refuse before changing anything
            if s not in self._res:
                self.k_for(s)
        for s, idx in zip(reps, groups, strict=True):
            self._reservoir(s)._offer(seq, idx)

    # -- merge

    def merge(self, other: StratifiedReservoir) -> None:
        """Merge stratum-wise in place (see ``Reservoir.merge`` for the guarantee).

        Parameters
        ----------
        other : StratifiedReservoir
            Same ``k_per_stratum``, ``default_k`` and ``seed``; left unchanged.

        Raises
        ------
        ValueError
            If the sketches are not mergeable.

        Notes
        -----
        A stratum present on one side only is taken as is, so merging sketches with disjoint
        strata (and equal salts) is bit-identical to one sketch fed both streams.
        """
        self._check_mergeable(other, ("k_per_stratum", "default_k", "seed"))
        for s, res in other._res.items():
            mine = self._res.get(s)
            if mine is None:
                # Adopt the items under this sketch's own stream for the stratum.
                self._res[s] = Reservoir._restore(res.k, self._seed, self._stratum_salt(s), res.n, res.sample)
            else:
                mine.merge(res)

    # -- bytes

    def to_bytes(self) -> bytes:
        """Versioned, checksummed bytes: parameters, the dict of sizes and each stratum's sample.

        Raises
        ------
        TypeError
            If a sampled item cannot be stored (see ``Reservoir``).
        """
        kmap = [[s, k] for s, k in self._kmap.items()]
        data = [[s, r.n, r.sample] for s, r in self._res.items()]
        params = (self._seed, self._salt, self._k, self._default_k or 0)
        return self._codec.dump(params, encode_items([kmap, data]))

    @classmethod
    def from_bytes(cls, data: bytes) -> StratifiedReservoir:
        """Rebuild from ``to_bytes`` output.

        Raises
        ------
        ValueError
            If ``data`` is corrupt, truncated, of another family or inconsistent.
        """
        (seed, salt, k, default_k), payload = cls._codec.load(data)
        name = cls.__name__
        block = _load_items(payload, name)
        try:
            return cls._build(seed, salt, k, default_k, block)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"corrupt {name} bytes: {exc}") from exc

    @classmethod
    def _build(cls, seed: int, salt: int, k: int, default_k: int, block: list[Any]) -> StratifiedReservoir:
        if len(block) != 2 or not all(isinstance(b, list) for b in block):
            raise ValueError("expected [sizes, strata]")
        kmap_rows, rows = block
        if k and (kmap_rows or default_k):
            raise ValueError("a common k with per-stratum sizes")
        kmap: dict[Stratum, int] = {}
        for row in kmap_rows:
            if not (isinstance(row, list) and len(row) == 2) or isinstance(row[0], bool):
                raise ValueError(f"bad size entry {row!r}")
            s = _check_stratum(row[0])
            if s in kmap:
                raise ValueError(f"duplicate stratum {s!r}")
            kmap[s] = row[1]
        out = cls(k if k else kmap, seed, default_k=None if k else (default_k or None), salt=salt)
        for row in rows:
            if not (isinstance(row, list) and len(row) == 3) or isinstance(row[0], bool):
                raise ValueError(f"bad stratum entry {str(row)[:50]}")
            s, n, items = _check_stratum(row[0]), row[1], row[2]
            ks = out.k_for(s)
            if s in out._res or not _is_count(n) or n == 0 or not isinstance(items, list):
                raise ValueError(f"bad stratum entry for {s!r}")
            if len(items) != min(ks, n):
                raise ValueError(f"{len(items)} items for stratum {s!r} with k={ks}, n={n}")
            out._res[s] = Reservoir._restore(ks, seed, out._stratum_salt(s), n, items)
        return out


# ---------------------------------------------------------------- WeightedReservoir


def _neg(x: float) -> float:
    return -x


def _check_weights(weights: object, m: int) -> NDArray[np.float64]:
    if isinstance(weights, (str, bytes)):
        raise TypeError(f"weights must be numbers, got {type(weights).__name__}")
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"weights must be finite numbers > 0: {exc}") from exc
    if w.ndim != 1 or len(w) != m:
        raise ValueError(f"weights must have one entry per item: got shape {w.shape} for {m} items")
    bad = ~(np.isfinite(w) & (w > 0))
    if bad.any():
        raise ValueError(f"weights must be finite and > 0, got {w[bad][0]!r}")
    return w


class WeightedReservoir(Sketch):
    """Weighted random sample of ``k`` items without replacement (A-Res, Efraimidis-Spirakis).

    Item ``i`` with weight ``w_i`` gets the key ``u_i ** (1 / w_i)`` for a uniform ``u_i``,
    and the sample is the ``k`` items with the largest keys. This is exactly successive
    sampling: the highest key is item ``i`` with probability ``w_i / W`` (``W`` the total
    weight), the next one is drawn likewise among the rest, and so on: the sample in key order
    is ``(i_1, ..., i_k)`` with probability ``prod_j w_{i_j} / (W - w_{i_1} - ... - w_{i_{j-1}})``.
    An item's inclusion probability grows with its weight; for ``k = 1`` it is ``w_i / W``.

    Parameters
    ----------
    k : int
        Sample size, in ``[1, 2**32)``.
    seed : int, default 0
        Seed of the randomness, in ``[0, 2**32)``. Must match to merge.
    salt : int, default 0
        Keyword only, in ``[0, 2**64)``: as for ``Reservoir`` (use distinct salts for
        reservoirs that will be merged).

    Raises
    ------
    ValueError
        If a parameter is out of range.

    Notes
    -----
    Keys are kept as ``log(u) / w`` (same order, no underflow), with
    ``u = ((bits >> 12) + 0.5) / 2**52`` in ``(0, 1)`` from the item's stream position.
    Ties in key go to the earlier item, so ``update`` equals repeated ``add`` bit for bit.
    The state is ``n``, the total weight and the ``min(k, n)`` (key, item) pairs.

    Examples
    --------
    >>> from sketches.reservoir import WeightedReservoir
    >>> r = WeightedReservoir(10, seed=2)
    >>> r.update(list(range(1000)) + ["heavy"], [1.0] * 1000 + [1e6])
    >>> r.sample[0], len(r), r.n, r.total_weight
    ('heavy', 10, 1001, 1001000.0)
    """

    __slots__ = ("_domain", "_items", "_k", "_keys", "_n", "_salt", "_seed", "_total")

    _codec: Final = Codec("WeightedReservoir", version=1, params="<IIQQd")

    def __init__(self, k: int, seed: int = 0, *, salt: int = 0) -> None:
        self._k = _check_k("k", k)
        self._seed = check_seed(seed)
        self._salt = _check_salt(salt)
        self._domain = _mix(_TAG_STREAM, self._salt)
        self._n = 0
        self._total = 0.0
        self._keys: list[float] = []
        self._items: list[Any] = []

    @property
    def k(self) -> int:
        """Sample size."""
        return self._k

    @property
    def seed(self) -> int:
        """Seed of the randomness."""
        return self._seed

    @property
    def salt(self) -> int:
        """Salt of this reservoir's random stream."""
        return self._salt

    @property
    def n(self) -> int:
        """Number of items offered so far."""
        return self._n

    @property
    def total_weight(self) -> float:
        """Sum of the weights offered so far (summed in stream order)."""
        return self._total

    @property
    def sample(self) -> list[Any]:
        """A copy of the sample, highest key first (the first is a draw with prob. ``w_i / W``)."""
        return list(self._items)

    @property
    def keys(self) -> list[float]:
        """The sample's keys ``log(u) / w``, in the order of ``sample`` (descending)."""
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"WeightedReservoir(k={self._k}, seed={self._seed}, salt={self._salt}, n={self._n})"

    def _new_keys(self, first: int, w: NDArray[np.float64]) -> NDArray[np.float64]:
        pos = np.arange(first, first + len(w), dtype=np.uint64)
        # 52 bits + 0.5 is exact in a float64, so u is strictly inside (0, 1).
        u = ((_bits_many(pos, self._seed, self._domain) >> np.uint64(12)).astype(np.float64) + 0.5) * _TWO_M52
        out: NDArray[np.float64] = np.log(u) / w
        return out

    def add(self, item: Any, weight: float) -> None:
        """Offer one item with a weight.

        Raises
        ------
        ValueError
            If ``weight`` is not finite and > 0.
        """
        w = float(_check_weights([weight], 1)[0]) if type(weight) is not float else weight
        if not (math.isfinite(w) and w > 0):
            raise ValueError(f"weights must be finite and > 0, got {w!r}")
        u = ((_bits_one(self._n + 1, self._seed, self._domain) >> 12) + 0.5) * _TWO_M52
        # np.log as in the batch path (math.log may differ in the last bit); IEEE division.
        key = float(np.log(np.array([u]))[0]) / w
        self._n += 1
        self._total += w
        keys = self._keys
        if len(keys) == self._k:
            if not key > keys[-1]:
                return
            keys.pop()
            self._items.pop()
        at = bisect.bisect_right(keys, -key, key=_neg)
        keys.insert(at, key)
        self._items.insert(at, _native(item))

    def update(self, items: Batch, weights: Sequence[float] | NDArray[Any]) -> None:
        """Offer a batch; the same state as ``add`` for each ``(item, weight)`` in order.

        Parameters
        ----------
        items : list, tuple or 1-D numpy array
            Items in stream order.
        weights : sequence or 1-D numpy array of float
            Their weights, same length, each finite and > 0.

        Raises
        ------
        ValueError
            If the lengths differ or a weight is not finite and > 0 (nothing is added then).
        """
        seq = _as_batch(items)
        w = _check_weights(weights, len(seq))
        if len(w) == 0:
            return
        new_keys = self._new_keys(self._n + 1, w)
        self._total = float(np.add.accumulate(np.concatenate(([self._total], w)))[-1])
        self._n += len(w)
        self._select(np.concatenate((np.array(self._keys, dtype=np.float64), new_keys)), self._items, seq)

    def _select(self, keys: NDArray[np.float64], old: list[Any], new: Batch) -> None:
        """Keep the top ``k`` of ``keys`` (``old`` then ``new`` items); ties: earlier wins."""
        if len(keys) > self._k:
            kth = np.partition(keys, len(keys) - self._k)[len(keys) - self._k]
            cand = np.flatnonzero(keys >= kth)
        else:
            cand = np.arange(len(keys))
        top = cand[np.argsort(-keys[cand], kind="stable")[: self._k]]
        n_old = len(old)
        from_new = top[top >= n_old] - n_old
        fresh = iter(_take(new, from_new)) if len(from_new) else iter(())
        self._items = [old[i] if i < n_old else next(fresh) for i in top.tolist()]
        self._keys = keys[top].tolist()

    def merge(self, other: WeightedReservoir) -> None:
        """Merge a reservoir of a disjoint stream in place: top ``k`` keys of the union.

        Parameters
        ----------
        other : WeightedReservoir
            Same ``k`` and ``seed``; left unchanged.

        Raises
        ------
        ValueError
            If ``other`` is not a WeightedReservoir, is ``self``, or ``k`` or ``seed`` differ.

        Notes
        -----
        Every item of the union got its key ``u ** (1 / w)`` when it was offered, and the top
        ``k`` keys of the union are among the top ``k`` of either side, so the result is
        exactly the A-Res sample of the union *for those keys*: what one reservoir would hold
        had it drawn the same uniforms. It is not bit-identical to one reservoir fed both
        streams, which would draw other uniforms for the second stream's positions. When the
        keys of the two sides are independent (reservoirs with distinct salts fed disjoint
        streams) it is therefore a correct weighted sample without replacement of the union;
        with equal salts, items at equal positions of the two streams share ``u``. ``n`` and
        ``total_weight`` add up.
        """
        self._check_mergeable(other, ("k", "seed"))
        self._n += other._n
        self._total += other._total
        self._select(np.array(self._keys + other._keys, dtype=np.float64), self._items, other._items)

    def to_bytes(self) -> bytes:
        """Versioned, checksummed bytes: parameters, ``n``, total weight, keys and items.

        Raises
        ------
        TypeError
            If a sampled item cannot be stored (see ``Reservoir``).
        """
        params = (self._k, self._seed, self._salt, self._n, self._total)
        return self._codec.dump(
            params, np.array(self._keys, dtype="<f8").tobytes() + encode_items(self._items)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> WeightedReservoir:
        """Rebuild from ``to_bytes`` output.

        Raises
        ------
        ValueError
            If ``data`` is corrupt, truncated, of another family or inconsistent.
        """
        (k, seed, salt, n, total), payload = cls._codec.load(data)
        name = cls.__name__
        try:
            out = cls(k, seed, salt=salt)
        except ValueError as exc:
            raise ValueError(f"corrupt {name} bytes: {exc}") from exc
        size = min(k, n)
        if len(payload) < 8 * size:
            raise ValueError(f"corrupt {name} bytes: {len(payload)} payload bytes for {size} keys")
        keys = np.frombuffer(payload[: 8 * size], dtype="<f8").astype(np.float64)
        items = _load_items(payload[8 * size :], name)
        if len(items) != size:
            raise ValueError(f"corrupt {name} bytes: {len(items)} items for k={k}, n={n}")
        if np.isnan(keys).any() or (keys > 0).any() or (np.diff(keys) > 0).any():
            raise ValueError(f"corrupt {name} bytes: keys must be <= 0 and in descending order")
        if math.isnan(total) or total < 0 or (n == 0) != (total == 0):
            raise ValueError(f"corrupt {name} bytes: total weight {total!r} for n={n}")
        out._n, out._total, out._keys, out._items = n, total, keys.tolist(), items
        return out
