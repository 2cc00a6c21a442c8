"""Tests with real packets in network namespaces (root only)."""
