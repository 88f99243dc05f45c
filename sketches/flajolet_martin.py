"""Flajolet-Martin probabilistic counting with stochastic averaging (PCSA).

Mainly a baseline next to ``HyperLogLog``: for the same relative error PCSA needs about
``(0.78 / 1.04)**2 * 64 / 6 = 6x`` more bits.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numpy.typing import NDArray

from sketches._base import Sketch
from sketches._format import Codec
from sketches.hashing import Item, Items, check_seed, hash64, hash64_many

__all__ = ["FlajoletMartin"]

PHI: Final = 0.77351  # Flajolet & Martin's correction constant
_KAPPA: Final = 1.75  # Scheuermann & Mauve's small-range exponent
_RSE_FACTOR: Final = 0.78
_MAX_MAPS: Final = 1 << 20
_TOP_BIT: Final = 1 << 63
_LC_MIN_EMPTY: Final = math.exp(-2.0)  # linear counting while >= m e^-2 maps are empty (n <~ 2m)
_CHUNK: Final = 1 << 15
_CODEC: Final = Codec("FlajoletMartin", version=1, params="<II")
_U64 = np.uint64


def _lowest_set_bits(
    hashes: NDArray[np.uint64], num_maps: int
) -> tuple[NDArray[np.intp], NDArray[np.uint64]]:
    """Map index ``h mod m`` and the bit ``2**rho(h div m)`` (rho capped at 63) per hash."""
    rest, index = np.divmod(hashes, _U64(num_maps))
    bits = rest & (~rest + _U64(1))  # isolates the lowest set bit; 0 when rest == 0
    bits[bits == 0] = _U64(_TOP_BIT)
    return index.astype(np.intp), bits


def _trailing_ones(maps: NDArray[np.uint64]) -> NDArray[np.int64]:
    """``R`` per bitmap: the position of its lowest zero bit (64 for a full bitmap)."""
    lowest_zero = ~maps & (maps + _U64(1))  # a power of two, exact as float64; 0 if full
    exponent = (lowest_zero.astype(np.float64).view(np.uint64) >> _U64(52)).astype(np.int64)
    return np.where(lowest_zero == 0, 64, exponent - 1023)


class FlajoletMartin(Sketch):
    """Distinct-count sketch: PCSA, ``num_maps`` 64-bit bitmaps (Flajolet & Martin 1985).

    Parameters
    ----------
    num_maps : int, default 64
        Number of bitmaps ``m`` in ``[1, 2**20]``; the state is ``8 m`` bytes at most.
    seed : int, default 0
        Hash seed in ``[0, 2**32)``; only sketches with equal ``num_maps`` and ``seed`` merge.

    Raises
    ------
    ValueError
        If ``num_maps`` or ``seed`` is out of range.

    Notes
    -----
    An item with hash ``h`` goes to bitmap ``h mod m`` and sets bit ``rho(h div m)``, the
    number of trailing zeros (capped at 63). ``R_j`` is the position of the lowest zero bit of
    bitmap ``j`` and ``R`` their mean.

    Estimator, in two ranges:

    * ``n <~ 2m`` (at least ``m e**-2`` bitmaps still empty): linear counting on empty
      bitmaps, ``m ln(m / empty)``, whose relative standard error is
      ``sqrt(m (e**t - t - 1)) / n`` with ``t = n / m`` (about ``1 / sqrt(2m)`` for small ``t``).
    * otherwise ``m / (phi (1 + 0.31 / m)) * (2**R - 2**(-1.75 R))``, ``phi = 0.77351``:
      FM85's estimator with its bias term ``1 + 0.31 / m``, and Scheuermann & Mauve's (2007)
      small-range term ``2**(-1.75 R)``, which removes most of PCSA's bias just above ``2m``.

    Error guarantee: relative standard error about ``0.78 / sqrt(m)`` (9.75 % for ``m = 64``)
    for ``n >= 5m``. Measured relative bias (``m = 64`` and ``256``, hundreds of seeds): at most
    about 0.2 standard errors at ``n = 5m`` (about -1.5 % for ``m = 64``), shrinking to noise level
    by ``n = 100m``; between ``2m`` and ``5m`` the estimator hands over and up to about 3 % bias
    (``m = 64``) remains; below ``2m`` linear counting is nearly unbiased (about +1 %).

    Examples
    --------
    >>> import numpy as np
    >>> fm = FlajoletMartin(num_maps=256, seed=1)
    >>> fm.update(np.arange(100_000))
    >>> abs(fm.estimate() - 100_000) < 0.2 * 100_000
    True
    """

    __slots__ = ("_maps", "_num_maps", "_seed")

    def __init__(self, num_maps: int = 64, seed: int = 0) -> None:
        if (
            isinstance(num_maps, bool)
            or not isinstance(num_maps, (int, np.integer))
            or not 1 <= num_maps <= _MAX_MAPS
        ):
            raise ValueError(f"num_maps must be an int in [1, {_MAX_MAPS}], got {num_maps!r}")
        self._num_maps = int(num_maps)
        self._seed = check_seed(seed)
        self._maps: NDArray[np.uint64] = np.zeros(self._num_maps, dtype=np.uint64)

    @classmethod
    def from_error(cls, rse: float, seed: int = 0) -> FlajoletMartin:
        """Smallest sketch whose relative standard error is at most ``rse``.

        Parameters
        ----------
        rse : float
            Target relative standard error in ``(0, 1)``.
        seed : int, default 0
            Hash seed.

        Returns
        -------
        FlajoletMartin
            With ``num_maps = ceil((0.78 / rse) ** 2)``.

        Raises
        ------
        ValueError
            If ``rse`` is not in ``(0, 1)`` or needs more than ``2**20`` bitmaps.

        Examples
        --------
        >>> FlajoletMartin.from_error(0.1).num_maps
        61
        """
        if not 0.0 < rse < 1.0:
            raise ValueError(f"rse must be in (0, 1), got {rse!r}")
        maps = math.ceil((_RSE_FACTOR / rse) ** 2)
        if maps > _MAX_MAPS:
            raise ValueError(f"rse {rse!r} needs num_maps = {maps} > {_MAX_MAPS}")
        return cls(maps, seed)

    @property
    def num_maps(self) -> int:
        """Number of 64-bit bitmaps ``m``."""
        return self._num_maps

    @property
    def seed(self) -> int:
        """Hash seed."""
        return self._seed

    @property
    def rse(self) -> float:
        """Asymptotic relative standard error ``0.78 / sqrt(num_maps)``."""
        return _RSE_FACTOR / math.sqrt(self._num_maps)

    def bitmaps(self) -> NDArray[np.uint64]:
        """A copy of the ``num_maps`` bitmaps."""
        return self._maps.copy()

    def add(self, item: Item) -> None:
        """Add one item (str, bytes or int)."""
        rest, index = divmod(hash64(item, self._seed), self._num_maps)
        bit = rest & -rest or _TOP_BIT
        self._maps[index] = int(self._maps[index]) | bit

    def update(self, items: Items) -> None:
        """Add a batch: a list/tuple of str/bytes/int or a numpy integer array.

        Leaves exactly the state of ``add`` called on each item; a ``TypeError`` from an
        unhashable item leaves the sketch unchanged.
        """
        if isinstance(items, np.ndarray) and items.dtype.kind in "iub":
            flat = items.reshape(-1)
            for start in range(0, flat.size, _CHUNK):
                self._update_hashes(hash64_many(flat[start : start + _CHUNK], self._seed))
            return
        hashes = hash64_many(items, self._seed)
        for start in range(0, hashes.size, _CHUNK):
            self._update_hashes(hashes[start : start + _CHUNK])

    def _update_hashes(self, hashes: NDArray[np.uint64]) -> None:
        index, bits = _lowest_set_bits(hashes, self._num_maps)
        np.bitwise_or.at(self._maps, index, bits)

    def merge(self, other: FlajoletMartin) -> None:
        """Fold ``other`` in (bitwise OR), in place; bit-identical to one sketch fed both.

        Raises
        ------
        ValueError
            If ``other`` is not a ``FlajoletMartin`` with equal ``num_maps`` and ``seed``, or is ``self``.
        """
        self._check_mergeable(other, ("num_maps", "seed"))
        np.bitwise_or(self._maps, other._maps, out=self._maps)

    def estimate(self) -> float:
        """Estimated number of distinct items (see the class Notes for the two ranges).

        Returns
        -------
        float
            0.0 for an empty sketch.
        """
        m = self._num_maps
        empty = int(np.count_nonzero(self._maps == 0))
        if empty >= m * _LC_MIN_EMPTY:
            return m * math.log(m / empty)
        r = float(_trailing_ones(self._maps).mean())
        return m / (PHI * (1.0 + 0.31 / m)) * (math.pow(2.0, r) - math.pow(2.0, -_KAPPA * r))

    def to_bytes(self) -> bytes:
        """Compact bytes: one width byte ``w``, then each bitmap's low ``w`` bytes, where ``w``
        is the fewest bytes that hold the widest bitmap."""
        width = (int(self._maps.max()).bit_length() + 7) // 8
        cols = self._maps.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :width]
        return _CODEC.dump((self._num_maps, self._seed), bytes([width]) + cols.tobytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> FlajoletMartin:
        """Rebuild a sketch from ``to_bytes`` output.

        Raises
        ------
        ValueError
            If ``data`` is not a valid FlajoletMartin record (corrupt, truncated, foreign).
        """
        (num_maps, seed), payload = _CODEC.load(data)
        sketch = cls(num_maps, seed)
        if not payload or payload[0] > 8 or len(payload) != 1 + num_maps * payload[0]:
            raise ValueError(f"corrupt FlajoletMartin bytes: payload of {len(payload)} bytes")
        width = payload[0]
        full = np.zeros((num_maps, 8), dtype=np.uint8)
        full[:, :width] = np.frombuffer(payload, dtype=np.uint8, offset=1).reshape(num_maps, width)
        maps = full.view("<u8").reshape(-1).astype(np.uint64)
        if width and not full[:, width - 1].any():
            raise ValueError("corrupt FlajoletMartin bytes: non-canonical bitmap width")
        sketch._maps = maps
        return sketch

    def __repr__(self) -> str:
        return f"FlajoletMartin(num_maps={self._num_maps}, seed={self._seed}, estimate={self.estimate():.1f})"
