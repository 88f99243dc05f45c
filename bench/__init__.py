"""Benchmarks: run as modules (``python -m bench.sketches``); they report ratios against peers
measured in the same run, never absolute pass/fail timings."""
