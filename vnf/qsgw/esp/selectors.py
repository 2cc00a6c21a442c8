"""Traffic selector matching on raw inner IP packets, for the userspace path.

A `PolicySpec` names networks with `ipaddress` objects; matching those per
packet would cost microseconds, so each selector is compiled once into
integers and compared against the packet's address octets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from qsgw.esp.backend import IPNetwork, PolicySpec

IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_SCTP = 132
_PORT_PROTOCOLS = (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP)
_ALL_PORTS = (0, 65535)
_IPV4_ADDRESSES = struct.Struct(">12xII")  # source and destination


@dataclass(frozen=True, slots=True)
class CompiledNetwork:
    version: int
    network: int
    mask: int
    prefix_length: int

    @classmethod
    def of(cls, network: IPNetwork) -> CompiledNetwork:
        return cls(
            network.version,
            int(network.network_address),
            int(network.netmask),
            network.prefixlen,
        )

    def contains(self, address: bytes | memoryview) -> bool:
        return int.from_bytes(address) & self.mask == self.network


@dataclass(frozen=True, slots=True)
class InnerHeader:
    """What a selector looks at in an inner packet."""

    version: int
    source: bytes
    destination: bytes
    protocol: int
    source_port: int
    destination_port: int


def parse_inner(packet: bytes | memoryview) -> InnerHeader | None:
    """The addresses, protocol and ports of an IPv4 or IPv6 packet."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= 20:
        header_length = (packet[0] & 0x0F) * 4
        protocol = packet[9]
        source, destination = bytes(packet[12:16]), bytes(packet[16:20])
    elif version == 6 and len(packet) >= 40:
        # extension headers are not walked: their traffic matches only
        # selectors that allow any protocol
        header_length, protocol = 40, packet[6]
        source, destination = bytes(packet[8:24]), bytes(packet[24:40])
    else:
        return None
    ports = _ports(packet, header_length, protocol)
    return InnerHeader(version, source, destination, protocol, *ports)


def _ports(packet: bytes | memoryview, offset: int, protocol: int) -> tuple[int, int]:
    if protocol not in _PORT_PROTOCOLS or len(packet) < offset + 4:
        return 0, 0
    source = int.from_bytes(packet[offset : offset + 2])
    destination = int.from_bytes(packet[offset + 2 : offset + 4])
    return source, destination


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """A `PolicySpec` ready for per-packet matching."""

    spec: PolicySpec
    local: CompiledNetwork
    remote: CompiledNetwork
    any_protocol: bool

    @classmethod
    def of(cls, spec: PolicySpec) -> CompiledPolicy:
        any_protocol = (
            spec.ip_protocol == 0
            and spec.local_ports == _ALL_PORTS
            and spec.remote_ports == _ALL_PORTS
        )
        local, remote = CompiledNetwork.of(spec.local), CompiledNetwork.of(spec.remote)
        return cls(spec, local, remote, any_protocol)

    @property
    def reqid(self) -> int:
        return self.spec.reqid

    def matches_outbound(self, header: InnerHeader) -> bool:
        """Local is the inner source, remote the inner destination."""
        if header.version != self.local.version:
            return False
        if not self.local.contains(header.source):
            return False
        if not self.remote.contains(header.destination):
            return False
        return self.any_protocol or self._ports_match(
            header.protocol, header.source_port, header.destination_port
        )

    def admits_inbound(self, packet: bytes | memoryview) -> bool:
        """`matches_inbound` for a raw packet, without parsing it when the
        policy allows any protocol and port (the common, fast case)."""
        if not self.any_protocol:
            header = parse_inner(packet)
            return header is not None and self.matches_inbound(header)
        remote, local = self.remote, self.local
        if local.version == 4:
            if len(packet) < 20 or packet[0] >> 4 != 4:
                return False
            addresses: tuple[int, int] = _IPV4_ADDRESSES.unpack_from(packet)
            source, destination = addresses
        else:
            if len(packet) < 40 or packet[0] >> 4 != 6:
                return False
            source = int.from_bytes(packet[8:24])
            destination = int.from_bytes(packet[24:40])
        return (
            source & remote.mask == remote.network
            and destination & local.mask == local.network
        )

    def matches_inbound(self, header: InnerHeader) -> bool:
        """Remote is the inner source, local the inner destination."""
        if header.version != self.local.version:
            return False
        if not self.remote.contains(header.source):
            return False
        if not self.local.contains(header.destination):
            return False
        return self.any_protocol or self._ports_match(
            header.protocol, header.destination_port, header.source_port
        )

    def _ports_match(self, protocol: int, local_port: int, remote_port: int) -> bool:
        spec = self.spec
        if spec.ip_protocol and protocol != spec.ip_protocol:
            return False
        low, high = spec.local_ports
        if not low <= local_port <= high:
            return False
        low, high = spec.remote_ports
        return low <= remote_port <= high


def most_specific(policies: list[CompiledPolicy]) -> list[CompiledPolicy]:
    """Policies in matching order: longest remote, then local, prefix first."""
    return sorted(
        policies,
        key=lambda p: (p.remote.prefix_length, p.local.prefix_length),
        reverse=True,
    )
