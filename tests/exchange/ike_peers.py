"""Two IkeEngine peers wired back to back, with time and loss in our hands.

The harness follows strongSwan's exchange tests: both peers run in this
process, every datagram passes through `Link`, and a test decides for each
one whether it arrives, arrives twice, arrives late or never. Time is
explicit and randomness seeded, so every run is the same.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, ip_network
from typing import Any

from qsgw.ike.config import (
    ChildSpec,
    ConnectionSpec,
    Identity,
    Ppk,
    Secret,
    TrafficSelectorSpec,
)
from qsgw.ike.constants import IdType
from qsgw.ike.engine import Datagram, EngineSettings, IkeEngine
from qsgw.ike.events import Event, MessageRejected
from qsgw.ike.proposals import parse_esp_proposal, parse_ike_proposal

ADDRESS_I = IPv4Address("192.0.2.1")
ADDRESS_R = IPv4Address("198.51.100.1")
NAT_PUBLIC = IPv4Address("203.0.113.7")
NAT_PORT_BASE = 40000
PSK = Secret(b"a shared key of some length, for tests only")
PPK_SECRET = Secret(bytes(range(32)))


def fingerprint(key: bytes) -> str:
    """A key's stand-in for assertions: failures print this, never the key."""
    return hashlib.sha256(key).hexdigest()[:16]


def seeded(seed: int) -> Callable[[int], bytes]:
    generator = random.Random(seed)
    return generator.randbytes


def fqdn(name: str) -> Identity:
    return Identity(IdType.ID_FQDN, name.encode())


def selector(network: str) -> TrafficSelectorSpec:
    return TrafficSelectorSpec(ip_network(network))


def child(
    name: str = "net",
    local: tuple[str, ...] = ("10.1.0.0/16",),
    remote: tuple[str, ...] = ("10.2.0.0/16",),
    esp: str = "aes256gcm16",
    **options: object,
) -> ChildSpec:
    return ChildSpec(
        name=name,
        local_ts=tuple(selector(n) for n in local),
        remote_ts=tuple(selector(n) for n in remote),
        esp_proposals=(parse_esp_proposal(esp),),
        **options,  # type: ignore[arg-type]
    )


def connection(
    *,
    initiator: bool,
    proposal: str = "aes256gcm16-prfsha384-x25519",
    children: tuple[ChildSpec, ...] | None = None,
    **options: Any,
) -> ConnectionSpec:
    """The initiator's or the responder's side of one site-to-site tunnel."""
    if children is None:
        if initiator:
            children = (child(),)
        else:
            children = (child(local=("10.2.0.0/16",), remote=("10.1.0.0/16",)),)
    local, remote = (ADDRESS_I, ADDRESS_R) if initiator else (ADDRESS_R, ADDRESS_I)
    ids = ("gw-a.example.org", "gw-b.example.org")
    local_id, remote_id = ids if initiator else ids[::-1]
    spec = ConnectionSpec(
        name="site",
        local_addresses=(local,),
        remote_addresses=(remote,),
        local_id=fqdn(local_id),
        remote_id=fqdn(remote_id),
        ike_proposals=(parse_ike_proposal(proposal),),
        psk=PSK,
        children=children,
    )
    return replace(spec, **options)


def ppk(identifier: bytes = b"ppk-1", secret: Secret = PPK_SECRET) -> Ppk:
    return Ppk(identifier, secret)


@dataclass
class Peer:
    engine: IkeEngine
    seen: list[Event] = field(default_factory=list)

    def drain(self) -> list[Event]:
        new = self.engine.events()
        self.seen.extend(new)
        # an engine bug shows as this event: no test may pass with one
        assert MessageRejected("internal-error") not in new
        return new

    def of(self, kind: type) -> list[Event]:
        self.drain()
        return [e for e in self.seen if isinstance(e, kind)]


@dataclass
class Hop:
    """A datagram on its way, with where it goes."""

    datagram: Datagram
    to_responder: bool


class Link:
    """The wire between two peers; `step` delivers one datagram."""

    def __init__(
        self,
        initiator: ConnectionSpec,
        responder: ConnectionSpec,
        settings: EngineSettings | None = None,
        seeds: tuple[int, int] = (1, 2),
        nat: bool = False,
    ) -> None:
        settings = settings or EngineSettings()
        self.i = Peer(IkeEngine([initiator], seeded(seeds[0]), settings))
        self.r = Peer(IkeEngine([responder], seeded(seeds[1]), settings))
        self.now = 0.0
        self.in_flight: list[Hop] = []
        self.delivered: list[Hop] = []
        self.nat = nat  # the initiator sits behind a NAPT

    def collect(self) -> list[Hop]:
        """Move what both engines want to send onto the wire; then, as the
        daemon does once its datagrams have left, the work they put aside."""
        for dg in self.i.engine.datagrams_to_send():
            self.in_flight.append(Hop(dg, to_responder=True))
        for dg in self.r.engine.datagrams_to_send():
            self.in_flight.append(Hop(dg, to_responder=False))
        self.i.engine.run_deferred()
        self.r.engine.run_deferred()
        return self.in_flight

    def take(self) -> list[Hop]:
        """Remove everything in flight from the wire, for the test to handle."""
        taken = list(self.collect())
        self.in_flight.clear()
        return taken

    def deliver(self, hop: Hop) -> None:
        target = self.r if hop.to_responder else self.i
        dg = hop.datagram
        source, destination = dg.local, dg.remote
        if self.nat and hop.to_responder:
            source = (NAT_PUBLIC, NAT_PORT_BASE + source[1])
        elif self.nat:
            assert destination[0] == NAT_PUBLIC, "sent past the NAT mapping"
            destination = (ADDRESS_I, destination[1] - NAT_PORT_BASE)
        target.engine.receive_datagram(dg.data, destination, source, self.now)
        self.delivered.append(hop)

    def step(self) -> Hop | None:
        """Deliver the oldest datagram in flight."""
        self.collect()
        if not self.in_flight:
            return None
        hop = self.in_flight.pop(0)
        self.deliver(hop)
        return hop

    def drop_next(self) -> Hop | None:
        self.collect()
        return self.in_flight.pop(0) if self.in_flight else None

    def run(self, limit: int = 200) -> int:
        """Deliver until the wire is quiet; returns the datagrams delivered."""
        count = 0
        while self.step() is not None:
            count += 1
            assert count < limit, "the peers keep talking"
        self.i.drain()
        self.r.drain()
        return count

    def advance(self, seconds: float) -> None:
        """Let time pass and fire both engines' timers that are due."""
        self.now += seconds
        for peer in (self.i, self.r):
            deadline = peer.engine.next_timer()
            if deadline is not None and deadline <= self.now:
                peer.engine.handle_timer(self.now)

    def initiate(self) -> int:
        return self.i.engine.initiate("site", self.now)
