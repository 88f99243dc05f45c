"""Raw records to events: JSON Lines, CSV and decoded mappings, validated against the flow's schema.

Every input record becomes exactly one event of the returned :class:`~connectors.events.EventBatch`
or exactly one :class:`~connectors.events.DeadLetter` (records in = events + dead letters), so a
flow can account for every line it read. Events keep their input order; dead letters are returned
in input order too.

Validation, per schema field (:data:`~connectors.events.SCHEMAS`):

* A required field must be present and not ``null``. A missing or ``null`` optional ``str`` field
  becomes ``""`` (an optional number would become NaN, or 0 for an int; no schema has one).
* ``str`` fields take JSON strings. JSON integers are accepted too and turned into their decimal
  text (``"card_id": 1234`` becomes ``"1234"``), because numeric ids are common in exports;
  floats and booleans are not. Strings holding a NUL character or a lone surrogate (``"\\ud800"``)
  are rejected: databases (Postgres ``text``) cannot store them.
* ``float`` fields take finite JSON numbers (integers included) inside ``[low, high]``.
  Booleans are not numbers. ``NaN``/``Infinity`` literals and numbers too large for a float are
  rejected.
* ``int`` fields take integral numbers inside ``[low, high]``; ``200.0`` is accepted as ``200``.
* ``ts`` takes epoch seconds (a number or a numeric string) or RFC 3339 / ISO 8601 text with a
  timezone (``"2026-11-22T06:40:05Z"``, ``"2026-11-22T07:40:05+01:00"``). Text without timezone is
  rejected (``timestamp without timezone``): guessing the zone would shift events silently. The
  instant must lie in 1970-01-01 .. 2200-01-01 (:data:`TS_LOW`, :data:`TS_HIGH`).
* Fields not in the schema are ignored.

Record-level rejections: a line longer than :data:`MAX_RECORD_BYTES` (not parsed at all), an
empty or all-whitespace line (``empty line``; kept as a dead letter so that line counts add up),
bytes that are not UTF-8, text that is not JSON, JSON that is not an object, and CSV rows with the
wrong number of columns or broken quoting. A dead letter's ``reason`` names the field and the
problem, e.g. ``field 'amount': expected a number, got str``; the first failing field in schema
order is reported.

CSV: the caller parses the header once (:meth:`CsvDialect.from_header`) and passes the dialect
with each batch of data lines. Values are text, so numbers are parsed from text (``float()``
syntax; an empty cell of a number or timestamp field counts as missing). One record per line:
quoted fields holding line breaks are not supported (such a record turns into dead letters).

Speed: JSON Lines go through a C scanner first (``connectors/_cjsonl.c``, ~0.23 s per million
fraud lines), which writes the plain lines straight into columns and leaves the others to the
Python path (see :func:`_parse_jsonl`). The Python path decodes with orjson (~0.4 s per million
fraud lines, about half of its parse: the objects it creates) and converts one column at a time
(type census with ``set(map(type, ...))``, conversion with numpy, range checks vectorised); the
slow per-value path runs only for columns that hold something unusual. Equal strings of a column
of few distinct values share one object (:class:`_Interner`, and a table in the scanner), which
the detectors downstream read faster; that changes object identity only, never a value.
"""

from __future__ import annotations

import csv
import gc
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from operator import itemgetter
from typing import Any, Final

import numpy as np
import orjson
from numpy.typing import NDArray

from connectors.events import SCHEMAS, DeadLetter, EventBatch, Field, Schema

try:
    from connectors import _cjsonl
except ImportError:  # pragma: no cover - built without a C compiler: the Python path only
    _cjsonl = None  # type: ignore[assignment]

__all__ = [
    "FORMATS",
    "MAX_RECORD_BYTES",
    "TS_HIGH",
    "TS_LOW",
    "CsvDialect",
    "parse_lines",
    "parse_records",
]

MAX_RECORD_BYTES: Final = 64 * 1024
"""Longest accepted record (line) in bytes, line break excluded; longer ones are dead letters."""

TS_LOW: Final = 0.0
"""Earliest accepted event time: 1970-01-01T00:00:00Z as epoch seconds."""

TS_HIGH: Final = 7_258_118_400.0
"""Latest accepted event time: 2200-01-01T00:00:00Z as epoch seconds."""

FORMATS: Final = ("jsonl", "csv")
"""Line formats understood by :func:`parse_lines`."""


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()

# The C scanner behind json.loads, called directly: one C call per line, no Python-level
# wrapper (json.loads costs ~40 % more per short line). Failures fall back to json.loads
# for its error message.
_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_WHITESPACE: Final = " \t\n\r"


@dataclass(frozen=True)
class CsvDialect:
    """How to read CSV data lines: the header's column names and the delimiter.

    Parameters
    ----------
    columns : tuple of str
        Column names in file order (from the header row).
    delimiter : str, default ","
        One-character field separator. Quoting follows RFC 4180 (``"`` doubled inside quotes).

    Examples
    --------
    >>> d = CsvDialect.from_header(b"brand,sentiment,ts\\r\\n")
    >>> d.columns
    ('brand', 'sentiment', 'ts')
    """

    columns: tuple[str, ...]
    delimiter: str = ","

    def __post_init__(self) -> None:
        if len(self.delimiter) != 1 or self.delimiter in '"\r\n':
            raise ValueError(
                f"CSV delimiter must be one character other than quote or newline, got {self.delimiter!r}"
            )
        seen: set[str] = set()
        for name in self.columns:
            if name in seen:
                raise ValueError(f"CSV header names column {name!r} twice")
            seen.add(name)

    @classmethod
    def from_header(cls, line: bytes, delimiter: str = ",") -> CsvDialect:
        """Parse a header row (bytes; a UTF-8 byte-order mark and the line break are dropped)."""
        text = line.decode("utf-8-sig").rstrip("\r\n")
        if not text.strip():
            raise ValueError("CSV header row is empty")
        row = next(csv.reader([text], delimiter=delimiter, strict=True))
        return cls(tuple(name.strip() for name in row), delimiter)

    def check(self, schema: Schema) -> None:
        """Raise ValueError if a required field of ``schema`` has no column."""
        for f in schema.fields:
            if f.required and f.name not in self.columns:
                raise ValueError(
                    f"CSV header lacks required column {f.name!r} for flow {schema.flow!r} "
                    f"(header: {', '.join(self.columns)})"
                )


def parse_lines(
    flow: str,
    lines: Sequence[bytes],
    first_position: int,
    source: str,
    fmt: str = "jsonl",
    *,
    dialect: CsvDialect | None = None,
) -> tuple[EventBatch | None, list[DeadLetter]]:
    """Turn raw lines into one batch of valid events and the dead letters of the rest.

    Parameters
    ----------
    flow : str
        Flow name, a key of :data:`~connectors.events.SCHEMAS`.
    lines : sequence of bytes
        One record per item, without line break (a trailing ``\\r`` or ``\\n`` is tolerated).
    first_position : int
        Position of ``lines[0]`` in its input; line ``i`` gets ``first_position + i``.
    source : str
        Name of the input for dead letters (file path, topic, ...).
    fmt : {"jsonl", "csv"}
        JSON Lines (one JSON object per line) or CSV data rows (no header row).
    dialect : CsvDialect, optional
        Required when ``fmt == "csv"``: the header's columns and the delimiter.

    Returns
    -------
    batch : EventBatch or None
        The valid events in input order (None if there are none).
    dead : list of DeadLetter
        One per rejected line, in input order.

    Raises
    ------
    ValueError
        Unknown flow or format, or a CSV dialect missing or lacking a required column.

    Examples
    --------
    >>> lines = [b'{"brand":"acme","sentiment":0.5,"ts":"2026-11-22T06:40:05Z"}', b"{oops"]
    >>> batch, dead = parse_lines("sentiment", lines, 10, "demo.jsonl")
    >>> batch.positions.tolist(), batch["ts"].tolist(), batch["text"].tolist()
    ([10], [1795329605.0], [''])
    >>> [(d.position, d.reason) for d in dead]
    [(11, 'not JSON: Expecting property name enclosed in double quotes at column 2')]
    """
    schema = _schema(flow)
    if fmt == "jsonl":
        with _gc_paused():
            return _parse_jsonl(schema, lines, first_position, source)
    if fmt == "csv":
        if dialect is None:
            raise ValueError("parse_lines: fmt='csv' needs a CsvDialect (the file's header row)")
        dialect.check(schema)
        with _gc_paused():
            keep, rows, dead = _decode_csv(flow, lines, first_position, source, dialect)
            out = _finish_csv(schema, dialect, rows, keep, first_position, source, lines, dead)
            del rows
        return out
    raise ValueError(f"parse_lines: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


_JSONL_PIECE: Final = 2048
"""Lines decoded and validated together: the decoded dicts of a piece stay in the CPU caches
while their columns are built (pieces of 2048 lines parse ~15 % faster than one of 10 000)."""


def _parse_jsonl(
    schema: Schema, lines: Sequence[bytes], first: int, source: str
) -> tuple[EventBatch | None, list[DeadLetter]]:
    """JSON Lines to events: the C fast path for the plain lines, the Python path for the rest.

    The fast path (``connectors/_cjsonl.c``) takes a line only when its meaning is beyond doubt
    (flat ASCII object, no escapes, every field once with the expected JSON type) and its numbers
    lie in range; every other line, valid or not, goes through :func:`_parse_jsonl_python`, which
    decides and words the dead letters. Both give the same events (tests compare them).
    """
    if _cjsonl is None or not lines:
        return _parse_jsonl_python(schema, lines, first, source)
    if not isinstance(lines, list):
        lines = list(lines)
    n = len(lines)
    columns = {f.name: np.empty(n, f.dtype) for f in schema.fields}  # object columns hold None
    ok = np.empty(n, dtype=np.uint8)
    kinds = "".join(_SCAN_KINDS[f.kind] for f in schema.fields)
    texts = _cjsonl.scan(lines, schema.names, kinds, tuple(columns.values()), ok, MAX_RECORD_BYTES)
    good = ok.view(bool)
    for f, text in zip(schema.fields, texts, strict=True):
        if f.kind == "str":
            continue
        num = columns[f.name]
        if text:
            _timestamps_from_text(f, text, num, good)
        low, high = _bounds(f)
        with np.errstate(invalid="ignore"):
            good &= (num >= low) & (num <= high)  # rows out of range: Python words the reason
    if not good.any():  # nothing for the fast path (e.g. non-ASCII text): no rows to map back
        return _parse_jsonl_python(schema, lines, first, source)
    rest = np.flatnonzero(~good)
    slow, dead = _parse_jsonl_python(schema, [lines[i] for i in rest.tolist()], 0, source)
    dead = [replace(d, position=first + int(rest[d.position])) for d in dead]
    if slow is not None:  # the slow rows' events go to their rows of the fast path's columns
        rows = rest[slow.positions]
        for name, col in slow.columns.items():
            columns[name][rows] = col
        good[rows] = True
    if good.all():
        return EventBatch(schema.flow, np.arange(first, first + n, dtype=np.int64), columns), dead
    keep = np.flatnonzero(good)
    if not len(keep):
        return None, dead
    return EventBatch(schema.flow, keep + first, {k: v[keep] for k, v in columns.items()}), dead


_SCAN_KINDS: Final = {"str": "s", "float": "f", "int": "i", "ts": "t"}


def _timestamps_from_text(
    f: Field, texts: list[tuple[int, str]], out: NDArray[np.float64], good: NDArray[np.bool_]
) -> None:
    """Read the fast path's text timestamps into ``out``; rows that fail leave ``good``."""
    cache: dict[str, tuple[Any, str]] = {}
    for row, text in texts:
        value, reason = cache.get(text) or _check_ts_text(f, text, cache)
        if reason:
            good[row] = False
        else:
            out[row] = value


def _check_ts_text(f: Field, text: str, cache: dict[str, tuple[Any, str]]) -> tuple[Any, str]:
    """``_check_ts(f, text)``, kept in ``cache``: text timestamps repeat and parse slowly.

    Callers look ``cache`` up first, so that a hit costs no call:
    ``cache.get(text) or _check_ts_text(f, text, cache)`` (a result is a non-empty tuple).
    """
    hit = cache[text] = _check_ts(f, text, False)
    return hit


def _parse_jsonl_python(
    schema: Schema, lines: Sequence[bytes], first: int, source: str
) -> tuple[EventBatch | None, list[DeadLetter]]:
    """JSON Lines to events, :data:`_JSONL_PIECE` lines at a time (same result as all at once)."""
    n = len(lines)
    if not isinstance(lines, list | tuple):
        lines = list(lines)
    interners = _interners(schema)
    batches: list[EventBatch] = []
    dead: list[DeadLetter] = []
    for start in range(0, n, _JSONL_PIECE):
        piece = lines[start : start + _JSONL_PIECE] if n > _JSONL_PIECE else lines
        keep, recs, d = _decode_jsonl(schema.flow, piece, first + start, source)
        b, d = _finish(
            schema, recs, keep, first + start, source, piece, d, text=False, exact=True, interners=interners
        )
        del recs  # free this piece's records before decoding the next one
        if b is not None:
            batches.append(b)
        dead.extend(d)  # each piece's dead letters are in order, and pieces are
    return (EventBatch.concat(batches) if batches else None), dead


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch is decoded.

    Decoding allocates ~10 container objects per record and none of them form cycles; the
    young-generation collections they trigger cost ~20 % of the parse time. Reference
    counting still frees everything. The collector is switched back on only if it was on.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def parse_records(
    flow: str,
    records: Sequence[Any],
    positions: Sequence[int] | NDArray[np.int64],
    source: str,
    raws: Sequence[bytes],
) -> tuple[EventBatch | None, list[DeadLetter]]:
    """Validate already-decoded records (e.g. Kafka messages) into events and dead letters.

    Parameters
    ----------
    flow : str
        Flow name.
    records : sequence of Mapping
        Decoded records (JSON-like values); anything that is not a Mapping is a dead letter.
    positions : sequence of int
        Each record's position in its input (e.g. Kafka offset), same length as ``records``.
    source : str
        Name of the input for dead letters.
    raws : sequence of bytes
        Each record's raw bytes, kept (cut at ``RAW_LIMIT``) in its dead letter.

    Returns
    -------
    batch : EventBatch or None
        The valid events in input order (None if there are none).
    dead : list of DeadLetter
        One per rejected record, in input order.

    Examples
    --------
    >>> recs = [{"brand": "a", "sentiment": 2.0, "ts": 1.0}, {"brand": "b", "sentiment": 0, "ts": 2}]
    >>> batch, dead = parse_records("sentiment", recs, [7, 8], "kafka:t/0", [b"r7", b"r8"])
    >>> batch.positions.tolist(), dead[0].reason
    ([8], "field 'sentiment': 2.0 outside [-1.0, 1.0]")
    """
    schema = _schema(flow)
    n = len(records)
    if len(positions) != n or len(raws) != n:
        raise ValueError(f"parse_records: {n} records but {len(positions)} positions and {len(raws)} raws")
    pos = np.asarray(positions, dtype=np.int64)
    keep: list[int] = []
    recs: list[Mapping[str, Any]] = []
    dead: list[DeadLetter] = []
    for i, r in enumerate(records):
        if isinstance(r, Mapping):
            keep.append(i)
            recs.append(r)
        else:
            dead.append(DeadLetter(flow, source, int(pos[i]), f"not a JSON object: got {_tname(r)}", raws[i]))
    return _finish(schema, recs, keep, pos, source, raws, dead, text=False)


# --------------------------------------------------------------------------------------------
# Record level


def _schema(flow: str) -> Schema:
    try:
        return SCHEMAS[flow]
    except KeyError:
        raise ValueError(f"unknown flow {flow!r}; expected one of {', '.join(SCHEMAS)}") from None


def _decode_text(
    flow: str, lines: Sequence[bytes], first: int, source: str, dead: list[DeadLetter]
) -> tuple[list[int], list[str]]:
    """UTF-8 text of every line that is not too large, not empty and decodes; dead letters else."""
    if lines and max(map(len, lines)) <= MAX_RECORD_BYTES:
        try:
            # One decode for the whole batch; valid only if no line holds a line break itself.
            texts = b"\n".join(lines).decode("utf-8").split("\n")
        except UnicodeDecodeError:
            texts = []
        if len(texts) == len(lines):
            idx = list(range(len(lines)))
            if all(texts):
                return idx, texts
            keep_i, keep_t = [], []
            for i, t in zip(idx, texts, strict=True):
                if t:
                    keep_i.append(i)
                    keep_t.append(t)
                else:
                    dead.append(DeadLetter(flow, source, first + i, "empty line", lines[i]))
            return keep_i, keep_t
    keep_i, keep_t = [], []
    for i, line in enumerate(lines):
        if len(line) > MAX_RECORD_BYTES:
            reason = f"line longer than MAX_RECORD_BYTES ({MAX_RECORD_BYTES} bytes), not parsed"
        else:
            try:
                t = line.decode("utf-8")
            except UnicodeDecodeError as e:
                reason = f"not UTF-8: {e.reason} at byte {e.start}"
            else:
                if t:
                    keep_i.append(i)
                    keep_t.append(t)
                    continue
                reason = "empty line"
        dead.append(DeadLetter(flow, source, first + i, reason, line))
    return keep_i, keep_t


def _decode_jsonl(
    flow: str, lines: Sequence[bytes], first: int, source: str
) -> tuple[Sequence[int], list[dict[str, Any]], list[DeadLetter]]:
    """Decode JSON Lines: orjson for lines that are plain JSON objects (~3x faster than the
    standard library), the standard-library path for everything else (it accepts a superset of
    JSON and words the dead-letter reasons), so the outcome equals :func:`_decode_jsonl_lines`'.

    The lines are decoded by one ``list.extend(map(orjson.loads, ...))`` (no Python-level loop
    per line). When a line fails, CPython's ``list.extend`` keeps the objects decoded before it,
    so the failing line is ``lines[len(objs)]`` and decoding resumes after it; the failure is
    re-checked, and if it does not reproduce the whole batch takes the per-line path. Returns
    ``range(len(lines))`` as the kept indices when every line is a JSON object.
    """
    n = len(lines)
    if not n:
        return [], [], []
    if max(map(len, lines)) > MAX_RECORD_BYTES:
        return _decode_jsonl_lines(flow, lines, first, source)
    loads, error = orjson.loads, orjson.JSONDecodeError
    objs: list[Any] = []
    rest = iter(lines)
    while True:
        try:
            objs.extend(map(loads, rest))
            break
        except error:
            k = len(objs)
            try:
                loads(lines[k])
            except error:
                objs.append(None)  # not a dict: decoded again below by the reference path
            else:  # pragma: no cover - list.extend dropped its partial result (not CPython)
                return _decode_jsonl_lines(flow, lines, first, source)
    if set(map(type, objs)) == _DICT_TYPES:
        return range(n), objs, []
    keep = [i for i, obj in enumerate(objs) if type(obj) is dict]
    slow = [i for i, obj in enumerate(objs) if type(obj) is not dict]
    return _merge_slow(flow, lines, first, source, keep, [objs[i] for i in keep], slow)


def _decode_jsonl_lines(
    flow: str, lines: Sequence[bytes], first: int, source: str
) -> tuple[list[int], list[dict[str, Any]], list[DeadLetter]]:
    """The per-line loop of :func:`_decode_jsonl` (also its reference in the tests)."""
    keep: list[int] = []
    recs: list[dict[str, Any]] = []
    slow: list[int] = []
    loads, error = orjson.loads, orjson.JSONDecodeError
    for i, line in enumerate(lines):
        if len(line) <= MAX_RECORD_BYTES:
            try:
                obj = loads(line)
            except error:
                slow.append(i)
                continue
            if type(obj) is dict:
                keep.append(i)
                recs.append(obj)
                continue
        slow.append(i)
    if not slow:
        return keep, recs, []
    return _merge_slow(flow, lines, first, source, keep, recs, slow)


def _merge_slow(
    flow: str,
    lines: Sequence[bytes],
    first: int,
    source: str,
    keep: list[int],
    recs: list[dict[str, Any]],
    slow: list[int],
) -> tuple[list[int], list[dict[str, Any]], list[DeadLetter]]:
    """Decode the ``slow`` lines with the reference path and merge them with the fast ones."""
    sub_keep, sub_recs, dead = _decode_jsonl_reference(flow, [lines[i] for i in slow], 0, source)
    dead = [replace(d, position=first + slow[d.position]) for d in dead]
    merged = sorted(
        [*zip(keep, recs, strict=True), *((slow[k], r) for k, r in zip(sub_keep, sub_recs, strict=True))],
        key=itemgetter(0),
    )
    return [i for i, _ in merged], [r for _, r in merged], dead


def _decode_jsonl_reference(
    flow: str, lines: Sequence[bytes], first: int, source: str
) -> tuple[list[int], list[dict[str, Any]], list[DeadLetter]]:
    dead: list[DeadLetter] = []
    idx, texts = _decode_text(flow, lines, first, source, dead)
    keep: list[int] = []
    recs: list[dict[str, Any]] = []
    scan = _scan_once
    for i, t in zip(idx, texts, strict=True):
        try:
            obj, end = scan(t, 0)
            if end != len(t) and t[end:].strip(_WHITESPACE):
                raise ValueError
        except (StopIteration, ValueError, RecursionError):
            obj, reason = _json_slow(t)
            if reason:
                dead.append(DeadLetter(flow, source, first + i, reason, lines[i]))
                continue
        if type(obj) is dict:
            keep.append(i)
            recs.append(obj)
        else:
            reason = f"not a JSON object: got {_tname(obj)}"
            dead.append(DeadLetter(flow, source, first + i, reason, lines[i]))
    if dead:
        dead.sort(key=_by_position)
    return keep, recs, dead


def _json_slow(text: str) -> tuple[Any, str]:
    """``json.loads`` with the error turned into a reason (empty reason: it parsed)."""
    if not text.strip(_WHITESPACE):
        return None, "empty line"
    try:
        return json.loads(text), ""
    except json.JSONDecodeError as e:
        return None, f"not JSON: {e.msg} at column {e.colno}"
    except RecursionError:
        return None, "not JSON: nested too deeply"
    except ValueError as e:  # e.g. an integer literal longer than Python's digit limit
        return None, f"not JSON: {str(e)[:80]}"


def _decode_csv(
    flow: str, lines: Sequence[bytes], first: int, source: str, dialect: CsvDialect
) -> tuple[list[int], list[list[str]], list[DeadLetter]]:
    dead: list[DeadLetter] = []
    idx, texts = _decode_text(flow, lines, first, source, dead)
    keep: list[int] = []
    rows: list[list[str]] = []
    width = len(dialect.columns)
    delim = dialect.delimiter
    for i, t in zip(idx, texts, strict=True):
        t = t.rstrip("\r\n")
        if '"' in t:
            try:
                row = next(csv.reader([t], delimiter=delim, strict=True))
            except csv.Error as e:
                dead.append(DeadLetter(flow, source, first + i, f"bad CSV row: {e}", lines[i]))
                continue
        elif not t.strip():
            dead.append(DeadLetter(flow, source, first + i, "empty line", lines[i]))
            continue
        else:
            row = t.split(delim)
        if len(row) != width:
            reason = f"bad CSV row: {len(row)} columns, header has {width}"
            dead.append(DeadLetter(flow, source, first + i, reason, lines[i]))
            continue
        keep.append(i)
        rows.append(row)
    if dead:
        dead.sort(key=_by_position)
    return keep, rows, dead


def _by_position(d: DeadLetter) -> int:
    return d.position


def _tname(value: Any) -> str:
    if value is None:
        return "null"
    return type(value).__name__


# --------------------------------------------------------------------------------------------
# Column level


def _finish(
    schema: Schema,
    recs: Sequence[Mapping[str, Any]],
    keep: Sequence[int],
    first: int | NDArray[np.int64],
    source: str,
    raws: Sequence[bytes],
    dead: list[DeadLetter],
    *,
    text: bool,
    exact: bool = False,
    interners: Mapping[str, _Interner] | None = None,
) -> tuple[EventBatch | None, list[DeadLetter]]:
    """Validate records column by column; build the batch of the good ones.

    ``exact``: the values come from a JSON decoder, so they are of the exact built-in JSON types
    (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``, ``None``; no subclasses), which
    lets a ``str`` column skip its type census (see :func:`_column`). ``interners``: per ``str``
    field, shared by the pieces of one batch (see :class:`_Interner`); new ones by default.
    """
    names = schema.names
    if not recs:
        return None, dead
    cols: list[Sequence[Any]] = []
    for n in names:
        try:
            cols.append(list(map(itemgetter(n), recs)))
        except KeyError:
            cols.append([r.get(n, _MISSING) for r in recs])
    return _assemble(
        schema,
        list(zip(schema.fields, cols, strict=True)),
        keep,
        first,
        source,
        raws,
        dead,
        text,
        exact,
        _interners(schema) if interners is None else interners,
    )


def _finish_csv(
    schema: Schema,
    dialect: CsvDialect,
    rows: list[list[str]],
    keep: list[int],
    first: int,
    source: str,
    raws: Sequence[bytes],
    dead: list[DeadLetter],
) -> tuple[EventBatch | None, list[DeadLetter]]:
    if not rows:
        return None, dead
    transposed = list(zip(*rows, strict=True))
    where = {name: j for j, name in enumerate(dialect.columns)}
    cols: list[tuple[Field, Sequence[Any]]] = []
    for f in schema.fields:
        j = where.get(f.name)
        cols.append((f, transposed[j] if j is not None else [_MISSING] * len(rows)))
    return _assemble(schema, cols, keep, first, source, raws, dead, True, False, _interners(schema))


def _assemble(
    schema: Schema,
    cols: list[tuple[Field, Sequence[Any]]],
    keep: Sequence[int],
    first: int | NDArray[np.int64],
    source: str,
    raws: Sequence[bytes],
    dead: list[DeadLetter],
    text: bool,
    exact: bool,
    interners: Mapping[str, _Interner],
) -> tuple[EventBatch | None, list[DeadLetter]]:
    errors: dict[int, str] = {}
    arrays: dict[str, NDArray[Any]] = {}
    for f, values in cols:
        arr, errs = _column(f, values, text, exact, interners.get(f.name))
        arrays[f.name] = arr
        for row, reason in errs.items():
            if row not in errors:
                errors[row] = f"field {f.name!r}: {reason}"
    if isinstance(keep, range) and not isinstance(first, np.ndarray):
        positions = np.arange(first + keep.start, first + keep.stop, keep.step, dtype=np.int64)
    else:
        keep_arr = np.asarray(keep, dtype=np.int64)
        positions = first[keep_arr] if isinstance(first, np.ndarray) else keep_arr + first
    if errors:
        for row, reason in errors.items():
            i = keep[row]
            dead.append(DeadLetter(schema.flow, source, int(positions[row]), reason, raws[i]))
        dead.sort(key=_by_position)
        mask = np.ones(len(keep), dtype=bool)
        mask[list(errors)] = False
        if not mask.any():
            return None, dead
        positions = positions[mask]
        arrays = {k: v[mask] for k, v in arrays.items()}
    return EventBatch(schema.flow, positions, arrays), dead


_DICT_TYPES: Final = frozenset({dict})
_NUMBER_TYPES: Final = frozenset({int, float})
_INT_TYPES: Final = frozenset({int})
_STR_TYPES: Final = frozenset({str})


def _column(
    f: Field, values: Sequence[Any], text: bool, exact: bool = False, intern: _Interner | None = None
) -> tuple[NDArray[Any], dict[int, str]]:
    """Convert one column; returns the array (bad rows hold a placeholder) and row -> reason.

    Fast path per column: a type census (``set(map(type, ...))``), one C-level conversion and a
    vectorised range check. A ``str`` column is checked by joining it (``"".join`` raises on the
    first value that is not a ``str``; the joined text is searched for NUL and lone surrogates
    once); with ``exact`` (values from a JSON decoder, no ``str`` subclasses) that is the census.
    Its equal values then share one object (``intern``, see :class:`_Interner`).
    Columns holding anything unusual take the per-value path, :func:`_column_slow`.
    """
    kind = f.kind
    n = len(values)
    if kind == "str":
        try:
            joined = "".join(values)
        except TypeError:
            pass
        else:
            if (exact or set(map(type, values)) <= _STR_TYPES) and _storable(joined):
                if intern is not None:
                    values = intern(values)
                return np.fromiter(values, dtype=object, count=n), {}
    elif kind == "int":
        types = set(map(type, values))
        if (types <= _INT_TYPES and not text) or (text and types <= _STR_TYPES):
            try:
                iarr = np.fromiter(values if not text else map(int, values), dtype=np.int64, count=n)
            except (OverflowError, ValueError):
                pass
            else:
                return iarr, _range_errors(f, iarr, values, text)
    else:  # float, ts
        types = set(map(type, values))
        if (types <= _NUMBER_TYPES and not text) or (text and types <= _STR_TYPES):
            try:
                farr = np.fromiter(values if not text else map(float, values), dtype=np.float64, count=n)
            except (OverflowError, ValueError):
                pass
            else:
                return farr, _range_errors(f, farr, values, text)
    return _column_slow(f, values, text)


_INTERN_PROBE: Final = 8192
"""Values an :class:`_Interner` sees before it judges whether its column repeats enough."""


class _Interner:
    """Makes equal strings of one column share one ``str`` object, within one batch.

    A decoder creates a new object per value, scattered over the heap between the records'
    other objects; the detectors then touch each one (hashing, ``merchant + "/" + type``), and
    the cache misses made the fraud flow's detectors ~20 % slower than on batches whose repeated
    values share objects (as the generator's do). Interning costs one dict lookup per value
    (~20 ns for a handful of distinct values, ~50 ns for thousands, ~190 ns for tens of
    thousands), so a column whose values are mostly distinct (more than half of the first
    :data:`_INTERN_PROBE` seen: ids) is left alone after that. Only object identity changes,
    never a value.
    """

    __slots__ = ("memo", "seen")

    def __init__(self) -> None:
        self.memo: dict[str, str] | None = {}
        self.seen = 0

    def __call__(self, values: Sequence[str]) -> Sequence[str]:
        memo = self.memo
        if memo is None:
            return values
        out = list(map(memo.setdefault, values, values))
        self.seen += len(out)
        if self.seen >= _INTERN_PROBE and 2 * len(memo) > self.seen:
            self.memo = None
        return out


def _interners(schema: Schema) -> dict[str, _Interner]:
    return {f.name: _Interner() for f in schema.fields if f.kind == "str"}


def _range_errors(f: Field, arr: NDArray[Any], values: Sequence[Any], text: bool) -> dict[int, str]:
    """Rows of a converted numeric column outside the field's range (or not finite)."""
    low, high = _bounds(f)
    if arr.min() >= low and arr.max() <= high:  # False if the column holds a NaN
        return {}
    with np.errstate(invalid="ignore"):
        ok = (arr >= low) & (arr <= high)  # False for NaN
    check = _CHECKERS[f.kind]
    errs = {}
    for row in np.flatnonzero(~ok).tolist():
        _, reason = check(f, values[row], text)
        errs[row] = reason or f"{values[row]!r} rejected"
    return errs


def _column_slow(f: Field, values: Sequence[Any], text: bool) -> tuple[NDArray[Any], dict[int, str]]:
    check = _CHECKERS[f.kind]
    out: list[Any] = []
    errs: dict[int, str] = {}
    placeholder = {"str": "", "float": math.nan, "ts": math.nan, "int": 0}[f.kind]
    cache: dict[str, tuple[Any, str]] = {}
    for row, v in enumerate(values):
        if v is _MISSING or v is None or (text and v == "" and f.kind != "str"):
            if f.required:
                errs[row] = "missing" if v is _MISSING else ("null" if v is None else "empty")
                out.append(placeholder)
            else:
                out.append(placeholder)
            continue
        if f.kind == "ts" and type(v) is str:
            value, reason = cache.get(v) or _check_ts_text(f, v, cache)
        else:
            value, reason = check(f, v, text)
        if reason:
            errs[row] = reason
            out.append(placeholder)
        else:
            out.append(value)
    if f.kind == "str":
        arr = np.empty(len(out), dtype=object)
        arr[:] = out
    else:
        arr = np.array(out, dtype=f.dtype)
    return arr, errs


def _bounds(f: Field) -> tuple[float, float]:
    if f.kind == "ts":
        return TS_LOW, TS_HIGH
    low = -math.inf if f.low is None else f.low
    high = math.inf if f.high is None else f.high
    return low, high


def _storable(s: str) -> bool:
    """True if ``s`` has no NUL and no lone surrogate (both break SQL sinks, e.g. Postgres text)."""
    if "\x00" in s:
        return False
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_str(f: Field, v: Any, text: bool) -> tuple[Any, str]:
    t = type(v)
    if t is str:
        if not _storable(v):
            if "\x00" in v:
                return None, "string contains a NUL character"
            return None, "string is not valid Unicode (lone surrogate escape)"
        return v, ""
    if t is int:
        return str(v), ""
    return None, f"expected a string, got {_tname(v)}"


def _number(f: Field, v: Any, text: bool) -> tuple[float | None, str]:
    """``v`` as a finite float (JSON number, or text in CSV), or the reason it is not one."""
    t = type(v)
    if text and t is str:
        try:
            x = float(v)
        except ValueError:
            return None, f"expected a number, got {_short(v)}"
    elif t is int or t is float:
        try:
            x = float(v)
        except OverflowError:
            return None, "number too large for a float"
    else:
        return None, f"expected a number, got {_tname(v)}"
    if not math.isfinite(x):
        return None, f"not a finite number ({x})"
    return x, ""


def _check_float(f: Field, v: Any, text: bool) -> tuple[Any, str]:
    x, reason = _number(f, v, text)
    if x is None:
        return None, reason
    low, high = _bounds(f)
    if not low <= x <= high:
        return None, f"{x!r} outside [{low!r}, {high!r}]"
    return x, ""


def _check_int(f: Field, v: Any, text: bool) -> tuple[Any, str]:
    t = type(v)
    if t is int:
        n = v
    elif text and t is str:
        try:
            n = int(v)
        except ValueError:
            x, reason = _number(f, v, text)
            if x is None:
                return None, reason.replace("a number", "an integer")
            if not x.is_integer():
                return None, f"expected an integer, got {x!r}"
            n = int(x)
    elif t is float:
        if not math.isfinite(v):
            return None, f"not a finite number ({v})"
        if not v.is_integer():
            return None, f"expected an integer, got {v!r}"
        n = int(v)
    else:
        return None, f"expected an integer, got {_tname(v)}"
    low, high = _bounds(f)
    if not low <= n <= high:
        lo = int(low) if math.isfinite(low) else low
        hi = int(high) if math.isfinite(high) else high
        shown = str(n) if abs(n) < 10**30 else f"an integer of {len(str(abs(n)))} digits"
        return None, f"{shown} outside [{lo}, {hi}]"
    return n, ""


def _check_ts(f: Field, v: Any, text: bool) -> tuple[Any, str]:
    t = type(v)
    if t is str:
        try:
            x = float(v)
        except ValueError:
            x = None
        if x is None:
            s = v.strip()
            if s[-1:] in ("Z", "z"):
                s = s[:-1] + "+00:00"
            try:
                dt = datetime.fromisoformat(s)
            except ValueError:
                return None, f"not a timestamp: {_short(v)}"
            if dt.tzinfo is None or dt.utcoffset() is None:
                return None, "timestamp without timezone"
            try:
                x = dt.timestamp()
            except (OverflowError, ValueError, OSError):
                return None, f"timestamp out of range: {_short(v)}"
            if not TS_LOW <= x <= TS_HIGH:
                return None, f"timestamp {_short(v)} outside 1970..2200"
            return x, ""
    elif t is int or t is float:
        try:
            x = float(v)
        except OverflowError:
            return None, "number too large for a float"
    else:
        return None, f"expected epoch seconds or an RFC 3339 string, got {_tname(v)}"
    if not math.isfinite(x):
        return None, f"not a finite number ({x})"
    if not TS_LOW <= x <= TS_HIGH:
        return None, f"epoch seconds {x!r} outside [{TS_LOW!r}, {TS_HIGH!r}] (1970..2200)"
    return x, ""


def _short(v: str, limit: int = 40) -> str:
    return repr(v if len(v) <= limit else v[:limit] + "...")


_CHECKERS: Final[dict[str, Callable[[Field, Any, bool], tuple[Any, str]]]] = {
    "str": _check_str,
    "float": _check_float,
    "int": _check_int,
    "ts": _check_ts,
}
