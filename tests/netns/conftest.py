"""Fixtures for tests with real packets in network namespaces (root only)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from .topology import Tunnel, TunnelFactory


def _can_use_namespaces() -> bool:
    return (
        os.geteuid() == 0
        and shutil.which("ip") is not None
        and os.path.exists("/dev/net/tun")
    )


@pytest.fixture
def make_tunnel() -> Iterator[TunnelFactory]:
    """Build a `Tunnel` (namespaces, gateways, policies); torn down after."""
    if not _can_use_namespaces():
        pytest.skip("needs root, iproute2 and /dev/net/tun")
    tunnels: list[Tunnel] = []

    def make(**options: object) -> Tunnel:
        tunnel = Tunnel(**options)  # type: ignore[arg-type]
        tunnels.append(tunnel)
        tunnel.up()
        return tunnel

    yield make
    for tunnel in tunnels:
        tunnel.down()
