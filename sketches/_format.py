"""Versioned, checksummed bytes for every sketch.

Layout (little-endian)::

    magic     3 bytes  b"SKW"
    family    u8       which sketch class (see ``FAMILIES``)
    version   u8       format version of that family
    plen      u16      length of the parameter block
    params    plen     the family's ``struct`` of structural parameters (seed included)
    payload   ...      the family's state
    crc32     u32      zlib.crc32 of everything before it

``Codec.load`` refuses, with a ``ValueError`` that says why, anything that is not exactly
such a record for the expected family: wrong magic, another family, an unknown version,
truncation, trailing bytes or a checksum mismatch. It never returns a wrong sketch.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any, Final

__all__ = ["FAMILIES", "Codec", "decode_items", "encode_items"]

MAGIC: Final = b"SKW"
_HEAD: Final = struct.Struct("<3sBBH")
_CRC: Final = struct.Struct("<I")

FAMILIES: Final[dict[int, str]] = {
    1: "BloomFilter",
    2: "AgingBloomFilter",
    3: "CountMinSketch",
    4: "HyperLogLog",
    5: "FlajoletMartin",
    6: "AMSSketch",
    7: "DGIM",
    8: "DecayingAggregate",
    9: "Reservoir",
    10: "StratifiedReservoir",
    11: "WeightedReservoir",
    12: "SpaceSaving",
}


class Codec:
    """Writes and checks the record of one sketch family at one format version.

    >>> codec = Codec("CountMinSketch", version=1, params="<IIIB")
    >>> blob = codec.dump((1024, 4, 7, 0), b"state")
    >>> codec.load(blob)
    ((1024, 4, 7, 0), b'state')
    >>> Codec("HyperLogLog", 1, "<BI").load(blob)
    Traceback (most recent call last):
    ...
    ValueError: bytes hold a CountMinSketch, not a HyperLogLog
    """

    def __init__(self, name: str, version: int, params: str) -> None:
        families = {v: k for k, v in FAMILIES.items()}
        if name not in families:
            raise ValueError(f"unknown sketch family {name!r}")
        self.name = name
        self.family = families[name]
        self.version = version
        self.params = struct.Struct(params)

    def dump(self, params: tuple[Any, ...], payload: bytes) -> bytes:
        """Return the full record for ``params`` and ``payload``."""
        block = self.params.pack(*params)
        body = _HEAD.pack(MAGIC, self.family, self.version, len(block)) + block + payload
        return body + _CRC.pack(zlib.crc32(body))

    def load(self, data: bytes | bytearray | memoryview) -> tuple[tuple[Any, ...], bytes]:
        """Check a record and return ``(params, payload)``; raise ``ValueError`` if it is not ours."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"{self.name}.from_bytes expects bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _HEAD.size + _CRC.size or data[:3] != MAGIC:
            raise ValueError(f"not a sketchwatch sketch: bad magic or too short ({len(data)} bytes)")
        _, family, version, plen = _HEAD.unpack_from(data)
        if family != self.family:
            found = FAMILIES.get(family, f"unknown family {family}")
            raise ValueError(f"bytes hold a {found}, not a {self.name}")
        if version != self.version:
            raise ValueError(
                f"unsupported {self.name} format version {version} (this library reads {self.version})"
            )
        (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
        if zlib.crc32(data[: -_CRC.size]) != crc:
            raise ValueError(f"corrupt {self.name} bytes: checksum mismatch")
        if plen != self.params.size or _HEAD.size + plen > len(data) - _CRC.size:
            raise ValueError(
                f"corrupt {self.name} bytes: parameter block of {plen} bytes, expected {self.params.size}"
            )
        params = self.params.unpack_from(data, _HEAD.size)
        return params, data[_HEAD.size + plen : -_CRC.size]


def _tag(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"b": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, tuple):
        return {"t": [_tag(v) for v in value]}
    if isinstance(value, list):
        return [_tag(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("only dicts with str keys can be stored in a sketch")
        return {"d": {k: _tag(v) for k, v in value.items()}}
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _tag(value.item())
    raise TypeError(f"cannot store an item of type {type(value).__name__} in sketch bytes")


def _untag(value: Any) -> Any:
    if isinstance(value, list):
        return [_untag(v) for v in value]
    if isinstance(value, dict):
        if "b" in value:
            return base64.b64decode(value["b"], validate=True)
        if "t" in value:
            return tuple(_untag(v) for v in value["t"])
        return {k: _untag(v) for k, v in value["d"].items()}
    return value


def encode_items(items: list[Any]) -> bytes:
    """Encode stored items (str, bytes, int, float, bool, None, and tuples/lists/str-keyed dicts
    of those) as UTF-8 JSON that keeps their types.

    >>> decode_items(encode_items(["a", b"b", 3, 2.5, None, ("x", 1), {"k": [1]}]))
    ['a', b'b', 3, 2.5, None, ('x', 1), {'k': [1]}]
    """
    return json.dumps([_tag(v) for v in items], separators=(",", ":"), allow_nan=True).encode()


def decode_items(data: bytes) -> list[Any]:
    """Inverse of ``encode_items``; raises ``ValueError`` on malformed input."""
    try:
        value = json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"corrupt item block: {exc}") from exc
    if not isinstance(value, list):
        raise ValueError("corrupt item block: expected a list")
    try:
        return [_untag(v) for v in value]
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # binascii.Error is a ValueError
        raise ValueError(f"corrupt item block: {exc!r}") from exc
