"""A real Libreswan 5.2 pluto as an interop peer.

Libreswan is unpacked under /opt/libreswan in the peer root filesystem (its
package conflicts with strongSwan's). pluto runs chrooted in a network
namespace with a private /run holding ipsec.conf, ipsec.secrets, its NSS
database, its control socket (/run/pluto/pluto.ctl) and its log. It is driven
with `addconn` and `whack` through that control socket.

The host kernel has no ESP and Libreswan no userspace ESP, so Child SAs
cannot be installed here: test IKE against pluto with childless IKE SAs
(RFC 6023), pluto responding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .chroot import Bind, Chroot, DaemonProcess, wait_until
from .netns import Namespace, NetnsError

LIBEXEC = "/opt/libreswan/usr/libexec/ipsec"
CONTROL_SOCKET = "/run/pluto/pluto.ctl"


@dataclass(frozen=True)
class LibreswanConnection:
    """One `conn` section. `ppk` is Libreswan's keyword: propose, permit,
    insist or never (RFC 8784); `ppk_ids` restricts the PPK_IDs accepted.
    Libreswan 5.2 spells Curve25519 `dh31` and has no ML-KEM."""

    name: str
    left: str
    right: str
    leftid: str
    rightid: str
    ike: str = "aes_gcm256-sha2_384;dh31"
    authby: str = "secret"
    ppk: str | None = None
    ppk_ids: tuple[str, ...] = ()
    auto: str = "add"
    extra: Mapping[str, str] = field(default_factory=dict)

    def render(self) -> str:
        options: dict[str, str] = {
            "keyexchange": "ikev2",
            "left": self.left,
            "leftid": self.leftid,
            "right": self.right,
            "rightid": self.rightid,
            "authby": self.authby,
            "ike": self.ike,
            "fragmentation": "yes",
            "auto": self.auto,
        }
        if self.ppk is not None:
            options["ppk"] = self.ppk
        if self.ppk_ids:
            options["ppk-ids"] = ",".join(self.ppk_ids)
        options.update(self.extra)
        body = "".join(f"\t{key}={value}\n" for key, value in options.items())
        return f"conn {self.name}\n{body}"


@dataclass(frozen=True)
class LibreswanPsk:
    """A PSK between two identities. The value never appears in a repr."""

    ids: tuple[str, ...]
    value: bytes = field(repr=False)

    def render(self) -> str:
        return f"{' '.join(self.ids)} : PSK 0x{self.value.hex()}\n"


@dataclass(frozen=True)
class LibreswanPpk:
    """An RFC 8784 PPK and its PPK_ID. The value never appears in a repr."""

    ids: tuple[str, ...]
    ppk_id: str
    value: bytes = field(repr=False)

    def render(self) -> str:
        selectors = " ".join(self.ids)
        return f'{selectors} : PPKS "{self.ppk_id}" 0x{self.value.hex()}\n'


LibreswanSecret = LibreswanPsk | LibreswanPpk


def ipsec_conf(connections: Sequence[LibreswanConnection]) -> str:
    setup = (
        "config setup\n"
        "\tlogfile=/run/pluto.log\n"
        "\tlogtime=yes\n"
        # base: dumps IKE headers (ike_spis_seen), never keys
        "\tplutodebug=base\n"
        "\tdumpdir=/run/pluto\n"
    )
    return setup + "".join("\n" + conn.render() for conn in connections)


@dataclass(frozen=True)
class PlutoState:
    """One line of `whack --showstates`: a numbered IKE or Child SA state."""

    serial: int
    connection: str
    state: str
    detail: str

    @property
    def is_established_ike_sa(self) -> bool:
        return self.state == "ESTABLISHED_IKE_SA"

    @property
    def is_established_child_sa(self) -> bool:
        return self.state == "ESTABLISHED_CHILD_SA"


# e.g. #1: "qsgw":4500 ESTABLISHED_IKE_SA (established IKE SA); REKEY in ...
_STATE_LINE = re.compile(r'^#(\d+): "([^"]+)"\S* (\S+) (.*)$')


def parse_showstates(text: str) -> list[PlutoState]:
    states: list[PlutoState] = []
    for line in text.splitlines():
        match = _STATE_LINE.match(line.strip())
        if match:
            serial, connection, state, detail = match.groups()
            states.append(PlutoState(int(serial), connection, state, detail))
    return states


# plutodebug=base dumps every IKE header it builds or parses, e.g.
#   |    initiator SPI: d1 61 7d af  73 67 fb a3
#   |    responder SPI: a5 57 d3 42  76 16 76 8b
_HEADER_SPI = re.compile(r"\|\s+(initiator|responder) SPI: ((?:[0-9a-f]{2} *){8})")
_ZERO_SPI = "0" * 16


def parse_header_spis(log: str) -> set[tuple[str, str]]:
    """(SPIi, SPIr) pairs of the IKE headers in a plutodebug=base log."""
    pairs: set[tuple[str, str]] = set()
    initiator_spi: str | None = None
    for match in _HEADER_SPI.finditer(log):
        role, octets = match.groups()
        value = "".join(octets.split())
        if role == "initiator":
            initiator_spi = value
        elif initiator_spi is not None and value != _ZERO_SPI:
            pairs.add((initiator_spi, value))
            initiator_spi = None
    return pairs


class LibreswanPeer:
    """pluto in a namespace, with its files under WORKDIR."""

    def __init__(
        self, name: str, namespace: Namespace, rootfs: Path, workdir: Path
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.workdir = workdir
        self.run_dir = workdir / "run"
        self.chroot = Chroot(rootfs, (Bind(self.run_dir, "/run"),))
        self.process: DaemonProcess | None = None

    @property
    def log_file(self) -> Path:
        return self.run_dir / "pluto.log"

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "pluto" / "pluto.ctl"

    def log_text(self) -> str:
        if not self.log_file.exists():
            return ""
        return self.log_file.read_text(errors="replace")

    def _write_config(
        self,
        connections: Sequence[LibreswanConnection],
        secrets: Sequence[LibreswanSecret],
    ) -> None:
        (self.run_dir / "ipsec.conf").write_text(ipsec_conf(connections))
        secrets_file = self.run_dir / "ipsec.secrets"
        secrets_file.touch(mode=0o600)
        secrets_file.write_text("".join(secret.render() for secret in secrets))

    def _init_nss(self) -> None:
        (self.run_dir / "nss").mkdir(exist_ok=True)
        argv = ["certutil", "-N", "-d", "sql:/run/nss", "--empty-password"]
        self.chroot.run(self.namespace, argv)

    def start(
        self,
        connections: Sequence[LibreswanConnection],
        secrets: Sequence[LibreswanSecret],
        timeout: float = 20.0,
    ) -> None:
        """Writes the configuration, starts pluto and waits for its socket.

        pluto loads every `auto=add` connection itself at start-up."""
        (self.run_dir / "pluto").mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)
        self._write_config(connections, secrets)
        self._init_nss()
        argv = [f"{LIBEXEC}/pluto", "--nofork", "--config", "/run/ipsec.conf"]
        argv += ["--secretsfile", "/run/ipsec.secrets", "--nssdir", "/run/nss"]
        argv += ["--rundir", "/run/pluto"]
        self.process = DaemonProcess(
            self.chroot.argv(self.namespace, argv), self.workdir / "pluto.stdout"
        )
        if not wait_until(self._ready, timeout, interval=0.1):
            raise NetnsError(f"{self.name}: pluto did not come up in {timeout} s")

    def _ready(self) -> bool:
        if self.process is None or not self.process.running():
            raise NetnsError(f"{self.name}: pluto exited early")
        return self.control_socket.exists() and self._whack_answers()

    def _whack_answers(self) -> bool:
        result = self.chroot.run(self.namespace, self._whack("--status"), check=False)
        return result.returncode == 0

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def _whack(self, *args: str) -> list[str]:
        return [f"{LIBEXEC}/whack", "--ctlsocket", CONTROL_SOCKET, *args]

    def whack(self, *args: str, timeout: float = 20.0) -> str:
        """Runs whack with ARGS against this pluto; returns its output."""
        result = self.chroot.run(self.namespace, self._whack(*args), timeout)
        return result.stdout

    def add_connection(self, name: str) -> None:
        """(Re)loads connection NAME from ipsec.conf with addconn."""
        argv = [f"{LIBEXEC}/addconn", "--config", "/run/ipsec.conf"]
        argv += ["--ctlsocket", CONTROL_SOCKET, name]
        self.chroot.run(self.namespace, argv)

    def impair(self, *behaviours: str) -> None:
        """Switches on pluto test impairments (`whack --impair`), e.g.
        omit_v2_ike_auth_child: initiate childless, the only way pluto 5.2
        has (it crashed combined with ppk=insist, so not with a PPK)."""
        for behaviour in behaviours:
            self.whack("--impair", behaviour)

    def initiate(self, name: str, timeout: float = 20.0) -> str:
        """Initiates connection NAME and waits for the outcome."""
        return self.whack("--initiate", "--name", name, timeout=timeout)

    def states(self) -> list[PlutoState]:
        return parse_showstates(self.whack("--showstates"))

    def established_ike_sas(self) -> list[PlutoState]:
        return [s for s in self.states() if s.is_established_ike_sa]

    def ike_spis_seen(self) -> set[tuple[str, str]]:
        """(SPIi, SPIr) of every IKE message pluto sent or parsed.

        pluto 5.2 shows no IKE SPIs in any status command, so they are read
        from the IKE headers its debug log (plutodebug=base) dumps.
        """
        return parse_header_spis(self.log_text())
