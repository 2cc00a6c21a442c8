"""A real strongSwan 6.1 charon as an interop peer, driven through vici.

charon runs from the peer root filesystem inside a network namespace with a
private /run (where its vici socket, pid file and log land), a private
/etc/swanctl and its own strongswan.conf; see chroot.py. ESP runs in
userspace through the kernel-libipsec plugin (TUN device ipsec0), because
the host kernel has no ESP.

Configuration is written as swanctl.conf from typed parameters and loaded
with `swanctl --load-all` inside the chroot, so the file on disk is exactly
what charon runs with. Control and queries go through the vici socket,
reached from the host side through the bind-mounted run directory.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import vici

from .chroot import Bind, Chroot, DaemonProcess, wait_until
from .netns import Namespace, NetnsError, Site

CHARON = "/usr/lib/ipsec/charon"
SWANCTL = "/usr/sbin/swanctl"
VICI_TIMEOUT = 30.0

ConfValue = str | int | bool | Sequence[str] | Mapping[str, "ConfValue"]


def _render_value(value: str | int | bool | Sequence[str]) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    return ",".join(value)


def render_settings(section: Mapping[str, ConfValue], depth: int = 0) -> str:
    """Renders a nested mapping in strongSwan's settings syntax.

    Used for both swanctl.conf and strongswan.conf; a key of the form
    `include` renders as an include statement.
    """
    pad = "    " * depth
    lines: list[str] = []
    for key, value in section.items():
        if key.startswith("include"):
            lines.append(f"{pad}include {value}")
        elif isinstance(value, Mapping):
            lines.append(f"{pad}{key} {{")
            lines.append(render_settings(value, depth + 1))
            lines.append(f"{pad}}}")
        else:
            lines.append(f"{pad}{key} = {_render_value(value)}")
    return "\n".join(line for line in lines if line)


@dataclass(frozen=True)
class ChildConfig:
    """One `children` section of a connection."""

    name: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    esp_proposals: tuple[str, ...] = ("aes256gcm16",)
    start_action: str = "none"
    extra: Mapping[str, ConfValue] = field(default_factory=dict)

    def settings(self) -> dict[str, ConfValue]:
        section: dict[str, ConfValue] = {
            "local_ts": self.local_ts,
            "remote_ts": self.remote_ts,
            "esp_proposals": self.esp_proposals,
            "start_action": self.start_action,
        }
        section.update(self.extra)
        return section


@dataclass(frozen=True)
class ConnectionConfig:
    """One swanctl.conf connection with PSK (or other) authentication.

    `childless` is swanctl's option: allow, prefer, force or never (RFC 6023).
    `ppk_id` / `ppk_required` enable RFC 8784 post-quantum preshared keys.
    """

    name: str
    local_addrs: tuple[str, ...]
    remote_addrs: tuple[str, ...]
    local_id: str
    remote_id: str
    proposals: tuple[str, ...] = ("aes256gcm16-prfsha384-x25519",)
    auth: str = "psk"
    ppk_id: str | None = None
    ppk_required: bool = False
    childless: str = "allow"
    encap: bool = True
    children: tuple[ChildConfig, ...] = ()
    extra: Mapping[str, ConfValue] = field(default_factory=dict)

    def settings(self) -> dict[str, ConfValue]:
        section: dict[str, ConfValue] = {
            "version": 2,
            "local_addrs": self.local_addrs,
            "remote_addrs": self.remote_addrs,
            "proposals": self.proposals,
            "encap": self.encap,
            "fragmentation": "yes",
            "childless": self.childless,
        }
        if self.ppk_id is not None:
            section["ppk_id"] = self.ppk_id
            section["ppk_required"] = self.ppk_required
        section["local"] = {"auth": self.auth, "id": self.local_id}
        section["remote"] = {"auth": self.auth, "id": self.remote_id}
        section["children"] = {c.name: c.settings() for c in self.children}
        section.update(self.extra)
        return section


def site_to_site(
    name: str,
    local: Site,
    remote: Site,
    family: int = 4,
    proposals: tuple[str, ...] = ("aes256gcm16-prfsha384-x25519",),
    with_child: bool = True,
    childless: str = "allow",
    ppk_id: str | None = None,
) -> ConnectionConfig:
    """A PSK connection from LOCAL to REMOTE over IP version FAMILY.

    With WITH_CHILD, one Child SA (also called NAME) joins the two sites'
    inner addresses. A PPK_ID makes the PPK required (RFC 8784).
    """
    children: tuple[ChildConfig, ...] = ()
    if with_child:
        child = ChildConfig(
            name, (local.inner_net(family),), (remote.inner_net(family),)
        )
        children = (child,)
    return ConnectionConfig(
        name,
        (local.outer(family),),
        (remote.outer(family),),
        local.identity,
        remote.identity,
        proposals=proposals,
        children=children,
        childless=childless,
        ppk_id=ppk_id,
        ppk_required=ppk_id is not None,
    )


@dataclass(frozen=True)
class IkeSecret:
    """A PSK for the given identities. The value never appears in a repr."""

    ids: tuple[str, ...]
    value: bytes = field(repr=False)


@dataclass(frozen=True)
class PpkSecret:
    """An RFC 8784 PPK with its PPK_ID. The value never appears in a repr."""

    ppk_id: str
    value: bytes = field(repr=False)


Secret = IkeSecret | PpkSecret


def secrets_settings(secrets: Sequence[Secret]) -> dict[str, ConfValue]:
    section: dict[str, ConfValue] = {}
    for index, secret in enumerate(secrets, start=1):
        entry: dict[str, ConfValue] = {}
        if isinstance(secret, IkeSecret):
            for id_index, identity in enumerate(secret.ids, start=1):
                entry[f"id-{id_index}"] = identity
            entry["secret"] = "0x" + secret.value.hex()
            section[f"ike-{index}"] = entry
        else:
            entry["id"] = secret.ppk_id
            entry["secret"] = "0x" + secret.value.hex()
            section[f"ppk-{index}"] = entry
    return section


def swanctl_conf(
    connections: Sequence[ConnectionConfig], secrets: Sequence[Secret]
) -> str:
    document: dict[str, ConfValue] = {
        "connections": {c.name: c.settings() for c in connections},
        "secrets": secrets_settings(secrets),
    }
    return render_settings(document) + "\n"


def strongswan_conf(extra: Mapping[str, ConfValue]) -> str:
    """charon's settings: Debian's plugin set plus kernel-libipsec, file log."""
    charon: dict[str, ConfValue] = {
        "load_modular": True,
        "plugins": {
            "include": "strongswan.d/charon/*.conf",
            "kernel-libipsec": {"load": True},
            # no TPM in a namespace: spares a failed-load line per start
            "tpm": {"load": False},
        },
        "filelog": {
            "charon": {
                "path": "/run/charon.log",
                "time_format": "%b %e %T",
                "ike_name": True,
                "append": True,
                "flush_line": True,
                "default": 1,
                "ike": 2,
                "cfg": 2,
            }
        },
    }
    charon.update(extra)
    document: dict[str, ConfValue] = {
        "charon": charon,
        "include": "strongswan.d/*.conf",
    }
    return render_settings(document) + "\n"


@dataclass(frozen=True)
class ChildSaStatus:
    """A Child SA as charon reports it (no keys)."""

    name: str
    unique_id: int
    state: str
    protocol: str
    encap: bool
    spi_in: str
    spi_out: str
    encryption: str
    key_exchanges: tuple[str, ...]
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    packets_in: int
    packets_out: int


@dataclass(frozen=True)
class IkeSaStatus:
    """An IKE SA as charon reports it (no keys).

    `key_exchanges` lists every key exchange method negotiated, the
    IKE_SA_INIT one first, then ADDKE1..ADDKE7 in order (RFC 9370).
    `ppk` is true when the keys were derived with a PPK (RFC 8784).
    """

    name: str
    unique_id: int
    state: str
    initiator: bool
    initiator_spi: str
    responder_spi: str
    local_host: str
    remote_host: str
    encryption: str
    prf: str
    key_exchanges: tuple[str, ...]
    ppk: bool
    child_sas: tuple[ChildSaStatus, ...]


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _texts(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(_text(item) for item in value)


def _algorithm(entry: Mapping[str, Any], prefix: str) -> str:
    name = _text(entry.get(f"{prefix}-alg", b""))
    size = entry.get(f"{prefix}-keysize")
    return f"{name}_{_text(size)}" if size is not None else name


def _key_exchanges(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """The method of IKE_SA_INIT ("dh-group"), then ADDKE1..7 ("ake1".."ake7")."""
    keys = ["dh-group"] + [f"ake{round_number}" for round_number in range(1, 8)]
    return tuple(_text(entry[key]) for key in keys if key in entry)


def _child_status(entry: Mapping[str, Any]) -> ChildSaStatus:
    return ChildSaStatus(
        name=_text(entry["name"]),
        unique_id=int(_text(entry["uniqueid"])),
        state=_text(entry["state"]),
        protocol=_text(entry["protocol"]),
        encap=_text(entry.get("encap", b"no")) == "yes",
        spi_in=_text(entry.get("spi-in", b"")),
        spi_out=_text(entry.get("spi-out", b"")),
        encryption=_algorithm(entry, "encr"),
        key_exchanges=_key_exchanges(entry),
        local_ts=_texts(entry.get("local-ts")),
        remote_ts=_texts(entry.get("remote-ts")),
        packets_in=int(_text(entry.get("packets-in", b"0"))),
        packets_out=int(_text(entry.get("packets-out", b"0"))),
    )


def parse_ike_sa(name: str, entry: Mapping[str, Any]) -> IkeSaStatus:
    """Converts one list-sas entry into an IkeSaStatus."""
    children = entry.get("child-sas", {})
    return IkeSaStatus(
        name=name,
        unique_id=int(_text(entry["uniqueid"])),
        state=_text(entry["state"]),
        initiator=_text(entry.get("initiator", b"no")) == "yes",
        initiator_spi=_text(entry["initiator-spi"]),
        responder_spi=_text(entry.get("responder-spi", b"")),
        local_host=_text(entry.get("local-host", b"")),
        remote_host=_text(entry.get("remote-host", b"")),
        encryption=_algorithm(entry, "encr"),
        prf=_text(entry.get("prf-alg", b"")),
        key_exchanges=_key_exchanges(entry),
        ppk=_text(entry.get("ppk", b"no")) == "yes",
        child_sas=tuple(_child_status(child) for child in children.values()),
    )


class StrongswanPeer:
    """charon in a namespace, with its files under WORKDIR."""

    def __init__(
        self,
        name: str,
        namespace: Namespace,
        rootfs: Path,
        workdir: Path,
        charon_settings: Mapping[str, ConfValue] | None = None,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.workdir = workdir
        self.run_dir = workdir / "run"
        self.swanctl_dir = workdir / "swanctl"
        self._conf_file = workdir / "strongswan.conf"
        self._charon_settings = dict(charon_settings or {})
        self.chroot = Chroot(
            rootfs,
            (
                Bind(self.run_dir, "/run"),
                Bind(self.swanctl_dir, "/etc/swanctl"),
                Bind(self._conf_file, "/etc/strongswan.conf"),
            ),
        )
        self.process: DaemonProcess | None = None

    @property
    def vici_socket(self) -> Path:
        return self.run_dir / "charon.vici"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "charon.log"

    def log_text(self) -> str:
        if not self.log_file.exists():
            return ""
        return self.log_file.read_text(errors="replace")

    def _prepare_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("conf.d", "x509", "x509ca", "private", "ecdsa", "pubkey"):
            (self.swanctl_dir / sub).mkdir(parents=True, exist_ok=True)
        self.swanctl_dir.chmod(0o700)
        self._conf_file.write_text(strongswan_conf(self._charon_settings))

    def start(self, timeout: float = 20.0) -> None:
        """Starts charon and waits until its vici socket answers."""
        self._prepare_files()
        argv = self.chroot.argv(self.namespace, [CHARON])
        self.process = DaemonProcess(argv, self.workdir / "charon.stdout")
        if not wait_until(self._vici_answers, timeout, interval=0.1):
            raise NetnsError(f"{self.name}: charon did not come up in {timeout} s")

    def _vici_answers(self) -> bool:
        if self.process is None or not self.process.running():
            raise NetnsError(f"{self.name}: charon exited early")
        try:
            with self.session() as session:
                session.version()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """A vici session on charon's socket, closed on exit."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(VICI_TIMEOUT)
        try:
            sock.connect(str(self.vici_socket))
            yield vici.Session(sock)
        finally:
            sock.close()

    def load(
        self, connections: Sequence[ConnectionConfig], secrets: Sequence[Secret]
    ) -> None:
        """Writes swanctl.conf and loads it with `swanctl --load-all`."""
        conf = self.swanctl_dir / "swanctl.conf"
        conf.write_text(swanctl_conf(connections, secrets))
        conf.chmod(0o600)
        self.chroot.run(self.namespace, [SWANCTL, "--load-all", "--noprompt"])

    def initiate(
        self, child: str | None = None, ike: str | None = None, timeout: float = 20.0
    ) -> None:
        """Initiates (blocking); raises vici's CommandException on failure.

        With only IKE given, charon sets up the IKE SA alone (childless).
        """
        request: dict[str, Any] = {"timeout": int(timeout * 1000)}
        if child is not None:
            request["child"] = child
        if ike is not None:
            request["ike"] = ike
        with self.session() as session:
            for _ in session.initiate(request):
                pass

    def terminate(self, ike: str, timeout: float = 20.0) -> None:
        request = {"ike": ike, "timeout": int(timeout * 1000)}
        with self.session() as session:
            for _ in session.terminate(request):
                pass

    def rekey_ike(self, unique_id: int) -> None:
        """Starts rekeying one IKE SA (returns before it completes)."""
        with self.session() as session:
            session.rekey({"ike-id": str(unique_id)})

    def rekey_child(self, unique_id: int) -> None:
        """Starts rekeying one Child SA (returns before it completes)."""
        with self.session() as session:
            session.rekey({"child-id": str(unique_id)})

    def raw_sas(self) -> list[dict[str, Any]]:
        with self.session() as session:
            return list(session.list_sas())

    def list_sas(self) -> list[IkeSaStatus]:
        """Every IKE SA with its Child SAs."""
        statuses: list[IkeSaStatus] = []
        for item in self.raw_sas():
            for name, entry in item.items():
                statuses.append(parse_ike_sa(name, entry))
        return statuses

    def established_ike_sas(self) -> list[IkeSaStatus]:
        return [sa for sa in self.list_sas() if sa.state == "ESTABLISHED"]

    def algorithms(self) -> dict[str, list[str]]:
        """What charon's plugins offer, by transform type."""
        with self.session() as session:
            answer = session.get_algorithms()
        return {
            _text(kind): [_text(name) for name in entries]
            for kind, entries in answer.items()
        }
