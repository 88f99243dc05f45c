"""The vectorised-path benchmark (``bench.vectorised``) runs end to end on a small input."""

from __future__ import annotations

import json
from pathlib import Path

from bench.vectorised import main

SIDES = ("vectorised", "per_item")
ROWS = ("hash64_many", "Bloom", "AgingBloom", "DGIMTable", "OutlierDetector", "CountMin", "HyperLogLog")


def test_vectorised_bench_small(tmp_path: Path) -> None:
    out = tmp_path / "v.json"
    rows = main(["--items", "2000", "--repeats", "1", "--json", str(out)])
    for prefix in ROWS:
        assert any(r["path"].startswith(prefix) for r in rows), prefix
    for r in rows:
        assert r["items"] == 2000 and r["per_item_items"] == 200, r["path"]
        for side in SIDES:
            s = r[side]
            assert 0 < s["min"] <= s["median"] <= s["max"], (r["path"], side, s)
        assert r["ratio"] > 0 and 0 < r["ratio_min"] <= r["ratio_max"], r["path"]
    written = json.loads(out.read_text())
    assert written["rows"] == rows
    assert written["meta"]["items"] == 2000 and written["meta"]["repeats"] == 1
