"""Sketch throughput against peers measured in the same process.

Run: ``python -m bench.sketches [--items N] [--repeats R] [--json PATH]``

For Bloom, Count-Min, HyperLogLog and SpaceSaving, it times one batch ``update`` of N string
keys (``"user-<i>"``) and of N numpy int64 keys, and the same work through the peers a Python
team would otherwise use: Apache DataSketches' binding (a per-item ``update`` loop, on the same
strings and on the same integers as Python ints) and pyprobables (per-item ``add``; timed on a
tenth of the items because it is slow, and reported as a rate). Every figure is the median of
``R`` runs with the min-max range, and every comparison is a ratio within this run, because the
machine is shared and noisy. Results also go to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import sketches
from sketches import BloomFilter, CountMinSketch, HyperLogLog, SpaceSaving
from sketches.hashing import BACKEND

# Targets from the foundation issue: ours / peer items-per-second.
TARGETS = {"datasketches/str": 1.2, "datasketches/int": 2.5, "pyprobables": 20.0}
CMS_WIDTH, CMS_DEPTH = 2719, 5  # epsilon = 0.001, delta = 0.0067
BLOOM_CAPACITY, BLOOM_FP = 1_000_000, 0.01
HLL_P = 12
TOPK = 1024


@dataclass
class Rate:
    """Items per second over repeated runs."""

    runs: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def summary(self) -> dict[str, float]:
        return {"median": self.median, "min": min(self.runs), "max": max(self.runs)}


def measure(work: Callable[[], object], items: int, repeats: int) -> Rate:
    """Run ``work`` ``repeats`` times and return its rates in items per second."""
    rate = Rate()
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        rate.runs.append(items / (time.perf_counter() - start))
    return rate


def fresh_batch(factory: Callable[[], Any], batch: Any) -> Callable[[], None]:
    """One run: a new sketch and one batch update."""
    return lambda: factory().update(batch)


def fresh_loop(factory: Callable[[], Any], method: str, values: list[Any]) -> Callable[[], None]:
    """One run: a new peer object and one Python call per item, as its API requires."""

    def run() -> None:
        call = getattr(factory(), method)
        for value in values:
            call(value)

    return run


OURS: dict[str, Callable[[], Any]] = {
    "bloom": lambda: BloomFilter.from_error(BLOOM_CAPACITY, BLOOM_FP),
    "countmin": lambda: CountMinSketch(CMS_WIDTH, CMS_DEPTH),
    "hyperloglog": lambda: HyperLogLog(HLL_P),
    "spacesaving": lambda: SpaceSaving(TOPK),
}


def datasketches_peer(structure: str) -> Callable[[], Any] | None:
    import datasketches as ds  # type: ignore[import-untyped]

    peers: dict[str, Callable[[], Any]] = {
        "countmin": lambda: ds.count_min_sketch(CMS_DEPTH, CMS_WIDTH),
        "hyperloglog": lambda: ds.hll_sketch(HLL_P),
        "spacesaving": lambda: ds.frequent_items_sketch(11),  # 2**11 map slots ~ 1536 tracked items
    }
    return peers.get(structure)


def pyprobables_peer(structure: str) -> Callable[[], Any] | None:
    from probables import BloomFilter as PBloom
    from probables import CountMinSketch as PCountMin
    from probables import HeavyHitters

    peers: dict[str, Callable[[], Any]] = {
        "bloom": lambda: PBloom(est_elements=BLOOM_CAPACITY, false_positive_rate=BLOOM_FP),
        "countmin": lambda: PCountMin(width=CMS_WIDTH, depth=CMS_DEPTH),
        "spacesaving": lambda: HeavyHitters(num_hitters=TOPK, width=CMS_WIDTH, depth=CMS_DEPTH),
    }
    return peers.get(structure)


def bench_row(structure: str, kind: str, keys: dict[str, Any], repeats: int) -> dict[str, Any]:
    batch = keys[kind]
    n = len(batch)
    row: dict[str, Any] = {"structure": structure, "keys": kind, "items": n}
    row["sketchwatch"] = measure(fresh_batch(OURS[structure], batch), n, repeats).summary()
    peer = datasketches_peer(structure)
    if peer is not None:
        values = keys["str"] if kind == "str" else keys["int_list"]
        row["datasketches"] = measure(fresh_loop(peer, "update", values), n, repeats).summary()
    slow_peer = pyprobables_peer(structure)
    if slow_peer is not None:
        # pyprobables hashes strings only; ints go through str() as its users must do.
        head = keys["int_list"][: n // 10]
        subset = keys["str"][: n // 10] if kind == "str" else [str(v) for v in head]
        row["pyprobables"] = measure(fresh_loop(slow_peer, "add", subset), len(subset), repeats).summary()
    return row


def ratios(row: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for peer in ("datasketches", "pyprobables"):
        if peer in row:
            out[peer] = row["sketchwatch"]["median"] / row[peer]["median"]
    return out


def verdicts(row: dict[str, Any]) -> list[str]:
    notes = []
    r = ratios(row)
    if "datasketches" in r:
        target = TARGETS[f"datasketches/{row['keys']}"]
        notes.append(f"DS {'ok' if r['datasketches'] >= target else 'MISS'} (target {target}x)")
    if "pyprobables" in r:
        target = TARGETS["pyprobables"]
        notes.append(f"pyprob {'ok' if r['pyprobables'] >= target else 'MISS'} (target {target}x)")
    return notes


def fmt(summary: dict[str, float] | None) -> str:
    if summary is None:
        return "-"
    return f"{summary['median'] / 1e6:6.2f} ({summary['min'] / 1e6:.2f}-{summary['max'] / 1e6:.2f})"


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"hash backend: {BACKEND}; M items/s, median (min-max)")
    header = f"{'structure':12} {'keys':4} {'sketchwatch':>20} {'datasketches':>20} {'ratio':>6}"
    print(header + f" {'pyprobables':>20} {'ratio':>7}  verdict")
    for row in rows:
        r = ratios(row)
        ds_ratio = f"{r['datasketches']:5.1f}x" if "datasketches" in r else "-"
        pp_ratio = f"{r['pyprobables']:6.1f}x" if "pyprobables" in r else "-"
        print(
            f"{row['structure']:12} {row['keys']:4} {fmt(row['sketchwatch']):>20} "
            f"{fmt(row.get('datasketches')):>20} {ds_ratio:>6} {fmt(row.get('pyprobables')):>20} "
            f"{pp_ratio:>7}  {'; '.join(verdicts(row))}"
        )


def make_keys(items: int, seed: int) -> dict[str, Any]:
    ints = np.random.default_rng(seed).integers(0, 10_000_000, items, dtype=np.int64)
    int_list = ints.tolist()
    return {"int": ints, "int_list": int_list, "str": [f"user-{i}" for i in int_list]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("bench/results/sketches.json"))
    parser.add_argument("--only", nargs="*", default=["bloom", "countmin", "hyperloglog", "spacesaving"])
    args = parser.parse_args(argv)
    keys = make_keys(args.items, seed=42)
    rows = [bench_row(s, kind, keys, args.repeats) for s in args.only for kind in ("str", "int")]
    print_table(rows)
    for row in rows:
        row["ratios"] = ratios(row)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "numpy": np.__version__, "hash_backend": BACKEND}
    meta["sketches_version"] = getattr(sketches, "__version__", "0.1.0")
    args.json.write_text(json.dumps({"meta": meta, "rows": rows, "targets": TARGETS}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
