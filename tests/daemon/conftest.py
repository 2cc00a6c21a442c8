"""Two qsgw daemons on loopback (127.0.0.1 and 127.0.0.2), driven by the CLI.

Each daemon is a real `qsgw run --foreground` process with the recording
data plane; every test stops the processes it started, by PID.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from qsgw.daemon import control

PSK = "loopback-test-psk-0123456789"
PPK_HEX = "a5" * 32
WAIT = 10.0


def free_port_pair() -> int:
    """A port p with p and p + 1 free for UDP on 127.0.0.1 and 127.0.0.2."""
    for _ in range(200):
        port = random.randrange(20000, 60000, 2)
        sockets = []
        try:
            for address in ("127.0.0.1", "127.0.0.2"):
                for offset in (0, 1):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    sockets.append(s)
                    s.bind((address, port + offset))
            return port
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free UDP ports")


@dataclass
class Daemon:
    name: str
    address: str
    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.directory / f"{self.name}.log"

    @property
    def socket(self) -> Path:
        return self.directory / f"{self.name}.sock"

    @property
    def config(self) -> Path:
        return self.directory / f"{self.name}.yaml"

    def write_config(self, connections: dict[str, Any], **gateway: Any) -> None:
        document = {
            "gateway": {
                "listen": [self.address],
                "ike_port": self.port,
                "natt_port": self.port + 1,
                "control_socket": str(self.socket),
                "data_plane": "recording",
                "log": {"level": "debug"},
                **gateway,
            },
            "connections": connections,
        }
        self.config.write_text(yaml.safe_dump(document))

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "qsgw.daemon.cli",
                    "run",
                    "--foreground",
                    "--config",
                    str(self.config),
                ],
                stdout=log,
                stderr=log,
                cwd=self.directory,
            )
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited: {self.log.read_text()}")
            with contextlib.suppress(control.DaemonUnreachable):
                self.request("status")
                return
            time.sleep(0.05)
        pytest.fail(f"{self.name} did not start: {self.log.read_text()}")

    def stop(self) -> int | None:
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=WAIT)
            pytest.fail(f"{self.name} ignored SIGTERM")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "qsgw.daemon.cli",
                "--socket",
                str(self.socket),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def request(self, command: str, **args: Any) -> Any:
        """A control-socket request without the CLI's process start-up."""
        return control.request(self.socket, command, args, timeout=WAIT)

    def sas(self) -> list[dict[str, Any]]:
        return list(self.request("sas"))

    def wait_for(
        self, condition: Callable[[list[dict[str, Any]]], bool], what: str
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            sas = self.sas()
            if condition(sas):
                return sas
            time.sleep(0.05)
        pytest.fail(f"{self.name}: {what} did not happen: {self.sas()}")


def connection(
    me: str,
    peer: str,
    port: int,
    local_id: str,
    remote_id: str,
    local_ts: str,
    remote_ts: str,
    *,
    hybrid: bool,
    start: bool = False,
) -> dict[str, Any]:
    """One side's connection, strongSwan-like names; PPK when hybrid."""
    ke = "x25519-ke1_mlkem768" if hybrid else "x25519"
    conn: dict[str, Any] = {
        "local_addrs": [me],
        "remote_addrs": [peer],
        "remote_port": port,
        "local": {"id": local_id},
        "remote": {"id": remote_id},
        "proposals": [f"aes256gcm16-prfsha384-{ke}"],
        "psk_file": "site.psk",
        "children": {
            "net": {
                "local_ts": [local_ts],
                "remote_ts": [remote_ts],
                "esp_proposals": [f"aes256gcm16-{ke}"],
                "start_action": "start" if start else "none",
            }
        },
    }
    if hybrid:
        conn["ppk"] = {"id": "ppk-1", "file": "ppk-1.key", "required": True}
    return conn


@dataclass
class Pair:
    a: Daemon
    b: Daemon

    def configure(self, *, hybrid: bool, start: bool = False, extra: int = 0) -> None:
        """`site` (and `extra` more connections site-1...) on both sides."""
        port = self.a.port
        names = ["site"] + [f"site-{i}" for i in range(1, extra + 1)]
        a_conns, b_conns = {}, {}
        for i, name in enumerate(names):
            a_ts, b_ts = f"10.{i}.1.0/24", f"10.{i}.2.0/24"
            a_conns[name] = connection(
                "127.0.0.1",
                "127.0.0.2",
                port,
                f"a{i}.example.org",
                f"b{i}.example.org",
                a_ts,
                b_ts,
                hybrid=hybrid,
                start=start,
            )
            b_conns[name] = connection(
                "127.0.0.2",
                "127.0.0.1",
                port,
                f"b{i}.example.org",
                f"a{i}.example.org",
                b_ts,
                a_ts,
                hybrid=hybrid,
            )
        self.a.write_config(a_conns)
        self.b.write_config(b_conns)

    def start(self) -> None:
        self.b.start()
        self.a.start()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    (tmp_path / "site.psk").write_text(PSK + "\n")
    (tmp_path / "ppk-1.key").write_text("0x" + PPK_HEX + "\n")
    for name in ("site.psk", "ppk-1.key"):
        os.chmod(tmp_path / name, 0o600)
    port = free_port_pair()
    daemons = Pair(
        Daemon("a", "127.0.0.1", tmp_path, port),
        Daemon("b", "127.0.0.2", tmp_path, port),
    )
    try:
        yield daemons
    finally:
        daemons.a.stop()
        daemons.b.stop()
