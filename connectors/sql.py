"""Alerts, samples and dead letters in SQL (SQLite or Postgres through psycopg 3), via SQLAlchemy Core.

Tables (one :data:`metadata`):

``alerts``
    ``alert_id`` (primary key, :attr:`operators.alerts.Alert.alert_id`), ``flow``, ``detector``,
    ``entity`` (index on flow, detector, entity), ``window_start``, ``window_end`` (nullable),
    ``event_ts``, ``score``, ``threshold``, ``evidence`` (JSON), ``created_at``.
``samples``
    ``sample_id`` (primary key, :attr:`connectors.events.Sample.sample_id`), ``flow``,
    ``window_start``, ``window_end``, ``stratum``, ``position``, ``event`` (JSON), ``created_at``,
    ``source_partition`` (the input partition of ``position`` for sources of several partitions,
    else ``""``; added to tables of earlier versions by :func:`create_tables`).
``dead_letters``
    ``id`` (primary key, :func:`dead_letter_id` of flow, source and position), ``flow``,
    ``source``, ``position``, ``reason``, ``raw`` (bytes, cut at ``RAW_LIMIT``), ``created_at``.

Timestamps are ``DateTime(timezone=True)`` stored from epoch seconds (UTC, microsecond precision);
SQLite keeps them as UTC text without offset. ``created_at`` is the wall-clock time of the insert
(one value per transaction): the only column that differs between two runs over the same input.
Non-finite floats inside JSON (not valid JSON) are stored as the strings ``"NaN"``,
``"Infinity"``, ``"-Infinity"``.

Delivery guarantee: Bytewax delivers at-least-once (after a crash, everything since the last
snapshot is replayed). Every row has a deterministic primary key and is written with
insert-or-ignore (``ON CONFLICT DO NOTHING``), so replays add nothing: effectively-once rows.
Each ``write_batch`` is one transaction: a batch is stored entirely or not at all.

SQLite runs in WAL mode with a 30 s busy timeout and ``BEGIN IMMEDIATE`` transactions, so several
workers (threads or processes) can write one file concurrently; they take turns.

Postgres (``postgresql+psycopg://``): insert-or-ignore is ``INSERT ... ON CONFLICT (pk) DO
NOTHING``; JSON columns are ``json``, timestamps ``timestamptz``, raw bytes ``bytea``. Engines use
``pool_pre_ping`` (a connection that died while idle in the pool is replaced before use), a
``connect_timeout`` of 10 s and TCP keepalives unless the URL sets them. Postgres text cannot hold
NUL characters (SQLite can): in the text columns of a Postgres row, ``\\x00`` is stored as
U+FFFD (the primary keys are hex digests, never affected; JSON keeps ``\\u0000``).

Outages
-------
Errors are sorted by :func:`is_transient_error`. *Transient*: the server cannot be reached or
the connection dropped (refused, reset, timeout, DNS failure, server starting up or shutting
down, too many clients, SQLSTATE class 08, ``57P01``-``57P03``, serialization failure or
deadlock, SQLAlchemy's ``DisconnectionError`` / invalidated connections; SQLite: database
locked). *Permanent*: everything else, e.g. a bad password, an unknown role or database, a
missing or mismatched table, bad data: those raise at once, never retried.

- **Writing** (:meth:`SqlSink.build` partitions): a transient failure retries the *same* batch
  with exponential backoff (:data:`RETRY_INITIAL` s doubling to :data:`RETRY_MAX` s), one log
  line per retry on logger ``connectors.sql`` (password redacted), and a line when the database
  is back. ``write_batch`` does not return meanwhile, so the flow stops behind it (back-pressure:
  no snapshot completes, nothing is read ahead). By default it retries forever
  (``write_timeout=None``): a stalled flow that resumes on its own beats a crash-restart loop.
  Nothing is lost or duplicated: a batch is one transaction, so it is stored entirely or not at
  all, and the retry re-sends all its rows with insert-or-ignore. If the connection dropped
  during ``COMMIT`` the outcome is unknown (it may have committed); the retry then either stores
  the whole batch (it had not committed) or ignores every row (it had), never half or twice.
- **Start-up** (:class:`SqlSink` construction creates the tables): a bad URL fails at once
  (``ValueError``), so do permanent errors; an unreachable server is retried with the same
  backoff for ``startup_timeout`` seconds (default: the URL's ``connect_timeout`` if given,
  else :data:`STARTUP_TIMEOUT`), covering a database container still starting next to the
  flow; then :class:`DatabaseUnavailableError` (a ``ConnectionError``) with one line naming the
  URL, the time waited and the last error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import Any, Final, TypeVar

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
    inspect,
    select,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.schema import CreateColumn
from sqlalchemy.sql.dml import Insert

from connectors.events import DeadLetter, Sample
from operators.alerts import Alert

__all__ = [
    "CONNECT_TIMEOUT",
    "RETRY_INITIAL",
    "RETRY_MAX",
    "SQLITE_BUSY_TIMEOUT_MS",
    "STARTUP_TIMEOUT",
    "DatabaseUnavailableError",
    "SinkItem",
    "SqlSink",
    "alerts",
    "create_tables",
    "dead_letter_id",
    "dead_letters",
    "is_transient_error",
    "make_engine",
    "metadata",
    "read_alerts",
    "read_table",
    "redact",
    "samples",
    "write_items",
]

SinkItem = Alert | Sample | DeadLetter
"""What the SQL and stdout sinks accept."""

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
"""How long a SQLite writer waits for another writer's transaction before failing."""

RETRY_INITIAL: Final = 0.1
"""Seconds before the first retry after a transient database failure; doubles each retry."""

RETRY_MAX: Final = 5.0
"""Cap of the retry delay, in seconds."""

STARTUP_TIMEOUT: Final = 30.0
"""Seconds :class:`SqlSink` keeps trying an unreachable database at start-up (unless the URL sets
``connect_timeout``) before it gives up with :class:`DatabaseUnavailableError`."""

CONNECT_TIMEOUT: Final = 10
"""Seconds one Postgres connection attempt may take, unless the URL sets ``connect_timeout``."""

log = logging.getLogger("connectors.sql")

T = TypeVar("T")


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
    # the input partition ``position`` refers to (sources of several partitions), else ""
    Column("source_partition", String, nullable=False, server_default=""),
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
    "samples": ("flow", "window_start", "stratum", "position", "source_partition"),
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
    if backend == "sqlite":
        engine = create_engine(u, json_serializer=_json_dumps)
        _setup_sqlite(engine, immediate=writer)
        return engine
    # Defaults the URL's query string may override: a bounded connection attempt, and TCP
    # keepalives so a silently dead server is noticed in ~1 min instead of hanging a write.
    defaults: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    connect_args = {k: v for k, v in defaults.items() if k not in u.query}
    return create_engine(u, json_serializer=_json_dumps, pool_pre_ping=True, connect_args=connect_args)


def redact(url: str | URL) -> str:
    """``url`` with its password replaced by ``***`` (for logs and error messages).

    >>> redact("postgresql+psycopg://u:secret@db:5432/sw")
    'postgresql+psycopg://u:***@db:5432/sw'
    """
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<unparsable database URL>"


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
    # Dialect modules (and psycopg) are imported only for the database in use: ~10 MiB less
    # resident memory for the embedded SQLite default.
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=pk)
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table).on_conflict_do_nothing(index_elements=pk)
    raise ValueError(f"insert-or-ignore is not implemented for dialect {name!r}; use SQLite or Postgres")


# --------------------------------------------------------------------------------------------
# Transient failures and retries

# SQLSTATEs worth retrying: class 08 (connection exception) is matched by prefix.
_TRANSIENT_SQLSTATES: Final = frozenset(
    {
        "40001",  # serialization_failure: the transaction was rolled back, safe to re-run
        "40P01",  # deadlock_detected: likewise
        "53300",  # too_many_connections
        "57P01",  # admin_shutdown: server stopped (fast/immediate shutdown)
        "57P02",  # crash_shutdown: another backend crashed, server restarting
        "57P03",  # cannot_connect_now: starting up, shutting down, in recovery
    }
)
# A connection attempt refused *by the server* carries no SQLSTATE in psycopg, only "FATAL: ...".
# These FATAL messages are transient; any other FATAL (bad password, unknown role or database,
# no pg_hba.conf entry, ...) is permanent.
_TRANSIENT_FATAL: Final = (
    "starting up",
    "shutting down",
    "in recovery mode",
    "not yet accepting connections",
    "too many clients",
    "remaining connection slots",
    "terminating connection",
)


def is_transient_error(error: BaseException) -> bool:
    """Whether ``error`` means "database unreachable or connection lost" (worth retrying).

    Transient: connection refused, reset or timed out, host not resolvable, the server starting
    up or shutting down, too many clients, SQLSTATE class ``08`` and ``57P01``-``57P03``,
    serialization failures and deadlocks (``40001``, ``40P01``), SQLAlchemy's
    ``DisconnectionError``, pool timeouts and errors that invalidated the connection; for SQLite,
    "database is locked". Permanent (``False``): everything else, notably authentication
    failures, unknown databases or roles, missing tables or columns, bad data.

    >>> import psycopg
    >>> is_transient_error(psycopg.OperationalError("connection failed: ... Connection refused"))
    True
    >>> is_transient_error(psycopg.OperationalError('... FATAL:  database "x" does not exist'))
    False
    """
    if isinstance(error, exc.DisconnectionError | exc.TimeoutError):
        return True
    orig: BaseException | None = error
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return True
        orig = error.orig
    psycopg = sys.modules.get("psycopg")  # loaded if the error can come from it
    if psycopg is not None and isinstance(orig, psycopg.Error):
        state = orig.sqlstate
        if state:
            return state.startswith("08") or state in _TRANSIENT_SQLSTATES
        if not isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError):
            return False
        message = str(orig)
        if "FATAL:" in message:
            return any(phrase in message for phrase in _TRANSIENT_FATAL)
        return True  # refused, reset, timeout, DNS, "the connection is lost", ...
    if isinstance(orig, sqlite3.OperationalError):
        text = str(orig).lower()
        return "database is locked" in text or "database is busy" in text
    return False


class DatabaseUnavailableError(ConnectionError):
    """The database stayed unreachable for the whole retry budget (one-line message)."""


def _first_line(error: BaseException, password: str | None) -> str:
    """One line describing ``error`` (the DBAPI message, without SQL or password)."""
    inner = error.orig if isinstance(error, exc.DBAPIError) and error.orig is not None else error
    text = " ".join(str(inner).split())  # psycopg spreads one error over several lines
    if password:
        text = text.replace(password, "***")
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


def _retrying(
    action: Callable[[], T],
    *,
    what: str,
    url: URL,
    timeout: float | None,
) -> T:
    """Run ``action``; retry transient failures with backoff for up to ``timeout`` s (None: forever).

    Permanent errors propagate at once. When the budget is spent, DatabaseUnavailableError.
    """
    shown = url.render_as_string(hide_password=True)
    started = time.monotonic()
    delay = RETRY_INITIAL
    attempt = 0
    while True:
        try:
            result = action()
        except Exception as e:
            if not is_transient_error(e):
                raise
            attempt += 1
            waited = time.monotonic() - started
            reason = _first_line(e, url.password)
            if timeout is not None and waited + delay > timeout:
                raise DatabaseUnavailableError(
                    f"{shown}: database unreachable for {waited:.1f} s ({attempt} attempts, gave up "
                    f"after {timeout:g} s): {reason}"
                ) from e
            log.warning("%s: %s failed (%s); retry %d in %.1f s", shown, what, reason, attempt, delay)
            time.sleep(delay)
            delay = min(delay * 2.0, RETRY_MAX)
        else:
            if attempt:
                log.warning(
                    "%s: %s succeeded after %d retries (%.1f s)",
                    shown,
                    what,
                    attempt,
                    time.monotonic() - started,
                )
            return result


def create_tables(engine: Engine) -> None:
    """Create the tables and indexes that do not exist yet (safe to race with another process),
    and add the columns of later versions to existing tables (:data:`_ADDED_COLUMNS`)."""
    try:
        metadata.create_all(engine)
    except (exc.IntegrityError, exc.ProgrammingError, exc.OperationalError):
        # Another process created them between our check and our CREATE: check again.
        metadata.create_all(engine)
    _add_columns(engine)


_ADDED_COLUMNS: Final = {"samples": ("source_partition",)}
"""Columns added after a table's first version: nullable or with a server default."""


def _add_columns(engine: Engine) -> None:
    existing = inspect(engine)
    for name, columns in _ADDED_COLUMNS.items():
        have = {c["name"] for c in existing.get_columns(name)}
        for column in (metadata.tables[name].c[c] for c in columns if c not in have):
            ddl = CreateColumn(column).compile(dialect=engine.dialect)
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {ddl}")
            except (exc.ProgrammingError, exc.OperationalError):
                # Another process added it first (else this error repeats on the next check).
                if column.name not in {c["name"] for c in inspect(engine).get_columns(name)}:
                    raise


# --------------------------------------------------------------------------------------------
# Rows (dicts of column values, timestamps still as epoch seconds: see :class:`_Insert`)


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
        return _JSON_STRICT.encode(value)
    except ValueError:
        return _JSON.encode(_finite_json(value))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _finite_json(value.tolist())
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    raise TypeError(f"value of type {type(value).__name__} is not JSON-serialisable")


# json.dumps(value, **options) builds an encoder per call; these are built once (same output).
_JSON: Final = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=_jsonable)
_JSON_STRICT: Final = json.JSONEncoder(
    separators=(",", ":"), sort_keys=True, allow_nan=False, default=_jsonable
)


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
    return r


def _sample_row(s: Sample) -> dict[str, Any]:
    return {
        "sample_id": s.sample_id,
        "flow": s.flow,
        "window_start": s.window_start,
        "window_end": s.window_end,
        "stratum": s.stratum,
        "position": int(s.position),
        "event": s.event,
        "source_partition": s.partition,
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

    Outages (see the module docstring): a write that fails because the database is unreachable
    or the connection dropped is retried, same batch, with exponential backoff, blocking the
    flow meanwhile; permanent errors raise.

    Parameters
    ----------
    url : str
        SQLAlchemy URL: ``sqlite:///PATH`` or ``postgresql+psycopg://USER:PASS@HOST/DB``.
    create : bool, default True
        Create missing tables now (at construction, so a bad URL fails at start-up).
    startup_timeout : float, optional
        Seconds to keep retrying an unreachable database while creating the tables. Default:
        the URL's ``connect_timeout`` if it has one, else :data:`STARTUP_TIMEOUT`.
    write_timeout : float, optional
        Seconds a write keeps retrying before it raises :class:`DatabaseUnavailableError` (which
        stops the flow). Default ``None``: retry until the database is back.

    Raises
    ------
    ValueError
        Unsupported database URL.
    DatabaseUnavailableError
        The database stayed unreachable for ``startup_timeout`` seconds.
    sqlalchemy.exc.DBAPIError
        A permanent error (authentication, unknown database, ...), raised at once.
    """

    def __init__(
        self,
        url: str,
        create: bool = True,
        *,
        startup_timeout: float | None = None,
        write_timeout: float | None = None,
    ) -> None:
        self.url = url
        self.write_timeout = write_timeout
        engine = make_engine(url)
        if startup_timeout is None:
            given = engine.url.query.get("connect_timeout")
            try:
                startup_timeout = float(given) if isinstance(given, str) else STARTUP_TIMEOUT
            except ValueError:
                startup_timeout = STARTUP_TIMEOUT
        self.startup_timeout = startup_timeout
        try:
            if create:
                _retrying(
                    lambda: create_tables(engine),
                    what="creating tables",
                    url=engine.url,
                    timeout=startup_timeout,
                )
        finally:
            engine.dispose()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SqlPartition:
        """A partition with its own engine and connection."""
        return _SqlPartition(make_engine(self.url), self.write_timeout)

    def __repr__(self) -> str:
        return f"SqlSink({redact(self.url)!r})"


_ROWS: Final[tuple[tuple[type, Table, Callable[[Any], dict[str, Any]], str], ...]] = (
    (Alert, alerts, _alert_row, "alert_id"),
    (Sample, samples, _sample_row, "sample_id"),
    (DeadLetter, dead_letters, _dead_row, "id"),
)


class _Insert:
    """Insert-or-ignore into one table, compiled once; rows become DBAPI parameters directly.

    ``Connection.execute(insert, rows)`` costs ~20 us per row in SQLAlchemy's per-execution
    parameter processing. Here each row is converted once by the same bind processors SQLAlchemy
    uses (so the stored values are identical) and the compiled SQL goes straight to the
    driver's ``executemany`` through ``exec_driver_sql`` (same connection, transaction, events
    and error wrapping).
    """

    def __init__(self, engine: Engine, table: Table) -> None:
        dialect = engine.dialect
        compiled = _insert_ignore(engine, table).compile(dialect=dialect)
        self.sql = compiled.string
        # Positional paramstyle (SQLite's "?"): tuples in this order; else (psycopg) dicts.
        self._positional = itemgetter(*compiled.positiontup) if compiled.positiontup else None
        self._stamp: Callable[[Any], Any] = lambda v: v  # created_at: set by params(), per transaction
        self._processors: list[tuple[str, Callable[[Any], Any]]] = []
        for column in table.columns:
            process = column.type.dialect_impl(dialect).bind_processor(dialect)
            if column.name == "created_at":
                self._stamp = process or self._stamp
            elif isinstance(column.type, DateTime):
                self._processors.append((column.name, _timestamp(process)))  # from epoch seconds
            elif process is not None:
                self._processors.append((column.name, process))

    def bind(self, row: dict[str, Any]) -> dict[str, Any]:
        """Convert the values of ``row`` (in place) to what the driver gets; ``row`` itself."""
        for name, process in self._processors:
            row[name] = process(row[name])
        return row

    def params(self, rows: list[dict[str, Any]]) -> list[Any]:
        """DBAPI parameters of bound ``rows``, with ``created_at`` set to now."""
        now = self._stamp(_utcnow())
        for row in rows:
            row["created_at"] = now
        return rows if self._positional is None else list(map(self._positional, rows))


def _timestamp(process: Callable[[Any], Any] | None) -> Callable[[float | None], Any]:
    """Epoch seconds (or None) to the driver's value for a timestamp column, memoised.

    Rows of a window share its start and end, so most conversions are cache hits.
    """

    @lru_cache(maxsize=1024)
    def convert(x: float | None) -> Any:
        value = _dt(x)
        return value if process is None else process(value)

    return convert


def _text_columns(table: Table) -> tuple[str, ...]:
    return tuple(c.name for c in table.columns if isinstance(c.type, String))  # Text is a String


class _SqlPartition(StatelessSinkPartition[SinkItem]):
    def __init__(self, engine: Engine, write_timeout: float | None = None) -> None:
        self._engine = engine
        self._write_timeout = write_timeout
        self._inserts = {table.name: _Insert(engine, table) for _, table, _, _ in _ROWS}
        # Postgres rejects NUL in text; None: nothing to clean (SQLite).
        self._text = (
            {table.name: _text_columns(table) for _, table, _, _ in _ROWS}
            if engine.dialect.name == "postgresql"
            else None
        )

    def write_batch(self, items: list[SinkItem]) -> None:
        rows: dict[str, dict[str, dict[str, Any]]] = {table.name: {} for _, table, _, _ in _ROWS}
        for item in items:
            for cls, table, to_row, pk in _ROWS:
                if isinstance(item, cls):
                    row = to_row(item)
                    if self._text is not None:
                        _drop_nul(row, self._text[table.name])
                    rows[table.name][row[pk]] = row  # one row per key, also within a batch
                    break
            else:
                raise TypeError(f"SqlSink takes Alert, Sample or DeadLetter items, got {type(item).__name__}")
        batches = {
            name: [self._inserts[name].bind(row) for row in by_key.values()]
            for name, by_key in rows.items()
            if by_key
        }
        if not batches:
            return

        def write() -> None:
            # One transaction: all of the batch or none of it, so a retry is always safe.
            with self._engine.begin() as conn:
                for name, values in batches.items():
                    insert = self._inserts[name]
                    conn.exec_driver_sql(insert.sql, insert.params(values))

        _retrying(
            write,
            what=f"write of {len(items)} items",
            url=self._engine.url,
            timeout=self._write_timeout,
        )

    def close(self) -> None:
        self._engine.dispose()


def _drop_nul(row: dict[str, Any], columns: tuple[str, ...]) -> None:
    for c in columns:
        v = row.get(c)
        if isinstance(v, str) and "\x00" in v:
            row[c] = v.replace("\x00", "\ufffd")


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
