"""Create, inspect and reset a Bytewax 0.21 SQLite recovery store.

A store is a directory of partition files ``part-<i>.sqlite3`` (``i`` in ``0..N-1``; Bytewax
opens every ``*.sqlite3`` file in the directory). Each file has five tables, found by running a
flow with recovery and reading the files (Bytewax ``src/recovery.rs``, tag v0.21.1):

``parts (created_at, part_index PK, part_count)``
    One row: which partition of how many this file is.
``exs (created_at, ex_num PK, worker_count, resume_epoch)``
    One row per execution (a run of the flow): how many workers, which epoch it resumed from.
    Sharded over the partitions by key, like ``fronts``.
``fronts (created_at, ex_num, worker_index, worker_frontier, PK (ex_num, worker_index))``
    Each worker's frontier: the oldest epoch it still has work in, i.e. every epoch below it is
    complete on that worker.
``commits (created_at, part_index PK, commit_epoch)``
    The epoch up to which this partition was garbage-collected: snapshots older than the newest
    one at or before it were deleted (after the backup interval ``-b``).
``snaps (created_at, step_id, state_key, snap_epoch, ser_change BLOB, PK (step_id, state_key, snap_epoch))``
    Snapshots: ``pickle.dumps`` of what ``snapshot()`` returned for one key of one step (an input
    partition's position, a stateful step's per-key state, a stateful sink partition's state) at
    the end of epoch ``snap_epoch``; ``NULL`` when the key's state was discarded. Rows are routed
    to partitions by a hash of ``(step_id, state_key)``.

A new execution resumes from epoch ``R``: over the latest execution's workers, the smallest
frontier (the execution's own ``resume_epoch`` for a worker without a row). It loads, per step
and key, the newest snapshot with ``snap_epoch < R``. So ``R - 1`` is the last complete epoch; 0
means none (a fresh store resumes from epoch 1). Bytewax refuses to resume when a partition's
``commit_epoch`` is above ``R`` (state needed for ``R`` was garbage-collected).

:func:`inspect_store` reads the files read-only with :mod:`sqlite3` and unpickles nothing but
builtin values (integers, strings, tuples, dicts...) to show input offsets; every other snapshot
is reported by size only.
"""

from __future__ import annotations

import io
import math
import pickle
import shutil
import sqlite3
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bytewax.recovery import init_db_dir

from connectors.sources import unpack_saved

__all__ = [
    "ExecutionReport",
    "PartitionReport",
    "StepReport",
    "StoreError",
    "StoreReport",
    "init_store",
    "inspect_store",
    "partition_files",
    "reset_store",
]

_SUFFIXES: Final = (".sqlite3", ".sqlite3-wal", ".sqlite3-shm", ".sqlite3-journal")
_DECODE_MAX_BYTES: Final = 1024  # snapshots larger than this are never unpickled
_DECODE_MAX_KEYS: Final = 64  # nor are steps with more keys than this (detector shards, ...)


class StoreError(RuntimeError):
    """A store operation was refused or failed; the message is one line."""


# --------------------------------------------------------------------------------------------
# Reports


@dataclass(frozen=True)
class StepReport:
    """The snapshots one step would resume from (in one partition, or summed over all).

    Attributes
    ----------
    step_id : str
        Bytewax step id, e.g. ``sketchwatch_iot.duplicate_payload``.
    keys : int
        State keys holding a snapshot (shards, input partitions, sink partitions, ...).
    discarded : int
        Keys whose newest snapshot is a discard (no state).
    total_bytes, max_bytes : int
        Sum and largest size of the pickled snapshots.
    epoch : int
        Newest snapshot epoch among the keys (0 if none).
    values : dict or None
        Key to decoded value when every snapshot of the step is a small builtin value (input
        positions, a Kafka sink's ``(next_offset, pending)``, summary counts); else ``None``.
    """

    step_id: str
    keys: int
    discarded: int
    total_bytes: int
    max_bytes: int
    epoch: int
    values: dict[str, Any] | None = None

    @property
    def is_input(self) -> bool:
        """Whether this looks like an input step: last id part ``source``, ``input``, ``*_source``
        or ``*_input`` (sketchwatch flows name theirs ``source``)."""
        last = self.step_id.rsplit(".", 1)[-1]
        return last in ("source", "input") or last.endswith(("_source", "_input"))


@dataclass(frozen=True)
class PartitionReport:
    """One partition file.

    Attributes
    ----------
    path : Path
        The ``.sqlite3`` file.
    part_index, part_count : int or None
        From its ``parts`` table (``None``: not a Bytewax partition).
    commit_epoch : int or None
        Garbage-collected up to this epoch (``None``: never committed).
    snapshot_epochs : tuple of int
        Distinct epochs of the snapshots stored (all of them, also those a resume ignores).
    latest_epoch : int or None
        Newest snapshot epoch stored.
    snapshots : int
        Snapshot rows stored.
    size_bytes : int
        File size, with its WAL.
    steps : tuple of StepReport
        What a resume would load from this file, per step.
    """

    path: Path
    part_index: int | None
    part_count: int | None
    commit_epoch: int | None
    snapshot_epochs: tuple[int, ...]
    latest_epoch: int | None
    snapshots: int
    size_bytes: int
    steps: tuple[StepReport, ...]


@dataclass(frozen=True)
class ExecutionReport:
    """One execution (run) of the flow on this store."""

    ex_num: int
    worker_count: int
    resume_epoch: int
    frontiers: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StoreReport:
    """What :func:`inspect_store` found.

    Attributes
    ----------
    directory : Path
    partition_count : int
        From the files' ``parts`` tables (0 if there are none).
    partitions : tuple of PartitionReport
        By partition index.
    executions : tuple of ExecutionReport
        By execution number.
    resume_epoch : int
        The epoch a new execution starts (1 for a fresh store).
    last_complete_epoch : int
        ``resume_epoch - 1``: the state and input positions a resume starts from (0: none).
    steps : tuple of StepReport
        Per step, summed over partitions.
    input_offsets : dict
        Input step id to {input partition: position} (e.g. ``generate:iot`` to the next event
        index, a file name to ``(byte offset, record index)``, ``<i>-<topic>`` to the next Kafka
        offset), as a resume would use them.
    problems : tuple of str
        Why Bytewax would refuse to resume (missing or inconsistent partitions), if anything.
    """

    directory: Path
    partition_count: int
    partitions: tuple[PartitionReport, ...]
    executions: tuple[ExecutionReport, ...]
    resume_epoch: int
    last_complete_epoch: int
    steps: tuple[StepReport, ...]
    input_offsets: dict[str, dict[str, Any]]
    problems: tuple[str, ...]

    def format(self) -> str:
        """A human-readable report (what ``python -m recovery inspect`` prints)."""
        lines = [
            f"recovery store {self.directory}: {self.partition_count} partitions, "
            f"{len(self.executions)} executions, last complete epoch {self.last_complete_epoch} "
            f"(a new run resumes from epoch {self.resume_epoch})"
        ]
        for ex in self.executions:
            fronts = ", ".join(f"w{w}={f}" for w, f in sorted(ex.frontiers.items())) or "none"
            lines.append(
                f"  execution {ex.ex_num}: {ex.worker_count} workers, resumed from epoch "
                f"{ex.resume_epoch}; frontiers {fronts}"
            )
        for problem in self.problems:
            lines.append(f"  PROBLEM: {problem}")
        if self.input_offsets:
            lines.append("  input offsets:")
            for step, offsets in sorted(self.input_offsets.items()):
                for key, value in sorted(offsets.items()):
                    lines.append(f"    {step} [{key}]: {value!r}")
        for part in self.partitions:
            epochs = _ranges(part.snapshot_epochs)
            committed = "never committed" if part.commit_epoch is None else f"committed {part.commit_epoch}"
            latest = "-" if part.latest_epoch is None else part.latest_epoch
            lines.append(
                f"  {part.path.name}: partition {part.part_index} of {part.part_count}, "
                f"{committed}, latest epoch {latest}, "
                f"{part.snapshots} snapshots (epochs {epochs or '-'}), {_size(part.size_bytes)}"
            )
            for s in part.steps:
                lines.append("    " + _step_line(s))
        if self.steps:
            lines.append("  all partitions:")
            for s in self.steps:
                lines.append("    " + _step_line(s))
        return "\n".join(lines)


def _step_line(s: StepReport) -> str:
    gone = f" (+{s.discarded} discarded)" if s.discarded else ""
    line = (
        f"{s.step_id}: {s.keys} key{'' if s.keys == 1 else 's'}{gone}, {_size(s.total_bytes)} total, "
        f"max {_size(s.max_bytes)}, epoch {s.epoch}"
    )
    if s.values is not None and not s.is_input and len(s.values) <= 4:
        shown = ", ".join(f"{k}={v!r}" for k, v in sorted(s.values.items()))
        line += f"; {shown[:200]}"
    return line


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    exp = min(int(math.log(n, 1024)), 3)
    return f"{n / 1024**exp:.1f} {('B', 'KiB', 'MiB', 'GiB')[exp]}"


def _ranges(epochs: tuple[int, ...]) -> str:
    out: list[str] = []
    for e in epochs:
        if out and out[-1].split("-")[-1] == str(e - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{e}"
        else:
            out.append(str(e))
    return ",".join(out)


# --------------------------------------------------------------------------------------------
# Reading the files


def partition_files(directory: Path | str) -> list[Path]:
    """The ``*.sqlite3`` files Bytewax would open in ``directory``, sorted by name."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.suffix == ".sqlite3" and p.is_file())


def _connect_ro(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    conn.execute("PRAGMA query_only = ON")
    return conn


class _BuiltinsOnly(pickle.Unpickler):
    """Unpickles builtin values only: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def _decode(blob: bytes) -> tuple[bool, Any]:
    if len(blob) > _DECODE_MAX_BYTES:
        return False, None
    try:
        return True, _BuiltinsOnly(io.BytesIO(blob)).load()
    except Exception:
        return False, None


@dataclass
class _Raw:
    part_index: int | None = None
    part_count: int | None = None
    commit_epoch: int | None = None
    exs: list[tuple[int, int, int]] = field(default_factory=list)
    fronts: list[tuple[int, int, int]] = field(default_factory=list)
    epochs: tuple[int, ...] = ()
    snapshots: int = 0
    error: str | None = None


def _triple(row: Any) -> tuple[int, int, int]:
    return int(row[0]), int(row[1]), int(row[2])


def _read_meta(path: Path) -> _Raw:
    raw = _Raw()
    try:
        conn = _connect_ro(path)
    except sqlite3.Error as e:
        raw.error = f"{path.name}: cannot open: {e}"
        return raw
    try:
        part = conn.execute("SELECT part_index, part_count FROM parts").fetchall()
        if len(part) == 1:
            raw.part_index, raw.part_count = int(part[0][0]), int(part[0][1])
        commit = conn.execute("SELECT commit_epoch FROM commits").fetchall()
        raw.commit_epoch = int(commit[0][0]) if commit else None
        raw.exs = [_triple(r) for r in conn.execute("SELECT ex_num, worker_count, resume_epoch FROM exs")]
        raw.fronts = [
            _triple(r) for r in conn.execute("SELECT ex_num, worker_index, worker_frontier FROM fronts")
        ]
        epochs = conn.execute("SELECT DISTINCT snap_epoch FROM snaps ORDER BY 1")
        raw.epochs = tuple(int(r[0]) for r in epochs)
        raw.snapshots = int(conn.execute("SELECT COUNT(*) FROM snaps").fetchone()[0])
    except sqlite3.Error as e:
        raw.error = f"{path.name}: not a Bytewax recovery partition ({e})"
    finally:
        conn.close()
    return raw


def _resume_point(raws: list[_Raw]) -> tuple[int, tuple[ExecutionReport, ...]]:
    """Bytewax's resume calculation over all partitions: (resume epoch, executions)."""
    exs: dict[int, tuple[int, int]] = {}
    fronts: dict[int, dict[int, int]] = defaultdict(dict)
    for raw in raws:
        for ex_num, workers, resume in raw.exs:
            exs[ex_num] = (workers, resume)
        for ex_num, worker, front in raw.fronts:
            fronts[ex_num][worker] = max(front, fronts[ex_num].get(worker, front))
    executions = tuple(
        ExecutionReport(n, w, r, dict(sorted(fronts.get(n, {}).items()))) for n, (w, r) in sorted(exs.items())
    )
    if not exs:
        return 1, executions
    last = max(exs)
    workers, resume = exs[last]
    progress = [max(resume, fronts[last].get(w, resume)) for w in range(workers)]
    return min(progress), executions


def _steps_of(path: Path, resume_epoch: int) -> tuple[StepReport, ...]:
    """Per step: the snapshots a resume from ``resume_epoch`` would load from ``path``."""
    conn = _connect_ro(path)
    try:
        rows = conn.execute(
            """WITH newest AS (
                 SELECT step_id, state_key, MAX(snap_epoch) AS snap_epoch
                 FROM snaps WHERE snap_epoch < ?1 GROUP BY step_id, state_key)
               SELECT step_id, state_key, snap_epoch, ser_change
               FROM snaps JOIN newest USING (step_id, state_key, snap_epoch)
               ORDER BY step_id, state_key""",
            (resume_epoch,),
        ).fetchall()
    finally:
        conn.close()
    by_step: dict[str, list[tuple[str, int, bytes | None]]] = defaultdict(list)
    for step_id, key, epoch, blob in rows:
        by_step[str(step_id)].append((str(key), int(epoch), blob))
    return tuple(_step_report(step, items) for step, items in sorted(by_step.items()))


def _step_report(step_id: str, items: list[tuple[str, int, bytes | None]]) -> StepReport:
    live = [(k, e, b) for k, e, b in items if b is not None]
    sizes = [len(b) for _, _, b in live]
    values: dict[str, Any] | None = None
    if live and len(live) <= _DECODE_MAX_KEYS:
        values = {}
        for key, _, blob in live:
            ok, value = _decode(blob)
            if not ok or isinstance(value, bytes | bytearray):  # bytes: a pickled object inside
                values = None
                break
            values[key] = value
    return StepReport(
        step_id=step_id,
        keys=len(live),
        discarded=len(items) - len(live),
        total_bytes=sum(sizes),
        max_bytes=max(sizes, default=0),
        epoch=max((e for _, e, _ in items), default=0),
        values=values,
    )


def _merge_steps(parts: list[PartitionReport]) -> tuple[StepReport, ...]:
    grouped: dict[str, list[StepReport]] = defaultdict(list)
    for part in parts:
        for s in part.steps:
            grouped[s.step_id].append(s)
    out = []
    for step_id, group in sorted(grouped.items()):
        values: dict[str, Any] | None = {}
        for s in group:
            if s.values is None or values is None:
                values = None
            else:
                values.update(s.values)
        out.append(
            StepReport(
                step_id=step_id,
                keys=sum(s.keys for s in group),
                discarded=sum(s.discarded for s in group),
                total_bytes=sum(s.total_bytes for s in group),
                max_bytes=max(s.max_bytes for s in group),
                epoch=max(s.epoch for s in group),
                values=values or None,
            )
        )
    return tuple(out)


def _file_size(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        p = path.with_name(path.name + suffix)
        if p.exists():
            total += p.stat().st_size
    return total


def inspect_store(directory: Path | str) -> StoreReport:
    """Read a recovery store: partitions, executions, resume epoch, per-step state, input offsets.

    Safe on a store in use: files are opened read-only and only builtin values are unpickled.

    Parameters
    ----------
    directory : path
        The recovery directory (``-r`` of ``bytewax.run``).

    Returns
    -------
    StoreReport

    Raises
    ------
    StoreError
        The directory does not exist or holds no ``*.sqlite3`` file.
    """
    d = Path(directory)
    if not d.is_dir():
        raise StoreError(f"{d}: no such directory")
    files = partition_files(d)
    if not files:
        raise StoreError(f"{d}: no recovery partitions (*.sqlite3); create them: python -m recovery init")
    raws = [_read_meta(f) for f in files]
    problems = [r.error for r in raws if r.error]
    counts = {r.part_count for r in raws if r.part_count is not None}
    count = max(counts, default=0)
    if len(counts) > 1:
        problems.append(f"partitions disagree on the partition count: {sorted(counts)}")
    found = sorted(r.part_index for r in raws if r.part_index is not None)
    missing = sorted(set(range(count)) - set(found))
    if missing:
        problems.append(f"missing partitions {missing} of {count}: Bytewax cannot resume")
    dupes = sorted({i for i in found if found.count(i) > 1})
    if dupes:
        problems.append(f"partition indexes {dupes} appear in more than one file")
    good = [r for r in raws if r.error is None]
    resume, executions = _resume_point(good)
    late = sorted(
        r.part_index
        for r in good
        if r.part_index is not None and r.commit_epoch is not None and r.commit_epoch > resume
    )
    if late:
        problems.append(
            f"partitions {late} were garbage-collected past resume epoch {resume}: Bytewax will refuse to "
            "resume (restored from backups of different times?)"
        )
    parts = []
    for path, raw in zip(files, raws, strict=True):
        steps = _steps_of(path, resume) if raw.error is None else ()
        parts.append(
            PartitionReport(
                path=path,
                part_index=raw.part_index,
                part_count=raw.part_count,
                commit_epoch=raw.commit_epoch,
                snapshot_epochs=raw.epochs,
                latest_epoch=raw.epochs[-1] if raw.epochs else None,
                snapshots=raw.snapshots,
                size_bytes=_file_size(path),
                steps=steps,
            )
        )
    parts.sort(key=lambda p: (p.part_index is None, p.part_index or 0, p.path.name))
    steps = _merge_steps(parts)
    offsets = {
        s.step_id: {key: unpack_saved(value)[0] for key, value in s.values.items()}
        for s in steps
        if s.is_input and s.values is not None
    }
    return StoreReport(
        directory=d,
        partition_count=count,
        partitions=tuple(parts),
        executions=executions,
        resume_epoch=resume,
        last_complete_epoch=resume - 1,
        steps=steps,
        input_offsets=offsets,
        problems=tuple(problems),
    )


# --------------------------------------------------------------------------------------------
# Changing the store


def _partition_count(directory: Path) -> int | None:
    """The partition count recorded in the store's files (None if unreadable or inconsistent)."""
    counts = {_read_meta(f).part_count for f in partition_files(directory)}
    if len(counts) == 1:
        (count,) = counts
        return count
    return None


def _delete_store_files(directory: Path) -> None:
    for p in directory.iterdir():
        if p.is_file() and p.name.endswith(_SUFFIXES):
            p.unlink()


PAGE_SIZE: Final = 65536
"""SQLite page size of the partitions :func:`init_store` makes (SQLite's largest; Bytewax's
files have 4096). A snapshot of many MB is written as 16x fewer pages, each a WAL frame and a
checkpoint copy: 1M cards (~30 MB per epoch) lose ~1.5 points of 1-second-snapshot cost."""


def _use_large_pages(path: Path) -> None:
    """Rebuild an empty partition file with :data:`PAGE_SIZE` pages (VACUUM can change the
    page size outside WAL mode only), then put it back in WAL mode as Bytewax made it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute("VACUUM")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


def _create(directory: Path, partitions: int) -> None:
    """Make fresh partitions in a scratch folder inside ``directory``, then move them in place."""
    scratch = Path(tempfile.mkdtemp(prefix=".recovery-init-", dir=directory))
    try:
        init_db_dir(scratch, partitions)  # type: ignore[no-untyped-call]
        for part in partition_files(scratch):
            _use_large_pages(part)
        _delete_store_files(directory)
        for p in sorted(scratch.iterdir()):
            if p.name.endswith(_SUFFIXES):
                p.replace(directory / p.name)
    except Exception as e:
        raise StoreError(f"{directory}: cannot create {partitions} recovery partitions: {e}") from e
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def init_store(
    directory: Path | str, partitions: int, *, force: bool = False, if_missing: bool = False
) -> StoreReport:
    """Create an empty recovery store of ``partitions`` partitions (``bytewax.recovery`` init,
    then :data:`PAGE_SIZE` pages).

    Parameters
    ----------
    directory : path
        Created if missing (with parents).
    partitions : int
        Partition count, >= 1 and fixed for the store's life: at least the largest total
        worker count you will ever run.
    force : bool, default False
        Replace an existing store, losing its state (the next run starts over).
    if_missing : bool, default False
        Leave an existing store alone if it has ``partitions`` partitions (idempotent set-up,
        e.g. a container's init step); a different count is still an error.

    Returns
    -------
    StoreReport
        Of the store now in ``directory``.

    Raises
    ------
    StoreError
        ``partitions < 1``, or the directory already holds a store (and neither ``force`` nor a
        matching ``if_missing``), or Bytewax failed to create the files.
    """
    if partitions < 1:
        raise StoreError(f"partition count must be >= 1, got {partitions}")
    if force and if_missing:
        raise StoreError("choose one of force and if_missing")
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise StoreError(f"{d}: exists and is not a directory")
    d.mkdir(parents=True, exist_ok=True)
    existing = partition_files(d)
    if existing and not force:
        count = _partition_count(d)
        if if_missing and count == partitions and len(existing) == partitions:
            return inspect_store(d)
        held = f"{count} partitions" if count is not None else f"{len(existing)} *.sqlite3 files"
        if if_missing:
            raise StoreError(
                f"{d}: already holds a recovery store with {held}, not {partitions}; the partition count "
                "cannot change (reset the store to start over: `python -m recovery reset DIR --yes`)"
            )
        raise StoreError(
            f"{d}: already holds a recovery store ({held}); refusing to overwrite it "
            "(--force replaces it and loses its state)"
        )
    _create(d, partitions)
    return inspect_store(d)


def reset_store(directory: Path | str, *, partitions: int | None = None) -> StoreReport:
    """Start over: delete the store's partitions and create empty ones, same partition count.

    The next run of the flow starts from the beginning of its input (Kafka: earliest offsets)
    with empty state. Stop every worker first.

    Parameters
    ----------
    directory : path
        An existing store.
    partitions : int, optional
        Partition count of the new store; by default the old store's (required when the old
        files are unreadable or disagree).

    Returns
    -------
    StoreReport
        Of the fresh store.

    Raises
    ------
    StoreError
        No store in ``directory``, or its partition count cannot be read and none was given.
    """
    d = Path(directory)
    files = partition_files(d)
    if not files:
        raise StoreError(f"{d}: no recovery store to reset (no *.sqlite3 files)")
    if partitions is None:
        partitions = _partition_count(d)
        if partitions is None:
            raise StoreError(f"{d}: cannot read a consistent partition count; pass it explicitly")
    if partitions < 1:
        raise StoreError(f"partition count must be >= 1, got {partitions}")
    _create(d, partitions)
    return inspect_store(d)
