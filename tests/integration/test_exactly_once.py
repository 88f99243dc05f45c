"""Production path end to end against real services: Kafka (tansu) in, Postgres and Kafka out.

Every test compares with the embedded run of the same events (generator in, SQLite out): a
1-partition topic loaded in generator order gives offsets equal to generator positions, so
the alert ids must be identical, and each must be stored exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from connectors.produce import produce_events
from connectors.sql import read_alerts
from dataflows.evaluate import run_flow
from tests.services.kafka import create_topic

REPO = Path(__file__).resolve().parents[2]
EVENTS = 200_000
SEED = 5
FLOW = "fraud"


def _reference(tmp: Path, events: int) -> set[str]:
    url = f"sqlite:///{tmp / 'reference.db'}"
    run_flow(
        FLOW, {"SKETCHWATCH_EVENTS": str(events), "SKETCHWATCH_SEED": str(SEED), "SKETCHWATCH_SINKS": url}
    )
    return {a["alert_id"] for a in read_alerts(url)}


def _kafka_alert_ids(bootstrap: str, topic: str) -> list[str]:
    """Every alert id in ``topic`` (read_committed; resume markers carry no id), duplicates kept."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{time.monotonic_ns()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    ids: list[str] = []
    done: set[int] = set()
    deadline = time.monotonic() + 60
    while len(done) < len(partitions) and time.monotonic() < deadline:
        for msg in consumer.consume(10_000, 0.2):
            if msg.error() is None:
                headers = dict(msg.headers() or [])
                if "alert_id" in headers:
                    ids.append(headers["alert_id"].decode())
            elif msg.error().code() == KafkaError._PARTITION_EOF:
                done.add(msg.partition())
    consumer.close()
    assert len(done) == len(partitions), "could not read the alerts topic to its end"
    return ids


class Stack:
    """A topic loaded with the events, a fresh alerts topic and database, a recovery store."""

    def __init__(
        self,
        tmp: Path,
        bootstrap: str,
        pg_url: str,
        name: str,
        events: int,
        partitions: int = 1,
        key: str | None = None,
    ) -> None:
        self.tmp, self.bootstrap, self.events = tmp, bootstrap, events
        self.source_topic, self.alerts_topic = f"{name}-events", f"{name}-alerts"
        create_topic(bootstrap, self.source_topic, partitions)
        create_topic(bootstrap, self.alerts_topic, 3)
        produce_events(FLOW, events, SEED, bootstrap, self.source_topic, key=key)
        self.pg_url = pg_url.rsplit("/", 1)[0] + "/" + name
        _create_database(pg_url, name)
        self.recovery = _recovery_store(tmp / "recovery")

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "SKETCHWATCH_SOURCE": f"kafka://{self.bootstrap}/{self.source_topic}?tail=false",
            "SKETCHWATCH_SINKS": f"{self.pg_url},kafka://{self.bootstrap}/{self.alerts_topic}",
            "SKETCHWATCH_SEED": str(SEED),
            "BYTEWAX_RECOVERY_DIRECTORY": str(self.recovery),
            "BYTEWAX_SNAPSHOT_INTERVAL": "1",
            "BYTEWAX_RECOVERY_BACKUP_INTERVAL": "0",
            **extra,
        }

    def start(self, workers: int = 1, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", f"dataflows.{FLOW}", "-w", str(workers)],
            env=self.env(**extra),
            cwd=self.tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def kill_mid_run(self, times: int, rng: random.Random, **extra: str) -> None:
        """Start and SIGKILL the flow ``times`` times, each after 1.5-4 s of running."""
        kills = 0
        while kills < times:
            # small source batches keep each run busy long enough to be killed mid-stream
            proc = self.start(SKETCHWATCH_BATCH="200", **extra)
            time.sleep(rng.uniform(1.5, 4.0))
            if proc.poll() is not None:
                break  # finished before the kill: the remaining runs would find nothing to do
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        assert kills >= times, f"the run finished before {times} kills; give it more events"

    def run_to_end(self, workers: int = 1, **extra: str) -> str:
        proc = self.start(workers, **extra)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        return out

    def check(self, expected: set[str]) -> None:
        pg = Counter(a["alert_id"] for a in read_alerts(self.pg_url))
        assert set(pg) == expected, f"missing {len(expected - set(pg))}, extra {len(set(pg) - expected)}"
        assert max(pg.values()) == 1
        kafka = Counter(_kafka_alert_ids(self.bootstrap, self.alerts_topic))
        assert set(kafka) == expected, (
            f"missing {len(expected - set(kafka))}, extra {len(set(kafka) - expected)}"
        )
        duplicated = {k: v for k, v in kafka.items() if v > 1}
        assert not duplicated, f"{len(duplicated)} alerts written twice to Kafka"


def _recovery_store(path: Path) -> Path:
    # as the README sets one up (64 KiB pages; the Kafka tests use Bytewax's own files)
    subprocess.run([sys.executable, "-m", "recovery", "init", str(path), "--partitions", "4"], check=True)
    return path


def _create_database(pg_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    return _reference(tmp_path_factory.mktemp("reference"), EVENTS)


@pytest.fixture
def stack(
    request: pytest.FixtureRequest, tmp_path: Path, kafka_broker: Any, postgres_server: Any
) -> Iterator[Stack]:
    name = request.node.name.replace("[", "_").replace("]", "").lower()[:40]
    yield Stack(tmp_path, kafka_broker.bootstrap, postgres_server.url, name, EVENTS)


def test_kafka_to_postgres_and_kafka_equals_the_embedded_run(stack: Stack, expected: set[str]) -> None:
    out = stack.run_to_end()
    assert f"{EVENTS:,} events processed" in out
    stack.check(expected)


def test_five_sigkills_then_resume_lose_and_duplicate_nothing(stack: Stack, expected: set[str]) -> None:
    stack.kill_mid_run(5, random.Random(SEED))
    stack.run_to_end()
    stack.check(expected)


def test_exception_in_a_step_then_resume_with_two_workers(stack: Stack, expected: set[str]) -> None:
    proc = stack.start(SKETCHWATCH_CHAOS_FAIL_AT=str(EVENTS // 2))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "injected failure" in out
    stack.run_to_end(workers=2)
    stack.check(expected)


def test_postgres_down_for_ten_seconds_mid_run(
    stack: Stack, expected: set[str], postgres_server: Any
) -> None:
    proc = stack.start()
    time.sleep(2.0)
    postgres_server.stop()
    time.sleep(10.0)
    postgres_server.start()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    stack.check(expected)


def test_steps_aligned_with_a_topic_keyed_by_card_survive_kills_and_two_workers(
    tmp_path: Path, kafka_broker: Any, postgres_server: Any
) -> None:
    # 4 partitions keyed by card: the card and duplicate steps keep their state per partition
    # (SKETCHWATCH_PARTITIONED_BY). Killed twice, then resumed on 2 workers, the flow stores
    # exactly what the default routing by hash finds in one uninterrupted run of the topic.
    stack = Stack(tmp_path, kafka_broker.bootstrap, postgres_server.url, "aligned", EVENTS, 4, "card_id")
    by_hash = f"sqlite:///{tmp_path / 'by_hash.db'}"
    store = _recovery_store(tmp_path / "by_hash_recovery")
    stack.run_to_end(SKETCHWATCH_SINKS=by_hash, BYTEWAX_RECOVERY_DIRECTORY=str(store))
    expected = {a["alert_id"] for a in read_alerts(by_hash)}
    assert {a["detector"] for a in read_alerts(by_hash)} >= {"duplicate_tx", "amount_outlier"}
    aligned = {"SKETCHWATCH_PARTITIONED_BY": "card_id,tx_id"}
    stack.kill_mid_run(2, random.Random(SEED + 1), **aligned)
    stack.run_to_end(workers=2, **aligned)
    stack.check(expected)
