"""HyperLogLog distinct counting: the HIP estimator, Ertl's improved estimator, a sparse mode.

Two representations of one register state:

* **sparse** (small sets): a sorted ``uint32`` array of entries ``(I << 6) | r'`` where ``I`` is
  the top ``25`` bits of the item hash (precision ``p' = 25``) and ``r'`` the largest rank seen
  for that index. It converts exactly to dense registers.
* **dense**: ``2**p`` ``uint8`` registers.

The sketch is sparse exactly while the items seen hit at most ``sparse_limit`` distinct
``p'``-indices. That count depends only on the *set* of items, never on the order of
insertions or merges, so the registers of ``merge(A, B)`` are bit-identical to those of one
sketch fed both.

Next to the registers, a sketch built from one stream keeps the HIP (historic inverse
probability) estimate, a martingale updated on every register change; see ``HyperLogLog``.
"""

from __future__ import annotations

import math
import struct
from typing import Final

import numpy as np
from numpy.typing import NDArray

from sketches._base import Sketch
from sketches._format import Codec
from sketches.hashing import Item, Items, check_seed, hash64, hash64_many

__all__ = ["HyperLogLog"]

_MASK64: Final = (1 << 64) - 1
_SP: Final = 25  # sparse precision p'
_SQ: Final = 64 - _SP  # bits after a sparse index; sparse ranks are in 1..SQ+1
_RANK_BITS: Final = 6
_RANK_MASK: Final = (1 << _RANK_BITS) - 1
_MIN_P: Final = 4
_MAX_P: Final = 18
_ALPHA_INF: Final = 1.0 / (2.0 * math.log(2.0))
_RSE_FACTOR: Final = 1.04  # Ertl's estimator (1.039 asymptotically); also used by from_error
_HIP_RSE_FACTOR: Final = math.sqrt(math.log(2.0))  # 0.8326: HIP, derived in the class Notes
_CHUNK: Final = 1 << 15  # batch chunk: temporaries stay in cache
_BUFFER_LIMIT: Final = 128  # pending sparse entries of single adds, applied in one numpy step
_DENSE_BIT: Final = 1  # payload mode byte: bit 0 dense, bit 1 HIP state follows
_HIP_BIT: Final = 2
_HIP_STATE: Final = struct.Struct("<dd")  # hip, kxq
_POW2: Final = np.ldexp(1.0, -np.arange(66))  # 2**-k, exact
_POW2_LIST: Final = [float(x) for x in _POW2]
_CODEC: Final = Codec("HyperLogLog", version=1, params="<BI")
_U64 = np.uint64


def _ranks(hashes: NDArray[np.uint64], precision: int) -> NDArray[np.uint8]:
    """1 + leading zeros of the ``64 - precision`` bits after the index, in ``1..65 - precision``.

    numpy has no count-leading-zeros: the float64 exponent of the remainder gives its bit
    length. A remainder of at most 53 bits converts exactly; wider ones (``precision < 11``)
    are shifted down to their top 53 bits first, and the rare items whose top bits are all
    zero are then ranked exactly one by one.
    """
    width = 64 - precision
    shift = max(0, width - 53)
    rest = hashes & _U64((1 << width) - 1)
    if shift:
        rest >>= _U64(shift)
    exponent = rest.astype(np.float64).view(np.uint64)
    exponent >>= _U64(52)  # biased exponent; 0 for a zero remainder
    rank = np.subtract(_U64(1087 - precision - shift), exponent)  # 65 - precision - bit_length
    np.minimum(rank, _U64(65 - precision), out=rank)  # a zero remainder gets the top rank
    out = rank.astype(np.uint8)
    if shift:
        for i in np.flatnonzero(exponent == 0):
            out[i] = _rank_one(int(hashes[i]), precision)
    return out


def _sparse_entries(hashes: NDArray[np.uint64]) -> NDArray[np.uint32]:
    """Sparse entries ``(I << 6) | r'`` of hashes, in order."""
    entries = ((hashes >> _U64(_SQ)) << _U64(_RANK_BITS)) | _ranks(hashes, _SP).astype(np.uint64)
    return entries.astype(np.uint32)


def _rank_one(h: int, precision: int) -> int:
    return min(65 - ((h << precision) & _MASK64).bit_length(), 65 - precision)


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        z_old = z
        z += x * y
        y += y
        if z == z_old:
            return z


def _tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        z_old = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == z_old:
            return z / 3.0


def ertl_estimate(histogram: NDArray[np.int64], m: int) -> float:
    """Ertl's improved raw estimator from a register histogram.

    Parameters
    ----------
    histogram : ndarray of int
        ``histogram[k]`` is the number of registers holding ``k``, for ``k = 0 .. q + 1``.
    m : int
        Number of registers (the histogram's sum).

    Returns
    -------
    float
        ``alpha_inf * m**2 / (m * sigma(C0/m) + sum_k C_k 2**-k + m * tau(1 - C_{q+1}/m) 2**-q)``,
        evaluated with Horner's scheme, ``alpha_inf = 1 / (2 ln 2)``.

    Notes
    -----
    O. Ertl, "New cardinality estimation algorithms for HyperLogLog sketches", 2017, eq. (24)
    and Algorithm 6. ``sigma`` corrects the small range (empty registers) and ``tau`` the
    saturated top rank, so there is no hand-over bias between linear counting and raw HLL.
    """
    counts = [int(c) for c in histogram]
    q = len(counts) - 2
    z = m * _tau(1.0 - counts[q + 1] / m)
    for k in range(q, 0, -1):
        z = 0.5 * (z + counts[k])
    z += m * _sigma(counts[0] / m)
    return _ALPHA_INF * m * m / z if z > 0.0 else math.inf  # z = 0 only when all registers saturate


def _previous_values(
    keys: NDArray[np.intp], values: NDArray[np.uint8], before: NDArray[np.uint8]
) -> NDArray[np.uint8]:
    """Value of register ``keys[i]`` just before ``values[i]`` is applied, in batch order.

    ``before[i]`` is that register's value before the batch. Sorting ``key << s | position``
    (unique, so the fast unstable sort keeps batch order within a register) groups the
    candidates of one register; a running maximum over ``key << 7 | value`` (ranks are below
    128) is then the per-register running maximum. Shifted by one it gives what each candidate
    finds in its register; at a register's first candidate it is negative and ``before`` wins.
    """
    if keys.size < 2:
        return before
    shift = int(keys.size - 1).bit_length()
    packed = np.sort((keys << shift) | np.arange(keys.size))
    order = packed & ((1 << shift) - 1)
    key7 = (packed >> shift) << 7
    running = np.maximum.accumulate(key7 | values[order])
    earlier = np.empty(keys.size, dtype=np.int64)
    earlier[0] = 0
    np.subtract(running[:-1], key7[1:], out=earlier[1:])
    out = np.empty_like(before)
    out[order] = np.maximum(earlier, before[order])
    return out


def _kxq_exact(histogram: NDArray[np.int64]) -> float:
    """``sum_k histogram[k] * 2**-k``, correctly rounded (every term is exact, fsum is exact)."""
    return math.fsum(int(c) * _POW2_LIST[k] for k, c in enumerate(histogram.tolist()) if c)


class HyperLogLog(Sketch):
    """Distinct-count sketch: HyperLogLog with ``2**p`` registers, the HIP estimator while the
    sketch comes from one stream, Ertl's improved estimator after a merge.

    Parameters
    ----------
    p : int, default 12
        Precision, in ``4 .. 18``: ``m = 2**p`` registers of 6 bits (``0.75 * m`` bytes dense).
    seed : int, default 0
        Hash seed in ``[0, 2**32)``; only sketches with equal ``p`` and ``seed`` merge.

    Raises
    ------
    ValueError
        If ``p`` or ``seed`` is out of range.

    Notes
    -----
    Error guarantee. ``estimate()`` returns the best estimate the state allows:

    * **HIP** (``hip_valid``: the sketch was fed from one stream, possibly through ``to_bytes``
      and back): relative standard error ``RSE = sqrt(ln 2 / m) = 0.833 / sqrt(m)`` (1.30 % for
      ``p = 12``), unbiased at every ``n``. Every register change ``old -> new`` adds
      ``1 / P(change)`` to the estimate, where ``P(change) = kxq / m`` and
      ``kxq = sum_j 2**-register_j`` is the chance that a new item raises some register
      (Ting 2014, "Streamed approximate counting of distinct elements"; Cohen 2015, "All-distances
      sketches, revisited: HIP estimators"). The sum is a martingale, so it is unbiased. Its
      variance is ``sum_t (1 / P_t - 1)`` over the distinct items; with
      ``P(x) ~ m / (2 ln 2 x)`` for ``x >> m`` this is ``ln 2 * n**2 / m``, hence the constant
      ``sqrt(ln 2) = 0.8326`` (the figure DataSketches quotes for its HIP estimator).
      While sparse, the increments use the ``2**25`` sparse registers, so HIP is nearly exact
      for small sets (measured relative RMSE below 0.001 % at ``n = 10`` and ``100``); the
      martingale property holds because the structure in force is a function of the past.
    * **Ertl's improved estimator** (``estimate_registers()``; what ``estimate()`` uses after a
      ``merge`` of two non-empty sketches, since HIP states cannot be combined): relative
      standard error about ``RSE = 1.04 / sqrt(m)`` (1.63 % for ``p = 12``; 1.039 asymptotically,
      the Cramer-Rao bound for register-only estimators), without the mid-range bias of the
      raw HyperLogLog estimator (Ertl 2017). While sparse it is Ertl's estimator on the
      ``2**25`` sparse registers, practically exact.

    ``rse``, ``lower_bound(k)`` and ``upper_bound(k)`` use the RSE of the estimator in use
    (conservative while sparse). ``from_error`` sizes with ``1.04`` so its guarantee survives
    merges.

    Hash: item ``x`` maps to ``h = hash64(x, seed)``; register ``h >> (64 - p)``; rank is one
    plus the number of leading zeros of the remaining ``64 - p`` bits (so ``1 .. 65 - p``).

    Examples
    --------
    >>> import numpy as np
    >>> hll = HyperLogLog(p=12, seed=1)
    >>> hll.update(np.arange(10_000))
    >>> abs(hll.estimate() - 10_000) < 0.04 * 10_000  # HIP: 3 RSE = 3.9 %
    True
    >>> other = HyperLogLog(p=12, seed=1)
    >>> other.update(np.arange(5_000, 20_000))
    >>> hll.merge(other)
    >>> hll.hip_valid, hll.estimate() == hll.estimate_registers()
    (False, True)
    >>> abs(hll.estimate() - 20_000) < 0.05 * 20_000  # Ertl: 3 RSE = 4.9 %
    True
    >>> small = HyperLogLog()
    >>> small.update(["a", "b", "c", "a"])
    >>> round(small.estimate())
    3
    """

    __slots__ = ("_buf", "_hip", "_hip_valid", "_kxq", "_p", "_regs", "_seed", "_sparse")

    def __init__(self, p: int = 12, seed: int = 0) -> None:
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not _MIN_P <= p <= _MAX_P:
            raise ValueError(f"p must be an int in [{_MIN_P}, {_MAX_P}], got {p!r}")
        self._p = int(p)
        self._seed = check_seed(seed)
        self._sparse: NDArray[np.uint32] | None = np.empty(0, dtype=np.uint32)
        self._regs: NDArray[np.uint8] | None = None
        self._buf: list[int] = []  # sparse entries of single adds, applied in order by _flush
        self._hip = 0.0  # HIP estimate
        self._kxq = float(1 << _SP)  # sum of 2**-register over the structure in force
        self._hip_valid = True

    @classmethod
    def from_error(cls, rse: float, seed: int = 0) -> HyperLogLog:
        """Smallest sketch whose relative standard error is at most ``rse``, even after merges.

        Parameters
        ----------
        rse : float
            Target relative standard error in ``(0, 1)``.
        seed : int, default 0
            Hash seed.

        Returns
        -------
        HyperLogLog
            With ``p = ceil(log2((1.04 / rse) ** 2))``, at least 4 (``1.04 / sqrt(m)`` is the RSE
            of the post-merge estimator; an unmerged sketch does better, ``0.833 / sqrt(m)``).

        Raises
        ------
        ValueError
            If ``rse`` is not in ``(0, 1)`` or would need ``p > 18``.

        Examples
        --------
        >>> HyperLogLog.from_error(0.02).p
        12
        """
        if not 0.0 < rse < 1.0:
            raise ValueError(f"rse must be in (0, 1), got {rse!r}")
        p = max(_MIN_P, math.ceil(math.log2((_RSE_FACTOR / rse) ** 2)))
        if p > _MAX_P:
            raise ValueError(f"rse {rse!r} needs p = {p} > {_MAX_P}")
        return cls(p, seed)

    # -- parameters and state -------------------------------------------------------------------
    @property
    def p(self) -> int:
        """Precision: the sketch has ``2**p`` registers."""
        return self._p

    @property
    def seed(self) -> int:
        """Hash seed."""
        return self._seed

    @property
    def m(self) -> int:
        """Number of registers, ``2**p``."""
        return 1 << self._p

    @property
    def sparse_limit(self) -> int:
        """Most sparse entries before the sketch turns dense: ``3 m / 16`` (4-byte entries
        stay no larger than the 6-bit dense registers)."""
        return 3 * self.m // 16

    @property
    def is_sparse(self) -> bool:
        """Whether the state is held as sparse entries (a function of the set of items seen)."""
        self._flush()
        return self._regs is None

    @property
    def hip_valid(self) -> bool:
        """Whether ``estimate()`` is the HIP estimate: False once two non-empty sketches merged."""
        return self._hip_valid

    @property
    def rse(self) -> float:
        """Relative standard error of ``estimate()``: ``sqrt(ln 2 / m)`` with HIP, else ``1.04 / sqrt(m)``."""
        return (_HIP_RSE_FACTOR if self._hip_valid else _RSE_FACTOR) / math.sqrt(self.m)

    # -- updates --------------------------------------------------------------------------------
    def add(self, item: Item) -> None:
        """Add one item (str, bytes or int)."""
        h = hash64(item, self._seed)
        regs = self._regs
        if regs is None:
            rest = (h << _SP) & _MASK64  # inlined _rank_one: this is the per-event hot path
            self._buf.append((h >> _SQ) << _RANK_BITS | (65 - rest.bit_length() if rest else _SQ + 1))
            if len(self._buf) >= _BUFFER_LIMIT:
                self._flush()
            return
        p = self._p
        rest = (h << p) & _MASK64
        rank = 65 - rest.bit_length() if rest else 65 - p
        i = h >> (64 - p)
        old = int(regs[i])
        if rank > old:
            regs[i] = rank
            if self._hip_valid:  # the same float operations, in the same order, as _hip_step
                kxq = self._kxq
                self._hip += (1 << p) / kxq
                self._kxq = kxq + (_POW2_LIST[rank] - _POW2_LIST[old])

    def update(self, items: Items) -> None:
        """Add a batch: a list/tuple of str/bytes/int or a numpy integer array.

        Leaves exactly the state of ``add`` called on each item, HIP estimate included. All
        items are checked before any is added, so a ``TypeError`` leaves the sketch unchanged.
        """
        if isinstance(items, np.ndarray) and items.dtype.kind in "iub":
            flat = items.reshape(-1)  # integer arrays cannot fail to hash: hash chunk by chunk
            for start in range(0, flat.size, _CHUNK):
                self._update_hashes(hash64_many(flat[start : start + _CHUNK], self._seed))
            return
        hashes = hash64_many(items, self._seed)
        for start in range(0, hashes.size, _CHUNK):
            self._update_hashes(hashes[start : start + _CHUNK])

    def _update_hashes(self, hashes: NDArray[np.uint64]) -> None:
        """Apply one chunk of hashes in order (chunks keep the temporaries in cache)."""
        self._flush()
        start = 0
        while self._sparse is not None and start < hashes.size:
            # Small slices while sparse: random data turns dense after about one slice.
            take = max(2 * (self.sparse_limit + 1 - self._sparse.size), 1024)
            start += self._fold_sparse(_sparse_entries(hashes[start : start + take]))
        while self._regs is not None and start < hashes.size:
            # A young sketch changes often: slices of about m / P(change) items keep the
            # candidates per slice near m instead of the whole chunk.
            take = max(4 * self.m, int(self.m / self._kxq * self.m)) if self._hip_valid else hashes.size
            rest = hashes[start : start + take]
            start += rest.size
            index = (rest >> _U64(64 - self._p)).astype(np.intp)
            self._fold_dense(self._regs, index, _ranks(rest, self._p))

    def _flush(self) -> None:
        """Apply the sparse entries buffered by ``add``, in order."""
        if not self._buf:
            return
        entries = np.array(self._buf, dtype=np.uint32)
        self._buf.clear()
        done = self._fold_sparse(entries)
        if done < entries.size:
            assert self._regs is not None
            self._fold_dense(self._regs, *self._dense_of(entries[done:]))

    def _fold_sparse(self, entries: NDArray[np.uint32]) -> int:
        """Apply sparse entries in order; return how many were applied, which is fewer than
        given only when the sketch turned dense (right after the entry that made it so)."""
        sparse = self._sparse
        assert sparse is not None
        index = (entries >> np.uint32(_RANK_BITS)).astype(np.intp)
        rank = (entries & np.uint32(_RANK_MASK)).astype(np.uint8)
        current = np.zeros(entries.size, dtype=np.uint8)
        if sparse.size:
            known = (sparse >> np.uint32(_RANK_BITS)).astype(np.intp)
            at = np.searchsorted(known, index)
            np.minimum(at, known.size - 1, out=at)
            hit = known[at] == index
            current[hit] = sparse[at[hit]] & np.uint32(_RANK_MASK)
        cand = (rank > current).nonzero()[0]
        if cand.size == 0:
            return entries.size
        keys, new = index[cand], rank[cand]
        old = _previous_values(keys, new, current[cand])
        changed = new > old
        cand, keys, new, old = cand[changed], keys[changed], new[changed], old[changed]
        applied = entries.size
        # The sketch turns dense at the change that brings the entries past the limit.
        past = (np.cumsum(old == 0) > self.sparse_limit - sparse.size).nonzero()[0]
        if past.size:
            last = int(past[0]) + 1
            cand, keys, new, old = cand[:last], keys[:last], new[:last], old[:last]
            applied = int(cand[-1]) + 1
        if self._hip_valid:
            self._hip_step(old, new, float(1 << _SP))
        self._absorb_sparse(entries[cand])
        return applied

    def _fold_dense(self, regs: NDArray[np.uint8], index: NDArray[np.intp], rank: NDArray[np.uint8]) -> None:
        """Apply (register, rank) pairs in order."""
        current = regs[index]
        cand = (rank > current).nonzero()[0]  # few once the sketch is warm
        if cand.size == 0:
            return
        keys, new = index[cand], rank[cand]
        if self._hip_valid:
            old = _previous_values(keys, new, current[cand])
            changed = new > old
            self._hip_step(old[changed], new[changed], float(self.m))
        np.maximum.at(regs, keys, new)

    def _hip_step(self, old: NDArray[np.uint8], new: NDArray[np.uint8], m_eff: float) -> None:
        """Register changes ``old -> new`` in order: ``hip += m / kxq; kxq += 2**-new - 2**-old``.

        ``np.cumsum`` adds left to right, so the rounding equals that of the scalar loop in
        ``add``, which keeps ``update`` bit-identical to repeated ``add``.
        """
        if old.size == 0:
            return
        kxq = np.empty(old.size + 1)
        kxq[0] = self._kxq
        np.subtract(_POW2[new], _POW2[old], out=kxq[1:])
        np.cumsum(kxq, out=kxq)
        hip = np.empty(old.size + 1)
        hip[0] = self._hip
        np.divide(m_eff, kxq[:-1], out=hip[1:])
        np.cumsum(hip, out=hip)
        self._kxq, self._hip = float(kxq[-1]), float(hip[-1])

    def _absorb_sparse(self, entries: NDArray[np.uint32]) -> None:
        """Fold sparse entries in: keep the largest rank per index; go dense past the limit."""
        if self._regs is not None:
            np.maximum.at(self._regs, *self._dense_of(entries))
            return
        assert self._sparse is not None
        if entries.size == 0:
            return
        merged = np.sort(np.concatenate((self._sparse, entries)))  # per index, the max rank last
        index = merged >> np.uint32(_RANK_BITS)
        last = np.empty(merged.size, dtype=bool)
        np.not_equal(index[1:], index[:-1], out=last[:-1])
        last[-1] = True
        merged = merged[last]
        if merged.size > self.sparse_limit:
            regs = np.zeros(self.m, dtype=np.uint8)
            np.maximum.at(regs, *self._dense_of(merged))
            self._regs, self._sparse = regs, None
            if self._hip_valid:  # HIP carries over; its change probability is now the dense one
                self._kxq = _kxq_exact(np.bincount(regs, minlength=66 - self._p))
        else:
            self._sparse = merged

    def _dense_of(self, entries: NDArray[np.uint32]) -> tuple[NDArray[np.intp], NDArray[np.uint8]]:
        """Dense (register, rank) of sparse entries; exact, as the dense rank is a function of
        the sparse index and rank."""
        gap = _SP - self._p
        index = (entries >> np.uint32(_RANK_BITS)).astype(np.intp)
        sparse_rank = (entries & np.uint32(_RANK_MASK)).astype(np.intp)
        middle = index & ((1 << gap) - 1)  # the bits between the dense and the sparse index
        _, middle_len = np.frexp(middle.astype(np.float64))  # bit length, exact below 2**53
        rank = np.where(middle != 0, gap - middle_len + 1, gap + sparse_rank).astype(np.uint8)
        return index >> gap, rank

    def _is_empty(self) -> bool:
        return self._sparse is not None and self._sparse.size == 0

    def merge(self, other: HyperLogLog) -> None:
        """Fold ``other`` into this sketch (register-wise max), in place.

        The registers (and the sparse/dense mode) are bit-identical to those of one sketch fed
        the items of both, in either order. The HIP estimate of two streams cannot be combined,
        so after merging two non-empty sketches ``hip_valid`` is False and ``estimate()`` is
        Ertl's estimator of the merged registers (RSE ``1.04 / sqrt(m)``). Merging an empty
        sketch changes nothing, and merging into an empty sketch makes an exact copy of
        ``other``, HIP included: both equal one sketch fed the two streams in sequence.

        Raises
        ------
        ValueError
            If ``other`` is not a ``HyperLogLog`` with equal ``p`` and ``seed``, or is ``self``.
        """
        self._check_mergeable(other, ("p", "seed"))
        self._flush()
        other._flush()
        if other._is_empty():
            return
        if self._is_empty():
            self._sparse = None if other._sparse is None else other._sparse.copy()
            self._regs = None if other._regs is None else other._regs.copy()
            self._hip, self._kxq, self._hip_valid = other._hip, other._kxq, other._hip_valid
            return
        self._hip, self._kxq, self._hip_valid = 0.0, 0.0, False
        if other._regs is None:
            assert other._sparse is not None
            self._absorb_sparse(other._sparse)
        elif self._regs is None:
            assert self._sparse is not None
            regs = other._regs.copy()
            np.maximum.at(regs, *self._dense_of(self._sparse))
            self._regs, self._sparse = regs, None
        else:
            np.maximum(self._regs, other._regs, out=self._regs)

    # -- estimates ------------------------------------------------------------------------------
    def registers(self) -> NDArray[np.uint8]:
        """The ``m`` dense registers (a new array; computed exactly from the sparse entries if sparse)."""
        self._flush()
        if self._regs is not None:
            return self._regs.copy()
        assert self._sparse is not None
        regs = np.zeros(self.m, dtype=np.uint8)
        np.maximum.at(regs, *self._dense_of(self._sparse))
        return regs

    def estimate(self) -> float:
        """Estimated number of distinct items: HIP if ``hip_valid``, else ``estimate_registers()``.

        Returns
        -------
        float
            0.0 for an empty sketch.
        """
        self._flush()
        return self._hip if self._hip_valid else self.estimate_registers()

    def estimate_registers(self) -> float:
        """Ertl's improved estimator of the registers alone (order- and merge-independent).

        Returns
        -------
        float
            0.0 for an empty sketch. While sparse, the estimator runs on the ``2**25`` sparse
            registers.
        """
        self._flush()
        if self._regs is not None:
            hist = np.bincount(self._regs, minlength=66 - self._p)
            return ertl_estimate(hist, self.m)
        assert self._sparse is not None
        hist = np.bincount(self._sparse & np.uint32(_RANK_MASK), minlength=_SQ + 2)
        hist[0] = (1 << _SP) - self._sparse.size
        return ertl_estimate(hist, 1 << _SP)

    def _exact_floor(self) -> int:
        """Distinct items provably seen: distinct sparse prefixes, or non-zero registers."""
        if self._regs is not None:
            return int(np.count_nonzero(self._regs))
        assert self._sparse is not None
        return int(self._sparse.size)

    @staticmethod
    def _check_k(k: int) -> int:
        if k not in (1, 2, 3) or isinstance(k, bool):
            raise ValueError(f"k must be 1, 2 or 3 standard deviations, got {k!r}")
        return k

    def lower_bound(self, k: int = 2) -> float:
        """``estimate * (1 - k * rse)``, but at least the number of distinct items provably seen
        (non-zero registers, or sparse entries).

        Raises
        ------
        ValueError
            If ``k`` is not 1, 2 or 3.
        """
        self._check_k(k)
        est = self.estimate()
        return max(est * (1.0 - k * self.rse), float(self._exact_floor()))

    def upper_bound(self, k: int = 2) -> float:
        """``estimate * (1 + k * rse)``.

        Raises
        ------
        ValueError
            If ``k`` is not 1, 2 or 3.
        """
        self._check_k(k)
        est = self.estimate()
        return max(est * (1.0 + k * self.rse), float(self._exact_floor()))

    # -- bytes ----------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Compact bytes: a mode byte, the HIP state (16 bytes, when valid and non-empty), then
        4 bytes per entry while sparse or 6 bits per register when dense."""
        self._flush()
        mode = 0 if self._regs is None else _DENSE_BIT
        hip = b""
        if self._hip_valid and not self._is_empty():  # an empty sketch's HIP state is implied
            mode |= _HIP_BIT
            hip = _HIP_STATE.pack(self._hip, self._kxq)
        if self._regs is None:
            assert self._sparse is not None
            body = self._sparse.astype("<u4").tobytes()
        else:
            body = _pack6(self._regs)
        return _CODEC.dump((self._p, self._seed), bytes([mode]) + hip + body)

    @classmethod
    def from_bytes(cls, data: bytes) -> HyperLogLog:
        """Rebuild a sketch from ``to_bytes`` output.

        Raises
        ------
        ValueError
            If ``data`` is not a valid HyperLogLog record (corrupt, truncated, foreign), including
            a HIP state that is not finite or does not fit the registers.
        """
        (p, seed), payload = _CODEC.load(data)
        sketch = cls(p, seed)
        if not payload or payload[0] > _DENSE_BIT | _HIP_BIT:
            raise ValueError("corrupt HyperLogLog bytes: unknown representation")
        mode, body = payload[0], payload[1:]
        if mode & _HIP_BIT:
            if len(body) < _HIP_STATE.size:
                raise ValueError("corrupt HyperLogLog bytes: truncated HIP state")
            hip, kxq = _HIP_STATE.unpack_from(body)
            body = body[_HIP_STATE.size :]
        if mode & _DENSE_BIT:
            sketch._regs = _unpack6(body, sketch.m, 65 - p)
            sketch._sparse = None
        else:
            sketch._sparse = _check_sparse(body, sketch.sparse_limit)
        if mode & _HIP_BIT:
            sketch._hip, sketch._kxq = sketch._check_hip(hip, kxq)
        elif not sketch._is_empty():
            sketch._hip, sketch._kxq, sketch._hip_valid = 0.0, 0.0, False
        return sketch

    def _check_hip(self, hip: float, kxq: float) -> tuple[float, float]:
        """Validate a loaded HIP state against the registers.

        Each change lowers ``kxq <= m_eff`` by one rounded step (error at most ``2**-52 m_eff``
        per step) and there are at most ``sum(ranks)`` changes since ``kxq`` was last exact
        (start, or the dense conversion). Each change adds ``m_eff / kxq >= 1`` to ``hip``, and
        at least one change made each non-zero register (or sparse entry); at most ``sum(ranks)``
        dense changes plus ``(sparse_limit + 1) * 40`` sparse ones (each under 2) happened.
        """
        if self._is_empty():
            raise ValueError("corrupt HyperLogLog bytes: an empty sketch carries no HIP state")
        if self._regs is not None:
            hist = np.bincount(self._regs, minlength=66 - self._p)
            m_eff, most_changes = float(self.m), (self.sparse_limit + 1) * (_SQ + 1)
        else:
            assert self._sparse is not None
            hist = np.bincount(self._sparse & np.uint32(_RANK_MASK), minlength=_SQ + 2)
            hist[0] = (1 << _SP) - self._sparse.size
            m_eff, most_changes = float(1 << _SP), 0
        steps = int(np.dot(hist, np.arange(hist.size)))
        if not (math.isfinite(hip) and math.isfinite(kxq) and hip >= 0.0 and 0.0 < kxq <= m_eff):
            raise ValueError(f"corrupt HyperLogLog bytes: HIP state out of range ({hip!r}, {kxq!r})")
        if abs(kxq - _kxq_exact(hist)) > (steps + 1) * m_eff * 2.0**-52:
            raise ValueError("corrupt HyperLogLog bytes: HIP kxq does not match the registers")
        most = (steps + most_changes) * max(m_eff / kxq, 2.0) * (1.0 + 1e-6)
        if not m_eff - hist[0] <= hip <= most:
            raise ValueError("corrupt HyperLogLog bytes: HIP estimate does not fit the registers")
        return hip, kxq

    def __repr__(self) -> str:
        mode = "sparse" if self.is_sparse else "dense"
        kind = "HIP" if self._hip_valid else "merged"
        return f"HyperLogLog(p={self._p}, seed={self._seed}, {mode}, {kind}, estimate={self.estimate():.1f})"


def _pack6(regs: NDArray[np.uint8]) -> bytes:
    """Four 6-bit registers per 3 bytes (m is a multiple of 4)."""
    r = regs.reshape(-1, 4).astype(np.uint32)
    word = r[:, 0] | (r[:, 1] << 6) | (r[:, 2] << 12) | (r[:, 3] << 18)
    out = np.empty((word.size, 3), dtype=np.uint8)
    out[:, 0] = word & 0xFF
    out[:, 1] = (word >> 8) & 0xFF
    out[:, 2] = word >> 16
    return out.tobytes()


def _unpack6(body: bytes, m: int, max_rank: int) -> NDArray[np.uint8]:
    if len(body) != 3 * m // 4:
        raise ValueError(
            f"corrupt HyperLogLog bytes: dense block of {len(body)} bytes, expected {3 * m // 4}"
        )
    b = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3).astype(np.uint32)
    word = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    regs = np.stack([(word >> s) & 63 for s in (0, 6, 12, 18)], axis=1).reshape(-1).astype(np.uint8)
    if int(regs.max()) > max_rank:
        raise ValueError(f"corrupt HyperLogLog bytes: register above the maximum rank {max_rank}")
    if not regs.any():
        raise ValueError("corrupt HyperLogLog bytes: an empty sketch is never dense")
    return regs


def _check_sparse(body: bytes, limit: int) -> NDArray[np.uint32]:
    if len(body) % 4:
        raise ValueError(f"corrupt HyperLogLog bytes: sparse block of {len(body)} bytes")
    entries = np.frombuffer(body, dtype="<u4").astype(np.uint32)
    if entries.size > limit:
        raise ValueError(f"corrupt HyperLogLog bytes: {entries.size} sparse entries exceed {limit}")
    rank = entries & np.uint32(_RANK_MASK)
    index = entries >> np.uint32(_RANK_BITS)
    if entries.size and (int(rank.min()) < 1 or int(rank.max()) > _SQ + 1 or int(index.max()) >= 1 << _SP):
        raise ValueError("corrupt HyperLogLog bytes: sparse entry out of range")
    if np.any(index[1:] <= index[:-1]):
        raise ValueError("corrupt HyperLogLog bytes: sparse entries not strictly increasing")
    return entries
