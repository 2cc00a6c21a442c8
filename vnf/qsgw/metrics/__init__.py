"""qsgw.metrics."""
