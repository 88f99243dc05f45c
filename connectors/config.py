"""Configuration from environment variables, checked at start-up.

A bad value stops the flow before it reads anything, with one line naming the variable, what was
expected and what was found, e.g. ``SKETCHWATCH_SEED: expected an integer in [0, 4294967295],
got '-1'`` (a :class:`ConfigError`).

Variables
---------
``SKETCHWATCH_SOURCE`` (default ``generate``)
    Where events come from:

    - ``generate``: the flow's synthetic generator (deterministic for a seed);
    - ``file:PATH``: a JSON Lines (``.jsonl``, ``.json``, ``.ndjson``) or CSV (``.csv``, header row
      required) file, read once;
    - ``kafka://HOST:PORT/TOPIC``: a Kafka topic, one input partition per Kafka partition,
      offsets kept in the recovery store; it keeps waiting for new messages, unless
      ``?tail=false`` is appended (then the flow ends at the end of every partition).
``SKETCHWATCH_SINKS`` (default ``sqlite:///sketchwatch.db``)
    Comma-separated outputs for alerts, samples and dead letters:

    - ``sqlite:///PATH`` (relative path) or ``sqlite:////ABSOLUTE/PATH``: a SQLite file;
    - ``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB``: Postgres through psycopg 3
      (percent-encode a comma in the password as ``%2C``);
    - ``stdout``: one JSON line per item;
    - ``kafka://HOST:PORT/TOPIC``: accepted by the parser, not built yet.
``SKETCHWATCH_EVENTS`` (default ``1000000``)
    Events the generator produces, a positive integer.
``SKETCHWATCH_SEED`` (default ``7``)
    Generator seed, an integer in [0, 2**32).
``SKETCHWATCH_BATCH`` (default ``100000``)
    Events per source batch (generator batch, lines per file read, most Kafka messages per poll),
    in [1, 10000000]. Large batches amortise the per-shard work of every detector (1M fraud
    events, pre-parsed: ~470k events/s at 10,000, ~1M at 100,000); small ones lower the latency
    from arrival to alert on a live Kafka topic (set e.g. 1000 there) and the memory in flight
    (1M cards and 100k merchants tracked: peak RSS ~218 MiB at 100,000, ~194 MiB at 20,000).
``SKETCHWATCH_SHARDS`` (default ``4``)
    Shards that hold the per-entity sketches, in [1, 4096]: use a multiple of the total number
    of workers (processes x ``-w``); shard ``s`` runs on worker ``s % workers`` for up to 8
    workers. Every shard costs a detector call per batch: fewer shards mean lower latency and
    more throughput (1M fraud events, pre-parsed, one worker: ~1.23M events/s at 1, ~1.05M at
    4, ~0.93M at 16; p50/p99 alert latency at 100k events/s in 1,000-event batches 3.6/5.3 ms
    at 1, 5.9/8.2 ms at 4, 12.8/45 ms at 16), more shards a smaller transient memory peak per
    call. Keep it fixed for a recovery directory: state is keyed by shard.
``SKETCHWATCH_IDLE_TTL`` (default ``3600``)
    Seconds of event time after which an idle entity's state is dropped, a number > 0.
``SKETCHWATCH_SAMPLE_K`` (default ``20``)
    Events kept per stratum and window by the sampler, in [0, 1000000]; 0 disables sampling.
``SKETCHWATCH_PARSE_AHEAD`` (default ``0``)
    ``1``: a file source reads and parses in a helper process per file, one batch ahead of
    the worker (another core does the parsing: 1M fraud lines ~0.37M -> ~0.65M events/s on 2
    cores); ``0``: in the worker. The items and resume state are the same either way.
``SKETCHWATCH_MAX_SKEW`` (default ``3600``)
    Seconds of event time a source partition may trail the most advanced one and still hold
    the detectors' clocks back (a number > 0). Each shard's clock is the least progress over
    the input partitions, so a partition read behind the others (a backlog of several Kafka
    partitions) is not counted late; a partition trailing by more is ignored until it catches
    up (its events are then late), which bounds the windows and filter generations kept open.
``SKETCHWATCH_PARTITIONED_BY`` (default empty)
    Comma-separated event columns the input is already partitioned by: every event with a
    given value of such a column is in one source partition (a Kafka topic whose producers key
    by ``card_id``; files split by card). The detector steps keyed by these columns then keep
    one shard per source partition, on the worker that reads it, instead of sending each
    event to the worker of its entity's hash (Flink's ``reinterpretAsKeyedStream``): no
    exchange between processes for them. For fraud, ``card_id,tx_id`` when every duplicate
    transaction repeats its card (1M events, 2 processes: 1.5x -> 1.6x one process; see the
    README). A column that does not hold this splits an entity's state over partitions and
    its alerts are wrong; the partitions must stay the same for a recovery directory
    (state is keyed by partition, and adding Kafka partitions moves keys anyway): a resume
    with other partitions or other columns stops with an error saying so. Up to 8
    workers each aligned shard runs where its partition is read; beyond, some are exchanged.
    An aligned shard's event-time clock is its partition's own, so an event more than a
    window's lateness behind its own partition's progress is late, as with one partition.
    Duplicate filters of aligned steps are each sized for the whole capacity.
``SKETCHWATCH_IDLE_PARTITION`` (default ``30``)
    Seconds of wall time without events after which a source partition stops holding the
    clocks back (a quiet Kafka partition), a number > 0; its next events count again.
``SKETCHWATCH_<FLOW>_<NAME>``
    Detector parameters of one flow, read with :meth:`Config.param`, e.g.
    ``SKETCHWATCH_FRAUD_VELOCITY_THRESHOLD=8``. The flows document their names.

Integers may use ``_`` as a digit separator (``1_000_000``).
"""

from __future__ import annotations

import importlib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar, overload
from urllib.parse import urlsplit

from bytewax.inputs import FixedPartitionedSource
from bytewax.outputs import DynamicSink
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from connectors.events import SCHEMAS
from connectors.files import FileSource, format_of
from connectors.sources import GenerateFn, GeneratorSource
from connectors.sql import SqlSink
from connectors.stdout import StdoutSink

__all__ = [
    "DEFAULTS",
    "Config",
    "ConfigError",
    "SinkSpec",
    "SourceSpec",
    "build_sinks",
    "build_source",
]

PREFIX: Final = "SKETCHWATCH_"

DEFAULTS: Final[dict[str, str]] = {
    "SKETCHWATCH_SOURCE": "generate",
    "SKETCHWATCH_SINKS": "sqlite:///sketchwatch.db",
    "SKETCHWATCH_EVENTS": "1000000",
    "SKETCHWATCH_SEED": "7",
    "SKETCHWATCH_BATCH": "100000",
    "SKETCHWATCH_SHARDS": "4",
    "SKETCHWATCH_IDLE_TTL": "3600",
    "SKETCHWATCH_SAMPLE_K": "20",
    "SKETCHWATCH_PARSE_AHEAD": "0",
    "SKETCHWATCH_MAX_SKEW": "3600",
    "SKETCHWATCH_IDLE_PARTITION": "30",
    "SKETCHWATCH_PARTITIONED_BY": "",
}
"""Every global variable and its default."""

_KAFKA_INPUT: Final = "a Kafka source is a stream step: build it with connectors.kafka.kafka_input"
_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")

N = TypeVar("N", int, float)


class ConfigError(ValueError):
    """A configuration variable is malformed; the message is one line naming the variable."""


@dataclass(frozen=True)
class SourceSpec:
    """Parsed ``SKETCHWATCH_SOURCE``: ``kind`` is ``generate``, ``file`` or ``kafka``."""

    kind: str
    path: str = ""
    brokers: str = ""
    topic: str = ""
    tail: bool = True  # kafka: keep waiting for new messages (False: stop at the end of each partition)


@dataclass(frozen=True)
class SinkSpec:
    """One parsed item of ``SKETCHWATCH_SINKS``: ``kind`` is ``sql``, ``stdout`` or ``kafka``."""

    kind: str
    url: str = ""
    brokers: str = ""
    topic: str = ""


@dataclass(frozen=True)
class Config:
    """A flow's configuration; build it with :meth:`from_env`.

    Examples
    --------
    >>> env = {"SKETCHWATCH_SEED": "42", "SKETCHWATCH_FRAUD_WINDOW": "120"}
    >>> c = Config.from_env("fraud", env)
    >>> c.seed, c.events, c.param("window", 60.0, low=1), c.param("top_k", 10, kind=int)
    (42, 1000000, 120.0, 10)
    >>> Config.from_env("fraud", {"SKETCHWATCH_SHARDS": "0"})
    Traceback (most recent call last):
    ...
    connectors.config.ConfigError: SKETCHWATCH_SHARDS: expected an integer in [1, 4096], got '0'
    """

    flow: str
    source: SourceSpec
    sinks: tuple[SinkSpec, ...]
    events: int
    seed: int
    batch: int
    shards: int
    idle_ttl: float
    sample_k: int
    parse_ahead: bool = False
    max_skew: float = 3600.0
    idle_partition: float = 30.0
    partitioned_by: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, flow: str, env: Mapping[str, str] | None = None) -> Config:
        """Read and check every global variable (see the module docstring).

        Parameters
        ----------
        flow : str
            Flow name (letters, digits, ``_``); per-flow parameters are ``SKETCHWATCH_<FLOW>_*``.
        env : mapping, optional
            The environment; ``os.environ`` by default.

        Raises
        ------
        ConfigError
            The first malformed variable, in one line.
        """
        if not _NAME.match(flow):
            raise ConfigError(f"flow name must be letters, digits and '_', got {flow!r}")
        env = dict(os.environ if env is None else env)
        own = {k: v for k, v in env.items() if k.startswith(PREFIX)}

        def get(name: str) -> str:
            return own.get(name, DEFAULTS[name]).strip()

        return cls(
            flow=flow,
            source=_parse_source(get("SKETCHWATCH_SOURCE")),
            sinks=_parse_sinks(get("SKETCHWATCH_SINKS")),
            events=_number("SKETCHWATCH_EVENTS", get("SKETCHWATCH_EVENTS"), int, 1, 10**12),
            seed=_number("SKETCHWATCH_SEED", get("SKETCHWATCH_SEED"), int, 0, 2**32 - 1),
            batch=_number("SKETCHWATCH_BATCH", get("SKETCHWATCH_BATCH"), int, 1, 10_000_000),
            shards=_number("SKETCHWATCH_SHARDS", get("SKETCHWATCH_SHARDS"), int, 1, 4096),
            idle_ttl=_positive("SKETCHWATCH_IDLE_TTL", get("SKETCHWATCH_IDLE_TTL")),
            sample_k=_number("SKETCHWATCH_SAMPLE_K", get("SKETCHWATCH_SAMPLE_K"), int, 0, 1_000_000),
            parse_ahead=bool(_number("SKETCHWATCH_PARSE_AHEAD", get("SKETCHWATCH_PARSE_AHEAD"), int, 0, 1)),
            max_skew=_positive("SKETCHWATCH_MAX_SKEW", get("SKETCHWATCH_MAX_SKEW")),
            idle_partition=_positive("SKETCHWATCH_IDLE_PARTITION", get("SKETCHWATCH_IDLE_PARTITION")),
            partitioned_by=_parse_columns(
                flow, "SKETCHWATCH_PARTITIONED_BY", get("SKETCHWATCH_PARTITIONED_BY")
            ),
            env=own,
        )

    def shards_of(self, column: str | None) -> int:
        """How many shards share the entities of a step keyed by ``column``, for sizing each
        shard's part of a capacity: ``shards``, or 1 for a column in ``partitioned_by`` (such
        a step has one shard per source partition, and the partition count is only known to
        the source: each shard is sized for all of them).

        >>> c = Config.from_env("fraud", {"SKETCHWATCH_PARTITIONED_BY": "card_id,tx_id"})
        >>> c.shards_of("tx_id"), c.shards_of("merchant_id")
        (1, 4)
        """
        return 1 if column in self.partitioned_by else self.shards

    def variable(self, name: str) -> str:
        """The variable name of per-flow parameter ``name``: ``SKETCHWATCH_<FLOW>_<NAME>``."""
        if not _NAME.match(name):
            raise ValueError(f"parameter name must be letters, digits and '_', got {name!r}")
        return f"{PREFIX}{self.flow.upper()}_{name.upper()}"

    @overload
    def param(
        self, name: str, default: int, kind: type[int], low: float | None = ..., high: float | None = ...
    ) -> int: ...

    @overload
    def param(
        self,
        name: str,
        default: float,
        kind: type[float] = ...,
        low: float | None = ...,
        high: float | None = ...,
    ) -> float: ...

    def param(
        self,
        name: str,
        default: float,
        kind: type[float] | type[int] = float,
        low: float | None = None,
        high: float | None = None,
    ) -> float:
        """A detector parameter from ``SKETCHWATCH_<FLOW>_<NAME>``, or ``default`` if unset.

        Parameters
        ----------
        name : str
            Parameter name (case-insensitive; upper-cased in the variable name).
        default : int or float
            Value when the variable is unset or empty (not checked against the bounds).
        kind : {float, int}
            Type of the value; floats must be finite.
        low, high : float, optional
            Inclusive bounds.

        Raises
        ------
        ConfigError
            The variable is set but malformed or out of bounds (one line).
        """
        var = self.variable(name)
        text = self.env.get(var, "").strip()
        if not text:
            return kind(default)
        if kind is int:
            return _number(var, text, int, low, high)
        if kind is float:
            return _number(var, text, float, low, high)
        raise ValueError(f"param kind must be int or float, got {kind!r}")


def _number(var: str, text: str, kind: type[N], low: float | None, high: float | None) -> N:
    lo = "-inf" if low is None else _fmt(low, kind)
    hi = "inf" if high is None else _fmt(high, kind)
    what = f"{'an integer' if kind is int else 'a number'} in [{lo}, {hi}]"
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{var}: expected {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{var}: expected {what}, got {text!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{var}: expected {what}, got {text!r}")
    return value


def _fmt(x: float, kind: type) -> str:
    return str(int(x)) if kind is int and float(x).is_integer() else repr(x)


def _positive(var: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{var}: expected a number of seconds > 0, got {text!r}")
    return value


def _parse_columns(flow: str, var: str, text: str) -> tuple[str, ...]:
    """Comma-separated column names of ``flow``'s events (each once; empty: none)."""
    names = tuple(n.strip() for n in text.split(",")) if text else ()
    columns = SCHEMAS[flow].names if flow in SCHEMAS else None
    for name in names:
        if columns is not None and name not in columns:
            raise ConfigError(f"{var}: {name!r} is not a column of {flow} events {columns}, in {text!r}")
        if not _NAME.match(name) or names.count(name) > 1:
            raise ConfigError(f"{var}: expected distinct column names separated by ',', got {text!r}")
    return names


def _parse_kafka(var: str, text: str, query: bool = False) -> tuple[str, str, bool]:
    """``(brokers, topic, tail)`` of ``kafka://HOST:PORT/TOPIC`` (sources may add ``?tail=false``)."""
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = None
    topic = parts.path.lstrip("/")
    form = "kafka://HOST:PORT/TOPIC[?tail=false]" if query else "kafka://HOST:PORT/TOPIC"
    if not parts.hostname or port is None or not topic or "/" in topic:
        raise ConfigError(f"{var}: expected {form}, got {text!r}")
    tail = True
    if parts.query:
        if not query or parts.query not in ("tail=true", "tail=false"):
            raise ConfigError(f"{var}: expected {form}, got {text!r}")
        tail = parts.query == "tail=true"
    return f"{parts.hostname}:{port}", topic, tail


def _parse_source(text: str) -> SourceSpec:
    var = "SKETCHWATCH_SOURCE"
    if text in ("", "generate"):
        return SourceSpec("generate")
    if text.startswith("file:"):
        path = text[len("file:") :]
        if not path:
            raise ConfigError(f"{var}: expected file:PATH, got {text!r}")

        try:
            format_of(path)
        except ValueError as e:
            raise ConfigError(f"{var}: {e}") from None
        if not Path(path).is_file():
            raise ConfigError(f"{var}: file {path!r} does not exist")
        return SourceSpec("file", path=path)
    if text.startswith("kafka://"):
        brokers, topic, tail = _parse_kafka(var, text, query=True)
        return SourceSpec("kafka", brokers=brokers, topic=topic, tail=tail)
    raise ConfigError(f"{var}: expected 'generate', 'file:PATH' or 'kafka://HOST:PORT/TOPIC', got {text!r}")


def _parse_sinks(text: str) -> tuple[SinkSpec, ...]:
    var = "SKETCHWATCH_SINKS"
    specs: list[SinkSpec] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if item == "stdout":
            spec = SinkSpec("stdout")
        elif item.startswith("kafka://"):
            brokers, topic, _ = _parse_kafka(var, item)
            spec = SinkSpec("kafka", brokers=brokers, topic=topic)
        elif item.startswith(("sqlite:", "postgresql", "postgres:")):
            spec = SinkSpec("sql", url=_check_sql_url(var, item))
        else:
            raise ConfigError(
                f"{var}: expected a comma-separated list of sqlite:///PATH, postgresql+psycopg://..., "
                f"stdout or kafka://HOST:PORT/TOPIC, got {item!r}"
            )
        if spec not in specs:
            specs.append(spec)
    if not specs:
        raise ConfigError(f"{var}: expected at least one sink, got {text!r}")
    return tuple(specs)


def _check_sql_url(var: str, url: str) -> str:

    try:
        u = make_url(url)
    except ArgumentError:
        raise ConfigError(f"{var}: not a database URL: {_redact(url)!r}") from None
    if u.drivername == "sqlite":
        if u.database in (None, "", ":memory:"):
            raise ConfigError(f"{var}: expected sqlite:///PATH (a file, not in-memory), got {url!r}")
        return url
    if u.drivername == "postgresql+psycopg":
        if not u.database:
            raise ConfigError(f"{var}: expected postgresql+psycopg://USER:PASS@HOST/DB, got {_redact(url)!r}")
        return url
    raise ConfigError(
        f"{var}: unsupported database driver {u.drivername!r} in {_redact(url)!r}; "
        "use sqlite:///PATH or postgresql+psycopg://USER:PASS@HOST/DB"
    )


def _redact(url: str) -> str:
    """``url`` with its password hidden (for error messages)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def build_sinks(config: Config) -> list[DynamicSink[Any]]:
    """The configured sinks, tables created; ConfigError (one line) if one cannot be opened."""

    sinks: list[DynamicSink[Any]] = []
    for spec in config.sinks:
        if spec.kind == "stdout":
            sinks.append(StdoutSink())
        elif spec.kind == "kafka":
            continue  # a partitioned sink: dataflows.common wires it (connectors.kafka.KafkaAlertSink)
        else:
            try:
                sinks.append(SqlSink(spec.url))
            except Exception as e:  # connection refused, permission denied, ...
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ConfigError(f"SKETCHWATCH_SINKS: cannot open {_redact(spec.url)!r}: {first}") from e
    return sinks


def build_source(
    config: Config, generator_factory: Callable[[str], GenerateFn] | None = None
) -> FixedPartitionedSource[Any, Any]:
    """The configured source.

    Parameters
    ----------
    config : Config
        The flow's configuration.
    generator_factory : callable, optional
        ``generator_factory(flow)`` returns the flow's generate function (see
        :data:`connectors.sources.GenerateFn`); called only for ``SKETCHWATCH_SOURCE=generate``.
        By default ``connectors.generators.generator_for``.

    Returns
    -------
    Source
        A :class:`~connectors.sources.GeneratorSource` (items: ``EventBatch``) or a
        :class:`~connectors.files.FileSource` (items: ``EventBatch | DeadLetter``).
    """
    spec = config.source
    if spec.kind == "generate":
        if generator_factory is None:
            generator_factory = importlib.import_module("connectors.generators").generator_for
        generate = generator_factory(config.flow)
        return GeneratorSource(config.flow, generate, config.events, config.seed, config.batch)
    if spec.kind == "file":
        try:
            return FileSource(spec.path, config.flow, batch_size=config.batch, parse_ahead=config.parse_ahead)
        except (OSError, ValueError) as e:
            raise ConfigError(f"SKETCHWATCH_SOURCE: {e}") from e
    raise ConfigError(f"SKETCHWATCH_SOURCE: {_KAFKA_INPUT}")
