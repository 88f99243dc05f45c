"""Test-wide settings: property tests are derandomised so CI is reproducible, never flaky."""

from __future__ import annotations

import os

from hypothesis import settings

# Derandomised: the same examples every run (a fixed seed per test), so a red CI is a real bug
# that reproduces locally. Set SKETCHWATCH_HYPOTHESIS=explore to search new examples instead.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile("explore" if os.environ.get("SKETCHWATCH_HYPOTHESIS") == "explore" else "ci")

# Real services for integration tests, started once per session; they fail (never skip) when a
# service cannot start.
from tests.services.kafka import kafka_broker  # noqa: E402
from tests.services.postgres import postgres_server  # noqa: E402

__all__ = ["kafka_broker", "postgres_server"]
