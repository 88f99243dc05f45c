"""Alerts, samples and dead letters in SQL (SQLite now, Postgres through psycopg 3), via SQLAlchemy Core.

Tables (one :data:`metadata`):

``alerts``
    ``alert_id`` (primary key, :attr:`operators.alerts.Alert.alert_id`), ``flow``, ``detector``,
    ``entity`` (index on flow, detector, entity), ``window_start``, ``window_end`` (nullable),
    ``event_ts``, ``score``, ``threshold``, ``evidence`` (JSON), ``created_at``.
``samples``
    ``sample_id`` (primary key, :attr:`connectors.events.Sample.sample_id`), ``flow``,
    ``window_start``, ``window_end``, ``stratum``, ``position``, ``event`` (JSON), ``created_at``.
``dead_letters``
    ``id`` (primary key, :func:`dead_letter_id` of flow, source and position), ``flow``,
    ``source``, ``position``, ``reason``, ``raw`` (bytes, cut at ``RAW_LIMIT``), ``created_at``.

Timestamps are ``DateTime(timezone=True)`` stored from epoch seconds (UTC, microsecond precision);
SQLite keeps them as UTC text without offset. ``created_at`` is the wall-clock time of the insert:
the only column that differs between two runs over the same input. Non-finite floats inside JSON
(not valid JSON) are stored as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.

Delivery guarantee: Bytewax delivers at-least-once (after a crash, everything since the last
snapshot is replayed). Every row has a deterministic primary key and is written with
insert-or-ignore (``ON CONFLICT DO NOTHING``), so replays add nothing: effectively-once rows.
Each ``write_batch`` is one transaction: a batch is stored entirely or not at all.

SQLite runs in WAL mode with a 30 s busy timeout and ``BEGIN IMMEDIATE`` transactions, so several
workers (threads or processes) can write one file concurrently; they take turns.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    exc,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.sql.dml import Insert

from connectors.events import DeadLetter, Sample
from operators.alerts import Alert

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "SinkItem",
    "SqlSink",
    "alerts",
    "create_tables",
    "dead_letter_id",
    "dead_letters",
    "make_engine",
    "metadata",
    "read_alerts",
    "read_table",
    "samples",
    "write_items",
]

SinkItem = Alert | Sample | DeadLetter
"""What the SQL and stdout sinks accept."""

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
"""How long a SQLite writer waits for another writer's transaction before failing."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


metadata = MetaData()

alerts = Table(
    "alerts",
    metadata,
    Column("alert_id", String(32), primary_key=True),
    Column("flow", String(64), nullable=False),
    Column("detector", String(128), nullable=False),
    Column("entity", String, nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=True),
    Column("window_end", DateTime(timezone=True), nullable=True),
    Column("event_ts", DateTime(timezone=True), nullable=False),
    Column("score", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, default=_utcnow),
    Index("ix_alerts_flow_detector_entity", "flow", "detector", "entity"),
)

samples = Table(
    "samples",
    metadata,
    Column("sample_id", String(32), primary_key=True),
    Column("flow", String(64), nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("stratum", String, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("event", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, default=_utcnow),
    Index("ix_samples_flow_window", "flow", "window_start"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("flow", String(64), nullable=False),
    Column("source", String, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, default=_utcnow),
)

_ORDER: Final[dict[str, tuple[str, ...]]] = {
    "alerts": ("event_ts", "alert_id"),
    "samples": ("flow", "window_start", "stratum", "position"),
    "dead_letters": ("flow", "source", "position"),
}


def dead_letter_id(d: DeadLetter) -> str:
    """Primary key of a dead letter: a hash of flow, source and position (replays collide)."""
    return hashlib.sha256(f"{d.flow}|{d.source}|{d.position}".encode()).hexdigest()[:32]


# --------------------------------------------------------------------------------------------
# Engines


def make_engine(url: str, *, writer: bool = True) -> Engine:
    """An engine for ``url`` (SQLite file or Postgres), set up for concurrent writers.

    Raises
    ------
    ValueError
        Unsupported dialect, or an in-memory SQLite database (private to one connection, so
        invisible to other workers and to readers).
    """
    u = make_url(url)
    backend = u.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(
            f"{u.render_as_string(hide_password=True)}: unsupported database "
            f"{backend!r}; use sqlite:///PATH or postgresql+psycopg://..."
        )
    if backend == "sqlite" and u.database in (None, "", ":memory:"):
        raise ValueError(f"{url}: in-memory SQLite is private to one connection; use sqlite:///PATH")
    if backend == "sqlite" and writer:
        # Like the file itself, its folder is made on demand.
        Path(str(u.database)).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(u, json_serializer=_json_dumps)
    if backend == "sqlite":
        _setup_sqlite(engine, immediate=writer)
    return engine


def _setup_sqlite(engine: Engine, *, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock at once, so a writer waits (busy_timeout) instead of
        # failing when it would have to upgrade a read lock another writer got in between.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _insert_ignore(engine: Engine, table: Table) -> Insert:
    pk = [c.name for c in table.primary_key.columns]
    name = engine.dialect.name
    if name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=pk)
    if name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=pk)
    raise ValueError(f"insert-or-ignore is not implemented for dialect {name!r}; use SQLite or Postgres")


def create_tables(engine: Engine) -> None:
    """Create the tables and indexes that do not exist yet (safe to race with another process)."""
    try:
        metadata.create_all(engine)
    except (exc.IntegrityError, exc.ProgrammingError, exc.OperationalError):
        # Another process created them between our check and our CREATE: check again.
        metadata.create_all(engine)


# --------------------------------------------------------------------------------------------
# Rows


def _dt(x: float | None) -> datetime | None:
    return None if x is None else datetime.fromtimestamp(float(x), timezone.utc)


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # SQLite drops the offset; we store UTC
    return value.timestamp()


class _JsonText(str):
    """JSON that is already serialised (and valid): passed through by :func:`_json_dumps`."""

    __slots__ = ()


def _json_dumps(value: Any) -> str:
    if type(value) is _JsonText:
        return str(value)
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False, default=_jsonable)
    except ValueError:
        return json.dumps(_finite_json(value), separators=(",", ":"), sort_keys=True, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _finite_json(value.tolist())
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    raise TypeError(f"value of type {type(value).__name__} is not JSON-serialisable")


def _finite_json(value: Any) -> Any:
    """``value`` with non-finite floats replaced by their JSON5-style names (strings)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(v) for v in value]
    return value


def _alert_row(a: Alert) -> dict[str, Any]:
    r = a.to_record()
    text = r["evidence"]
    # Not valid JSON if it holds NaN/Infinity: decode, and let _json_dumps name those values.
    r["evidence"] = json.loads(text) if "NaN" in text or "Infinity" in text else _JsonText(text)
    r["window_start"] = _dt(r["window_start"])
    r["window_end"] = _dt(r["window_end"])
    r["event_ts"] = _dt(r["event_ts"])
    return r


def _sample_row(s: Sample) -> dict[str, Any]:
    return {
        "sample_id": s.sample_id,
        "flow": s.flow,
        "window_start": _dt(s.window_start),
        "window_end": _dt(s.window_end),
        "stratum": s.stratum,
        "position": int(s.position),
        "event": s.event,
    }


def _dead_row(d: DeadLetter) -> dict[str, Any]:
    return {
        "id": dead_letter_id(d),
        "flow": d.flow,
        "source": d.source,
        "position": int(d.position),
        "reason": d.reason,
        "raw": bytes(d.raw),
    }


# --------------------------------------------------------------------------------------------
# Sink


class SqlSink(DynamicSink[SinkItem]):
    """Bytewax sink writing alerts, samples and dead letters to SQLite or Postgres.

    Delivery: at-least-once from Bytewax, made effectively-once by the deterministic primary
    keys and insert-or-ignore: writing the same items twice stores each row once. Every
    ``write_batch`` is one transaction. Each worker opens its own connection.

    Parameters
    ----------
    url : str
        SQLAlchemy URL: ``sqlite:///PATH`` or ``postgresql+psycopg://USER:PASS@HOST/DB``.
    create : bool, default True
        Create missing tables now (at construction, so a bad URL fails at start-up).

    Raises
    ------
    ValueError
        Unsupported database URL.
    """

    def __init__(self, url: str, create: bool = True) -> None:
        self.url = url
        engine = make_engine(url)
        try:
            if create:
                create_tables(engine)
        finally:
            engine.dispose()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SqlPartition:
        """A partition with its own engine and connection."""
        return _SqlPartition(make_engine(self.url))

    def __repr__(self) -> str:
        return f"SqlSink({make_url(self.url).render_as_string(hide_password=True)!r})"


_ROWS: Final[tuple[tuple[type, Table, Callable[[Any], dict[str, Any]], str], ...]] = (
    (Alert, alerts, _alert_row, "alert_id"),
    (Sample, samples, _sample_row, "sample_id"),
    (DeadLetter, dead_letters, _dead_row, "id"),
)


class _SqlPartition(StatelessSinkPartition[SinkItem]):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._inserts = {table.name: _insert_ignore(engine, table) for _, table, _, _ in _ROWS}

    def write_batch(self, items: list[SinkItem]) -> None:
        rows: dict[str, dict[str, dict[str, Any]]] = {table.name: {} for _, table, _, _ in _ROWS}
        for item in items:
            for cls, table, to_row, pk in _ROWS:
                if isinstance(item, cls):
                    row = to_row(item)
                    rows[table.name][row[pk]] = row  # one row per key, also within a batch
                    break
            else:
                raise TypeError(f"SqlSink takes Alert, Sample or DeadLetter items, got {type(item).__name__}")
        if not any(rows.values()):
            return
        with self._engine.begin() as conn:
            for name, by_key in rows.items():
                if by_key:
                    conn.execute(self._inserts[name], list(by_key.values()))

    def close(self) -> None:
        self._engine.dispose()


# --------------------------------------------------------------------------------------------
# Reading (tests, evaluation)


def read_table(url: str, name: str) -> list[dict[str, Any]]:
    """All rows of table ``name`` as dicts, timestamps as epoch seconds, JSON decoded.

    Rows come in a stable order (alerts by event time and id, samples by flow, window,
    stratum and position, dead letters by flow, source and position).
    """
    try:
        table = metadata.tables[name]
    except KeyError:
        raise ValueError(f"unknown table {name!r}; expected one of {', '.join(metadata.tables)}") from None
    engine = make_engine(url, writer=False)
    try:
        with engine.connect() as conn:
            order = [table.c[c] for c in _ORDER[name]]
            result = conn.execute(select(table).order_by(*order))
            out = [dict(row._mapping) for row in result]
    finally:
        engine.dispose()
    times = [c.name for c in table.columns if isinstance(c.type, DateTime)]
    for row in out:
        for c in times:
            row[c] = _epoch(row[c])
    return out


def read_alerts(url: str) -> list[dict[str, Any]]:
    """All rows of ``alerts`` (see :func:`read_table`), by event time then alert id."""
    return read_table(url, "alerts")


def write_items(url: str, items: Iterable[SinkItem], batch: int = 10_000) -> None:
    """Write items outside a dataflow (scripts, tests), in transactions of ``batch`` items."""
    sink = SqlSink(url)
    part = sink.build("write_items", 0, 1)
    try:
        chunk: list[SinkItem] = []
        for item in items:
            chunk.append(item)
            if len(chunk) >= batch:
                part.write_batch(chunk)
                chunk = []
        if chunk:
            part.write_batch(chunk)
    finally:
        part.close()
