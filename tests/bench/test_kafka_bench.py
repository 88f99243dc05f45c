"""Benchmark h (``bench._kafka``) runs end to end on a real tansu broker and PostgreSQL.

The services are started by the benchmark itself and raise when they cannot start, so this test
fails (never skips) without them.
"""

from __future__ import annotations

from pathlib import Path

from bench._kafka import kafka_measurement

STATS = ("producer_msgs_s", "broker_consume_msgs_s", "flow_events_s", "flow_summary_events_s")


def test_kafka_measurement_small(tmp_path: Path) -> None:
    r = kafka_measurement(20_000, 1, tmp_path)
    assert r["events"] == 20_000
    for name in STATS:
        s = r[name]
        assert set(s) == {"median", "min", "max"}, name
        assert 0 < s["min"] <= s["median"] <= s["max"], (name, s)
    assert r["startup_s"] > 0
    assert r["ratio_flow_to_broker"] > 0
    assert r["alerts"] > 0
