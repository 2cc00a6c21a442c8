"""The two gateways of the demo: secrets, configuration files, daemons.

Each gateway is a real `qsgw run --foreground` process started inside its
namespace; the demo talks to it over its control socket (a unix socket in
the run's private directory, reachable from any network namespace). The
PSK and the PPK are fresh random values written to 0600 files; they are
read only by the daemons and never printed.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from qsgw.daemon import control
from qsgw.demo.cleanup import Cleanup
from qsgw.demo.timing import TIME_SCALE
from qsgw.demo.topology import DemoError, Side, Topology, in_namespace

IKE_PROPOSAL = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
ESP_PROPOSAL = "aes256gcm16"
CONNECTION = "demo"
CHILD = "net"
PPK_ID = "demo-ppk"
METRICS_PORT = 9500
SECRET_OCTETS = 32  # RFC 8784 §3: a PPK of at least 256 bits

START_TIMEOUT = 20.0 * TIME_SCALE
ESTABLISH_TIMEOUT = 20.0 * TIME_SCALE
INSTALL_TIMEOUT = 10.0 * TIME_SCALE
STOP_TIMEOUT = 8.0 * TIME_SCALE
_POLL = 0.1
_LOG_TAIL_LINES = 15


@dataclass(frozen=True, slots=True)
class Gateway:
    side: Side
    config: Path
    socket: Path
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def name(self) -> str:
        return f"gateway {self.side.label}"

    def request(self, command: str, args: dict[str, Any] | None = None) -> Any:
        try:
            return control.request(self.socket, command, args, timeout=5.0 * TIME_SCALE)
        except (control.CommandError, control.DaemonUnreachable, OSError) as exc:
            raise DemoError(
                f"{self.name} did not answer '{command}' ({exc}); its log:\n"
                f"{self.log_tail()}"
            ) from None

    def log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(empty log)"


def write_secret(path: Path, octets: int) -> None:
    """A fresh random secret as `0x<hex>`, in a new file only root reads."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write("0x" + secrets.token_hex(octets) + "\n")


def write_secrets(directory: Path) -> tuple[Path, Path]:
    psk, ppk = directory / "psk", directory / "ppk"
    write_secret(psk, SECRET_OCTETS)
    write_secret(ppk, SECRET_OCTETS)
    return psk, ppk


def gateway_document(
    side: Side, peer: Side, directory: Path, data_plane: str
) -> dict[str, Any]:
    """The YAML document (docs/configuration.md) of one side."""
    label = side.label.lower()
    connection = {
        "local_addrs": [str(side.outer)],
        "remote_addrs": [str(peer.outer)],
        "local": {"id": f"gw-{label}.demo.example"},
        "remote": {"id": f"gw-{peer.label.lower()}.demo.example"},
        "proposals": [IKE_PROPOSAL],
        "psk_file": str(directory / "psk"),
        "ppk": {"id": PPK_ID, "file": str(directory / "ppk"), "required": True},
        "children": {
            CHILD: {
                "local_ts": [str(side.inner_network)],
                "remote_ts": [str(peer.inner_network)],
                "esp_proposals": [ESP_PROPOSAL],
            }
        },
    }
    gateway = {
        "listen": [str(side.outer)],
        "control_socket": str(directory / f"gw-{label}.sock"),
        "data_plane": data_plane,
        "metrics": {"address": "127.0.0.1", "port": METRICS_PORT},
        "log": {"level": "info"},
        "shutdown_timeout": 2,
    }
    return {"gateway": gateway, "connections": {CONNECTION: connection}}


def launch_gateways(
    topology: Topology, directory: Path, data_plane: str, cleanup: Cleanup
) -> tuple[Gateway, Gateway]:
    """Both daemons started (not yet answering: see `wait_ready`)."""
    write_secrets(directory)
    pair = (topology.a, topology.b), (topology.b, topology.a)
    gateways = []
    for side, peer in pair:
        document = gateway_document(side, peer, directory, data_plane)
        gateway = _start(side, document, directory)
        cleanup.push(gateway.name, _stopper(gateway))
        gateways.append(gateway)
    return gateways[0], gateways[1]


def _stopper(gateway: Gateway) -> Callable[[], None]:
    def stop_gateway() -> None:
        stop(gateway)

    return stop_gateway


def _start(side: Side, document: dict[str, Any], directory: Path) -> Gateway:
    label = side.label.lower()
    config = directory / f"gw-{label}.yaml"
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    log = directory / f"gw-{label}.log"
    command = [sys.executable, "-m", "qsgw.daemon.cli", "run", "--config"]
    with log.open("wb") as output:
        # own session: a Ctrl-C reaches the demo only, which stops the
        # gateways in order
        process = subprocess.Popen(
            in_namespace(side.namespace, *command, str(config), "--foreground"),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    socket = Path(document["gateway"]["control_socket"])
    return Gateway(side, config, socket, log, process)


def wait_ready(gateway: Gateway, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            raise DemoError(
                f"{gateway.name} exited with status {gateway.process.returncode} "
                f"while starting; its log:\n{gateway.log_tail()}"
            )
        try:
            control.request(gateway.socket, "status", timeout=5.0 * TIME_SCALE)
            return
        except (control.DaemonUnreachable, control.CommandError, OSError):
            time.sleep(_POLL)
    raise DemoError(
        f"{gateway.name} did not answer on its control socket within "
        f"{timeout:g} s; its log:\n{gateway.log_tail()}"
    )


def stop(gateway: Gateway) -> None:
    """SIGTERM (the daemon deletes its SAs and exits), SIGKILL if it hangs."""
    process = gateway.process
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)


def establish(initiator: Gateway, responder: Gateway) -> float:
    """Initiate the connection from A; the seconds it took to establish."""
    started = time.monotonic()
    args = {"conn": CONNECTION, "child": CHILD, "wait": ESTABLISH_TIMEOUT}
    try:
        control.request(initiator.socket, "initiate", args, ESTABLISH_TIMEOUT + 5)
    except (control.CommandError, control.DaemonUnreachable, OSError) as exc:
        raise DemoError(
            f"{initiator.name} did not establish the IKE SA within "
            f"{ESTABLISH_TIMEOUT:g} s ({exc}); its log:\n{initiator.log_tail()}\n"
            f"{responder.name}'s log:\n{responder.log_tail()}"
        ) from None
    elapsed = time.monotonic() - started
    for gateway in (initiator, responder):
        wait_installed(gateway, INSTALL_TIMEOUT)
    return elapsed


def wait_installed(gateway: Gateway, timeout: float) -> None:
    """Until the gateway's data plane holds the Child SA."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = gateway.request("status")
        if int(status.get("installed_child_sas", 0)) >= 1:
            return
        time.sleep(_POLL)
    raise DemoError(
        f"{gateway.name} did not install the Child SA in its data plane within "
        f"{timeout:g} s; its log:\n{gateway.log_tail()}"
    )


def established_sa(gateway: Gateway) -> dict[str, Any]:
    """The gateway's established IKE SA as `qsgw sas --json` shows it."""
    for sa in gateway.request("sas"):
        if sa.get("connection") == CONNECTION and sa.get("state") == "ESTABLISHED":
            return dict(sa)
    raise DemoError(f"{gateway.name} has no established IKE SA of '{CONNECTION}'")
