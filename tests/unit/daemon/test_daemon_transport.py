"""UDP sockets: non-ESP marker, NAT keepalives, local address on wildcards."""

from __future__ import annotations

import socket
import time
from ipaddress import IPv4Address

import pytest

from qsgw.daemon.transport import (
    NON_ESP_MARKER,
    Endpoint,
    Received,
    UdpEndpoint,
    UdpTransport,
    classify,
)


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
