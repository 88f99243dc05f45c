"""Many entities' state in a few numpy columns, looked up by 64-bit key hash in batches.

A detector that watches a million cards keeps one row per card in numpy columns (a decayed
mean, a counter, a timestamp) instead of a million Python objects: lookups and updates are
vectorised over a whole batch, and a snapshot pickles a handful of arrays. Idle entities
(no event for ``idle_ttl`` seconds of event time) are evicted so state stays bounded.

Memory and speed. The rows are kept sorted by key, so the key column is also the lookup index
(a binary search): a row costs its key (8 bytes) plus its columns, with no second index. New
keys are appended after the sorted rows (a short tail with a small sorted index of its own)
and merged into them once the tail outgrows 1/16 of the table, so inserting is amortised
O(1) per key instead of a rebuild of every column per batch (which made small batches slow
at a million entities). A merge leaves the columns room for the next tail (1/16 spare) and
rebuilds them one at a time, so its transient memory is one column, not the table; evicting
rows rebuilds them at their exact length (plus that room, if a tail was merged). A table whose
rows already hold each entity's latest event time can name that column its ``clock`` instead of
keeping a separate last-seen column. A pickled table stores each column in the smallest of a
few exact encodings (integers in the narrowest dtype that holds them; close values as offsets
in fewer bytes; columns mostly equal to their default or to another column, possibly of a table
pickled before it by :func:`dumps_tables`, as a bitmap of the rows that differ plus their
values), so a snapshot is often much smaller than the live table; unpickling restores every
value bit for bit.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import DTypeLike, NDArray

__all__ = ["EntityTable", "dumps_tables"]

_LAST_SEEN: Final = "\x00last_seen"
"""Internal column name of the last-seen times of a table without a ``clock`` column."""

_STATE_VERSION: Final = 3
"""3: columns may be offsets or differences from another table's (dumps_tables); 2 had neither."""


class EntityTable:
    """Rows of per-entity state, addressed by entity key hash (uint64), sorted by key.

    Parameters
    ----------
    columns : mapping of name to (dtype, default)
        The per-entity state columns and the value a new entity starts with.
    idle_ttl : float
        Seconds of event time after its last event at which :meth:`evict` drops an entity.
    clock : str, optional
        A float64 column of ``columns`` that holds each entity's latest event time, kept up
        to date by the caller; :meth:`evict` compares it with ``now - idle_ttl``. Without
        it, the table keeps its own last-seen column, advanced by the ``ts`` of :meth:`rows`.
    last_seen : bool, default True
        False: no clock and no last-seen column at all, for a caller whose columns already
        tell when an entity is idle (it drops rows with :meth:`drop`; :meth:`evict` refuses).

    Notes
    -----
    Rows are positions in the table's arrays: inserting new keys (:meth:`rows`), evicting,
    dropping or reading :attr:`keys` may renumber them, so a row index is valid until the next
    such call, and a column array (``table[name]``) until then as well. Fetch both after the
    last such call.

    Examples
    --------
    >>> import numpy as np
    >>> table = EntityTable({"count": (np.int64, 0)}, idle_ttl=60.0)
    >>> rows = table.rows(np.array([7, 9, 7], dtype=np.uint64), np.array([0.0, 1.0, 2.0]))
    >>> rows.tolist()
    [0, 1, 0]
    >>> np.add.at(table["count"], rows, 1)
    >>> rows = table.rows(np.array([7], dtype=np.uint64), np.array([3.0]))
    >>> table["count"][rows].tolist()
    [2]
    >>> table.evict(now=62.5), len(table)
    (1, 1)
    >>> timed = EntityTable({"prev_ts": (np.float64, -np.inf)}, idle_ttl=10.0, clock="prev_ts")
    >>> rows = timed.rows(np.array([5, 3], dtype=np.uint64))
    >>> timed["prev_ts"][rows] = [100.0, 80.0]
    >>> timed.evict(now=95.0), timed.keys.tolist()
    (1, [5])
    """

    def __init__(
        self,
        columns: Mapping[str, tuple[DTypeLike, Any]],
        idle_ttl: float,
        clock: str | None = None,
        last_seen: bool = True,
    ) -> None:
        if not idle_ttl > 0:
            raise ValueError(f"idle_ttl must be positive seconds, got {idle_ttl!r}")
        self.idle_ttl = float(idle_ttl)
        spec = {name: (np.dtype(dtype), default) for name, (dtype, default) in columns.items()}
        if _LAST_SEEN in spec:
            raise ValueError(f"column name {_LAST_SEEN!r} is reserved")
        self._spec = spec
        self._clock: str | None = None
        # Arrays with spare capacity: rows [0, _sorted) sorted by key, [_sorted, _n) the tail
        # (in insertion order), indexed by _tail_keys (sorted) -> _tail_rows.
        self._keys: NDArray[np.uint64] = np.zeros(0, dtype=np.uint64)
        self._cols: dict[str, NDArray[Any]] = {n: np.zeros(0, dtype=d) for n, (d, _) in spec.items()}
        self._reset_layout(0)
        if clock is not None:
            self.use_clock(clock)
        elif last_seen:
            self._spec[_LAST_SEEN] = (np.dtype(np.float64), -np.inf)
            self._cols[_LAST_SEEN] = np.zeros(0, dtype=np.float64)

    def _reset_layout(self, n: int) -> None:
        """``n`` live rows, all sorted, no tail."""
        self._n = self._sorted = n
        self._tail_keys: NDArray[np.uint64] = np.zeros(0, dtype=np.uint64)
        self._tail_rows: NDArray[np.intp] = np.zeros(0, dtype=np.intp)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, name: str) -> NDArray[Any]:
        """The column ``name`` (one value per row; write through it)."""
        if name == _LAST_SEEN:
            raise KeyError(name)
        return self._cols[name][: self._n]

    @property
    def columns(self) -> list[str]:
        """Names of the state columns (as given)."""
        return [n for n in self._spec if n != _LAST_SEEN]

    @property
    def clock(self) -> str | None:
        """The column :meth:`evict` reads, or None when the table keeps its own last-seen times."""
        return self._clock

    @property
    def keys(self) -> NDArray[np.uint64]:
        """Entity key of each row, ascending (merges the tail: rows are renumbered)."""
        self._merge()
        return self._keys[: self._n]

    @property
    def last_seen(self) -> NDArray[np.float64]:
        """Latest event time of each row: the ``clock`` column, or the table's own column."""
        name = self._clock if self._clock is not None else _LAST_SEEN
        if name not in self._cols:
            raise ValueError("this table keeps no last-seen times (last_seen=False): drop rows instead")
        return self._cols[name][: self._n]

    @property
    def nbytes(self) -> int:
        """Bytes of the live state (keys and every column)."""
        per_row = self._keys.itemsize + sum(c.itemsize for c in self._cols.values())
        return int(self._n * per_row)

    def use_clock(self, name: str) -> None:
        """Make column ``name`` (float64, each entity's latest event time) the eviction clock,
        dropping the table's own last-seen column."""
        if name not in self._spec or name == _LAST_SEEN or self._spec[name][0] != np.float64:
            raise ValueError(f"clock must name a float64 column, got {name!r}")
        self._clock = name
        self._spec.pop(_LAST_SEEN, None)
        self._cols.pop(_LAST_SEEN, None)

    def widen(self, name: str, dtype: DTypeLike) -> None:
        """Store column ``name`` as ``dtype`` from now on (its values converted; for a counter
        kept narrow until a value would overflow it)."""
        if name not in self._spec or name == _LAST_SEEN:
            raise KeyError(name)
        dt = np.dtype(dtype)
        self._spec[name] = (dt, self._spec[name][1])
        self._cols[name] = self._cols[name].astype(dt)

    def rows(self, keys: NDArray[np.uint64], ts: NDArray[np.float64] | None = None) -> NDArray[np.intp]:
        """Row of each key, inserting unknown keys with their defaults; ``ts`` refreshes last-seen
        (tables without a ``clock`` column only)."""
        if ts is not None and self._clock is not None:
            raise ValueError(f"this table's clock is column {self._clock!r}: update it, pass no ts")
        if ts is not None and _LAST_SEEN not in self._cols:
            raise ValueError("this table keeps no last-seen times (last_seen=False): pass no ts")
        keys = np.asarray(keys, dtype=np.uint64)
        if len(keys) == 0:
            return np.zeros(0, dtype=np.intp)
        ascending = _ascending(keys)  # a batch's distinct keys
        if ascending and not len(self._tail_keys):
            pos = self._rows_sorted(keys)
        else:
            pos = self.find(keys)
            missing = pos < 0
            if missing.any():
                new = keys[missing] if ascending else np.unique(keys[missing])
                first = self._n
                if self._append(new):
                    pos = self.find(keys)  # merged: every row may have moved
                else:
                    pos[missing] = first + np.searchsorted(new, keys[missing])
        if ts is not None:
            seen = self._cols[_LAST_SEEN]
            ts = np.asarray(ts, dtype=np.float64)
            if ascending:  # distinct rows
                seen[pos] = np.maximum(seen[pos], ts)
            else:
                np.maximum.at(seen, pos, ts)
        return pos

    def _rows_sorted(self, keys: NDArray[np.uint64]) -> NDArray[np.intp]:
        """:meth:`rows` of ascending distinct keys into a table without a tail: one search,
        positions after inserting computed, not searched again."""
        main = self._keys[: self._sorted]
        pos: NDArray[np.intp] = np.searchsorted(main, keys)
        if len(main):
            missing = main[np.minimum(pos, len(main) - 1)] != keys
        else:
            missing = np.ones(len(keys), dtype=np.bool_)
        if not missing.any():
            return pos
        first = self._n
        if self._append(keys[missing]):  # merged into the sorted rows
            before = np.cumsum(missing)  # a key's row: old keys below it plus new keys below it
            before -= missing
            pos += before
        else:
            pos[missing] = np.arange(first, first + int(np.count_nonzero(missing)))
        return pos

    def find(self, keys: NDArray[np.uint64]) -> NDArray[np.intp]:
        """Row of each key, or -1 for keys not in the table (never inserts)."""
        keys = np.asarray(keys, dtype=np.uint64)
        pos = _search(self._keys[: self._sorted], keys)
        if len(self._tail_keys):
            missing = np.flatnonzero(pos < 0)
            if len(missing):
                tail = _search(self._tail_keys, keys[missing])
                pos[missing] = np.where(tail >= 0, self._tail_rows[np.maximum(tail, 0)], -1)
        return pos

    def lookup(
        self, keys: NDArray[np.uint64], defaults: Mapping[str, Any]
    ) -> tuple[NDArray[np.intp], NDArray[np.intp], dict[str, NDArray[Any]]]:
        """A sparse table's view of ``keys`` (never inserts): the indices of the keys that have a
        row, their rows, and for each column of ``defaults`` its value per key (``defaults[name]``,
        a scalar or one value per key, for the keys without a row). See :meth:`store`.

        >>> t = EntityTable({"n": (np.int64, 0)}, idle_ttl=1.0)
        >>> rows = t.rows(np.array([5], dtype=np.uint64))
        >>> t["n"][rows] = 3
        >>> keys = np.array([4, 5, 6], dtype=np.uint64)
        >>> had, rows, values = t.lookup(keys, {"n": -1})
        >>> had.tolist(), values["n"].tolist()
        ([1], [-1, 3, -1])
        >>> values["n"][0] = 7  # 4 now differs from what a missing row stands for; 6 does not
        >>> t.store(keys, values, had, rows, keep=values["n"] != -1)
        >>> t.keys.tolist(), t["n"].tolist()
        ([4, 5], [7, 3])
        """
        rows = self.find(keys)
        had = np.flatnonzero(rows >= 0)
        rows = rows[had]
        values: dict[str, NDArray[Any]] = {}
        for name, default in defaults.items():
            col = self[name]
            values[name] = np.empty(len(keys), dtype=col.dtype)
            values[name][...] = default
            values[name][had] = col[rows]
        return had, rows, values

    def store(
        self,
        keys: NDArray[np.uint64],
        values: Mapping[str, NDArray[Any]],
        had: NDArray[np.intp],
        rows: NDArray[np.intp],
        keep: NDArray[np.bool_],
    ) -> None:
        """Write ``values`` (per column, one per key) back after :meth:`lookup` gave ``had`` and
        ``rows``: to the keys that had a row, whatever their values now, and to new rows for the
        other keys where ``keep`` (the rest stay without a row: a sparse table holds only the
        entities whose state differs from what a missing row stands for). ``keys`` are
        distinct; ascending ones (a batch's grouped entities) are inserted without a search."""
        for name, column in values.items():
            self[name][rows] = column[had]
        new = keep.copy()
        new[had] = False
        added = np.flatnonzero(new)
        if len(added):  # after the existing rows are written: inserting renumbers them
            at = self._insert_absent(keys[added])
            for name, column in values.items():
                self[name][at] = column[added]

    def _insert_absent(self, keys: NDArray[np.uint64]) -> NDArray[np.intp]:
        """Rows for ``keys`` none of which is in the table (with the columns' defaults): for
        ascending distinct keys (the detectors' case), :meth:`rows` without its search."""
        if not _ascending(keys):
            return self.rows(keys)
        first = self._n
        if self._append(keys):
            return self.find(keys)  # merged: every row may have moved
        return np.arange(first, first + len(keys), dtype=np.intp)

    def _append(self, new_keys: NDArray[np.uint64]) -> bool:
        """Add sorted distinct keys not in the table, with the columns' defaults: to the tail,
        or, when the tail would outgrow 1/16 of the table, merged with it into the sorted
        rows. Returns whether rows were renumbered (merged)."""
        n, k = self._n, len(new_keys)
        if len(self._tail_keys) + k > _TAIL_MIN + self._sorted // 16:
            self._merge(new_keys)
            return True
        self._reserve(n + k)
        self._keys[n : n + k] = new_keys
        for name, col in self._cols.items():
            col[n : n + k] = self._spec[name][1]
        self._n = n + k
        rows = np.arange(n, n + k, dtype=np.intp)
        if len(self._tail_keys):
            at = np.searchsorted(self._tail_keys, new_keys) + np.arange(k)
            old = np.ones(len(self._tail_keys) + k, dtype=np.bool_)
            old[at] = False
            self._tail_keys = _spread(self._tail_keys, old, at, new_keys)
            self._tail_rows = _spread(self._tail_rows, old, at, rows)
        else:
            self._tail_keys, self._tail_rows = new_keys.copy(), rows
        return False

    def _reserve(self, rows: int) -> None:
        """Room for ``rows`` rows (growing by an eighth at least: amortised appends), one column
        at a time (the transient is one column, not the table)."""
        if rows <= len(self._keys):
            return
        cap = max(rows, len(self._keys) + len(self._keys) // 8, 16)
        self._keys = _grown(self._keys, self._n, cap)
        for name in list(self._cols):
            self._cols[name] = _grown(self._cols[name], self._n, cap)

    def _merge(self, new_keys: NDArray[np.uint64] | None = None) -> None:
        """Merge the tail and ``new_keys`` (sorted, distinct, absent; with the defaults) into the
        sorted rows in one pass: rows renumbered, each column rebuilt by masked copies (only the
        tail's rows gathered) into arrays with room for the next tail, one column at a time."""
        ins, src = self._tail_keys, self._tail_rows  # keys going in; their rows, -1 for new ones
        if new_keys is not None and len(new_keys):
            ins = np.concatenate([ins, new_keys])
            src = np.concatenate([src, np.full(len(new_keys), -1, dtype=np.intp)])
            if len(self._tail_keys):
                order = np.argsort(ins, kind="stable")  # two sorted runs: one merge
                ins, src = ins[order], src[order]
        m = len(ins)
        if not m:
            return
        main = self._sorted
        total = main + m
        cap = total + total // 16 + _TAIL_MIN  # the most a tail holds before the next merge
        at = np.searchsorted(self._keys[:main], ins) + np.arange(m)
        old = np.ones(total, dtype=np.bool_)
        old[at] = False
        moved = np.flatnonzero(src >= 0)
        self._keys = _spread(self._keys[:main], old, at, ins, cap)
        for name in list(self._cols):
            col = self._cols[name]
            dtype, default = self._spec[name]
            if len(moved) == m:
                values = col[src]
            else:
                values = np.full(m, default, dtype=dtype)
                values[moved] = col[src[moved]]
            self._cols[name] = _spread(col[:main], old, at, values, cap)
        self._reset_layout(total)

    def evict(self, now: float) -> int:
        """Drop entities last seen before ``now - idle_ttl``; returns how many were dropped."""
        return self._keep(self.last_seen >= now - self.idle_ttl)

    def drop(self, rows: NDArray[np.bool_]) -> int:
        """Drop the rows where ``rows`` (a boolean mask over all rows) is true; returns how many."""
        rows = np.asarray(rows, dtype=np.bool_)
        if rows.shape != (self._n,):
            raise ValueError(f"drop needs a mask of {self._n} rows, got shape {rows.shape}")
        return self._keep(~rows)

    def _keep(self, keep: NDArray[np.bool_]) -> int:
        """Keep the rows where ``keep`` is true, at the arrays' exact new length (sorted)."""
        dropped = self._n - int(np.count_nonzero(keep))
        if dropped:
            n = self._n
            self._keys = self._keys[:n][keep]
            for name in list(self._cols):
                self._cols[name] = self._cols[name][:n][keep]
            sorted_kept = int(np.count_nonzero(keep[: self._sorted]))
            self._n = len(self._keys)
            tail_rows = np.arange(sorted_kept, self._n, dtype=np.intp)
            tail_keys = self._keys[sorted_kept:]
            order = np.argsort(tail_keys)
            self._sorted = sorted_kept
            self._tail_keys, self._tail_rows = tail_keys[order], tail_rows[order]
            self._merge()
        return dropped

    # -- pickling -------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return self._state()

    def _state(self, peer: _Peer | None = None) -> dict[str, Any]:
        # Rows sorted by key (the tail merged first: a snapshot renumbers rows, as evict does);
        # each column in its smallest exact encoding (see _pack); the keys as they are, or as
        # rows of ``peer``'s table plus the keys it lacks.
        self._merge()
        n = self._n
        cols = {name: col[:n] for name, col in self._cols.items()}
        packed: dict[str, tuple[Any, ...]] = {}
        for name in cols:
            extra = [] if peer is None else peer.bases(cols[name].dtype, self._spec[name][1])
            packed[name] = _pack(cols[name], self._spec[name][1], cols, packed, extra)
        return {
            "version": _STATE_VERSION,
            "idle_ttl": self.idle_ttl,
            "clock": self._clock,
            "spec": {k: (d.str, v) for k, (d, v) in self._spec.items()},
            "keys": self._keys[:n] if peer is None else peer.keys_state(),
            "cols": packed,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._set_state(state, None)

    def _set_state(self, state: dict[str, Any], peer_table: EntityTable | None) -> None:
        self.idle_ttl = state["idle_ttl"]
        self._spec = {k: (np.dtype(d), v) for k, (d, v) in state["spec"].items()}
        if state.get("version") not in (2, _STATE_VERSION):
            self._setstate_v1(state)
            return
        self._clock = state["clock"]
        peer = None if peer_table is None else _Peer.loaded(peer_table, state["keys"])
        keys = np.asarray(state["keys"] if peer is None else peer.keys, dtype=np.uint64)
        self._keys = keys
        self._cols = {}
        for name, enc in state["cols"].items():
            self._cols[name] = _unpack(enc, len(keys), self._spec[name], self._cols, peer)
        self._reset_layout(len(keys))

    def _reduce_among(self, peers: list[EntityTable]) -> Any:
        """How :func:`dumps_tables` pickles this table: against the first of ``peers`` (tables
        pickled before it) whose keys hold most of its own, else as usual (and it joins them)."""
        for table in peers:
            peer = _Peer.of(table, self.keys)
            if peer is not None:
                return (_table_against, (table, self._state(peer)))
        peers.append(self)
        return NotImplemented

    def _setstate_v1(self, state: dict[str, Any]) -> None:
        """A table pickled before version 2: rows in insertion order, an own last-seen column."""
        keys = np.asarray(state["keys"], dtype=np.uint64)
        order = np.argsort(keys, kind="stable")
        self._clock = None
        self._keys = keys[order]
        self._cols = {k: np.asarray(c)[order] for k, c in state["cols"].items()}
        self._spec[_LAST_SEEN] = (np.dtype(np.float64), -np.inf)
        self._cols[_LAST_SEEN] = np.asarray(state["last_seen"], dtype=np.float64)[order]
        self._reset_layout(len(keys))


# -- compact column encodings -------------------------------------------------------------------
#
# ("full", values)               every value; integers in the narrowest dtype holding them
# ("like", base, bits, values)   the rows where the column differs (bit for bit) from ``base``,
#                                a packed bitmap, and their values (integers narrowed); ``base``
#                                is ("default",), ("value", one-element array) or ("column", name)
#                                of a column encoded before (or ("peer", name): see dumps_tables)
# ("offset", low, width, pieces) every value as its bit pattern minus the lowest one, in ``width``
#                                bytes held by unsigned arrays, low bytes first (event times
#                                within hours of each other: 5 of 8 bytes; window ids: 1 or 2)


def _ascending(keys: NDArray[np.uint64]) -> bool:
    """Whether ``keys`` are strictly ascending (so distinct)."""
    return len(keys) < 2 or bool(np.all(keys[1:] > keys[:-1]))


def _bits_view(a: NDArray[Any]) -> NDArray[Any]:
    """``a`` as unsigned integers of its item size (bit-for-bit comparison: NaN == NaN, -0.0 != 0.0)."""
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def _narrow(values: NDArray[Any]) -> NDArray[Any]:
    """Integers in the narrowest integer dtype holding them all (others unchanged)."""
    if values.dtype.kind not in "iu" or len(values) == 0:
        return values
    lo, hi = int(values.min()), int(values.max())
    for dtype in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32):
        info = np.iinfo(dtype)
        if info.bits >= values.dtype.itemsize * 8:
            break
        if info.min <= lo and hi <= info.max:
            return values.astype(dtype)
    return values


_PROBE_ROWS: Final = 2048
"""Rows of a column compared with a candidate base before the whole column is."""


def _pack(
    col: NDArray[Any],
    default: Any,
    cols: Mapping[str, NDArray[Any]],
    done: Mapping[str, Any],
    extra: Sequence[tuple[tuple[Any, ...], NDArray[Any]]] = (),
) -> tuple[Any, ...]:
    """The smallest exact encoding of ``col`` (``done``: columns encoded before it; ``extra``:
    more bases, as ``(tag, array)``)."""
    full = _narrow(col)
    best: tuple[Any, ...] = ("full", full)
    if col.dtype.kind not in "biuf" or len(col) == 0:
        return best
    size = full.nbytes
    offset = _offset(col)
    if offset is not None and offset[1] < size:
        best, size = offset
    bitmap = (len(col) + 7) // 8
    view = _bits_view(col)
    bases: list[tuple[tuple[Any, ...], NDArray[Any]]] = [(("default",), np.full(1, default, dtype=col.dtype))]
    for i in sorted({0, len(col) // 2}):  # a column mostly holding one value (sampled at two rows)
        if not any(b.shape == (1,) and _bits_view(b)[0] == view[i] for _, b in bases):
            bases.append((("value", col[i : i + 1].copy()), col[i : i + 1]))
    bases += [(("column", name), cols[name]) for name in done if cols[name].dtype == col.dtype]
    bases.extend(extra)
    least = 1 if col.dtype.kind in "iu" else col.dtype.itemsize  # bytes per value at best
    probe = min(len(col), _PROBE_ROWS)
    for base, arr in bases:
        # a base that differs in most of the first rows is not worth a pass over the column
        head = view[:probe] != _bits_view(arr[:probe] if len(arr) > 1 else arr)
        if bitmap + int(np.count_nonzero(head)) * len(col) // probe * least >= 2 * size:
            continue
        differs = view != _bits_view(arr)
        nnz = int(np.count_nonzero(differs))
        if bitmap + nnz * least >= size:  # cannot win even with narrowed values
            continue
        values = _narrow(col[differs])
        if bitmap + values.nbytes < size:
            size = bitmap + values.nbytes
            best = ("like", base, np.packbits(differs), values)
    return best


_PIECES: Final = {1: (1,), 2: (2,), 3: (2, 1), 4: (4,), 5: (4, 1), 6: (4, 2), 7: (4, 2, 1)}
"""Unsigned arrays (item sizes, low bytes first) that hold offsets of each width in bytes."""


def _offset(col: NDArray[Any]) -> tuple[tuple[Any, ...], int] | None:
    """``("offset", low, width, pieces)`` of a numeric column whose bit patterns span fewer bytes
    than its items hold, and its size in bytes; else None. ``pieces``: the offsets' bytes as
    unsigned arrays, low bytes first (typed casts, much faster than a strided byte copy)."""
    if col.dtype.kind not in "iuf" or len(col) == 0:
        return None
    bits = _bits_view(col)
    low = bits.min()
    width = max(1, (int(bits.max() - low).bit_length() + 7) // 8)
    if width >= col.dtype.itemsize:
        return None
    rest = (bits - low).astype(np.uint64, copy=False)
    pieces, shift = [], 0
    for size in _PIECES[width]:
        pieces.append((rest >> np.uint64(shift) if shift else rest).astype(f"u{size}"))  # low bits kept
        shift += 8 * size
    return ("offset", int(low), width, tuple(pieces)), len(col) * width


def _from_offset(enc: tuple[Any, ...], n: int, dtype: np.dtype[Any]) -> NDArray[Any]:
    _, low, _, pieces = enc
    bits = np.zeros(n, dtype=np.uint64)
    shift = 0
    for piece in map(np.asarray, pieces):
        bits |= piece.astype(np.uint64) << np.uint64(shift)
        shift += 8 * piece.dtype.itemsize
    bits += np.uint64(low)
    out: NDArray[Any] = bits.astype(f"u{dtype.itemsize}").view(dtype)
    return out


def _unpack(
    enc: tuple[Any, ...],
    n: int,
    spec: tuple[np.dtype[Any], Any],
    cols: Mapping[str, NDArray[Any]],
    peer: _Peer | None = None,
) -> NDArray[Any]:
    dtype, default = spec
    if enc[0] == "full":
        out: NDArray[Any] = np.asarray(enc[1]).astype(dtype)
    elif enc[0] == "offset":
        out = _from_offset(enc, n, dtype)
    elif enc[0] == "like":
        _, base, bits, values = enc
        if base[0] == "default":
            out = np.full(n, default, dtype=dtype)
        elif base[0] == "value":
            out = np.full(n, np.asarray(base[1]).astype(dtype)[0], dtype=dtype)
        elif base[0] == "peer" and peer is not None:
            out = peer.aligned(base[1], dtype, default)
        else:
            out = cols[base[1]].astype(dtype)  # a copy
        differs = np.unpackbits(bits, count=n).view(np.bool_)
        out[differs] = np.asarray(values).astype(dtype)
    else:
        raise ValueError(f"unknown EntityTable column encoding {enc[0]!r}")
    if len(out) != n:
        raise ValueError(f"EntityTable column has {len(out)} rows, expected {n}")
    return out


# -- tables pickled against each other ----------------------------------------------------------
#
# A detector group's tables are keyed by one entity (fraud: card_velocity's recent cards are
# among amount_outlier's) and often hold equal columns (both keep each card's previous event
# time). Pickled by dumps_tables, a table whose keys are mostly another's
# stores them as a bitmap over that table's rows plus the keys it lacks, and a column may be
# stored as its differences from one of that table's columns (aligned by key).


class _Peer:
    """A table pickled earlier (``table``) as seen from one whose keys are ``keys``: ``rows``, the
    row of each key in ``table`` or -1."""

    def __init__(self, table: EntityTable, keys: NDArray[np.uint64]) -> None:
        self.table, self.keys = table, keys
        theirs = table.keys
        # the same keys (fraud: velocity's recent and hot cards when all cards are recent): no search
        self.same = len(theirs) == len(keys) and bool(np.array_equal(theirs, keys))
        self.rows = np.arange(len(keys), dtype=np.intp) if self.same else _search(theirs, keys)
        self.found = self.rows >= 0

    @classmethod
    def of(cls, table: EntityTable, keys: NDArray[np.uint64]) -> _Peer | None:
        """``table`` as a peer of a table with ``keys``, if that stores the keys in less than half."""
        peer = cls(table, keys)
        lacking = len(keys) - int(np.count_nonzero(peer.found))
        if (len(table) + 7) // 8 + 8 * lacking >= 4 * len(keys):
            return None
        return peer

    @classmethod
    def loaded(cls, table: EntityTable, state: tuple[Any, ...]) -> _Peer:
        """The peer of a table being unpickled, from the keys' state (:meth:`keys_state`)."""
        _, bits, lacking = state
        mine = table.keys[np.unpackbits(bits, count=len(table)).view(np.bool_)]
        keys = np.sort(np.concatenate([mine, np.asarray(lacking, dtype=np.uint64)]))
        return cls(table, keys)

    def keys_state(self) -> tuple[Any, ...]:
        """The keys as a bitmap over the peer's rows and the keys it lacks."""
        mine = np.zeros(len(self.table), dtype=np.bool_)
        mine[self.rows[self.found]] = True
        return ("peer_rows", np.packbits(mine), self.keys[~self.found])

    def aligned(self, name: str, dtype: np.dtype[Any], default: Any, copy: bool = True) -> NDArray[Any]:
        """The peer's column ``name`` at the rows of this table's keys (``default`` elsewhere);
        ``copy=False``: possibly the peer's own column (to read, not to write)."""
        col = self.table._cols[name][: len(self.table)]
        if self.same and col.dtype == dtype:
            return col.copy() if copy else col
        out = np.full(len(self.keys), default, dtype=dtype)
        out[self.found] = col[self.rows[self.found]]
        return out

    def bases(self, dtype: np.dtype[Any], default: Any) -> list[tuple[tuple[Any, ...], NDArray[Any]]]:
        """The peer's columns of ``dtype``, aligned, as extra bases for :func:`_pack`."""
        cols = self.table._cols
        return [
            (("peer", n), self.aligned(n, dtype, default, copy=False)) for n in cols if cols[n].dtype == dtype
        ]


def _table_against(table: EntityTable, state: dict[str, Any]) -> EntityTable:
    """Unpickle a table pickled against ``table`` (see :func:`dumps_tables`)."""
    out = EntityTable.__new__(EntityTable)
    out._set_state(state, table)
    return out


class _TablePickler(pickle.Pickler):
    def __init__(self, file: _Chunks) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.tables: list[EntityTable] = []

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is EntityTable:
            return obj._reduce_among(self.tables)
        return NotImplemented


def dumps_tables(obj: Any) -> bytes:
    """``pickle.dumps(obj)`` (highest protocol), where an :class:`EntityTable` whose keys are
    mostly those of one pickled before it is stored against that table: its keys as a bitmap
    over the other's rows, and its columns possibly as differences from the other's (fraud's
    card_velocity tables against amount_outlier's). ``pickle.loads`` restores every table."""
    chunks = _Chunks()
    _TablePickler(chunks).dump(obj)
    return b"".join(chunks.parts)


class _Chunks:
    """A pickler's file that keeps what it is given and copies it once, at the end: the
    pickler hands over large arrays as buffers of the arrays themselves, which a ``BytesIO``
    would copy into a buffer it grows (~30 % of a snapshot's pickling time)."""

    def __init__(self) -> None:
        self.parts: list[Any] = []

    def write(self, data: Any) -> int:
        self.parts.append(data)
        return memoryview(data).nbytes


def _spread(
    col: NDArray[Any], old: NDArray[np.bool_], at: NDArray[np.intp], new: Any, cap: int | None = None
) -> NDArray[Any]:
    """``col`` with ``new`` inserted at rows ``at`` of the result (``old``: the other rows), in an
    array of ``cap`` rows (default: exactly the result's). Masked copies: ~1.4x faster than
    gathering with an index array, at any table size."""
    out = np.empty(len(old) if cap is None else cap, dtype=col.dtype)
    head = out[: len(old)]
    head[old] = col
    head[at] = new
    return out


_TAIL_MIN: Final = 256
"""Tail rows always allowed before a merge (small tables merge rarely too)."""


def _search(sorted_keys: NDArray[np.uint64], keys: NDArray[np.uint64]) -> NDArray[np.intp]:
    """Index of each of ``keys`` in ``sorted_keys``, or -1."""
    if len(sorted_keys) == 0:
        return np.full(len(keys), -1, dtype=np.intp)
    pos: NDArray[np.intp] = np.searchsorted(sorted_keys, keys)
    np.minimum(pos, len(sorted_keys) - 1, out=pos)
    pos[sorted_keys[pos] != keys] = -1
    return pos


def _grown(a: NDArray[Any], n: int, cap: int) -> NDArray[Any]:
    """``a[:n]`` in a new array of ``cap`` rows."""
    out = np.empty(cap, dtype=a.dtype)
    out[:n] = a[:n]
    return out
