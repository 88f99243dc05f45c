"""A short demo of the sketches on a seeded synthetic payment stream: ``python -m sketches``.

It streams ``SKETCHWATCH_EVENTS`` transactions (default 1,000,000; seed ``SKETCHWATCH_SEED``,
default 7) in batches, with replayed transaction ids injected, and prints each sketch's
answer next to the exact answer, its memory and the throughput. The real anomaly-detection
flows replace this demo as the main job once they land.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sketches import BloomFilter, CountMinSketch, HyperLogLog, SpaceSaving

BATCH = 100_000
REPLAY_RATE = 0.001


@dataclass
class Batch:
    tx_ids: NDArray[np.int64]
    cards: NDArray[np.int64]
    merchants: NDArray[np.int64]


def env_int(name: str, default: int, low: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low:
        sys.exit(f"{name} must be an integer >= {low}, got {raw!r}")
    return value


def transactions(events: int, seed: int) -> Iterator[Batch]:
    """Batches of transactions; about REPLAY_RATE of them replay an earlier transaction id."""
    rng = np.random.default_rng(seed)
    next_id = 0
    for start in range(0, events, BATCH):
        n = min(BATCH, events - start)
        tx_ids = np.arange(next_id, next_id + n, dtype=np.int64)
        next_id += n
        replay = rng.random(n) < REPLAY_RATE
        replay[0] = False
        tx_ids[replay] = rng.integers(0, np.maximum(tx_ids[replay], 1))
        cards = rng.zipf(1.3, n).astype(np.int64) % 200_000
        merchants = rng.zipf(1.6, n).astype(np.int64) % 5_000
        yield Batch(tx_ids, cards, merchants)


def main() -> None:
    events = env_int("SKETCHWATCH_EVENTS", 1_000_000, 1)
    seed = env_int("SKETCHWATCH_SEED", 7, 0)
    seen = BloomFilter.from_error(capacity=events, fp_rate=0.001, seed=seed)
    cards = HyperLogLog(p=12, seed=seed)
    volume = CountMinSketch.from_error(epsilon=0.0005, delta=0.01, seed=seed)
    top = SpaceSaving(k=64, seed=seed)
    flagged = 0
    all_tx, all_cards, all_merchants = [], [], []
    start = time.perf_counter()
    for batch in transactions(events, seed):
        flagged += int(seen.check_and_add_many(batch.tx_ids).sum())
        cards.update(batch.cards)
        volume.update(batch.merchants)
        top.update(batch.merchants)
        all_tx.append(batch.tx_ids)
        all_cards.append(batch.cards)
        all_merchants.append(batch.merchants)
    elapsed = time.perf_counter() - start
    duplicates = events - np.unique(np.concatenate(all_tx)).size
    report(events, elapsed, flagged, duplicates, seen, cards, volume, top, all_cards, all_merchants)


def report(
    events: int,
    elapsed: float,
    flagged: int,
    duplicates: int,
    seen: BloomFilter,
    cards: HyperLogLog,
    volume: CountMinSketch,
    top: SpaceSaving,
    all_cards: list[NDArray[np.int64]],
    all_merchants: list[NDArray[np.int64]],
) -> None:
    merchants = np.concatenate(all_merchants)
    exact_counts = np.bincount(merchants)
    distinct_cards = np.unique(np.concatenate(all_cards)).size
    print(f"{events:,} transactions in {elapsed:.2f} s ({events / elapsed / 1e6:.2f} M events/s, 4 sketches)")
    print(f"replayed transaction ids: exact {duplicates:,}, flagged by the Bloom filter {flagged:,}")
    print(f"  (false-positive rate now {seen.estimated_fp_rate():.2e}; {len(seen.to_bytes()):,} bytes)")
    est = cards.estimate()
    print(f"distinct cards: exact {distinct_cards:,}, HyperLogLog {est:,.0f}", end=" ")
    print(f"({est / distinct_cards - 1:+.2%}; {len(cards.to_bytes()):,} bytes)")
    print(f"top merchants (SpaceSaving k=64; Count-Min bound +{volume.error_bound():,.0f}):")
    for merchant, count, error in top.top(5):
        print(
            f"  merchant {merchant:>5}: exact {exact_counts[merchant]:>8,}  space-saving {count:>8,} "
            f"(error <= {error:,})  count-min {volume.estimate(merchant):>8,}"
        )


if __name__ == "__main__":
    main()
