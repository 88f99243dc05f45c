"""The detection-quality targets, on each flow's defaults and its generator's injected anomalies."""

from __future__ import annotations

import pytest

from dataflows.evaluate import evaluate, main
from dataflows.registry import FLOWS
from dataflows.scoring import format_report, meets_targets


@pytest.mark.parametrize("flow", FLOWS)
def test_every_detector_meets_its_precision_and_recall_targets(flow: str) -> None:
    # recall >= 0.99 for duplicates, >= 0.95 for the others; precision >= 0.95 everywhere.
    scores = evaluate(flow, events=1_000_000, seed=7)
    assert all(s.detected + s.missed > 0 for s in scores.values()), format_report(flow, scores)
    assert meets_targets(scores), format_report(flow, scores)


def test_the_command_line_prints_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fraud", "--events", "300000", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "duplicate_tx" in out and "precision" in out
