"""Vectorised sketch paths the operators use, against per-item updates of the same work.

Run: ``python -m bench.vectorised [--items N] [--repeats R] [--json PATH]``

Each row times one vectorised path (batch hashing, Bloom test-and-set, many DGIM windows in one
array, per-entity decayed statistics in numpy columns, Count-Min and HyperLogLog batch updates)
on N items in batches of the flows' default source batch (100,000 events), and the per-item
design a Python team would otherwise write (one call per item; timed on N/10 items because it is
slow, and reported as a rate). Keys are the fraud generator's events (``card-047245``,
``tx-000000123`` with its injected duplicates, real timestamps and amounts) or random int64.
Setup (generating events, building fresh sketches) is outside the timed region. Every figure is
the median of ``R`` runs with the min-max range; the two sides of a row alternate run by run and
the ratio is taken within the row (median over median; also min-max of the paired runs),
because the machine is shared and noisy. Results also go to a JSON file.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import mmh3
import numpy as np
from numpy.typing import NDArray
from probables import BloomFilter as PBloom

from bench.baseline_fraud import _mmh3_hashes, amount_outlier
from bench.sketches import Rate, measure
from connectors.events import EventBatch
from connectors.generators import generator
from operators.alerts import Alert
from operators.detectors.entity import OutlierDetector
from sketches import DGIM, AgingBloomFilter, BloomFilter, CountMinSketch, DecayingAggregate, HyperLogLog
from sketches.dgim_table import DGIMTable
from sketches.hashing import BACKEND, hash64, hash64_many

BATCH = 100_000  # the flows' default source batch (SKETCHWATCH_BATCH): operators see batches this big
PER_ITEM_SHARE = 10  # per-item loops run on items // PER_ITEM_SHARE items
SEED = 7
# duplicate_tx defaults (dataflows/fraud.py, DuplicateDetector): per-shard filter for one shard
DUP_TTL, DUP_CAPACITY, DUP_FP, DUP_CHUNK = 300.0, 200_000, 1e-6, 1 << 15
# card_velocity defaults: a DGIM over the last 10 events, r = 8, one row per card
DGIM_WINDOW, DGIM_R, DGIM_ENTITIES, DGIM_ONES = 10, 8, 100_000, 0.5
# amount_outlier defaults (dataflows/fraud.py)
OUT_HALF_LIFE, OUT_MIN_HISTORY, OUT_Z, OUT_RATIO, OUT_IDLE = 86_400.0, 5, 4.0, 10.0, 604_800.0
# windowed detectors size their Count-Min sketches by (epsilon, delta) = (0.001, 0.001); HLL p = 12
CMS_EPSILON, CMS_DELTA, HLL_P = 0.001, 0.001, 12

T = TypeVar("T")
Work = Callable[[], object]
Prepare = Callable[[], Work]  # builds fresh state (untimed) and returns the work to time


@dataclass(frozen=True)
class Workload:
    """The inputs every row draws from, built once before any timing."""

    batches: list[EventBatch]  # fraud events, BATCH per batch
    head: list[dict[str, Any]]  # the first items // PER_ITEM_SHARE events as Python dicts
    ints: list[NDArray[np.int64]]  # random int64 keys, BATCH per batch
    int_head: list[int]  # the first of them as Python ints

    @property
    def items(self) -> int:
        return sum(len(b) for b in self.batches)

    @property
    def head_items(self) -> int:
        return len(self.head)

    def column(self, name: str) -> list[NDArray[Any]]:
        return [b[name] for b in self.batches]

    def head_column(self, name: str) -> list[Any]:
        return [ev[name] for ev in self.head]


def split(values: NDArray[Any], size: int = BATCH) -> list[NDArray[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def make_workload(items: int, seed: int = SEED) -> Workload:
    batches = list(generator("fraud")(items, seed, 0, BATCH))
    n_head = max(1, items // PER_ITEM_SHARE)
    names = ("tx_id", "card_id", "amount", "ts")
    cols = [np.concatenate([b[c] for b in batches])[:n_head].tolist() for c in names]
    head = [dict(zip(names, values, strict=True)) for values in zip(*cols, strict=True)]
    ints = np.random.default_rng(seed).integers(-(2**62), 2**62, items, dtype=np.int64)
    return Workload(batches, head, split(ints), ints[:n_head].tolist())


@dataclass(frozen=True)
class Case:
    """One row: a vectorised path and the per-item design doing the same work."""

    path: str
    vectorised: Prepare
    per_item: Prepare
    items: int  # items one vectorised run handles
    per_item_items: int  # items one per-item run handles


def ready(work: Work) -> Prepare:
    """A stateless path needs no fresh state per run."""
    return lambda: work


def each(batches: Sequence[T], fn: Callable[[T], object]) -> Work:
    """One call per batch, as the operators make it."""
    return lambda: [fn(b) for b in batches]


# -- 1. hashing -------------------------------------------------------------------------------------


def hashing_cases(w: Workload) -> list[Case]:
    cards = w.column("card_id")  # object arrays of str, as a detector gets its key column
    head = w.head_column("card_id")
    n, k = w.items, w.head_items

    def ours_loop(items: list[Any]) -> Work:
        return lambda: [hash64(x, SEED) for x in items]

    def mmh3_loop() -> list[int]:
        return [mmh3.hash128(x, SEED) for x in head]  # hash64 of a str is its low 64 bits

    batch_str = ready(each(cards, lambda c: hash64_many(c, SEED)))
    batch_int = ready(each(w.ints, lambda c: hash64_many(c, SEED)))
    return [
        Case("hash64_many(str) vs hash64 loop", batch_str, ready(ours_loop(head)), n, k),
        Case("hash64_many(str) vs mmh3.hash128 loop", batch_str, ready(mmh3_loop), n, k),
        Case("hash64_many(int64 array) vs hash64 loop", batch_int, ready(ours_loop(w.int_head)), n, k),
    ]


# -- 2. Bloom test-and-set --------------------------------------------------------------------------


def bloom_cases(w: Workload) -> list[Case]:
    txs, times = w.column("tx_id"), w.column("ts")
    head_tx, head_ts = w.head_column("tx_id"), w.head_column("ts")
    n, k = w.items, w.head_items

    # Plain filters sized for all n ids at duplicate_tx's fp_rate (both sides: the same bit array).
    def ours_batch() -> Work:
        f = BloomFilter.from_error(n, DUP_FP, SEED)
        return each(txs, f.check_and_add_many)

    def ours_loop() -> Work:
        check = BloomFilter.from_error(n, DUP_FP, SEED).check_and_add
        return lambda: [check(x) for x in head_tx]

    def pyprobables_loop() -> Work:
        # as bench.baseline_fraud builds it: mmh3 double hashing, one hash per id for check + add
        f = PBloom(est_elements=n, false_positive_rate=DUP_FP, hash_function=_mmh3_hashes)
        depth = f.number_hashes

        def run() -> list[bool]:
            out = []
            for x in head_tx:
                hashes = _mmh3_hashes(x, depth)
                out.append(f.check_alt(hashes))
                f.add_alt(hashes)
            return out

        return run

    # The duplicate_tx detector: hash the batch once, test-and-set in cache-sized chunks at each ts.
    def aging_batch() -> Work:
        f = AgingBloomFilter(DUP_CAPACITY, DUP_FP, DUP_TTL, SEED)

        def one(batch: tuple[NDArray[Any], NDArray[np.float64]]) -> list[NDArray[np.bool_]]:
            hashes = hash64_many(batch[0], SEED)
            ts = batch[1]
            return [
                f.check_and_add_hashes(hashes[i : i + DUP_CHUNK], ts[i : i + DUP_CHUNK])
                for i in range(0, len(ts), DUP_CHUNK)
            ]

        return each(list(zip(txs, times, strict=True)), one)

    def aging_loop() -> Work:
        check = AgingBloomFilter(DUP_CAPACITY, DUP_FP, DUP_TTL, SEED).check_and_add
        return lambda: [check(x, t) for x, t in zip(head_tx, head_ts, strict=True)]

    return [
        Case("Bloom check_and_add_many vs check_and_add", ours_batch, ours_loop, n, k),
        Case("Bloom check_and_add_many vs pyprobables", ours_batch, pyprobables_loop, n, k),
        Case("AgingBloom check_and_add_hashes vs check_and_add", aging_batch, aging_loop, n, k),
    ]


# -- 3. many small sketches in one array ------------------------------------------------------------


def dgim_cases(w: Workload) -> list[Case]:
    n, k = w.items, w.head_items
    rng = np.random.default_rng(SEED)
    rows = rng.integers(0, DGIM_ENTITIES, n).astype(np.intp)
    bits = rng.random(n) < DGIM_ONES  # half ones: more DGIMTable rounds than velocity's ~10 %
    batches = list(zip(split(rows), split(bits), strict=True))
    head_rows, head_bits = rows[:k].tolist(), bits[:k].tolist()

    # DGIMTable.add appends each event's bit to its row and returns every 1-bit's estimate and
    # exact bounds. Per key, one DGIM object: appending only (less work than the table does), and
    # appending plus count() at each 1-bit (the estimate the velocity detector tests).
    def table() -> Work:
        t = DGIMTable(DGIM_WINDOW, DGIM_R, size=DGIM_ENTITIES)
        return each(batches, lambda b: t.add(b[0], b[1]))

    def per_key(count: bool) -> Prepare:
        def prepare() -> Work:
            dgims = {key: DGIM(DGIM_WINDOW, DGIM_R) for key in set(head_rows)}  # created untimed

            def append() -> None:
                for key, bit in zip(head_rows, head_bits, strict=True):
                    dgims[key].add(bit)

            def append_count() -> list[int]:
                out = []
                for key, bit in zip(head_rows, head_bits, strict=True):
                    d = dgims[key]
                    d.add(bit)
                    if bit:
                        out.append(d.count())
                return out

            return append_count if count else append

        return prepare

    label = f"DGIMTable.add ({DGIM_ENTITIES // 1000}k rows) vs dict of DGIM.add"
    return [
        Case(label, table, per_key(False), n, k),
        Case(label + "+count", table, per_key(True), n, k),
    ]


# -- 4. per-entity decayed statistics in numpy columns ----------------------------------------------

_LOG_RATIO = math.log(OUT_RATIO)


def outlier_with_aggregate(aggs: dict[str, DecayingAggregate], ev: dict[str, Any]) -> Alert | None:
    """amount_outlier per event on one DecayingAggregate of log(amount) per card (idle reset,
    z and ratio test against the prior state, then fold in), as OutlierDetector decides it."""
    card, ts, amount = ev["card_id"], ev["ts"], ev["amount"]
    agg = aggs.get(card)
    if agg is None or ts - agg.latest_ts > OUT_IDLE:
        agg = aggs[card] = DecayingAggregate(half_life=OUT_HALF_LIFE)
    if not (amount > 0 and math.isfinite(amount)):
        return None
    lv = math.log(amount)
    alert = None
    if agg.events >= OUT_MIN_HISTORY:
        _, _, mean, var = agg.value()
        sd, dev = math.sqrt(max(var, 0.0)), lv - mean
        tiny = 1e-12 * (1.0 + abs(mean))
        z = (math.inf if dev > tiny else 0.0) if sd <= tiny else dev / sd
        if z >= OUT_Z and dev >= _LOG_RATIO:
            alert = Alert("fraud", "amount_outlier", card, ts, z, OUT_Z, trigger=ev["tx_id"])
    agg.add(lv, ts)
    return alert


def outlier_cases(w: Workload) -> list[Case]:
    n, k = w.items, w.head_items

    # Both sides compute, per event in input order: the card's decayed (half-life 1 day) weighted
    # mean and variance of log(amount) before the event, the idle reset after 7 days, the alert
    # test (>= 5 prior events, z >= 4, amount >= 10x exp(mean)) with an Alert per hit, then the
    # fold-in. OutlierDetector does it per batch in EntityTable columns (plus hashing and grouping
    # the card ids and evicting idle cards); the per-key sides keep one state object per card.
    def detector() -> Work:
        det = OutlierDetector(
            "fraud",
            "amount_outlier",
            "card_id",
            "amount",
            OUT_HALF_LIFE,
            OUT_MIN_HISTORY,
            OUT_Z,
            OUT_RATIO,
            OUT_IDLE,
        )
        return each(w.batches, det.process)

    def baseline() -> Work:
        states: dict[str, Any] = {}

        def run() -> list[Alert]:
            alerts = []
            for ev in w.head:
                card = ev["card_id"]
                states[card], alert = amount_outlier(states.get(card), ev)
                if alert is not None:
                    alerts.append(alert)
            return alerts

        return run

    def aggregates() -> Work:
        aggs: dict[str, DecayingAggregate] = {}
        return lambda: [a for ev in w.head if (a := outlier_with_aggregate(aggs, ev)) is not None]

    return [
        Case("OutlierDetector vs baseline_fraud.amount_outlier", detector, baseline, n, k),
        Case("OutlierDetector vs dict of DecayingAggregate", detector, aggregates, n, k),
    ]


# -- 5. Count-Min and HyperLogLog -------------------------------------------------------------------


def counting_cases(w: Workload) -> list[Case]:
    cards, head = w.column("card_id"), w.head_column("card_id")
    n, k = w.items, w.head_items

    def fresh(factory: Callable[[], Any], batched: bool) -> Prepare:
        def prepare() -> Work:
            sketch = factory()
            if batched:
                return each(cards, sketch.update)
            add = sketch.add
            return lambda: [add(x) for x in head]

        return prepare

    def cms(conservative: bool) -> Callable[[], CountMinSketch]:
        return lambda: CountMinSketch.from_error(CMS_EPSILON, CMS_DELTA, SEED, conservative=conservative)

    def hll() -> HyperLogLog:
        return HyperLogLog(HLL_P, SEED)

    # Conservative update: a batch raises each distinct item once (order-free within the batch),
    # add raises one item at a time; both keep the never-underestimate guarantee.
    return [
        Case("CountMin update vs add", fresh(cms(False), True), fresh(cms(False), False), n, k),
        Case("CountMin conservative update vs add", fresh(cms(True), True), fresh(cms(True), False), n, k),
        Case(f"HyperLogLog(p={HLL_P}) update vs add", fresh(hll, True), fresh(hll, False), n, k),
    ]


# -- running and reporting --------------------------------------------------------------------------

CASES: tuple[Callable[[Workload], list[Case]], ...] = (
    hashing_cases,
    bloom_cases,
    dgim_cases,
    outlier_cases,
    counting_cases,
)


def timed(prepare: Prepare, items: int) -> float:
    """One run's rate: fresh state and a collection before the clock starts."""
    work = prepare()
    gc.collect()
    return measure(work, items, 1).runs[0]


def run_case(case: Case, repeats: int) -> dict[str, Any]:
    vec, per = Rate(), Rate()
    for _ in range(repeats):  # alternate the sides so drift in machine load hits both
        vec.runs.append(timed(case.vectorised, case.items))
        per.runs.append(timed(case.per_item, case.per_item_items))
    paired = [v / p for v, p in zip(vec.runs, per.runs, strict=True)]
    return {
        "path": case.path,
        "items": case.items,
        "per_item_items": case.per_item_items,
        "vectorised": vec.summary(),
        "per_item": per.summary(),
        "ratio": vec.median / per.median,
        "ratio_min": min(paired),
        "ratio_max": max(paired),
    }


def rate_text(s: dict[str, float]) -> str:
    scale, unit = (1e6, "M") if s["median"] >= 1e6 else (1e3, "k")
    return f"{s['median'] / scale:7.2f}{unit} ({s['min'] / scale:.2f}-{s['max'] / scale:.2f})"


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"hash backend: {BACKEND}; items/s, median (min-max); ratio = vectorised / per-item")
    print(f"{'path':52} {'vectorised':>24} {'per-item':>24} {'ratio':>7} (paired min-max)")
    for r in rows:
        print(
            f"{r['path']:52} {rate_text(r['vectorised']):>24} {rate_text(r['per_item']):>24} "
            f"{r['ratio']:6.1f}x ({r['ratio_min']:.1f}-{r['ratio_max']:.1f})"
        )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("bench/results/vectorised.json"))
    args = parser.parse_args(argv)
    workload = make_workload(args.items)
    rows = []
    for build in CASES:
        rows += [run_case(case, args.repeats) for case in build(workload)]
    print(f"{workload.items:,} items in batches of {BATCH:,}; per-item loops on {workload.head_items:,}")
    print_table(rows)
    meta = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "hash_backend": BACKEND,
        "cpus": os.cpu_count(),
        "items": workload.items,
        "per_item_items": workload.head_items,
        "batch": BATCH,
        "repeats": args.repeats,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
