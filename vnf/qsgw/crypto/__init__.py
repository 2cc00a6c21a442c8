"""qsgw.crypto."""
