"""SqlSink against a real PostgreSQL 15 server: schema, round trips, idempotence, concurrency, outages.

The server is the session fixture of :mod:`tests.services.postgres` (it fails the tests, never
skips them, when Postgres cannot start). Each test works in its own fresh database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from connectors.events import RAW_LIMIT, DeadLetter, Sample
from connectors.sql import (
    DatabaseUnavailableError,
    SqlSink,
    is_transient_error,
    metadata,
    read_alerts,
    read_table,
    write_items,
)
from dataflows.evaluate import run_flow
from operators.alerts import Alert
from tests.connectors.test_sql import core_write, edge_items, write_in_batches
from tests.services.postgres import PostgresServer

_databases = count()


def alert(i: int, **changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "flow": "fraud",
        "detector": "velocity",
        "entity": f"card{i % 10}",
        "event_ts": 1_700_000_000.0 + i * 0.5,
        "score": 10.0 + i,
        "threshold": 8.0,
        "window_start": 1_700_000_000.0,
        "window_end": 1_700_000_060.0,
        "trigger": f"tx{i}",
        "evidence": {"estimate": i, "error_bound": 0.5, "top": [["m1", 3], ["m2", 2]]},
    }
    fields.update(changes)
    return Alert(**fields)


def mixed_items() -> list[Any]:
    items: list[Any] = [alert(i) for i in range(20)]
    items.append(alert(20, window_start=None, window_end=None, score=float("inf")))
    items.append(alert(21, evidence={"ratio": float("nan"), "neg": float("-inf"), "unicode": "zürich ✓"}))
    items += [
        Sample("iot", 100.0, 160.0, f"zone-{i}", i, {"device_id": f"d{i}", "temperature": 21.5, "ts": 120.25})
        for i in range(5)
    ]
    items.append(DeadLetter("iot", "in.jsonl", 7, "not JSON: Expecting value", b"\xff\x00" * RAW_LIMIT))
    items.append(DeadLetter("iot", "in.jsonl", 8, "empty line", b""))
    return items


def without_created_at(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "created_at"} for r in rows]


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session server."""
    if not postgres_server.running:  # a failed outage test must not break the next ones
        postgres_server.start()
    name = f"t{next(_databases)}_{time.monotonic_ns() % 10**9}"
    postgres_server.create_database(name)
    yield postgres_server.url_for(name)


def pg_count(url: str, table: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"select count(*) from {table}")).scalar_one())
    finally:
        engine.dispose()


def test_tables_and_types_created(pg_url: str) -> None:
    SqlSink(pg_url)
    SqlSink(pg_url)  # idempotent
    engine = create_engine(pg_url)
    try:
        insp = inspect(engine)
        assert {"alerts", "samples", "dead_letters"} <= set(insp.get_table_names())
        assert "ix_alerts_flow_detector_entity" in {i["name"] for i in insp.get_indexes("alerts")}
        assert insp.get_pk_constraint("alerts")["constrained_columns"] == ["alert_id"]
        with engine.connect() as conn:
            types: dict[str, str] = dict(
                conn.execute(
                    text(
                        "select column_name, data_type from information_schema.columns "
                        "where table_name = 'alerts'"
                    )
                ).all()
            )
            raw = conn.execute(
                text(
                    "select data_type from information_schema.columns "
                    "where table_name = 'dead_letters' and column_name = 'raw'"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    assert types["evidence"] == "json"
    assert types["event_ts"] == types["created_at"] == "timestamp with time zone"
    assert types["score"] == "double precision"
    assert raw == "bytea"


def test_round_trip_equals_sqlite(pg_url: str, tmp_path: Path) -> None:
    """Every column reads back from Postgres exactly as from SQLite (created_at aside)."""
    items = mixed_items()
    sqlite_url = f"sqlite:///{tmp_path / 'ref.db'}"
    write_items(pg_url, items)
    write_items(sqlite_url, items)
    for table in ("alerts", "samples", "dead_letters"):
        pg, ref = read_table(pg_url, table), read_table(sqlite_url, table)
        assert without_created_at(pg) == without_created_at(ref), table
        assert all(isinstance(r["created_at"], float) for r in pg)
    rows = {r["alert_id"]: r for r in read_alerts(pg_url)}
    a20, a21 = alert(20, window_start=None, window_end=None, score=float("inf")), items[21]
    assert rows[a20.alert_id]["window_start"] is None and rows[a20.alert_id]["score"] == 1e308
    assert rows[a21.alert_id]["evidence"] == {"ratio": "NaN", "neg": "-Infinity", "unicode": "zürich ✓"}
    first = rows[alert(0).alert_id]
    assert first["event_ts"] == 1_700_000_000.0 and first["window_end"] == 1_700_000_060.0
    assert first["evidence"] == {"estimate": 0, "error_bound": 0.5, "top": [["m1", 3], ["m2", 2]]}
    (dead,) = [r for r in read_table(pg_url, "dead_letters") if r["position"] == 7]
    assert dead["raw"] == b"\xff\x00" * (RAW_LIMIT // 2) and len(dead["raw"]) == RAW_LIMIT


def pg_stored(url: str, table: str) -> list[tuple[Any, ...]]:
    """Every stored value of ``table`` but created_at as Postgres prints it, by primary key.

    ``json`` keeps its input text verbatim, so this compares the exact JSON sent.
    """
    cols = [c.name for c in metadata.tables[table].columns if c.name != "created_at"]
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query = f"select {', '.join(f'{c}::text' for c in cols)} from {table} order by 1"
            return [tuple(row) for row in conn.execute(text(query))]
    finally:
        engine.dispose()


def test_rows_are_stored_exactly_as_through_sqlalchemy_core(
    pg_url: str, postgres_server: PostgresServer
) -> None:
    """The sink bypasses SQLAlchemy's per-row processing; the stored values must not change."""
    items = edge_items(nul=False)  # the reference path would not replace NUL
    ref_name = pg_url.rsplit("/", 1)[1] + "_ref"
    postgres_server.create_database(ref_name)
    ref_url = postgres_server.url_for(ref_name)
    core_write(ref_url, items)
    write_in_batches(pg_url, items)
    for table, n in (("alerts", 43), ("samples", 41), ("dead_letters", 2)):
        got, ref = read_table(pg_url, table), read_table(ref_url, table)
        assert len(got) == n and without_created_at(got) == without_created_at(ref), table
        assert pg_stored(pg_url, table) == pg_stored(ref_url, table), table
        assert all(isinstance(r["created_at"], float) for r in got)


def test_sub_second_timestamps_and_nul_characters(pg_url: str) -> None:
    a = alert(1, event_ts=1_700_000_000.123456, entity="dev\x00ice", evidence={"s": "a\x00b"})
    d = DeadLetter("iot", "in\x00.jsonl", 3, "bad\x00reason", b"\x00")
    write_items(pg_url, [a, d])
    (row,) = read_alerts(pg_url)
    assert row["alert_id"] == a.alert_id and row["event_ts"] == 1_700_000_000.123456
    assert row["entity"] == "dev\ufffdice"  # Postgres text cannot hold NUL
    assert row["evidence"] == {"s": "a\x00b"}  # JSON escapes it
    (dead,) = read_table(pg_url, "dead_letters")
    assert (dead["source"], dead["reason"], dead["raw"]) == ("in\ufffd.jsonl", "bad\ufffdreason", b"\x00")


def test_a_flow_writes_the_same_rows_to_postgres_and_sqlite(pg_url: str, tmp_path: Path) -> None:
    """The IoT flow (2 workers) with both SQL sinks: Postgres holds exactly what SQLite holds."""
    sqlite_url = f"sqlite:///{tmp_path / 'out.db'}"
    env = {"SKETCHWATCH_EVENTS": "30000", "SKETCHWATCH_SINKS": f"{sqlite_url},{pg_url}"}
    run_flow("iot", env, workers=2)
    for table in ("alerts", "samples", "dead_letters"):
        pg, ref = read_table(pg_url, table), read_table(sqlite_url, table)
        assert without_created_at(pg) == without_created_at(ref), table
    assert len(read_alerts(pg_url)) > 10 and len(read_table(pg_url, "samples")) > 100


def test_same_batch_twice_stores_each_row_once(pg_url: str) -> None:
    items = mixed_items()
    part = SqlSink(pg_url).build("out", 0, 1)
    try:
        part.write_batch(items)
        first = read_alerts(pg_url)
        part.write_batch(items[::-1])  # a replay, in another order
        part.write_batch(items[:5] + items[:5])  # duplicates within one batch
    finally:
        part.close()
    assert read_alerts(pg_url) == first  # the first write wins, created_at included
    assert (pg_count(pg_url, "alerts"), pg_count(pg_url, "samples"), pg_count(pg_url, "dead_letters")) == (
        22,
        5,
        2,
    )


def test_two_threads_write_concurrently(pg_url: str) -> None:
    sink = SqlSink(pg_url)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        part = sink.build("out", worker, 2)
        try:
            start = worker * 500  # overlapping: both write alerts 500..999
            for lo in range(start, start + 1000, 50):
                part.write_batch([alert(i) for i in range(lo, lo + 50)])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            part.close()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert pg_count(pg_url, "alerts") == 1500
    assert {r["alert_id"] for r in read_alerts(pg_url)} == {alert(i).alert_id for i in range(1500)}


def test_postgres_down_ten_seconds_mid_write_loses_and_duplicates_nothing(
    pg_url: str,
    postgres_server: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """200 batches; Postgres is stopped for 10 s while they are written; each alert lands once."""
    batches, per_batch = 200, 50
    sink = SqlSink(pg_url)
    done = threading.Event()
    progress = [0]
    errors: list[BaseException] = []
    durations: list[float] = []

    def writer() -> None:
        part = sink.build("out", 0, 1)
        try:
            for b in range(batches):
                started = time.monotonic()
                part.write_batch([alert(i) for i in range(b * per_batch, (b + 1) * per_batch)])
                durations.append(time.monotonic() - started)
                progress[0] = b + 1
                time.sleep(0.01)  # a flow between batches
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            part.close()
            done.set()

    caplog.set_level(logging.WARNING, logger="connectors.sql")
    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.monotonic() + 30
    while progress[0] < 40 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert progress[0] >= 40 and not done.is_set(), "the writer finished before the outage"
    at_stop = progress[0]
    postgres_server.stop()
    time.sleep(10.0)
    during = progress[0]
    postgres_server.start()
    assert done.wait(60), "the writer did not finish after Postgres came back"
    thread.join()

    assert not errors, errors
    assert during <= at_stop + 1  # blocked (back-pressure): at most the batch in flight completed
    assert max(durations) >= 9.0  # one write_batch call waited out the outage
    ids = [r["alert_id"] for r in read_alerts(pg_url)]
    expected = {alert(i).alert_id for i in range(batches * per_batch)}
    assert len(ids) == len(set(ids)) == batches * per_batch and set(ids) == expected
    retries = [r.getMessage() for r in caplog.records if "; retry " in r.getMessage()]
    recovered = [r.getMessage() for r in caplog.records if "succeeded after" in r.getMessage()]
    assert 3 <= len(retries) <= 20, retries  # backoff 0.1, 0.2, ... capped at 5 s over 10 s
    assert len(recovered) == 1, recovered
    assert all("write of 50 items failed" in m and "postgres@127.0.0.1" in m for m in retries)


def test_startup_waits_for_a_database_that_comes_back(
    pg_url: str,
    postgres_server: PostgresServer,
) -> None:
    postgres_server.stop()
    timer = threading.Timer(1.5, postgres_server.start)
    timer.start()
    try:
        started = time.monotonic()
        SqlSink(pg_url, startup_timeout=20)
        assert 1.0 < time.monotonic() - started < 15
    finally:
        timer.join()
    assert read_alerts(pg_url) == []


def test_startup_gives_up_on_an_unreachable_database_in_one_line() -> None:
    url = "postgresql+psycopg://u:secret@127.0.0.1:1/sw"
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as info:
        SqlSink(url, startup_timeout=1.0)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert message.startswith("postgresql+psycopg://u:***@127.0.0.1:1/sw: database unreachable for ")
    assert "Connection refused" in message and "\n" not in message and "secret" not in message
    # the URL's connect_timeout bounds the start-up wait when no startup_timeout is given
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError):
        SqlSink(url + "?connect_timeout=1")
    assert time.monotonic() - started < 5


def test_permanent_errors_raise_at_once(
    pg_url: str,
    postgres_server: PostgresServer,
) -> None:
    cases = {
        "unknown database": postgres_server.url_for("no_such_db"),
        "unknown role": postgres_server.url_for("sketchwatch", user="nobody"),
    }
    postgres_server.add_password_role("pwuser", "right")
    good = pg_url.replace("postgres@", "pwuser:right@")
    cases["bad password"] = pg_url.replace("postgres@", "pwuser:wrong@")
    for what, url in cases.items():
        started = time.monotonic()
        with pytest.raises(OperationalError) as info:
            SqlSink(url, startup_timeout=60)
        assert time.monotonic() - started < 3, what
        assert not is_transient_error(info.value), what
    with pytest.raises(OperationalError, match="password authentication failed"):
        SqlSink(cases["bad password"])
    with psycopg.connect(postgres_server.dsn(pg_url.rsplit("/", 1)[1]), autocommit=True) as conn:
        conn.execute("GRANT ALL ON SCHEMA public TO pwuser")
    SqlSink(good)  # the right password works

    # A schema mismatch while running: the table lost a column the sink writes.
    part = SqlSink(pg_url).build("out", 0, 1)
    try:
        part.write_batch([alert(1)])
        engine = create_engine(pg_url)
        with engine.begin() as conn:
            conn.execute(text("alter table alerts drop column evidence"))
        engine.dispose()
        started = time.monotonic()
        with pytest.raises(ProgrammingError, match="evidence"):
            part.write_batch([alert(2)])
        assert time.monotonic() - started < 3
    finally:
        part.close()


def test_transient_classification_of_real_errors(
    pg_url: str,
    postgres_server: PostgresServer,
) -> None:
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
            postgres_server.stop()
            with pytest.raises(DBAPIError) as dropped:
                conn.execute(text("select 1"))
        with pytest.raises(DBAPIError) as refused, engine.connect():
            pass
    finally:
        postgres_server.start()
        engine.dispose()
    assert is_transient_error(dropped.value)  # 57P01 admin shutdown / connection invalidated
    assert is_transient_error(refused.value)  # connection refused
    assert not is_transient_error(ValueError("x"))


def test_samples_table_of_an_earlier_version_gets_the_partition_column(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "create table samples (sample_id varchar(32) primary key, flow varchar(64) not null, "
                    "window_start timestamptz not null, window_end timestamptz not null, "
                    "stratum varchar not null, position bigint not null, event json not null, "
                    "created_at timestamptz not null)"
                )
            )
            conn.execute(text("insert into samples values ('old', 'f', now(), now(), 's', 1, '{}', now())"))
    finally:
        engine.dispose()
    sample = Sample("fraud", 0.0, 60.0, "s", 1, {"x": 1}, partition="3-tx")
    write_items(pg_url, [sample])
    SqlSink(pg_url)  # again: nothing to add
    rows = {r["sample_id"]: r["source_partition"] for r in read_table(pg_url, "samples")}
    assert rows == {"old": "", sample.sample_id: "3-tx"}
