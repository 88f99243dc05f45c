"""StdoutSink: one JSON line per alert, sample and dead letter."""

from __future__ import annotations

import io
import json

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from connectors.events import DeadLetter, Sample
from connectors.sql import SinkItem, dead_letter_id
from connectors.stdout import StdoutSink, to_json_line
from operators.alerts import Alert

ALERT = Alert("ddos", "heavy_hitter", "10.0.0.1", 1_700_000_000.5, 9.0, 4.0, None, None, "", {"share": 0.4})
SAMPLE = Sample("iot", 0.0, 60.0, "zone-1", 3, {"device_id": "d", "temperature": 20.0})
DEAD = DeadLetter("iot", "in.csv", 9, "bad CSV row: 2 columns, header has 5", b"a,\xff\n")


def test_lines() -> None:
    out = io.StringIO()
    part = StdoutSink(out).build("out", 0, 1)
    part.write_batch([ALERT, SAMPLE, DEAD])
    part.write_batch([])
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    a, s, d = map(json.loads, lines)
    assert a["kind"] == "alert" and a["alert_id"] == ALERT.alert_id
    assert a["evidence"] == {"share": 0.4} and a["window_start"] is None and a["event_ts"] == 1_700_000_000.5
    assert s["kind"] == "sample" and s["sample_id"] == SAMPLE.sample_id and s["event"] == SAMPLE.event
    assert d["kind"] == "dead_letter" and d["id"] == dead_letter_id(DEAD)
    assert d["raw"] == "a,\\xff\n" and d["position"] == 9 and d["reason"] == DEAD.reason


def test_rejects_other_items() -> None:
    with pytest.raises(TypeError, match="got int"):
        to_json_line(3)  # type: ignore[arg-type]


def test_default_stream_is_stdout_in_a_dataflow(capsys: pytest.CaptureFixture[str]) -> None:
    flow = Dataflow("stdout_test")
    items = op.input("in", flow, TestingSource[SinkItem]([ALERT, DEAD]))
    op.output("out", items, StdoutSink())
    run_main(flow)  # type: ignore[no-untyped-call]
    kinds = [json.loads(x)["kind"] for x in capsys.readouterr().out.splitlines()]
    assert kinds == ["alert", "dead_letter"]
