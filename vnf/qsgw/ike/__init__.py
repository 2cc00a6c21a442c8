"""qsgw.ike."""
