"""Tests of the connectors: parsing, files, SQL, stdout, configuration, sources."""
