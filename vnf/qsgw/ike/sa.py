"""The IKE SA and Child SA records the engine keeps (RFC 7296 §2).

Plain mutable records: the engine (`qsgw.ike.engine`) owns the state
machine; these hold what one SA knows. Key material sits in `IkeKeys` and
`ChildKeymat` (from `qsgw.ike.keymat`), whose reprs hide it, and the reprs
of the records here name only non-secret fields.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from qsgw.crypto.api import IkeCipher, KeyExchangeInitiator, Prf
from qsgw.ike.candidates import NO_CANDIDATES, Candidates
from qsgw.ike.config import ChildSpec, ConnectionSpec, TrafficSelectorSpec
from qsgw.ike.fragments import Reassembler
from qsgw.ike.keymat import ChildKeymat, IkeKeys, SaContext
from qsgw.ike.payloads import IPAddress, Message, Proposal

_log = logging.getLogger(__name__)

Endpoint = tuple[IPAddress, int]
ResponseHandler = Callable[[Message, float], None]


class SaLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes each line with the IKE SA's short identity: `[site|12]`."""

    def process(
        self, msg: object, kwargs: MutableMapping[str, object]
    ) -> tuple[object, MutableMapping[str, object]]:
        prefix = self.extra["sa"] if self.extra else ""
        return f"[{prefix}] {msg}", kwargs


class IkeSaState(enum.Enum):
    CONNECTING = "CONNECTING"  # IKE_SA_INIT, IKE_INTERMEDIATE, IKE_AUTH
    ESTABLISHED = "ESTABLISHED"
    REKEYING = "REKEYING"
    REKEYED = "REKEYED"  # replaced by a new IKE SA, waiting for DELETE
    DELETING = "DELETING"
    DESTROYED = "DESTROYED"


class ChildSaState(enum.Enum):
    INSTALLED = "INSTALLED"
    REKEYING = "REKEYING"
    REKEYED = "REKEYED"
    DELETING = "DELETING"


@dataclass
class PendingRequest:
    """The one request we have in flight (window size 1, RFC 7296 §2.3)."""

    exchange: int
    message_id: int
    datagrams: list[bytes]
    on_response: ResponseHandler
    started: float
    next_retransmit: float
    tries: int = 0
    liveness: bool = False


@dataclass
class CachedResponse:
    """Our last response, resent as-is for a retransmitted request."""

    message_id: int
    datagrams: list[bytes]
    # RFC 7296 §2.1: a retransmitted request is bitwise identical
    requests: frozenset[bytes] = frozenset()


@dataclass
class ChildSa:
    unique_id: int
    spec: ChildSpec
    inbound_spi: bytes
    outbound_spi: bytes = b""
    proposal: Proposal | None = None
    local_ts: tuple[TrafficSelectorSpec, ...] = ()
    remote_ts: tuple[TrafficSelectorSpec, ...] = ()
    keymat: ChildKeymat | None = None
    state: ChildSaState = ChildSaState.INSTALLED
    ke_methods: tuple[int, ...] = ()
    established: float = 0.0
    rekey_at: float | None = None
    expire_at: float | None = None
    rekeys: int = 0
    initiator: bool = False  # we sent the request that created it
    nonces: tuple[bytes, bytes] = (b"", b"")  # Ni, Nr of that exchange
    replaces: int = 0  # the Child SA this one rekeyed

    def __repr__(self) -> str:
        return (
            f"ChildSa({self.unique_id}, {self.spec.name}, "
            f"in={self.inbound_spi.hex()}, out={self.outbound_spi.hex()})"
        )


@dataclass
class IkeSa:
    """One IKE SA from its first IKE_SA_INIT message to its deletion."""

    unique_id: int
    connection: ConnectionSpec
    initiator: bool
    spi_i: bytes
    spi_r: bytes
    local: Endpoint
    remote: Endpoint
    created: float
    state: IkeSaState = IkeSaState.CONNECTING
    # negotiation
    proposal: Proposal | None = None
    prf: Prf | None = None
    cipher: IkeCipher | None = None
    context: SaContext | None = None
    keys: IkeKeys | None = None
    keys_without_ppk: IkeKeys | None = None
    ni: bytes = b""
    nr: bytes = b""
    ke: KeyExchangeInitiator | None = None
    ke_method: int = 0
    cookie: bytes = b""
    addke_rounds: list[tuple[int, int]] = field(default_factory=list)
    ke_methods_done: list[tuple[int, int]] = field(default_factory=list)
    intauth_i: bytes = b""
    intauth_r: bytes = b""
    intermediate_done: bool = False
    init_request: bytes = b""  # RealMessage1 (RFC 7296 §2.15)
    init_response: bytes = b""  # RealMessage2
    ike_auth_mid: int = 0
    # peer capabilities announced in IKE_SA_INIT
    peer_fragmentation: bool = False
    peer_use_ppk: bool = False
    peer_childless: bool = False
    nat_local: bool = False
    nat_remote: bool = False
    ppk_used: bool = False
    ppk_id: bytes = b""
    local_id: str = ""
    remote_id: str = ""
    # message IDs (RFC 7296 §2.2), window size 1 in both directions
    send_mid: int = 0
    recv_mid: int = 0
    pending: PendingRequest | None = None
    queue: list[Callable[[float], None]] = field(default_factory=list)
    queued_children: set[int] = field(default_factory=set)  # reserved ids
    cached: CachedResponse | None = None
    request_datagrams: list[bytes] = field(default_factory=list)
    last_received: float = 0.0
    # children and lifetime
    children: dict[int, ChildSa] = field(default_factory=dict)
    first_child: ChildSa | None = None
    established: float = 0.0
    rekey_at: float | None = None
    delete_at: float | None = None  # a REKEYED IKE SA the peer did not delete
    expire_at: float | None = None  # rekey_time + over_time
    rekeys: int = 0
    # RFC 7383 fragments being collected: one message (Message ID and its
    # Reassembler) per direction, keyed by "is a response"
    reassembly: dict[bool, tuple[int, Reassembler]] = field(default_factory=dict)
    # working state of the handshake
    wanted_child: str | None = None
    retries: int = 0
    # the connections IKE_AUTH may still switch to (RFC 7296 §2.15)
    candidates: Candidates = NO_CANDIDATES
    last_opened: object | None = None
    ppk_keys: IkeKeys | None = None
    # CREATE_CHILD_SA negotiations in progress (create_child.Negotiation)
    negotiations: list[Any] = field(default_factory=list)
    rekey_nonce: bytes = b""  # lowest nonce of the exchange that made it
    rekeyed_to: list[int] = field(default_factory=list)
    _logger: tuple[str, SaLogger] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def log(self) -> SaLogger:
        """This SA's logger, made again only when its connection changes."""
        name = self.connection.name
        if self._logger is None or self._logger[0] != name:
            adapter = SaLogger(_log, {"sa": f"{name}|{self.unique_id}"})
            self._logger = (name, adapter)
        return self._logger[1]

    @property
    def local_spi(self) -> bytes:
        return self.spi_i if self.initiator else self.spi_r

    @property
    def udp_encapsulation(self) -> bool:
        return self.nat_local or self.nat_remote

    def __repr__(self) -> str:
        return (
            f"IkeSa({self.unique_id}, {self.connection.name}, "
            f"{self.spi_i.hex()}_i {self.spi_r.hex()}_r, {self.state.value})"
        )
