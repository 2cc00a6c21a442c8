"""UserspaceBackend without root: two backends joined back to back.

Each backend gets one end of a SOCK_SEQPACKET socket pair in place of its
TUN device (the test holds the other end) and sends ESP in UDP through a
fake of the daemon's port-4500 socket that hands it to the peer's
`receive_esp`.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, ip_address, ip_network

import pytest

from qsgw.crypto import esp_cipher
from qsgw.esp.backend import (
    BackendEvent,
    BackendEventKind,
    Direction,
    EspAlgorithm,
    PolicySpec,
    SaSpec,
    UdpEncapsulation,
)
from qsgw.esp.packet import IPPROTO_IPIP, esp_trailer, seal_packet
from qsgw.esp.userspace import Endpoint, UserspaceBackend

pytestmark = pytest.mark.timeout(30)

LEFT, RIGHT = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")
LEFT_NET, RIGHT_NET = ip_network("10.1.0.0/24"), ip_network("10.2.0.0/24")
OLD, NEW = (0x1000_0001, 0x2000_0001), (0x1000_0002, 0x2000_0002)


def _ipv4(source: str, destination: str, payload: bytes = b"x" * 40) -> bytes:
    header = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0,
        ip_address(source).packed, ip_address(destination).packed,
    )  # fmt: skip
    return header + payload


@dataclass
class Site:
    backend: UserspaceBackend
    tun: socket.socket  # the test's end of the backend's "TUN device"
    events: list[BackendEvent] = field(default_factory=list)
    held: list[bytes] = field(default_factory=list)
    hold: bool = False
    peer: Site | None = None

    def send(self, datagram: bytes, source: Endpoint, target: Endpoint) -> None:
        if self.hold:
            self.held.append(datagram)
        elif self.peer is not None:
            self.peer.backend.receive_esp(datagram, source, target)

    def inject(self, inner: bytes) -> None:
        self.tun.send(inner)

    def delivered(self, timeout: float = 2.0) -> bytes:
        self.tun.settimeout(timeout)
        return self.tun.recv(65535)

    def nothing_delivered(self) -> bool:
        try:
            self.delivered(timeout=0.3)
        except TimeoutError:
            return True
        return False


def _site(sockets: list[socket.socket]) -> Site:
    backend_end, test_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sockets += [backend_end, test_end]
    site = Site(backend=None, tun=test_end)  # type: ignore[arg-type]
    site.backend = UserspaceBackend(
        tun_fd=backend_end.fileno(), udp_port=None, raw_esp=False,
        datagram_sender=site.send,
    )  # fmt: skip
    site.backend.start(site.events.append)
    return site


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site]]:
    sockets: list[socket.socket] = []
    left, right = _site(sockets), _site(sockets)
    left.peer, right.peer = right, left
    for site, local, remote, here, there in (
        (left, LEFT_NET, RIGHT_NET, LEFT, RIGHT),
        (right, RIGHT_NET, LEFT_NET, RIGHT, LEFT),
    ):
        for direction in Direction:
            policy = PolicySpec(direction, local, remote, here, there, reqid=1)
            site.backend.add_policy(policy)
    yield left, right
    for site in (left, right):
        site.backend.close()
    for sock in sockets:
        sock.close()


def _sa(spi: int, source: IPv4Address, destination: IPv4Address) -> SaSpec:
    key = random.Random(spi).randbytes(36)
    return SaSpec(
        spi, Direction.OUTBOUND, source, destination, EspAlgorithm.AES_GCM_16,
        key, 256, esn=True, encapsulation=UdpEncapsulation(4500, 4500), reqid=1,
    )  # fmt: skip


def _install(left: Site, right: Site, spis: tuple[int, int]) -> None:
    forward, backward = _sa(spis[0], LEFT, RIGHT), _sa(spis[1], RIGHT, LEFT)
    inbound = Direction.INBOUND
    right.backend.add_sa(replace(forward, direction=inbound))
    left.backend.add_sa(replace(backward, direction=inbound))
    left.backend.add_sa(forward)
    right.backend.add_sa(backward)


def test_inner_packet_crosses_two_backends_and_is_counted(
    sites: tuple[Site, Site],
) -> None:
    left, right = sites
    _install(left, right, OLD)
    inner = _ipv4("10.1.0.1", "10.2.0.1")

    left.inject(inner)

    assert right.delivered() == inner
    counters = right.backend.counters(OLD[0], RIGHT)
    assert (counters.packets, counters.bytes, counters.sequence) == (1, 60, 1)
    assert left.backend.counters(OLD[0], RIGHT).sequence == 1


def test_new_outbound_sa_takes_over_while_the_old_inbound_sa_still_verifies(
    sites: tuple[Site, Site],
) -> None:
    left, right = sites
    _install(left, right, OLD)
    left.hold = True
    left.inject(_ipv4("10.1.0.1", "10.2.0.1", b"in flight"))
    while not left.held:
        right.nothing_delivered()

    # make-before-break: the new pair is installed, the old one kept
    _install(left, right, NEW)
    left.hold = False
    left.inject(_ipv4("10.1.0.1", "10.2.0.1", b"after rekey"))
    assert right.delivered().endswith(b"after rekey")
    right.backend.receive_esp(left.held[0], ("192.0.2.1", 4500), ("192.0.2.2", 4500))

    assert right.delivered().endswith(b"in flight")
    assert right.backend.counters(NEW[0], RIGHT).packets == 1
    assert right.backend.counters(OLD[0], RIGHT).packets == 1


def test_deleting_the_new_outbound_sa_falls_back_to_the_older_one(
    sites: tuple[Site, Site],
) -> None:
    left, right = sites
    _install(left, right, OLD)
    _install(left, right, NEW)

    left.backend.delete_sa(NEW[0], RIGHT)
    left.inject(_ipv4("10.1.0.1", "10.2.0.1"))

    assert right.delivered()
    assert right.backend.counters(OLD[0], RIGHT).packets == 1


def test_update_sa_to_a_new_address_keeps_the_sequence_numbers(
    sites: tuple[Site, Site],
) -> None:
    left, right = sites
    _install(left, right, OLD)
    left.inject(_ipv4("10.1.0.1", "10.2.0.1"))
    right.delivered()

    # RFC 4555 style: same keys, new peer address and port
    moved = replace(
        _sa(OLD[0], LEFT, RIGHT),
        destination=IPv4Address("192.0.2.3"),
        encapsulation=UdpEncapsulation(4500, 4501),
    )
    left.backend.update_sa(moved)
    left.inject(_ipv4("10.1.0.1", "10.2.0.1"))
    right.delivered()

    assert left.backend.counters(OLD[0], moved.destination).sequence == 2
    assert right.backend.counters(OLD[0], RIGHT).replay_errors == 0
    with pytest.raises(KeyError):
        left.backend.counters(OLD[0], RIGHT)


def test_update_of_the_old_sa_during_a_rekey_keeps_the_new_one_in_use(
    sites: tuple[Site, Site],
) -> None:
    left, right = sites
    _install(left, right, OLD)
    _install(left, right, NEW)

    left.backend.update_sa(_sa(OLD[0], LEFT, RIGHT))
    left.inject(_ipv4("10.1.0.1", "10.2.0.1"))
    right.delivered()

    assert right.backend.counters(NEW[0], RIGHT).packets == 1
    assert right.backend.counters(OLD[0], RIGHT).packets == 0


def test_traffic_without_an_sa_raises_one_acquire_and_is_dropped(
    sites: tuple[Site, Site],
) -> None:
    left, right = sites
    for _ in range(3):
        left.inject(_ipv4("10.1.0.1", "10.2.0.1"))

    assert right.nothing_delivered()
    assert left.backend.drops.no_sa == 3
    acquire = BackendEvent(BackendEventKind.ACQUIRE, destination=RIGHT, reqid=1)
    assert left.events == [acquire]


def test_traffic_outside_every_policy_is_dropped(sites: tuple[Site, Site]) -> None:
    left, right = sites
    _install(left, right, OLD)

    left.inject(_ipv4("10.1.0.1", "10.3.0.1"))

    assert right.nothing_delivered()
    assert left.backend.drops.no_policy == 1


def _forged(spi: int, inner: bytes, next_header: int = IPPROTO_IPIP) -> bytes:
    """An ESP packet under the test keys of SA `spi`, as its sender would
    build it (sequence 1)."""
    sa = _sa(spi, LEFT, RIGHT)
    cipher = esp_cipher("aesgcm16", 256, "none", sa.encryption_key)
    trailer = esp_trailer(len(inner), 4, next_header)
    return seal_packet(cipher, spi, 1, bytes(8), inner, trailer, esn=True)


def test_inner_packet_outside_the_sa_selectors_is_dropped(
    sites: tuple[Site, Site],
) -> None:
    left, right = sites
    _install(left, right, OLD)
    # RFC 4301 §5.2: authentic, but not from the SA's remote network
    packet = _forged(OLD[0], _ipv4("10.9.9.9", "10.2.0.1"))

    right.backend.receive_esp(packet, ("192.0.2.1", 4500), ("192.0.2.2", 4500))

    assert right.nothing_delivered()
    assert right.backend.drops.policy_mismatch == 1
    assert right.backend.counters(OLD[0], RIGHT).packets == 1


def test_dummy_packet_is_verified_and_discarded(sites: tuple[Site, Site]) -> None:
    left, right = sites
    _install(left, right, OLD)
    # RFC 4303 §2.6: Next Header 59 marks traffic-flow-confidentiality padding
    packet = _forged(OLD[0], b"\x00" * 16, next_header=59)

    right.backend.receive_esp(packet, ("192.0.2.1", 4500), ("192.0.2.2", 4500))

    assert right.nothing_delivered()
    assert right.backend.drops.dummy == 1


def test_unknown_spi_is_counted_and_dropped(sites: tuple[Site, Site]) -> None:
    left, right = sites
    _install(left, right, OLD)
    packet = _forged(0x0BAD_0001, _ipv4("10.1.0.1", "10.2.0.1"))

    right.backend.receive_esp(packet, ("192.0.2.1", 4500), ("192.0.2.2", 4500))

    assert right.nothing_delivered()
    assert right.backend.drops.unknown_spi == 1


def test_esp_of_an_ipv4_sa_arriving_over_ipv6_is_dropped(
    sites: tuple[Site, Site],
) -> None:
    left, right = sites
    _install(left, right, OLD)
    left.hold = True
    left.inject(_ipv4("10.1.0.1", "10.2.0.1", b"one path"))
    while not left.held:
        right.nothing_delivered()

    # each SA is verified on one path only, so that no two threads move
    # its anti-replay window at once
    over_ipv6 = (("2001:db8::1", 4500), ("2001:db8::2", 4500))
    right.backend.receive_esp(left.held[0], *over_ipv6)

    assert right.nothing_delivered()
    assert right.backend.drops.wrong_encapsulation == 1
    assert right.backend.counters(OLD[0], RIGHT).packets == 0
    right.backend.receive_esp(left.held[0], ("192.0.2.1", 4500), ("192.0.2.2", 4500))
    assert right.delivered().endswith(b"one path")


def _outbound_policy(local: str, remote: str, reqid: int, if_id: int) -> PolicySpec:
    return PolicySpec(
        Direction.OUTBOUND,
        ip_network(local),
        ip_network(remote),
        LEFT,
        RIGHT,
        reqid,
        if_id=if_id,
    )


def test_overlapping_selectors_with_other_if_ids_are_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One TUN device cannot keep tunnels with overlapping selectors apart by
    interface ID, as XFRM interfaces do: the backend says so."""
    backend = UserspaceBackend(tun_fd=-1)
    with caplog.at_level("WARNING", logger="qsgw.esp.userspace"):
        backend.add_policy(_outbound_policy("10.1.0.0/24", "10.9.0.0/16", 1, 1))
        backend.add_policy(_outbound_policy("10.1.0.0/24", "10.8.0.0/16", 2, 2))
        backend.add_policy(_outbound_policy("10.1.0.0/24", "10.9.0.0/24", 3, 1))
        assert caplog.records == []  # disjoint, or the same interface ID
        backend.add_policy(_outbound_policy("10.1.0.0/16", "10.9.1.0/24", 4, 7))
    (record,) = caplog.records
    message = record.getMessage()
    assert "10.1.0.0/16 === 10.9.1.0/24 (if_id 7)" in message
    assert "(if_id 1)" in message and "kernel data plane" in message

    caplog.clear()
    for reqid, remote, if_id in ((1, "10.9.0.0/16", 1), (3, "10.9.0.0/24", 1)):
        backend.delete_policy(_outbound_policy("10.1.0.0/24", remote, reqid, if_id))
    with caplog.at_level("WARNING", logger="qsgw.esp.userspace"):
        backend.add_policy(_outbound_policy("10.1.0.0/16", "10.9.2.0/24", 5, 7))
    assert caplog.records == []  # the if_id 1 policies are gone
