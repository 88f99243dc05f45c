"""GeneratorSource: batches, exact resume from the snapshot, contract checks; PartitionProgress."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import bytewax.operators as op
import numpy as np
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, run_main

from connectors import sources
from connectors.events import SCHEMAS, DeadLetter, EventBatch, Progress
from connectors.sources import GeneratorSource, Layout, PartitionProgress, saved_state


def generate(n_events: int, seed: int, start: int, batch_size: int) -> Iterator[EventBatch]:
    """A tiny deterministic generator honouring the contract."""
    for lo in range(start, n_events, batch_size):
        pos = np.arange(lo, min(lo + batch_size, n_events), dtype=np.int64)
        yield EventBatch("demo", pos, {"x": (pos * 2654435761 + seed) % 1000})


def drain(
    src: GeneratorSource, state: int | None = None, limit: int | None = None
) -> tuple[list[EventBatch], int]:
    part = src.build_part("in", src.list_parts()[0], state)
    out: list[EventBatch] = []
    while limit is None or len(out) < limit:
        try:
            out.extend(part.next_batch())
        except StopIteration:
            break
    return out, part.snapshot()


def test_reads_everything_in_batches() -> None:
    batches, state = drain(GeneratorSource("demo", generate, 25, 3, batch_size=10))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert EventBatch.concat(batches).positions.tolist() == list(range(25)) and state == 25


@pytest.mark.parametrize("stop", [0, 1, 2, 3])
def test_resume_yields_the_tail(stop: int) -> None:
    src = GeneratorSource("demo", generate, 95, 11, batch_size=20)
    whole = EventBatch.concat(drain(src)[0])
    head, state = drain(src, limit=stop)
    tail, end = drain(src, state=state)
    again = EventBatch.concat(head + tail)
    assert end == 95
    assert again.positions.tolist() == whole.positions.tolist() and again["x"].tolist() == whole["x"].tolist()


def test_partition_name_and_arguments() -> None:
    src = GeneratorSource("fraud", generate, 5, 1)
    assert src.list_parts() == ["generate:fraud"]
    with pytest.raises(ValueError, match="is not 'generate:fraud'"):
        src.build_part("in", "x", None)
    with pytest.raises(ValueError, match="batch_size"):
        GeneratorSource("fraud", generate, 5, 1, batch_size=0)
    assert drain(GeneratorSource("demo", generate, 0, 1)) == ([], 0)


def test_contract_violations_are_loud() -> None:
    def skips(n: int, seed: int, start: int, batch_size: int) -> Iterator[EventBatch]:
        yield from generate(n, seed, start + 1, batch_size)

    def stops_early(n: int, seed: int, start: int, batch_size: int) -> Iterator[EventBatch]:
        yield from generate(n - 1, seed, start, batch_size)

    with pytest.raises(RuntimeError, match="broke its contract: expected positions from 0"):
        drain(GeneratorSource("demo", skips, 10, 1, batch_size=4))
    with pytest.raises(RuntimeError, match="stopped at position 9 of 10"):
        drain(GeneratorSource("demo", stops_early, 10, 1, batch_size=4))


def test_in_a_dataflow() -> None:
    sizes: list[int] = []
    flow = Dataflow("generator_test")
    op.output(
        "out",
        op.map("n", op.input("in", flow, GeneratorSource("demo", generate, 1000, 7, 64)), len),
        TestingSink(sizes),
    )
    run_main(flow)  # type: ignore[no-untyped-call]
    assert sum(sizes) == 1000


# -- PartitionProgress ------------------------------------------------------------------------


class _Scripted(FixedPartitionedSource[Any, int]):
    """Partitions that return scripted items per call ("end": StopIteration)."""

    def __init__(self, scripts: dict[str, list[Any]]) -> None:
        self.scripts = scripts

    def list_parts(self) -> list[str]:
        return sorted(self.scripts, reverse=True)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _ScriptedPart:
        return _ScriptedPart(self.scripts[for_part], resume_state or 0)


class _ScriptedPart(StatefulSourcePartition[Any, int]):
    def __init__(self, script: list[Any], start: int) -> None:
        self.script, self.i, self.closed = script, start, False

    def next_batch(self) -> list[Any]:
        step = self.script[self.i]
        if step == "end":
            raise StopIteration
        self.i += 1
        return list(step)

    def next_awake(self) -> datetime | None:
        return datetime(2026, 1, 1, tzinfo=timezone.utc)

    def snapshot(self) -> int:
        return self.i

    def close(self) -> None:
        self.closed = True


def _batch(n: int) -> EventBatch:
    return EventBatch("fraud", np.arange(n), {"ts": np.arange(n, dtype=float)})


def test_progress_stamps_batches_and_ends_with_a_final_marker() -> None:
    dead = DeadLetter("fraud", "f", 3, "bad", b"x")
    src = PartitionProgress(_Scripted({"a": [[_batch(2), dead], "end"], "b": [[], "end"]}), "fraud")
    part = src.build_part("in", "a", None)
    first = part.next_batch()
    assert first[1] is dead  # other items pass unchanged
    assert first[0].progress == Progress("a", ("a", "b"))  # every partition, sorted
    (marker,) = part.next_batch()
    assert marker.progress == Progress("a", ("a", "b"), "final") and len(marker) == 0
    assert list(marker.columns) == list(SCHEMAS["fraud"].names)  # empty columns of the flow
    with pytest.raises(StopIteration):
        part.next_batch()
    # the wrapped source's state, with the layout it was read under
    assert part.snapshot() == saved_state(1, Layout(("a", "b"), ()))
    assert part.next_awake() == datetime(2026, 1, 1, tzinfo=timezone.utc)
    part.close()


def test_progress_resumes_only_the_layout_aligned_state_was_kept_under() -> None:
    scripts = {"a": [[_batch(2)], [_batch(1)], "end"], "b": ["end"]}
    aligned = PartitionProgress(_Scripted(scripts), "fraud", aligned=("card_id",))
    saved = aligned.build_part("in", "a", None)
    saved.next_batch()
    state = saved.snapshot()
    assert state == saved_state(1, Layout(("a", "b"), ("card_id",)))
    assert len(aligned.build_part("in", "a", state).next_batch()[0]) == 1  # resumed where it was
    with pytest.raises(ValueError, match=r"input has partitions \['a', 'b', 'c'\] now, \['a', 'b'\] in the"):
        PartitionProgress(_Scripted({**scripts, "c": ["end"]}), "fraud", aligned=("card_id",)).build_part(
            "in", "a", state
        )
    with pytest.raises(
        ValueError, match="steps aligned by no column now, by 'card_id' in the recovery store"
    ):
        PartitionProgress(_Scripted(scripts), "fraud").build_part("in", "a", state)
    # without aligned steps, partitions may change; a state of an older version resumes as it is
    plain = saved_state(1, Layout(("a", "b"), ()))
    more = PartitionProgress(_Scripted({**scripts, "c": ["end"]}), "fraud")
    assert len(more.build_part("in", "a", plain).next_batch()[0]) == 1
    assert len(aligned.build_part("in", "a", 1).next_batch()[0]) == 1


def test_progress_announces_a_quiet_partition_once_until_it_has_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(sources.time, "monotonic", lambda: now[0])
    script: list[Any] = [[], [], [_batch(1)], [], []]
    part = PartitionProgress(_Scripted({"a": script}), "fraud", idle_after=30.0).build_part("in", "a", None)
    assert part.next_batch() == []  # 0 s without events
    now[0] += 30.0
    (idle,) = part.next_batch()
    assert idle.progress is not None and idle.progress.state == "idle" and len(idle) == 0
    now[0] += 100.0
    (data,) = part.next_batch()  # events again: no longer idle
    assert data.progress is not None and data.progress.state == "data"
    now[0] += 29.0
    assert part.next_batch() == []
    now[0] += 1.0
    assert [b.progress.state for b in part.next_batch()] == ["idle"]


def test_progress_refuses_a_bad_idle_time() -> None:
    with pytest.raises(ValueError, match="idle_after"):
        PartitionProgress(_Scripted({}), "fraud", idle_after=0.0)
    with pytest.raises(ValueError, match="not among"):
        Progress("c", ("a", "b"))
    with pytest.raises(ValueError, match="state"):
        Progress("a", ("a",), "paused")
