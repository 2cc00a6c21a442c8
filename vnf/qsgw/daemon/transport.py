"""UDP sockets for IKE (port 500) and NAT traversal (port 4500).

One non-blocking socket per listen address and port, read from the asyncio
loop with `recvmsg`. On a wildcard address the kernel tells us, through
IP_PKTINFO / IPV6_PKTINFO, which local address a datagram was sent to, and
replies leave from that same address. IPv6 sockets are IPV6_V6ONLY so that
IPv4 always arrives on the IPv4 socket.

RFC 3948 §2.2 and RFC 7296 §2.23: on port 4500 an IKE message follows a
4-octet zero non-ESP marker, a single 0xFF octet is a NAT keepalive, and
anything else is ESP for the data plane.

With the userspace data plane the NAT-T sockets are handed over
(`hand_esp_in_udp_to`): the data plane's threads read them, keep ESP and
pass every other datagram back with its IP_PKTINFO, which reaches
`on_datagram` on the loop exactly as if the loop had read it. IKE still
leaves through `send_ike` here.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Protocol, runtime_checkable

from qsgw.ike.config import IPAddress

logger = logging.getLogger(__name__)

Endpoint = tuple[IPAddress, int]

NON_ESP_MARKER = b"\x00\x00\x00\x00"
NAT_KEEPALIVE = b"\xff"

# Linux values; Python 3.11 exports only the IPv6 names.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_IN_PKTINFO = struct.Struct("=I4s4s")  # ifindex, spec_dst, addr
_IN6_PKTINFO = struct.Struct("=16sI")  # addr, ifindex
_ANCILLARY_SIZE = socket.CMSG_SPACE(_IN6_PKTINFO.size)
_MAX_DATAGRAM = 65535
_RECEIVE_BURST = 64  # datagrams read per wake-up before yielding to the loop

_NO_FAMILY = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)
_CHOICES_KEPT = 1024  # sending sockets remembered per (local, IP version)
_PEERS_KEPT = 4096  # peer addresses remembered per socket (PeerAddresses)


@dataclass(frozen=True, slots=True)
class Received:
    """One datagram sorted by the rules of its port."""

    kind: str  # "ike" | "esp" | "keepalive" | "runt"
    data: bytes


def classify(data: bytes, natt: bool) -> Received:
    """What a datagram is, with the non-ESP marker removed from IKE."""
    if not natt:
        return Received("ike", data)
    if data == NAT_KEEPALIVE:
        return Received("keepalive", data)
    if len(data) < 4:
        return Received("runt", data)
    if data[:4] == NON_ESP_MARKER:
        return Received("ike", data[4:])
    return Received("esp", data)


UDP_ENCAP = 100  # linux/udp.h
UDP_ENCAP_ESPINUDP = 2


class UdpEndpoint:
    """One bound UDP socket."""

    def __init__(self, address: IPAddress, port: int, natt: bool) -> None:
        self.address = address
        self.natt = natt
        self.handed_over = False  # read by the data plane's thread
        self.wildcard = address.is_unspecified
        self.family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        try:
            self.sock = _bind(address, port, self.family)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise OSError(exc.errno, f"UDP {address} port {port}: {reason}") from None
        self.port = int(self.sock.getsockname()[1])
        _enlarge_buffers(self.sock, ESP_SOCKET_BUFFER if natt else IKE_SOCKET_BUFFER)
        self._peers = PeerAddresses()

    def read_burst(self) -> list[tuple[bytes, Endpoint, Endpoint]]:
        """Datagrams waiting on the socket: (data, local, remote)."""
        if not self.wildcard:
            return self._read_bound_burst()
        out = []
        for _ in range(_RECEIVE_BURST):
            try:
                data, ancillary, _flags, peer = self.sock.recvmsg(
                    _MAX_DATAGRAM, _ANCILLARY_SIZE
                )
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP port unreachable reported late
                logger.debug("receive on %s:%d: %s", self.address, self.port, exc)
                continue
            local = (self._local_address(ancillary), self.port)
            out.append((data, local, self._peers.endpoint(peer)))
        return out

    def _read_bound_burst(self) -> list[tuple[bytes, Endpoint, Endpoint]]:
        """A socket bound to one address: every datagram came to that one,
        so no IP_PKTINFO to ask for (`recvfrom` builds no ancillary list)."""
        out = []
        local = (self.address, self.port)
        receive, endpoint = self.sock.recvfrom, self._peers.endpoint
        for _ in range(_RECEIVE_BURST):
            try:
                data, peer = receive(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP port unreachable reported late
                logger.debug("receive on %s:%d: %s", self.address, self.port, exc)
                continue
            out.append((data, local, endpoint(peer)))
        return out

    def _local_address(self, ancillary: list[tuple[int, int, bytes]]) -> IPAddress:
        for level, kind, payload in ancillary:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                _ifindex, _spec_dst, destination = _IN_PKTINFO.unpack(
                    payload[: _IN_PKTINFO.size]
                )
                return IPv4Address(destination)
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                destination, _ifindex = _IN6_PKTINFO.unpack(
                    payload[: _IN6_PKTINFO.size]
                )
                return IPv6Address(destination)
        return self.address

    def send(self, data: bytes, local: IPAddress, remote: Endpoint) -> None:
        target = (self._peers.text(remote[0]), remote[1])
        try:
            if self.wildcard and not local.is_unspecified:
                ancillary = [self._source_ancillary(local)]
                self.sock.sendmsg([data], ancillary, 0, target)
            else:
                self.sock.sendto(data, target)
        except (BlockingIOError, InterruptedError):
            logger.debug("send buffer full, dropped a datagram to %s", target)
        except OSError as exc:
            logger.warning("cannot send to %s:%d: %s", remote[0], remote[1], exc)

    def _source_ancillary(self, local: IPAddress) -> tuple[int, int, bytes]:
        if isinstance(local, IPv4Address):
            info = _IN_PKTINFO.pack(0, local.packed, bytes(4))
            return (socket.IPPROTO_IP, IP_PKTINFO, info)
        return (
            socket.IPPROTO_IPV6,
            socket.IPV6_PKTINFO,
            _IN6_PKTINFO.pack(local.packed, 0),
        )

    def close(self) -> None:
        self.sock.close()


class PeerAddresses:
    """Address objects for the socket addresses the kernel gives as text,
    and text for the address objects we send to, each made once: IKE
    comes from few peers, and `ip_address` costs more than the rest of
    a receive. Bounded, so spoofed sources cannot grow it."""

    def __init__(self, limit: int = _PEERS_KEPT) -> None:
        self._limit = limit
        self._endpoints: dict[tuple[Any, ...], Endpoint] = {}
        self._texts: dict[IPAddress, str] = {}

    def endpoint(self, peer: tuple[Any, ...]) -> Endpoint:
        """(address, port) of a socket address from `recvfrom`/`recvmsg`."""
        found = self._endpoints.get(peer)
        if found is None:
            if len(self._endpoints) >= self._limit:
                self._endpoints.clear()
            address = ip_address(peer[0].split("%")[0])
            found = self._endpoints[peer] = (address, int(peer[1]))
        return found

    def text(self, address: IPAddress) -> str:
        found = self._texts.get(address)
        if found is None:
            if len(self._texts) >= self._limit:
                self._texts.clear()
            found = self._texts[address] = str(address)
        return found


ESP_SOCKET_BUFFER = 8 * 1024 * 1024
# IKE comes in bursts too: a peer with thousands of IKE SAs that restarts,
# shuts down or fails over sends one message per IKE SA at once
IKE_SOCKET_BUFFER = 4 * 1024 * 1024


def _enlarge_buffers(sock: socket.socket, size: int) -> None:
    """Give bursts room to queue on the socket.

    The default (net.core.rmem_default, ≈208 KiB) holds a few hundred small
    datagrams; past that the kernel drops them (UDP RcvbufErrors) and IKE
    waits for a retransmission, ESP loses packets. As root the FORCE
    variants pass the rmem_max cap.
    """
    for forced, plain in (
        (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
        (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF),
    ):
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced or plain, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


def _bind(address: IPAddress, port: int, family: socket.AddressFamily) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind((str(address), port))
    except OSError:
        sock.close()
        raise
    return sock


DatagramHandler = Callable[["UdpEndpoint", bytes, Endpoint, Endpoint], None]
OtherHandler = Callable[[bytes, list[tuple[int, int, bytes]], tuple[Any, ...]], None]


@runtime_checkable
class UdpSocketTaker(Protocol):
    """A data plane that reads ESP in UDP off the daemon's NAT-T sockets
    itself, on its own threads, and passes back what is not ESP."""

    def adopt_udp_socket(
        self, sock: socket.socket, address: IPAddress, on_other: OtherHandler
    ) -> None: ...


class UdpTransport:
    """All IKE sockets of the gateway, and the choice of socket to send on."""

    def __init__(
        self,
        addresses: Sequence[IPAddress],
        ike_port: int,
        natt_port: int,
        on_datagram: DatagramHandler,
    ) -> None:
        self.ike_port = ike_port
        self.natt_port = natt_port
        self._on_datagram = on_datagram
        self._loop: asyncio.AbstractEventLoop | None = None
        self.endpoints: list[UdpEndpoint] = []
        self._chosen: dict[tuple[Endpoint, int], UdpEndpoint | None] = {}
        try:
            for address in addresses:
                self._open(address)
        except OSError:
            self.close()
            raise
        if not self.endpoints:
            raise OSError(errno.EADDRNOTAVAIL, "no listen address could be opened")

    def _open(self, address: IPAddress) -> None:
        try:
            ike = UdpEndpoint(address, self.ike_port, natt=False)
        except OSError as exc:
            # A wildcard of a family the kernel lacks (e.g. booted without
            # IPv6) is skipped; a named address must work.
            if not address.is_unspecified or exc.errno not in _NO_FAMILY:
                raise
            logger.warning("not listening on %s: %s", address, exc.strerror)
            return
        try:
            natt = UdpEndpoint(address, self.natt_port, natt=True)
        except OSError:
            ike.close()
            raise
        self.endpoints += [ike, natt]

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for endpoint in self.endpoints:
            loop.add_reader(endpoint.sock.fileno(), self._readable, endpoint)

    def _readable(self, endpoint: UdpEndpoint) -> None:
        for data, local, remote in endpoint.read_burst():
            self._deliver(endpoint, data, local, remote)

    def is_natt_port(self, port: int) -> bool:
        return port == self.natt_port

    def hand_esp_in_udp_to(self, taker: UdpSocketTaker) -> None:
        """Let a userspace data plane read the NAT-T sockets (call after
        `start`): the loop stops reading them, and the data plane gets a
        duplicate of each (they share the socket: IKE still goes out here).
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("start the transport first")
        for endpoint in self.endpoints:
            if endpoint.natt and not endpoint.handed_over:
                loop.remove_reader(endpoint.sock.fileno())
                endpoint.handed_over = True
                taker.adopt_udp_socket(
                    endpoint.sock.dup(), endpoint.address, self._other_handler(endpoint)
                )

    def _other_handler(self, endpoint: UdpEndpoint) -> OtherHandler:
        loop = self._loop
        assert loop is not None

        def on_other(
            data: bytes, ancillary: list[tuple[int, int, bytes]], peer: tuple[Any, ...]
        ) -> None:  # on the data plane's thread: not the loop's address cache
            local = (endpoint._local_address(ancillary), endpoint.port)
            remote = (ip_address(peer[0].split("%")[0]), int(peer[1]))
            loop.call_soon_threadsafe(self._deliver, endpoint, data, local, remote)

        return on_other

    def _deliver(
        self, endpoint: UdpEndpoint, data: bytes, local: Endpoint, remote: Endpoint
    ) -> None:
        try:
            self._on_datagram(endpoint, data, local, remote)
        except Exception:
            logger.exception("failed to handle a datagram from %s", remote[0])

    def hand_esp_in_udp_to_kernel(self) -> None:
        """Let the kernel take ESP-in-UDP off the NAT-T sockets (RFC 3948).

        With the kernel data plane, XFRM decapsulates only what arrives on a
        socket marked UDP_ENCAP_ESPINUDP; IKE behind the non-ESP marker still
        reaches us, marker included.
        """
        for endpoint in self.endpoints:
            if endpoint.natt:
                endpoint.sock.setsockopt(
                    socket.IPPROTO_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP
                )

    def send_ike(self, data: bytes, local: Endpoint, remote: Endpoint) -> None:
        """Send an IKE message, with the non-ESP marker on the NAT-T port."""
        endpoint = self._endpoint_for(local, remote[0])
        if endpoint is None:
            logger.warning("no socket to send from %s:%d", local[0], local[1])
            return
        payload = NON_ESP_MARKER + data if endpoint.natt else data
        endpoint.send(payload, local[0], remote)

    def send_esp(self, packet: bytes, local: Endpoint, remote: Endpoint) -> None:
        """Send RFC 3948 ESP-in-UDP for the data plane (no marker)."""
        endpoint = self._endpoint_for(local, remote[0])
        if endpoint is not None and endpoint.natt:
            endpoint.send(packet, local[0], remote)

    def _endpoint_for(self, local: Endpoint, remote: IPAddress) -> UdpEndpoint | None:
        key = (local, remote.version)
        try:
            return self._chosen[key]
        except KeyError:
            pass
        chosen = self._choose_endpoint(local, remote)
        if len(self._chosen) >= _CHOICES_KEPT:
            self._chosen.clear()
        self._chosen[key] = chosen
        return chosen

    def _choose_endpoint(
        self, local: Endpoint, remote: IPAddress
    ) -> UdpEndpoint | None:
        natt = local[1] == self.natt_port
        candidates = [
            e
            for e in self.endpoints
            if e.natt == natt and e.address.version == remote.version
        ]
        exact = [e for e in candidates if e.address == local[0]]
        wildcard = [e for e in candidates if e.wildcard]
        chosen = exact or wildcard or candidates
        return chosen[0] if chosen else None

    def close(self) -> None:
        for endpoint in self.endpoints:
            if self._loop is not None and not endpoint.handed_over:
                self._loop.remove_reader(endpoint.sock.fileno())
            endpoint.close()
        self.endpoints = []
        self._chosen.clear()
