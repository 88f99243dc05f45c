"""SqlSink on real SQLite files: schema, idempotent replays, one transaction per batch, concurrent writers."""

from __future__ import annotations

import sqlite3
import threading
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
    dead_letter_id,
    make_engine,
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
