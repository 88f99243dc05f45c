"""Kafka in and out: events from a topic, alerts to a topic exactly once.

Input
-----
:func:`kafka_input` reads ``SKETCHWATCH_SOURCE=kafka://HOST:PORT/TOPIC`` with
:class:`KafkaEventSource`: one input partition per Kafka partition, starting at the earliest
offset, the next offset of every partition kept in Bytewax's recovery store (the source uses
``assign()``, no consumer group, nothing is committed to Kafka). Each poll turns what librdkafka
has fetched for a partition into one :class:`~connectors.events.EventBatch` and
:class:`~connectors.events.DeadLetter` objects with :func:`connectors.parsing.parse_lines`, with
no Python object per message in between: a message value is one JSON event, an event's
``position`` is its message offset, a dead letter's ``source`` is ``kafka:<topic>/<partition>``.
Each ``EventBatch`` comes from one partition in offset order (positions of different partitions
overlap: they are offsets of different logs). A message without a value (a tombstone) or whose
value is not a valid event is a dead letter; records in = events + dead letters still holds.
(:func:`parse_messages` does the same for the items of Bytewax's own ``KafkaSource``.)

Consume errors are handled where they are read:

- an error attached to a record (corrupt or undecodable message, with an offset) becomes a dead
  letter at that offset with reason ``Kafka error: ...`` (the source has moved past it);
- a retriable client error without a record (broker down, transport, timeout) is logged as a
  warning and dropped: librdkafka reconnects and refetches by itself, nothing is skipped;
- anything else (fatal errors, unknown topic or partition, authorisation, offset out of range)
  raises ``RuntimeError``, so the flow stops instead of silently skipping data. A resumed flow
  restarts from its last snapshot. The source sets ``auto.offset.reset=error``: if retention
  deleted offsets the flow has not read yet, it stops with that error instead of jumping to the
  end of the partition (set ``SKETCHWATCH_KAFKA_AUTO_OFFSET_RESET=earliest`` to accept the gap).

Settings
--------
Every ``SKETCHWATCH_KAFKA_<NAME>`` variable becomes the librdkafka setting ``<name>`` (lower case,
``_`` replaced by ``.``), e.g. ``SKETCHWATCH_KAFKA_SECURITY_PROTOCOL=SASL_SSL`` sets
``security.protocol``; see :func:`kafka_settings`. They apply to the source, the alert sink and
the producer tool (``python -m connectors.produce``). Values of keys naming a password, secret,
key, token or JAAS config never appear in logs or error messages (:func:`redacted`).

Output: exactly-once alerts
---------------------------
:class:`KafkaAlertSink` is a Bytewax :class:`~bytewax.outputs.FixedPartitionedSink` with one sink
partition per Kafka partition of the alerts topic. It writes each :class:`~operators.alerts.Alert`
as a JSON object (:meth:`Alert.to_record` with ``evidence`` as an object) keyed by the alert's
entity with a header ``alert_id``; other items (samples, dead letters) are ignored.
:func:`alert_output` keys a stream by entity and attaches the sink; alerts are routed to
partitions by :func:`sketches.hashing.hash64` of the entity, so one entity's alerts stay in
order in one partition.

Bytewax is at-least-once: a resumed flow replays everything after its last snapshot, so alerts
written between that snapshot and the crash are emitted a second time. The sink removes those
duplicates with this protocol, per Kafka partition ``p``:

1. ``write_batch`` produces the batch's alerts to ``p`` with an idempotent producer, flushes and
   checks every delivery report; a failed delivery raises, so Bytewax never snapshots past an
   alert that is not in Kafka. Delivery reports give the next offset of ``p``.
2. ``snapshot()`` flushes and returns ``(next_offset, pending)``: the end of ``p`` after every
   write so far, and the ids still expected from a replay (below; usually empty).
3. On resume from ``(S, pending)``, the partition reads ``p`` from ``S`` to its current end with
   ``isolation.level=read_committed`` and collects the ``alert_id`` headers found there. Those
   alerts were written after the snapshot, so they belong to epochs the flow is about to replay.
   Together with ``pending`` they form the skip set. While replaying, an alert whose id is in the
   skip set is not written again and its id leaves the set (it has now been seen again); all
   other alerts are written. Ids not yet seen again when the next snapshot is taken are carried in
   it as ``pending``, so a second crash during the replay cannot lose them.

Why it is correct: Bytewax writes the items of an epoch, then snapshots the sink, then writes the
next epoch. So at a snapshot, ``p`` holds exactly the alerts of the epochs up to it (each once)
plus ``pending``, alerts of later epochs written ahead; everything after offset ``S`` belongs to
later epochs too. The replay re-emits exactly the alerts of the later epochs. Each of them is
either already in ``p`` (at an offset >= ``S`` or in ``pending``: skipped once) or not (written
once). By induction the invariant holds at every later snapshot, and the partition ends up with
every alert exactly once.

Assumptions:

- deterministic replay: a replay emits the same alerts with the same ids (sketchwatch's alert ids
  hash flow, detector, entity, window and triggering event; decisions use event time only), and
  routes them to the same partition (fixed partition count of the alerts topic; the routing hash is
  stable across processes and versions);
- a single writer per Kafka partition: only this sink (one step of one flow) writes the alerts
  topic, and a crashed process is gone before its replacement reads ``p``. There is no
  ``transactional.id`` fencing of a zombie writer;
- an idempotent producer (``enable.idempotence=true`` and ``acks=all`` are forced): librdkafka's
  internal retries never duplicate or reorder a message;
- offsets below ``S`` must not be deleted by retention while a snapshot refers to them (reading
  from ``S`` fails loudly otherwise).

Crashes before the first committed snapshot. A run that starts without a resume state cannot
know what an earlier incarnation wrote before it died without ever snapshotting. So every
partition that resumes from a committed state first writes a *marker* message (no key, empty
value, header ``sketchwatch_marker``): everything before it is covered by that state. A partition
that starts without a state reads ``p`` from the latest marker (or from the beginning if there is
none) and puts the alert ids it finds into the skip set, exactly as on a resume. Those alerts were
written by incarnations that never committed a snapshot, so this run replays them all from its
start; each is skipped once. Consumers of the alerts topic ignore messages without an
``alert_id`` header (the markers). After a deliberate start over (``python -m recovery reset``),
point the flow at a fresh alerts topic: the new run dedups only against alerts after the latest
marker.

The sink does not create the alerts topic: the partition count fixes the sink's parallelism and
the routing for the life of a recovery store, so it is an operator's decision. A missing topic
stops the flow at start-up with a clear error; :func:`create_topic` creates one. (Bytewax's
``KafkaSource`` lists partitions with a topic-specific metadata request, which auto-creates the
input topic on brokers that allow it; the sink lists all topics instead, which creates nothing.)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final, TypeVar, cast
from urllib.parse import urlsplit

import bytewax.operators as op
import numpy as np
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka import Message as KafkaRecord
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from connectors.config import Config
from connectors.events import DeadLetter, EventBatch, Sample
from connectors.parsing import parse_lines
from connectors.sources import PartitionProgress
from operators.alerts import Alert
from sketches.hashing import hash64

__all__ = [
    "ENV_PREFIX",
    "SECRET_WORDS",
    "KafkaAlertSink",
    "KafkaEventSource",
    "SinkState",
    "alert_output",
    "alert_value",
    "create_topic",
    "kafka_input",
    "kafka_settings",
    "parse_kafka_url",
    "parse_messages",
    "read_partition",
    "redacted",
    "topic_partitions",
]

log = logging.getLogger(__name__)

ENV_PREFIX: Final = "SKETCHWATCH_KAFKA_"
"""Environment variables with this prefix are librdkafka settings (see :func:`kafka_settings`)."""

SECRET_WORDS: Final = ("password", "secret", "key", "token", "jaas")
"""A setting whose name contains one of these words has its value hidden by :func:`redacted`."""

SinkState = tuple[int, tuple[str, ...]]
"""Resume state of a :class:`KafkaAlertSink` partition: ``(next offset, pending alert ids)``."""

_HIDDEN: Final = "***"
_RECORD_ERRORS: Final = frozenset(
    {
        ConfluentKafkaError._BAD_MSG,
        ConfluentKafkaError.INVALID_MSG,
        ConfluentKafkaError.INVALID_RECORD,
        ConfluentKafkaError._KEY_DESERIALIZATION,
        ConfluentKafkaError._VALUE_DESERIALIZATION,
    }
)
_TRANSIENT: Final = frozenset(
    {
        ConfluentKafkaError._TRANSPORT,
        ConfluentKafkaError._ALL_BROKERS_DOWN,
        ConfluentKafkaError._TIMED_OUT,
        ConfluentKafkaError._RESOLVE,
        ConfluentKafkaError.LEADER_NOT_AVAILABLE,
        ConfluentKafkaError.NOT_LEADER_FOR_PARTITION,
        ConfluentKafkaError.REQUEST_TIMED_OUT,
        ConfluentKafkaError.NETWORK_EXCEPTION,
    }
)

_C = TypeVar("_C", Producer, Consumer, AdminClient)

Message = KafkaSourceMessage[bytes | None, bytes | None]
SourceItem = Message | KafkaError[bytes | None, bytes | None]


# --------------------------------------------------------------------------------------------
# Settings


def kafka_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The librdkafka settings in ``env``: ``SKETCHWATCH_KAFKA_<NAME>`` -> ``<name>``.

    ``<NAME>`` is lower-cased and each ``_`` becomes ``.``; values are kept as they are (no
    stripping: a password may end in a space). Variables with an empty name are ignored.

    Parameters
    ----------
    env : mapping of str to str
        Environment variables, e.g. ``os.environ`` or :attr:`Config.env`.

    Returns
    -------
    dict of str to str
        Settings to pass to a librdkafka client (``add_config``).

    Examples
    --------
    >>> env = {"SKETCHWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SKETCHWATCH_SEED": "3",
    ...        "SKETCHWATCH_KAFKA_SASL_PASSWORD": "hunter2"}
    >>> kafka_settings(env)
    {'security.protocol': 'SASL_SSL', 'sasl.password': 'hunter2'}
    """
    out: dict[str, str] = {}
    for var, value in env.items():
        if var.startswith(ENV_PREFIX) and len(var) > len(ENV_PREFIX):
            out[var[len(ENV_PREFIX) :].lower().replace("_", ".")] = value
    return out


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def redacted(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``settings`` safe to log: values of secret-looking keys become ``***``.

    A key is secret if it contains ``password``, ``secret``, ``key``, ``token`` or ``jaas``
    (case-insensitive), e.g. ``sasl.password``, ``ssl.key.password``, ``sasl.jaas.config``,
    ``sasl.oauthbearer.client.secret``.

    Examples
    --------
    >>> redacted({"sasl.username": "svc", "sasl.password": "hunter2", "ssl.key.pem": "-----"})
    {'sasl.username': 'svc', 'sasl.password': '***', 'ssl.key.pem': '***'}
    """
    return {k: (_HIDDEN if _is_secret(k) else v) for k, v in settings.items()}


def _scrub(text: str, settings: Mapping[str, Any]) -> str:
    """``text`` with the value of every secret setting replaced by ``***``."""
    for k, v in settings.items():
        s = str(v)
        if _is_secret(k) and s:
            text = text.replace(s, _HIDDEN)
    return text


def _client_error(what: str, exc: BaseException, settings: Mapping[str, Any]) -> RuntimeError:
    return RuntimeError(_scrub(f"{what}: {exc}", settings))


def _client(kind: type[_C], what: str, settings: dict[str, Any]) -> _C:
    """``kind(settings)``; a bad setting raises RuntimeError naming it, secrets hidden."""
    try:
        return kind(settings)
    except (KafkaException, ValueError, TypeError) as e:
        raise _client_error(f"cannot create a Kafka {what} with {redacted(settings)}", e, settings) from None


def _producer(settings: dict[str, Any]) -> Producer:
    return _client(Producer, "producer", settings)


def _consumer(settings: dict[str, Any]) -> Consumer:
    return _client(Consumer, "consumer", settings)


def _admin(brokers: str, settings: Mapping[str, str] | None) -> tuple[AdminClient, dict[str, Any]]:
    config: dict[str, Any] = {"bootstrap.servers": brokers, **(settings or {})}
    return _client(AdminClient, "admin client", config), config


def parse_kafka_url(url: str) -> tuple[str, str]:
    """``kafka://HOST:PORT/TOPIC`` -> ``("HOST:PORT", "TOPIC")``; ValueError if malformed.

    Examples
    --------
    >>> parse_kafka_url("kafka://127.0.0.1:9092/alerts")
    ('127.0.0.1:9092', 'alerts')
    """
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    topic = parts.path.lstrip("/")
    if parts.scheme != "kafka" or not parts.hostname or port is None or not topic or "/" in topic:
        raise ValueError(f"expected kafka://HOST:PORT/TOPIC, got {url!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}", topic


# --------------------------------------------------------------------------------------------
# Topics


def topic_partitions(
    brokers: str, topic: str, settings: Mapping[str, str] | None = None, timeout: float = 30.0
) -> int | None:
    """The number of partitions of ``topic``, or None if it does not exist (creates nothing)."""
    admin, config = _admin(brokers, settings)
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as e:
        raise _client_error(f"cannot list Kafka topics on {brokers}", e, config) from None
    tm = md.topics.get(topic)
    if tm is None:
        return None
    if tm.error is not None:
        raise RuntimeError(f"Kafka topic {topic!r} on {brokers}: {tm.error.str()}")
    return len(tm.partitions)


def create_topic(
    brokers: str,
    topic: str,
    partitions: int,
    settings: Mapping[str, str] | None = None,
    replication: int = 1,
    timeout: float = 30.0,
) -> bool:
    """Create ``topic`` with ``partitions`` partitions unless it exists; True if created.

    Raises ``ValueError`` if the topic exists with another partition count and RuntimeError if the
    broker refuses. Works against Apache Kafka and tansu (CreateTopics request).
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    existing = topic_partitions(brokers, topic, settings, timeout)
    if existing is None:
        admin, config = _admin(brokers, settings)
        future = admin.create_topics([NewTopic(topic, partitions, replication)], operation_timeout=timeout)[
            topic
        ]
        try:
            future.result(timeout)
            return True
        except KafkaException as e:
            err = e.args[0] if e.args else None
            if not (
                isinstance(err, ConfluentKafkaError)
                and err.code() == ConfluentKafkaError.TOPIC_ALREADY_EXISTS
            ):
                raise _client_error(f"cannot create Kafka topic {topic!r} on {brokers}", e, config) from None
        existing = topic_partitions(brokers, topic, settings, timeout)
    if existing != partitions:
        raise ValueError(f"Kafka topic {topic!r} exists with {existing} partitions, not {partitions}")
    return False


# --------------------------------------------------------------------------------------------
# Input


def kafka_input(
    flow: Dataflow,
    step_id: str,
    config: Config,
    *,
    tail: bool | None = None,
    settings: Mapping[str, str] | None = None,
    aligned: tuple[str, ...] = (),
) -> Stream[EventBatch | DeadLetter]:
    """Events of ``config``'s Kafka source (``SKETCHWATCH_SOURCE=kafka://HOST:PORT/TOPIC``).

    Adds the input step ``step_id`` (Bytewax's ``KafkaSource``; its resume state is each
    partition's next offset) and a parse step ``<step_id>_parse``. See the module docstring for
    positions, dead letters and how consume errors are handled.

    Parameters
    ----------
    flow : Dataflow
        The dataflow to add the steps to.
    step_id : str
        Id of the input step (keep it stable: the recovery store keys offsets by it).
    config : Config
        The flow's configuration; ``config.source`` must be of kind ``kafka``. ``config.flow``
        picks the event schema, ``config.batch`` the most messages per poll and partition, and
        ``SKETCHWATCH_KAFKA_*`` variables in ``config.env`` add librdkafka settings.
    tail : bool, optional
        Keep waiting for new messages at the end of the partitions (a streaming job). False stops
        each partition at its end when it is reached (finite runs, tests). By default
        ``config.source.tail`` (``?tail=false`` in the URL), else True.
    settings : mapping, optional
        librdkafka settings; by default :func:`kafka_settings` of ``config.env``.
    aligned : tuple of str, default ()
        Columns whose steps are aligned with the topic's partitions (saved with the offsets;
        see :class:`~connectors.sources.PartitionProgress`).

    Returns
    -------
    Stream of EventBatch or DeadLetter
        Per Kafka partition, in offset order.
    """
    spec = config.source
    if spec.kind != "kafka":
        raise ValueError(f"kafka_input: SKETCHWATCH_SOURCE is {spec.kind!r}, not kafka://HOST:PORT/TOPIC")
    user = dict(kafka_settings(config.env) if settings is None else settings)
    source = KafkaEventSource(
        config.flow,
        spec.brokers,
        spec.topic,
        tail=bool(getattr(spec, "tail", True)) if tail is None else tail,
        batch_size=config.batch,
        settings=user,
    )
    return op.input(step_id, flow, PartitionProgress(source, config.flow, config.idle_partition, aligned))


class KafkaEventSource(FixedPartitionedSource[EventBatch | DeadLetter, int]):
    """A Kafka topic as sketchwatch events: one input partition per Kafka partition.

    Each poll takes what librdkafka has fetched (up to ``batch_size`` messages) and parses it
    in one go into an :class:`~connectors.events.EventBatch` and dead letters, without a
    Python object per message in between (Bytewax's ``KafkaSource`` builds one, which costs
    more than parsing). The resume state is the partition's next offset; without one it starts
    at the earliest offset. With ``tail=False`` a partition ends when it reaches its end.

    Parameters
    ----------
    flow : str
        Event schema.
    brokers : str
        ``HOST:PORT[,HOST:PORT...]``.
    topic : str
        The topic.
    tail : bool, default True
        Keep waiting for new messages at the end of a partition.
    batch_size : int, default 100000
        Most messages per poll.
    settings : mapping, optional
        librdkafka settings (``SKETCHWATCH_KAFKA_*``); they override the defaults here.
    """

    def __init__(
        self,
        flow: str,
        brokers: str,
        topic: str,
        *,
        tail: bool = True,
        batch_size: int = 100_000,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.flow, self.brokers, self.topic = flow, brokers, topic
        self.tail, self.batch_size = tail, batch_size
        self.settings = dict(settings or {})

    def list_parts(self) -> list[str]:
        admin, config = _admin(self.brokers, self.settings)
        # A topic-specific request, as Bytewax does: auto-creates the topic where allowed.
        try:
            tm = admin.list_topics(self.topic, timeout=30).topics[self.topic]
        except KafkaException as e:
            raise _client_error(
                f"cannot list partitions of Kafka topic {self.topic!r} on {self.brokers}", e, config
            ) from None
        if tm.error is not None:
            raise RuntimeError(f"error listing partitions for Kafka topic {self.topic!r}: {tm.error.str()}")
        return [f"{i}-{self.topic}" for i in sorted(tm.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _EventPartition:
        index, topic = for_part.split("-", 1)
        if topic != self.topic:
            raise RuntimeError(f"cannot resume Kafka partition {for_part!r} on topic {self.topic!r}")
        config: dict[str, Any] = {
            "bootstrap.servers": self.brokers,
            "group.id": "sketchwatch-unused",  # assign(), no group: offsets live in the snapshots
            "enable.auto.commit": False,
            "enable.partition.eof": not self.tail,
            "auto.offset.reset": "error",
            # Prefetch several batches (librdkafka fetches on its own threads while the flow
            # works); memory stays bounded by queued.max.messages.kbytes (64 MiB by default).
            # On tansu, 1M events: ~170k msgs/s with librdkafka's defaults, ~450k with these.
            "queued.min.messages": min(10_000_000, max(100_000, 5 * self.batch_size)),
            "fetch.max.bytes": 32 << 20,
            "max.partition.fetch.bytes": 16 << 20,
            **self.settings,
        }
        start = OFFSET_BEGINNING if resume_state is None else resume_state
        return _EventPartition(self, _consumer(config), int(index), start)


class _EventPartition(StatefulSourcePartition[EventBatch | DeadLetter, int]):
    def __init__(self, source: KafkaEventSource, consumer: Consumer, partition: int, start: int) -> None:
        self._src, self._consumer, self._next = source, consumer, start
        self._name = f"kafka:{source.topic}/{partition}"
        self._eof = False
        consumer.assign([TopicPartition(source.topic, partition, start)])

    def next_batch(self) -> list[EventBatch | DeadLetter]:
        if self._eof:
            raise StopIteration
        msgs = self._consumer.consume(self._src.batch_size, _POLL_SECONDS)
        if not msgs:
            return []
        # The common case in three C-speed passes; any error or tombstone: message by message.
        # (Errors first: value() of an error event, e.g. end of partition, is not safe to call;
        # compare errors by identity: KafkaError == None leaves a TypeError set in the C module.)
        if not any(m.error() is not None for m in msgs):
            values = [m.value() for m in msgs]
            if None not in values:
                offsets = cast(list[int], [m.offset() for m in msgs])
                self._next = max(self._next, offsets[-1] + 1)
                batch = _parse_partition(self._src.flow, self._name, cast(list[bytes], values), offsets)
                return _emit(*batch, [])
        return self._one_by_one(msgs)

    def _one_by_one(self, msgs: list[KafkaRecord]) -> list[EventBatch | DeadLetter]:
        values: list[bytes] = []
        offsets: list[int] = []
        dead: list[DeadLetter] = []
        flow, topic = self._src.flow, self._src.topic
        for msg in msgs:
            err, offset = msg.error(), msg.offset()
            if err is not None:
                if err.code() == ConfluentKafkaError._PARTITION_EOF:
                    self._eof = True  # the messages before it are still emitted
                    continue
                letter = _error_letter(flow, topic, err, offset, msg.partition(), msg.topic(), msg.value())
                if letter is not None:
                    dead.append(letter)
            elif offset is not None:
                value = msg.value()
                if value is None:
                    dead.append(_tombstone(flow, self._name, offset))
                else:
                    values.append(value)
                    offsets.append(offset)
            if offset is not None and offset >= 0:
                self._next = max(self._next, offset + 1)
        return _emit(*_parse_partition(flow, self._name, values, offsets), dead)

    def snapshot(self) -> int:
        return self._next

    def close(self) -> None:
        self._consumer.close()


_POLL_SECONDS: Final = 0.001
"""How long a poll waits for messages when none are fetched yet (Bytewax polls again at once)."""


def parse_messages(flow: str, topic: str, items: Sequence[SourceItem]) -> list[EventBatch | DeadLetter]:
    """Kafka messages to events and dead letters, one ``EventBatch`` per partition.

    Parameters
    ----------
    flow : str
        Flow name (event schema).
    topic : str
        Topic name, for dead letters' ``source`` when a message lacks it.
    items : sequence of KafkaSourceMessage or KafkaError
        What ``KafkaSource`` emitted (in offset order per partition).

    Returns
    -------
    list of EventBatch or DeadLetter
        Per partition in order of first appearance: its events (if any), then its dead letters.

    Raises
    ------
    RuntimeError
        A consume error that is neither attached to a record nor retriable (see the module
        docstring).

    Examples
    --------
    >>> from bytewax.connectors.kafka import KafkaSourceMessage as M
    >>> ok = b'{"brand":"acme","sentiment":0.5,"ts":1}'
    >>> out = parse_messages("sentiment", "t", [M(None, ok, "t", offset=4, partition=0),
    ...                                         M(None, b"{oops", "t", offset=5, partition=0)])
    >>> out[0].positions.tolist(), out[1].source, out[1].position
    ([4], 'kafka:t/0', 5)
    """
    groups: dict[int, list[Message]] = {}
    errors: dict[int, list[DeadLetter]] = {}
    for item in items:
        if isinstance(item, KafkaError):
            msg = item.msg
            part = msg.partition if msg.partition is not None else -1
            value = msg.value if isinstance(msg.value, bytes) else None
            letter = _error_letter(flow, topic, item.err, msg.offset, part, msg.topic, value)
            if letter is not None:
                errors.setdefault(part, []).append(letter)
            continue
        part = item.partition if item.partition is not None else -1
        groups.setdefault(part, []).append(item)
    out: list[EventBatch | DeadLetter] = []
    for part in dict.fromkeys([*groups, *errors]):
        msgs = groups.get(part, [])
        name = msgs[0].topic if msgs and msgs[0].topic else topic
        source = f"kafka:{name}/{part}"
        dead = [_tombstone(flow, source, m.offset) for m in msgs if m.value is None]
        kept = [m for m in msgs if m.value is not None]
        values = [m.value for m in kept if m.value is not None]
        offsets = [-1 if m.offset is None else m.offset for m in kept]
        out.extend(_emit(*_parse_partition(flow, source, values, offsets), dead + errors.get(part, [])))
    return out


def _tombstone(flow: str, source: str, offset: int | None) -> DeadLetter:
    return DeadLetter(
        flow, source, -1 if offset is None else offset, "Kafka message without a value (tombstone)", b""
    )


def _emit(
    batch: EventBatch | None, bad: list[DeadLetter], other: list[DeadLetter]
) -> list[EventBatch | DeadLetter]:
    """A partition's events (if any), then its dead letters by position."""
    out: list[EventBatch | DeadLetter] = [] if batch is None else [batch]
    return out + sorted(bad + other, key=_position)


def _position(d: DeadLetter) -> int:
    return d.position


def _parse_partition(
    flow: str, source: str, values: list[bytes], offsets: list[int]
) -> tuple[EventBatch | None, list[DeadLetter]]:
    """Message values (one JSON event each) at ``offsets`` to events and dead letters."""
    if not values:
        return None, []
    batch, bad = parse_lines(flow, values, 0, source)
    offs = np.asarray(offsets, dtype=np.int64)
    if batch is not None:
        batch.positions = offs[batch.positions]
    return batch, [replace(d, position=int(offs[d.position])) for d in bad]


def _error_letter(
    flow: str,
    topic: str,
    err: ConfluentKafkaError,
    offset: int | None,
    partition: int | None,
    msg_topic: str | None,
    value: bytes | None,
) -> DeadLetter | None:
    """A consume error: a dead letter if it is attached to a record, None if librdkafka retries
    by itself (logged), else ``RuntimeError`` (see the module docstring)."""
    text = err.str()
    if not err.fatal() and offset is not None and offset >= 0 and err.code() in _RECORD_ERRORS:
        source = f"kafka:{msg_topic or topic}/{-1 if partition is None else partition}"
        return DeadLetter(flow, source, offset, f"Kafka error: {text}", value or b"")
    if not err.fatal() and (err.retriable() or err.code() in _TRANSIENT):
        log.warning("Kafka consume error on topic %r (retried by librdkafka): %s", topic, text)
        return None
    raise RuntimeError(f"Kafka consume error on topic {topic!r}: {text}")


# --------------------------------------------------------------------------------------------
# Output


def alert_value(alert: Alert) -> bytes:
    """An alert as the JSON message value: its ``alerts`` row with ``evidence`` as an object.

    Examples
    --------
    >>> a = Alert("fraud", "duplicate_tx", "tx9", 10.0, 2.0, 1.0, trigger="tx9", evidence={"n": 2})
    >>> json.loads(alert_value(a))["evidence"]
    {'n': 2}
    """
    record = alert.to_record()
    record["evidence"] = json.loads(record["evidence"])
    return json.dumps(record, separators=(",", ":")).encode()


def _keyed_alert(item: Any) -> tuple[str, Alert] | None:
    return (item.entity, item) if isinstance(item, Alert) else None


def alert_output(step_id: str, up: Stream[Any], sink: KafkaAlertSink) -> None:
    """Write the alerts of ``up`` to ``sink``, keyed by entity (other items are dropped).

    Adds a step ``<step_id>_key`` (keep only alerts, key them by entity) and the output step
    ``step_id`` (keep it stable: the recovery store keys the sink's offsets by it).
    """
    keyed: Stream[tuple[str, Alert]] = op.filter_map(f"{step_id}_key", up, _keyed_alert)
    op.output(step_id, keyed, sink)


SinkItem = Alert | Sample | DeadLetter


class KafkaAlertSink(FixedPartitionedSink[SinkItem, SinkState]):
    """Alerts to a Kafka topic, each exactly once across crash and resume.

    One sink partition per Kafka partition of ``topic``; see the module docstring for the message
    format and the resume protocol. Use :func:`alert_output` to attach it to a stream of alerts
    (the sink consumes ``(entity, item)`` pairs; non-alert items are ignored).

    Parameters
    ----------
    brokers : str or sequence of str
        ``HOST:PORT`` of one or more brokers.
    topic : str
        The alerts topic; it must exist (see :func:`create_topic`).
    add_config : mapping, optional
        Extra librdkafka settings (e.g. :func:`kafka_settings` of the environment), for the
        producer and the consumer that reads a partition back on resume.
        ``enable.idempotence=true`` and ``acks=all`` are always set.
    timeout : float, default 30
        Seconds allowed for listing partitions, flushing a batch and reading back on resume.
    """

    def __init__(
        self,
        brokers: str | Sequence[str],
        topic: str,
        add_config: Mapping[str, str] | None = None,
        *,
        timeout: float = 30.0,
    ) -> None:
        self.brokers = brokers if isinstance(brokers, str) else ",".join(brokers)
        self.topic = topic
        self.add_config = dict(add_config or {})
        self.timeout = timeout

    @classmethod
    def from_url(cls, url: str, settings: Mapping[str, str] | None = None) -> KafkaAlertSink:
        """The sink of ``kafka://HOST:PORT/TOPIC`` with librdkafka ``settings``.

        >>> KafkaAlertSink.from_url("kafka://127.0.0.1:9092/alerts").topic
        'alerts'
        """
        brokers, topic = parse_kafka_url(url)
        return cls(brokers, topic, settings)

    def __repr__(self) -> str:
        return f"KafkaAlertSink({self.brokers!r}, {self.topic!r}, {redacted(self.add_config)!r})"

    def list_parts(self) -> list[str]:
        """``<partition>-<topic>`` for every partition of the topic (RuntimeError if missing)."""
        n = topic_partitions(self.brokers, self.topic, self.add_config, self.timeout)
        if n is None:
            raise RuntimeError(
                f"Kafka alerts topic {self.topic!r} does not exist on {self.brokers}; create it first "
                "(its partition count fixes the sink's parallelism), e.g. with connectors.kafka.create_topic"
            )
        return [f"{i}-{self.topic}" for i in range(n)]

    def part_fn(self, item_key: str) -> int:
        """A stable hash of the entity (``hash64``; never Python's ``hash()``)."""
        return hash64(item_key) >> 1

    def build_part(self, step_id: str, for_part: str, resume_state: SinkState | None) -> _AlertPartition:
        """A fresh partition (starts at the current end) or one resumed from a snapshot."""
        idx, topic = for_part.split("-", 1)
        if topic != self.topic:
            raise ValueError(f"step {step_id!r}: partition {for_part!r} is not of topic {self.topic!r}")
        return _AlertPartition(self, int(idx), resume_state)

    def producer_config(self) -> dict[str, Any]:
        """The producer's librdkafka settings (user settings, then the forced ones)."""
        return {
            "bootstrap.servers": self.brokers,
            "linger.ms": 5,
            **self.add_config,
            "enable.idempotence": True,
            "acks": "all",
        }

    def consumer_config(self) -> dict[str, Any]:
        """Settings of the consumer that reads a partition back (read_committed, no group)."""
        return {
            "bootstrap.servers": self.brokers,
            "fetch.wait.max.ms": 10,  # the end of the partition is what we wait for: answer fast
            **self.add_config,
            "group.id": "sketchwatch-alert-sink-readback",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "error",
        }


class _AlertPartition(StatefulSinkPartition[SinkItem, SinkState]):
    def __init__(self, sink: KafkaAlertSink, partition: int, resume_state: SinkState | int | None) -> None:
        self.topic = sink.topic
        self.partition = partition
        self.timeout = sink.timeout
        self._config = sink.producer_config()
        consumer_config = sink.consumer_config()
        self._errors: list[str] = []
        if resume_state is None:
            # No committed state: what earlier incarnations wrote since the latest marker is
            # replayed by this run from its start, so skip it once (module docstring).
            self._skip: set[str]
            self._skip, self._next = read_partition(
                consumer_config, self.topic, partition, OFFSET_BEGINNING, self.timeout, after_marker=True
            )
            self._producer = _producer(self._config)
        else:
            start, pending = (resume_state, ()) if isinstance(resume_state, int) else resume_state
            ids, self._next = read_partition(consumer_config, self.topic, partition, start, self.timeout)
            self._skip = ids | set(pending)
            self._producer = _producer(self._config)
            self._write_marker()

    def _write_marker(self) -> None:
        """Mark that everything before this point is covered by a committed recovery state."""
        self._producer.produce(
            self.topic,
            b"",
            None,
            partition=self.partition,
            headers=[(MARKER_HEADER, b"resume")],
            on_delivery=self._on_delivery,
        )
        self._flush()

    def _on_delivery(self, err: ConfluentKafkaError | None, msg: Any) -> None:
        if err is not None:
            self._errors.append(err.str())
        else:
            offset = msg.offset()
            if offset is not None and offset + 1 > self._next:
                self._next = offset + 1

    def write_batch(self, values: list[SinkItem]) -> None:
        produce = self._producer.produce
        skip = self._skip
        for item in values:
            if not isinstance(item, Alert):
                continue
            aid = item.alert_id
            if skip and aid in skip:
                skip.discard(aid)
                continue
            key = item.entity.encode("utf-8", "backslashreplace")
            value = alert_value(item)
            headers: list[tuple[str, str | bytes | None]] = [("alert_id", aid.encode())]
            while True:
                try:
                    produce(
                        self.topic,
                        value,
                        key,
                        partition=self.partition,
                        headers=headers,
                        on_delivery=self._on_delivery,
                    )
                    break
                except BufferError:  # local queue full: serve delivery reports, then retry
                    self._producer.poll(0.1)
        self._flush()

    def _flush(self) -> None:
        left = self._producer.flush(self.timeout)
        if self._errors:
            first, n = self._errors[0], len(self._errors)
            self._errors = []
            raise RuntimeError(
                f"Kafka alerts topic {self.topic!r} partition {self.partition}: {n} alert(s) not "
                f"delivered, first error: {_scrub(first, self._config)}"
            )
        if left:
            raise RuntimeError(
                f"Kafka alerts topic {self.topic!r} partition {self.partition}: {left} alert(s) still "
                f"undelivered after {self.timeout} s"
            )

    def snapshot(self) -> SinkState:
        self._flush()
        return (self._next, tuple(sorted(self._skip)))

    def close(self) -> None:
        self._flush()


MARKER_HEADER: Final = "sketchwatch_marker"


def read_partition(
    consumer_config: dict[str, Any],
    topic: str,
    partition: int,
    start: int,
    timeout: float,
    *,
    after_marker: bool = False,
) -> tuple[set[str], int]:
    """The ``alert_id`` headers of ``topic``/``partition`` from ``start`` to its end, and the end.

    With ``after_marker``, only the ids after the latest marker message count (see the module
    docstring: crashes before the first committed snapshot).

    ``start`` may be ``OFFSET_END`` (then only the end offset is wanted). The end is the offset
    reported with the end-of-partition event (the fetch high watermark), which is right even on
    brokers whose ListOffsets answer is not (tansu 0.6 reports the base offset of the last record
    batch + 1). RuntimeError on a consume error or when the end is not reached within ``timeout``.
    """
    ids: set[str] = set()
    end = max(start, 0)
    consumer = _consumer(consumer_config)
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in consumer.consume(10_000, 0.1):
                err = m.error()
                if err is None:
                    offset = m.offset()
                    if offset is None:
                        continue
                    end = max(end, offset + 1)
                    if after_marker and _is_marker(m.headers()):
                        ids.clear()
                    elif start != OFFSET_END:
                        aid = _alert_id(m.headers(), m.value())
                        if aid:
                            ids.add(aid)
                elif err.code() == ConfluentKafkaError._PARTITION_EOF:
                    eof = m.offset()
                    if eof is not None:
                        if start >= 0 and eof < start:
                            raise RuntimeError(
                                f"Kafka topic {topic!r} partition {partition} ends at {eof}, before the "
                                f"snapshot's offset {start}: was the topic deleted and recreated?"
                            )
                        end = max(end, eof)
                    return ids, end
                elif err.fatal() or not (err.retriable() or err.code() in _TRANSIENT):
                    where = f"Kafka topic {topic!r} partition {partition}"
                    raise RuntimeError(f"reading {where} from offset {start}: {err.str()}")
        raise RuntimeError(
            f"reading Kafka topic {topic!r} partition {partition} from offset {start}: end not reached "
            f"within {timeout} s (is the broker up? was the topic truncated below that offset?)"
        )
    finally:
        consumer.close()


def _is_marker(headers: Any) -> bool:
    pairs: Iterable[tuple[str, Any]] = headers.items() if isinstance(headers, dict) else headers or ()
    return any(name == MARKER_HEADER for name, _ in pairs)


def _alert_id(headers: Any, value: bytes | str | None) -> str:
    pairs: Iterable[tuple[str, Any]] = headers.items() if isinstance(headers, dict) else headers or ()
    for name, v in pairs:
        if name == "alert_id" and v:
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    if value:  # written without the header (another tool): fall back to the JSON body
        try:
            aid = json.loads(value).get("alert_id")
        except (ValueError, AttributeError):
            return ""
        return aid if isinstance(aid, str) else ""
    return ""
