"""Brand sentiment: negative spikes in sliding windows and a decaying sentiment aggregate.

Run: ``python -m bytewax.run dataflows.sentiment``. Events: ``brand, sentiment, text, ts``.

Detector parameters (``SKETCHWATCH_SENTIMENT_<NAME>``, defaults in brackets):

- brand_spike: ``SPIKE_LENGTH`` [300 s], ``SPIKE_STEP`` [60 s], ``SPIKE_NEG`` [-0.5],
  ``SPIKE_MIN_NEGATIVE`` [30], ``SPIKE_FACTOR`` [3], ``SPIKE_MEAN_MAX`` [-0.2], ``SPIKE_WARMUP`` [5 windows]
- decayed_sentiment: ``DECAY_HALF_LIFE`` [120 s], ``DECAY_FLOOR`` [-0.4], ``DECAY_MIN_WEIGHT`` [20],
  ``DECAY_HYSTERESIS`` [0.1]

The decay half-life is 2 minutes: with 10 minutes, a crisis needs over 5 minutes of mostly
negative posts before the decayed mean reaches the floor.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from connectors.config import Config
from dataflows.common import flow_from_env, sampling_spec
from operators.detectors.decayed import DecayedMeanDetector
from operators.detectors.windowed import SlidingSpike
from operators.runtime import DetectorSpec

__all__ = ["detectors"]


def detectors(config: Config) -> list[DetectorSpec]:
    """The sentiment flow's detectors, parameterised from ``config``."""
    p = config.param
    return [
        DetectorSpec(
            "brand_spike",
            "brand",
            partial(
                SlidingSpike,
                length=p("spike_length", 300.0, low=1),
                step=p("spike_step", 60.0, low=1),
                neg=p("spike_neg", -0.5, low=-1, high=1),
                min_negative=p("spike_min_negative", 30, int, low=1),
                factor=p("spike_factor", 3.0, low=1),
                mean_max=p("spike_mean_max", -0.2, low=-1, high=1),
                warmup=p("spike_warmup", 5, int, low=0),
                idle_ttl=config.idle_ttl,
            ),
            columns=("brand", "sentiment", "ts"),
        ),
        DetectorSpec(
            "decayed_sentiment",
            "brand",
            partial(
                DecayedMeanDetector,
                flow="sentiment",
                name="decayed_sentiment",
                entity_column="brand",
                value_column="sentiment",
                half_life=p("decay_half_life", 120.0, low=1),
                floor=p("decay_floor", -0.4, low=-1, high=1),
                min_weight=p("decay_min_weight", 20.0, low=0),
                hysteresis=p("decay_hysteresis", 0.1, low=0),
                idle_ttl=config.idle_ttl,
            ),
            columns=("brand", "sentiment", "ts"),
        ),
        *sampling_spec(config),
    ]


def __getattr__(name: str) -> Any:
    # ``flow`` is built when ``python -m bytewax.run dataflows.sentiment`` asks for it, not on import, so
    # importing this module (for ``detectors``) reads no environment and opens no database.
    if name == "flow":
        return flow_from_env("sentiment", detectors)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
