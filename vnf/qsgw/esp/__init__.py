"""qsgw.esp."""
