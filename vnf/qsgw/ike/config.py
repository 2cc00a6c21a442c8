"""What the IKE core is told about connections: plain frozen values.

The daemon loads and validates YAML (`qsgw.daemon.config`) and hands the
core these values; the core never reads a file. Secrets are wrapped in
`Secret`, whose repr never shows the value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from qsgw.ike.constants import IdType
from qsgw.ike.payloads import Proposal

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


class Secret:
    """Key material that must never reach a log, repr, exception or status."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = bytes(value)

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        import hmac

        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))


@dataclass(frozen=True, slots=True)
class Identity:
    """An IKE identity (RFC 7296 §3.5): type and the ID payload data."""

    id_type: IdType
    data: bytes

    def __str__(self) -> str:
        if self.id_type in (IdType.ID_FQDN, IdType.ID_RFC822_ADDR):
            return self.data.decode("ascii", "replace")
        if self.id_type == IdType.ID_IPV4_ADDR:
            return str(IPv4Address(self.data))
        if self.id_type == IdType.ID_IPV6_ADDR:
            return str(IPv6Address(self.data))
        if self.id_type == IdType.ID_KEY_ID:
            return "keyid:" + self.data.hex()
        return f"{self.id_type.name}:{self.data.hex()}"


@dataclass(frozen=True, slots=True)
class Ppk:
    """A post-quantum preshared key (RFC 8784), PPK_ID_FIXED on the wire."""

    id: bytes
    secret: Secret


class StartAction(enum.Enum):
    NONE = "none"
    START = "start"  # initiate when loaded
    TRAP = "trap"  # initiate on traffic (an acquire from the data plane)


class DpdAction(enum.Enum):
    CLEAR = "clear"
    RESTART = "restart"
    TRAP = "trap"


class Childless(enum.Enum):
    """RFC 6023: whether an IKE SA may come up without a Child SA."""

    ALLOW = "allow"  # accept as responder; initiate with a child
    FORCE = "force"  # initiate childless
    NEVER = "never"  # refuse childless IKE_AUTH as responder


@dataclass(frozen=True, slots=True)
class TrafficSelectorSpec:
    network: IPNetwork
    ip_protocol: int = 0
    ports: tuple[int, int] = (0, 65535)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    name: str
    local_ts: tuple[TrafficSelectorSpec, ...]
    remote_ts: tuple[TrafficSelectorSpec, ...]
    esp_proposals: tuple[Proposal, ...]  # ProtocolId.ESP, SPI left empty
    rekey_time: int = 3600  # seconds; 0 disables
    life_time: int = 3960
    rekey_bytes: int = 0
    rekey_packets: int = 0
    replay_window: int = 128
    start_action: StartAction = StartAction.NONE
    if_id: int = 0


@dataclass(frozen=True, slots=True)
class ConnectionSpec:
    name: str
    local_addresses: tuple[IPAddress, ...]  # empty: any
    remote_addresses: tuple[IPAddress, ...]  # empty: any (responder only)
    local_id: Identity
    remote_id: Identity | None  # None: accept any identity
    ike_proposals: tuple[Proposal, ...]  # ProtocolId.IKE, SPI left empty
    psk: Secret | None = None
    ppks: tuple[Ppk, ...] = ()
    ppk_required: bool = False
    children: tuple[ChildSpec, ...] = ()
    remote_port: int = 500
    rekey_time: int = 14400  # IKE SA rekey, seconds; 0 disables
    over_time: int = 1440
    dpd_delay: int = 30  # liveness check interval; 0 disables
    dpd_timeout: int = 150
    dpd_action: DpdAction = DpdAction.CLEAR
    childless: Childless = Childless.ALLOW
    fragmentation: bool = True
    fragment_size: int = 1280  # the whole IP datagram, as strongSwan counts
    send_initial_contact: bool = True
