"""Config.from_env: defaults, one-line errors naming the variable, sources, sinks, per-flow parameters."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.config import Config, ConfigError, SinkSpec, SourceSpec, build_sinks, build_source
from connectors.events import EventBatch
from connectors.files import FileSource
from connectors.sources import GeneratorSource
from connectors.sql import SqlSink, read_alerts
from connectors.stdout import StdoutSink


def fake_generate(n_events: int, seed: int, start: int, batch_size: int) -> Iterator[EventBatch]:
    yield from ()


def error(env: dict[str, str], flow: str = "fraud") -> str:
    with pytest.raises(ConfigError) as info:
        Config.from_env(flow, env)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults() -> None:
    c = Config.from_env("fraud", {"PATH": "/bin", "OTHER_SEED": "x"})
    assert c.source == SourceSpec("generate")
    assert c.sinks == (SinkSpec("sql", url="sqlite:///sketchwatch.db"),)
    assert (c.events, c.seed, c.batch, c.shards, c.idle_ttl, c.sample_k) == (
        1_000_000,
        7,
        100_000,
        4,
        3600.0,
        20,
    )
    assert c.parse_ahead is False
    assert (c.max_skew, c.idle_partition) == (3600.0, 30.0)
    assert c.partitioned_by == ()
    assert "PATH" not in c.env


def test_values_are_read() -> None:
    c = Config.from_env(
        "iot",
        {
            "SKETCHWATCH_EVENTS": "2_000",
            "SKETCHWATCH_SEED": " 4294967295 ",
            "SKETCHWATCH_BATCH": "1",
            "SKETCHWATCH_SHARDS": "4096",
            "SKETCHWATCH_IDLE_TTL": "90.5",
            "SKETCHWATCH_SAMPLE_K": "0",
            "SKETCHWATCH_PARSE_AHEAD": "1",
            "SKETCHWATCH_MAX_SKEW": "600",
            "SKETCHWATCH_IDLE_PARTITION": "2.5",
            "SKETCHWATCH_PARTITIONED_BY": " device_id , zone",
        },
    )
    assert c.parse_ahead is True
    assert c.partitioned_by == ("device_id", "zone")
    assert (c.max_skew, c.idle_partition) == (600.0, 2.5)
    assert (c.events, c.seed, c.batch, c.shards, c.idle_ttl, c.sample_k) == (
        2000,
        2**32 - 1,
        1,
        4096,
        90.5,
        0,
    )


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("SKETCHWATCH_EVENTS", "0", "SKETCHWATCH_EVENTS: expected an integer in [1, 1000000000000], got '0'"),
        (
            "SKETCHWATCH_EVENTS",
            "1e6",
            "SKETCHWATCH_EVENTS: expected an integer in [1, 1000000000000], got '1e6'",
        ),
        ("SKETCHWATCH_SEED", "-1", "SKETCHWATCH_SEED: expected an integer in [0, 4294967295], got '-1'"),
        (
            "SKETCHWATCH_SEED",
            str(2**32),
            "SKETCHWATCH_SEED: expected an integer in [0, 4294967295], got '4294967296'",
        ),
        ("SKETCHWATCH_BATCH", "ten", "SKETCHWATCH_BATCH: expected an integer in [1, 10000000], got 'ten'"),
        ("SKETCHWATCH_SHARDS", "4097", "SKETCHWATCH_SHARDS: expected an integer in [1, 4096], got '4097'"),
        ("SKETCHWATCH_IDLE_TTL", "0", "SKETCHWATCH_IDLE_TTL: expected a number of seconds > 0, got '0'"),
        ("SKETCHWATCH_IDLE_TTL", "inf", "SKETCHWATCH_IDLE_TTL: expected a number of seconds > 0, got 'inf'"),
        ("SKETCHWATCH_SAMPLE_K", "-1", "SKETCHWATCH_SAMPLE_K: expected an integer in [0, 1000000], got '-1'"),
        (
            "SKETCHWATCH_PARSE_AHEAD",
            "yes",
            "SKETCHWATCH_PARSE_AHEAD: expected an integer in [0, 1], got 'yes'",
        ),
        (
            "SKETCHWATCH_SOURCE",
            "s3://bucket/x",
            "SKETCHWATCH_SOURCE: expected 'generate', 'file:PATH' or 'kafka://HOST:PORT/TOPIC', got 's3://bucket/x'",
        ),
        ("SKETCHWATCH_SOURCE", "file:", "SKETCHWATCH_SOURCE: expected file:PATH, got 'file:'"),
        (
            "SKETCHWATCH_SOURCE",
            "kafka://broker/tx",
            "SKETCHWATCH_SOURCE: expected kafka://HOST:PORT/TOPIC[?tail=false], got 'kafka://broker/tx'",
        ),
        (
            "SKETCHWATCH_SOURCE",
            "kafka://b:x/tx",
            "SKETCHWATCH_SOURCE: expected kafka://HOST:PORT/TOPIC[?tail=false], got 'kafka://b:x/tx'",
        ),
        ("SKETCHWATCH_SINKS", " , ", "SKETCHWATCH_SINKS: expected at least one sink, got ','"),
        (
            "SKETCHWATCH_PARTITIONED_BY",
            "card",
            "SKETCHWATCH_PARTITIONED_BY: 'card' is not a column of fraud events "
            "('tx_id', 'card_id', 'merchant_id', 'amount', 'type', 'ts'), in 'card'",
        ),
        (
            "SKETCHWATCH_PARTITIONED_BY",
            "card_id,card_id",
            "SKETCHWATCH_PARTITIONED_BY: expected distinct column names separated by ',', "
            "got 'card_id,card_id'",
        ),
        (
            "SKETCHWATCH_SINKS",
            "stdout,mongodb://x",
            "SKETCHWATCH_SINKS: expected a comma-separated list of sqlite:///PATH, postgresql+psycopg://..., "
            "stdout or kafka://HOST:PORT/TOPIC, got 'mongodb://x'",
        ),
        (
            "SKETCHWATCH_SINKS",
            "sqlite://",
            "SKETCHWATCH_SINKS: expected sqlite:///PATH (a file, not in-memory), got 'sqlite://'",
        ),
        (
            "SKETCHWATCH_SINKS",
            "postgresql://u:pw@h/db",
            "SKETCHWATCH_SINKS: unsupported database driver 'postgresql' in 'postgresql://u:***@h/db'; "
            "use sqlite:///PATH or postgresql+psycopg://USER:PASS@HOST/DB",
        ),
        (
            "SKETCHWATCH_SINKS",
            "kafka://h:9092",
            "SKETCHWATCH_SINKS: expected kafka://HOST:PORT/TOPIC, got 'kafka://h:9092'",
        ),
    ],
)
def test_one_line_errors(var: str, value: str, message: str) -> None:
    assert error({var: value}) == message


def test_bad_flow_name() -> None:
    assert error({}, flow="fr-aud") == "flow name must be letters, digits and '_', got 'fr-aud'"


def test_file_source(tmp_path: Path) -> None:
    p = tmp_path / "tx.jsonl"
    p.write_bytes(b"")
    c = Config.from_env("fraud", {"SKETCHWATCH_SOURCE": f"file:{p}", "SKETCHWATCH_BATCH": "5"})
    assert c.source == SourceSpec("file", path=str(p))
    src = build_source(c, lambda flow: fake_generate)
    assert isinstance(src, FileSource) and src.batch_size == 5 and src.fmt == "jsonl"
    missing = tmp_path / "nope.csv"
    assert (
        error({"SKETCHWATCH_SOURCE": f"file:{missing}"})
        == f"SKETCHWATCH_SOURCE: file {str(missing)!r} does not exist"
    )
    assert error({"SKETCHWATCH_SOURCE": "file:x.parquet"}).startswith(
        "SKETCHWATCH_SOURCE: x.parquet: cannot tell the format from extension '.parquet'"
    )


def test_generator_source() -> None:
    c = Config.from_env(
        "ddos", {"SKETCHWATCH_EVENTS": "50", "SKETCHWATCH_SEED": "3", "SKETCHWATCH_BATCH": "8"}
    )
    asked: list[str] = []

    def factory(flow: str):  # type: ignore[no-untyped-def]
        asked.append(flow)
        return fake_generate

    src = build_source(c, factory)
    assert isinstance(src, GeneratorSource) and asked == ["ddos"]
    assert (src.n_events, src.seed, src.batch_size, src.generate) == (50, 3, 8, fake_generate)


def test_generator_factory_defaults_to_connectors_generators(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("connectors.generators")
    module.generator_for = lambda flow: fake_generate  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "connectors.generators", module)
    src = build_source(Config.from_env("fraud", {}))
    assert isinstance(src, GeneratorSource) and src.generate is fake_generate


def test_kafka_source_and_sink_are_built_by_the_flow_not_here() -> None:
    c = Config.from_env(
        "fraud", {"SKETCHWATCH_SOURCE": "kafka://broker:9092/tx", "SKETCHWATCH_SINKS": "kafka://b:1/alerts"}
    )
    assert c.source == SourceSpec("kafka", brokers="broker:9092", topic="tx")
    assert c.sinks == (SinkSpec("kafka", brokers="b:1", topic="alerts"),)
    with pytest.raises(ConfigError, match=r"^SKETCHWATCH_SOURCE: a Kafka source is a stream step"):
        build_source(c, lambda flow: fake_generate)
    assert build_sinks(c) == []  # the partitioned Kafka alert sink is wired by dataflows.common


def test_sinks(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    env = {
        "SKETCHWATCH_SINKS": f" sqlite:///{db} ,stdout,, stdout, postgresql+psycopg://u:p@localhost:5432/sw"
    }
    c = Config.from_env("fraud", env)
    assert [s.kind for s in c.sinks] == ["sql", "stdout", "sql"]
    c = Config.from_env("fraud", {"SKETCHWATCH_SINKS": f"sqlite:///{db},stdout"})
    sinks = build_sinks(c)
    assert isinstance(sinks[0], SqlSink) and isinstance(sinks[1], StdoutSink)
    assert read_alerts(f"sqlite:///{db}") == []  # tables exist


def test_unreachable_database_fails_in_one_line() -> None:
    c = Config.from_env(
        "fraud", {"SKETCHWATCH_SINKS": "postgresql+psycopg://u:secret@127.0.0.1:1/sw?connect_timeout=2"}
    )
    with pytest.raises(ConfigError) as info:
        build_sinks(c)
    message = str(info.value)
    assert message.startswith("SKETCHWATCH_SINKS: cannot open 'postgresql+psycopg://u:***@127.0.0.1:1/sw")
    assert "\n" not in message and "secret" not in message


def test_params() -> None:
    env = {
        "SKETCHWATCH_FRAUD_WINDOW": "120",
        "SKETCHWATCH_FRAUD_TOP_K": "25",
        "SKETCHWATCH_FRAUD_BAD": "x",
        "SKETCHWATCH_FRAUD_EMPTY": " ",
        "SKETCHWATCH_DDOS_WINDOW": "5",
    }
    c = Config.from_env("fraud", env)
    assert c.param("window", 60.0) == 120.0
    assert c.param("Top_K", 10, kind=int, low=1) == 25
    assert isinstance(c.param("top_k", 10, kind=int), int)
    assert c.param("missing", 0.5) == 0.5 and c.param("empty", 3, kind=int) == 3
    assert c.variable("top_k") == "SKETCHWATCH_FRAUD_TOP_K"
    with pytest.raises(
        ConfigError, match=r"^SKETCHWATCH_FRAUD_BAD: expected a number in \[-inf, inf\], got 'x'$"
    ):
        c.param("bad", 1.0)
    with pytest.raises(
        ConfigError, match=r"^SKETCHWATCH_FRAUD_WINDOW: expected a number in \[1, 60\], got '120'$"
    ):
        c.param("window", 1.0, low=1, high=60)
    with pytest.raises(
        ConfigError, match=r"^SKETCHWATCH_FRAUD_WINDOW: expected an integer in \[200, inf\], got '120'$"
    ):
        c.param("window", 1, kind=int, low=200)
    with pytest.raises(ValueError, match="parameter name"):
        c.param("a-b", 1.0)
    c2 = Config.from_env("fraud", {"SKETCHWATCH_FRAUD_X": "nan"})
    with pytest.raises(ConfigError, match="SKETCHWATCH_FRAUD_X: expected a number"):
        c2.param("x", 1.0)


def test_kafka_source_tail_option() -> None:
    tailing = Config.from_env("fraud", {"SKETCHWATCH_SOURCE": "kafka://b:9092/tx"}).source
    finite = Config.from_env("fraud", {"SKETCHWATCH_SOURCE": "kafka://b:9092/tx?tail=false"}).source
    assert (tailing.tail, finite.tail, finite.topic, finite.brokers) == (True, False, "tx", "b:9092")
    with pytest.raises(ConfigError, match=r"SKETCHWATCH_SOURCE: expected kafka://HOST:PORT/TOPIC\[\?tail"):
        Config.from_env("fraud", {"SKETCHWATCH_SOURCE": "kafka://b:9092/tx?x=1"})
    with pytest.raises(ConfigError, match="SKETCHWATCH_SINKS"):
        Config.from_env("fraud", {"SKETCHWATCH_SINKS": "kafka://b:9092/tx?tail=false"})
