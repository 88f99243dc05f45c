"""Parsing raw records into events: one test per rejection kind, CSV, decoded records, and a fuzz test.

The invariant checked everywhere: every input line becomes exactly one event or one dead letter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import parsing
from connectors.events import RAW_LIMIT, SCHEMAS, DeadLetter, EventBatch, Field
from connectors.parsing import MAX_RECORD_BYTES, TS_HIGH, CsvDialect, parse_lines, parse_records

FRAUD = {
    "tx_id": "t1",
    "card_id": "c1",
    "merchant_id": "m1",
    "amount": 12.5,
    "type": "purchase",
    "ts": 1_700_000_000.25,
}


def line(**changes: Any) -> bytes:
    """A fraud event as a JSON line; a change to ``...`` removes the field."""
    rec = {k: v for k, v in {**FRAUD, **changes}.items() if v is not ...}
    return json.dumps(rec).encode()


def check_invariant(lines: list[bytes], first: int, batch: EventBatch | None, dead: list[DeadLetter]) -> None:
    got = (batch.positions.tolist() if batch is not None else []) + [d.position for d in dead]
    assert sorted(got) == list(range(first, first + len(lines)))
    assert [d.position for d in dead] == sorted(d.position for d in dead)
    if batch is not None:
        assert batch.positions.tolist() == sorted(batch.positions.tolist())
        assert all(len(col) == len(batch) for col in batch.columns.values())


def reject(raw: bytes, flow: str = "fraud") -> str:
    """The reason the single line ``raw`` is rejected."""
    batch, dead = parse_lines(flow, [raw], 5, "test.jsonl")
    check_invariant([raw], 5, batch, dead)
    assert batch is None, f"accepted: {raw[:80]!r}"
    (d,) = dead
    assert (d.flow, d.source, d.position) == (flow, "test.jsonl", 5)
    assert d.raw == raw[:RAW_LIMIT]
    return d.reason


def accept(raw: bytes, flow: str = "fraud") -> dict[str, Any]:
    """The single event parsed from ``raw``."""
    batch, dead = parse_lines(flow, [raw], 0, "test.jsonl")
    assert not dead, dead[0].reason
    assert batch is not None and len(batch) == 1
    return next(batch.records())


# --------------------------------------------------------------------------------------------
# Valid input


def test_valid_fraud_event_columns_and_dtypes() -> None:
    batch, dead = parse_lines("fraud", [line(), line(tx_id="t2", amount=3)], 100, "f")
    assert not dead and batch is not None
    assert batch.positions.tolist() == [100, 101]
    assert batch["tx_id"].tolist() == ["t1", "t2"]
    assert batch["tx_id"].dtype == object
    assert batch["amount"].dtype == np.float64 and batch["amount"].tolist() == [12.5, 3.0]
    assert batch["ts"].dtype == np.float64 and batch["ts"].tolist() == [1_700_000_000.25] * 2
    assert list(batch.columns) == list(SCHEMAS["fraud"].names)


def test_int_fields_are_int64() -> None:
    raw = json.dumps(
        {"client_ip": "1.2.3.4", "endpoint": "/", "status": 200, "bytes": 2**40, "ts": 1}
    ).encode()
    batch, dead = parse_lines("ddos", [raw], 0, "f")
    assert not dead and batch is not None
    assert batch["status"].dtype == np.int64 and batch["bytes"].tolist() == [2**40]


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-11-22T06:40:05Z", 1795329605.0),
        ("2026-11-22t06:40:05z", 1795329605.0),
        ("2026-11-22T07:40:05+01:00", 1795329605.0),
        ("2026-11-22 06:40:05.5+00:00", 1795329605.5),
        ("2026-11-22T06:40:05.123456789Z", None),
        ("1795329605", 1795329605.0),
        ("1795329605.25", 1795329605.25),
        (1795329605, 1795329605.0),
        (0, 0.0),
    ],
)
def test_timestamp_forms(ts: Any, expected: float | None) -> None:
    try:
        got = accept(line(ts=ts))["ts"]
    except AssertionError:
        # Python < 3.11 cannot read nine fraction digits; then it must be a dead letter.
        assert expected is None
        return
    if expected is None:
        assert got == pytest.approx(1795329605.123457, abs=1e-6)
    else:
        assert got == expected


def test_ids_may_be_integers() -> None:
    ev = accept(line(card_id=1234, tx_id=-5))
    assert ev["card_id"] == "1234" and ev["tx_id"] == "-5"


def test_int_field_accepts_integral_float() -> None:
    raw = json.dumps({"client_ip": "a", "endpoint": "/", "status": 404.0, "bytes": 0, "ts": 1}).encode()
    batch, dead = parse_lines("ddos", [raw], 0, "f")
    assert not dead and batch is not None and batch["status"].tolist() == [404]


def test_optional_field_missing_or_null_is_empty_string() -> None:
    a = json.dumps({"brand": "x", "sentiment": 0.1, "ts": 5}).encode()
    b = json.dumps({"brand": "x", "sentiment": 0.1, "ts": 5, "text": None}).encode()
    batch, dead = parse_lines("sentiment", [a, b], 0, "f")
    assert not dead and batch is not None and batch["text"].tolist() == ["", ""]


def test_extra_fields_and_whitespace_are_ignored() -> None:
    ev = accept(b"  " + line(extra={"nested": [1, 2]}, note="x") + b" \r")
    assert set(ev) == set(SCHEMAS["fraud"].names)


def test_bounds_are_inclusive() -> None:
    assert accept(line(amount=0))["amount"] == 0.0
    assert accept(line(amount=1e9))["amount"] == 1e9
    assert accept(line(ts=TS_HIGH))["ts"] == TS_HIGH


def test_utf8_text_kept() -> None:
    assert accept(line(merchant_id="Café ☕"))["merchant_id"] == "Café ☕"
    raw = json.dumps({**FRAUD, "merchant_id": "Café"}, ensure_ascii=False).encode()
    assert accept(raw)["merchant_id"] == "Café"


# --------------------------------------------------------------------------------------------
# One test per rejection kind


def test_too_large_line_is_not_parsed() -> None:
    raw = line(pad="x" * MAX_RECORD_BYTES)
    reason = reject(raw)
    assert "MAX_RECORD_BYTES" in reason and "not parsed" in reason
    assert len(raw) > RAW_LIMIT  # the dead letter keeps only RAW_LIMIT bytes (checked in reject)


def test_line_of_exactly_max_size_is_parsed() -> None:
    base = line(pad="")
    raw = line(pad="x" * (MAX_RECORD_BYTES - len(base)))
    assert len(raw) == MAX_RECORD_BYTES
    accept(raw)


@pytest.mark.parametrize("raw", [b"", b"   ", b"\r", b"\t \r"])
def test_empty_line(raw: bytes) -> None:
    assert reject(raw) == "empty line"


def test_bad_utf8() -> None:
    assert reject(line()[:-3] + b'\xff"}').startswith("not UTF-8: invalid start byte at byte")


@pytest.mark.parametrize(
    "raw",
    [b"{oops", b'{"tx_id": "t1"', line()[:-1], b"hello", line() + b" x", line() + line(), b"{'a': 1}"],
)
def test_not_json(raw: bytes) -> None:
    assert reject(raw).startswith("not JSON: ")


def test_deeply_nested_json() -> None:
    assert reject(b"[" * 30_000 + b"]" * 30_000).startswith("not JSON")


def test_integer_with_too_many_digits() -> None:
    assert reject(line()[:-1] + b', "x": ' + b"9" * 5000 + b"}").startswith("not JSON")


@pytest.mark.parametrize(
    ("raw", "kind"), [(b"[1, 2]", "list"), (b"3", "int"), (b'"s"', "str"), (b"null", "null")]
)
def test_not_an_object(raw: bytes, kind: str) -> None:
    assert reject(raw) == f"not a JSON object: got {kind}"


@pytest.mark.parametrize("name", list(SCHEMAS["fraud"].names))
def test_missing_required_field(name: str) -> None:
    assert reject(line(**{name: ...})) == f"field {name!r}: missing"


def test_null_required_field() -> None:
    assert reject(line(amount=None)) == "field 'amount': null"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"amount": "12.5"}, "field 'amount': expected a number, got str"),
        ({"amount": True}, "field 'amount': expected a number, got bool"),
        ({"amount": [1]}, "field 'amount': expected a number, got list"),
        ({"amount": -0.01}, "field 'amount': -0.01 outside [0.0, 1000000000.0]"),
        ({"amount": 1e9 + 1}, "field 'amount': 1000000001.0 outside [0.0, 1000000000.0]"),
        ({"amount": 10**400}, "field 'amount': number too large for a float"),
        ({"card_id": 1.5}, "field 'card_id': expected a string, got float"),
        ({"card_id": False}, "field 'card_id': expected a string, got bool"),
        ({"card_id": {"a": 1}}, "field 'card_id': expected a string, got dict"),
        ({"card_id": "a\x00b"}, "field 'card_id': string contains a NUL character"),
        ({"card_id": "a\ud800"}, "field 'card_id': string is not valid Unicode (lone surrogate escape)"),
        ({"ts": "2026-11-22T06:40:05"}, "field 'ts': timestamp without timezone"),
        ({"ts": "2026-11-22"}, "field 'ts': timestamp without timezone"),
        ({"ts": "yesterday"}, "field 'ts': not a timestamp: 'yesterday'"),
        ({"ts": True}, "field 'ts': expected epoch seconds or an RFC 3339 string, got bool"),
        ({"ts": 1e12}, "field 'ts': epoch seconds 1000000000000.0 outside [0.0, 7258118400.0] (1970..2200)"),
        ({"ts": -1}, "field 'ts': epoch seconds -1.0 outside [0.0, 7258118400.0] (1970..2200)"),
        ({"ts": "1969-12-31T23:59:59Z"}, "field 'ts': timestamp '1969-12-31T23:59:59Z' outside 1970..2200"),
        ({"ts": "nan"}, "field 'ts': not a finite number (nan)"),
    ],
)
def test_wrong_values(changes: dict[str, Any], reason: str) -> None:
    assert reject(line(**changes)) == reason


@pytest.mark.parametrize(
    ("literal", "shown"), [(b"NaN", "nan"), (b"Infinity", "inf"), (b"-Infinity", "-inf")]
)
def test_non_finite_literals(literal: bytes, shown: str) -> None:
    raw = line(amount=0).replace(b'"amount": 0', b'"amount": ' + literal)
    assert reject(raw) == f"field 'amount': not a finite number ({shown})"


def test_huge_float_literal_is_infinite() -> None:
    raw = line(amount=0).replace(b'"amount": 0', b'"amount": 1e400')
    assert reject(raw) == "field 'amount': not a finite number (inf)"


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (200.5, "field 'status': expected an integer, got 200.5"),
        (99, "field 'status': 99 outside [100, 599]"),
        (True, "field 'status': expected an integer, got bool"),
        ("200", "field 'status': expected an integer, got str"),
        (2**70, "field 'status': 1180591620717411303424 outside [100, 599]"),
        (10**40, "field 'status': an integer of 41 digits outside [100, 599]"),
        (-(10**400), "field 'status': an integer of 401 digits outside [100, 599]"),
    ],
)
def test_int_field_rejections(status: Any, reason: str) -> None:
    raw = json.dumps({"client_ip": "a", "endpoint": "/", "status": status, "bytes": 0, "ts": 1}).encode()
    assert reject(raw, "ddos") == reason


def test_first_failing_field_in_schema_order_is_reported() -> None:
    assert reject(line(ts="bad", amount="bad", card_id=None)) == "field 'card_id': null"


def test_raw_is_cut_at_raw_limit() -> None:
    raw = line(amount="x", pad="y" * (2 * RAW_LIMIT))
    batch, dead = parse_lines("fraud", [raw], 0, "f")
    assert batch is None and dead[0].raw == raw[:RAW_LIMIT]


def test_mixed_batch_keeps_order_and_positions() -> None:
    lines = [line(), b"{bad", line(amount=-1), b"", line(tx_id="t5"), b"\xff"]
    batch, dead = parse_lines("fraud", lines, 1000, "f")
    check_invariant(lines, 1000, batch, dead)
    assert batch is not None and batch.positions.tolist() == [1000, 1004]
    assert batch["tx_id"].tolist() == ["t1", "t5"]
    assert [d.position for d in dead] == [1001, 1002, 1003, 1005]
    assert [d.raw for d in dead] == [lines[1], lines[2], lines[3], lines[5]]


def test_empty_input() -> None:
    assert parse_lines("fraud", [], 0, "f") == (None, [])


def test_unknown_flow_and_format() -> None:
    with pytest.raises(ValueError, match="unknown flow 'nope'"):
        parse_lines("nope", [line()], 0, "f")
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        parse_lines("fraud", [line()], 0, "f", "xml")
    with pytest.raises(ValueError, match="needs a CsvDialect"):
        parse_lines("fraud", [b"a,b"], 0, "f", "csv")


# --------------------------------------------------------------------------------------------
# CSV

FRAUD_HEADER = CsvDialect.from_header(b"tx_id,card_id,merchant_id,amount,type,ts\n")


def test_csv_valid_rows() -> None:
    lines = [b"t1,c1,m1,12.5,purchase,1700000000.25", b't2,c2,"m,2",3,"say ""hi""",2026-11-22T06:40:05Z\r']
    batch, dead = parse_lines("fraud", lines, 0, "f.csv", "csv", dialect=FRAUD_HEADER)
    assert not dead and batch is not None
    assert batch["merchant_id"].tolist() == ["m1", "m,2"]
    assert batch["type"].tolist() == ["purchase", 'say "hi"']
    assert batch["amount"].tolist() == [12.5, 3.0]
    assert batch["ts"].tolist() == [1_700_000_000.25, 1795329605.0]


def test_csv_column_order_and_extra_columns_follow_the_header() -> None:
    d = CsvDialect.from_header(b"\xef\xbb\xbfts;extra;sentiment;brand", delimiter=";")
    batch, dead = parse_lines("sentiment", [b"5;zz;-0.5;acme"], 0, "f", "csv", dialect=d)
    assert not dead and batch is not None
    assert next(batch.records()) == {"brand": "acme", "sentiment": -0.5, "text": "", "ts": 5.0}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"t1,c1,m1,12.5,purchase", "bad CSV row: 5 columns, header has 6"),
        (b"t1,c1,m1,12.5,purchase,1,extra", "bad CSV row: 7 columns, header has 6"),
        (b't1,c1,"m1,12.5,purchase,1', "bad CSV row: unexpected end of data"),
        (b"t1,c1,m1,,purchase,1", "field 'amount': empty"),
        (b"t1,c1,m1,abc,purchase,1", "field 'amount': expected a number, got 'abc'"),
        (b"t1,c1,m1,nan,purchase,1", "field 'amount': not a finite number (nan)"),
        (b"t1,c1,m1,1,purchase,2026-11-22T06:40:05", "field 'ts': timestamp without timezone"),
        (b"", "empty line"),
        (b" ", "empty line"),
    ],
)
def test_csv_rejections(raw: bytes, reason: str) -> None:
    batch, dead = parse_lines("fraud", [raw], 3, "f.csv", "csv", dialect=FRAUD_HEADER)
    assert batch is None and [(d.position, d.reason, d.raw) for d in dead] == [(3, reason, raw)]


def test_csv_int_fields() -> None:
    d = CsvDialect.from_header(b"client_ip,endpoint,status,bytes,ts")
    lines = [b"a,/,200,10,1", b"a,/,404.0,10,1", b"a,/,200.5,10,1", b"a,/,x,10,1", b"a,/,200,,1"]
    batch, dead = parse_lines("ddos", lines, 0, "f", "csv", dialect=d)
    assert batch is not None and batch["status"].tolist() == [200, 404]
    assert [x.reason for x in dead] == [
        "field 'status': expected an integer, got 200.5",
        "field 'status': expected an integer, got 'x'",
        "field 'bytes': empty",
    ]


def test_csv_header_checks() -> None:
    with pytest.raises(ValueError, match="lacks required column 'merchant_id'"):
        parse_lines("fraud", [b"x"], 0, "f", "csv", dialect=CsvDialect(("tx_id", "card_id")))
    with pytest.raises(ValueError, match="names column 'a' twice"):
        CsvDialect.from_header(b"a,b,a")
    with pytest.raises(ValueError, match="header row is empty"):
        CsvDialect.from_header(b"\r\n")
    with pytest.raises(ValueError, match="delimiter"):
        CsvDialect(("a",), delimiter="ab")


# --------------------------------------------------------------------------------------------
# Decoded records (Kafka)


def test_parse_records() -> None:
    recs: list[Any] = [dict(FRAUD), [1, 2], {**FRAUD, "amount": "x"}, {**FRAUD, "tx_id": 7}]
    raws = [b"r0", b"r1", b"r2", b"r3"]
    batch, dead = parse_records("fraud", recs, [40, 41, 45, 46], "kafka:tx/0", raws)
    assert batch is not None and batch.positions.tolist() == [40, 46]
    assert batch["tx_id"].tolist() == ["t1", "7"]
    assert [(d.position, d.reason, d.raw) for d in dead] == [
        (41, "not a JSON object: got list", b"r1"),
        (45, "field 'amount': expected a number, got str", b"r2"),
    ]


def test_parse_records_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="1 records but 2 positions"):
        parse_records("fraud", [FRAUD], [1, 2], "k", [b""])


def test_parse_records_empty() -> None:
    assert parse_records("fraud", [], [], "k", []) == (None, [])


# --------------------------------------------------------------------------------------------
# Fuzz: valid events mixed with garbage

# Valid text: no NUL and no lone surrogates (both are rejected by design, tested separately).
_text = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12)
_epoch = st.floats(min_value=0.0, max_value=TS_HIGH, allow_nan=False)
_iso = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2199, 1, 1),
    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30))]),
).map(lambda d: d.isoformat())
_ts = st.one_of(_epoch, st.integers(0, int(TS_HIGH)), _iso, st.integers(0, int(TS_HIGH)).map(str))


def _value(kind: str, low: float | None, high: float | None) -> st.SearchStrategy[Any]:
    if kind == "str":
        return st.one_of(_text, st.integers(-(10**6), 10**6))
    if kind == "int":
        return st.integers(int(low or 0), int(high or 2**40))
    if kind == "float":
        return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
    return _ts


def _valid(flow: str) -> st.SearchStrategy[bytes]:
    fields = SCHEMAS[flow].fields
    return st.fixed_dictionaries(
        {f.name: _value(f.kind, f.low, f.high) for f in fields if f.required},
        optional={f.name: _text for f in fields if not f.required},
    ).flatmap(lambda rec: st.booleans().map(lambda ascii_: json.dumps(rec, ensure_ascii=ascii_).encode()))


_WRONG: st.SearchStrategy[Any] = st.sampled_from(
    [True, None, [], {}, "text", 1.5, -1, 10**400, float("nan"), "2026-11-22T06:40:05"]
)


def _garbage(flow: str) -> st.SearchStrategy[bytes]:
    """Lines that must be rejected."""
    fields = SCHEMAS[flow].fields
    names = [f.name for f in fields if f.required]
    numeric = [f.name for f in fields if f.kind in ("float", "int")]
    valid = _valid(flow)
    truncated = valid.flatmap(lambda b: st.integers(1, len(b) - 1).map(lambda k: b[:k]))
    missing = st.tuples(valid, st.sampled_from(names)).map(
        lambda t: json.dumps({k: v for k, v in json.loads(t[0]).items() if k != t[1]}).encode()
    )
    non_finite = st.tuples(
        valid, st.sampled_from(numeric), st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"])
    ).map(lambda t: json.dumps({**json.loads(t[0]), t[1]: "@@"}).encode().replace(b'"@@"', t[2].encode()))
    naive = valid.map(lambda b: json.dumps({**json.loads(b), "ts": "2026-11-22T06:40:05"}).encode())
    huge = st.just(b'{"pad": "' + b"x" * (MAX_RECORD_BYTES + 10) + b'"}')
    return st.one_of(
        truncated,
        missing,
        non_finite,
        naive,
        huge,
        st.just(b""),
        st.sampled_from([b"[]", b"null", b"{}", b"NaN", b"\xff\xfe{}"]),
    )


def _wrong_type(flow: str) -> st.SearchStrategy[bytes]:
    """A valid event with one required field replaced by a value of a type it does not take."""
    fields = {f.name: f for f in SCHEMAS[flow].fields if f.required}

    def bad(t: tuple[bytes, str, Any]) -> bool:
        f, v = fields[t[1]], t[2]
        if f.kind == "str":
            return not (isinstance(v, str) or (type(v) is int))
        if f.kind == "ts":
            return not (type(v) in (int, float) and 0 <= v <= TS_HIGH)
        if v is None or isinstance(v, bool | list | dict | str):
            return True
        if isinstance(v, float) and (math.isnan(v) or (f.kind == "int" and not v.is_integer())):
            return True
        return not (f.low is None or f.low <= v) or not (f.high is None or v <= f.high)

    return (
        st.tuples(_valid(flow), st.sampled_from(sorted(fields)), _WRONG)
        .filter(bad)
        .map(lambda t: json.dumps({**json.loads(t[0]), t[1]: t[2]}).encode())
    )


@st.composite
def _mixed(draw: st.DrawFn) -> tuple[str, list[tuple[str, bytes]]]:
    flow = draw(st.sampled_from(sorted(SCHEMAS)))
    item = st.one_of(
        _valid(flow).map(lambda b: ("valid", b)),
        _garbage(flow).map(lambda b: ("bad", b)),
        _wrong_type(flow).map(lambda b: ("bad", b)),
        st.binary(max_size=40).map(lambda b: ("any", b.replace(b"\n", b""))),
    )
    return flow, draw(st.lists(item, max_size=25))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mixed(), st.integers(0, 10**12))
def test_fuzz_every_line_is_one_event_or_one_dead_letter(
    case: tuple[str, list[tuple[str, bytes]]], first: int
) -> None:
    flow, items = case
    lines = [b for _, b in items]
    batch, dead = parse_lines(flow, lines, first, "fuzz")
    check_invariant(lines, first, batch, dead)
    good = set() if batch is None else set(batch.positions.tolist())
    for i, (label, raw) in enumerate(items):
        if label == "valid":
            assert first + i in good, (raw, [d.reason for d in dead if d.position == first + i])
        elif label == "bad":
            assert first + i not in good, raw
    for d in dead:
        assert d.reason and d.raw == lines[d.position - first][:RAW_LIMIT]
    if batch is not None:
        # Valid lines round-trip: the batch written as JSON Lines parses back to equal columns.
        again, dead2 = parse_lines(flow, batch.to_jsonl().encode().splitlines(), first, "again")
        assert not dead2 and again is not None
        assert np.array_equal(again.positions - first, np.arange(len(batch)))
        for name, col in batch.columns.items():
            assert again[name].dtype == col.dtype
            assert again[name].tolist() == col.tolist(), name


# --------------------------------------------------------------------------------------------
# Differential: the fast paths (batch decoding, pieces, per-column census and vectorised checks)
# against the reference path (per-line decoding, one piece, per-value validation of every
# column). Both must give the same batch (columns, dtypes, bits) and the same dead letters.


@contextmanager
def reference_path() -> Iterator[None]:
    """Route parsing through the per-line decoder and the per-value column path."""

    def slow_column(f: Field, values: Any, text: bool, *_: Any) -> Any:
        return parsing._column_slow(f, values, text)

    with (
        patch.object(parsing, "_cjsonl", None),
        patch.object(parsing, "_decode_jsonl", parsing._decode_jsonl_lines),
        patch.object(parsing, "_column", slow_column),
        patch.object(parsing, "_JSONL_PIECE", 10**9),
    ):
        yield


def assert_same(
    got: tuple[EventBatch | None, list[DeadLetter]], want: tuple[EventBatch | None, list[DeadLetter]]
) -> None:
    (batch, dead), (ref, ref_dead) = got, want
    assert [(d.position, d.reason, d.raw, d.flow, d.source) for d in dead] == [
        (d.position, d.reason, d.raw, d.flow, d.source) for d in ref_dead
    ]
    assert dead == ref_dead
    assert (batch is None) == (ref is None)
    if batch is None or ref is None:
        return
    assert batch.flow == ref.flow
    assert batch.positions.dtype == ref.positions.dtype == np.int64
    assert batch.positions.tolist() == ref.positions.tolist()
    assert list(batch.columns) == list(ref.columns)
    for name, col in batch.columns.items():
        want_col = ref.columns[name]
        assert col.dtype == want_col.dtype, name
        assert col.shape == want_col.shape, name
        if col.dtype == object:
            assert [type(v) for v in col.tolist()] == [str] * len(col), name
            assert col.tolist() == want_col.tolist(), name
        else:  # bit for bit: -0.0 and 0.0 differ
            assert col.tobytes() == want_col.tobytes(), name


def _edge_numbers(f: Field) -> list[Any]:
    low, high = parsing._bounds(f)
    edges: list[Any] = [0, -0.0, 1, -1, 0.5, 1e308, -1e308, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1]
    edges += [2**64, 2**64 + 1, 10**20 + 1, 10**400, -(10**400), True, False]
    for b in (low, high):
        if math.isfinite(b):
            edges += [b, math.nextafter(b, math.inf), math.nextafter(b, -math.inf)]
            if float(b).is_integer():
                edges += [int(b), int(b) - 1, int(b) + 1, float(int(b))]
    return edges


_ODD_STRINGS = ["", " ", "a\x00b", "\ud800", "x\udfff", "Café ☕", "😀", "12", "1e5", "nan", "inf", "-1"]
_ODD_TS = [
    "2026-11-22T06:40:05Z",
    "2026-11-22t06:40:05z",
    "2026-11-22T07:40:05+01:00",
    "2026-11-22 06:40:05.5+00:00",
    "2026-11-22T06:40:05",
    "1969-12-31T23:59:59Z",
    "2200-01-01T00:00:00Z",
    "2200-01-01T00:00:00.000001Z",
    "1970-01-01T00:00:00+00:00",
    " 1795329605 ",
    "1795329605.25",
    "-1",
    "7258118400",
    "nan",
    "Infinity",
    "yesterday",
    "",
]


def _odd_value(f: Field) -> st.SearchStrategy[Any]:
    """Values of any kind, biased to the edges of what field ``f`` accepts."""
    numbers = st.one_of(
        st.sampled_from(_edge_numbers(f)),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
    )
    other = st.sampled_from([None, [], {}, [1], {"a": 1}, *_ODD_STRINGS, *_ODD_TS])
    anything = st.one_of(numbers, other, _text, _iso, st.integers(-(10**25), 10**25).map(str))
    if f.kind == "str":  # mostly strings, so that whole columns of strings hold odd ones
        return st.one_of(st.sampled_from(_ODD_STRINGS), _text, st.integers(), anything)
    if f.kind == "ts":
        return st.one_of(st.sampled_from(_ODD_TS), _iso, numbers, anything)
    return st.one_of(numbers, anything)


@st.composite
def _differential_case(draw: st.DrawFn) -> tuple[str, list[bytes]]:
    """A flow and lines: most fields valid, a few fields (or none) with odd values, odd lines."""
    flow = draw(st.sampled_from(sorted(SCHEMAS)))
    fields = SCHEMAS[flow].fields
    odd = draw(st.sets(st.sampled_from([f.name for f in fields]), max_size=2))
    odd_rate = draw(st.sampled_from([0.0, 0.02, 0.3, 1.0]))
    garbage_rate = draw(st.sampled_from([0.0, 0.05, 0.5]))
    value = {f.name: _value(f.kind, f.low, f.high) for f in fields}
    odd_value = {f.name: _odd_value(f) for f in fields}
    n = draw(st.integers(0, 40))
    lines = []
    for _ in range(n):
        if draw(st.floats(0, 1)) < garbage_rate:
            lines.append(draw(st.one_of(_garbage(flow), _wrong_type(flow), st.binary(max_size=30))))
            continue
        rec: dict[str, Any] = {}
        for f in fields:
            if f.name in odd and draw(st.floats(0, 1)) < odd_rate:
                choice = draw(st.integers(0, 9))
                if choice == 0:
                    continue  # missing
                rec[f.name] = draw(odd_value[f.name])
            elif f.required or draw(st.booleans()):
                rec[f.name] = draw(value[f.name])
        if draw(st.integers(0, 9)) == 0:
            rec["extra"] = draw(st.one_of(_text, st.integers(), st.lists(st.integers(), max_size=3)))
        if draw(st.booleans()):
            rec = dict(reversed(list(rec.items())))
        raw = json.dumps(rec, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        lines.append(
            draw(st.sampled_from([b"", b" ", b"\t"])) + raw + draw(st.sampled_from([b"", b"\r", b" "]))
        )
    return flow, lines


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_differential_case(), st.integers(0, 10**12), st.integers(1, 7))
def test_differential_fast_path_equals_reference_path(
    case: tuple[str, list[bytes]], first: int, piece: int
) -> None:
    flow, lines = case
    with patch.object(parsing, "_JSONL_PIECE", piece):
        got = parse_lines(flow, lines, first, "diff")
    whole = parse_lines(flow, lines, first, "diff")
    with patch.object(parsing, "_cjsonl", None):
        python = parse_lines(flow, lines, first, "diff")
    with reference_path():
        want = parse_lines(flow, lines, first, "diff")
    check_invariant(lines, first, *want)
    assert_same(got, want)
    assert_same(whole, want)
    assert_same(python, want)


class _Str(str):
    pass


class _Int(int):
    pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_differential_case(), st.data())
def test_differential_parse_records(case: tuple[str, list[bytes]], data: st.DataObject) -> None:
    """Decoded records (not only exact JSON types: subclasses, numpy scalars) on both paths."""
    flow, lines = case
    records: list[Any] = []
    for raw in lines:
        try:
            rec = json.loads(raw)
        except ValueError:
            rec = raw
        if isinstance(rec, dict) and rec and data.draw(st.integers(0, 4)) == 0:
            key = data.draw(st.sampled_from(sorted(rec)))
            v = rec[key]
            if type(v) is str:
                rec[key] = _Str(v)
            elif type(v) is int and -(2**63) <= v < 2**63:
                rec[key] = data.draw(st.sampled_from([_Int(v), np.int64(v)]))
            elif type(v) is float:
                rec[key] = np.float64(v)
        records.append(rec)
    positions = list(range(3, 3 + 2 * len(records), 2))
    got = parse_records(flow, records, positions, "kafka:t/0", lines)
    with reference_path():
        want = parse_records(flow, records, positions, "kafka:t/0", lines)
    assert_same(got, want)


def test_differential_large_clean_and_dirty_batches() -> None:
    """Generated events (several pieces), clean and with a few bad lines spread over them."""
    from connectors.generators import generator

    for flow in sorted(SCHEMAS):
        batches = list(generator(flow)(5_000, 3, 0, 5_000))
        lines = EventBatch.concat(batches).to_jsonl().encode().splitlines()
        dirty = list(lines)
        for k in range(7, len(dirty), 611):
            dirty[k] = [b"{bad", b"[]", line(amount=None), b'{"ts": NaN}', b"", b"\xff"][k % 6]
        for case in (lines, dirty):
            got = parse_lines(flow, case, 42, "gen")
            with reference_path():
                want = parse_lines(flow, case, 42, "gen")
            assert_same(got, want)
            assert got[0] is not None and len(got[0]) + len(got[1]) == len(case)


# --------------------------------------------------------------------------------------------
# The C fast path (connectors/_cjsonl.c): what it takes, and that it equals the reference


def _scan_taken(flow: str, lines: list[bytes]) -> list[bool]:
    """Which lines the C scanner takes itself (the rest it leaves to the Python path)."""
    assert parsing._cjsonl is not None, "the C extension connectors._cjsonl was not built"
    schema = SCHEMAS[flow]
    columns = tuple(np.empty(len(lines), f.dtype) for f in schema.fields)
    ok = np.zeros(len(lines), dtype=np.uint8)
    kinds = "".join(parsing._SCAN_KINDS[f.kind] for f in schema.fields)
    parsing._cjsonl.scan(lines, schema.names, kinds, columns, ok, MAX_RECORD_BYTES)
    return ok.astype(bool).tolist()


def test_scanner_takes_plain_generated_lines() -> None:
    from connectors.generators import generator

    for flow in sorted(SCHEMAS):
        lines = next(iter(generator(flow)(500, 3, 0, 500))).to_jsonl().encode().splitlines()
        assert all(_scan_taken(flow, lines)), flow


@pytest.mark.parametrize(
    ("raw", "taken"),
    [
        (line(), True),
        (b" \t" + line() + b"\r", True),
        (line(extra=None, flag=True, other=False, n=-1.5e3), True),
        (line(ts="2026-11-22T06:40:05Z"), True),  # text timestamps are read in Python
        (line(amount=12), True),
        (line(tx_id=12), False),  # a number for a str field: Python's int-to-text rules
        (line(merchant_id="caf\u00e9"), False),  # non-ASCII (or an escape)
        (line(merchant_id='a"b'), False),  # an escape
        (line(amount=None), False),
        (line(amount=True), False),
        (line(extra=[1]), False),
        (line(extra={"a": 1}), False),
        (line()[:-1] + b',"amount":1}', False),  # a repeated field
        (line() + b"x", False),
        (json.dumps({k: v for k, v in json.loads(line()).items() if k != "ts"}).encode(), False),
        (b"{}", False),
        (b"[]", False),
        (b"", False),
    ],
)
def test_scanner_takes_only_plain_lines(raw: bytes, taken: bool) -> None:
    assert _scan_taken("fraud", [raw]) == [taken]
    got = parse_lines("fraud", [raw], 5, "s")
    with reference_path():
        assert_same(got, parse_lines("fraud", [raw], 5, "s"))


def test_scanner_int_fields_take_short_integer_literals_only() -> None:
    from connectors.generators import generator

    base = json.loads(next(iter(generator("ddos")(1, 1, 0, 1))).to_jsonl())
    lines = [json.dumps({**base, "status": v}).encode() for v in (200, 200.0, 2e2)]
    lines.append(json.dumps(base).encode().replace(b'"bytes": ', b'"bytes": 1000000000000000000000'))
    assert _scan_taken("ddos", lines) == [True, False, False, False]
    got = parse_lines("ddos", lines, 0, "s")
    with reference_path():
        assert_same(got, parse_lines("ddos", lines, 0, "s"))


_decimal = st.builds(
    lambda sign, whole, frac, exp: (
        f"{sign}{whole}{'.' + frac if frac else ''}{'e' + str(exp) if exp is not None else ''}"
    ),
    st.sampled_from(["", "-"]),
    st.one_of(st.just("0"), st.integers(1, 10**25).map(str)),
    st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=25)),
    st.one_of(st.none(), st.integers(-330, 330)),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.one_of(_decimal, st.floats(allow_nan=False, allow_infinity=False).map(repr)),
        min_size=1,
        max_size=8,
    )
)
def test_scanner_numbers_equal_pythons_float(numbers: list[str]) -> None:
    """Numbers are read bit for bit as Python's float() reads them (Clinger's exact path or
    Python's own correctly rounded conversion), in range or left to the reference path."""
    lines = [f'{{"brand":"b","sentiment":{x},"ts":{x.lstrip("-")}}}'.encode() for x in numbers]
    got = parse_lines("sentiment", lines, 0, "n")
    with reference_path():
        want = parse_lines("sentiment", lines, 0, "n")
    assert_same(got, want)
    batch = got[0]
    for i, x in enumerate(numbers):
        if batch is not None and i in batch.positions.tolist():
            row = batch.positions.tolist().index(i)
            assert batch["sentiment"][row] == float(x)


def test_scanner_rejects_bad_arguments() -> None:
    assert parsing._cjsonl is not None
    scan = parsing._cjsonl.scan
    floats, ok = np.empty(1), np.empty(1, dtype=np.uint8)
    with pytest.raises(ValueError, match="unknown field kind"):
        scan([b"{}"], ("a",), "x", (floats,), ok, 10)
    with pytest.raises(ValueError, match="format d"):
        scan([b"{}"], ("a",), "f", (np.empty(1, dtype=np.int64),), ok, 10)
    with pytest.raises(ValueError, match="format O"):
        scan([b"{}"], ("a",), "s", (floats,), ok, 10)
    with pytest.raises(ValueError, match="one kind and one column"):
        scan([b"{}"], ("a", "b"), "f", (floats,), ok, 10)
    with pytest.raises(ValueError, match="ok buffer"):
        scan([b"{}", b"{}"], ("a",), "f", (np.empty(2),), ok, 10)


# --------------------------------------------------------------------------------------------
# Interning: equal strings of a column share one object (only identity changes, never a value)


def test_repeated_strings_share_one_object() -> None:
    n = 20_000
    types = ["purchase", "refund", "transfer"]
    lines = [line(tx_id=f"t{i}", merchant_id=f"m{i % 5}", type=types[i % 3]) for i in range(n)]
    batch, dead = parse_lines("fraud", lines, 0, "f")
    assert not dead and batch is not None
    for name, distinct in (("merchant_id", 5), ("type", 3), ("card_id", 1)):
        col = batch[name].tolist()
        assert len(set(col)) == distinct
        assert len(set(map(id, col))) == distinct, name
    assert batch["tx_id"].tolist() == [f"t{i}" for i in range(n)]
    assert batch["merchant_id"].tolist() == [f"m{i % 5}" for i in range(n)]


def test_interner_gives_up_on_mostly_distinct_columns() -> None:
    interner = parsing._Interner()
    ids = [f"id{i}" for i in range(parsing._INTERN_PROBE)]
    assert interner(ids) == ids and interner.memo is None
    fresh = ["x" + str(i) for i in range(3)]
    assert interner(fresh) is fresh  # left alone from then on
    few = parsing._Interner()
    values = [str(i % 7) for i in range(2 * parsing._INTERN_PROBE)]
    out = few(values)
    assert out == values and len(set(map(id, out))) == 7 and few.memo is not None


_POOL = ["", " ", "a", "Café ☕", "😀", "12", "a\x00b", "\ud800", "acme", "x" * 40]


@st.composite
def _repetitive_case(draw: st.DrawFn) -> tuple[str, list[bytes]]:
    """A flow and lines whose string fields repeat a few values (odd ones included)."""
    flow = draw(st.sampled_from(sorted(SCHEMAS)))
    fields = SCHEMAS[flow].fields
    pools = {
        f.name: draw(st.lists(st.sampled_from(_POOL), min_size=1, max_size=4))
        for f in fields
        if f.kind == "str"
    }
    value = {f.name: _value(f.kind, f.low, f.high) for f in fields}
    lines = []
    for _ in range(draw(st.integers(0, 60))):
        if draw(st.integers(0, 19)) == 0:
            lines.append(draw(st.sampled_from([b"", b"{bad", b"[]", b"\xff"])))
            continue
        rec: dict[str, Any] = {}
        for f in fields:
            if f.name in pools and draw(st.integers(0, 9)):
                rec[f.name] = draw(st.sampled_from(pools[f.name]))
            elif f.required or draw(st.booleans()):
                rec[f.name] = draw(value[f.name])
        raw = json.dumps(rec, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        lines.append(raw)
    return flow, lines


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_repetitive_case(), st.integers(1, 7), st.sampled_from([1, 3, 8192]))
def test_differential_repeated_values(case: tuple[str, list[bytes]], piece: int, probe: int) -> None:
    """Repeated (and odd) strings, interned across pieces or given up on early: same result as
    the reference path (which interns nothing)."""
    flow, lines = case
    with patch.object(parsing, "_JSONL_PIECE", piece), patch.object(parsing, "_INTERN_PROBE", probe):
        got = parse_lines(flow, lines, 10, "rep")
    with reference_path():
        want = parse_lines(flow, lines, 10, "rep")
    assert_same(got, want)
    # Decoded records (Kafka) and CSV rows take the same column path.
    records: list[Any] = []
    for raw in lines:
        try:
            records.append(json.loads(raw))
        except ValueError:
            records.append(raw)
    positions = list(range(len(records)))
    with patch.object(parsing, "_INTERN_PROBE", probe):
        got_records = parse_records(flow, records, positions, "k", lines)
    with reference_path():
        want_records = parse_records(flow, records, positions, "k", lines)
    assert_same(got_records, want_records)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["t1", "t2", "", "Café", "a\x00b", '"q"', "x,y"]),
            st.sampled_from(["0.5", "-1", "2", "", "nan", "x", "1e0"]),
            st.sampled_from(["1700000000", "2026-11-22T06:40:05Z", "", "2026-11-22T06:40:05", "-5"]),
        ),
        max_size=40,
    ),
    st.sampled_from([1, 3, 8192]),
)
def test_differential_csv_rows(rows: list[tuple[str, str, str]], probe: int) -> None:
    """CSV rows with repeated odd cells: same batch and dead letters as the per-value path."""
    import csv
    import io

    dialect = CsvDialect.from_header(b"brand,sentiment,ts")
    lines = []
    for row in rows:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(row)
        lines.append(buf.getvalue().encode("utf-8", "surrogatepass"))
    with patch.object(parsing, "_INTERN_PROBE", probe):
        got = parse_lines("sentiment", lines, 0, "c.csv", "csv", dialect=dialect)
    with reference_path():
        want = parse_lines("sentiment", lines, 0, "c.csv", "csv", dialect=dialect)
    check_invariant(lines, 0, *want)
    assert_same(got, want)
