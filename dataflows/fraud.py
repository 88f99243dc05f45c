"""Payment fraud: duplicate transactions, merchant surges, amount outliers, card velocity.

Run: ``python -m bytewax.run dataflows.fraud`` (generator in, ``sketchwatch.db`` out; see the
README for ``SKETCHWATCH_*`` variables). Events: ``tx_id, card_id, merchant_id, amount, type, ts``.

Detector parameters (``SKETCHWATCH_FRAUD_<NAME>``, defaults in brackets):

- duplicate_tx: ``DUP_TTL`` [300 s], ``DUP_CAPACITY`` [200000 per TTL], ``DUP_FP_RATE`` [1e-6]
- merchant_surge: ``SURGE_WINDOW`` [60 s], ``SURGE_MIN_COUNT`` [30], ``SURGE_FACTOR`` [5],
  ``SURGE_WARMUP`` [5 windows]
- amount_outlier: ``OUTLIER_HALF_LIFE`` [86400 s], ``OUTLIER_MIN_HISTORY`` [5], ``OUTLIER_Z`` [4],
  ``OUTLIER_RATIO`` [10], ``OUTLIER_IDLE_TTL`` [604800 s]
- card_velocity: ``VELOCITY_LAST_N`` [10], ``VELOCITY_GAP`` [10 s], ``VELOCITY_MIN_RAPID`` [8],
  ``VELOCITY_COOLDOWN`` [300 s], ``VELOCITY_LATENESS`` [60 s: how far an event may trail the
  clock and still find its card's previous event; a quiet card is kept gap + lateness to twice that]
"""

from __future__ import annotations

from functools import partial
from typing import Any

from connectors.config import Config
from dataflows.common import flow_from_env, sampling_spec
from operators.detectors.entity import DEFAULT_LATENESS, DuplicateDetector, OutlierDetector, VelocityDetector
from operators.detectors.windowed import WindowedCountSurge
from operators.runtime import DetectorSpec

__all__ = ["detectors"]


def detectors(config: Config) -> list[DetectorSpec]:
    """The fraud flow's detectors, parameterised from ``config``."""
    p = config.param
    specs = [
        DetectorSpec(
            "duplicate_tx",
            "tx_id",
            partial(
                DuplicateDetector,
                flow="fraud",
                name="duplicate_tx",
                key_columns=("tx_id",),
                entity_column="tx_id",
                ttl=p("dup_ttl", 300.0, low=1),
                capacity=p("dup_capacity", 200_000, int, low=1),
                fp_rate=p("dup_fp_rate", 1e-6, low=1e-12, high=0.5),
                shards=config.shards_of("tx_id"),
                seed=config.seed,
            ),
            columns=("tx_id", "ts"),
        ),
        DetectorSpec(
            "merchant_surge",
            "merchant_id",
            partial(
                WindowedCountSurge,
                window=p("surge_window", 60.0, low=1),
                min_count=p("surge_min_count", 30, int, low=1),
                factor=p("surge_factor", 5.0, low=1),
                warmup=p("surge_warmup", 5, int, low=0),
                idle_ttl=config.idle_ttl,
                seed=config.seed,
            ),
            columns=("merchant_id", "type", "ts"),
        ),
        DetectorSpec(
            "amount_outlier",
            "card_id",
            partial(
                OutlierDetector,
                flow="fraud",
                name="amount_outlier",
                half_life=p("outlier_half_life", 86_400.0, low=1),
                min_history=p("outlier_min_history", 5, int, low=1),
                z=p("outlier_z", 4.0, low=0),
                ratio=p("outlier_ratio", 10.0, low=1),
                idle_ttl=p("outlier_idle_ttl", 604_800.0, low=1),
                key_seed=config.seed,  # the routing hashes, carried by the shard split
            ),
            columns=("card_id", "amount", "ts"),
        ),
        DetectorSpec(
            "card_velocity",
            "card_id",
            partial(
                VelocityDetector,
                flow="fraud",
                name="card_velocity",
                last_n=p("velocity_last_n", 10, int, low=2, high=10_000),
                gap=p("velocity_gap", 10.0, low=0),
                min_rapid=p("velocity_min_rapid", 8, int, low=1),
                cooldown=p("velocity_cooldown", 300.0, low=0),
                lateness=p("velocity_lateness", DEFAULT_LATENESS, low=0),
                idle_ttl=config.idle_ttl,
                key_seed=config.seed,
            ),
            columns=("card_id", "ts"),
        ),
    ]
    return specs + sampling_spec(config)


def __getattr__(name: str) -> Any:
    # ``flow`` is built when ``python -m bytewax.run dataflows.fraud`` asks for it, not on import, so
    # importing this module (for ``detectors``) reads no environment and opens no database.
    if name == "flow":
        return flow_from_env("fraud", detectors)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
