"""GeneratorSource: batches, exact resume from the snapshot, contract checks."""

from __future__ import annotations

from collections.abc import Iterator

import bytewax.operators as op
import numpy as np
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from connectors.events import EventBatch
from connectors.sources import GeneratorSource


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
