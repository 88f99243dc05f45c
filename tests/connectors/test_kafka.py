"""Kafka input, exactly-once alert output and the producer tool, against a real broker (tansu)."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import bytewax.operators as op
import numpy as np
import pytest
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka import KafkaError as CKafkaError

from connectors import kafka
from connectors.config import Config
from connectors.events import DeadLetter, EventBatch, Sample
from connectors.generators import generator
from connectors.kafka import (
    KafkaAlertSink,
    alert_output,
    kafka_input,
    kafka_settings,
    parse_messages,
    read_partition,
    redacted,
)
from connectors.produce import entity_column, main, produce_events
from operators.alerts import Alert
from sketches.hashing import hash64
from tests.services.kafka import TansuBroker, create_topic


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _read_topic(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    """Every message of ``topic`` (read_committed), per partition in offset order."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-read",
            "fetch.wait.max.ms": 10,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    msgs, eof = [], set()
    try:
        for _ in range(300):
            for m in c.consume(10_000, 0.1):
                err = m.error()
                if err is None:
                    msgs.append(m)
                elif err.code() == CKafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                else:
                    raise AssertionError(err.str())
            if len(eof) == partitions:
                return sorted(msgs, key=lambda m: (m.partition(), m.offset()))
    finally:
        c.close()
    raise AssertionError(f"end of {topic} not reached")


def _run_input(
    bootstrap: str, topic: str, flow: str = "fraud", batch: int = 1000, markers: bool = False
) -> list[Any]:
    """The items of a finite Kafka input (``markers``: with the partitions' end markers)."""
    env = {"SKETCHWATCH_SOURCE": f"kafka://{bootstrap}/{topic}", "SKETCHWATCH_BATCH": str(batch)}
    config = Config.from_env(flow, env)
    df = Dataflow("kafka_in")
    out: list[Any] = []
    op.output("out", kafka_input(df, "source", config, tail=False), TestingSink(out))
    run_main(df)
    if markers:
        return out
    return [x for x in out if not (isinstance(x, EventBatch) and x.progress and x.progress.state != "data")]


def _generated(flow: str, n: int, seed: int) -> EventBatch:
    return EventBatch.concat(list(generator(flow)(n, seed, 0, 10_000)))


def _assert_same_events(got: EventBatch, want: EventBatch) -> None:
    assert set(got.columns) == set(want.columns)
    for name in want.columns:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# --------------------------------------------------------------------------------------------
# Settings and parsing (no broker)


def test_settings_from_env_and_redaction() -> None:
    env = {
        "SKETCHWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SKETCHWATCH_KAFKA_SASL_MECHANISM": "PLAIN",
        "SKETCHWATCH_KAFKA_SASL_USERNAME": "svc",
        "SKETCHWATCH_KAFKA_SASL_PASSWORD": "hunter2 ",
        "SKETCHWATCH_KAFKA_SSL_KEY_PASSWORD": "pem-pass",
        "SKETCHWATCH_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET": "oauth-secret",
        "SKETCHWATCH_KAFKA_SASL_JAAS_CONFIG": "x required password=jaas-pass;",
        "SKETCHWATCH_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "https://t",
        "SKETCHWATCH_KAFKA_": "ignored",
        "SKETCHWATCH_SEED": "1",
        "KAFKA_OTHER": "x",
    }
    s = kafka_settings(env)
    assert s == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "svc",
        "sasl.password": "hunter2 ",
        "ssl.key.password": "pem-pass",
        "sasl.oauthbearer.client.secret": "oauth-secret",
        "sasl.jaas.config": "x required password=jaas-pass;",
        "sasl.oauthbearer.token.endpoint.url": "https://t",
    }
    shown = redacted(s)
    assert shown["security.protocol"] == "SASL_SSL" and shown["sasl.username"] == "svc"
    text = repr(shown)
    for secret in ("hunter2", "pem-pass", "oauth-secret", "jaas-pass"):
        assert secret not in text
    assert shown["sasl.password"] == "***"
    sink = KafkaAlertSink("127.0.0.1:1", "alerts", s)
    assert "hunter2" not in repr(sink) and "oauth-secret" not in repr(sink)


def test_client_errors_hide_secrets() -> None:
    # An invalid value makes librdkafka quote it in its error: the sink must not leak it.
    settings = {"sasl.password": "hunter2", "ssl.key.password": "p4ss", "acks": "hunter2"}
    sink = KafkaAlertSink("127.0.0.1:1", "alerts", settings)
    with pytest.raises(RuntimeError) as info:
        kafka._producer(sink.producer_config() | {"acks": "hunter2"})
    assert "hunter2" not in str(info.value) and "p4ss" not in str(info.value)


def test_parse_messages_groups_by_partition_and_handles_errors(caplog: pytest.LogCaptureFixture) -> None:
    ok = b'{"brand":"acme","sentiment":0.5,"ts":1}'

    def m(value: bytes | None, part: int, offset: int) -> KafkaSourceMessage[Any, Any]:
        return KafkaSourceMessage(None, value, "t", offset=offset, partition=part)

    transient = KafkaError(CKafkaError(CKafkaError._TRANSPORT), KafkaSourceMessage(None, None))
    corrupt = KafkaError(CKafkaError(CKafkaError._BAD_MSG), m(b"\x00", 1, 8))
    items = [m(ok, 0, 10), m(ok, 1, 3), m(b"{bad", 0, 11), transient, m(None, 1, 4), corrupt, m(ok, 0, 13)]
    with caplog.at_level(logging.WARNING, logger="connectors.kafka"):
        out = parse_messages("sentiment", "t", items)
    assert "retried by librdkafka" in caplog.text
    kinds = [(type(x).__name__, getattr(x, "source", None)) for x in out]
    assert kinds == [
        ("EventBatch", None),
        ("DeadLetter", "kafka:t/0"),
        ("EventBatch", None),
        ("DeadLetter", "kafka:t/1"),
        ("DeadLetter", "kafka:t/1"),
    ]
    assert out[0].positions.tolist() == [10, 13] and out[2].positions.tolist() == [3]
    assert [(d.position, d.reason.split(":")[0]) for d in out[3:]] == [
        (4, "Kafka message without a value (tombstone)"),
        (8, "Kafka error"),
    ]
    assert out[1].position == 11 and out[1].reason.startswith("not JSON")
    fatal = KafkaError(CKafkaError(CKafkaError.UNKNOWN_TOPIC_OR_PART), KafkaSourceMessage(None, None))
    with pytest.raises(RuntimeError, match="Kafka consume error"):
        parse_messages("sentiment", "t", [fatal])


def test_from_url_and_part_fn() -> None:
    sink = KafkaAlertSink.from_url("kafka://127.0.0.1:9092/alerts", {"client.id": "x"})
    assert (sink.brokers, sink.topic, sink.add_config) == ("127.0.0.1:9092", "alerts", {"client.id": "x"})
    assert sink.part_fn("card-1") == hash64("card-1") >> 1
    with pytest.raises(ValueError, match="kafka://HOST:PORT/TOPIC"):
        KafkaAlertSink.from_url("kafka://nohost/alerts")
    assert entity_column("fraud") == "tx_id"


# --------------------------------------------------------------------------------------------
# Input against the broker


def test_generated_events_round_trip_one_partition(kafka_broker: TansuBroker) -> None:
    topic = _topic("fraud1")
    create_topic(kafka_broker.bootstrap, topic, 1)
    report = produce_events("fraud", 20_000, 5, kafka_broker.bootstrap, topic)
    assert report.messages == 20_000 and report.rate > 0
    out = _run_input(kafka_broker.bootstrap, topic)
    assert all(isinstance(x, EventBatch) for x in out)
    got = EventBatch.concat(out)
    want = _generated("fraud", 20_000, 5)
    np.testing.assert_array_equal(got.positions, want.positions)  # offsets = generator positions
    _assert_same_events(got, want)


def test_source_partition_resumes_at_its_snapshot_offset(kafka_broker: TansuBroker) -> None:
    topic = _topic("resume")
    create_topic(kafka_broker.bootstrap, topic, 1)
    produce_events("fraud", 3_000, 4, kafka_broker.bootstrap, topic)
    source = kafka.KafkaEventSource("fraud", kafka_broker.bootstrap, topic, tail=False, batch_size=500)
    assert source.list_parts() == [f"0-{topic}"]

    def read(resume: int | None) -> tuple[list[int], int]:
        part = source.build_part("source", f"0-{topic}", resume)
        positions: list[int] = []
        try:
            while True:
                for item in part.next_batch():
                    assert isinstance(item, EventBatch) and len(item) <= 500
                    positions.extend(item.positions.tolist())
        except StopIteration:
            return positions, part.snapshot()
        finally:
            part.close()

    assert read(None) == (list(range(3_000)), 3_000)
    assert read(1_234) == (list(range(1_234, 3_000)), 3_000)
    with pytest.raises(RuntimeError, match="cannot resume"):
        source.build_part("source", "0-other", None)


def test_generated_events_round_trip_three_partitions(kafka_broker: TansuBroker) -> None:
    topic = _topic("fraud3")
    create_topic(kafka_broker.bootstrap, topic, 3)
    produce_events("fraud", 15_000, 9, kafka_broker.bootstrap, topic, partitions=3)
    stored = _read_topic(kafka_broker.bootstrap, topic, 3)
    by_place = {(m.partition(), m.offset()): json.loads(m.value()) for m in stored}
    assert len({p for p, _ in by_place}) == 3  # keys spread the events over all partitions
    everything = _run_input(kafka_broker.bootstrap, topic, batch=700, markers=True)
    # Every batch names its partition; each partition ends with one empty "final" marker.
    names = tuple(f"{p}-{topic}" for p in range(3))
    assert all(
        isinstance(x, EventBatch) and x.progress and x.progress.partitions == names for x in everything
    )
    finals = [x.progress.partition for x in everything if x.progress.state == "final" and not len(x)]
    assert sorted(finals) == list(names)
    out = [x for x in everything if x.progress.state == "data"]
    seen: dict[int, list[int]] = {}
    for batch in out:
        pos = batch.positions.tolist()
        assert batch.progress.partition == names[int(batch.progress.partition.split("-")[0])]
        # Each batch is one partition's events in offset order, positions = offsets.
        parts = [
            p
            for p in range(3)
            if all(by_place.get((p, o)) == r for o, r in zip(pos, batch.records(), strict=True))
        ]
        assert len(parts) == 1, pos[:5]
        seen.setdefault(parts[0], []).extend(pos)
    for p, offsets in seen.items():
        assert offsets == sorted(by_place_offsets(by_place, p))
    # The same events as the generator's (partitioning only reorders across partitions).
    got = EventBatch.concat(out)
    want = _generated("fraud", 15_000, 9)
    order_got = np.lexsort((got["tx_id"].astype(str), got["ts"]))
    order_want = np.lexsort((want["tx_id"].astype(str), want["ts"]))
    _assert_same_events(got.take(order_got), want.take(order_want))
    # Per key (partition), the generator's order is kept.
    for p in range(3):
        ids = [r["tx_id"] for (q, _), r in sorted(by_place.items()) if q == p]
        wanted = set(ids)
        gen = [t for t in want["tx_id"].tolist() if t in wanted]
        assert ids == gen


def by_place_offsets(by_place: dict[tuple[int, int], Any], partition: int) -> list[int]:
    return [o for p, o in by_place if p == partition]


def test_garbage_messages_become_dead_letters(kafka_broker: TansuBroker) -> None:
    topic = _topic("garbage")
    create_topic(kafka_broker.bootstrap, topic, 1)
    good = {"tx_id": "t1", "card_id": "c1", "merchant_id": "m1", "amount": 12.5, "type": "pos", "ts": 1e9}
    values: list[bytes | None] = [
        json.dumps(good).encode(),
        b"{oops",
        b"",
        None,
        b"[1, 2]",
        json.dumps({**good, "amount": "lots"}).encode(),
        b"\xff\xfe",
        json.dumps({**good, "tx_id": "t2"}).encode(),
    ]
    p = Producer({"bootstrap.servers": kafka_broker.bootstrap, "enable.idempotence": True})
    for v in values:
        p.produce(topic, v)
    assert p.flush(10) == 0
    out = _run_input(kafka_broker.bootstrap, topic)
    batches = [x for x in out if isinstance(x, EventBatch)]
    dead = [x for x in out if isinstance(x, DeadLetter)]
    assert sum(map(len, batches)) + len(dead) == len(values)
    assert EventBatch.concat(batches).positions.tolist() == [0, 7]
    assert [d.position for d in dead] == [1, 2, 3, 4, 5, 6]
    assert {d.source for d in dead} == {f"kafka:{topic}/0"}
    reasons = [d.reason for d in dead]
    assert reasons[0].startswith("not JSON") and reasons[1] == "empty line"
    assert reasons[2].startswith("Kafka message without a value")
    assert reasons[3] == "not a JSON object: got list"
    assert reasons[4].startswith("field 'amount'") and reasons[5].startswith("not UTF-8")
    assert dead[0].raw == b"{oops"


# --------------------------------------------------------------------------------------------
# Alert sink against the broker


def _alerts(prefix: str, n: int, entities: int = 5) -> list[Alert]:
    return [
        Alert(
            "fraud",
            "duplicate_tx",
            f"card-{i % entities}",
            1000.0 + i,
            float(i),
            1.0,
            trigger=f"{prefix}{i}",
            evidence={"seen": i, "top": [["a", 1]]},
        )
        for i in range(n)
    ]


def test_sink_writes_each_alert_once_keyed_by_entity(kafka_broker: TansuBroker) -> None:
    topic = _topic("alerts")
    create_topic(kafka_broker.bootstrap, topic, 3)
    alerts = _alerts("a", 40, entities=7)
    extra: list[Any] = [Sample("fraud", 0.0, 60.0, "s", 1, {}), DeadLetter("fraud", "f", 1, "bad", b"x")]
    df = Dataflow("alerts_out")
    up = op.input("in", df, TestingSource([*alerts[:20], *extra, *alerts[20:]], batch_size=7))
    alert_output("kafka_alerts", up, KafkaAlertSink(kafka_broker.bootstrap, topic))
    run_main(df)
    stored = _read_topic(kafka_broker.bootstrap, topic, 3)
    assert len(stored) == len(alerts)
    by_id = {a.alert_id: a for a in alerts}
    partition_of: dict[str, int] = {}
    for m in stored:
        headers = dict(m.headers())
        a = by_id.pop(headers["alert_id"].decode())
        assert m.key() == a.entity.encode()
        record = json.loads(m.value())
        assert record["alert_id"] == a.alert_id and record["evidence"] == {
            "seen": a.evidence["seen"],
            "top": [["a", 1]],
        }
        assert partition_of.setdefault(a.entity, m.partition()) == m.partition()
    assert not by_id
    assert len(set(partition_of.values())) > 1


def test_sink_rejects_missing_topic(kafka_broker: TansuBroker) -> None:
    sink = KafkaAlertSink(kafka_broker.bootstrap, _topic("missing"))
    with pytest.raises(RuntimeError, match="does not exist"):
        sink.list_parts()


@pytest.mark.parametrize("partitions", [1, 2])
def test_resume_protocol_writes_each_alert_once(kafka_broker: TansuBroker, partitions: int) -> None:
    topic = _topic("resume")
    create_topic(kafka_broker.bootstrap, topic, partitions)
    sink = KafkaAlertSink(kafka_broker.bootstrap, topic)
    part_name = sink.list_parts()[-1]
    a, b, c = _alerts("A", 10), _alerts("B", 10), _alerts("C", 10)

    part = sink.build_part("out", part_name, None)
    part.write_batch([*a[:4], Sample("fraud", 0.0, 1.0, "s", 0, {})])
    part.write_batch(a[4:])
    snap = part.snapshot()
    assert snap == (10, ())
    part.write_batch(b)  # written, then a crash before the next snapshot

    # Resume: Bytewax replays B, then goes on with C.
    part2 = sink.build_part("out", part_name, snap)  # writes a marker at offset 20
    part2.write_batch(b[:3])
    snap2 = part2.snapshot()
    assert snap2[0] == 21 and len(snap2[1]) == 7  # B[3:] still expected from the replay
    part2.write_batch(b[3:5])  # and a second crash during the replay

    part3 = sink.build_part("out", part_name, snap2)  # marker at 21
    part3.write_batch([*b[3:], *c[:5]])
    part3.write_batch(c[5:])
    assert part3.snapshot() == (32, ())
    part3.close()

    assert _stored_ids(kafka_broker.bootstrap, topic, partitions, part_name) == [
        x.alert_id for x in [*a, *b, *c]
    ]


def _stored_ids(bootstrap: str, topic: str, partitions: int, part_name: str) -> list[str]:
    index = int(part_name.split("-", 1)[0])
    stored = [m for m in _read_topic(bootstrap, topic, partitions) if m.partition() == index]
    return [dict(m.headers())["alert_id"].decode() for m in stored if "alert_id" in dict(m.headers())]


def test_crashes_before_the_first_snapshot_duplicate_nothing(kafka_broker: TansuBroker) -> None:
    topic = _topic("fresh")
    create_topic(kafka_broker.bootstrap, topic, 1)
    sink = KafkaAlertSink(kafka_broker.bootstrap, topic)
    (part_name,) = sink.list_parts()
    a, b, c = _alerts("A", 6), _alerts("B", 6), _alerts("C", 6)

    first = sink.build_part("out", part_name, None)
    first.write_batch(a)  # dies before any snapshot
    second = sink.build_part("out", part_name, None)  # no state: replays from the start
    second.write_batch([*a, *b[:2]])  # dies again, before any snapshot
    third = sink.build_part("out", part_name, None)
    third.write_batch([*a, *b])
    snap = third.snapshot()
    third.write_batch(c[:3])  # crash after the first snapshot
    fourth = sink.build_part("out", part_name, snap)  # resumes: writes a marker
    fourth.write_batch(c)
    fourth.close()
    assert _stored_ids(kafka_broker.bootstrap, topic, 1, part_name) == [x.alert_id for x in [*a, *b, *c]]

    # A deliberate start over (no state after a resumed run) dedups only against what came after
    # the latest marker: C[3:]; C[:3], written before it, is written again (documented).
    fifth = sink.build_part("out", part_name, None)
    fifth.write_batch([*c, *_alerts("D", 2)])
    fifth.close()
    assert _stored_ids(kafka_broker.bootstrap, topic, 1, part_name) == [
        x.alert_id for x in [*a, *b, *c, *c[:3], *_alerts("D", 2)]
    ]


def test_exactly_once_across_a_bytewax_crash(
    kafka_broker: TansuBroker, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from bytewax.recovery import RecoveryConfig, init_db_dir

    topic = _topic("crash")
    create_topic(kafka_broker.bootstrap, topic, 2)
    alerts = _alerts("X", 60, entities=9)
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    crash_on = ["X40"]  # the first run dies right after writing the batch holding this alert

    class CrashingSink(KafkaAlertSink):
        def build_part(self, step_id: str, for_part: str, resume_state: Any) -> Any:
            part = super().build_part(step_id, for_part, resume_state)
            write = part.write_batch

            def write_then_crash(values: list[Any]) -> None:
                write(values)  # in Kafka, but the epoch is not snapshotted yet
                if crash_on and any(v.trigger == crash_on[0] for v in values):
                    crash_on.clear()
                    raise RuntimeError("simulated crash after a write")

            part.write_batch = write_then_crash  # type: ignore[method-assign]
            return part

    def run() -> None:
        df = Dataflow("crash")
        up = op.input("in", df, TestingSource(alerts, batch_size=5))
        alert_output("kafka_alerts", up, CrashingSink(kafka_broker.bootstrap, topic))
        run_main(df, epoch_interval=timedelta(seconds=0), recovery_config=recovery)

    with pytest.raises(Exception, match="simulated crash"):
        run()
    assert 0 < len(_read_topic(kafka_broker.bootstrap, topic, 2)) < len(alerts)
    skipped: list[int] = []

    def spy(*args: Any) -> tuple[set[str], int]:
        ids, end = read_partition(*args)
        skipped.append(len(ids))
        return ids, end

    monkeypatch.setattr(kafka, "read_partition", spy)
    run()  # resumes from the last snapshot and replays what was written after it
    assert sum(skipped) > 0  # the replay did cover alerts already in Kafka
    headers = [dict(m.headers()) for m in _read_topic(kafka_broker.bootstrap, topic, 2)]
    ids = [h["alert_id"].decode() for h in headers if "alert_id" in h]  # not the resume markers
    assert sorted(ids) == sorted(a.alert_id for a in alerts)


# --------------------------------------------------------------------------------------------
# Producer tool


def test_produce_command_line(kafka_broker: TansuBroker, capsys: pytest.CaptureFixture[str]) -> None:
    topic = _topic("cli")
    argv = ["iot", "--events", "3000", "--seed", "2", "--brokers", kafka_broker.bootstrap, "--topic", topic]
    assert main([*argv, "--partitions", "2"]) == 0
    assert "messages/s" in capsys.readouterr().out
    stored = _read_topic(kafka_broker.bootstrap, topic, 2)
    assert len(stored) == 3000
    assert all(m.key() == json.loads(m.value())["device_id"].encode() for m in stored)
    assert main([*argv, "--partitions", "3"]) == 1  # exists with 2 partitions
    assert "2 partitions" in capsys.readouterr().err


def test_produce_keyed_by_another_column(
    kafka_broker: TansuBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = _topic("bycard")
    argv = ["fraud", "--events", "4000", "--brokers", kafka_broker.bootstrap, "--topic", topic]
    assert main([*argv, "--partitions", "3", "--key", "card_id"]) == 0
    stored = _read_topic(kafka_broker.bootstrap, topic, 3)
    assert all(m.key() == json.loads(m.value())["card_id"].encode() for m in stored)
    partition_of: dict[str, set[int]] = {}
    for m in stored:
        partition_of.setdefault(json.loads(m.value())["card_id"], set()).add(m.partition())
    assert all(len(p) == 1 for p in partition_of.values()) and len(stored) == 4000
    assert main([*argv, "--key", "card"]) == 1
    assert "key 'card' is not a column of fraud events" in capsys.readouterr().err


def test_produce_from_file(kafka_broker: TansuBroker, tmp_path: Any) -> None:
    from connectors.files import write_jsonl

    path = tmp_path / "events.jsonl"
    write_jsonl(path, generator("sentiment")(500, 3, 0, 200))
    with path.open("ab") as f:
        f.write(b"not json\n")
    topic = _topic("file")
    report = produce_events("sentiment", None, 0, kafka_broker.bootstrap, topic, file=str(path))
    assert (report.messages, report.skipped) == (500, 1)
    out = _run_input(kafka_broker.bootstrap, topic, flow="sentiment")
    _assert_same_events(EventBatch.concat(out), _generated("sentiment", 500, 3))
