"""Probabilistic data structures for streams: fast batch updates, mergeable, versioned bytes.

Every sketch speaks one vocabulary: ``add(item)``, ``update(items)`` (a list or a numpy
integer array), ``merge(other)`` in place, an estimate, ``to_bytes()`` /
``cls.from_bytes(data)``, ``copy()`` and ``==``. Constructors take structural sizes;
``from_error(...)`` classmethods take error targets. Items are hashed by
``sketches.hashing`` (seeded, stable across processes).
"""

from sketches.aging_bloom import AgingBloomFilter
from sketches.ams import AMSSketch
from sketches.bloom import BloomFilter
from sketches.countmin import CountMinSketch
from sketches.decay import DecayingAggregate
from sketches.dgim import DGIM
from sketches.flajolet_martin import FlajoletMartin
from sketches.hyperloglog import HyperLogLog
from sketches.reservoir import Reservoir, StratifiedReservoir, WeightedReservoir
from sketches.spacesaving import SpaceSaving

__all__ = [
    "DGIM",
    "AMSSketch",
    "AgingBloomFilter",
    "BloomFilter",
    "CountMinSketch",
    "DecayingAggregate",
    "FlajoletMartin",
    "HyperLogLog",
    "Reservoir",
    "SpaceSaving",
    "StratifiedReservoir",
    "WeightedReservoir",
]
