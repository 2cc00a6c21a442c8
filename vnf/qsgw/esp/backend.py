"""The ESP backend interface: what the daemon asks of any data plane.

Two production backends implement it, the Linux kernel (XFRM over netlink)
and userspace (TUN + UDP/raw ESP); `RecordingBackend` in
`qsgw.esp.recording` records calls for tests. The daemon translates IKE
events into these calls; the IKE core never sees this module.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Protocol

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


class Direction(enum.Enum):
    INBOUND = "in"
    OUTBOUND = "out"


class EspAlgorithm(enum.Enum):
    """ESP transforms the data plane knows (names as in swanctl)."""

    AES_GCM_16 = "aesgcm16"  # RFC 4106, key + 4-octet salt, 16-octet ICV
    CHACHA20_POLY1305 = "chacha20poly1305"  # RFC 7634, key + 4-octet salt
    AES_CBC = "aescbc"  # RFC 3602, with an integrity algorithm


class EspIntegrity(enum.Enum):
    NONE = "none"
    HMAC_SHA2_256_128 = "sha256"
    HMAC_SHA2_384_192 = "sha384"
    HMAC_SHA2_512_256 = "sha512"


@dataclass(frozen=True, slots=True)
class UdpEncapsulation:
    """RFC 3948 UDP encapsulation; ports as seen from this SA's source."""

    source_port: int
    destination_port: int


@dataclass(frozen=True, slots=True)
class Lifetime:
    """Soft and hard limits; 0 means none."""

    soft_bytes: int = 0
    hard_bytes: int = 0
    soft_packets: int = 0
    hard_packets: int = 0
    soft_seconds: int = 0
    hard_seconds: int = 0


@dataclass(frozen=True, slots=True)
class SaSpec:
    """One ESP SA in tunnel mode.

    `encryption_key` holds the salt at its end for AEAD algorithms. `reqid`
    ties SAs to their policies; `if_id` keeps tunnels with overlapping
    traffic selectors apart (the XFRM interface ID; the userspace backend
    has one TUN device and only warns of overlaps).
    """

    spi: int
    direction: Direction
    source: IPAddress
    destination: IPAddress
    algorithm: EspAlgorithm
    encryption_key: bytes
    key_bits: int
    integrity: EspIntegrity = EspIntegrity.NONE
    integrity_key: bytes = b""
    esn: bool = False
    replay_window: int = 128
    encapsulation: UdpEncapsulation | None = None
    lifetime: Lifetime = Lifetime()
    reqid: int = 0
    if_id: int = 0

    def __repr__(self) -> str:  # never show keys
        return (
            f"SaSpec(spi={self.spi:#010x}, {self.direction.value}, "
            f"{self.source}->{self.destination}, {self.algorithm.value})"
        )


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A tunnel-mode policy: traffic between two selectors uses an SA pair."""

    direction: Direction
    local: IPNetwork
    remote: IPNetwork
    tunnel_source: IPAddress
    tunnel_destination: IPAddress
    reqid: int
    ip_protocol: int = 0
    local_ports: tuple[int, int] = (0, 65535)
    remote_ports: tuple[int, int] = (0, 65535)
    if_id: int = 0


@dataclass(frozen=True, slots=True)
class SaCounters:
    bytes: int
    packets: int
    sequence: int  # outbound: last sent; inbound: highest verified
    replay_window: int
    replay_errors: int = 0
    integrity_errors: int = 0


class BackendEventKind(enum.Enum):
    SOFT_EXPIRE = "soft-expire"  # start a rekey
    HARD_EXPIRE = "hard-expire"  # the SA is gone
    ACQUIRE = "acquire"  # traffic hit a policy with no SA
    SEQUENCE_EXHAUSTION = "sequence-exhaustion"  # rekey before wrap


@dataclass(frozen=True, slots=True)
class BackendEvent:
    kind: BackendEventKind
    spi: int = 0
    destination: IPAddress | None = None
    reqid: int = 0


BackendEventSink = Callable[[BackendEvent], None]


class EspBackend(Protocol):
    """A data plane. Calls are synchronous and quick; a backend that needs a
    loop (userspace) runs it itself between `start` and `close`."""

    name: str

    def start(self, events: BackendEventSink) -> None: ...

    def close(self) -> None: ...

    def allocate_spi(self, source: IPAddress, destination: IPAddress) -> int:
        """A fresh inbound SPI (>= 256), unique on this backend."""
        ...

    def add_sa(self, sa: SaSpec) -> None: ...

    def update_sa(self, sa: SaSpec) -> None: ...

    def delete_sa(self, spi: int, destination: IPAddress) -> None: ...

    def add_policy(self, policy: PolicySpec) -> None: ...

    def delete_policy(self, policy: PolicySpec) -> None: ...

    def counters(self, spi: int, destination: IPAddress) -> SaCounters: ...

    def install_route(self, remote: IPNetwork, source: IPAddress, if_id: int) -> None:
        """Route `remote` into the tunnel, with `source` as the inner source."""
        ...

    def remove_route(self, remote: IPNetwork, if_id: int) -> None: ...
