"""`qsgw demo` end to end: real namespaces, real daemons, real packets.

Each test runs the demo as a user does (`python -m qsgw.demo`, which is
what `qsgw demo` calls) and then checks that nothing of the run is left:
no namespace, no process, no file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from qsgw.demo import topology as topo

pytestmark = pytest.mark.netns

DEMO = [sys.executable, "-m", "qsgw.demo", "--json"]
RUN_TIMEOUT = 240.0
START_TIMEOUT = 90.0


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        pytest.skip("needs root and /dev/net/tun")


def _namespaces() -> set[str]:
    listing = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    )
    return {line.split()[0] for line in listing.stdout.splitlines() if line}


def _command_lines() -> list[str]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            lines.append(raw.replace(b"\0", b" ").decode(errors="replace"))
    return lines


def assert_nothing_left(run: dict[str, Any]) -> None:
    assert run["cleaned_up"] is True, run["cleanup_failures"]
    assert not set(run["namespaces"]) & _namespaces()
    assert topo.leftover_namespaces(run["id"]) == []
    workdir = run["workdir"]
    assert not Path(workdir).exists()
    marks = (workdir, *run["namespaces"])
    assert not [c for c in _command_lines() if any(m in c for m in marks)]
    for pid in run["gateway_pids"]:
        assert not Path(f"/proc/{pid}").exists()


def test_demo_negotiates_x25519_mlkem768_with_ppk_and_carries_traffic() -> None:
    result = subprocess.run(
        DEMO, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)

    assert report["ok"] is True
    assert report["ike"]["ke"] == "x25519"
    assert report["ike"]["ke1"] == "mlkem768"
    assert report["key_exchanges"] == ["x25519", "mlkem768"]
    assert report["ike"]["encr"] == "aes256gcm16"
    assert report["esp"]["encr"] == "aes256gcm16"
    assert report["ppk"] is True
    assert report["data_plane"] in ("userspace", "kernel")

    assert report["ping"]["received"] > 0
    assert report["tunnel"]["packets_sent"] > 0
    assert report["tunnel"]["packets_received"] > 0
    assert report["throughput"]["bits_per_second"] > 0
    assert_nothing_left(report["run"])


def _daemon_configs(demo_pid: int) -> list[Path]:
    """The configuration files of the gateways the demo process started."""
    configs = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if int(parent) == demo_pid and b"--config" in argv:
            configs.append(Path(argv[argv.index(b"--config") + 1].decode()))
    return configs


def _wait_for_gateways(demo: subprocess.Popen[str]) -> None:
    """Until both gateways answer on their control sockets."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert demo.poll() is None, "the demo ended before it could be interrupted"
        configs = _daemon_configs(demo.pid)
        sockets = [c.with_suffix(".sock") for c in configs]
        if len(sockets) == 2 and all(s.exists() for s in sockets):
            return
        time.sleep(0.1)
    pytest.fail(f"the demo's gateways did not start within {START_TIMEOUT:g} s")


def _restore_sigint() -> None:
    # a shell that starts jobs in the background ignores SIGINT for them
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_demo_interrupted_by_ctrl_c_removes_everything_it_created() -> None:
    demo = subprocess.Popen(
        [*DEMO, "--seconds", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_restore_sigint,
    )
    try:
        _wait_for_gateways(demo)
        demo.send_signal(signal.SIGINT)
        output, errors = demo.communicate(timeout=RUN_TIMEOUT)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
    assert demo.returncode == 130, output + errors
    report = json.loads(output)
    assert report["ok"] is False
    assert report["error"] == "interrupted (Ctrl-C)"
    assert len(report["run"]["gateway_pids"]) == 2
    assert_nothing_left(report["run"])


def _kernel_accepts_esp() -> bool:
    probe = topo.new_topology()
    namespace = probe.a.namespace
    subprocess.run(["ip", "netns", "add", namespace], check=True, timeout=10)
    try:
        topo.run(["ip", "-n", namespace, "link", "set", "lo", "up"], "lo up")
        return topo.kernel_refusal(probe.a, probe.b) == ""
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=True, timeout=10)


def test_kernel_data_plane_on_a_kernel_without_esp_is_refused_and_cleaned_up() -> None:
    if _kernel_accepts_esp():
        pytest.skip("this kernel accepts ESP states")
    result = subprocess.run(
        [*DEMO, "--data-plane", "kernel"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert "the kernel data plane cannot run here" in report["error"]
    assert "--data-plane userspace" in report["error"]
    assert_nothing_left(report["run"])
