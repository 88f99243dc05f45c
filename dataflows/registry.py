"""The four flows by name: each module exposes ``detectors(config) -> list[DetectorSpec]``."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from connectors.config import Config
from operators.runtime import DetectorSpec

__all__ = ["FLOWS", "detectors_for"]

FLOWS = ("fraud", "ddos", "iot", "sentiment")


def detectors_for(flow: str) -> Callable[[Config], list[DetectorSpec]]:
    """The ``detectors`` function of flow ``flow``."""
    if flow not in FLOWS:
        raise ValueError(f"unknown flow {flow!r}; expected one of {', '.join(FLOWS)}")
    module = importlib.import_module(f"dataflows.{flow}")
    return module.detectors  # type: ignore[no-any-return]
