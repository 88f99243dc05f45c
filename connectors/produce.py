"""Load events into a Kafka topic: a flow's generator or a JSON Lines/CSV file, one message per event.

Usage::

    python -m connectors.produce FLOW --events N [--seed S] [--file PATH] \\
        --brokers HOST:PORT --topic TOPIC [--partitions P] [--key COLUMN]

Each event becomes one JSON object (the flow's schema fields, ``ts`` as epoch seconds), produced in
generator (or file) order with an idempotent producer, so order is kept per partition. The message
key is the event's value in column ``--key``, by default the entity column of the flow's first
detector (fraud ``tx_id``, ddos ``endpoint``, iot ``device_id``, sentiment ``brand``; no key if
that detector is global), so one entity's events share a partition (``--key card_id`` for a fraud
topic whose card steps run aligned with its partitions: ``SKETCHWATCH_PARTITIONED_BY``). Into an
empty 1-partition topic, offsets equal the generator positions. File records that are not valid
events are skipped and counted.

A missing topic is created with ``--partitions`` partitions (default 1); an existing topic with
another partition count than an explicit ``--partitions`` is an error. ``SKETCHWATCH_KAFKA_*``
variables add librdkafka settings (see :mod:`connectors.kafka`). The tool prints the messages
per second it achieved.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Producer

from connectors.config import Config
from connectors.events import SCHEMAS, EventBatch
from connectors.files import FileSource
from connectors.generators import generator
from connectors.kafka import _producer, _scrub, create_topic, kafka_settings, topic_partitions

__all__ = ["ProduceReport", "entity_column", "event_batches", "main", "produce_events"]


@dataclass(frozen=True)
class ProduceReport:
    """What :func:`produce_events` did: messages produced, file records skipped, seconds taken."""

    messages: int
    skipped: int
    seconds: float

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / max(self.seconds, 1e-9)


def entity_column(flow: str) -> str | None:
    """The entity column of ``flow``'s first detector (the message key), or None.

    >>> entity_column("iot")
    'device_id'
    """
    from dataflows.registry import detectors_for  # the flows import connectors: import late

    specs = detectors_for(flow)(Config.from_env(flow, {}))
    return specs[0].key if specs else None


def event_batches(
    flow: str, events: int | None = None, seed: int = 7, file: str | None = None, batch_size: int = 10_000
) -> tuple[Iterator[EventBatch], list[int]]:
    """The events to load: the generator's (``events``, ``seed``) or the valid events of ``file``.

    Returns the batches and a one-item list counting skipped file records (filled while iterating).
    """
    skipped = [0]
    if file is not None:
        src = FileSource(file, flow, batch_size=batch_size)

        def read() -> Iterator[EventBatch]:
            part = src.build_part("produce", src.list_parts()[0], None)
            try:
                while True:
                    try:
                        items = part.next_batch()
                    except StopIteration:
                        return
                    for item in items:
                        if isinstance(item, EventBatch):
                            yield item
                        else:
                            skipped[0] += 1
            finally:
                part.close()

        return read(), skipped
    if events is None:
        raise ValueError("produce_events: give events (generator) or file")
    return generator(flow)(events, seed, 0, batch_size), skipped


def produce_events(
    flow: str,
    events: int | None,
    seed: int,
    brokers: str,
    topic: str,
    *,
    file: str | None = None,
    partitions: int | None = None,
    key: str | None = None,
    settings: Mapping[str, str] | None = None,
    batch_size: int = 10_000,
    timeout: float = 60.0,
) -> ProduceReport:
    """Produce a flow's generated (or a file's) events to ``topic``, one JSON message per event.

    Parameters
    ----------
    flow : str
        Flow name (schema, generator, key column).
    events : int or None
        Events to generate (ignored when ``file`` is given).
    seed : int
        Generator seed.
    brokers : str
        ``HOST:PORT`` (comma-separated for several).
    topic : str
        Target topic; created with ``partitions`` (default 1) partitions if missing.
    file : str, optional
        A JSON Lines or CSV file of events instead of the generator.
    partitions : int, optional
        Partition count for a new topic; if given, an existing topic must have it.
    key : str, optional
        The column whose value keys each message; by default :func:`entity_column`.
    settings : mapping, optional
        librdkafka settings (e.g. :func:`~connectors.kafka.kafka_settings` of the environment).
    batch_size : int, default 10_000
        Events per generator or file batch.
    timeout : float, default 60
        Seconds allowed for the final flush.

    Returns
    -------
    ProduceReport
        Messages produced, skipped file records and the time taken (topic creation excluded).

    Raises
    ------
    RuntimeError
        A message could not be delivered (the first error and the count are reported).
    """
    settings = dict(settings or {})
    key_col = entity_column(flow) if key is None else _key_column(flow, key)  # before any topic
    existing = topic_partitions(brokers, topic, settings)
    if existing is None:
        create_topic(brokers, topic, partitions or 1, settings)
    elif partitions is not None and existing != partitions:
        raise ValueError(f"Kafka topic {topic!r} exists with {existing} partitions, not {partitions}")
    config: dict[str, Any] = {
        "bootstrap.servers": brokers,
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 1_000_000,
        **settings,
        "enable.idempotence": True,  # retries keep order: offsets follow generator order
        "acks": "all",
    }
    producer = _producer(config)
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    batches, skipped = event_batches(flow, events, seed, file, batch_size)
    n = 0
    started = time.perf_counter()
    for batch in batches:
        n += _produce_batch(producer, topic, batch, key_col, on_delivery)
        producer.poll(0)
    left = producer.flush(timeout)
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(
            f"{len(errors)} of {n} messages to {topic!r} not delivered; "
            f"first: {_scrub(errors[0].str(), config)}"
        )
    if left:
        raise RuntimeError(f"{left} of {n} messages to {topic!r} still undelivered after {timeout} s")
    return ProduceReport(n, skipped[0], seconds)


def _key_column(flow: str, key: str) -> str:
    names = SCHEMAS[flow].names
    if key not in names:
        raise ValueError(f"produce_events: key {key!r} is not a column of {flow} events {names}")
    return key


def _produce_batch(
    producer: Producer, topic: str, batch: EventBatch, key_col: str | None, on_delivery: Any
) -> int:
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    keys: Sequence[Any] = batch[key_col].tolist() if key_col else [None] * len(batch)
    produce = producer.produce
    n = 0
    for record, key in zip(batch.records(), keys, strict=True):
        value = dumps(record).encode()
        k = None if key is None else str(key).encode()
        while True:
            try:
                produce(topic, value, k, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.05)
        n += 1
    return n


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m connectors.produce", description="Load a flow's events into a Kafka topic."
    )
    parser.add_argument("flow", choices=("fraud", "ddos", "iot", "sentiment"))
    parser.add_argument("--events", type=int, default=None, help="events to generate")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    parser.add_argument("--file", default=None, help="JSON Lines or CSV file instead of the generator")
    parser.add_argument("--brokers", required=True, help="HOST:PORT")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, default=None, help="partitions of a new topic (1)")
    parser.add_argument("--key", default=None, help="message key column (the first detector's entity)")
    args = parser.parse_args(argv)
    if args.file is None and (args.events is None or args.events < 0):
        parser.error("give --events N (N >= 0) or --file PATH")
    try:
        report = produce_events(
            args.flow,
            args.events,
            args.seed,
            args.brokers,
            args.topic,
            file=args.file,
            partitions=args.partitions,
            key=args.key,
            settings=kafka_settings(os.environ),
        )
    except (RuntimeError, ValueError, OSError) as e:
        print(f"connectors.produce: {e}", file=sys.stderr)
        return 1
    extra = f", {report.skipped:,} invalid file records skipped" if report.skipped else ""
    print(
        f"produced {report.messages:,} {args.flow} events to {args.topic!r} in {report.seconds:.2f} s: "
        f"{report.rate:,.0f} messages/s{extra}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
