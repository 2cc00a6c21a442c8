"""qsgw.daemon."""
