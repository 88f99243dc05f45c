"""Deterministic synthetic event generators, one per flow, with the ground truth of their anomalies.

Each flow module (:mod:`~connectors.generators.fraud`, :mod:`~connectors.generators.ddos`,
:mod:`~connectors.generators.iot`, :mod:`~connectors.generators.sentiment`) exposes

- ``generate(n_events, seed, start=0, batch_size=10_000) -> Iterator[EventBatch]``: positions
  ``start .. n_events - 1``; resuming at ``start`` yields exactly the tail of a full run and
  ``batch_size`` only moves the cuts (chunks of 10,000 events, each from
  ``np.random.default_rng([seed, chunk])``; anomalies planned once from
  ``np.random.default_rng([seed, n_events, 999])``);
- ``ground_truth(n_events, seed) -> list[Anomaly]``: what was injected; an alert matches an
  anomaly when detector and entity are equal and its ``event_ts`` lies in ``[start, end]``;
- ``DETECTORS``: the detector names with ground truth; ``RATE``: events per second of event time.

Examples
--------
>>> batch = next(generator("iot")(20_000, 7, 0, 100))
>>> batch.flow, len(batch), batch.positions[0]
('iot', 100, np.int64(0))
>>> ground_truth("fraud", 20_000, 7) == ground_truth_for("fraud")(20_000, 7)
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Final

from connectors.events import Anomaly, EventBatch
from connectors.generators import ddos, fraud, iot, sentiment

__all__ = [
    "FLOWS",
    "GENERATE",
    "GENERATORS",
    "GROUND_TRUTH",
    "GenerateFn",
    "GroundTruthFn",
    "generator",
    "generator_for",
    "ground_truth",
    "ground_truth_for",
]

GenerateFn = Callable[..., Iterator[EventBatch]]
"""``generate(n_events, seed, start=0, batch_size=10_000) -> Iterator[EventBatch]``."""
GroundTruthFn = Callable[[int, int], list[Anomaly]]
"""``ground_truth(n_events, seed) -> list[Anomaly]``."""

FLOWS: Final = ("fraud", "ddos", "iot", "sentiment")
GENERATORS: Final[dict[str, ModuleType]] = {"fraud": fraud, "ddos": ddos, "iot": iot, "sentiment": sentiment}
"""Flow name -> generator module (``generate``, ``ground_truth``, ``DETECTORS``, ``RATE``)."""
GENERATE: Final[dict[str, GenerateFn]] = {name: m.generate for name, m in GENERATORS.items()}
GROUND_TRUTH: Final[dict[str, GroundTruthFn]] = {name: m.ground_truth for name, m in GENERATORS.items()}


def _check(flow: str) -> None:
    if flow not in GENERATORS:
        raise ValueError(f"unknown flow {flow!r}; expected one of {', '.join(FLOWS)}")


def generator(flow: str) -> GenerateFn:
    """The ``generate`` function of ``flow`` (a ``generator_factory`` for ``build_source``)."""
    _check(flow)
    return GENERATE[flow]


generator_for = generator  # the name connectors.config looks up


def ground_truth_for(flow: str) -> GroundTruthFn:
    """The ``ground_truth(n_events, seed)`` function of ``flow``."""
    _check(flow)
    return GROUND_TRUTH[flow]


def ground_truth(flow: str, n_events: int, seed: int) -> list[Anomaly]:
    """The anomalies injected into ``generator(flow)(n_events, seed)``."""
    return ground_truth_for(flow)(n_events, seed)
