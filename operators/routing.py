"""Shard state keys that Bytewax spreads evenly over its workers.

Bytewax 0.21.1 routes a state key to worker ``h(key) % workers``, where ``h`` is Rust's
``DefaultHasher`` over a ``String``: SipHash-1-3 with a zero key over the key's UTF-8 bytes and
a ``0xff`` terminator (read in Bytewax's source; ``tests/operators/test_runtime.py`` checks it
against Bytewax itself). Plain shard names land where the hash puts them: ``0000``-``0015`` split
10/6 over two workers, four shards 3/1. :func:`shard_key` names shard ``s`` so that it runs on
worker ``s % workers`` for every worker count from 1 to 8.

>>> [shard_key(s, 4) for s in range(4)]
['0000.724', '0001.14', '0002.1975', '0003.2523']
>>> [_bytewax_route_hash(shard_key(s, 4)) % 2 for s in range(4)]
[0, 1, 0, 1]
"""

from __future__ import annotations

import functools
from typing import Final

__all__ = ["balanced_key", "partition_key", "shard_key"]


def shard_key(shard: int, shards: int) -> str:
    """The Bytewax state key of ``shard`` (of ``shards``): :func:`balanced_key` up to 64 shards,
    whose hash is ``shard`` mod 840 (a multiple of every count from 2 to 8); beyond, the plain
    ``"{shard:04d}"`` (balanced on average)."""
    if shards > len(_BALANCED_KEYS):
        return f"{shard:04d}"
    return _BALANCED_KEYS[shard]


def balanced_key(shard: int, name: str | None = None) -> str:
    """The first ``"{name}.{k}"`` (``name``: ``"{shard:04d}"`` by default) that Bytewax routes to
    ``shard % workers`` for 2 to 8 workers (its route hash is ``shard`` mod 840).
    :data:`_BALANCED_KEYS` holds the first 64 with the default name."""
    name = f"{shard:04d}" if name is None else name
    k = 0
    while _bytewax_route_hash(f"{name}.{k}") % _LCM_2_TO_8 != shard % _LCM_2_TO_8:
        k += 1
    return f"{name}.{k}"


@functools.lru_cache(maxsize=4096)
def partition_key(partition: str, partitions: tuple[str, ...]) -> str:
    """The state key of the shard that holds source partition ``partition`` of ``partitions``
    (sorted by name), for a step aligned with the input partitions.

    Bytewax deals the partitions, in name order, to the workers in turn when every worker can
    read every partition (``calc_primaries`` in its ``src/timely.rs``; a test checks it with
    Bytewax itself), so the ``i``-th partition is read by worker ``i % workers``; this key is
    routed there too, for 1 to 8 workers, so the partition's events stay on their worker. It
    names the partition and how many there are: state kept for another set of partitions is
    never mistaken for this one's.

    >>> partition_key("1-payments", ("0-payments", "1-payments"))
    '1-payments#1/2.141'
    >>> _bytewax_route_hash(partition_key("1-payments", ("0-payments", "1-payments"))) % 2
    1
    """
    index = partitions.index(partition)
    return balanced_key(index, f"{partition}#{index}/{len(partitions)}")


_LCM_2_TO_8: Final = 840
_BALANCED_KEYS: Final = (
    "0000.724",
    "0001.14",
    "0002.1975",
    "0003.2523",
    "0004.3",
    "0005.1006",
    "0006.651",
    "0007.380",
    "0008.1296",
    "0009.893",
    "0010.1185",
    "0011.95",
    "0012.788",
    "0013.1782",
    "0014.226",
    "0015.33",
    "0016.140",
    "0017.846",
    "0018.871",
    "0019.801",
    "0020.262",
    "0021.3847",
    "0022.878",
    "0023.276",
    "0024.1977",
    "0025.1486",
    "0026.272",
    "0027.354",
    "0028.380",
    "0029.0",
    "0030.190",
    "0031.273",
    "0032.957",
    "0033.713",
    "0034.1219",
    "0035.2516",
    "0036.242",
    "0037.1416",
    "0038.2879",
    "0039.178",
    "0040.52",
    "0041.1905",
    "0042.963",
    "0043.19",
    "0044.459",
    "0045.869",
    "0046.185",
    "0047.60",
    "0048.597",
    "0049.1778",
    "0050.2422",
    "0051.1498",
    "0052.186",
    "0053.114",
    "0054.1678",
    "0055.1368",
    "0056.215",
    "0057.916",
    "0058.1097",
    "0059.1772",
    "0060.2790",
    "0061.328",
    "0062.1135",
    "0063.1319",
)
"""``balanced_key(s)`` for shards 0 to 63, computed once (a test checks them)."""


_M64: Final = (1 << 64) - 1


def _bytewax_route_hash(key: str) -> int:
    """SipHash-1-3 (key 0, 0) of ``key``'s UTF-8 bytes and ``0xff``: Rust's ``DefaultHasher``
    over a ``String``, which Bytewax uses to pick a state key's worker."""
    data = key.encode() + b"\xff"
    v = [0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573]
    end = len(data) - len(data) % 8
    for i in range(0, end, 8):
        _sip_absorb(v, int.from_bytes(data[i : i + 8], "little"))
    _sip_absorb(v, ((len(data) & 0xFF) << 56) | int.from_bytes(data[end:], "little"))
    v[2] ^= 0xFF
    for _ in range(3):
        _sip_round(v)
    return (v[0] ^ v[1] ^ v[2] ^ v[3]) & _M64


def _sip_absorb(v: list[int], m: int) -> None:
    v[3] ^= m
    _sip_round(v)  # one compression round: SipHash-1-3
    v[0] ^= m


def _sip_round(v: list[int]) -> None:
    v0, v1, v2, v3 = v
    v0 = (v0 + v1) & _M64
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & _M64
    v3 = _rotl(v3, 16) ^ v2
    v0 = (v0 + v3) & _M64
    v3 = _rotl(v3, 21) ^ v0
    v2 = (v2 + v1) & _M64
    v1 = _rotl(v1, 17) ^ v2
    v2 = _rotl(v2, 32)
    v[:] = v0, v1, v2, v3


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64
