"""The item hash is a contract: stable across processes, equal on the batch and single paths."""

from __future__ import annotations

import subprocess
import sys

import mmh3
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sketches import hashing
from sketches.hashing import check_seed, hash64, hash64_many, probe_indices, probe_indices_one, unhash_ints

MASK = 2**64 - 1
items_strategy = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.binary(max_size=40),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
    ),
    max_size=50,
)


def test_backend_is_the_c_extension() -> None:
    # The speed targets rely on it; a missing compiler must show up here, not as a slow benchmark.
    assert hashing.BACKEND == "c"


@given(st.one_of(st.text(), st.binary()), st.integers(0, 2**32 - 1))
def test_strings_and_bytes_match_mmh3(item: str | bytes, seed: int) -> None:
    assert hash64(item, seed) == mmh3.hash128(item, seed, signed=False) & MASK


@given(items_strategy, st.integers(0, 2**32 - 1))
def test_batch_equals_single_and_python_fallback(items: list[str | bytes | int], seed: int) -> None:
    batch = hash64_many(items, seed)
    assert batch.dtype == np.uint64
    assert batch.tolist() == [hash64(i, seed) for i in items]
    assert batch.tolist() == [hashing._hash_py(i, seed) for i in items]


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64])
def test_numpy_int_arrays_equal_python_ints(dtype: type[np.integer]) -> None:
    values = np.array([0, 1, 2, 100, np.iinfo(dtype).max, np.iinfo(dtype).min], dtype=dtype)
    assert hash64_many(values, 11).tolist() == [hash64(int(v), 11) for v in values]
    assert hash64_many(values.tolist(), 11).tolist() == hash64_many(values, 11).tolist()


def test_str_equals_its_utf8_bytes_and_differs_from_int() -> None:
    assert hash64("héllo", 1) == hash64("héllo".encode(), 1)
    assert hash64("5", 1) != hash64(5, 1)
    assert hash64(True, 1) == hash64(1, 1)


def test_seed_changes_every_kind_of_item() -> None:
    for item in ("abc", b"abc", 42):
        assert hash64(item, 0) != hash64(item, 1)


def test_ints_never_collide_for_a_fixed_seed() -> None:
    values = np.arange(-500_000, 500_000, dtype=np.int64)
    assert np.unique(hash64_many(values, 3)).size == values.size


def test_hash_is_the_same_in_another_process() -> None:
    code = "from sketches.hashing import hash64; print(hash64('stable', 9), hash64(-7, 9))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(hash64("stable", 9)), str(hash64(-7, 9))]


def test_known_values_never_change() -> None:
    # Golden values: changing them breaks every stored sketch. Never edit without a format bump.
    assert hash64("sketchwatch", 0) == 0xE68893C2D4B3439A
    assert hash64(0, 0) == 0x5CFC2E7F0D3AF81D
    assert hash64(2**63, 7) == hash64(-(2**63), 7)


def test_bits_are_balanced() -> None:
    # 200k hashes: each bit is set with p=1/2; 6 sigma is 0.0067 of the count.
    hashes = hash64_many(np.arange(200_000), 5)
    bits = (hashes[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.0067)
    strs = hash64_many([f"user-{i}" for i in range(200_000)], 5)
    bits = (strs[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.0067)


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "0", True])
def test_bad_seeds_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="seed must be an integer"):
        check_seed(bad)  # type: ignore[arg-type]
    with pytest.raises((ValueError, TypeError)):
        hash64_many(["a"], bad)  # type: ignore[arg-type]


def test_bad_items_are_refused_with_their_type() -> None:
    with pytest.raises(TypeError, match="float"):
        hash64_many(["a", 1.5])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="float"):
        hash64(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dtype float64"):
        hash64_many(np.array([1.5]))
    with pytest.raises(ValueError, match="out of range"):
        hash64_many([2**64])
    with pytest.raises(ValueError, match="out of range"):
        hash64(-(2**63) - 1)


def test_string_arrays_hash_like_lists() -> None:
    assert hash64_many(np.array(["a", "bc"])).tolist() == hash64_many(["a", "bc"]).tolist()


def test_probe_indices_shape_range_and_spread() -> None:
    hashes = hash64_many(np.arange(10_000), 1)
    idx = probe_indices(hashes, 5, 1000)
    assert idx.shape == (10_000, 5)
    assert int(idx.max()) < 1000
    # Each row of probes is a distinct sequence: the step is odd, so rows differ unless m divides it.
    assert np.mean(idx[:, 0] == idx[:, 1]) < 0.01
    # Uniform over the 1000 cells: chi-square with 999 dof has mean 999 and sd 44.7; allow 6 sd.
    for row in range(5):
        counts = np.bincount(idx[:, row].astype(np.int64), minlength=1000)
        assert float(np.sum((counts - 10.0) ** 2 / 10.0)) < 999 + 6 * 44.7


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=30), st.integers(0, 2**32 - 1))
def test_integer_hash_inverts(values: list[int], seed: int) -> None:
    arr = np.array(values, dtype=np.int64)
    assert unhash_ints(hash64_many(arr, seed), seed).view(np.int64).tolist() == values


@pytest.mark.parametrize("m", [1, 7, 1000, 2**32, 2**32 + 1, 2**40])
def test_probe_indices_agree_with_the_scalar_path_and_flat_layout(m: int) -> None:
    hashes = hash64_many(np.arange(3000), 2)
    idx = probe_indices(hashes, 4, m)
    assert int(idx.max()) < m
    for i in range(0, 3000, 101):
        assert idx[i].tolist() == probe_indices_one(int(hashes[i]), 4, m)
    flat = probe_indices(hashes, 4, m, flat=True)
    assert (flat == idx + np.arange(4, dtype=np.uint64) * np.uint64(m)).all()


# -- hash_codes: groups of equal values by hash, as np.unique of the hashes ----------------------


@pytest.mark.parametrize("distinct", [0, 1, 2, 15, 16, 17, 40, 5000])
def test_hash_codes_are_np_unique_of_the_hashes(distinct: int) -> None:
    rng = np.random.default_rng(distinct)
    values = np.array(
        [f"v{i}" for i in rng.integers(0, max(distinct, 1), 3000 if distinct else 0)], dtype=object
    )
    _, first, inverse = np.unique(hash64_many(values, 0), return_index=True, return_inverse=True)
    grouped = hashing.hash_codes(values)
    assert grouped is not None
    codes, got_first = grouped
    assert codes.dtype == np.int64 and got_first.dtype == np.intp
    assert codes.tolist() == inverse.reshape(-1).tolist()
    assert got_first.tolist() == first.tolist()


@given(st.lists(st.integers(0, 40), max_size=300))
def test_unique_codes_equal_np_unique(ranks: list[int]) -> None:
    # few and many distinct values (the two paths), spread over all 64 bits
    values = hashing.fmix64(np.array(ranks, dtype=np.uint64))
    _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    codes, got_first = hashing._unique_codes(values)
    assert codes.tolist() == inverse.reshape(-1).tolist()
    assert got_first.tolist() == first.tolist()


def test_hash_codes_refuse_collisions_and_unhashable_items(monkeypatch: pytest.MonkeyPatch) -> None:
    assert hashing.hash_codes(np.array(["a", 1.5], dtype=object)) is None
    assert hashing.hash_codes(np.array([2**64], dtype=object)) is None
    monkeypatch.setattr(hashing, "hash64_many", lambda values, seed: np.zeros(len(values), dtype=np.uint64))
    assert hashing.hash_codes(np.array(["x", "y"], dtype=object)) is None
    grouped = hashing.hash_codes(np.array(["x", "x"], dtype=object))
    assert grouped is not None and [a.tolist() for a in grouped] == [[0, 0], [0]]


# -- small_codes: few distinct strings, by identity then equality -------------------------------


@pytest.mark.parametrize("distinct", [1, 5, 64])
def test_small_codes_number_equal_strings_alike_in_order_of_appearance(distinct: int) -> None:
    rng = np.random.default_rng(distinct)
    names = [f"kind-{i}" for i in range(distinct)]
    # half the values are copies (other objects, equal strings): found by equality, not identity
    picks = rng.integers(0, distinct, 5000)
    copies = [names[i] if rng.random() < 0.5 else "".join(list(names[i])) for i in picks]
    assert any(c is not names[i] for c, i in zip(copies, picks, strict=True))
    values = np.array(copies, dtype=object)
    codes = hashing.small_codes(values)
    assert codes is not None
    _, first, expected = np.unique(values.astype(str), return_index=True, return_inverse=True)
    order = np.argsort(first)  # the distinct values in order of first appearance
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    assert codes.tolist() == rank[expected.reshape(-1)].tolist()


def test_small_codes_give_up_on_many_values_or_other_types() -> None:
    many = np.array([f"v{i}" for i in range(65)], dtype=object)
    assert hashing.small_codes(many) is None  # 65 > the default (and largest) limit of 64
    assert hashing.small_codes(many[:64]) is not None
    assert hashing.small_codes(many[:10], limit=9) is None
    assert hashing.small_codes(np.array(["a", b"a"], dtype=object)) is None
    assert hashing.small_codes(np.array(["a", 1], dtype=object)) is None
    assert hashing.small_codes(np.array(["a"], dtype=object), limit=65) is None
    assert hashing.small_codes(np.array(["a", "b"])) is None  # not an object array
    empty = hashing.small_codes(np.array([], dtype=object))
    assert empty is not None and empty.tolist() == []


def test_repeated_string_objects_hash_as_their_values() -> None:
    # hash_array_into keeps the hashes of the strings it saw last by address: values that are
    # one object, equal copies, and strings in the slots a cached one would take
    base = [f"merchant-{i}" for i in range(200)]
    values = np.array([base[i % 7] for i in range(1000)] + base + ["".join(s) for s in base], dtype=object)
    assert hashing.hash64_many(values, 11).tolist() == [hashing.hash64(v, 11) for v in values.tolist()]


def test_one_pass_mixing_in_c_equals_the_numpy_passes() -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(0, 2**64, 4001, dtype=np.uint64)
    in_c = values.copy()
    hashing._fmix64_inplace(in_c)
    strided = np.repeat(values, 2)[::2]  # not contiguous: the numpy passes
    assert not hashing._in_c(strided)
    hashing._fmix64_inplace(strided)
    assert in_c.tolist() == strided.tolist() == [hashing._fmix64_int(int(v)) for v in values]
    ints = rng.integers(-(2**63), 2**63, 1000, dtype=np.int64)
    assert hashing.hash64_many(ints, 9).tolist() == [hashing._hash_int(int(v), 9) for v in ints]


def test_the_address_cache_forgets_what_python_code_may_have_replaced() -> None:
    # an item's __index__ runs Python code during the batch hash: it frees a string already
    # hashed and puts a new one in its place; the new one may reuse the freed address
    values = np.array(["".join(["ab", "cd"]), None, None], dtype=object)

    class Replacing:
        def __index__(self) -> int:
            values[0] = None  # the only reference to "abcd": freed
            values[2] = "".join(["wx", "yz"])  # may land at the freed address
            return 5

    values[1] = Replacing()
    got = hashing.hash64_many(values, 3)
    assert got[2] == hashing.hash64("wxyz", 3) and got[1] == hashing.hash64(5, 3)
