def scan(
    lines: list[bytes],
    names: tuple[str, ...],
    kinds: str,
    columns: tuple[object, ...],
    ok: object,
    max_bytes: int,
    /,
) -> tuple[list[tuple[int, str]] | None, ...]: ...
def encode_strings(column: object, probe: int, /) -> tuple[str, list[bytes]] | None: ...
def decode_text(blob: bytes, out: object, /) -> None: ...
