"""Print alerts, samples and dead letters as JSON Lines on standard output (demos, debugging).

One line per item, with a ``kind`` field (``alert``, ``sample``, ``dead_letter``) and the item's
deterministic id. Alerts carry the columns of the ``alerts`` table (timestamps as epoch seconds,
``evidence`` as an object); dead letters carry ``raw`` as text, undecodable bytes escaped as
``\\xNN``.

Delivery: at-least-once (Bytewax replays after a crash; printed lines cannot be taken back).
Each ``write_batch`` is written with one ``write`` call, so lines of two workers do not interleave.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, TextIO

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.events import DeadLetter, Sample
from connectors.sql import SinkItem, dead_letter_id
from operators.alerts import Alert

__all__ = ["StdoutSink", "to_json_line"]

_LOCK = threading.Lock()


def to_json_line(item: SinkItem) -> str:
    """One item as a JSON line (with the trailing newline).

    >>> line = to_json_line(DeadLetter("iot", "f.csv", 3, "empty line", b"\\xff"))
    >>> json.loads(line)["raw"], json.loads(line)["kind"]
    ('\\\\xff', 'dead_letter')
    """
    record: dict[str, Any]
    if isinstance(item, Alert):
        record = {"kind": "alert", **item.to_record()}
        record["evidence"] = json.loads(record["evidence"])
    elif isinstance(item, Sample):
        record = {
            "kind": "sample",
            "sample_id": item.sample_id,
            "flow": item.flow,
            "window_start": item.window_start,
            "window_end": item.window_end,
            "stratum": item.stratum,
            "position": item.position,
            "event": item.event,
        }
    elif isinstance(item, DeadLetter):
        record = {
            "kind": "dead_letter",
            "id": dead_letter_id(item),
            "flow": item.flow,
            "source": item.source,
            "position": item.position,
            "reason": item.reason,
            "raw": item.raw.decode("utf-8", "backslashreplace"),
        }
    else:
        raise TypeError(f"StdoutSink takes Alert, Sample or DeadLetter items, got {type(item).__name__}")
    return json.dumps(record, separators=(",", ":"), default=_jsonable) + "\n"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"value of type {type(value).__name__} is not JSON-serialisable")


class StdoutSink(DynamicSink[SinkItem]):
    """Bytewax sink printing one JSON line per alert, sample or dead letter.

    Parameters
    ----------
    stream : text file, optional
        Where to write; ``sys.stdout`` at the time of writing by default.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StdoutPartition:
        """A partition writing to the stream."""
        return _StdoutPartition(self._stream)


class _StdoutPartition(StatelessSinkPartition[SinkItem]):
    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def write_batch(self, items: list[SinkItem]) -> None:
        text = "".join(map(to_json_line, items))
        if not text:
            return
        stream = self._stream if self._stream is not None else sys.stdout
        with _LOCK:
            stream.write(text)
            stream.flush()
