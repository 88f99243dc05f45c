"""Benchmark h: Kafka (tansu) -> fraud flow -> Postgres, next to the broker's own consume rate.

Run from the repository root (the services come from ``tests.services``)::

    python -m bench._kafka [--events N] [--repeats R]

One call of :func:`kafka_measurement` starts a tansu broker and a throw-away PostgreSQL 15,
produces ``N`` fraud events (seed 7) into a 1-partition topic, then ``R`` times, interleaved:

- the ceiling: a plain confluent-kafka consumer reading the partition, values touched, not parsed;
- the flow: ``python -m bytewax.run dataflows.fraud`` (one worker) with
  ``SKETCHWATCH_SOURCE=kafka://...?tail=false`` and a fresh Postgres database per run.
  events/s = N / (wall - start-up), start-up being the median wall time on an empty topic;
  the flow's own summary line (first read to end of input) is kept as a second figure.

Figures are medians with min-max; the ratio flow / broker is measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from connectors.produce import produce_events
from tests.services.kafka import TansuBroker, create_topic, start_tansu
from tests.services.postgres import PostgresServer, start_postgres

__all__ = ["kafka_measurement"]

TOPIC, EMPTY_TOPIC = "fraud-events", "fraud-empty"
SEED = 7
_RATE = re.compile(r"([\d,]+) events/s")
_CEILING_CONFIG: dict[str, Any] = {
    "group.id": "sketchwatch-bench-ceiling",  # required by librdkafka; assign() joins no group
    "enable.auto.commit": False,
    "fetch.max.bytes": 64 << 20,
    "max.partition.fetch.bytes": 16 << 20,
    "queued.max.messages.kbytes": 256 << 10,
    "queued.min.messages": 1_000_000,
}


def _stats(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def _deadline(events: int) -> float:
    """Seconds any one pass over the topic may take (generous: a stuck run should fail, not hang)."""
    return 60.0 + events / 10_000


# -- the ceiling -----------------------------------------------------------------------------------


def broker_consume_rate(bootstrap: str, topic: str, events: int) -> float:
    """Messages/s of a plain consumer reading ``events`` messages of partition 0 from the start.

    Timed from the first message on (which is not counted): librdkafka's start (connecting, a
    500 ms offset-query timer) is a fixed cost, as the flow's start-up is.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, **_CEILING_CONFIG})
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + _deadline(events)
        got, size, started = 0, 0, 0.0
        while got < events:
            if time.monotonic() > deadline:
                raise RuntimeError(f"ceiling consumer: {got:,} of {events:,} messages of {topic!r} read")
            # One message first (starts the clock); never more than is left: consume() waits for
            # all it asks for, or the timeout.
            want = min(10_000, events - got) if got else 1
            msgs = consumer.consume(num_messages=want, timeout=1.0)
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    raise RuntimeError(f"ceiling consumer on {topic!r}: {err.str()}")
                size += len(msg.value() or b"")  # touch the value, as the flow must
            if msgs and not got:
                started = time.perf_counter()
            got += len(msgs)
        return (got - 1) / max(time.perf_counter() - started, 1e-9)
    finally:
        consumer.close()


# -- the flow --------------------------------------------------------------------------------------


class _FlowRunner:
    """Runs the fraud flow on a topic into a fresh Postgres database each time."""

    def __init__(self, broker: TansuBroker, server: PostgresServer, workdir: Path) -> None:
        self.broker, self.server, self.workdir = broker, server, workdir
        self._runs = 0

    def run(self, topic: str, timeout: float) -> tuple[float, str, str]:
        """Wall seconds, stdout and the database name of one run (RuntimeError if it fails)."""
        self._runs += 1
        database = f"bench_{self._runs}"  # fresh: insert-or-ignore must not dedupe against a past run
        self.server.create_database(database)
        env = {
            **os.environ,
            "SKETCHWATCH_SOURCE": f"kafka://{self.broker.bootstrap}/{topic}?tail=false",
            "SKETCHWATCH_SINKS": self.server.url_for(database),
        }
        cmd = [sys.executable, "-m", "bytewax.run", "dataflows.fraud"]
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, env=env, cwd=self.workdir, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"fraud flow on {topic!r} did not finish within {timeout:.0f} s") from None
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise RuntimeError(f"fraud flow on {topic!r} exited with {proc.returncode}:\n{tail}")
        return wall, proc.stdout, database

    def alerts(self, database: str) -> int:
        with psycopg.connect(self.server.dsn(database)) as conn:
            row = conn.execute("select count(*) from alerts").fetchone()
        return int(row[0]) if row else 0


def _summary_rate(stdout: str) -> float:
    match = _RATE.search(stdout)
    if match is None:
        raise RuntimeError(f"no 'events/s' summary line in the flow's output:\n{stdout[-2000:]}")
    return float(match.group(1).replace(",", ""))


def _check_alerts(counts: list[int]) -> None:
    if counts[-1] <= 0:
        raise RuntimeError(f"the fraud flow wrote no alerts to Postgres (runs so far: {counts})")
    if len(set(counts)) > 1:
        raise RuntimeError(f"alert rows differ between runs of a deterministic flow: {counts}")


# -- one invocation --------------------------------------------------------------------------------


def _measure(
    broker: TansuBroker, server: PostgresServer, events: int, repeats: int, workdir: Path
) -> dict[str, Any]:
    create_topic(broker.bootstrap, TOPIC, 1)
    create_topic(broker.bootstrap, EMPTY_TOPIC, 1)
    produced = produce_events("fraud", events, SEED, broker.bootstrap, TOPIC, partitions=1)
    if produced.messages != events:
        raise RuntimeError(f"produced {produced.messages:,} of {events:,} events")
    runner = _FlowRunner(broker, server, workdir)
    timeout = _deadline(events)
    startup = statistics.median(runner.run(EMPTY_TOPIC, timeout)[0] for _ in range(max(2, repeats)))
    ceiling, flow, summary, alerts = [], [], [], []
    for _ in range(repeats):  # interleaved, so drift in the machine's speed hits both alike
        ceiling.append(broker_consume_rate(broker.bootstrap, TOPIC, events))
        wall, out, database = runner.run(TOPIC, timeout)
        flow.append(events / max(wall - startup, 1e-3))
        summary.append(_summary_rate(out))
        alerts.append(runner.alerts(database))
        _check_alerts(alerts)
    return {
        "events": events,
        "repeats": repeats,
        "producer_msgs_s": _stats([produced.rate]),
        "broker_consume_msgs_s": _stats(ceiling),
        "flow_events_s": _stats(flow),
        "flow_summary_events_s": _stats(summary),
        "startup_s": startup,
        "ratio_flow_to_broker": statistics.median(flow) / statistics.median(ceiling),
        "alerts": alerts[0],
    }


def kafka_measurement(events: int, repeats: int, workdir: Path) -> dict[str, Any]:
    """Kafka (tansu) -> fraud flow -> Postgres events/s next to the broker's consume rate.

    Parameters
    ----------
    events : int
        Fraud events produced into the topic (generator, seed 7).
    repeats : int
        Runs of the ceiling consumer and of the flow (start-up: ``max(2, repeats)`` runs).
    workdir : Path
        Directory for the broker's log, the Postgres cluster and the flow's working directory.

    Returns
    -------
    dict
        ``events``, ``repeats``, ``producer_msgs_s``, ``broker_consume_msgs_s``,
        ``flow_events_s``, ``flow_summary_events_s`` (each median/min/max), ``startup_s``,
        ``ratio_flow_to_broker`` (of the medians) and ``alerts`` (rows per run, all equal).

    Raises
    ------
    RuntimeError
        A service did not start, a run failed, or the flow wrote no or differing alert counts.
    """
    if events < 2 or repeats < 1:  # the ceiling's clock starts at the first message
        raise ValueError(f"need events >= 2 and repeats >= 1, got {events} and {repeats}")
    workdir = Path(workdir)
    broker = start_tansu(workdir / "tansu")
    try:
        server = start_postgres(workdir)
        try:
            return _measure(broker, server, events, repeats, workdir)
        finally:
            server.cleanup()
    finally:
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Kafka (tansu) -> fraud flow -> Postgres vs the broker.")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    try:
        print(json.dumps(kafka_measurement(args.events, args.repeats, tmp), indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
