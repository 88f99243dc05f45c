from collections.abc import Sequence

def hash_into(items: Sequence[object], seed: int, out: object, /) -> None: ...
def hash_array_into(address: int, n: int, seed: int, out: object, /) -> None: ...
def hash_one(item: object, seed: int, /) -> int: ...
def run_cumsum(x: object, rows: int, first: object, out: object, exclusive: bool, /) -> None: ...
def bloom_probe(
    hashes: object, k: int, m: int, words: object, prev: object | None, out: object, mode: int, /
) -> None: ...
def dgim_add(
    masks: object,
    rows: object,
    bits: object,
    reset: object | None,
    window: int,
    r: int,
    estimate: object,
    lo: object,
    hi: object,
    /,
) -> None: ...
