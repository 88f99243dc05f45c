"""IoT sensors: replayed payloads, zone temperature outliers, stuck sensors, threshold breaches.

Run: ``python -m bytewax.run dataflows.iot``. Events: ``device_id, zone, temperature, payload, ts``.

Detector parameters (``SKETCHWATCH_IOT_<NAME>``, defaults in brackets):

- duplicate_payload: ``DUP_TTL`` [3600 s], ``DUP_CAPACITY`` [2000000 per TTL], ``DUP_FP_RATE`` [1e-7]
- zone_zscore: ``ZSCORE_LENGTH`` [300 s], ``ZSCORE_Z`` [5], ``ZSCORE_MIN_COUNT`` [30]
- stuck_sensor: ``STUCK_CONSECUTIVE`` [3]
- threshold_breaches: ``BREACH_LIMIT`` [80.0], ``BREACH_LAST_N`` [20], ``BREACH_MIN`` [5],
  ``BREACH_COOLDOWN`` [600 s]

The z-score default is 5, not 3: with ~200 readings/s a |z| > 3 rule fires about 2,700 times per
million normal readings (precision would collapse); 5 keeps it near one.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from connectors.config import Config
from dataflows.common import flow_from_env, sampling_spec
from operators.detectors.entity import BreachDetector, DuplicateDetector, StuckDetector
from operators.detectors.windowed import TrailingZScore
from operators.runtime import DetectorSpec

__all__ = ["detectors"]


def detectors(config: Config) -> list[DetectorSpec]:
    """The IoT flow's detectors, parameterised from ``config``."""
    p = config.param
    return [
        DetectorSpec(
            "duplicate_payload",
            "device_id",
            partial(
                DuplicateDetector,
                flow="iot",
                name="duplicate_payload",
                key_columns=("device_id", "payload"),
                entity_column="device_id",
                ttl=p("dup_ttl", 3600.0, low=1),
                capacity=p("dup_capacity", 2000000, int, low=1),
                fp_rate=p("dup_fp_rate", 1e-07, low=1e-12, high=0.5),
                shards=config.shards_of("device_id"),
                seed=config.seed,
            ),
            columns=("device_id", "payload", "ts"),
        ),
        DetectorSpec(
            "zone_zscore",
            "zone",
            partial(
                TrailingZScore,
                length=p("zscore_length", 300.0, low=1),
                z=p("zscore_z", 5.0, low=0),
                min_count=p("zscore_min_count", 30, int, low=2),
            ),
            columns=("zone", "temperature", "ts"),
        ),
        DetectorSpec(
            "stuck_sensor",
            "device_id",
            partial(
                StuckDetector,
                flow="iot",
                name="stuck_sensor",
                consecutive=p("stuck_consecutive", 3, int, low=2),
                idle_ttl=config.idle_ttl,
                key_seed=config.seed,  # the routing hashes, carried by the shard split
            ),
            columns=("device_id", "temperature", "ts"),
        ),
        DetectorSpec(
            "threshold_breaches",
            "device_id",
            partial(
                BreachDetector,
                flow="iot",
                name="threshold_breaches",
                limit=p("breach_limit", 80.0),
                last_n=p("breach_last_n", 20, int, low=1, high=10000),
                min_breaches=p("breach_min", 5, int, low=1),
                cooldown=p("breach_cooldown", 600.0, low=0),
                idle_ttl=config.idle_ttl,
                key_seed=config.seed,
            ),
            columns=("device_id", "temperature", "ts"),
        ),
        *sampling_spec(config),
    ]


def __getattr__(name: str) -> Any:
    # ``flow`` is built when ``python -m bytewax.run dataflows.iot`` asks for it, not on import, so
    # importing this module (for ``detectors``) reads no environment and opens no database.
    if name == "flow":
        return flow_from_env("iot", detectors)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
