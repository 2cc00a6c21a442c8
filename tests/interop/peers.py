"""The interop harness: real strongSwan and Libreswan peers (and qsgw) in
network namespaces. One import point for tests:

    from .peers import StrongswanPeer, LibreswanPeer, create_site_pair, ...

The peers run from the root filesystem that scripts/build-peers.sh builds
into $QSGW_CACHE/peers (see docs/interop.md).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .chroot import Bind, Chroot, DaemonProcess, wait_until
from .libreswan import (
    LibreswanConnection,
    LibreswanPeer,
    LibreswanPpk,
    LibreswanPsk,
    PlutoState,
)
from .netns import Namespace, NetnsError, Site, SitePair, create_site_pair
from .qsgw_daemon import QsgwDaemon
from .strongswan import (
    ChildConfig,
    ChildSaStatus,
    ConnectionConfig,
    IkeSaStatus,
    IkeSecret,
    PpkSecret,
    StrongswanPeer,
)

__all__ = [
    "Bind",
    "ChildConfig",
    "ChildSaStatus",
    "Chroot",
    "ConnectionConfig",
    "DaemonProcess",
    "IkeSaStatus",
    "IkeSecret",
    "LibreswanConnection",
    "LibreswanPeer",
    "LibreswanPpk",
    "LibreswanPsk",
    "Namespace",
    "NetnsError",
    "PlutoState",
    "PpkSecret",
    "QsgwDaemon",
    "Site",
    "SitePair",
    "StrongswanPeer",
    "build_peers",
    "create_site_pair",
    "peers_dir",
    "wait_until",
]

REPOSITORY = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPOSITORY / "scripts" / "build-peers.sh"
BUILD_TIMEOUT = 1800.0


def peers_dir() -> Path:
    """Where build-peers.sh puts the root filesystem and its stamp."""
    cache = os.environ.get("QSGW_CACHE", "/var/cache/qsgw")
    return Path(cache) / "peers"


def build_peers() -> str:
    """Runs build-peers.sh (a fast no-op once built); returns its report.

    Raises RuntimeError with the script's last output lines on failure.
    """
    result = subprocess.run(
        [str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-20:])
        raise RuntimeError(f"build-peers.sh exited {result.returncode}:\n{tail}")
    return result.stdout
