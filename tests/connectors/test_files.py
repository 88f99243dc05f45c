"""FileSource: formats, line splitting, dead letters, exact resume; write_jsonl / write_csv round trips."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import bytewax.operators as op
import numpy as np
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main
from hypothesis import given, settings
from hypothesis import strategies as st

import connectors.files as files
from connectors.events import DeadLetter, EventBatch
from connectors.files import FileSource, format_of, write_csv, write_jsonl
from connectors.parsing import MAX_RECORD_BYTES


def event(i: int, **changes: Any) -> dict[str, Any]:
    rec = {
        "tx_id": f"t{i}",
        "card_id": f"c{i % 7}",
        "merchant_id": f"m{i % 3}",
        "amount": i * 1.25,
        "type": "purchase",
        "ts": 1_700_000_000 + i / 8,
    }
    rec.update(changes)
    return rec


def jsonl(i: int, **changes: Any) -> bytes:
    return json.dumps(event(i, **changes)).encode()


def read_all(src: FileSource, state: Any = None, limit: int | None = None) -> tuple[list[Any], Any]:
    """Items of up to ``limit`` batches from a fresh partition (resumed from ``state``), and its snapshot."""
    part = src.build_part("in", src.list_parts()[0], state)
    items: list[Any] = []
    n = 0
    try:
        while limit is None or n < limit:
            try:
                items.extend(part.next_batch())
            except StopIteration:
                break
            n += 1
        return items, part.snapshot()
    finally:
        part.close()


def flatten(items: list[Any]) -> tuple[list[dict[str, Any]], list[int], list[tuple[int, str, bytes]]]:
    """Events (as records), their positions, and dead letters (position, reason, raw)."""
    records: list[dict[str, Any]] = []
    positions: list[int] = []
    dead = []
    for it in items:
        if isinstance(it, EventBatch):
            records.extend(it.records())
            positions.extend(it.positions.tolist())
        else:
            assert isinstance(it, DeadLetter)
            dead.append((it.position, it.reason, it.raw))
    return records, positions, dead


def test_format_from_extension(tmp_path: Path) -> None:
    assert [format_of(f"a{ext}") for ext in (".jsonl", ".json", ".NDJSON", ".csv")] == ["jsonl"] * 3 + ["csv"]
    with pytest.raises(ValueError, match=r"events\.txt: cannot tell the format from extension '\.txt'"):
        format_of("events.txt")
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        format_of("events.txt", "xml")
    p = tmp_path / "events.log"
    p.write_bytes(jsonl(0) + b"\n")
    with pytest.raises(ValueError, match=r"events\.log"):
        FileSource(p, "fraud")
    records, _, _ = flatten(read_all(FileSource(p, "fraud", fmt="jsonl"))[0])
    assert len(records) == 1


def test_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        FileSource(tmp_path / "nope.jsonl", "fraud")
    (tmp_path / "a.jsonl").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown flow"):
        FileSource(tmp_path / "a.jsonl", "nope")
    with pytest.raises(ValueError, match="batch_size"):
        FileSource(tmp_path / "a.jsonl", "fraud", batch_size=0)


def test_one_partition_named_after_the_file(tmp_path: Path) -> None:
    p = tmp_path / "tx.jsonl"
    p.write_bytes(b"")
    src = FileSource(p, "fraud")
    assert src.list_parts() == ["tx.jsonl"]
    with pytest.raises(ValueError, match="not file"):
        src.build_part("in", "other.jsonl", None)
    assert read_all(src) == ([], (0, 0))


def test_jsonl_lines_dead_letters_and_positions(tmp_path: Path) -> None:
    lines = [jsonl(0), b"{broken", jsonl(2, amount=-5), b"", jsonl(4), jsonl(5)]
    p = tmp_path / "tx.jsonl"
    p.write_bytes(b"\n".join(lines))  # the last line has no newline
    items, state = read_all(FileSource(p, "fraud", batch_size=4))
    assert isinstance(items[0], EventBatch) and all(isinstance(i, DeadLetter) for i in items[1:4])
    records, positions, dead = flatten(items)
    assert positions == [0, 4, 5]
    assert [r["tx_id"] for r in records] == ["t0", "t4", "t5"]
    assert [(d[0], d[2]) for d in dead] == [(1, lines[1]), (2, lines[2]), (3, b"")]
    assert dead[2][1] == "empty line"
    assert state == (p.stat().st_size, 6)


def test_crlf_and_bom(tmp_path: Path) -> None:
    p = tmp_path / "tx.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + jsonl(0) + b"\r\n" + jsonl(1) + b"\r\n")
    _, positions, dead = flatten(read_all(FileSource(p, "fraud"))[0])
    assert positions == [0, 1] and not dead


def test_csv_file_header_not_counted(tmp_path: Path) -> None:
    p = tmp_path / "tx.csv"
    p.write_bytes(
        b"\xef\xbb\xbfts,amount,tx_id,card_id,merchant_id,type\r\n"
        b"1700000000,1.5,t0,c0,m0,purchase\r\n"
        b"1700000001,x,t1,c1,m1,purchase\r\n"
        b'1700000002,2,t2,c2,"m,2",refund'
    )
    records, positions, dead = flatten(read_all(FileSource(p, "fraud", batch_size=2))[0])
    assert positions == [0, 2]
    assert [r["merchant_id"] for r in records] == ["m0", "m,2"]
    assert dead == [(1, "field 'amount': expected a number, got 'x'", b"1700000001,x,t1,c1,m1,purchase")]


def test_csv_header_must_have_required_columns(tmp_path: Path) -> None:
    p = tmp_path / "tx.csv"
    p.write_bytes(b"tx_id,amount\nt,1\n")
    with pytest.raises(ValueError, match="lacks required column 'card_id'"):
        read_all(FileSource(p, "fraud"))


def test_oversized_line_is_skipped_not_buffered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "_CHUNK", 4096)  # the long line spans many chunks
    huge = b'{"pad": "' + b"x" * (3 * MAX_RECORD_BYTES) + b'"}'
    p = tmp_path / "tx.jsonl"
    p.write_bytes(b"\n".join([jsonl(0), huge, jsonl(2), huge + b"\r", jsonl(4)]) + b"\n")
    items, state = read_all(FileSource(p, "fraud", batch_size=2))
    records, positions, dead = flatten(items)
    assert positions == [0, 2, 4]
    assert [(d[0], "MAX_RECORD_BYTES" in d[1]) for d in dead] == [(1, True), (3, True)]
    assert state == (p.stat().st_size, 5)
    # Resume right after the first oversized line.
    first, mid = read_all(FileSource(p, "fraud", batch_size=2), limit=1)
    assert mid == (len(jsonl(0)) + len(huge) + 2, 2)
    rest, _ = read_all(FileSource(p, "fraud", batch_size=2), state=mid)
    assert flatten(first + rest) == (records, positions, dead)


def test_resume_offset_beyond_end_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "tx.jsonl"
    p.write_bytes(jsonl(0) + b"\n")
    with pytest.raises(ValueError, match="beyond the end of the file"):
        read_all(FileSource(p, "fraud"), state=(10_000, 3))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("batch_size", [1, 3, 10_000])
def test_resume_continues_exactly_after_the_last_emitted_line(
    tmp_path: Path, fmt: str, batch_size: int
) -> None:
    lines = []
    for i in range(40):
        if fmt == "jsonl":
            lines.append(jsonl(i) if i % 9 else b"not json")
        else:
            lines.append(f"t{i},c{i % 5},m{i % 3},{i * 1.25 if i % 9 else 'x'},purchase,{1.7e9 + i}".encode())
    body = b"\r\n".join(lines)  # CRLF, no final line break
    p = tmp_path / f"tx.{fmt}"
    p.write_bytes((b"tx_id,card_id,merchant_id,amount,type,ts\r\n" if fmt == "csv" else b"") + body)
    src = FileSource(p, "fraud", batch_size=batch_size)
    whole, end_state = read_all(src)
    expected = flatten(whole)
    assert len(expected[1]) + len(expected[2]) == 40 and len(expected[2]) == 5
    for stop in (0, 1, 2, 5):
        head, state = read_all(src, limit=stop)
        tail, state2 = read_all(src, state=state)
        assert flatten(head + tail) == expected
        assert state2 == end_state == (p.stat().st_size, 40)
    # Resuming twice in a row (snapshot of a resumed partition) works too.
    a, s1 = read_all(src, limit=1)
    b, s2 = read_all(src, state=s1, limit=1)
    c, _ = read_all(src, state=s2)
    assert flatten(a + b + c) == expected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=30),
    st.booleans(),
    st.integers(1, 64),
    st.integers(1, 7),
    st.data(),
)
def test_line_reader_splits_like_bytes_split(
    lines: list[bytes], final_newline: bool, chunk: int, batch_size: int, data: st.DataObject
) -> None:
    """Any content, chunk size and batch size: the lines and byte counts of ``content.split``."""
    content = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    expected = content.split(b"\n")
    if content.endswith(b"\n") or not content:
        expected = expected[:-1]
    expected = [x[:-1] if x.endswith(b"\r") else x for x in expected]
    old = files._CHUNK
    files._CHUNK = chunk
    try:
        reader = files._LineReader(io.BufferedReader(io.BytesIO(content)))
        got: list[bytes] = []
        offset = 0
        while True:
            batch, nbytes = reader.read(data.draw(st.integers(1, batch_size)))
            if not batch:
                break
            got.extend(batch)
            offset += nbytes
            # The offset points at the start of the next line (or the end of the file).
            assert offset == len(content) or content[offset - 1 : offset] == b"\n"
        assert got == expected
        assert offset == len(content)
    finally:
        files._CHUNK = old


def test_write_jsonl_and_csv_round_trip(tmp_path: Path) -> None:
    batch = EventBatch.from_records(
        "fraud",
        [event(i, merchant_id=f'm "{i}", ok', amount=i / 3) for i in range(25)],
        list(range(25)),
    )
    batches = [batch.take(np.arange(0, 10)), batch.take(np.arange(10, 25))]
    for name, write in (("a.jsonl", write_jsonl), ("a.csv", write_csv)):
        path = tmp_path / name
        assert write(path, batches) == 25
        items, _ = read_all(FileSource(path, "fraud", batch_size=7))
        assert not [i for i in items if isinstance(i, DeadLetter)]
        got = EventBatch.concat([i for i in items if isinstance(i, EventBatch)])
        assert got.positions.tolist() == list(range(25))
        for col, values in batch.columns.items():
            assert got[col].tolist() == values.tolist(), (name, col)


def test_write_csv_refuses_line_breaks_and_empty_input(tmp_path: Path) -> None:
    b = EventBatch.from_records(
        "sentiment", [{"brand": "a", "sentiment": 0.0, "text": "two\nlines", "ts": 1.0}], [7]
    )
    with pytest.raises(ValueError, match="field 'text' at position 7 holds a line break"):
        write_csv(tmp_path / "s.csv", [b])
    with pytest.raises(ValueError, match="no batches"):
        write_csv(tmp_path / "e.csv", [])


def test_file_source_in_a_dataflow(tmp_path: Path) -> None:
    p = tmp_path / "tx.jsonl"
    p.write_bytes(b"\n".join(jsonl(i) if i % 4 else b"garbage" for i in range(50)) + b"\n")
    events: list[int] = []
    dead: list[int] = []
    flow = Dataflow("file_source_test")
    items = op.input("in", flow, FileSource(p, "fraud", batch_size=8))
    branch = op.branch("split", items, lambda x: isinstance(x, EventBatch))
    op.output(
        "events",
        op.map("n", branch.trues, lambda b: len(b) if isinstance(b, EventBatch) else 0),
        TestingSink(events),
    )
    positions = op.map("pos", branch.falses, lambda d: d.position if isinstance(d, DeadLetter) else -1)
    op.output("dead", positions, TestingSink(dead))
    run_main(flow)  # type: ignore[no-untyped-call]
    assert sum(events) == 37
    assert sorted(dead) == list(range(0, 50, 4))
