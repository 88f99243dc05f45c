"""Exactly-once resumption on Bytewax's SQLite recovery store (filled by the production-path issue)."""
