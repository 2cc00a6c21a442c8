"""Fixtures of the cluster tests: one real control plane per session."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
from testenv import (
    ControlPlane,
    ControlPlaneError,
    ensure_binaries,
    running_control_plane,
)

# why the binaries could not be built, when they could not
_build_failure: list[str] = []


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Builds the control plane's binaries before any test runs, when a
    selected test needs them: a cold build takes far longer than a test's
    timeout, and collection runs without one."""
    wanted = any("control_plane" in getattr(i, "fixturenames", ()) for i in items)
    if not wanted or config.option.collectonly:
        return
    try:
        ensure_binaries()
    except (ControlPlaneError, subprocess.TimeoutExpired) as error:
        _build_failure.append(str(error))


@pytest.fixture(scope="session")
def control_plane(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok,
    running and ready; stopped at the end of the session."""
    if _build_failure:
        pytest.fail(_build_failure[0], pytrace=False)
    bin_dir = ensure_binaries()
    workdir = tmp_path_factory.mktemp("control-plane")
    started = time.monotonic()
    with running_control_plane(workdir, bin_dir) as cp:
        cp.startup_seconds = time.monotonic() - started
        yield cp
