"""The userspace ESP backend: a TUN device, ESP in UDP (RFC 3948) or raw ESP.

Packets routed into the TUN device are matched against the outbound
policies, protected with the policy's current outbound SA (found by
`reqid`) and sent; ESP packets received are looked up by SPI, verified,
checked against the SA's inbound policy (RFC 4301 §5.2) and written to the
TUN device. Threads run the packet loops so that the daemon's event loop
never waits for them: one drains the TUN device, one per socket it owns
blocks in that socket's receive (SO_RCVTIMEO wakes it to look at the stop
flag), and one checks time-based lifetimes. Each SA is verified on one
path only (its outer address family, UDP or raw), so that no two threads
move its anti-replay window at once.

Per packet, Python costs about 2 µs to send and 3 µs to receive on this
project's machine, and the kernel (TUN read or write, the UDP path) about
as much again. The hot paths are written for that: bound methods in
locals, no exception per wake-up, `OutboundSa.encapsulate` /
`InboundSa.decapsulate` as single functions, and the kernel's UDP offloads
(`qsgw.esp.udp`): the TUN thread drains every packet waiting and sends
each run of equal-length ESP packets of one SA in one UDP GSO `sendmsg`;
the receive threads read UDP GRO batches and verify their datagrams one
by one (one that fails never takes the others with it).

Port 4500 is shared with IKE. Three ways to set the backend up:

- It owns the sockets (`udp_port=4500`, the default). Datagrams that start
  with the 4-octet non-ESP marker are IKE: the marker is stripped and the
  rest handed to `ike_receiver(message, source, destination)`; 1-octet
  0xFF NAT keepalives are dropped (RFC 3948 §2.2, §2.3). The daemon then
  sends IKE with `send_ike(message, source, destination)`, which adds the
  marker.
- The daemon opens them and hands them over (`udp_port=None`, then
  `adopt_udp_socket(sock, address, on_other)` per socket, before or after
  `start`): the backend reads and sends ESP on them from its own threads
  as on its own sockets, with IP_PKTINFO to send from the SA's address on
  a wildcard socket, and passes every datagram that is not ESP or a NAT
  keepalive to `on_other(datagram, ancillary, peer)`. This is what
  `qsgw run` does.
- The daemon owns them and reads them itself (`udp_port=None` and
  `datagram_sender` given). It demultiplexes by the non-ESP marker and
  passes every ESP-in-UDP datagram to `receive_esp(datagram, source,
  destination)`; outbound ESP in UDP goes out through
  `datagram_sender(datagram, source, destination)` with `(address, port)`
  tuples. Slower: one Python call chain per packet on the caller's side.

`tun_fd` hands the backend an open packet descriptor instead of a TUN
device it creates itself (tests give it one end of a SOCK_SEQPACKET socket
pair; routes then are the caller's business).

`raw_esp=True` (the default) opens IP protocol 50 raw sockets for SAs
without UDP encapsulation. All callbacks (the event sink, `ike_receiver`,
`datagram_sender`) are called from the packet threads: they must be
thread-safe, e.g. `loop.call_soon_threadsafe`.

Make-before-break rekeying: `add_sa` of an outbound SA makes it the one its
policy (same `reqid`) uses at once, while older inbound SAs keep verifying
until `delete_sa`. `update_sa` replaces an SA's addresses and ports and
keeps its sequence numbers and window when its keys are unchanged.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address

from pyroute2 import IPRoute

from qsgw.crypto import esp_cipher
from qsgw.crypto.api import EspCipher, Random
from qsgw.esp.backend import (
    BackendEvent,
    BackendEventKind,
    BackendEventSink,
    Direction,
    IPAddress,
    IPNetwork,
    PolicySpec,
    SaCounters,
    SaSpec,
)
from qsgw.esp.packet import (
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    EspError,
    InboundSa,
    LifetimeEvent,
    OutboundSa,
    SequenceExhausted,
    VolumeLimits,
)
from qsgw.esp.selectors import CompiledPolicy, most_specific, parse_inner
from qsgw.esp.tun import open_tun
from qsgw.esp.udp import (
    ANCILLARY_SIZE,
    MAX_BATCH_OCTETS,
    MAX_SEGMENTS,
    Ancillary,
    EspUdpSocket,
    OtherHandler,
    Peer,
    Send,
    SendSegments,
    pick,
    segment_size,
    segments,
)

log = logging.getLogger(__name__)

Endpoint = tuple[str, int]
_Source = EspUdpSocket | socket.socket  # what an ingress thread reads
DatagramSender = Callable[[bytes, Endpoint, Endpoint], None]
IkeReceiver = Callable[[bytes, Endpoint, Endpoint], None]

NON_ESP_MARKER = b"\x00\x00\x00\x00"  # RFC 3948 §2.2
NAT_KEEPALIVE = b"\xff"  # RFC 3948 §2.3
IPPROTO_ESP = 50
IPPROTO_NONE = 59  # RFC 4303 §2.6: dummy packets
_RECEIVE_SIZE = 65535
_POLL_MS = 200
_CACHE_LIMIT = 65536
_ACQUIRE_INTERVAL = 1.0
_SOCKET_BUFFER = 8 << 20  # absorbs bursts while the GIL is elsewhere
_TUN_QUEUE = 2000
_INNER_VERSION = {IPPROTO_IPIP: 4, IPPROTO_IPV6: 6}
_NEXT_HEADER = {4: IPPROTO_IPIP, 6: IPPROTO_IPV6}
_SPI = struct.Struct(">I")
_TIMEVAL = struct.Struct("@ll")  # struct timeval
_SEND_TIMEOUT_US = 10_000
_FAMILY_NAMES: dict[int, str] = {socket.AF_INET: "v4", socket.AF_INET6: "v6"}
_UNKNOWN = CompiledPolicy.of(
    PolicySpec(
        Direction.OUTBOUND,
        IPv4Network("0.0.0.0/32"),
        IPv4Network("0.0.0.0/32"),
        IPv4Address(0),
        IPv4Address(0),
        reqid=-1,
    )
)  # stands for "not in the route cache"


@dataclass(slots=True)
class DropCounters:
    """Packets the backend dropped before any SA counted them."""

    unknown_spi: int = 0
    no_policy: int = 0
    no_sa: int = 0
    policy_mismatch: int = 0
    malformed: int = 0
    dummy: int = 0
    send_errors: int = 0
    sequence_exhausted: int = 0
    nat_keepalives: int = 0
    ike_unclaimed: int = 0
    wrong_encapsulation: int = 0
    internal_errors: int = 0


@dataclass(slots=True)
class OffloadCounters:
    """UDP GSO sends and GRO receives that carried more than one packet."""

    gso_sends: int = 0
    gso_packets: int = 0
    gro_receives: int = 0
    gro_packets: int = 0


@dataclass(slots=True)
class _Outbound:
    spec: SaSpec
    sa: OutboundSa
    send: Send
    send_segments: SendSegments | None  # None: one packet per send only
    created: float
    soft_fired: bool = False


@dataclass(slots=True)
class _Inbound:
    spec: SaSpec
    sa: InboundSa
    created: float
    soft_fired: bool = False
    # copied from `spec` for the receive hot path
    reqid: int = field(init=False)
    path: int = field(init=False)

    def __post_init__(self) -> None:
        self.reqid = self.spec.reqid
        encapsulated = self.spec.encapsulation is not None
        self.path = _path(_family(self.spec.destination), encapsulated)


def _path(family: int, encapsulated: bool) -> int:
    """Which socket an SA's packets arrive on: one per SA, so that one
    thread at a time touches its anti-replay window."""
    return family * 2 + encapsulated


def available() -> str:
    """Why this backend cannot run here, or "" if it can."""
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    if os.geteuid() != 0:
        return "a TUN device and raw sockets need root"
    return ""


class UserspaceBackend:
    """`EspBackend` over a TUN device; see the module docstring."""

    name = "userspace"

    def __init__(
        self,
        *,
        tun_name: str = "qsgw0",
        tun_fd: int | None = None,
        mtu: int = 1400,
        udp_port: int | None = 4500,
        raw_esp: bool = True,
        datagram_sender: DatagramSender | None = None,
        ike_receiver: IkeReceiver | None = None,
        random: Random = os.urandom,
        clock: Callable[[], float] = time.monotonic,
        exhaustion_margin: int = 2**24,
    ) -> None:
        self._tun_name = tun_name
        self._given_tun = tun_fd
        self._mtu = mtu
        self._udp_port = udp_port
        self._raw_esp = raw_esp
        self._datagram_sender = datagram_sender
        self._ike_receiver = ike_receiver
        self._random = random
        self._clock = clock
        self._exhaustion_margin = exhaustion_margin

        self.drops = DropCounters()
        self.offloads = OffloadCounters()
        self._events: BackendEventSink = _ignore_event
        self._tun = -1
        self._sockets: dict[tuple[int, int], socket.socket] = {}
        self._udp: list[EspUdpSocket] = []  # owned or handed over, ESP in UDP
        self._started = False
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._control = threading.Lock()

        self._inbound: dict[int, _Inbound] = {}
        self._outbound: dict[tuple[int, IPAddress], _Outbound] = {}
        self._current: dict[int, _Outbound] = {}  # reqid -> SA in use
        self._out_policies: list[CompiledPolicy] = []
        self._out_if_ids: Counter[int] = Counter()  # of the outbound policies
        self._in_policies: dict[int, list[CompiledPolicy]] = {}
        self._route_cache: dict[bytes, CompiledPolicy | None] = {}
        self._acquired: dict[int, float] = {}
        self._spis: set[int] = set()

    # life cycle

    def crypto_drivers(self) -> dict[str, str]:
        """Userspace ESP runs on OpenSSL through the cryptography package."""
        import cryptography
        from cryptography.hazmat.backends.openssl import backend as openssl

        version = openssl.openssl_version_text()
        library = f"{version} (cryptography {cryptography.__version__})"
        return {name: library for name in ("aesgcm16", "chacha20poly1305", "aescbc")}

    def start(self, events: BackendEventSink) -> None:
        self._events = events
        if self._given_tun is None:
            self._tun = open_tun(self._tun_name)
            self._configure_link()
        else:
            self._tun = self._given_tun
            os.set_blocking(self._tun, False)
        self._open_sockets()
        self._spawn(self._egress_loop, "esp-egress")
        for (family, kind), sock in self._sockets.items():
            if kind == socket.SOCK_RAW:
                name = f"esp-ingress-{_FAMILY_NAMES[family]}-raw"
                self._spawn(self._ingress_loop, name, self._drain_raw, sock, family)
        with self._control:
            self._started = True
            for udp in self._udp:
                self._spawn_udp(udp)
        self._spawn(self._lifetime_loop, "esp-lifetimes")
        log.info("userspace ESP backend started on %s", self._tun_name)

    def adopt_udp_socket(
        self, sock: socket.socket, address: IPAddress, on_other: OtherHandler
    ) -> None:
        """Read and send ESP in UDP on a socket the daemon opened (its own
        port 4500, bound to `address`), from this backend's threads.

        The backend owns `sock` from now on (hand it a `dup`) and makes it
        blocking with timeouts. Each datagram that is not ESP (IKE behind
        the non-ESP marker, NAT keepalives, runts) goes to
        `on_other(datagram, ancillary, peer)` on the receiving thread, with
        the control messages (IP_PKTINFO) of the receive."""
        _enlarge_buffers(sock)
        _set_timeouts(sock)
        udp = EspUdpSocket(sock, address, on_other, source_info=True)
        with self._control:
            self._udp.append(udp)
            if self._started:
                self._spawn_udp(udp)
            # SAs installed before the socket came use it from now on
            for entry in self._outbound.values():
                entry.send, entry.send_segments = self._sender(entry.spec)

    def _spawn_udp(self, udp: EspUdpSocket) -> None:
        name = f"esp-ingress-{_FAMILY_NAMES[udp.family]}-udp"
        self._spawn(self._ingress_loop, name, self._drain_udp, udp, udp.family)

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, name=name, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._threads.clear()
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        for udp in self._udp:
            udp.close()
        self._udp.clear()
        self._started = False
        if self._tun >= 0 and self._given_tun is None:
            os.close(self._tun)
        self._tun = -1

    def _configure_link(self) -> None:
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=self._tun_name)[0]
            ipr.link("set", index=index, mtu=self._mtu, txqlen=_TUN_QUEUE)
            ipr.link("set", index=index, state="up")
            self._tun_index = index

    def _open_sockets(self) -> None:
        if self._udp_port is not None:
            for family in (socket.AF_INET, socket.AF_INET6):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(("::" if family == socket.AF_INET6 else "", self._udp_port))
                self._sockets[(family, socket.SOCK_DGRAM)] = sock
        if self._raw_esp:
            for family in (socket.AF_INET, socket.AF_INET6):
                sock = socket.socket(family, socket.SOCK_RAW, IPPROTO_ESP)
                self._sockets[(family, socket.SOCK_RAW)] = sock
        for sock in self._sockets.values():
            _enlarge_buffers(sock)
            _set_timeouts(sock)
        for (owned_family, kind), sock in self._sockets.items():
            if kind == socket.SOCK_DGRAM:
                wildcard = (
                    IPv4Address(0) if owned_family == socket.AF_INET else IPv6Address(0)
                )
                handler = self._owned_handler(sock)
                self._udp.append(
                    EspUdpSocket(sock, wildcard, handler, source_info=False)
                )

    def _owned_handler(self, sock: socket.socket) -> OtherHandler:
        def on_other(datagram: bytes, ancillary: Ancillary, peer: Peer) -> None:
            del ancillary
            self._not_esp(datagram, (peer[0], peer[1]), sock)

        return on_other

    # SAs

    def allocate_spi(self, source: IPAddress, destination: IPAddress) -> int:
        with self._control:
            while True:
                spi = int.from_bytes(self._random(4))
                if spi >= 256 and spi not in self._spis:
                    self._spis.add(spi)
                    return spi

    def add_sa(self, sa: SaSpec) -> None:
        with self._control:
            if sa.direction is Direction.INBOUND:
                self._install_inbound(sa, previous=None)
            else:
                self._install_outbound(sa, previous=None)

    def update_sa(self, sa: SaSpec) -> None:
        with self._control:
            if sa.direction is Direction.INBOUND:
                self._install_inbound(sa, self._inbound.get(sa.spi))
            else:
                # by SPI alone: an update may move the SA to a new address
                # (RFC 4555), and its sequence numbers must carry over
                previous = self._outbound_by_spi(sa.spi)
                if previous is not None:
                    del self._outbound[(sa.spi, previous.spec.destination)]
                self._install_outbound(sa, previous)

    def delete_sa(self, spi: int, destination: IPAddress) -> None:
        with self._control:
            inbound = self._inbound.get(spi)
            if inbound is not None and inbound.spec.destination == destination:
                del self._inbound[spi]
                self._spis.discard(spi)
                return
            outbound = self._outbound.pop((spi, destination), None)
            if outbound is not None:
                self._retire_outbound(outbound)

    def counters(self, spi: int, destination: IPAddress) -> SaCounters:
        inbound = self._inbound.get(spi)
        if inbound is not None and inbound.spec.destination == destination:
            sa = inbound.sa
            return SaCounters(
                sa.octets,
                sa.packets,
                sa.window.top,
                sa.window.size,
                sa.replay_errors,
                sa.integrity_errors,
            )
        outbound = self._outbound.get((spi, destination))
        if outbound is None:
            raise KeyError(f"no SA {spi:#010x} to {destination}")
        return SaCounters(
            outbound.sa.octets, outbound.sa.packets, outbound.sa.sequence, 0
        )

    def _outbound_by_spi(self, spi: int) -> _Outbound | None:
        for (candidate, _), entry in self._outbound.items():
            if candidate == spi:
                return entry
        return None

    def _install_inbound(self, spec: SaSpec, previous: _Inbound | None) -> None:
        if previous is not None and _same_keys(previous.spec, spec):
            kept = _Inbound(spec, previous.sa, previous.created, previous.soft_fired)
            self._inbound[spec.spi] = kept
            return
        sa = InboundSa(
            spec.spi,
            _cipher(spec),
            esn=spec.esn,
            replay_window=spec.replay_window,
            limits=_volume_limits(spec),
            listener=self._lifetime_listener(spec),
        )
        self._inbound[spec.spi] = _Inbound(spec, sa, self._clock())
        self._spis.add(spec.spi)

    def _install_outbound(self, spec: SaSpec, previous: _Outbound | None) -> None:
        if previous is not None and _same_keys(previous.spec, spec):
            sa, created = previous.sa, previous.created
            soft_fired = previous.soft_fired
        else:
            sa = OutboundSa(
                spec.spi,
                _cipher(spec),
                esn=spec.esn,
                limits=_volume_limits(spec),
                listener=self._lifetime_listener(spec),
                random=self._random,
                exhaustion_margin=self._exhaustion_margin,
            )
            created, soft_fired = self._clock(), False
        send, send_segments = self._sender(spec)
        entry = _Outbound(spec, sa, send, send_segments, created, soft_fired)
        self._outbound[(spec.spi, spec.destination)] = entry
        # make-before-break: the newest SA of a policy carries its traffic;
        # an update leaves the choice as it was
        current = self._current.get(spec.reqid)
        if previous is None or current is None or current is previous:
            self._current[spec.reqid] = entry
        self._acquired.pop(spec.reqid, None)

    def _retire_outbound(self, entry: _Outbound) -> None:
        reqid = entry.spec.reqid
        if self._current.get(reqid) is not entry:
            return
        others = [e for e in self._outbound.values() if e.spec.reqid == reqid]
        if others:
            self._current[reqid] = max(others, key=lambda e: e.created)
        else:
            del self._current[reqid]

    def _sender(self, spec: SaSpec) -> tuple[Send, SendSegments | None]:
        """How the SA's packets leave, decided once: addresses and control
        messages are built here, not per packet."""
        destination = str(spec.destination)
        family = _family(spec.destination)
        encapsulation = spec.encapsulation
        if encapsulation is None:
            sock = self._sockets.get((family, socket.SOCK_RAW))
            if sock is None:
                raise ValueError("raw ESP needs raw_esp=True")
            return _send_to(sock, (destination, 0)), None

        target = (destination, encapsulation.destination_port)
        udp = pick(self._udp, spec.source, encapsulation.source_port)
        if udp is not None:
            return udp.sender(spec.source, target)
        if self._datagram_sender is None:
            raise ValueError(f"no UDP socket for ESP from {spec.source}")
        source = (str(spec.source), encapsulation.source_port)
        datagram_sender = self._datagram_sender

        def send(packet: bytes) -> None:
            datagram_sender(packet, source, target)

        return send, None

    # policies and routes

    def add_policy(self, policy: PolicySpec) -> None:
        with self._control:
            compiled = CompiledPolicy.of(policy)
            if policy.direction is Direction.OUTBOUND:
                if self._out_if_ids.keys() - {policy.if_id}:
                    _warn_if_id_overlap(policy, self._out_policies)
                self._out_if_ids[policy.if_id] += 1
                policies = [*self._out_policies, compiled]
                self._out_policies = most_specific(policies)
                self._route_cache = {}
            else:
                entries = self._in_policies.get(policy.reqid, [])
                self._in_policies[policy.reqid] = [*entries, compiled]

    def delete_policy(self, policy: PolicySpec) -> None:
        with self._control:
            if policy.direction is Direction.OUTBOUND:
                kept = [p for p in self._out_policies if p.spec != policy]
                self._out_if_ids[policy.if_id] -= len(self._out_policies) - len(kept)
                if self._out_if_ids[policy.if_id] <= 0:
                    del self._out_if_ids[policy.if_id]
                self._out_policies = kept
                self._route_cache = {}
                return
            entries = self._in_policies.get(policy.reqid, [])
            kept = [p for p in entries if p.spec != policy]
            if kept:
                self._in_policies[policy.reqid] = kept
            else:
                self._in_policies.pop(policy.reqid, None)

    def install_route(self, remote: IPNetwork, source: IPAddress, if_id: int) -> None:
        with IPRoute() as ipr:
            ipr.route(
                "replace",
                dst=str(remote),
                oif=self._tun_index,
                prefsrc=str(source),
                family=_family(remote.network_address),
            )

    def remove_route(self, remote: IPNetwork, if_id: int) -> None:
        with IPRoute() as ipr, contextlib.suppress(Exception):
            ipr.route(
                "del",
                dst=str(remote),
                oif=self._tun_index,
                family=_family(remote.network_address),
            )

    # the daemon's side of port 4500

    def receive_esp(
        self, datagram: bytes, source: Endpoint, destination: Endpoint
    ) -> None:
        """An ESP-in-UDP datagram (no non-ESP marker) the daemon received."""
        family = socket.AF_INET6 if ":" in destination[0] else socket.AF_INET
        self._receive_esp(datagram, _path(family, True))

    def send_ike(self, message: bytes, source: Endpoint, destination: Endpoint) -> None:
        """Send an IKE message from port 4500, adding the non-ESP marker."""
        family = socket.AF_INET6 if ":" in destination[0] else socket.AF_INET
        sock = self._sockets[(family, socket.SOCK_DGRAM)]
        sock.sendto(NON_ESP_MARKER + message, destination)

    # TUN -> network

    def _egress_loop(self) -> None:
        poller = select.poll()
        poller.register(self._tun, select.POLLIN)
        # a non-blocking FileIO returns None once drained, where os.read
        # would raise: no exception per wake-up
        read = io.FileIO(self._tun, "r", closefd=False).read
        size, stopped = self._mtu + 64, self._stop.is_set
        while not stopped():
            if not poller.poll(_POLL_MS):
                continue
            try:
                self._drain_tun(read, size)
            except Exception:  # a bug must not stop the data plane
                self.drops.internal_errors += 1
                log.exception("outbound packet processing failed")

    def _drain_tun(self, read: Callable[[int], bytes | None], size: int) -> None:
        """Protect every packet waiting on the TUN device. A run of ESP
        packets of one SA and one length (the last may be shorter) leaves
        in one UDP GSO send; one TUN read per packet remains."""
        protect, flush = self._protect, self._flush
        run: list[bytes] = []
        owner: _Outbound | None = None
        segment = limit = 0
        inner = read(size)
        while inner:
            protected = protect(inner)
            inner = read(size)
            if protected is None:
                continue
            entry, packet = protected
            length = len(packet)
            if entry is owner and length <= segment and len(run) < limit:
                run.append(packet)
                if length < segment:  # a shorter packet ends a run
                    flush(entry, run, segment)
                    run, owner = [], None
                continue
            if owner is not None:
                flush(owner, run, segment)
            run, owner, segment = [packet], entry, length
            limit = _run_limit(length) if entry.send_segments else 1
        if owner is not None:
            flush(owner, run, segment)

    def _protect(self, inner: bytes) -> tuple[_Outbound, bytes] | None:
        """The SA and ESP packet for an inner packet, or None (a drop)."""
        version = inner[0] >> 4
        if version == 4:
            destination = inner[16:20]
        elif version == 6:
            destination = inner[24:40]
        else:
            self.drops.malformed += 1
            return None
        cache = self._route_cache
        policy = cache.get(destination, _UNKNOWN)
        if policy is _UNKNOWN or (policy is not None and not policy.any_protocol):
            policy = self._lookup_policy(inner, destination)
        if policy is None:
            self.drops.no_policy += 1
            return None
        entry = self._current.get(policy.spec.reqid)
        if entry is None:
            self._acquire(policy)
            return None
        try:
            return entry, entry.sa.encapsulate(inner, _NEXT_HEADER[version])
        except SequenceExhausted:
            self.drops.sequence_exhausted += 1
            return None

    def _flush(self, entry: _Outbound, run: list[bytes], segment: int) -> None:
        send_segments = entry.send_segments
        try:
            if len(run) > 1 and send_segments is not None:
                if send_segments(run, segment):
                    offloads = self.offloads
                    offloads.gso_sends += 1
                    offloads.gso_packets += len(run)
            else:
                for packet in run:
                    entry.send(packet)
        except OSError:  # a full send buffer (SO_SNDTIMEO), no route, ...
            self.drops.send_errors += len(run)

    def _lookup_policy(self, inner: bytes, destination: bytes) -> CompiledPolicy | None:
        header = parse_inner(inner)
        if header is None:
            return None
        candidates = [p for p in self._out_policies if p.matches_outbound(header)]
        chosen = candidates[0] if candidates else None
        if len(self._route_cache) >= _CACHE_LIMIT:
            self._route_cache = {}
        if chosen is None or chosen.any_protocol:
            self._route_cache[destination] = chosen
        return chosen

    def _acquire(self, policy: CompiledPolicy) -> None:
        self.drops.no_sa += 1
        now = self._clock()
        reqid = policy.spec.reqid
        if now - self._acquired.get(reqid, -_ACQUIRE_INTERVAL) < _ACQUIRE_INTERVAL:
            return
        self._acquired[reqid] = now
        event = BackendEvent(
            BackendEventKind.ACQUIRE,
            destination=policy.spec.tunnel_destination,
            reqid=reqid,
        )
        self._events(event)

    # network -> TUN

    def _ingress_loop(
        self, drain: Callable[[_Source, int], None], source: _Source, family: int
    ) -> None:
        """One thread per socket, blocked in the kernel's receive: one
        system call per packet (or per GRO batch), and none that fails
        while packets flow."""
        while not self._stop.is_set():
            try:
                drain(source, family)
            except BlockingIOError:
                pass  # the receive timeout: time to look at the stop flag
            except OSError:
                if self._stop.is_set():
                    return  # closed under us
                self.drops.internal_errors += 1
                log.exception("receiving ESP failed")
            except Exception:  # a bug must not stop the data plane
                self.drops.internal_errors += 1
                log.exception("inbound packet processing failed")

    def _drain_udp(self, udp: _Source, family: int) -> None:
        assert isinstance(udp, EspUdpSocket)
        receive, receive_esp = udp.sock.recvmsg, self._receive_esp
        stopped, marker, path = self._stop.is_set, NON_ESP_MARKER, _path(family, True)
        while not stopped():
            data, ancillary, _flags, peer = receive(_RECEIVE_SIZE, ANCILLARY_SIZE)
            size = segment_size(ancillary, len(data)) if ancillary else len(data)
            if size < len(data):
                self._receive_batch(udp, data, size, ancillary, peer)
            elif len(data) < 8 or data.startswith(marker):
                self._other(udp, data, ancillary, peer)
            else:
                receive_esp(data, path)

    def _receive_batch(
        self,
        udp: EspUdpSocket,
        data: bytes,
        size: int,
        ancillary: Ancillary,
        peer: Peer,
    ) -> None:
        """The datagrams of one GRO receive: one that fails never takes
        the others with it."""
        path, marker = _path(udp.family, True), NON_ESP_MARKER
        offloads = self.offloads
        offloads.gro_receives += 1
        offloads.gro_packets += -(-len(data) // size)
        for datagram in segments(data, size):
            try:
                if len(datagram) < 8 or datagram[:4] == marker:
                    self._other(udp, bytes(datagram), ancillary, peer)
                else:
                    self._receive_esp(datagram, path)
            except Exception:  # a bug must not stop the data plane
                self.drops.internal_errors += 1
                log.exception("inbound packet processing failed")

    def _other(
        self, udp: EspUdpSocket, datagram: bytes, ancillary: Ancillary, peer: Peer
    ) -> None:
        if datagram == NAT_KEEPALIVE:
            self.drops.nat_keepalives += 1
        else:
            udp.on_other(datagram, ancillary, peer)

    def _drain_raw(self, sock: _Source, family: int) -> None:
        assert isinstance(sock, socket.socket)
        receive, receive_esp = sock.recv, self._receive_esp
        stopped, path = self._stop.is_set, _path(family, False)
        while not stopped():
            packet = receive(_RECEIVE_SIZE)
            if family == socket.AF_INET:
                # raw IPv4 sockets deliver the IP header too
                packet = packet[(packet[0] & 0x0F) * 4 :]
            receive_esp(packet, path)

    def _not_esp(
        self, datagram: bytes, source: tuple[str, int], sock: socket.socket
    ) -> None:
        if datagram == NAT_KEEPALIVE:
            self.drops.nat_keepalives += 1
            return
        if datagram[:4] != NON_ESP_MARKER or self._ike_receiver is None:
            self.drops.ike_unclaimed += 1
            return
        local: Endpoint = sock.getsockname()[:2]
        self._ike_receiver(datagram[4:], (source[0], source[1]), local)

    def _receive_esp(self, packet: bytes | memoryview, path: int) -> None:
        if len(packet) < 8:
            self.drops.malformed += 1
            return
        entry = self._inbound.get(_SPI.unpack_from(packet)[0])
        if entry is None:
            self.drops.unknown_spi += 1
            return
        if entry.path != path:
            self.drops.wrong_encapsulation += 1
            return
        try:
            next_header, inner = entry.sa.decapsulate(packet)
        except EspError:
            return  # counted by the SA

        # RFC 4301 §5.2: the inner packet must match the SA's selectors
        if len(inner) and inner[0] >> 4 == _INNER_VERSION.get(next_header):
            for policy in self._in_policies.get(entry.reqid, ()):
                if policy.admits_inbound(inner):
                    self._write_tun(inner)
                    return
            self.drops.policy_mismatch += 1
        elif next_header == IPPROTO_NONE:
            self.drops.dummy += 1
        else:
            self.drops.malformed += 1

    def _write_tun(self, inner: memoryview) -> None:
        try:
            os.write(self._tun, inner)
        except OSError:  # a full queue, or a link going down
            self.drops.send_errors += 1

    # lifetimes

    def _lifetime_listener(self, spec: SaSpec) -> Callable[[LifetimeEvent], None]:
        def listener(event: LifetimeEvent) -> None:
            self._lifetime_reached(spec, event)

        return listener

    def _lifetime_reached(self, spec: SaSpec, event: LifetimeEvent) -> None:
        kind = {
            LifetimeEvent.SOFT: BackendEventKind.SOFT_EXPIRE,
            LifetimeEvent.HARD: BackendEventKind.HARD_EXPIRE,
            LifetimeEvent.SEQUENCE_EXHAUSTION: BackendEventKind.SEQUENCE_EXHAUSTION,
        }[event]
        if kind is BackendEventKind.HARD_EXPIRE:
            self.delete_sa(spec.spi, spec.destination)
        self._events(BackendEvent(kind, spec.spi, spec.destination, spec.reqid))

    def _lifetime_loop(self) -> None:
        while not self._stop.wait(0.5):
            now = self._clock()
            for spec, created, soft_fired in list(self._ages()):
                self._check_age(spec, now - created, soft_fired)

    def _ages(self) -> Iterator[tuple[SaSpec, float, bool]]:
        for inbound in list(self._inbound.values()):
            yield inbound.spec, inbound.created, inbound.soft_fired
        for outbound in list(self._outbound.values()):
            yield outbound.spec, outbound.created, outbound.soft_fired

    def _check_age(self, spec: SaSpec, age: float, soft_fired: bool) -> None:
        lifetime = spec.lifetime
        if lifetime.hard_seconds and age >= lifetime.hard_seconds:
            self._lifetime_reached(spec, LifetimeEvent.HARD)
        elif lifetime.soft_seconds and age >= lifetime.soft_seconds and not soft_fired:
            self._mark_soft(spec)
            self._lifetime_reached(spec, LifetimeEvent.SOFT)

    def _mark_soft(self, spec: SaSpec) -> None:
        inbound = self._inbound.get(spec.spi)
        if inbound is not None and inbound.spec is spec:
            inbound.soft_fired = True
        outbound = self._outbound.get((spec.spi, spec.destination))
        if outbound is not None:
            outbound.soft_fired = True


def _warn_if_id_overlap(new: PolicySpec, policies: list[CompiledPolicy]) -> None:
    """One TUN device carries every tunnel here: selectors that overlap with
    another interface ID are not kept apart (the most specific wins), as
    the kernel data plane's XFRM interfaces would. Said, not refused, so a
    configuration meant for the kernel still runs."""
    for existing in policies:
        old = existing.spec
        if (
            old.if_id != new.if_id
            and old.local.version == new.local.version
            and old.remote.version == new.remote.version
            and old.local.overlaps(new.local)
            and old.remote.overlaps(new.remote)
        ):
            log.warning(
                "userspace data plane: traffic selectors %s === %s (if_id %d) "
                "overlap %s === %s (if_id %d); only the kernel data plane keeps "
                "them apart, here the most specific policy carries the traffic",
                new.local,
                new.remote,
                new.if_id,
                old.local,
                old.remote,
                old.if_id,
            )
            return


def _run_limit(segment: int) -> int:
    """How many ESP packets of `segment` octets one GSO send may carry."""
    return max(1, min(MAX_SEGMENTS, MAX_BATCH_OCTETS // segment))


def _send_to(sock: socket.socket, target: tuple[str, int]) -> Send:
    sendto = sock.sendto

    def send(packet: bytes) -> object:
        return sendto(packet, target)

    return send


def _enlarge_buffers(sock: socket.socket) -> None:
    for option, forced in (
        (socket.SO_RCVBUF, 33),  # SO_RCVBUFFORCE: past rmem_max, as root
        (socket.SO_SNDBUF, 32),  # SO_SNDBUFFORCE
    ):
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced, _SOCKET_BUFFER)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)


def _set_timeouts(sock: socket.socket) -> None:
    """Blocking calls that give up after a while: a receive wakes the
    thread at least every `_POLL_MS` to look at the stop flag, and a send
    into a full buffer fails (a drop) rather than stalling the egress loop."""
    sock.setblocking(True)
    for option, microseconds in (
        (socket.SO_RCVTIMEO, _POLL_MS * 1000),
        (socket.SO_SNDTIMEO, _SEND_TIMEOUT_US),
    ):
        seconds, rest = divmod(microseconds, 1_000_000)
        sock.setsockopt(socket.SOL_SOCKET, option, _TIMEVAL.pack(seconds, rest))


def _ignore_event(event: BackendEvent) -> None:
    del event


def _cipher(spec: SaSpec) -> EspCipher:
    integrity = spec.integrity.value
    keys = spec.encryption_key + spec.integrity_key
    return esp_cipher(spec.algorithm.value, spec.key_bits, integrity, keys)


def _volume_limits(spec: SaSpec) -> VolumeLimits:
    lifetime = spec.lifetime
    return VolumeLimits(
        lifetime.soft_bytes,
        lifetime.hard_bytes,
        lifetime.soft_packets,
        lifetime.hard_packets,
    )


def _same_keys(old: SaSpec, new: SaSpec) -> bool:
    return (
        old.algorithm == new.algorithm
        and old.key_bits == new.key_bits
        and old.encryption_key == new.encryption_key
        and old.integrity == new.integrity
        and old.integrity_key == new.integrity_key
        and old.esn == new.esn
    )


def _family(address: IPv4Address | IPv6Address) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6
