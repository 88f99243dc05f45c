"""The runnable anomaly-detection flows: fraud, ddos, iot, sentiment (filled by the dataflows issue)."""
