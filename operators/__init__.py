"""Bytewax operators that hold sketches keyed by entity, windowed aggregates and detectors.

Filled by the operators issue; the sketches they hold live in :mod:`sketches`.
"""
