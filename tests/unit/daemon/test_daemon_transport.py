"""UDP sockets: non-ESP marker, NAT keepalives, local address on wildcards."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from dataclasses import replace
from ipaddress import IPv4Address, ip_address, ip_network

import pytest

from qsgw.crypto import esp_cipher
from qsgw.daemon.transport import (
    NON_ESP_MARKER,
    Endpoint,
    Received,
    UdpEndpoint,
    UdpTransport,
    classify,
)
from qsgw.esp.backend import (
    Direction,
    EspAlgorithm,
    IPAddress,
    PolicySpec,
    SaSpec,
    UdpEncapsulation,
)
from qsgw.esp.packet import IPPROTO_IPIP, esp_trailer, seal_packet
from qsgw.esp.userspace import UserspaceBackend


def test_ike_on_natt_port_has_marker_stripped() -> None:
    assert classify(NON_ESP_MARKER + b"IKE", natt=True) == Received("ike", b"IKE")


def test_nat_keepalive_is_recognised() -> None:
    assert classify(b"\xff", natt=True).kind == "keepalive"


def test_esp_in_udp_goes_to_the_data_plane_unchanged() -> None:
    packet = b"\x00\x00\x10\x01" + b"\x00" * 20
    assert classify(packet, natt=True) == Received("esp", packet)


def test_short_datagram_on_natt_port_is_a_runt() -> None:
    assert classify(b"\x00\x00", natt=True).kind == "runt"


def test_ike_port_takes_datagrams_as_they_are() -> None:
    assert classify(NON_ESP_MARKER + b"x", natt=False) == Received(
        "ike", NON_ESP_MARKER + b"x"
    )


def receive(endpoint: UdpEndpoint) -> list[tuple[bytes, Endpoint, Endpoint]]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        got = endpoint.read_burst()
        if got:
            return got
        time.sleep(0.01)
    pytest.fail("nothing received")


def test_wildcard_socket_learns_the_local_address_and_replies_from_it() -> None:
    endpoint = UdpEndpoint(IPv4Address("0.0.0.0"), 0, natt=False)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5)
    try:
        peer.sendto(b"hello", ("127.0.0.2", endpoint.port))
        ((data, local, remote),) = receive(endpoint)

        endpoint.send(b"answer", local[0], remote)
        answer, source = peer.recvfrom(100)
    finally:
        endpoint.close()
        peer.close()

    assert (data, local[0]) == (b"hello", IPv4Address("127.0.0.2"))
    assert (answer, source[0]) == (b"answer", "127.0.0.2")


def test_transport_adds_marker_when_sending_ike_from_natt_port() -> None:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    natt_port = probe.getsockname()[1]
    probe.close()
    transport = UdpTransport([IPv4Address("127.0.0.1")], 0, natt_port, lambda *a: None)
    try:
        local = (IPv4Address("127.0.0.1"), natt_port)
        transport.send_ike(
            b"IKE", local, (IPv4Address("127.0.0.1"), peer.getsockname()[1])
        )
        data, source = peer.recvfrom(100)
    finally:
        transport.close()
        peer.close()

    assert data == NON_ESP_MARKER + b"IKE"
    assert source[1] == natt_port


def _free_port(address: IPAddress) -> int:
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    probe = socket.socket(family, socket.SOCK_DGRAM)
    probe.bind((str(address), 0))
    port = int(probe.getsockname()[1])
    probe.close()
    return port


def _ipv4_udp(source: str, destination: str) -> bytes:
    payload = b"inner" * 10
    header = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0,
        IPv4Address(source).packed, IPv4Address(destination).packed,
    )  # fmt: skip
    return header + payload


def _tunnel(
    backend: UserspaceBackend,
    us: IPAddress,
    them: IPAddress,
    natt_port: int,
    peer_port: int,
) -> None:
    """Policies and an SA pair between us and the peer, 10.1.0.0/24 <->
    10.2.0.0/24 inside."""
    local, remote = ip_network("10.1.0.0/24"), ip_network("10.2.0.0/24")
    for direction in Direction:
        backend.add_policy(PolicySpec(direction, local, remote, us, them, reqid=1))
    outbound = SaSpec(
        0x5000_0001, Direction.OUTBOUND, us, them, EspAlgorithm.AES_GCM_16,
        bytes(range(36)), 256, encapsulation=UdpEncapsulation(natt_port, peer_port),
        reqid=1,
    )  # fmt: skip
    inbound = replace(
        outbound,
        spi=0x6000_0001,
        direction=Direction.INBOUND,
        source=them,
        destination=us,
        encapsulation=UdpEncapsulation(peer_port, natt_port),
    )
    backend.add_sa(outbound)
    backend.add_sa(inbound)


def _sealed(spi: int, inner: bytes) -> bytes:
    cipher = esp_cipher("aesgcm16", 256, "none", bytes(range(36)))
    trailer = esp_trailer(len(inner), cipher.block_size, IPPROTO_IPIP)
    iv = (1).to_bytes(8, "big")
    return seal_packet(cipher, spi, 1, iv, inner, trailer, esn=False)


@pytest.mark.parametrize(
    ("listen", "us", "them"),
    [
        pytest.param("0.0.0.0", "127.0.0.2", "127.0.0.1", id="ipv4-wildcard"),
        pytest.param("127.0.0.2", "127.0.0.2", "127.0.0.1", id="ipv4-address"),
        pytest.param("::", "::1", "::1", id="ipv6-wildcard"),
        pytest.param("::1", "::1", "::1", id="ipv6-address"),
    ],
)
def test_handed_over_natt_socket_keeps_esp_on_the_data_plane_and_ike_on_the_loop(
    listen: str, us: str, them: str
) -> None:
    local_address, peer_address = ip_address(us), ip_address(them)
    natt_port = _free_port(local_address)
    family = socket.AF_INET if local_address.version == 4 else socket.AF_INET6
    peer = socket.socket(family, socket.SOCK_DGRAM)
    peer.bind((them, 0))
    peer.settimeout(5)
    peer_port = peer.getsockname()[1]
    backend_end, tun = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    tun.settimeout(5)
    backend = UserspaceBackend(
        tun_fd=backend_end.fileno(), udp_port=None, raw_esp=False
    )
    received: list[tuple[bool, bytes, Endpoint, Endpoint, int]] = []

    def on_datagram(
        endpoint: UdpEndpoint, data: bytes, local: Endpoint, remote: Endpoint
    ) -> None:
        received.append((endpoint.natt, data, local, remote, threading.get_ident()))

    async def scenario() -> tuple[bytes, bytes, tuple[str, int]]:
        loop = asyncio.get_running_loop()
        transport = UdpTransport([ip_address(listen)], 0, natt_port, on_datagram)
        transport.start(loop)
        backend.start(lambda event: None)
        try:
            transport.hand_esp_in_udp_to(backend)
            _tunnel(backend, local_address, peer_address, natt_port, peer_port)
            inner_in = _ipv4_udp("10.2.0.1", "10.1.0.1")
            peer.sendto(NON_ESP_MARKER + b"IKE", (us, natt_port))
            peer.sendto(_sealed(0x6000_0001, inner_in), (us, natt_port))
            delivered = await loop.run_in_executor(None, tun.recv, 65535)
            for _ in range(200):
                if received:
                    break
                await asyncio.sleep(0.01)
            tun.send(_ipv4_udp("10.1.0.1", "10.2.0.1"))
            esp, source = await loop.run_in_executor(None, peer.recvfrom, 65535)
            return delivered, esp, source[:2]
        finally:
            backend.close()
            transport.close()

    try:
        delivered, esp, source = asyncio.run(scenario())
    finally:
        for sock in (peer, backend_end, tun):
            sock.close()

    assert delivered == _ipv4_udp("10.2.0.1", "10.1.0.1")
    local, remote = (local_address, natt_port), (peer_address, peer_port)
    loop_thread = threading.get_ident()  # asyncio.run ran the loop here
    assert received == [(True, NON_ESP_MARKER + b"IKE", local, remote, loop_thread)]
    assert source == (us, natt_port)  # from the SA's own address
    assert esp[:4] == (0x5000_0001).to_bytes(4, "big")
