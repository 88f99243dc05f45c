"""The baseline peer (``bench.baseline_fraud``) raises the alerts sketchwatch's fraud flow raises."""

from __future__ import annotations

from pathlib import Path

from bytewax.testing import run_main

from bench.baseline_fraud import build
from connectors.files import write_jsonl
from connectors.generators import generator
from connectors.sql import read_alerts
from dataflows.evaluate import run_flow

EVENTS = 30_000
DETERMINISTIC = ("duplicate_tx", "amount_outlier", "card_velocity")


def _pairs(db: Path) -> set[tuple[str, str]]:
    return {(r["detector"], r["entity"]) for r in read_alerts(f"sqlite:///{db}")}


def test_baseline_agrees_with_sketchwatch(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    write_jsonl(events, generator("fraud")(EVENTS, 7, 0, 10_000))
    ours, peer = tmp_path / "ours.db", tmp_path / "peer.db"
    run_flow("fraud", {"SKETCHWATCH_SOURCE": f"file:{events}", "SKETCHWATCH_SINKS": f"sqlite:///{ours}"})
    run_main(build(str(events), str(peer)))  # type: ignore[no-untyped-call]
    a, b = _pairs(ours), _pairs(peer)
    for detector in DETERMINISTIC:
        mine = {p for p in a if p[0] == detector}
        theirs = {p for p in b if p[0] == detector}
        assert mine, f"sketchwatch raised no {detector} alert on {EVENTS} events"
        overlap = len(mine & theirs) / max(len(mine), len(theirs))
        assert overlap >= 0.9, (detector, len(mine), len(theirs), overlap)
