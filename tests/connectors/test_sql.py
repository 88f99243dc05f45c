"""SqlSink on real SQLite files: schema, idempotent replays, one transaction per batch, concurrent writers."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bytewax.operators as op
import numpy as np
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, cluster_main, run_main

from connectors.events import RAW_LIMIT, DeadLetter, Sample
from connectors.sql import (
    SqlSink,
    create_tables,
    dead_letter_id,
    make_engine,
    metadata,
    read_alerts,
    read_table,
    write_items,
)
from operators.alerts import Alert


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


def url_of(tmp_path: Path, name: str = "out.db") -> str:
    return f"sqlite:///{tmp_path / name}"


def count(url: str, table: str) -> int:
    return len(read_table(url, table))


def edge_items(nul: bool = True) -> list[Any]:
    """Items covering every column type and its corner cases (NUL characters unless ``nul=False``)."""
    z = "\x00" if nul else ""
    items: list[Any] = []
    for i in range(40):  # windows shared by several rows, sub-second event times
        w = 1_700_000_000.0 + (i // 15) * 60.0
        items.append(alert(i, event_ts=w + i * 0.123457, window_start=w, window_end=w + 60.0))
        items.append(Sample("fraud", w, w + 60.0, f"s{i % 3}", i, {"tx": f"tx{i}", "amount": i / 7}))
    items += [
        alert(100, window_start=None, window_end=None, score=float("inf"), threshold=float("-inf")),
        alert(101, entity=f"zürich{z}✓", evidence={"nan": float("nan"), "n": np.int64(3), "s": "a\x00b"}),
        alert(102, event_ts=0.0, window_start=-1.5, window_end=1e-6, evidence={}),
        Sample("iot", 100.0, 160.0, f"zone{z}", 5, {"nan": float("nan"), "l": [1, None, True], "b": b"\xff"}),
        DeadLetter("iot", f"in{z}.jsonl", 7, f"bad{z}", b"\xff\x00" * RAW_LIMIT),
        DeadLetter("iot", "in.jsonl", 8, "", b""),
    ]
    return items


def core_write(url: str, items: list[Any]) -> None:
    """Reference: ``items`` through SQLAlchemy Core, one dict per row and ``Connection.execute``.

    That is how SqlSink wrote before it fed the driver directly; both must store the same bytes.
    """

    def ts(x: float | None) -> datetime | None:
        return None if x is None else datetime.fromtimestamp(x, timezone.utc)

    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in ("alerts", "samples", "dead_letters")}
    for item in items:
        if isinstance(item, Alert):
            r = item.to_record()
            r.update(evidence=json.loads(r["evidence"]), event_ts=ts(item.event_ts))
            r.update(window_start=ts(item.window_start), window_end=ts(item.window_end))
            rows["alerts"].append(r)
        elif isinstance(item, Sample):
            r = {k: getattr(item, k) for k in ("flow", "stratum", "position", "event")}
            r.update(
                sample_id=item.sample_id, window_start=ts(item.window_start), window_end=ts(item.window_end)
            )
            rows["samples"].append(r)
        else:
            r = {k: getattr(item, k) for k in ("flow", "source", "position", "reason", "raw")}
            rows["dead_letters"].append({"id": dead_letter_id(item), **r})
    engine = make_engine(url)
    try:
        create_tables(engine)
        with engine.begin() as conn:
            for name, values in rows.items():
                conn.execute(metadata.tables[name].insert(), values)
    finally:
        engine.dispose()


def write_in_batches(url: str, items: list[Any], size: int = 7) -> None:
    part = SqlSink(url).build("out", 0, 1)
    try:
        for lo in range(0, len(items), size):
            part.write_batch(items[lo : lo + size])
    finally:
        part.close()


def without_created_at(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "created_at"} for r in rows]


def sqlite_stored(path: Path, table: str) -> list[tuple[Any, ...]]:
    """Every stored value of ``table`` but created_at, with its SQLite storage class, by primary key."""
    cols = [c.name for c in metadata.tables[table].columns if c.name != "created_at"]
    con = sqlite3.connect(path)
    try:
        return con.execute(
            f"select {', '.join(f'{c}, typeof({c})' for c in cols)} from {table} order by 1"
        ).fetchall()
    finally:
        con.close()


def test_tables_created_at_construction_in_wal_mode(tmp_path: Path) -> None:
    url = url_of(tmp_path)
    SqlSink(url)
    con = sqlite3.connect(tmp_path / "out.db")
    try:
        names = {r[0] for r in con.execute("select name from sqlite_master where type in ('table', 'index')")}
        assert {"alerts", "samples", "dead_letters", "ix_alerts_flow_detector_entity"} <= names
        assert con.execute("pragma journal_mode").fetchone() == ("wal",)
    finally:
        con.close()
    SqlSink(url)  # idempotent


def test_samples_table_of_an_earlier_version_gets_the_partition_column(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "out.db")
    con.execute(
        "create table samples (sample_id varchar(32) primary key, flow varchar(64) not null, "
        "window_start datetime not null, window_end datetime not null, stratum varchar not null, "
        "position bigint not null, event json not null, created_at datetime not null)"
    )
    con.execute(
        "insert into samples values ('old', 'fraud', '2026-01-01', '2026-01-01', 's', 1, '{}', '2026-01-01')"
    )
    con.commit()
    con.close()
    url = url_of(tmp_path)
    write_items(url, [Sample("fraud", 0.0, 60.0, "s", 1, {"x": 1}, partition="3-tx")])
    SqlSink(url)  # again: nothing to add
    rows = {r["sample_id"]: r["source_partition"] for r in read_table(url, "samples")}
    assert rows == {"old": "", Sample("fraud", 0.0, 60.0, "s", 1, {}, partition="3-tx").sample_id: "3-tx"}
    assert (
        Sample("fraud", 0.0, 60.0, "s", 1, {}).sample_id
        != Sample("fraud", 0.0, 60.0, "s", 1, {}, "p").sample_id
    )


def test_alert_round_trip(tmp_path: Path) -> None:
    url = url_of(tmp_path)
    a = alert(3, window_start=None, window_end=None, score=float("inf"))
    b = alert(4, evidence={"ratio": float("nan"), "n": np.int64(3), "x": np.float32(0.5)})
    write_items(url, [a, b])
    rows = {r["alert_id"]: r for r in read_alerts(url)}
    ra, rb = rows[a.alert_id], rows[b.alert_id]
    assert ra["window_start"] is None and ra["window_end"] is None
    assert ra["score"] == 1e308 and ra["threshold"] == 8.0
    assert ra["event_ts"] == pytest.approx(a.event_ts, abs=1e-6)
    assert ra["evidence"] == {"estimate": 3, "error_bound": 0.5, "top": [["m1", 3], ["m2", 2]]}
    assert (ra["flow"], ra["detector"], ra["entity"]) == ("fraud", "velocity", "card3")
    assert rb["window_start"] == 1_700_000_000.0 and rb["window_end"] == 1_700_000_060.0
    assert rb["evidence"] == {"ratio": "NaN", "n": 3, "x": 0.5}  # valid JSON, value kept by name
    assert isinstance(ra["created_at"], float)


def test_samples_and_dead_letters(tmp_path: Path) -> None:
    url = url_of(tmp_path)
    s = Sample("iot", 100.0, 160.0, "zone-1", 42, {"device_id": "d1", "temperature": 21.5, "ts": 120.0})
    d = DeadLetter("iot", "in.jsonl", 7, "not JSON: Expecting value at column 1", b"\xff\x00" * RAW_LIMIT)
    write_items(url, [s, d])
    (rs,) = read_table(url, "samples")
    assert rs["sample_id"] == s.sample_id and rs["event"] == s.event
    assert (rs["window_start"], rs["window_end"], rs["stratum"], rs["position"]) == (
        100.0,
        160.0,
        "zone-1",
        42,
    )
    (rd,) = read_table(url, "dead_letters")
    assert rd["id"] == dead_letter_id(d)
    assert (rd["flow"], rd["source"], rd["position"], rd["reason"]) == ("iot", "in.jsonl", 7, d.reason)
    assert rd["raw"] == d.raw and len(rd["raw"]) == RAW_LIMIT


def test_rows_are_stored_exactly_as_through_sqlalchemy_core(tmp_path: Path) -> None:
    """The sink bypasses SQLAlchemy's per-row processing; the stored bytes must not change."""
    items = edge_items()
    ref_url, url = url_of(tmp_path, "ref.db"), url_of(tmp_path)
    core_write(ref_url, items)
    write_in_batches(url, items)
    for table, n in (("alerts", 43), ("samples", 41), ("dead_letters", 2)):
        got, ref = read_table(url, table), read_table(ref_url, table)
        assert len(got) == n and without_created_at(got) == without_created_at(ref), table
        assert sqlite_stored(tmp_path / "out.db", table) == sqlite_stored(tmp_path / "ref.db", table), table
    con = sqlite3.connect(tmp_path / "out.db")
    try:
        stamps = con.execute("select created_at, typeof(created_at) from alerts").fetchall()
        events = dict(con.execute("select sample_id, event from samples").fetchall())
    finally:
        con.close()
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", s) and t == "text" for s, t in stamps)
    for item in items:
        if isinstance(item, Sample) and item.flow == "fraud":  # compact JSON, sorted keys
            assert events[item.sample_id] == json.dumps(item.event, sort_keys=True, separators=(",", ":"))
    (sample,) = [r for r in read_table(url, "samples") if r["flow"] == "iot"]
    assert sample["event"] == {"nan": "NaN", "l": [1, None, True], "b": "\\xff"}
    assert sample["stratum"] == "zone\x00"  # SQLite keeps NUL


def test_replay_is_idempotent(tmp_path: Path) -> None:
    """At-least-once delivery made effectively-once: writing the same items twice stores each row once."""
    url = url_of(tmp_path)
    items: list[Any] = [alert(i) for i in range(50)]
    items += [Sample("fraud", 0.0, 60.0, "s", i, {"i": i}) for i in range(5)]
    items += [DeadLetter("fraud", "f.jsonl", i, "empty line", b"") for i in range(5)]
    part = SqlSink(url).build("out", 0, 1)
    part.write_batch(items)
    first = read_alerts(url)
    part.write_batch(items[::-1])  # replayed, in another order
    part.write_batch(items[:10] + items[:10])  # duplicates inside one batch too
    part.close()
    again = read_alerts(url)
    assert len(again) == 50 and (count(url, "samples"), count(url, "dead_letters")) == (5, 5)
    assert again == first  # the first write wins; created_at included
    assert len({r["alert_id"] for r in again}) == 50


def test_replayed_dataflow_adds_no_rows(tmp_path: Path) -> None:
    url = url_of(tmp_path)
    for _ in range(2):
        flow = Dataflow("sql_replay")
        items = op.input("in", flow, TestingSource([alert(i) for i in range(30)], batch_size=7))
        op.output("out", items, SqlSink(url))
        run_main(flow)  # type: ignore[no-untyped-call]
    assert count(url, "alerts") == 30


def test_one_transaction_per_batch(tmp_path: Path) -> None:
    url = url_of(tmp_path)
    part = SqlSink(url).build("out", 0, 1)
    bad_sample = Sample("fraud", 0.0, 1.0, "s", 1, {"x": object()})  # not JSON-serialisable
    with pytest.raises(Exception, match="not JSON-serialisable"):
        part.write_batch([alert(1), alert(2), bad_sample])
    with pytest.raises(TypeError, match="got str"):
        part.write_batch([alert(3), "not an item"])  # type: ignore[list-item]
    part.write_batch([])
    part.close()
    assert count(url, "alerts") == 0


def test_two_threads_write_one_file_concurrently(tmp_path: Path) -> None:
    url = url_of(tmp_path)
    sink = SqlSink(url)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        part = sink.build("out", worker, 2)
        try:
            # Overlapping ranges: both workers write alerts 100..199.
            start = worker * 100
            for lo in range(start, start + 200, 10):
                part.write_batch([alert(i) for i in range(lo, lo + 10)])
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
    assert count(url, "alerts") == 300


def test_two_bytewax_workers(tmp_path: Path) -> None:
    url = url_of(tmp_path)
    flow = Dataflow("sql_two_workers")
    items = op.input("in", flow, TestingSource([alert(i) for i in range(200)], batch_size=5))
    spread = op.redistribute("spread", items)
    op.output("out", spread, SqlSink(url))
    cluster_main(flow, [], 0, worker_count_per_proc=2)  # type: ignore[no-untyped-call]
    assert count(url, "alerts") == 200


def test_unsupported_urls() -> None:
    with pytest.raises(ValueError, match="unsupported database 'mysql'"):
        SqlSink("mysql://u:secret@h/db")
    with pytest.raises(ValueError, match="in-memory SQLite"):
        SqlSink("sqlite://")
    with pytest.raises(ValueError, match="in-memory SQLite"):
        make_engine("sqlite:///:memory:")


def test_repr_hides_password(tmp_path: Path) -> None:
    assert "secret" not in repr(SqlSink(url_of(tmp_path)))
    assert repr(SqlSink(url_of(tmp_path))).startswith("SqlSink('sqlite:///")


def test_read_table_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown table 'nope'"):
        read_table(url_of(tmp_path), "nope")
