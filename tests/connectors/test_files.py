"""FileSource: formats, line splitting, dead letters, exact resume; write_jsonl / write_csv round trips."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any
from unittest.mock import patch

import bytewax.operators as op
import numpy as np
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main
from hypothesis import given, settings
from hypothesis import strategies as st

import connectors.events as events
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


def _reader_reference(content: bytes, head: int) -> list[tuple[bytes, int]]:
    """What the line reader must give for ``content``: each line (cut to ``head`` bytes, then one
    trailing CR dropped) and the file bytes it spans (its line break included)."""
    parts = content.split(b"\n")
    if content.endswith(b"\n") or not content:
        parts = parts[:-1]
    out = []
    for k, p in enumerate(parts):
        line = p[:head]
        if line.endswith(b"\r"):
            line = line[:-1]
        last = k == len(parts) - 1 and not content.endswith(b"\n")
        out.append((line, len(p) + (0 if last else 1)))
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=6).map(lambda b: b.replace(b"\n", b"")),
            st.tuples(st.integers(0, 40), st.sampled_from([b"x", b"\r", b"ab"])).map(lambda t: t[1] * t[0]),
        ),
        max_size=25,
    ),
    st.booleans(),
    st.integers(3, 12),
    st.integers(1, 40),
    st.data(),
)
def test_line_reader_cuts_long_lines_and_counts_bytes(
    lines: list[bytes], final_newline: bool, head: int, chunk: int, data: st.DataObject
) -> None:
    """Long lines (any chunk size, within a chunk or across chunks): cut to ``_HEAD`` bytes, true
    sizes in the byte counts; every batch's count ends on a line boundary."""
    content = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    expected = _reader_reference(content, head)
    with patch.object(files, "_CHUNK", chunk), patch.object(files, "_HEAD", head):
        reader = files._LineReader(io.BufferedReader(io.BytesIO(content)))
        got: list[tuple[list[bytes], int]] = []
        while True:
            batch, nbytes = reader.read(data.draw(st.integers(1, 6)))
            if not batch:
                assert nbytes == 0
                break
            got.append((batch, nbytes))
    assert [line for batch, _ in got for line in batch] == [line for line, _ in expected]
    k = 0
    for batch, nbytes in got:
        assert nbytes == sum(size for _, size in expected[k : k + len(batch)])
        k += len(batch)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"x")), st.data(), st.integers(2, 16))
def test_long_line_precheck_never_misses_one(body: bytes, data: st.DataObject, head: int) -> None:
    """``_may_hold_long_line`` is False only if no run without line break exceeds ``_HEAD``."""
    breaks = data.draw(st.lists(st.integers(0, max(len(body) - 1, 0)), max_size=12))
    chunk = bytearray(body)
    for i in breaks:
        if chunk:
            chunk[i] = ord("\n")
    with patch.object(files, "_HEAD", head):
        maybe = files._may_hold_long_line(bytes(chunk))
    longest = max(map(len, bytes(chunk).split(b"\n")))
    if longest > head:
        assert maybe
    if longest < (head + 1) // 2:
        assert not maybe


def test_long_line_precheck_every_alignment() -> None:
    """A run just over ``_HEAD`` bytes is seen wherever it starts (short lines all around)."""
    for head in range(2, 14):
        with patch.object(files, "_HEAD", head):
            for length in (head + 1, head + 2):
                for offset in range(0, 2 * head + 2):
                    chunk = b"\n" * offset + b"x" * length + b"\n" + b"a\n" * (2 * head)
                    assert files._may_hold_long_line(chunk), (head, length, offset)
            if head >= 3:  # blocks of 2+ bytes: each holds a line break of "a\na\n..."
                assert not files._may_hold_long_line(b"a\n" * (4 * head))


def test_long_line_precheck_on_real_sizes() -> None:
    short = (b"x" * 120 + b"\n") * 9000
    assert not files._may_hold_long_line(short)
    assert files._may_hold_long_line(short[:500_000] + b"y" * (MAX_RECORD_BYTES + 3) + short[:500_000])
    # At most MAX_RECORD_BYTES between line breaks can pass the check (it is exact enough for that).
    edge = (b"z" * MAX_RECORD_BYTES + b"\n") * 20
    assert max(map(len, edge.split(b"\n"))) <= MAX_RECORD_BYTES


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


@pytest.mark.parametrize("parse_ahead", [False, True])
def test_file_source_in_a_dataflow(tmp_path: Path, parse_ahead: bool) -> None:
    p = tmp_path / "tx.jsonl"
    p.write_bytes(b"\n".join(jsonl(i) if i % 4 else b"garbage" for i in range(50)) + b"\n")
    events: list[int] = []
    dead: list[int] = []
    flow = Dataflow("file_source_test")
    items = op.input("in", flow, FileSource(p, "fraud", batch_size=8, parse_ahead=parse_ahead))
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


# --------------------------------------------------------------------------------------------
# Parse ahead (a helper process): same items and states as without it


def cols_of(batch: EventBatch) -> list[tuple[str, Any]]:
    return list(batch.columns.items())


def _batch_key(item: Any) -> Any:
    """An item as comparable data: a batch's positions and columns (dtype and values)."""
    if isinstance(item, EventBatch):
        cols = {k: (v.dtype.str, v.tolist() if v.dtype == object else v.tobytes()) for k, v in cols_of(item)}
        assert all(type(x) is str for k, v in item.columns.items() if v.dtype == object for x in v.tolist())
        return ("batch", item.flow, item.positions.dtype.str, item.positions.tolist(), cols)
    return ("dead", item)


def _run_part(part: Any) -> list[tuple[list[Any], Any]]:
    out: list[tuple[list[Any], Any]] = []
    try:
        while True:
            try:
                items = part.next_batch()
            except StopIteration:
                return out
            out.append(([_batch_key(i) for i in items], part.snapshot()))
    finally:
        part.close()


def _mixed_file(tmp_path: Path, fmt: str) -> Path:
    huge = "x" * (MAX_RECORD_BYTES + 5)
    if fmt == "jsonl":
        lines = [b"\xef\xbb\xbf" + jsonl(0)]
        for i in range(1, 90):
            kind = i % 11
            if kind == 3:
                lines.append(b"{broken")
            elif kind == 5:
                lines.append(b"")
            elif kind == 7:
                lines.append(jsonl(i, merchant_id="a\\u0000b").replace(b"\\\\u0000", b"\\u0000"))
            elif kind == 8:
                lines.append(json.dumps(event(i, pad=huge)).encode())
            elif kind == 9:
                lines.append(json.dumps(event(i, merchant_id="Café ☕"), ensure_ascii=False).encode() + b"\r")
            else:
                lines.append(jsonl(i, type=["purchase", "refund"][i % 2]))
        body = b"\n".join(lines)  # no final line break
    else:
        rows = [b"tx_id,card_id,merchant_id,amount,type,ts"]
        for i in range(90):
            amount = "x" if i % 9 == 4 else str(i * 1.5)
            merchant = "m,1" if i % 5 == 1 else f"m{i % 3}"
            rows.append(f'"t{i}",c{i % 4},"{merchant}",{amount},purchase,{1.7e9 + i}'.encode())
        rows[40] = b"t40,c0,m0," + huge.encode() + b",purchase,1"
        body = b"\r\n".join(rows) + b"\r\n"
    p = tmp_path / f"mixed.{fmt}"
    p.write_bytes(body)
    return p


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_parse_ahead_gives_the_same_items_and_states(tmp_path: Path, fmt: str) -> None:
    p = _mixed_file(tmp_path, fmt)
    inline = FileSource(p, "fraud", batch_size=7)
    ahead = FileSource(p, "fraud", batch_size=7, parse_ahead=True)
    want = _run_part(inline.build_part("in", p.name, None))
    assert len(want) > 10 and any(k[0] == "dead" for items, _ in want for k in items)
    assert _run_part(ahead.build_part("in", p.name, None)) == want
    # Resumed from a snapshot, with the helper: the rest, exactly.
    assert _run_part(ahead.build_part("in", p.name, want[4][1])) == want[5:]


def test_parse_ahead_on_generated_events(tmp_path: Path) -> None:
    from connectors.generators import generator

    p = tmp_path / "gen.jsonl"
    write_jsonl(p, generator("fraud")(30_000, 5, 0, 10_000))
    want = _run_part(FileSource(p, "fraud", batch_size=8_000).build_part("in", p.name, None))
    got = _run_part(FileSource(p, "fraud", batch_size=8_000, parse_ahead=True).build_part("in", p.name, None))
    assert got == want and len(want) == 4


def test_parse_ahead_errors(tmp_path: Path) -> None:
    p = tmp_path / "tx.csv"
    p.write_bytes(b"tx_id,amount\nt,1\n")
    with pytest.raises(ValueError, match="lacks required column 'card_id'"):  # raised in the worker
        FileSource(p, "fraud", parse_ahead=True).build_part("in", p.name, None)
    q = tmp_path / "tx.jsonl"
    q.write_bytes(jsonl(0) + b"\n")
    with pytest.raises(ValueError, match="beyond the end of the file"):
        FileSource(q, "fraud", parse_ahead=True).build_part("in", q.name, (10_000, 3))
    # The helper killed: the worker says so instead of waiting forever.
    part = FileSource(q, "fraud", parse_ahead=True).build_part("in", q.name, None)
    proc = part._proc  # type: ignore[attr-defined]
    proc.kill()
    proc.join()
    with pytest.raises(RuntimeError, match="parse-ahead process died"):
        part.next_batch()
    part.close()
    # The file gone before the helper opened it: its error, with the helper's traceback.
    part = FileSource(q, "fraud", parse_ahead=True).build_part("in", q.name, None)
    q.unlink()
    with pytest.raises(RuntimeError, match=r"(?s)parse-ahead process failed.*FileNotFoundError"):
        part.next_batch()
    part.close()


_CELLS = st.sampled_from(["", "a", "Café ☕", "😀", "\ud800", "a\x00b", "x" * 30, "t1", "t2"])


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.lists(_CELLS, min_size=1, max_size=50),
        st.lists(st.text(max_size=5), min_size=1, max_size=50),
        st.lists(st.floats(), min_size=1, max_size=50),
        st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=50),
    ),
    st.sampled_from([1, 4, 8192]),
)
def test_ahead_column_encoding_round_trips(values: list[Any], probe: int) -> None:
    """Columns through ``encode_column`` / ``decode_column``: same dtype, values and bits."""
    if isinstance(values[0], str):
        col = np.empty(len(values), dtype=object)
        col[:] = values
    else:
        col = np.asarray(values, dtype=np.float64 if isinstance(values[0], float) else np.int64)
    with patch.object(events, "_PROBE", probe):
        encoding, parts = events.encode_column(col)
    assert len(parts) == events.COLUMN_PARTS[encoding]
    back = events.decode_column(col.dtype, encoding, parts, len(col))
    assert back.dtype == col.dtype and back.shape == col.shape
    if col.dtype == object:
        assert [type(v) for v in back.tolist()] == [str] * len(col)
        assert back.tolist() == values
        if encoding == "codes":
            assert len(set(map(id, back.tolist()))) == len(set(values))
    else:
        assert back.tobytes() == col.tobytes()
        assert back.flags.writeable
