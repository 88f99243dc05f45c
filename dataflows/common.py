"""Assemble a sketchwatch flow: source -> parse -> sharded detectors -> sinks, plus a summary.

Every flow module (``dataflows.fraud``, ``.ddos``, ``.iot``, ``.sentiment``) lists its
detectors as :class:`~operators.runtime.DetectorSpec` and calls :func:`build_flow`. The
shape is the same for all::

    source ──┬── EventBatch ──► route by entity hash ──► detector shards ──┐
             │                                                         ├──► every sink
             └── DeadLetter ───────────────────────────────────────────┘
    (counts of events, dead letters, alerts, samples) ──► summary, printed at end of input
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Final, TextIO, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import FixedPartitionedSource
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.config import Config, ConfigError, build_sinks, build_source
from connectors.events import DeadLetter, EventBatch, Sample
from connectors.sources import PartitionProgress
from operators.alerts import Alert
from operators.runtime import GLOBAL_KEY, DetectorSpec, detector_step, group_spec, group_specs
from operators.sampling import sampler_for

__all__ = ["build_flow", "flow_from_env", "sampling_spec"]


def build_flow(
    name: str,
    detectors: list[DetectorSpec],
    config: Config,
    source: FixedPartitionedSource[Any, Any] | None = None,
    sinks: list[DynamicSink[Any]] | None = None,
) -> Dataflow:
    """The dataflow of flow ``name`` running ``detectors`` with ``config``'s source and sinks, or
    with ``source`` (partitions that emit :class:`EventBatch` lists) and ``sinks`` instead (the
    benchmarks' in-memory sources; ``config``'s Kafka sinks are added either way)."""
    tune_allocator()
    flow = Dataflow(f"sketchwatch_{name}")
    specs = [group_spec(group) for group in group_specs(detectors)]  # one step per entity column
    # the columns of the steps aligned with the input partitions: saved with the source's state
    aligned = tuple(s.key for s in specs if s.key in config.partitioned_by)
    split = op.branch("split", _source(flow, config, source, aligned), _is_batch)
    events = cast(Stream[EventBatch], split.trues)
    dead = cast(Stream[DeadLetter], split.falses)
    if config.env.get(CHAOS_VARIABLE):
        events = op.map("chaos", events, _Chaos(config.env[CHAOS_VARIABLE]))
    outputs: list[Stream[Any]] = [dead]
    for spec in specs:
        on_partitions = spec.key in aligned
        outputs.append(
            detector_step(spec.name, events, spec, config.shards, config.seed, config.max_skew, on_partitions)
        )
    results = op.merge("results", *outputs)
    _sinks(results, config, sinks)
    _summary(name, events, results)
    return flow


def _source(
    flow: Dataflow, config: Config, source: FixedPartitionedSource[Any, Any] | None, aligned: tuple[str, ...]
) -> Stream[EventBatch | DeadLetter]:
    if source is None and config.source.kind == "kafka":
        from connectors.kafka import kafka_input  # librdkafka only for flows that use Kafka

        return kafka_input(flow, "source", config, aligned=aligned)
    inner = build_source(config) if source is None else source
    return op.input("source", flow, PartitionProgress(inner, config.flow, config.idle_partition, aligned))


def _sinks(results: Stream[Any], config: Config, sinks: list[DynamicSink[Any]] | None) -> None:
    for index, sink in enumerate(build_sinks(config) if sinks is None else sinks):
        op.output(f"sink_{index}", results, sink)
    # Kafka alert sinks are partitioned: exactly-once needs one writer per Kafka partition.
    kafka_sinks = [s for s in config.sinks if s.kind == "kafka"]
    if not kafka_sinks:
        return
    from connectors.kafka import KafkaAlertSink, alert_output, kafka_settings

    settings = kafka_settings(config.env)
    for index, spec in enumerate(kafka_sinks):
        kafka_sink = KafkaAlertSink.from_url(f"kafka://{spec.brokers}/{spec.topic}", settings)
        alert_output(f"kafka_sink_{index}", results, kafka_sink)


def flow_from_env(name: str, detectors: Callable[[Config], list[DetectorSpec]]) -> Dataflow:
    """Build flow ``name`` from the environment; bad configuration exits with one clear line."""
    try:
        config = Config.from_env(name)
        return build_flow(name, detectors(config), config)
    except ConfigError as exc:
        raise SystemExit(f"sketchwatch {name}: configuration error: {exc}") from None


def sampling_spec(config: Config) -> list[DetectorSpec]:
    """The flow's stratified window sampler (``samples`` table), unless ``SKETCHWATCH_SAMPLE_K=0``."""
    if config.sample_k == 0:
        return []
    factory = partial(sampler_for, config.flow, config.sample_k, config.seed)
    # The preselection only reads the sampler's parameters, so a template instance serves.
    return [DetectorSpec("sampling", None, factory, local=factory().preselect)]


CHAOS_VARIABLE = "SKETCHWATCH_CHAOS_FAIL_AT"
"""Fault injection for crash tests: ``SKETCHWATCH_CHAOS_FAIL_AT=N`` makes the flow raise inside a
step when the event at input position ``N`` arrives. Unset in production: the step is not built."""


class _Chaos:
    def __init__(self, position: str) -> None:
        self.position = int(position)

    def __call__(self, batch: EventBatch) -> EventBatch:
        if (batch.positions == self.position).any():
            raise RuntimeError(f"chaos: injected failure at input position {self.position}")
        return batch


def _is_batch(item: EventBatch | DeadLetter) -> bool:
    return isinstance(item, EventBatch)


def _summary(name: str, events: Stream[EventBatch], results: Stream[Any]) -> None:
    counts = op.merge(
        "summary_in",
        op.map("count_events", events, _count_batch),
        op.map("count_results", results, _count_result),
    )
    keyed = op.key_on("summary_key", counts, lambda _: GLOBAL_KEY)
    report = op.stateful_batch("summary", keyed, lambda resume: _SummaryLogic(name, resume))
    # A step needs a sink downstream or Bytewax never runs it.
    op.output("summary_out", op.map("summary_text", report, _value), _PrintSink())


def _count_batch(batch: EventBatch) -> tuple[str, int, float | None]:
    return ("events", len(batch), batch.read_at)


def _count_result(item: Alert | Sample | DeadLetter) -> tuple[str, int, float | None]:
    if isinstance(item, Alert):
        return (f"alert:{item.detector}", 1, None)
    if isinstance(item, Sample):
        return ("samples", 1, None)
    return ("dead_letters", 1, None)


def _value(key_value: tuple[str, str]) -> str:
    return key_value[1]


class _SummaryLogic(StatefulBatchLogic[tuple[str, int, float | None], str, dict[str, int]]):
    """Counts what went through the flow and reports at end of input; its clock starts when
    a source partition was first asked for events (the first batch's ``read_at``), or when the
    first count arrives, whichever is earlier (after a resume: this run's)."""

    def __init__(self, name: str, resume: dict[str, int] | None) -> None:
        self.name = name
        self.counts: Counter[str] = Counter(resume or {})
        self.started = time.time()  # wall clock (comparable between processes): the report only

    def on_batch(self, values: list[tuple[str, int, float | None]]) -> tuple[Iterable[str], bool]:
        for kind, n, read_at in values:
            self.counts[kind] += n
            if read_at is not None:
                self.started = min(self.started, read_at)
        return (), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[str], bool]:
        elapsed = time.time() - self.started
        return [format_summary(self.name, self.counts, elapsed)], StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


class _PrintPartition(StatelessSinkPartition[str]):
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write_batch(self, items: list[str]) -> None:
        for text in items:
            try:
                print(text, file=self.out, flush=True)
            except BrokenPipeError:  # stdout closed by a reader (`| head`): the report is optional
                return


class _PrintSink(DynamicSink[str]):
    """Prints the end-of-run summary on standard output."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _PrintPartition:
        return _PrintPartition(sys.stdout)


def format_summary(name: str, counts: Counter[str] | dict[str, int], seconds: float) -> str:
    """The end-of-run report: events, dead letters, alerts per detector, samples, throughput."""
    events, dead = counts.get("events", 0), counts.get("dead_letters", 0)
    lines = [
        f"sketchwatch {name}: {events + dead:,} records in, {events:,} events processed, "
        f"{dead:,} dead letters; {events / max(seconds, 1e-9):,.0f} events/s over {seconds:.1f} s",
    ]
    alerts = sorted((k.split(":", 1)[1], v) for k, v in counts.items() if k.startswith("alert:"))
    total = sum(v for _, v in alerts)
    lines.append(f"  alerts: {total:,}" + "".join(f"\n    {det:<26} {n:>9,}" for det, n in alerts))
    lines.append(f"  samples: {counts.get('samples', 0):,}")
    return "\n".join(lines)


MMAP_THRESHOLD: Final = 1 << 20
"""Bytes from which glibc's malloc serves a block by mmap (see :func:`tune_allocator`)."""
_M_MMAP_THRESHOLD: Final = -3  # mallopt parameter number (malloc.h)


def tune_allocator() -> bool:
    """Serve allocations of :data:`MMAP_THRESHOLD` bytes or more by mmap (glibc only).

    Entity tables are numpy arrays that are reallocated a little larger whenever new entities
    arrive. glibc raises its mmap threshold to the size of every mmapped block it frees, so
    those arrays soon land on the heap, where each freed one leaves a hole the next, larger
    one does not fit: the heap keeps growing (1M cards and 100k merchants: ~11 MiB of peak
    RSS). A fixed threshold returns them to the system when freed; per-batch arrays below it
    stay on the heap, so there is no throughput cost (measured; 512 KiB saved 28 MiB but cost
    12 %). Skipped where ``MALLOC_MMAP_THRESHOLD_`` is set (the operator's choice) or the C
    library is not glibc. Returns whether it was applied.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
