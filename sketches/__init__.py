"""Probabilistic data structures for streams: fast batch updates, mergeable, versioned bytes.

Every sketch speaks one vocabulary: ``add(item)``, ``update(items)`` (a list or a numpy
integer array), ``merge(other)`` in place, an estimate, ``to_bytes()`` /
``cls.from_bytes(data)``, ``copy()`` and ``==``. Constructors take structural sizes;
``from_error(...)`` classmethods take error targets. Items are hashed by
``sketches.hashing`` (seeded, stable across processes).
"""
