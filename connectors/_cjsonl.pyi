def scan(
    lines: list[bytes],
    names: tuple[str, ...],
    kinds: str,
    columns: tuple[object, ...],
    ok: object,
    max_bytes: int,
    /,
) -> tuple[list[tuple[int, str]] | None, ...]: ...
