"""Many entities' state in a few numpy columns, looked up by 64-bit key hash in batches.

A detector that watches a million cards keeps one row per card in numpy columns (a decayed
mean, a counter, a timestamp) instead of a million Python objects: lookups and updates are
vectorised over a whole batch, and a snapshot pickles a handful of arrays. Idle entities
(no event for ``idle_ttl`` seconds of event time) are evicted so state stays bounded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

__all__ = ["EntityTable"]


class EntityTable:
    """Rows of per-entity state, addressed by entity key hash (uint64).

    Parameters
    ----------
    columns : mapping of name to (dtype, default)
        The per-entity state columns and the value a new entity starts with.
    idle_ttl : float
        Seconds of event time after its last event at which :meth:`evict` drops an entity.

    Examples
    --------
    >>> import numpy as np
    >>> table = EntityTable({"count": (np.int64, 0)}, idle_ttl=60.0)
    >>> rows = table.rows(np.array([7, 9, 7], dtype=np.uint64), np.array([0.0, 1.0, 2.0]))
    >>> rows.tolist()
    [0, 1, 0]
    >>> np.add.at(table["count"], rows, 1)
    >>> table["count"][table.rows(np.array([7], dtype=np.uint64), np.array([3.0]))].tolist()
    [2]
    >>> table.evict(now=62.5), len(table)
    (1, 1)
    """

    def __init__(self, columns: Mapping[str, tuple[DTypeLike, Any]], idle_ttl: float) -> None:
        if not idle_ttl > 0:
            raise ValueError(f"idle_ttl must be positive seconds, got {idle_ttl!r}")
        self.idle_ttl = float(idle_ttl)
        self._spec = {name: (np.dtype(dtype), default) for name, (dtype, default) in columns.items()}
        self._keys = np.zeros(0, dtype=np.uint64)  # sorted
        self._key_rows = np.zeros(0, dtype=np.intp)  # row of each sorted key
        self._row_keys = np.zeros(0, dtype=np.uint64)  # key of each row
        self._last_seen = np.zeros(0, dtype=np.float64)
        self._cols: dict[str, NDArray[Any]] = {n: np.zeros(0, dtype=d) for n, (d, _) in self._spec.items()}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, name: str) -> NDArray[Any]:
        """The column ``name`` (a view of the live rows; write through it)."""
        return self._cols[name][: self._size]

    @property
    def keys(self) -> NDArray[np.uint64]:
        """Entity key of each row."""
        return self._row_keys[: self._size]

    @property
    def last_seen(self) -> NDArray[np.float64]:
        return self._last_seen[: self._size]

    def rows(self, keys: NDArray[np.uint64], ts: NDArray[np.float64] | None = None) -> NDArray[np.intp]:
        """Row of each key, inserting unknown keys with their defaults; ``ts`` refreshes last-seen."""
        if len(keys) == 0:
            return np.zeros(0, dtype=np.intp)
        pos = np.searchsorted(self._keys, keys)
        found = pos < len(self._keys)
        found[found] = self._keys[pos[found]] == keys[found]
        if not found.all():
            self._insert(np.unique(keys[~found]))
            pos = np.searchsorted(self._keys, keys)
        rows = self._key_rows[pos]
        if ts is not None:
            np.maximum.at(self._last_seen, rows, ts)
        return rows

    def find(self, keys: NDArray[np.uint64]) -> NDArray[np.intp]:
        """Row of each key, or -1 for keys not in the table (never inserts)."""
        pos = np.minimum(np.searchsorted(self._keys, keys), max(len(self._keys) - 1, 0))
        hit = (self._keys[pos] == keys) if len(self._keys) else np.zeros(len(keys), dtype=np.bool_)
        return np.where(hit, self._key_rows[pos] if len(self._keys) else -1, -1).astype(np.intp)

    def _insert(self, new_keys: NDArray[np.uint64]) -> None:
        start, end = self._size, self._size + len(new_keys)
        self._reserve(end)
        self._row_keys[start:end] = new_keys
        self._last_seen[start:end] = -np.inf
        for name, (_, default) in self._spec.items():
            self._cols[name][start:end] = default
        self._size = end
        self._reindex()

    def _reserve(self, n: int) -> None:
        if n <= len(self._row_keys):
            return
        cap = max(n, 2 * len(self._row_keys), 64)
        self._row_keys = _grow(self._row_keys, cap)
        self._last_seen = _grow(self._last_seen, cap)
        self._cols = {name: _grow(col, cap) for name, col in self._cols.items()}

    def _reindex(self) -> None:
        live = self._row_keys[: self._size]
        order = np.argsort(live, kind="stable")
        self._keys = live[order]
        self._key_rows = order.astype(np.intp)

    def evict(self, now: float) -> int:
        """Drop entities last seen before ``now - idle_ttl``; returns how many were dropped."""
        keep = self._last_seen[: self._size] >= now - self.idle_ttl
        dropped = int(self._size - keep.sum())
        if dropped:
            self._row_keys = self._row_keys[: self._size][keep].copy()
            self._last_seen = self._last_seen[: self._size][keep].copy()
            self._cols = {n: c[: self._size][keep].copy() for n, c in self._cols.items()}
            self._size = len(self._row_keys)
            self._reindex()
        return dropped

    def __getstate__(self) -> dict[str, Any]:
        # Only live rows: a snapshot never carries the spare capacity.
        n = self._size
        return {
            "idle_ttl": self.idle_ttl,
            "spec": {k: (d.str, v) for k, (d, v) in self._spec.items()},
            "keys": self._row_keys[:n].copy(),
            "last_seen": self._last_seen[:n].copy(),
            "cols": {k: c[:n].copy() for k, c in self._cols.items()},
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.idle_ttl = state["idle_ttl"]
        self._spec = {k: (np.dtype(d), v) for k, (d, v) in state["spec"].items()}
        self._row_keys = state["keys"]
        self._last_seen = state["last_seen"]
        self._cols = state["cols"]
        self._size = len(self._row_keys)
        self._reindex()


def _grow(arr: NDArray[Any], cap: int) -> NDArray[Any]:
    out = np.zeros(cap, dtype=arr.dtype)
    out[: len(arr)] = arr
    return out
