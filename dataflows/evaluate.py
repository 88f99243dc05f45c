"""Precision and recall of a flow's detectors against the generator's injected anomalies.

Run: ``python -m dataflows.evaluate FLOW [--events N] [--seed S] [--workers W]``

It runs the flow on its built-in generator (alerts into a throw-away SQLite file), reads the
alerts back and matches them with ``ground_truth``: an alert is a true positive when its
detector and entity equal an injected anomaly's and its event time lies in the anomaly's
interval. Exits non-zero when a target is missed (recall >= 0.99 for duplicate detectors,
>= 0.95 for the others; precision >= 0.95 everywhere).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bytewax.testing import cluster_main, run_main

from connectors.config import Config
from connectors.generators import ground_truth_for
from connectors.sql import read_alerts
from dataflows.common import build_flow
from dataflows.registry import FLOWS, detectors_for
from dataflows.scoring import format_report, meets_targets, score

__all__ = ["evaluate", "run_flow"]


def run_flow(flow: str, env: dict[str, str], workers: int = 1) -> None:
    """Run ``flow`` in this process with configuration ``env`` (1 worker, or a local cluster)."""
    config = Config.from_env(flow, env)
    dataflow = build_flow(flow, detectors_for(flow)(config), config)
    if workers == 1:
        run_main(dataflow)  # type: ignore[no-untyped-call]
    else:
        cluster_main(dataflow, [], 0, worker_count_per_proc=workers)  # type: ignore[no-untyped-call]


def evaluate(
    flow: str, events: int, seed: int, workers: int = 1, extra_env: dict[str, str] | None = None
) -> Any:
    """Run ``flow`` on ``events`` generated events and score its alerts; returns the scores."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'alerts.db'}"
        env = {
            "SKETCHWATCH_SOURCE": "generate",
            "SKETCHWATCH_EVENTS": str(events),
            "SKETCHWATCH_SEED": str(seed),
            "SKETCHWATCH_SINKS": url,
            **(extra_env or {}),
        }
        run_flow(flow, env, workers)
        alerts = read_alerts(url)
    config = Config.from_env(flow, env)
    names = [spec.name for spec in detectors_for(flow)(config) if spec.name != "sampling"]
    return score(alerts, ground_truth_for(flow)(events, seed), names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Precision/recall of a flow against injected anomalies.")
    parser.add_argument("flow", choices=FLOWS)
    parser.add_argument("--events", type=int, default=int(os.environ.get("SKETCHWATCH_EVENTS", 1_000_000)))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SKETCHWATCH_SEED", 7)))
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    scores = evaluate(args.flow, args.events, args.seed, args.workers)
    print(format_report(args.flow, scores))
    return 0 if meets_targets(scores) else 1


if __name__ == "__main__":
    sys.exit(main())
