"""Traffic selector matching on raw inner packets (qsgw.esp.selectors)."""

from __future__ import annotations

import struct
from ipaddress import ip_address, ip_network

import pytest

from qsgw.esp.backend import Direction, PolicySpec
from qsgw.esp.selectors import CompiledPolicy, most_specific, parse_inner


def _ipv4_udp(source: str, destination: str, sport: int, dport: int) -> bytes:
    header = struct.pack(
        ">BBHHHBBH4s4s",
        0x45,
        0,
        28,
        0,
        0,
        64,
        17,
        0,
        ip_address(source).packed,
        ip_address(destination).packed,
    )
    return header + struct.pack(">HHHH", sport, dport, 8, 0)


def _ipv6_tcp(source: str, destination: str, sport: int, dport: int) -> bytes:
    header = struct.pack(
        ">IHBB16s16s",
        0x60000000,
        20,
        6,
        64,
        ip_address(source).packed,
        ip_address(destination).packed,
    )
    return header + struct.pack(">HH", sport, dport) + bytes(16)


def _policy(local: str, remote: str, **narrowing: object) -> CompiledPolicy:
    spec = PolicySpec(
        Direction.OUTBOUND,
        ip_network(local),
        ip_network(remote),
        ip_address("192.0.2.1"),
        ip_address("192.0.2.2"),
        reqid=1,
        **narrowing,  # type: ignore[arg-type]
    )
    return CompiledPolicy.of(spec)


def test_parse_inner_reads_ipv4_addresses_and_udp_ports() -> None:
    header = parse_inner(_ipv4_udp("10.1.0.1", "10.2.0.9", 1234, 53))
    assert header is not None
    assert (header.version, header.protocol) == (4, 17)
    assert header.source == ip_address("10.1.0.1").packed
    assert (header.source_port, header.destination_port) == (1234, 53)


def test_parse_inner_reads_ipv6_addresses_and_tcp_ports() -> None:
    header = parse_inner(_ipv6_tcp("fd00:1::1", "fd00:2::1", 40000, 443))
    assert header is not None
    assert header.destination == ip_address("fd00:2::1").packed
    assert (header.protocol, header.destination_port) == (6, 443)


@pytest.mark.parametrize("packet", [b"", b"\x45" * 10, b"\x60" * 39, b"\x10" * 60])
def test_parse_inner_refuses_runts_and_other_versions(packet: bytes) -> None:
    assert parse_inner(packet) is None


def test_outbound_match_needs_local_source_and_remote_destination() -> None:
    policy = _policy("10.1.0.0/24", "10.2.0.0/16")
    forward = parse_inner(_ipv4_udp("10.1.0.1", "10.2.5.5", 1, 2))
    backward = parse_inner(_ipv4_udp("10.2.5.5", "10.1.0.1", 1, 2))
    assert forward is not None and backward is not None
    assert policy.matches_outbound(forward)
    assert not policy.matches_outbound(backward)
    assert policy.matches_inbound(backward)


def test_protocol_and_port_ranges_narrow_the_match() -> None:
    policy = _policy(
        "10.1.0.0/24", "10.2.0.0/24", ip_protocol=17, remote_ports=(53, 53)
    )
    dns = _ipv4_udp("10.1.0.1", "10.2.0.1", 5000, 53)
    other = _ipv4_udp("10.1.0.1", "10.2.0.1", 5000, 54)
    assert policy.matches_outbound(parse_inner(dns))  # type: ignore[arg-type]
    assert not policy.matches_outbound(parse_inner(other))  # type: ignore[arg-type]


@pytest.mark.parametrize("narrow", [False, True])
def test_admits_inbound_agrees_with_matches_inbound(narrow: bool) -> None:
    options = {"ip_protocol": 6, "local_ports": (443, 443)} if narrow else {}
    policy = _policy("fd00:1::/64", "fd00:2::/64", **options)
    packets = [
        _ipv6_tcp("fd00:2::1", "fd00:1::1", 40000, 443),
        _ipv6_tcp("fd00:2::1", "fd00:1::1", 40000, 80),
        _ipv6_tcp("fd00:3::1", "fd00:1::1", 40000, 443),
        _ipv4_udp("10.2.0.1", "10.1.0.1", 1, 443),
    ]
    for packet in packets:
        header = parse_inner(packet)
        assert header is not None
        assert policy.admits_inbound(packet) == policy.matches_inbound(header)


def test_most_specific_orders_longer_remote_prefixes_first() -> None:
    wide = _policy("10.1.0.0/24", "10.0.0.0/8")
    narrow = _policy("10.1.0.0/24", "10.2.0.0/24")
    assert most_specific([wide, narrow]) == [narrow, wide]
