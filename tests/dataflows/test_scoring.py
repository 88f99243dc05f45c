"""Matching alerts with injected anomalies: precision, recall and the report."""

from __future__ import annotations

import numpy as np
import pytest

from connectors.events import Anomaly
from dataflows.scoring import Score, Target, default_target, format_report, meets, meets_targets, score
from operators.alerts import Alert


def _row(detector: str, entity: str, ts: float) -> dict[str, object]:
    return {"detector": detector, "entity": entity, "event_ts": ts}


def test_bounds_are_inclusive() -> None:
    truth = [Anomaly("d", "x", 10.0, 20.0)]
    rows = [_row("d", "x", 10.0), _row("d", "x", 20.0), _row("d", "x", 9.999), _row("d", "x", 20.001)]
    s = score(rows, truth, ["d"])["d"]
    assert (s.tp_alerts, s.fp_alerts, s.detected, s.missed) == (2, 2, 1, 0)
    assert s.precision == 0.5 and s.recall == 1.0


def test_point_anomaly_needs_the_exact_time() -> None:
    truth = [Anomaly("duplicate_tx", "tx-1", 5.0, 5.0)]
    assert score([_row("duplicate_tx", "tx-1", 5.0)], truth, ["duplicate_tx"])["duplicate_tx"].recall == 1.0
    s = score([_row("duplicate_tx", "tx-1", 5.0000001)], truth, ["duplicate_tx"])["duplicate_tx"]
    assert s.recall == 0.0 and s.precision == 0.0


def test_entity_and_detector_must_match() -> None:
    truth = [Anomaly("a", "x", 0.0, 10.0)]
    rows = [_row("a", "y", 5.0), _row("b", "x", 5.0)]
    out = score(rows, truth, ["a", "b"])
    assert out["a"] == Score(0, 1, 0, 1, 0.0, 0.0)
    assert out["b"] == Score(0, 1, 0, 0, 0.0, 1.0)


def test_empty_cases() -> None:
    assert score([], [], ["d"])["d"] == Score(0, 0, 0, 0, 1.0, 1.0)
    assert score([], [Anomaly("d", "x", 0, 1)], ["d"])["d"] == Score(0, 0, 0, 1, 1.0, 0.0)
    assert score([_row("d", "x", 0.5)], [], ["d"])["d"] == Score(0, 1, 0, 0, 0.0, 1.0)


def test_unlisted_detectors_are_ignored() -> None:
    out = score([_row("other", "x", 1.0)], [Anomaly("other", "x", 0, 2)], ["d"])
    assert list(out) == ["d"] and out["d"] == Score(0, 0, 0, 0, 1.0, 1.0)


def test_many_alerts_one_anomaly_and_overlaps() -> None:
    truth = [Anomaly("d", "x", 0.0, 10.0), Anomaly("d", "x", 5.0, 6.0), Anomaly("d", "x", 50.0, 60.0)]
    rows = [_row("d", "x", t) for t in (1.0, 2.0, 5.5, 30.0)]
    s = score(rows, truth, ["d"])["d"]
    # 5.5 lies in both overlapping anomalies: one true alert, both anomalies detected
    assert (s.tp_alerts, s.fp_alerts, s.detected, s.missed) == (3, 1, 2, 1)


def test_nested_interval_after_a_long_one() -> None:
    # a short interval starting later must not hide a long earlier one (running max of ends)
    truth = [Anomaly("d", "x", 0.0, 100.0), Anomaly("d", "x", 10.0, 11.0)]
    s = score([_row("d", "x", 50.0)], truth, ["d"])["d"]
    assert (s.tp_alerts, s.detected, s.missed) == (1, 1, 1)


def test_alert_objects_are_accepted() -> None:
    alert = Alert("fraud", "d", "x", 3.0, 1.0, 1.0)
    assert score([alert], [Anomaly("d", "x", 3.0, 3.0)], ["d"])["d"].recall == 1.0


def test_against_brute_force() -> None:
    rng = np.random.default_rng(5)
    truth = [
        Anomaly(f"d{rng.integers(2)}", f"e{rng.integers(20)}", float(s), float(s + rng.uniform(0, 30)))
        for s in rng.uniform(0, 1_000, 300)
    ]
    rows = [
        _row(f"d{rng.integers(3)}", f"e{rng.integers(25)}", float(t)) for t in rng.uniform(-10, 1_050, 5_000)
    ]
    out = score(rows, truth, ["d0", "d1", "d2"])
    for det in ("d0", "d1", "d2"):
        mine = [a for a in truth if a.detector == det]
        alerts = [r for r in rows if r["detector"] == det]

        def hit(r: dict[str, object], a: Anomaly) -> bool:
            return r["entity"] == a.entity and a.start <= r["event_ts"] <= a.end  # type: ignore[operator]

        tp = sum(any(hit(r, a) for a in mine) for r in alerts)
        detected = sum(any(hit(r, a) for r in alerts) for a in mine)
        assert out[det].tp_alerts == tp and out[det].fp_alerts == len(alerts) - tp
        assert out[det].detected == detected and out[det].missed == len(mine) - detected


def test_large_input_is_fast() -> None:
    import time

    rng = np.random.default_rng(1)
    truth = [Anomaly("d", f"e{i % 5000}", float(i), float(i + 5)) for i in range(20_000)]
    rows = [
        _row("d", f"e{int(e)}", float(t))
        for e, t in zip(rng.integers(0, 5000, 100_000), rng.uniform(0, 20_000, 100_000), strict=True)
    ]
    t0 = time.perf_counter()
    s = score(rows, truth, ["d"])["d"]
    assert s.alerts == 100_000 and s.anomalies == 20_000
    assert time.perf_counter() - t0 < 10.0  # generous: ~0.3 s here


def test_targets_and_report() -> None:
    assert default_target("duplicate_payload") == Target(0.99, 0.95)
    assert default_target("zone_zscore") == Target(0.95, 0.95)
    good = Score(99, 1, 99, 1, 0.99, 0.99)
    assert meets(good, default_target("duplicate_tx")) and meets(good, default_target("ip_rate"))
    edge = Score(95, 5, 95, 5, 0.95, 0.95)
    assert meets(edge, default_target("ip_rate")) and not meets(edge, default_target("duplicate_tx"))
    scores = {"duplicate_tx": edge, "ip_rate": edge}
    assert not meets_targets(scores)
    assert meets_targets(scores, {"duplicate_tx": Target(0.9, 0.9)})
    text = format_report("fraud", scores)
    lines = text.splitlines()
    assert lines[0] == "flow fraud"
    assert "precision" in lines[1] and "recall" in lines[1]
    assert lines[2].startswith("duplicate_tx") and lines[2].endswith("NO")
    assert lines[3].startswith("ip_rate") and lines[3].endswith("yes")
    assert lines[-1] == "1 of 2 detectors below target"
    assert format_report("x", {"ip_rate": edge}).endswith("all detectors meet their targets")


@pytest.mark.parametrize("ts", [float("nan")])
def test_nan_time_never_matches(ts: float) -> None:
    s = score([_row("d", "x", ts)], [Anomaly("d", "x", 0.0, 1.0)], ["d"])["d"]
    assert s.fp_alerts == 1 and s.detected == 0
