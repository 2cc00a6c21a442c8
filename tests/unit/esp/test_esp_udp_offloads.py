"""UDP GSO and GRO on the userspace backend's ESP-in-UDP sockets (loopback).

The backend's "TUN device" is one end of a SOCK_SEQPACKET socket pair; its
UDP socket is a loopback socket handed over with `adopt_udp_socket`, as
the daemon does. The test's peer socket sends with UDP_SEGMENT so that the
backend's GRO socket receives the datagrams coalesced, and it receives the
backend's GSO runs cut back into datagrams by the kernel.
"""

from __future__ import annotations

import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, ip_address, ip_network
from typing import Any

import pytest

from qsgw.crypto import esp_cipher
from qsgw.esp.backend import (
    Direction,
    EspAlgorithm,
    PolicySpec,
    SaSpec,
    UdpEncapsulation,
)
from qsgw.esp.packet import IPPROTO_IPIP, InboundSa, esp_trailer, seal_packet
from qsgw.esp.udp import SOL_UDP, UDP_SEGMENT, EspUdpSocket
from qsgw.esp.userspace import UserspaceBackend

pytestmark = pytest.mark.timeout(30)

IPV6_MTU = 24  # linux/in6.h; not in Python's socket module

HERE = IPv4Address("127.0.0.1")
LOCAL_NET, REMOTE_NET = ip_network("10.1.0.0/24"), ip_network("10.2.0.0/24")
SPI_IN, SPI_OUT = 0x3000_0001, 0x4000_0001


def _ipv4(source: str, destination: str, payload: bytes) -> bytes:
    header = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0,
        ip_address(source).packed, ip_address(destination).packed,
    )  # fmt: skip
    return header + payload


def _key(spi: int) -> bytes:
    return random.Random(spi).randbytes(36)


@dataclass
class Gateway:
    backend: UserspaceBackend
    tun: socket.socket  # the test's end of the backend's "TUN device"
    peer: socket.socket  # the remote gateway's UDP socket
    port: int  # the backend's UDP port
    others: list[tuple[bytes, Any]]

    def delivered(self, timeout: float = 2.0) -> bytes:
        self.tun.settimeout(timeout)
        return self.tun.recv(65535)

    def nothing_more_delivered(self) -> bool:
        try:
            self.delivered(timeout=0.3)
        except TimeoutError:
            return True
        return False


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    backend_end, test_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((str(HERE), 0))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((str(HERE), 0))
    peer.settimeout(5)
    others: list[tuple[bytes, Any]] = []
    backend = UserspaceBackend(
        tun_fd=backend_end.fileno(), udp_port=None, raw_esp=False
    )
    backend.adopt_udp_socket(
        sock, HERE, lambda data, ancillary, source: others.append((data, source))
    )
    port = sock.getsockname()[1]
    peer_port = peer.getsockname()[1]
    for direction in Direction:
        policy = PolicySpec(direction, LOCAL_NET, REMOTE_NET, HERE, HERE, reqid=1)
        backend.add_policy(policy)
    outbound = SaSpec(
        SPI_OUT, Direction.OUTBOUND, HERE, HERE, EspAlgorithm.AES_GCM_16,
        _key(SPI_OUT), 256, esn=True,
        encapsulation=UdpEncapsulation(port, peer_port), reqid=1,
    )  # fmt: skip
    inbound = replace(
        outbound,
        spi=SPI_IN,
        direction=Direction.INBOUND,
        encryption_key=_key(SPI_IN),
        encapsulation=UdpEncapsulation(peer_port, port),
    )
    backend.add_sa(inbound)
    backend.add_sa(outbound)
    yield Gateway(backend, test_end, peer, port, others)
    backend.close()
    for end in (backend_end, test_end, peer):
        end.close()


def _wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Until another thread has made `condition` true (bounded)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def _esp(sequence: int, inner: bytes) -> bytes:
    cipher = esp_cipher("aesgcm16", 256, "none", _key(SPI_IN))
    trailer = esp_trailer(len(inner), cipher.block_size, IPPROTO_IPIP)
    iv = sequence.to_bytes(8, "big")
    return seal_packet(cipher, SPI_IN, sequence, iv, inner, trailer, esn=True)


def _send_coalesced(gateway: Gateway, packets: list[bytes]) -> None:
    """One sendmsg with UDP_SEGMENT: over loopback the backend's GRO socket
    receives the run as one buffer."""
    segment = struct.pack("=H", len(packets[0]))
    gateway.peer.sendmsg(
        packets, [(SOL_UDP, UDP_SEGMENT, segment)], 0, (str(HERE), gateway.port)
    )


def _inner(number: int) -> bytes:
    return _ipv4("10.2.0.1", "10.1.0.1", number.to_bytes(2, "big") * 50)


def test_a_corrupt_packet_in_a_gro_batch_leaves_the_others_and_the_window(
    gateway: Gateway,
) -> None:
    packets = [_esp(sequence, _inner(sequence)) for sequence in range(1, 6)]
    corrupt = bytearray(packets[2])
    corrupt[-1] ^= 0x01  # the ICV of sequence number 3
    packets[2] = bytes(corrupt)
    gateway.backend.start(lambda event: None)

    _send_coalesced(gateway, packets)

    assert [gateway.delivered() for _ in range(4)] == [_inner(n) for n in (1, 2, 4, 5)]
    counters = gateway.backend.counters(SPI_IN, HERE)
    assert (counters.packets, counters.integrity_errors, counters.sequence) == (
        4,
        1,
        5,
    )
    assert gateway.backend.offloads.gro_receives == 1
    assert gateway.backend.offloads.gro_packets == 5
    # the corrupt packet did not move the window: the genuine 3 still counts
    gateway.peer.sendto(_esp(3, _inner(3)), (str(HERE), gateway.port))
    assert gateway.delivered() == _inner(3)


def test_a_replay_inside_a_gro_batch_is_dropped_and_counted_alone(
    gateway: Gateway,
) -> None:
    first, second, third = (_esp(n, _inner(n)) for n in (1, 2, 3))
    gateway.backend.start(lambda event: None)

    _send_coalesced(gateway, [first, second, first, third])

    assert [gateway.delivered() for _ in range(3)] == [_inner(n) for n in (1, 2, 3)]
    assert gateway.nothing_more_delivered()
    counters = gateway.backend.counters(SPI_IN, HERE)
    assert (counters.packets, counters.replay_errors) == (3, 1)


def test_ike_coalesced_with_esp_goes_to_the_owner_of_the_socket(
    gateway: Gateway,
) -> None:
    esp = _esp(1, _inner(1))
    ike = b"\x00\x00\x00\x00" + bytes(len(esp) - 4)  # same length: one run
    gateway.backend.start(lambda event: None)

    _send_coalesced(gateway, [esp, ike])

    assert gateway.delivered() == _inner(1)
    _wait_for(lambda: bool(gateway.others))
    assert [data for data, _ in gateway.others] == [ike]
    assert gateway.backend.offloads.gro_packets == 2


def _decrypt(packets: list[bytes]) -> list[bytes]:
    sa = InboundSa(
        SPI_OUT, esp_cipher("aesgcm16", 256, "none", _key(SPI_OUT)),
        esn=True, replay_window=64,
    )  # fmt: skip
    return [bytes(sa.decapsulate(packet)[1]) for packet in packets]


def test_packets_of_mixed_sizes_leave_in_gso_runs_and_arrive_one_by_one(
    gateway: Gateway,
) -> None:
    sizes = [100, 100, 100, 60, 100, 200, 200]
    inners = [
        _ipv4("10.1.0.1", "10.2.0.1", bytes([n]) * size) for n, size in enumerate(sizes)
    ]
    for inner in inners:  # queued before the backend reads: one drain
        gateway.tun.send(inner)

    gateway.backend.start(lambda event: None)

    received = [gateway.peer.recv(65535) for _ in inners]
    assert _decrypt(received) == inners
    offloads = gateway.backend.offloads
    # the sending thread counts a run once its send returned
    _wait_for(lambda: offloads.gso_sends >= 2)
    # runs: 100 100 100 60 (a shorter packet ends a run), 100 alone, 200 200
    assert (offloads.gso_sends, offloads.gso_packets) == (2, 6)
    assert gateway.backend.counters(SPI_OUT, HERE).sequence == len(inners)


def test_a_run_of_too_many_segments_falls_back_to_one_datagram_per_send(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((str(HERE), 0))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    peer.bind((str(HERE), 0))
    peer.settimeout(5)
    udp = EspUdpSocket(sock, HERE, lambda *other: None, source_info=False)
    _send, send_segments = udp.sender(HERE, peer.getsockname())
    # more segments than the kernel takes in one send (UDP_MAX_SEGMENTS)
    packets = [n.to_bytes(2, "big") * 50 for n in range(130)]
    try:
        with caplog.at_level(logging.DEBUG, logger="qsgw.esp.udp"):
            used_gso = send_segments(packets, 100)
            used_gso_after = send_segments(packets[:2], 100)
        received = [peer.recv(65535) for _ in range(132)]
    finally:
        sock.close()
        peer.close()

    assert used_gso is False
    assert received == packets + packets[:2]
    assert used_gso_after is True  # too many segments: that run only
    assert udp.gso is True


def test_segments_past_the_path_mtu_leave_one_per_send_and_shorter_ones_in_gso(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::1", 0))
    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU, 1280)  # this socket's path MTU
    peer = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    peer.bind(("::1", 0))
    peer.settimeout(5)
    udp = EspUdpSocket(sock, ip_address("::1"), lambda *other: None, source_info=False)
    _send, send_segments = udp.sender(ip_address("::1"), peer.getsockname()[:2])
    large = [bytes([n]) * 1400 for n in range(4)]
    small = [bytes([n]) * 1000 for n in range(4)]
    try:
        with caplog.at_level(logging.DEBUG, logger="qsgw.esp.udp"):
            sent = [send_segments(large, 1400), send_segments(large, 1400)]
            sent.append(send_segments(small, 1000))
        received = [peer.recv(65535) for _ in range(12)]
    finally:
        sock.close()
        peer.close()

    assert sent == [False, False, True]  # refused once, not tried again
    assert received == large + large + small  # fragmented, none lost
    assert udp.gso is True
    refusals = [r for r in caplog.records if "past the path MTU" in r.getMessage()]
    assert len(refusals) == 1
