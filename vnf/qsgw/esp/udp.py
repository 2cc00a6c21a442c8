"""ESP-in-UDP sockets of the userspace data plane: GSO out, GRO in.

One `EspUdpSocket` per UDP socket the backend reads (its own on port 4500,
or one the daemon handed over). Linux offloads cut the system calls:

- UDP GSO (send): one `sendmsg` carries up to `MAX_SEGMENTS` ESP packets
  of equal length (the last may be shorter) with a UDP_SEGMENT control
  message; the kernel cuts them into datagrams as late as it can.
- UDP GRO (receive): with UDP_GRO set, one `recvmsg` may return several
  datagrams of one flow back to back, with their size in a UDP_GRO control
  message; `segments` splits them again.

A kernel that refuses either option still works, one datagram per call;
the socket says so once in the log at debug level.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from collections.abc import Callable, Iterator, Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Any

log = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address
Ancillary = list[tuple[int, int, bytes]]
Peer = tuple[Any, ...]  # a socket address as the socket module gives it
# (datagram, ancillary data of its receive, peer)
OtherHandler = Callable[[bytes, Ancillary, Peer], None]

SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h
UDP_GRO = 104
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS on older kernels
MAX_BATCH_OCTETS = 65000  # below the 64 KiB an IP packet can hold
_INT = struct.Struct("=i")
_SEGMENT = struct.Struct("=H")
_IN_PKTINFO = struct.Struct("=I4s4s")  # ifindex, spec_dst, addr
_IN6_PKTINFO = struct.Struct("=16sI")  # addr, ifindex
ANCILLARY_SIZE = socket.CMSG_SPACE(_IN6_PKTINFO.size) + socket.CMSG_SPACE(_INT.size)
# send errors that mean "no GSO here" rather than "this packet failed"
# (EIO: the route goes through an XFRM policy) ...
_NO_GSO = (errno.EIO, errno.EOPNOTSUPP, errno.ENOPROTOOPT)
# ... and those about one run: too many segments, or longer than the path
# MTU (EINVAL from the UDP layer, EMSGSIZE from IPv6's)
_RUN_REFUSED = (errno.EINVAL, errno.EMSGSIZE)
_NO_LIMIT = 1 << 16

Send = Callable[[bytes], object]
SendSegments = Callable[[list[bytes], int], bool]  # True: one GSO send


class EspUdpSocket:
    """A UDP socket carrying ESP, with its offloads and its non-ESP handler.

    `source_info` adds IP_PKTINFO / IPV6_PKTINFO to what is sent, so that a
    socket bound to a wildcard address sends from the SA's own address.
    """

    __slots__ = ("address", "family", "gro", "gso", "on_other", "sock", "source_info")

    def __init__(
        self,
        sock: socket.socket,
        address: IPAddress,
        on_other: OtherHandler,
        *,
        source_info: bool,
    ) -> None:
        self.sock = sock
        self.address = address
        self.family = sock.family
        self.on_other = on_other
        self.source_info = source_info
        self.gso = True  # False: the kernel has no UDP GSO for this socket
        self.gro = _enable_gro(sock)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def can_send_from(self, source: IPAddress) -> bool:
        if source.version != self.address.version:
            return False
        return self.address == source or self.address.is_unspecified

    def sender(
        self, source: IPAddress, target: tuple[str, int]
    ) -> tuple[Send, SendSegments]:
        """Functions sending one ESP packet, and a run of them, to `target`."""
        sock = self.sock
        ancillary: Ancillary = []
        if self.source_info and self.address.is_unspecified:
            ancillary.append(source_ancillary(source))
        sendmsg = sock.sendmsg
        # runs of segments this long or longer went past the path MTU to
        # `target`: they leave one datagram per send
        below = _NO_LIMIT

        def send(packet: bytes) -> object:
            return sendmsg((packet,), ancillary, 0, target)

        def send_segments(packets: list[bytes], segment: int) -> bool:
            nonlocal below
            if self.gso and segment < below:
                gso = (SOL_UDP, UDP_SEGMENT, _SEGMENT.pack(segment))
                try:
                    sendmsg(packets, [*ancillary, gso], 0, target)
                    return True
                except OSError as exc:
                    if exc.errno in _RUN_REFUSED:
                        if len(packets) <= MAX_SEGMENTS:  # not too many: too long
                            below = min(below, segment)
                            self._past_mtu(segment, target)
                    elif exc.errno in _NO_GSO:
                        self._gso_refused(exc)
                    else:
                        raise
            for packet in packets:
                sendmsg((packet,), ancillary, 0, target)
            return False

        if not ancillary:
            sendto = sock.sendto

            def send_plain(packet: bytes) -> object:
                return sendto(packet, target)

            return send_plain, send_segments
        return send, send_segments

    def _past_mtu(self, segment: int, target: tuple[str, int]) -> None:
        log.debug(
            "UDP GSO of %d-octet segments from %s to %s refused: past the path "
            "MTU; runs that long go one datagram per send (the IP layer may "
            "fragment them)",
            segment,
            self.address,
            target[0],
        )

    def _gso_refused(self, exc: OSError) -> None:
        self.gso = False
        log.debug(
            "UDP GSO refused on %s (%s): one ESP packet per send",
            self.address,
            exc.strerror,
        )

    def close(self) -> None:
        self.sock.close()


def _enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError as exc:
        log.debug("UDP GRO refused (%s): one ESP packet per receive", exc.strerror)
        return False
    return True


def segment_size(ancillary: Ancillary, length: int) -> int:
    """The size of the datagrams a GRO receive coalesced (`length` if one)."""
    for level, kind, data in ancillary:
        if kind == UDP_GRO and level == SOL_UDP:
            size: int = _INT.unpack_from(data)[0]
            return size or length
    return length


def segments(data: bytes, size: int) -> Iterator[memoryview]:
    """The datagrams of a coalesced receive, without copying them."""
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield view[start : start + size]


def source_ancillary(local: IPAddress) -> tuple[int, int, bytes]:
    """IP_PKTINFO / IPV6_PKTINFO naming the address a datagram leaves from."""
    if isinstance(local, IPv4Address):
        return (
            socket.IPPROTO_IP,
            IP_PKTINFO,
            _IN_PKTINFO.pack(0, local.packed, bytes(4)),
        )
    return (
        socket.IPPROTO_IPV6,
        socket.IPV6_PKTINFO,
        _IN6_PKTINFO.pack(local.packed, 0),
    )


def destination_address(ancillary: Ancillary, default: IPAddress) -> IPAddress:
    """The local address a datagram was sent to, from its PKTINFO."""
    for level, kind, payload in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
            _ifindex, _spec_dst, destination = _IN_PKTINFO.unpack_from(payload)
            return IPv4Address(destination)
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
            address, _ifindex = _IN6_PKTINFO.unpack_from(payload)
            return IPv6Address(address)
    return default


def pick(
    sockets: Sequence[EspUdpSocket], source: IPAddress, port: int
) -> EspUdpSocket | None:
    """The socket ESP from `source`:`port` leaves by: one bound to that
    address if there is one, else a wildcard of its family; on that port
    if one is."""
    candidates = [s for s in sockets if s.can_send_from(source)]
    if not candidates:
        return None
    return max(candidates, key=lambda s: (s.port == port, s.address == source))
