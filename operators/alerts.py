"""Alerts: what a detector emits, with a deterministic id and its evidence."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Alert"]


def _canon(value: float | None) -> str:
    # repr of a float is exact and stable; None stays distinguishable from 0.
    return "-" if value is None else repr(float(value))


@dataclass(frozen=True)
class Alert:
    """One anomaly, explained.

    ``alert_id`` is a function of flow, detector, entity, window and the triggering event
    (its timestamp and ``trigger``, e.g. a transaction id), so replaying the same input yields
    the same ids and an idempotent sink stores each alert once. Decisions use event time only.
    ``evidence`` holds what a person needs to judge the alert: the estimate and its error
    bound, the baseline, top contributors and the sketch parameters (JSON-serialisable).
    """

    flow: str
    detector: str
    entity: str
    event_ts: float
    score: float
    threshold: float
    window_start: float | None = None
    window_end: float | None = None
    trigger: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def alert_id(self) -> str:
        key = "|".join(
            (
                self.flow,
                self.detector,
                self.entity,
                _canon(self.window_start),
                _canon(self.window_end),
                _canon(self.event_ts),
                self.trigger,
            )
        )
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def evidence_json(self) -> str:
        return json.dumps(self.evidence, sort_keys=True, separators=(",", ":"), default=_jsonable)

    def to_record(self) -> dict[str, Any]:
        """The row for the ``alerts`` table (timestamps as epoch seconds)."""
        return {
            "alert_id": self.alert_id,
            "flow": self.flow,
            "detector": self.detector,
            "entity": self.entity,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "event_ts": self.event_ts,
            "score": _finite(self.score),
            "threshold": _finite(self.threshold),
            "evidence": self.evidence_json(),
        }


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else (1e308 if x > 0 else -1e308)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"evidence value of type {type(value).__name__} is not JSON-serialisable")
