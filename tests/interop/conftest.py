"""Fixtures for the interop tests: peer root filesystem, namespaces, peers.

Every fixture that starts something stops it in a `finally`, in reverse
order (peers, then namespaces), so a failing test leaves no process and no
namespace behind. A failed test keeps its working directory (configs and
daemon logs) and prints where it is, with the tail of each log.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from .peers import (
    LibreswanPeer,
    SitePair,
    StrongswanPeer,
    build_peers,
    create_site_pair,
    peers_dir,
)
from .qsgw_configs import QsgwGateway

_BUILD_ERROR = pytest.StashKey[str]()
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
LOG_TAIL_LINES = 40


def _is_root() -> bool:
    return os.geteuid() == 0


def pytest_collection_finish(session: pytest.Session) -> None:
    """Builds the peer root filesystem once, before any test's timeout runs.

    Only when interop tests were selected and we are root; the build is a
    no-op when already present.
    """
    selected = any(item.get_closest_marker("interop") for item in session.items)
    if not selected or not _is_root():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    try:
        versions = build_peers()
    except (RuntimeError, OSError) as error:
        session.config.stash[_BUILD_ERROR] = str(error)
        return
    if reporter is not None:
        for line in versions.splitlines():
            reporter.write_line(f"interop peers: {line}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_REPORTS, {})
    return any(report.failed for report in reports.values())


@pytest.fixture(scope="session")
def peer_rootfs(pytestconfig: pytest.Config) -> Path:
    """The built peer root filesystem (skips only when not root)."""
    if not _is_root():
        pytest.skip("interop peers need root (namespaces, chroot, mounts)")
    error = pytestconfig.stash.get(_BUILD_ERROR, None)
    if error is not None:
        pytest.fail(f"peer root filesystem build failed: {error}")
    build_peers()
    return peers_dir() / "rootfs"


def _print_log_tails(workdir: Path) -> None:
    print(f"interop working directory kept: {workdir}")
    logs = [sorted(workdir.rglob(f"*.{suffix}")) for suffix in ("log", "stdout", "out")]
    for log in [path for paths in logs for path in paths]:
        lines = log.read_text(errors="replace").splitlines()
        # pluto's debug lines start with "| " after the time stamp
        lines = [line for line in lines if "| " not in line[:30]]
        print(f"--- {log} (last {LOG_TAIL_LINES} lines) ---")
        print("\n".join(lines[-LOG_TAIL_LINES:]))


@pytest.fixture
def interop_workdir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A short private directory (unix socket paths must stay < 108 bytes)."""
    workdir = Path(tempfile.mkdtemp(prefix="qsgw-interop-", dir="/tmp"))
    try:
        yield workdir
    finally:
        if _failed(request):
            _print_log_tails(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def site_pair(peer_rootfs: Path) -> Iterator[SitePair]:
    """Two namespaces, left and right, joined by veth (see SitePair)."""
    pair = create_site_pair()
    try:
        yield pair
    finally:
        pair.delete()


@pytest.fixture
def strongswan_pair(
    site_pair: SitePair, peer_rootfs: Path, interop_workdir: Path
) -> Iterator[tuple[StrongswanPeer, StrongswanPeer]]:
    """charon running in each namespace, nothing loaded yet."""
    left = StrongswanPeer(
        "left", site_pair.left.namespace, peer_rootfs, interop_workdir / "left"
    )
    right = StrongswanPeer(
        "right", site_pair.right.namespace, peer_rootfs, interop_workdir / "right"
    )
    try:
        left.start()
        right.start()
        yield left, right
    finally:
        try:
            left.stop()
        finally:
            right.stop()


def _charon(
    side: str, namespace: str, rootfs: Path, workdir: Path
) -> Iterator[StrongswanPeer]:
    peer = StrongswanPeer(side, namespace, rootfs, workdir / side)
    try:
        peer.start()
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def strongswan_left(
    site_pair: SitePair, peer_rootfs: Path, interop_workdir: Path
) -> Iterator[StrongswanPeer]:
    """charon running in the left namespace, nothing loaded yet."""
    namespace = site_pair.left.namespace
    yield from _charon("left", namespace, peer_rootfs, interop_workdir)


@pytest.fixture
def libreswan_right(
    site_pair: SitePair, peer_rootfs: Path, interop_workdir: Path
) -> Iterator[LibreswanPeer]:
    """pluto for the right namespace; the test starts it with its config."""
    peer = LibreswanPeer(
        "right", site_pair.right.namespace, peer_rootfs, interop_workdir / "right"
    )
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def strongswan_right(
    site_pair: SitePair, peer_rootfs: Path, interop_workdir: Path
) -> Iterator[StrongswanPeer]:
    """charon running in the right namespace, nothing loaded yet."""
    namespace = site_pair.right.namespace
    yield from _charon("right", namespace, peer_rootfs, interop_workdir)


@pytest.fixture
def qsgw_left(site_pair: SitePair, interop_workdir: Path) -> Iterator[QsgwGateway]:
    """qsgw for the left namespace; the test starts it with its config."""
    gateway = QsgwGateway("left", site_pair.left, interop_workdir / "left")
    try:
        yield gateway
    finally:
        gateway.stop()
