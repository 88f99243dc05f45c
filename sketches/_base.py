"""What every sketch shares: copying, equality, pickling through versioned bytes, merge checks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["Sketch"]

S = TypeVar("S", bound="Sketch")


class Sketch:
    """Base class: subclasses implement ``to_bytes`` and ``from_bytes``; the rest follows.

    Pickling goes through ``to_bytes``, so a Bytewax snapshot of a sketch is its compact,
    versioned, checksummed bytes rather than a pickle of live numpy objects.
    """

    __slots__ = ()

    def to_bytes(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def from_bytes(cls: type[S], data: bytes) -> S:
        raise NotImplementedError

    def copy(self: S) -> S:
        """An independent deep copy."""
        return type(self).from_bytes(self.to_bytes())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sketch) and type(other) is type(self) and self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (type(self).from_bytes, (self.to_bytes(),))

    def _check_mergeable(self, other: object, params: Iterable[str]) -> None:
        """Raise ``ValueError`` unless ``other`` is a distinct sketch of this class with equal ``params``."""
        name = type(self).__name__
        if type(other) is not type(self):
            raise ValueError(f"cannot merge {type(other).__name__} into {name}")
        if other is self:
            raise ValueError(f"cannot merge a {name} with itself; merge a copy()")
        diffs = [
            f"{p} differs ({getattr(self, p)!r} != {getattr(other, p)!r})"
            for p in params
            if getattr(self, p) != getattr(other, p)
        ]
        if diffs:
            raise ValueError(f"cannot merge {name}: " + ", ".join(diffs))
