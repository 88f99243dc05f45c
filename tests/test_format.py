"""The record format every sketch's bytes use: refuses anything it did not write."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sketches._base import Sketch
from sketches._format import FAMILIES, Codec, decode_items, encode_items

CODEC = Codec("CountMinSketch", version=1, params="<IIB")


def test_round_trip() -> None:
    blob = CODEC.dump((10, 3, 1), b"payload")
    assert CODEC.load(blob) == ((10, 3, 1), b"payload")
    assert CODEC.load(bytearray(blob)) == CODEC.load(memoryview(blob))


def test_family_names_are_unique() -> None:
    assert len(set(FAMILIES.values())) == len(FAMILIES)
    with pytest.raises(ValueError, match="unknown sketch family"):
        Codec("NoSuchSketch", 1, "<I")


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "bad magic or too short"),
        (b"XYZ" + bytes(20), "bad magic"),
        (Codec("HyperLogLog", 1, "<IIB").dump((1, 2, 3), b""), "hold a HyperLogLog, not a CountMinSketch"),
        (
            Codec("CountMinSketch", 2, "<IIB").dump((1, 2, 3), b""),
            "unsupported CountMinSketch format version 2",
        ),
        (Codec("CountMinSketch", 1, "<II").dump((1, 2), b"x"), "parameter block of 8 bytes, expected 9"),
    ],
)
def test_foreign_records_are_refused(blob: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CODEC.load(blob)


def test_non_bytes_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="expects bytes"):
        CODEC.load("text")  # type: ignore[arg-type]


@given(st.binary(max_size=64), st.data())
def test_any_single_corruption_is_refused(payload: bytes, data: st.DataObject) -> None:
    blob = bytearray(CODEC.dump((7, 5, 0), payload))
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(ValueError):
        CODEC.load(blob[:cut])
    pos = data.draw(st.integers(0, len(blob) - 1))
    blob[pos] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(ValueError):
        CODEC.load(blob)


item_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(), st.binary()),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=5), children, max_size=3),
    ),
    max_leaves=10,
)


@given(st.lists(item_values, max_size=10))
def test_items_keep_their_types(items: list[object]) -> None:
    assert decode_items(encode_items(items)) == items


def test_items_refuse_what_they_cannot_store() -> None:
    with pytest.raises(TypeError, match="cannot store an item of type set"):
        encode_items([{1, 2}])
    with pytest.raises(TypeError, match="str keys"):
        encode_items([{1: 2}])
    for bad in (b"\xff{", b'[{"x": 1}]', b'[{"b": "!!"}]', b'[{"d": 3}]', b"{}"):
        with pytest.raises(ValueError, match="corrupt item block"):
            decode_items(bad)


class _Box(Sketch):
    codec = Codec("DGIM", 1, "<I")

    def __init__(self, size: int) -> None:
        self.size = size

    def to_bytes(self) -> bytes:
        return self.codec.dump((self.size,), b"")

    @classmethod
    def from_bytes(cls, data: bytes) -> _Box:
        (size,), _ = cls.codec.load(data)
        return cls(size)


def test_base_gives_copy_eq_pickle_and_merge_checks() -> None:
    box = _Box(3)
    assert box.copy() == box and box.copy() is not box
    assert pickle.loads(pickle.dumps(box)) == box
    assert box != _Box(4) and box != "x"
    with pytest.raises(ValueError, match="with itself"):
        box._check_mergeable(box, ("size",))
    with pytest.raises(ValueError, match=r"size differs \(3 != 4\)"):
        box._check_mergeable(_Box(4), ("size",))
    with pytest.raises(ValueError, match="cannot merge str into _Box"):
        box._check_mergeable("x", ("size",))
    box._check_mergeable(_Box(3), ("size",))
