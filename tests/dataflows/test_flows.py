"""Every flow end to end on its embedded default: generator or file in, SQLite out."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.recovery import RecoveryConfig
from bytewax.testing import cluster_main, run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dataflows.common
from connectors.config import Config
from connectors.events import EventBatch
from connectors.files import write_jsonl
from connectors.generators import generator_for
from connectors.sql import read_alerts, read_table
from dataflows.common import build_flow
from dataflows.registry import FLOWS, detectors_for
from recovery.store import init_store
from sketches.hashing import hash64_many

SEED = 11
# Enough events for each generator to inject anomalies (sentiment's first crisis needs ~4 min).
EVENTS = {"fraud": 30_000, "ddos": 30_000, "iot": 30_000, "sentiment": 250_000}


def _env(tmp_path: Path, events: int = 30_000, **extra: str) -> dict[str, str]:
    return {
        "SKETCHWATCH_EVENTS": str(events),
        "SKETCHWATCH_SEED": str(SEED),
        "SKETCHWATCH_SINKS": f"sqlite:///{tmp_path / 'out.db'}",
        "SKETCHWATCH_BATCH": "2000",
        **extra,
    }


def _run(flow: str, env: dict[str, str], workers: int = 1) -> list[dict[str, Any]]:
    config = Config.from_env(flow, env)
    dataflow = build_flow(flow, detectors_for(flow)(config), config)
    if workers == 1:
        run_main(dataflow)
    else:
        cluster_main(dataflow, [], 0, worker_count_per_proc=workers)
    return read_alerts(config.sinks[0].url)


def _ids(alerts: list[dict[str, Any]]) -> set[str]:
    return {a["alert_id"] for a in alerts}


@pytest.mark.parametrize("flow", FLOWS)
def test_one_and_two_workers_give_the_same_alerts(flow: str, tmp_path: Path) -> None:
    one = _run(flow, _env(tmp_path / "one", EVENTS[flow]))
    two = _run(flow, _env(tmp_path / "two", EVENTS[flow]), workers=2)
    assert one, f"{flow}: no alert on {EVENTS[flow]} generated events with injected anomalies"
    assert _ids(one) == _ids(two)
    assert len(one) == len(_ids(one)), "alert ids must be unique"


@pytest.mark.parametrize("flow", FLOWS)
def test_jsonl_file_gives_the_same_alerts_as_the_generator(flow: str, tmp_path: Path) -> None:
    path = tmp_path / f"{flow}.jsonl"
    write_jsonl(path, generator_for(flow)(EVENTS[flow], SEED, 0, 5000))
    from_generator = _run(flow, _env(tmp_path / "gen", EVENTS[flow]))
    from_file = _run(flow, _env(tmp_path / "file", EVENTS[flow], SKETCHWATCH_SOURCE=f"file:{path}"))
    assert from_generator
    assert _ids(from_file) == _ids(from_generator)


def test_samples_and_alert_rows_are_complete(tmp_path: Path) -> None:
    alerts = _run("fraud", _env(tmp_path))
    row = alerts[0]
    for column in ("alert_id", "flow", "detector", "entity", "event_ts", "score", "threshold", "evidence"):
        assert row[column] is not None, column
    samples = read_table(f"sqlite:///{tmp_path / 'out.db'}", "samples")
    assert samples and {s["stratum"] for s in samples} == {"purchase", "refund", "withdrawal", "transfer"}


def test_replaying_into_the_same_database_adds_nothing(tmp_path: Path) -> None:
    first = _run("iot", _env(tmp_path))
    second = _run("iot", _env(tmp_path))
    assert len(second) == len(first)


def _bytewax_run(flow: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "bytewax.run", f"dataflows.{flow}"],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_documented_command_runs_the_embedded_default(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    env = {"SKETCHWATCH_EVENTS": "20000", "PYTHONPATH": str(repo)}
    done = _bytewax_run("fraud", env, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "sketchwatch.db").exists()
    assert "20,000 events processed" in done.stdout
    assert "alerts:" in done.stdout
    assert read_alerts(f"sqlite:///{tmp_path / 'sketchwatch.db'}")


def test_bad_configuration_fails_at_start_with_one_line(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    done = _bytewax_run("fraud", {"SKETCHWATCH_EVENTS": "lots", "PYTHONPATH": str(repo)}, tmp_path)
    assert done.returncode != 0
    assert "SKETCHWATCH_EVENTS" in done.stderr
    message = [line for line in done.stderr.splitlines() if "SKETCHWATCH_EVENTS" in line]
    assert len(message) == 1
    assert not (tmp_path / "sketchwatch.db").exists()


garbage = st.one_of(
    st.binary(max_size=200).filter(lambda b: b"\n" not in b and b"\r" not in b),
    st.just(b'{"tx_id": "t", "card_id": "c"}'),
    st.just(b'{"tx_id": "t", "card_id": "c", "merchant_id": "m", "amount": "12", "type": "x", "ts": 1}'),
    st.just(b'{"tx_id": "t", "card_id": "c", "merchant_id": "m", "amount": NaN, "type": "x", "ts": 1}'),
    st.just(b'{"tx_id":"t","card_id":"c","merchant_id":"m","amount":1,"type":"x","ts":"2026-01-01T00:00"}'),
    st.just(b"[1, 2, 3]"),
    st.just(b"x" * 70_000),
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.lists(garbage, min_size=1, max_size=30), data=st.data())
def test_malformed_events_become_dead_letters_and_never_stop_the_flow(
    bad: list[bytes], data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("fuzz")
    good = "".join(b.to_jsonl() for b in generator_for("fraud")(2000, SEED, 0, 2000)).encode().splitlines()
    lines = list(good)
    for item in bad:
        lines.insert(data.draw(st.integers(0, len(lines))), item)
    path = tmp / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    env = _env(tmp, SKETCHWATCH_SOURCE=f"file:{path}")
    _run("fraud", env)
    dead = read_table(env["SKETCHWATCH_SINKS"], "dead_letters")
    assert len(dead) == len(bad)
    assert {d["position"] for d in dead} == {i for i, line in enumerate(lines) if line not in set(good)}


# -- several input partitions read by turns (per-partition clocks) -----------------------------


class _Partitions(FixedPartitionedSource[EventBatch, int]):
    """In-memory input partitions of event batches (resume state: batches emitted)."""

    def __init__(self, parts: dict[str, list[EventBatch]]) -> None:
        self.parts = parts

    def list_parts(self) -> list[str]:
        return list(self.parts)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _ListPartition:
        return _ListPartition(self.parts[for_part], resume_state or 0)


class _ListPartition(StatefulSourcePartition[EventBatch, int]):
    def __init__(self, batches: list[EventBatch], start: int) -> None:
        self.batches, self.next = batches, start

    def next_batch(self) -> list[EventBatch]:
        if self.next >= len(self.batches):
            raise StopIteration
        self.next += 1
        return [self.batches[self.next - 1]]

    def snapshot(self) -> int:
        return self.next


class _SlowFirstRead(_ListPartition):
    """Its first read takes ``delay`` seconds (a slow parse)."""

    delay = 0.6

    def next_batch(self) -> list[EventBatch]:
        if self.next == 0:
            time.sleep(self.delay)
        return super().next_batch()


class _SlowSource(_Partitions):
    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _ListPartition:
        return _SlowFirstRead(self.parts[for_part], resume_state or 0)


def test_the_summary_clock_starts_when_reading_begins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The report's events/s counts the first batches' reading and processing too: its clock
    # starts when a partition began reading them, not when their counts reach the summary.
    events = list(generator_for("fraud")(2_000, SEED, 0, 1_000))
    config = Config.from_env("fraud", _env(tmp_path))
    run_main(build_flow("fraud", detectors_for("fraud")(config), config, source=_SlowSource({"p": events})))
    line = next(x for x in capsys.readouterr().out.splitlines() if "events/s over" in x)
    seconds = float(line.rsplit("over ", 1)[1].removesuffix(" s"))
    assert seconds >= _SlowFirstRead.delay


def _by_card(events: EventBatch, parts: int, batch: int) -> dict[str, list[EventBatch]]:
    """``events`` in ``parts`` partitions by card (as a producer keyed by card fills Kafka
    partitions: each spans the whole time range), cut into batches of ``batch``; positions
    per partition, like offsets."""
    part = hash64_many(events["card_id"], 3) % np.uint64(parts)
    out = {}
    for p in range(parts):
        mine = events.take(np.flatnonzero(part == np.uint64(p)))
        mine = EventBatch(mine.flow, np.arange(len(mine), dtype=np.int64), dict(mine.columns))
        out[f"p{p}"] = [
            mine.take(np.arange(lo, min(lo + batch, len(mine)))) for lo in range(0, len(mine), batch)
        ]
    return out


def _run_source(
    source: FixedPartitionedSource[Any, Any], env: dict[str, str], workers: int = 1
) -> tuple[list[Any], int]:
    config = Config.from_env("fraud", env)
    dataflow = build_flow("fraud", detectors_for("fraud")(config), config, source=source)
    if workers == 1:
        run_main(dataflow)
    else:
        cluster_main(dataflow, [], 0, worker_count_per_proc=workers)
    url = config.sinks[0].url
    return read_alerts(url), len(read_table(url, "samples"))


def _what(alerts: list[dict[str, Any]]) -> Counter[tuple[str, str, float]]:
    """What was found. A duplicate is reported at the copy processed second, which with
    several partitions may be the earlier one: duplicates count by transaction."""
    return Counter(
        (a["detector"], a["entity"], a["event_ts"] if a["detector"] != "duplicate_tx" else 0.0)
        for a in alerts
    )


EVENTS_SKEW = 400_000  # the fraud generator's first merchant surges come after ~250k events


def test_partitions_read_far_apart_lose_no_alert(tmp_path: Path) -> None:
    # 4 partitions by card, read by turns in batches spanning ~400 s of event time each: one
    # partition's batch runs ~400 s ahead of the next one's (more than duplicate_tx's TTL of
    # 300 s and far more than the windows' 5 s lateness). The alerts (and the number of
    # samples) must be those of the same events in one partition.
    events = EventBatch.concat(list(generator_for("fraud")(EVENTS_SKEW, SEED, 0, 50_000)))
    one, one_samples = _run_source(_Partitions({"all": [events]}), _env(tmp_path / "one"))
    many = _Partitions(_by_card(events, 4, 50_000))
    got, got_samples = _run_source(many, _env(tmp_path / "many"))
    assert {d for d, _, _ in _what(one)} >= {"duplicate_tx", "merchant_surge", "amount_outlier"}
    assert _what(got) == _what(one)
    assert got_samples == one_samples
    # Without waiting for the trailing partitions (a skew allowance of 1 s) alerts are lost:
    # what the per-partition clock is for.
    lax, _ = _run_source(many, _env(tmp_path / "lax", SKETCHWATCH_MAX_SKEW="1"))
    assert sum(_what(lax).values()) < sum(_what(one).values())


@pytest.mark.parametrize(("workers", "partitions"), [(1, 4), (2, 4), (3, 4), (1, 1), (2, 3)])
def test_steps_aligned_with_card_partitions_find_what_one_partition_finds(
    workers: int, partitions: int, tmp_path: Path
) -> None:
    # SKETCHWATCH_PARTITIONED_BY: the card and duplicate steps keep a shard per partition on
    # its reader; the partitions (by card, read far apart) hold every card's and transaction's
    # events, so what is found is what one partition finds, on any number of workers. Fewer
    # partitions than SKETCHWATCH_SHARDS (4) must not overload the duplicate filters.
    events = EventBatch.concat(list(generator_for("fraud")(EVENTS_SKEW, SEED, 0, 50_000)))
    one, one_samples = _run_source(_Partitions({"all": [events]}), _env(tmp_path / "one"))
    many = _Partitions(_by_card(events, partitions, 50_000))
    env = _env(tmp_path / "aligned", SKETCHWATCH_PARTITIONED_BY="card_id,tx_id")
    got, got_samples = _run_source(many, env, workers)
    assert _what(got) == _what(one) and got_samples == one_samples
    assert len(got) == len(one)


def test_resuming_aligned_state_with_other_partitions_or_columns_stops_with_a_clear_error(
    tmp_path: Path,
) -> None:
    # Aligned state is kept per input partition: other partitions, or other aligned steps,
    # would leave it behind unread, so the source refuses to resume before reading anything.
    events = EventBatch.concat(list(generator_for("fraud")(20_000, SEED, 0, 5_000)))

    runs = iter(range(100))

    def run(store: Path, parts: int, aligned: str) -> list[dict[str, Any]]:
        out = tmp_path / f"run{next(runs)}"  # each run's own database: what it wrote
        config = Config.from_env("fraud", _env(out, SKETCHWATCH_PARTITIONED_BY=aligned))

        source = _Partitions(_by_card(events, parts, 5_000))
        flow = build_flow("fraud", detectors_for("fraud")(config), config, source=source)
        run_main(flow, recovery_config=RecoveryConfig(str(store)))
        return read_alerts(config.sinks[0].url)

    def refused(store: Path, parts: int, aligned: str) -> str:
        with pytest.raises(Exception) as info:
            run(store, parts, aligned)
        return _chain(info.value)

    store = tmp_path / "store"
    init_store(store, 1)
    assert run(store, 3, "card_id,tx_id")
    # the same layout resumes (in any column order, with a column that keys no step), and
    # writes nothing more: the input was read to its end
    assert run(store, 3, "tx_id,card_id,amount") == []
    added = refused(store, 4, "card_id,tx_id")  # a partition added, as to a Kafka topic
    assert (
        "the input has partitions ['p0', 'p1', 'p2', 'p3'] now, ['p0', 'p1', 'p2'] in the recovery store"
        in added
    )
    assert "python -m recovery reset DIR --yes" in added
    assert "steps aligned by 'card_id' now, by 'card_id,tx_id' in the recovery store" in refused(
        store, 3, "card_id"
    )
    assert "steps aligned by no column now, by 'card_id,tx_id'" in refused(store, 3, "")
    # and the other way: state kept by hash is not resumed by aligned steps either
    by_hash = tmp_path / "by_hash"
    init_store(by_hash, 1)
    run(by_hash, 3, "")
    run(by_hash, 4, "")  # without aligned steps partitions may change: state is keyed by hash
    assert "steps aligned by 'card_id' now, by no column in the recovery store" in refused(
        by_hash, 4, "card_id"
    )


def _chain(exc: BaseException | None) -> str:
    """The messages of ``exc`` and of the exceptions it was raised from (Bytewax wraps a step's)."""
    out = []
    while exc is not None:
        out.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(out)


def test_allocator_tuning_applies_once_unless_the_operator_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert dataflows.common.tune_allocator() is sys.platform.startswith("linux")
    assert dataflows.common.tune_allocator() is sys.platform.startswith("linux")  # idempotent
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert dataflows.common.tune_allocator() is False


def test_velocity_lateness_comes_from_its_variable() -> None:
    def velocity(env: dict[str, str]) -> Any:
        specs = detectors_for("fraud")(Config.from_env("fraud", env))
        return next(s for s in specs if s.name == "card_velocity").factory()

    set_ = velocity({"SKETCHWATCH_FRAUD_VELOCITY_LATENESS": "5", "SKETCHWATCH_FRAUD_VELOCITY_GAP": "3"})
    assert (set_.lateness, set_.recall) == (5.0, 8.0)
    assert velocity({}).lateness == 60.0


@pytest.mark.parametrize("flow", ["fraud", "iot"])
def test_entity_detectors_are_keyed_by_the_routing_hashes(tmp_path: Path, flow: str) -> None:
    # key_seed = SKETCHWATCH_SEED: a shard's tables use the hashes the split carried
    config = Config.from_env(flow, _env(tmp_path, SKETCHWATCH_SEED="4242"))
    keyed = [d for d in (spec.factory() for spec in detectors_for(flow)(config)) if hasattr(d, "key_seed")]
    assert len(keyed) == 2
    assert all(d.key_seed == config.seed == 4242 for d in keyed)  # type: ignore[attr-defined]
