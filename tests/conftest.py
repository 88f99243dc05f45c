"""Test-wide settings: property tests are derandomised so CI is reproducible, never flaky."""

from __future__ import annotations

import os

from hypothesis import settings

# Derandomised: the same examples every run (a fixed seed per test), so a red CI is a real bug
# that reproduces locally. Set SKETCHWATCH_HYPOTHESIS=explore to search new examples instead.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile("explore" if os.environ.get("SKETCHWATCH_HYPOTHESIS") == "explore" else "ci")
