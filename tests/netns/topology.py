"""Two gateways in two network namespaces joined by a veth pair.

    ns "left"                                   ns "right"
    lo 10.1.0.1, fd00:1::1                      lo 10.2.0.1, fd00:2::1
    TUN qsgw0 -- UserspaceBackend               UserspaceBackend -- TUN qsgw0
    veth 192.0.2.1, 2001:db8:1::1  <-------->   veth 192.0.2.2, 2001:db8:1::2

Each gateway runs `gateway.py` in its namespace with static SAs whose keys
come from a seeded RNG. Used by the netns tests and bench/esp_throughput.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GATEWAY = HERE / "gateway.py"
TRAFFIC = HERE / "traffic.py"
REPLY_TIMEOUT = 20.0

OUTER = {
    4: ("192.0.2.1", "192.0.2.2", 24),
    6: ("2001:db8:1::1", "2001:db8:1::2", 64),
}
INNER = {
    4: ("10.1.0.1", "10.2.0.1", "10.1.0.0/24", "10.2.0.0/24"),
    6: ("fd00:1::1", "fd00:2::1", "fd00:1::/64", "fd00:2::/64"),
}
KEY_BITS = {"aesgcm16": 256, "chacha20poly1305": 256, "aescbc": 256}
KEYMAT_SIZE = {"aesgcm16": 36, "chacha20poly1305": 36, "aescbc": 32}


def run(namespace: str, *command: str, timeout: float = 30) -> str:
    """Run a command in `namespace`; its stdout, or CalledProcessError."""
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return result.stdout


def spawn(namespace: str, *command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", namespace, *command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def read_line(process: subprocess.Popen[str], timeout: float = REPLY_TIMEOUT) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError("no answer from the subprocess")
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"subprocess exited with {process.wait(5)}")
    return line


def python(namespace: str, script: Path, *arguments: str) -> subprocess.Popen[str]:
    return spawn(namespace, sys.executable, str(script), *arguments)


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class Gateway:
    """A gateway process in a namespace, driven with JSON commands."""

    def __init__(
        self, namespace: str, *, raw_esp: bool, shell_owns_port: bool = False
    ) -> None:
        self.namespace = namespace
        config = json.dumps(
            {"tun": "qsgw0", "raw_esp": raw_esp, "shell_owns_port": shell_owns_port}
        )
        self.process = python(namespace, GATEWAY, config)
        self._reply()

    def call(self, op: str, **arguments: Any) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
        self.process.stdin.flush()
        return self._reply()

    def _reply(self) -> Any:
        reply = json.loads(read_line(self.process))
        if not reply["ok"]:
            raise RuntimeError(reply["error"])
        return reply["result"]

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError, RuntimeError, TimeoutError):
                self.call("quit")
        stop(self.process)


@dataclass
class SaPair:
    """One Child SA: an SA in each direction, as seen from the left."""

    left_to_right: int
    right_to_left: int
    reqid: int


@dataclass
class Tunnel:
    """Two namespaces, two gateways and the SAs between them."""

    inner: int
    outer: int
    encapsulated: bool
    algorithm: str = "aesgcm16"
    shell_owns_port: bool = False
    seed: int = 1
    names: tuple[str, str] = ("", "")
    gateways: list[Gateway] = field(default_factory=list)
    _rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        suffix = f"{os.getpid()}-{self.inner}{self.outer}"
        self.names = (f"qsgw-l-{suffix}", f"qsgw-r-{suffix}")
        self._rng = random.Random(self.seed)

    @property
    def left(self) -> Gateway:
        return self.gateways[0]

    @property
    def right(self) -> Gateway:
        return self.gateways[1]

    @property
    def outer_addresses(self) -> tuple[str, str]:
        left, right, _ = OUTER[self.outer]
        return left, right

    @property
    def inner_addresses(self) -> tuple[str, str]:
        left, right, _, _ = INNER[self.inner]
        return left, right

    def up(self) -> None:
        self._namespaces()
        for name in self.names:
            gateway = Gateway(
                name,
                raw_esp=not self.encapsulated,
                shell_owns_port=self.shell_owns_port,
            )
            self.gateways.append(gateway)
        self._policies_and_routes()

    def down(self) -> None:
        for gateway in self.gateways:
            gateway.close()
        for name in self.names:
            subprocess.run(["ip", "netns", "delete", name], check=False, timeout=30)

    def _namespaces(self) -> None:
        left, right = self.names
        for name in self.names:
            subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
            run(name, "ip", "link", "set", "lo", "up")
            run(name, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
        subprocess.run(
            [
                "ip",
                "link",
                "add",
                "vl",
                "netns",
                left,
                "type",
                "veth",
                "peer",
                "name",
                "vr",
                "netns",
                right,
            ],
            check=True,
            timeout=30,
        )
        for name, link, index in ((left, "vl", 0), (right, "vr", 1)):
            self._addresses(name, link, index)

    def _addresses(self, name: str, link: str, index: int) -> None:
        for version, (a, b, prefix) in OUTER.items():
            address = (a, b)[index]
            extra = ["nodad"] if version == 6 else []
            run(name, "ip", "addr", "add", f"{address}/{prefix}", "dev", link, *extra)
        for version, addresses in INNER.items():
            length = 32 if version == 4 else 128
            run(name, "ip", "addr", "add", f"{addresses[index]}/{length}", "dev", "lo")
        run(name, "ip", "link", "set", link, "up")

    def _policies_and_routes(self) -> None:
        left_inner, right_inner, left_net, right_net = INNER[self.inner]
        left_outer, right_outer = self.outer_addresses
        for gateway, local, remote, source, outer_local, outer_remote in (
            (self.left, left_net, right_net, left_inner, left_outer, right_outer),
            (self.right, right_net, left_net, right_inner, right_outer, left_outer),
        ):
            for direction in ("out", "in"):
                policy = {
                    "direction": direction,
                    "local": local,
                    "remote": remote,
                    "tunnel_source": outer_local,
                    "tunnel_destination": outer_remote,
                    "reqid": 1,
                }
                gateway.call("add_policy", policy=policy)
            gateway.call("install_route", remote=remote, source=source)

    def sa_pair(
        self,
        left_to_right: int,
        right_to_left: int,
        lifetime: dict[str, int] | None = None,
    ) -> SaPair:
        """Install a fresh pair: inbound SAs first, then outbound ones."""
        forward = self._keys()
        backward = self._keys()
        left_outer, right_outer = self.outer_addresses
        forward_sa = self._sa(left_to_right, left_outer, right_outer, forward)
        backward_sa = self._sa(right_to_left, right_outer, left_outer, backward)
        if lifetime:
            forward_sa["lifetime"] = backward_sa["lifetime"] = lifetime

        self.right.call("add_sa", sa={**forward_sa, "direction": "in"})
        self.left.call("add_sa", sa={**backward_sa, "direction": "in"})
        self.left.call("add_sa", sa={**forward_sa, "direction": "out"})
        self.right.call("add_sa", sa={**backward_sa, "direction": "out"})
        return SaPair(left_to_right, right_to_left, 1)

    def delete_outbound(self, pair: SaPair) -> None:
        left_outer, right_outer = self.outer_addresses
        self.left.call("delete_sa", spi=pair.left_to_right, destination=right_outer)
        self.right.call("delete_sa", spi=pair.right_to_left, destination=left_outer)

    def delete_inbound(self, pair: SaPair) -> None:
        left_outer, right_outer = self.outer_addresses
        self.right.call("delete_sa", spi=pair.left_to_right, destination=right_outer)
        self.left.call("delete_sa", spi=pair.right_to_left, destination=left_outer)

    def inbound_counters(self, pair: SaPair) -> dict[str, int]:
        """Counters of the left-to-right SA at the right gateway."""
        _, right_outer = self.outer_addresses
        counters: dict[str, int] = self.right.call(
            "counters", spi=pair.left_to_right, destination=right_outer
        )
        return counters

    def _keys(self) -> str:
        return self._rng.randbytes(KEYMAT_SIZE[self.algorithm]).hex()

    def _sa(self, spi: int, source: str, destination: str, key: str) -> dict[str, Any]:
        sa: dict[str, Any] = {
            "spi": spi,
            "source": source,
            "destination": destination,
            "algorithm": self.algorithm,
            "encryption_key": key,
            "key_bits": KEY_BITS[self.algorithm],
            "esn": True,
            "replay_window": 1024,
            "reqid": 1,
        }
        if self.algorithm == "aescbc":
            sa["integrity"] = "sha256"
            sa["integrity_key"] = self._rng.randbytes(32).hex()
        if self.encapsulated:
            sa["encapsulation"] = [4500, 4500]
        return sa


TunnelFactory = Callable[..., Tunnel]
