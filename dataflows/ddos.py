"""DDoS: distinct-client surges per endpoint, per-IP request rates, traffic skew.

Run: ``python -m bytewax.run dataflows.ddos``. Events: ``client_ip, endpoint, status, bytes, ts``.

Detector parameters (``SKETCHWATCH_DDOS_<NAME>``, defaults in brackets):

- endpoint_distinct_ips: ``DISTINCT_WINDOW`` [30 s], ``DISTINCT_MIN`` [200], ``DISTINCT_FACTOR`` [4],
  ``DISTINCT_WARMUP`` [3 windows], ``DISTINCT_P`` [12]
- ip_rate: ``RATE_LENGTH`` [30 s], ``RATE_STEP`` [5 s], ``RATE_THRESHOLD`` [300 requests per window]
- traffic_skew: ``SKEW_WINDOW`` [30 s], ``SKEW_MIN`` [0.0005], ``SKEW_FACTOR`` [5],
  ``SKEW_WARMUP`` [3 windows]
"""

from __future__ import annotations

from functools import partial
from typing import Any

from connectors.config import Config
from dataflows.common import flow_from_env, sampling_spec
from operators.detectors.windowed import SlidingRate, WindowedDistinctSurge, WindowedSkew
from operators.runtime import DetectorSpec

__all__ = ["detectors"]


def detectors(config: Config) -> list[DetectorSpec]:
    """The DDoS flow's detectors, parameterised from ``config``."""
    p = config.param
    return [
        *sampling_spec(config),
        DetectorSpec(
            "endpoint_distinct_ips",
            "endpoint",
            partial(
                WindowedDistinctSurge,
                window=p("distinct_window", 30.0, low=1),
                p=p("distinct_p", 12, int, low=4, high=18),
                min_distinct=p("distinct_min", 200, int, low=1),
                factor=p("distinct_factor", 4.0, low=1),
                warmup=p("distinct_warmup", 3, int, low=0),
                idle_ttl=config.idle_ttl,
                seed=config.seed,
            ),
            columns=("endpoint", "client_ip", "ts"),
        ),
        DetectorSpec(
            "ip_rate",
            "client_ip",
            partial(
                SlidingRate,
                length=p("rate_length", 30.0, low=1),
                step=p("rate_step", 5.0, low=1),
                threshold=p("rate_threshold", 300, int, low=1),
                seed=config.seed,
            ),
            columns=("client_ip", "ts"),
        ),
        DetectorSpec(
            "traffic_skew",
            None,
            partial(
                WindowedSkew,
                window=p("skew_window", 30.0, low=1),
                # A 20 req/s flood among 1000 req/s lifts F2/F1^2 from ~8e-5 to ~1e-3.
                min_skew=p("skew_min", 0.0005, low=0, high=1),
                factor=p("skew_factor", 5.0, low=1),
                warmup=p("skew_warmup", 3, int, low=0),
                idle_ttl=config.idle_ttl,
                seed=config.seed,
            ),
            columns=("client_ip", "ts"),
        ),
    ]


def __getattr__(name: str) -> Any:
    # ``flow`` is built when ``python -m bytewax.run dataflows.ddos`` asks for it, not on import, so
    # importing this module (for ``detectors``) reads no environment and opens no database.
    if name == "flow":
        return flow_from_env("ddos", detectors)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
