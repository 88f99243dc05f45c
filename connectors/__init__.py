"""Sources and sinks: the event generator, files, Kafka, SQLite and Postgres (filled by later issues)."""
