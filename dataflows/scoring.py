"""Precision and recall of alerts against injected anomalies (the generators' ground truth).

An alert matches an anomaly when their ``detector`` and ``entity`` are equal and the alert's
``event_ts`` lies in ``[anomaly.start, anomaly.end]`` (both ends included). Per detector:

- ``precision`` = alerts matching some anomaly / all alerts (1.0 when there are no alerts);
- ``recall`` = anomalies matched by at least one alert / all anomalies (1.0 when none).

Matching is grouped by ``(detector, entity)``: anomaly intervals sorted by start with a running
maximum of their ends answer "is this time inside some interval" by binary search, and sorted
alert times answer "is there an alert inside this interval"; ``O((A + N) log(A + N))``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from connectors.events import Anomaly

__all__ = ["Score", "Target", "default_target", "format_report", "meets", "meets_targets", "score"]


@dataclass(frozen=True)
class Score:
    """One detector's result.

    Attributes
    ----------
    tp_alerts, fp_alerts : int
        Alerts matching some anomaly of the detector, and the others.
    detected, missed : int
        Anomalies matched by at least one alert, and the others.
    precision, recall : float
        ``tp / (tp + fp)`` (1.0 with no alerts) and ``detected / (detected + missed)`` (1.0 with
        no anomalies).
    """

    tp_alerts: int
    fp_alerts: int
    detected: int
    missed: int
    precision: float
    recall: float

    @property
    def alerts(self) -> int:
        """All alerts of the detector."""
        return self.tp_alerts + self.fp_alerts

    @property
    def anomalies(self) -> int:
        """All anomalies of the detector."""
        return self.detected + self.missed


@dataclass(frozen=True)
class Target:
    """Minimum recall and precision a detector must reach."""

    recall: float
    precision: float = 0.95


def default_target(detector: str) -> Target:
    """Recall >= 0.99 for duplicate detectors (names starting with ``duplicate``), else >= 0.95;
    precision >= 0.95.

    Examples
    --------
    >>> default_target("duplicate_tx"), default_target("ip_rate").recall
    (Target(recall=0.99, precision=0.95), 0.95)
    """
    return Target(0.99 if detector.startswith("duplicate") else 0.95)


def _get(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


def score(alerts: Iterable[Any], anomalies: Sequence[Anomaly], detectors: Sequence[str]) -> dict[str, Score]:
    """Precision and recall of each detector in ``detectors``.

    Parameters
    ----------
    alerts : iterable
        Rows with ``detector``, ``entity`` and ``event_ts`` (mappings such as ``alerts`` table
        rows, or objects with those attributes such as :class:`operators.alerts.Alert`).
        Alerts of detectors not in ``detectors`` are ignored.
    anomalies : sequence of Anomaly
        The ground truth; anomalies of other detectors are ignored.
    detectors : sequence of str
        The detectors to score (each gets a result, even without alerts or anomalies).

    Returns
    -------
    dict
        Detector name -> :class:`Score`, in the order of ``detectors``.

    Examples
    --------
    >>> truth = [Anomaly("d", "x", 10.0, 20.0), Anomaly("d", "y", 0.0, 5.0)]
    >>> rows = [{"detector": "d", "entity": "x", "event_ts": 20.0},
    ...         {"detector": "d", "entity": "y", "event_ts": 6.0}]
    >>> s = score(rows, truth, ["d"])["d"]
    >>> s.tp_alerts, s.fp_alerts, s.detected, s.missed, s.precision, s.recall
    (1, 1, 1, 1, 0.5, 0.5)
    """
    wanted = set(detectors)
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in alerts:
        det = str(_get(row, "detector"))
        if det in wanted:
            times[(det, str(_get(row, "entity")))].append(float(_get(row, "event_ts")))
    truth: dict[tuple[str, str], list[Anomaly]] = defaultdict(list)
    for a in anomalies:
        if a.detector in wanted:
            truth[(a.detector, a.entity)].append(a)

    tp: dict[str, int] = dict.fromkeys(detectors, 0)
    fp: dict[str, int] = dict.fromkeys(detectors, 0)
    hit: dict[str, int] = dict.fromkeys(detectors, 0)
    miss: dict[str, int] = dict.fromkeys(detectors, 0)
    for key in times.keys() | truth.keys():
        det = key[0]
        ts = np.sort(np.asarray(times.get(key, ()), dtype=np.float64))
        group = sorted(truth.get(key, ()), key=lambda a: a.start)
        if not group:
            fp[det] += len(ts)
            continue
        starts = np.array([a.start for a in group], dtype=np.float64)
        ends = np.array([a.end for a in group], dtype=np.float64)
        if len(ts):
            reach = np.maximum.accumulate(ends)
            idx = np.searchsorted(starts, ts, side="right") - 1
            inside = (idx >= 0) & (reach[np.maximum(idx, 0)] >= ts)
            tp[det] += int(inside.sum())
            fp[det] += int(len(ts) - inside.sum())
            first = np.searchsorted(ts, starts, side="left")
            found = (first < len(ts)) & (ts[np.minimum(first, len(ts) - 1)] <= ends)
            hit[det] += int(found.sum())
            miss[det] += int(len(group) - found.sum())
        else:
            miss[det] += len(group)

    out = {}
    for det in detectors:
        n_alerts, n_anomalies = tp[det] + fp[det], hit[det] + miss[det]
        out[det] = Score(
            tp_alerts=tp[det],
            fp_alerts=fp[det],
            detected=hit[det],
            missed=miss[det],
            precision=tp[det] / n_alerts if n_alerts else 1.0,
            recall=hit[det] / n_anomalies if n_anomalies else 1.0,
        )
    return out


def meets(result: Score, target: Target) -> bool:
    """True when ``result`` reaches both the recall and the precision of ``target``."""
    return result.recall >= target.recall and result.precision >= target.precision


def meets_targets(scores: Mapping[str, Score], targets: Mapping[str, Target] | None = None) -> bool:
    """True when every detector meets its target (``targets`` defaults to :func:`default_target`)."""
    return all(meets(s, _target(d, targets)) for d, s in scores.items())


def _target(detector: str, targets: Mapping[str, Target] | None) -> Target:
    if targets is not None and detector in targets:
        return targets[detector]
    return default_target(detector)


def _pct(x: float) -> str:
    return "nan" if math.isnan(x) else f"{100.0 * x:.2f}%"


def format_report(flow: str, scores: Mapping[str, Score], targets: Mapping[str, Target] | None = None) -> str:
    """A plain-text table of the scores of ``flow`` and whether each detector meets its target.

    Examples
    --------
    >>> s = score([], [Anomaly("duplicate_tx", "t", 1.0, 1.0)], ["duplicate_tx"])
    >>> print(format_report("fraud", s))  # doctest: +NORMALIZE_WHITESPACE
    flow fraud
    detector      precision  recall  alerts  tp  fp  anomalies  detected  missed  target (P/R)  ok
    duplicate_tx  100.00%    0.00%   0       0   0   1          0         1       95%/99%       NO
    1 of 1 detectors below target
    """
    header = (
        "detector",
        "precision",
        "recall",
        "alerts",
        "tp",
        "fp",
        "anomalies",
        "detected",
        "missed",
        "target (P/R)",
        "ok",
    )
    rows = [header]
    failing = 0
    for det, s in scores.items():
        t = _target(det, targets)
        ok = meets(s, t)
        failing += not ok
        rows.append(
            (
                det,
                _pct(s.precision),
                _pct(s.recall),
                str(s.alerts),
                str(s.tp_alerts),
                str(s.fp_alerts),
                str(s.anomalies),
                str(s.detected),
                str(s.missed),
                f"{100 * t.precision:g}%/{100 * t.recall:g}%",
                "yes" if ok else "NO",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [f"flow {flow}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append(
        f"{failing} of {len(scores)} detectors below target"
        if failing
        else "all detectors meet their targets"
    )
    return "\n".join(lines)
