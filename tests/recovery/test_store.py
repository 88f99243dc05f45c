"""recovery.store and ``python -m recovery`` on stores written by real Bytewax runs of the IoT flow."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.config import DEFAULTS
from connectors.sql import read_alerts
from recovery.__main__ import main
from recovery.store import PAGE_SIZE, StoreError, init_store, inspect_store, partition_files, reset_store

REPO = Path(__file__).resolve().parents[2]
EVENTS = 20_000
INPUT = "sketchwatch_iot.source"


def run_flow(store: Path, workdir: Path, workers: int = 1) -> str:
    """The IoT flow on ``EVENTS`` generated events with recovery in ``store``; its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKETCHWATCH_", "BYTEWAX_"))}
    env.update(
        PYTHONPATH=str(REPO),
        SKETCHWATCH_EVENTS=str(EVENTS),
        SKETCHWATCH_SINKS=f"sqlite:///{workdir / 'out.db'}",
    )
    cmd = [sys.executable, "-m", "bytewax.run", "dataflows.iot", "-r", str(store), "-s", "1", "-b", "0"]
    proc = subprocess.run(
        [*cmd, "-w", str(workers)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work dir holding ``store`` (2 partitions) after one complete run, and ``out.db``."""
    work = tmp_path_factory.mktemp("ran")
    init_store(work / "store", 2)
    out = run_flow(work / "store", work)
    assert f"{EVENTS:,} events processed" in out
    return work


@pytest.fixture
def store(ran: Path, tmp_path: Path) -> Path:
    """A private copy of the run's store (and its out.db) to change."""
    shutil.copytree(ran, tmp_path / "work")
    return tmp_path / "work" / "store"


def snapshot_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("select count(*) from snaps").fetchone()[0])
    finally:
        conn.close()


def test_init_creates_an_empty_store(tmp_path: Path) -> None:
    report = init_store(tmp_path / "a" / "store", 3)  # parents are created
    names = [p.name for p in partition_files(tmp_path / "a" / "store")]
    assert names == [f"part-{i}.sqlite3" for i in range(3)]
    assert report.partition_count == 3 and [p.part_index for p in report.partitions] == [0, 1, 2]
    assert (report.resume_epoch, report.last_complete_epoch, report.executions) == (1, 0, ())
    assert report.steps == () and report.input_offsets == {} and report.problems == ()
    assert all(p.commit_epoch is None and p.snapshots == 0 for p in report.partitions)
    assert not [p for p in (tmp_path / "a" / "store").iterdir() if p.is_dir()]  # scratch removed
    for part in partition_files(tmp_path / "a" / "store"):  # large pages, WAL as Bytewax made it
        assert pragmas(part) == (PAGE_SIZE, "wal")


def pragmas(path: Path) -> tuple[int, str]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("pragma page_size").fetchone()[0], conn.execute("pragma journal_mode").fetchone()[
            0
        ]
    finally:
        conn.close()


def test_runs_keep_the_large_pages(ran: Path) -> None:
    # Bytewax writes, collects and resumes (test_resume_...) in the files as init_store made them
    assert [pragmas(p) for p in partition_files(ran / "store")] == [(PAGE_SIZE, "wal")] * 2


def test_init_refuses_to_overwrite(store: Path) -> None:
    before = inspect_store(store)
    with pytest.raises(StoreError, match="already holds a recovery store \\(2 partitions\\); refusing"):
        init_store(store, 2)
    assert init_store(store, 2, if_missing=True) == before  # kept as it is
    with pytest.raises(StoreError, match="with 2 partitions, not 4; the partition count cannot change"):
        init_store(store, 4, if_missing=True)
    assert inspect_store(store) == before
    fresh = init_store(store, 4, force=True)
    assert fresh.partition_count == 4 and fresh.last_complete_epoch == 0 and fresh.steps == ()
    assert len(partition_files(store)) == 4
    with pytest.raises(StoreError, match=">= 1"):
        init_store(store.parent / "x", 0)


def test_inspect_a_real_run(ran: Path) -> None:
    report = inspect_store(ran / "store")
    assert report.problems == ()
    assert report.partition_count == 2 and len(report.partitions) == 2
    (ex,) = report.executions
    assert (ex.ex_num, ex.worker_count, ex.resume_epoch) == (0, 1, 1)
    assert ex.frontiers == {0: report.resume_epoch}
    assert report.last_complete_epoch >= 1 and report.last_complete_epoch == report.resume_epoch - 1
    # The input position a resume starts from: the generator's next event index.
    assert report.input_offsets == {INPUT: {"generate:iot": EVENTS}}
    steps = {s.step_id: s for s in report.steps}
    # iot's three device detectors share one step (operators.runtime.group_specs)
    device = "duplicate_payload__stuck_sensor__threshold_breaches"
    for name in (device, "zone_zscore"):
        s = steps[f"sketchwatch_iot.{name}"]
        assert 1 <= s.keys <= 16 and s.values is None  # pickled detector shards: size only
        assert 0 < s.max_bytes <= s.total_bytes and s.epoch <= report.last_complete_epoch
    shards = int(DEFAULTS["SKETCHWATCH_SHARDS"])
    assert steps[f"sketchwatch_iot.{device}"].keys == shards  # every shard saw a device
    summary = steps["sketchwatch_iot.summary"].values
    assert summary is not None and summary["all"]["events"] == EVENTS
    total = 0
    for part in report.partitions:
        assert part.commit_epoch == report.last_complete_epoch  # -b 0: collected right away
        assert part.latest_epoch is not None and part.latest_epoch <= report.last_complete_epoch
        assert part.snapshots == snapshot_rows(part.path) == sum(s.keys + s.discarded for s in part.steps)
        assert part.size_bytes >= part.path.stat().st_size
        total += part.snapshots
    assert total == sum(s.keys + s.discarded for s in report.steps)
    text = report.format()
    assert f"{INPUT} [generate:iot]: {EVENTS}" in text
    assert "part-0.sqlite3: partition 0 of 2" in text and "sketchwatch_iot.zone_zscore:" in text


def test_resume_adds_an_execution_and_replays_nothing(store: Path) -> None:
    work = store.parent
    alerts = read_alerts(f"sqlite:///{work / 'out.db'}")
    before = inspect_store(store)
    out = run_flow(store, work, workers=2)  # the input is exhausted: resumes at its end
    assert "0 events processed" in out or f"{EVENTS:,} events processed" in out
    after = inspect_store(store)
    assert [e.ex_num for e in after.executions] == [0, 1]
    assert after.executions[1].worker_count == 2
    assert after.executions[1].resume_epoch == before.resume_epoch
    assert after.input_offsets == {INPUT: {"generate:iot": EVENTS}}
    assert after.last_complete_epoch >= before.last_complete_epoch
    assert read_alerts(f"sqlite:///{work / 'out.db'}") == alerts


def test_reset_starts_over(store: Path) -> None:
    report = reset_store(store)
    assert report.partition_count == 2 and len(partition_files(store)) == 2
    assert (report.executions, report.steps, report.last_complete_epoch) == ((), (), 0)
    assert all(snapshot_rows(p) == 0 for p in partition_files(store))
    run_flow(store, store.parent)  # Bytewax accepts the fresh store and reads from the start
    again = inspect_store(store)
    assert len(again.executions) == 1 and again.input_offsets == {INPUT: {"generate:iot": EVENTS}}
    assert reset_store(store, partitions=3).partition_count == 3
    with pytest.raises(StoreError, match="no recovery store to reset"):
        reset_store(store.parent / "nowhere")


def test_inspect_reports_damage(store: Path) -> None:
    (store / "part-1.sqlite3").unlink()
    report = inspect_store(store)
    assert any("missing partitions [1] of 2" in p for p in report.problems)
    (store / "junk.sqlite3").write_bytes(b"not a database")
    assert any("junk.sqlite3" in p for p in inspect_store(store).problems)
    with pytest.raises(StoreError, match="no such directory"):
        inspect_store(store / "nope")
    empty = store.parent / "empty"
    empty.mkdir()
    with pytest.raises(StoreError, match="no recovery partitions"):
        inspect_store(empty)


def test_command_line(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(store)]) == 0
    assert f"{INPUT} [generate:iot]: {EVENTS}" in capsys.readouterr().out
    assert main(["inspect", str(store), "--json"]) == 0
    assert '"generate:iot": 20000' in capsys.readouterr().out

    assert main(["init", str(store), "--partitions", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("recovery: error: ") and err.count("\n") == 1
    assert main(["init", str(store), "--partitions", "2", "--if-missing"]) == 0
    assert "already holds a store of 2 partitions" in capsys.readouterr().out

    assert main(["reset", str(store)]) == 1  # no --yes: nothing happens
    assert "run again with --yes" in capsys.readouterr().err
    assert inspect_store(store).input_offsets == {INPUT: {"generate:iot": EVENTS}}
    assert main(["reset", str(store), "--yes"]) == 0
    assert inspect_store(store).input_offsets == {}

    fresh = store.parent / "fresh"
    proc = subprocess.run(
        [sys.executable, "-m", "recovery", "init", str(fresh), "--partitions", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"recovery: created 2 empty partitions in {fresh}"
