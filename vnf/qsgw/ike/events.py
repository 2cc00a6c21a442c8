"""Events the IKE core emits: past-tense facts for the daemon and listeners.

The daemon drains them after every call into the engine and turns them into
data-plane calls, metrics, HA replication and log lines. Key material appears
only in `ChildSaKeys`, which the daemon hands to the ESP backend and nowhere
else; its repr hides the keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from qsgw.ike.config import TrafficSelectorSpec

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class ChildSaKeys:
    """Everything a data plane needs to install one Child SA pair.

    Keys follow RFC 7296 §2.17: `initiator_to_responder` keys protect what
    the IKE initiator sends. The daemon maps them to inbound/outbound by
    `we_are_initiator`. Algorithm names are swanctl-style, e.g. "aesgcm16".
    """

    inbound_spi: int
    outbound_spi: int
    encryption: str  # "aesgcm16", "chacha20poly1305", "aescbc"
    key_bits: int
    integrity: str  # "none", "sha256", "sha384", "sha512"
    esn: bool
    encryption_key_in: bytes
    integrity_key_in: bytes
    encryption_key_out: bytes
    integrity_key_out: bytes
    local_address: IPAddress
    remote_address: IPAddress
    local_port: int
    remote_port: int
    udp_encapsulation: bool
    local_ts: tuple[TrafficSelectorSpec, ...]
    remote_ts: tuple[TrafficSelectorSpec, ...]
    replay_window: int
    if_id: int

    def __repr__(self) -> str:
        return (
            f"ChildSaKeys(in={self.inbound_spi:#010x}, "
            f"out={self.outbound_spi:#010x}, {self.encryption}/{self.integrity})"
        )


@dataclass(frozen=True, slots=True)
class IkeSaEstablished:
    ike_sa: int  # the engine's unique ID of the IKE SA
    connection: str
    initiator: bool
    duration: float  # seconds from the first request to established


@dataclass(frozen=True, slots=True)
class IkeSaRekeyed:
    old_ike_sa: int
    new_ike_sa: int
    connection: str


@dataclass(frozen=True, slots=True)
class IkeSaDeleted:
    ike_sa: int
    connection: str
    reason: str  # "local", "peer", "dead-peer", "auth-failed", "timeout", ...


@dataclass(frozen=True, slots=True)
class IkeSaFailed:
    """An IKE SA did not come up; `notify` is the error we sent or got."""

    ike_sa: int
    connection: str
    reason: str
    notify: str = ""


@dataclass(frozen=True, slots=True)
class ChildSaEstablished:
    ike_sa: int
    child_sa: int  # the engine's unique ID of the Child SA
    connection: str
    child: str
    keys: ChildSaKeys


@dataclass(frozen=True, slots=True)
class ChildSaRekeyed:
    """A new Child SA replaced `old_child_sa`; install the new one first, then
    delete the old one when `ChildSaDeleted` for it arrives.

    `initiator` says whether we started this rekey. The responder of a rekey
    should send on the new SA only once the initiator deleted the old one
    (until then the initiator may lack the new inbound SA).
    """

    ike_sa: int
    old_child_sa: int
    child_sa: int
    connection: str
    child: str
    keys: ChildSaKeys
    initiator: bool = True


@dataclass(frozen=True, slots=True)
class ChildSaDeleted:
    ike_sa: int
    child_sa: int
    connection: str
    child: str
    inbound_spi: int
    outbound_spi: int
    local_address: IPAddress
    remote_address: IPAddress
    reason: str


@dataclass(frozen=True, slots=True)
class ExchangeCompleted:
    exchange: str  # "IKE_SA_INIT", "IKE_AUTH", ...
    initiator: bool  # we sent the request
    duration: float


@dataclass(frozen=True, slots=True)
class MessageSent:
    exchange: str
    response: bool


@dataclass(frozen=True, slots=True)
class MessageReceived:
    exchange: str
    response: bool


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """A message was dropped or answered with an error and changed nothing."""

    reason: str  # short, stable, label-safe: "bad-length", "icv", ...
    exchange: str = ""


@dataclass(frozen=True, slots=True)
class LivenessFailed:
    ike_sa: int
    connection: str


Event = (
    IkeSaEstablished
    | IkeSaRekeyed
    | IkeSaDeleted
    | IkeSaFailed
    | ChildSaEstablished
    | ChildSaRekeyed
    | ChildSaDeleted
    | ExchangeCompleted
    | MessageSent
    | MessageReceived
    | MessageRejected
    | LivenessFailed
)
