"""The Linux kernel data plane: ESP SAs and policies in XFRM, over netlink.

SAs and policies go to the kernel as XFRM netlink messages declared on
pyroute2's message classes (`qsgw.esp.xfrm`); links and routes go through
pyroute2's IPRoute. pyroute2 runs an event loop of its own, which cannot
nest in the daemon's, so every netlink call runs on one worker thread of this
backend; callers see plain synchronous methods.

Tunnels with overlapping traffic selectors are kept apart by XFRM interface
IDs: a Child SA with a non-zero `if_id` gets its SAs and policies tagged with
it and its routes through an XFRM interface `qsgw<if_id>`.

The kernel's EXPIRE (soft and hard lifetimes) and ACQUIRE (traffic on a
policy without SA) notifications are read on a second socket by a reader
thread and handed to the event sink from that thread.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from ipaddress import ip_address
from typing import Any, TypeVar

from qsgw.esp import xfrm
from qsgw.esp.backend import (
    BackendEvent,
    BackendEventKind,
    BackendEventSink,
    Direction,
    EspAlgorithm,
    EspIntegrity,
    IPAddress,
    IPNetwork,
    Lifetime,
    PolicySpec,
    SaCounters,
    SaSpec,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
_NLMSG_HEADER = struct.Struct("=IHHII")
NETLINK_XFRM = 6

# the kernel crypto API's names; the RFC 4106/7634 AEADs carry a 4-octet
# salt after the key, and their ICV is 16 octets
KERNEL_ALGORITHM_NAMES = {
    EspAlgorithm.AES_GCM_16: "rfc4106(gcm(aes))",
    EspAlgorithm.CHACHA20_POLY1305: "rfc7539esp(chacha20,poly1305)",
    EspAlgorithm.AES_CBC: "cbc(aes)",
}
_AEADS = (EspAlgorithm.AES_GCM_16, EspAlgorithm.CHACHA20_POLY1305)
_AUTH_NAMES = {
    EspIntegrity.HMAC_SHA2_256_128: (b"hmac(sha256)", 128),
    EspIntegrity.HMAC_SHA2_384_192: (b"hmac(sha384)", 192),
    EspIntegrity.HMAC_SHA2_512_256: (b"hmac(sha512)", 256),
}
MAX_REPLAY_WINDOW = 4096


class KernelError(RuntimeError):
    """The kernel refused an XFRM or routing request; says which and why."""

    def __init__(self, operation: str, code: int, detail: str = "") -> None:
        reason = os.strerror(code) if code else "failed"
        text = f"kernel refused {operation}: {reason}"
        super().__init__(f"{text} ({detail})" if detail else text)
        self.errno = code


def kernel_has_esp() -> bool:
    """Whether this kernel accepts an ESP state (the `auto` rule's probe).

    Installs a throw-away AES-GCM SA between loopback addresses under an SPI
    the kernel allocates, and deletes it again; any refusal means no.
    """
    try:
        channel = XfrmChannel()
    except OSError:
        return False
    loopback = ip_address("127.0.0.1")
    try:
        spi = channel.allocate_spi(loopback, loopback)
    except (KernelError, OSError):
        channel.close()
        return False
    probe = SaSpec(
        spi=spi,
        direction=Direction.INBOUND,
        source=loopback,
        destination=loopback,
        algorithm=EspAlgorithm.AES_GCM_16,
        encryption_key=os.urandom(20),
        key_bits=128,
    )
    try:
        channel.request(build_sa(probe), xfrm.XFRM_MSG_UPDSA, NLM_F_ACK, "probe")
        return True
    except (KernelError, OSError):
        return False
    finally:
        with contextlib.suppress(KernelError, OSError):
            channel.delete_sa(spi, loopback)
        channel.close()


def available() -> str | None:
    """Why this data plane cannot run here, or None when it can."""
    if kernel_has_esp():
        return None
    return "this kernel refuses ESP states (built without CONFIG_INET_ESP?)"


class XfrmChannel:
    """One NETLINK_XFRM socket for requests, answered before the next."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def request(
        self, msg: Any, msg_type: int, flags: int, operation: str
    ) -> list[bytes]:
        """Send one request; the replies' raw messages, or KernelError."""
        self._seq += 1
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = NLM_F_REQUEST | flags
        msg["header"]["sequence_number"] = self._seq
        msg.encode()
        self._sock.send(bytes(msg.data))
        return self._collect(operation, expect_ack=bool(flags & NLM_F_ACK))

    def _collect(self, operation: str, *, expect_ack: bool) -> list[bytes]:
        """Replies up to the ack, or the single answer of a GET/ALLOCSPI."""
        replies: list[bytes] = []
        while True:
            data = self._sock.recv(65536)
            for msg_type, seq, chunk in split_messages(data):
                if seq != self._seq:
                    continue
                if msg_type == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", chunk, 16)[0]
                    if code:
                        raise KernelError(operation, code)
                    return replies
                if msg_type == NLMSG_DONE:
                    return replies
                replies.append(chunk)
                if not expect_ack:
                    return replies

    # -- requests -------------------------------------------------------

    def allocate_spi(self, source: IPAddress, destination: IPAddress) -> int:
        msg = xfrm.xfrm_userspi_info()
        _fill_sa_info(msg, destination, source, 0)
        msg["min"], msg["max"] = 0x100, 0xFFFFFFFF
        reply = self.request(msg, xfrm.XFRM_MSG_ALLOCSPI, 0, "SPI allocation")
        sa = _decode(xfrm.xfrm_usersa_info, reply)
        return int(sa["id_spi"])

    def delete_sa(self, spi: int, destination: IPAddress) -> None:
        msg = xfrm.xfrm_usersa_id()
        msg["daddr"] = xfrm.pack_address(destination)
        msg["spi"] = spi
        msg["family"] = xfrm.family_of(destination)
        msg["proto"] = xfrm.IPPROTO_ESP
        self.request(msg, xfrm.XFRM_MSG_DELSA, NLM_F_ACK, f"SA {spi:#010x} delete")

    def get_sa(self, spi: int, destination: IPAddress) -> Any:
        msg = xfrm.xfrm_usersa_id()
        msg["daddr"] = xfrm.pack_address(destination)
        msg["spi"] = spi
        msg["family"] = xfrm.family_of(destination)
        msg["proto"] = xfrm.IPPROTO_ESP
        reply = self.request(msg, xfrm.XFRM_MSG_GETSA, 0, f"SA {spi:#010x} lookup")
        return _decode(xfrm.xfrm_usersa_info, reply)


def split_messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, sequence number, whole message) for each message in `data`."""
    offset = 0
    while offset + _NLMSG_HEADER.size <= len(data):
        length, msg_type, _flags, seq, _pid = _NLMSG_HEADER.unpack_from(data, offset)
        if length < _NLMSG_HEADER.size:
            return
        yield msg_type, seq, data[offset : offset + length]
        offset += (length + 3) & ~3


def _decode(cls: Callable[[bytes], Any], replies: list[bytes]) -> Any:
    if not replies:
        raise KernelError("reply decoding", errno.ENODATA)
    msg = cls(replies[0])
    msg.decode()
    return msg


def _fill_sa_info(
    msg: Any, destination: IPAddress, source: IPAddress, spi: int
) -> None:
    msg["id_daddr"] = xfrm.pack_address(destination)
    msg["id_spi"] = spi
    msg["id_proto"] = xfrm.IPPROTO_ESP
    msg["saddr"] = xfrm.pack_address(source)
    msg["family"] = xfrm.family_of(destination)
    msg["mode"] = xfrm.XFRM_MODE_TUNNEL
    _fill_lifetime(msg, Lifetime())


def _limit(value: int) -> int:
    return value if value > 0 else xfrm.XFRM_INF


def _fill_lifetime(msg: Any, lifetime: Lifetime) -> None:
    msg["lft_soft_byte_limit"] = _limit(lifetime.soft_bytes)
    msg["lft_hard_byte_limit"] = _limit(lifetime.hard_bytes)
    msg["lft_soft_packet_limit"] = _limit(lifetime.soft_packets)
    msg["lft_hard_packet_limit"] = _limit(lifetime.hard_packets)
    msg["lft_soft_add_expires_seconds"] = lifetime.soft_seconds
    msg["lft_hard_add_expires_seconds"] = lifetime.hard_seconds


def build_sa(sa: SaSpec) -> Any:
    """The NEWSA/UPDSA message for `sa` (keys go only into this message)."""
    msg = xfrm.xfrm_usersa_info()
    _fill_sa_info(msg, sa.destination, sa.source, sa.spi)
    _fill_lifetime(msg, sa.lifetime)
    msg["reqid"] = sa.reqid
    # the inner family may differ from the outer one (IPv4 in IPv6 and back)
    msg["flags"] = xfrm.XFRM_STATE_AF_UNSPEC | (xfrm.XFRM_STATE_ESN if sa.esn else 0)
    attrs: list[tuple[str, Any]] = [_algorithm_attr(sa)]
    if sa.integrity is not EspIntegrity.NONE:
        name, trunc = _AUTH_NAMES[sa.integrity]
        attrs.append(
            (
                "XFRMA_ALG_AUTH_TRUNC",
                {
                    "alg_name": name,
                    "alg_key_len": len(sa.integrity_key) * 8,
                    "alg_trunc_len": trunc,
                    "alg_key": sa.integrity_key,
                },
            )
        )
    attrs.append(("XFRMA_REPLAY_ESN_VAL", _replay_state(sa.replay_window)))
    if sa.encapsulation is not None:
        attrs.append(
            (
                "XFRMA_ENCAP",
                {
                    "encap_type": xfrm.UDP_ENCAP_ESPINUDP,
                    "encap_sport": sa.encapsulation.source_port,
                    "encap_dport": sa.encapsulation.destination_port,
                    "encap_oa": bytes(16),
                },
            )
        )
    if sa.if_id:
        attrs.append(("XFRMA_IF_ID", sa.if_id))
    msg["attrs"] = attrs
    return msg


def _algorithm_attr(sa: SaSpec) -> tuple[str, Any]:
    name = KERNEL_ALGORITHM_NAMES[sa.algorithm].encode()
    if sa.algorithm in _AEADS:
        return (
            "XFRMA_ALG_AEAD",
            {
                "alg_name": name,
                "alg_key_len": len(sa.encryption_key) * 8,
                "alg_icv_len": 128,
                "alg_key": sa.encryption_key,
            },
        )
    return (
        "XFRMA_ALG_CRYPT",
        {
            "alg_name": name,
            "alg_key_len": len(sa.encryption_key) * 8,
            "alg_key": sa.encryption_key,
        },
    )


def _replay_state(window: int) -> dict[str, Any]:
    # a window of at least one: the kernel refuses ESN without replay checks
    window = max(1, min(window, MAX_REPLAY_WINDOW))
    words = (window + 31) // 32
    return {
        "bmp_len": words,
        "oseq": 0,
        "seq": 0,
        "oseq_hi": 0,
        "seq_hi": 0,
        "replay_window": window,
        "bmp": bytes(4 * words),
    }


def _kernel_directions(direction: Direction) -> tuple[int, ...]:
    if direction is Direction.OUTBOUND:
        return (xfrm.XFRM_POLICY_OUT,)
    # forwarded traffic (the gateway's real job) needs FWD besides IN
    return (xfrm.XFRM_POLICY_IN, xfrm.XFRM_POLICY_FWD)


def _fill_selector(msg: Any, policy: PolicySpec) -> None:
    outbound = policy.direction is Direction.OUTBOUND
    source, destination = (
        (policy.local, policy.remote) if outbound else (policy.remote, policy.local)
    )
    source_ports, destination_ports = (
        (policy.local_ports, policy.remote_ports)
        if outbound
        else (policy.remote_ports, policy.local_ports)
    )
    msg["sel_saddr"] = xfrm.pack_address(source.network_address)
    msg["sel_daddr"] = xfrm.pack_address(destination.network_address)
    msg["sel_prefixlen_s"] = source.prefixlen
    msg["sel_prefixlen_d"] = destination.prefixlen
    msg["sel_family"] = xfrm.family_of(source.network_address)
    msg["sel_proto"] = policy.ip_protocol
    msg["sel_sport"], msg["sel_sport_mask"] = _port_match(source_ports)
    msg["sel_dport"], msg["sel_dport_mask"] = _port_match(destination_ports)


def _port_match(ports: tuple[int, int]) -> tuple[int, int]:
    low, high = ports
    if (low, high) == (0, 65535):
        return 0, 0
    if low == high:
        return low, 0xFFFF
    raise KernelError(
        "policy installation",
        errno.EINVAL,
        f"XFRM selectors take one port or all, not {low}-{high}",
    )


def _priority(policy: PolicySpec) -> int:
    # more specific selectors win: a lower number is a higher priority
    return 100_000 - 256 * (policy.local.prefixlen + policy.remote.prefixlen)


def build_policy(policy: PolicySpec, kernel_direction: int) -> Any:
    msg = xfrm.xfrm_userpolicy_info()
    _fill_selector(msg, policy)
    msg["lft_soft_byte_limit"] = xfrm.XFRM_INF
    msg["lft_hard_byte_limit"] = xfrm.XFRM_INF
    msg["lft_soft_packet_limit"] = xfrm.XFRM_INF
    msg["lft_hard_packet_limit"] = xfrm.XFRM_INF
    msg["priority"] = _priority(policy)
    msg["dir"] = kernel_direction
    msg["action"] = xfrm.XFRM_POLICY_ALLOW
    template = {
        "id_daddr": xfrm.pack_address(policy.tunnel_destination),
        "id_spi": 0,
        "id_proto": xfrm.IPPROTO_ESP,
        "family": xfrm.family_of(policy.tunnel_destination),
        "saddr": xfrm.pack_address(policy.tunnel_source),
        "reqid": policy.reqid,
        "mode": xfrm.XFRM_MODE_TUNNEL,
        "share": 0,
        "optional": 0,
        "aalgos": 0xFFFFFFFF,
        "ealgos": 0xFFFFFFFF,
        "calgos": 0xFFFFFFFF,
    }
    attrs: list[tuple[str, Any]] = [("XFRMA_TMPL", template)]
    if policy.if_id:
        attrs.append(("XFRMA_IF_ID", policy.if_id))
    msg["attrs"] = attrs
    return msg


def build_policy_id(policy: PolicySpec, kernel_direction: int) -> Any:
    msg = xfrm.xfrm_userpolicy_id()
    _fill_selector(msg, policy)
    msg["dir"] = kernel_direction
    if policy.if_id:
        msg["attrs"] = [("XFRMA_IF_ID", policy.if_id)]
    return msg


class KernelBackend:
    """EspBackend on Linux XFRM; see the module docstring."""

    name = "kernel"

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._channel: XfrmChannel | None = None
        self._larval: set[tuple[int, IPAddress]] = set()
        self._policies: list[PolicySpec] = []
        self._events: BackendEventSink | None = None
        self._monitor: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ipr: Any = None

    def crypto_drivers(self) -> dict[str, str]:
        """Which kernel driver carries each ESP algorithm (QAT shows here)."""
        return {
            algorithm.value: crypto_driver(name) or "not loaded"
            for algorithm, name in KERNEL_ALGORITHM_NAMES.items()
        }

    # -- lifecycle ------------------------------------------------------

    def start(self, events: BackendEventSink) -> None:
        self._events = events
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="qsgw-xfrm")
        self._channel = self._run(XfrmChannel)
        self._monitor = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
        groups = (1 << (xfrm.XFRMNLGRP_ACQUIRE - 1)) | (
            1 << (xfrm.XFRMNLGRP_EXPIRE - 1)
        )
        self._monitor.bind((0, groups))
        self._monitor.settimeout(0.5)
        self._reader = threading.Thread(
            target=self._read_notifications, name="qsgw-xfrm-events", daemon=True
        )
        self._reader.start()

    def close(self) -> None:
        self._stopping.set()
        if self._reader is not None:
            self._reader.join(timeout=2)
        if self._monitor is not None:
            self._monitor.close()
        if self._pool is not None:
            self._run(self._close_in_worker)
            self._pool.shutdown(wait=True)
            self._pool = None

    def _close_in_worker(self) -> None:
        if self._channel is not None:
            self._channel.close()
        if self._ipr is not None:
            self._ipr.close()

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            raise RuntimeError("kernel backend used before start()")
        return self._pool.submit(fn, *args).result()

    @property
    def _xfrm(self) -> XfrmChannel:
        assert self._channel is not None
        return self._channel

    # -- SAs ------------------------------------------------------------

    def allocate_spi(self, source: IPAddress, destination: IPAddress) -> int:
        spi = self._run(self._xfrm.allocate_spi, source, destination)
        self._larval.add((spi, destination))
        return spi

    def add_sa(self, sa: SaSpec) -> None:
        # an SPI the kernel allocated sits there as a larval SA: update it
        key = (sa.spi, sa.destination)
        larval = key in self._larval
        msg_type = xfrm.XFRM_MSG_UPDSA if larval else xfrm.XFRM_MSG_NEWSA
        flags = NLM_F_ACK | (0 if larval else NLM_F_CREATE | NLM_F_EXCL)
        operation = f"SA {sa.spi:#010x} installation"
        self._run(self._xfrm.request, build_sa(sa), msg_type, flags, operation)
        self._larval.discard(key)
        log.debug("installed %r", sa)

    def update_sa(self, sa: SaSpec) -> None:
        operation = f"SA {sa.spi:#010x} update"
        self._run(
            self._xfrm.request, build_sa(sa), xfrm.XFRM_MSG_UPDSA, NLM_F_ACK, operation
        )

    def delete_sa(self, spi: int, destination: IPAddress) -> None:
        self._larval.discard((spi, destination))
        self._run(self._xfrm.delete_sa, spi, destination)

    def counters(self, spi: int, destination: IPAddress) -> SaCounters:
        sa = self._run(self._xfrm.get_sa, spi, destination)
        replay = sa.get_attr("XFRMA_REPLAY_ESN_VAL") or {}
        outbound = int(replay.get("oseq", 0)) | int(replay.get("oseq_hi", 0)) << 32
        inbound = int(replay.get("seq", 0)) | int(replay.get("seq_hi", 0)) << 32
        return SaCounters(
            bytes=int(sa["cur_bytes"]),
            packets=int(sa["cur_packets"]),
            sequence=max(outbound, inbound),
            replay_window=int(replay.get("replay_window", sa["replay_window"])),
            replay_errors=int(sa["stats_replay"]),
            integrity_errors=int(sa["stats_integrity_failed"]),
        )

    # -- policies -------------------------------------------------------

    def add_policy(self, policy: PolicySpec) -> None:
        for direction in _kernel_directions(policy.direction):
            msg = build_policy(policy, direction)
            self._run(
                self._xfrm.request,
                msg,
                xfrm.XFRM_MSG_UPDPOLICY,
                NLM_F_ACK | NLM_F_CREATE,
                "policy installation",
            )
        self._policies.append(policy)

    def delete_policy(self, policy: PolicySpec) -> None:
        for direction in _kernel_directions(policy.direction):
            msg = build_policy_id(policy, direction)
            try:
                self._run(
                    self._xfrm.request,
                    msg,
                    xfrm.XFRM_MSG_DELPOLICY,
                    NLM_F_ACK,
                    "policy removal",
                )
            except KernelError as e:
                if e.errno != errno.ENOENT:
                    raise
        if policy in self._policies:
            self._policies.remove(policy)

    # -- routes ---------------------------------------------------------

    def install_route(self, remote: IPNetwork, source: IPAddress, if_id: int) -> None:
        self._run(self._install_route, remote, source, if_id)

    def remove_route(self, remote: IPNetwork, if_id: int) -> None:
        self._run(self._remove_route, remote, if_id)

    def _iproute(self) -> Any:
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        return self._ipr

    def _install_route(self, remote: IPNetwork, source: IPAddress, if_id: int) -> None:
        ipr = self._iproute()
        oif = self._xfrm_interface(if_id) if if_id else self._outer_interface(remote)
        # tunnels with overlapping selectors each get their route to the
        # same prefix, told apart by metric; an oif (or VRF) picks one
        try:
            ipr.route(
                "replace",
                dst=str(remote),
                oif=oif,
                prefsrc=str(source),
                priority=if_id,
                family=xfrm.family_of(remote.network_address),
            )
        except Exception as e:  # pyroute2 raises NetlinkError
            code = getattr(e, "code", errno.EINVAL)
            raise KernelError(f"route to {remote}", code) from None

    def _remove_route(self, remote: IPNetwork, if_id: int) -> None:
        ipr = self._iproute()
        try:
            ipr.route(
                "del",
                dst=str(remote),
                priority=if_id,
                family=xfrm.family_of(remote.network_address),
            )
        except Exception as e:
            if getattr(e, "code", 0) != errno.ESRCH:
                raise KernelError(f"route removal for {remote}", errno.EINVAL) from None

    def _outer_interface(self, remote: IPNetwork) -> int:
        """The interface that reaches the tunnel endpoint serving `remote`."""
        for policy in self._policies:
            if policy.direction is Direction.OUTBOUND and policy.remote == remote:
                found = self._iproute().route("get", dst=str(policy.tunnel_destination))
                return int(found[0].get_attr("RTA_OIF"))
        raise KernelError(
            f"route to {remote}", errno.ENOENT, "no outbound policy covers it"
        )

    def _xfrm_interface(self, if_id: int) -> int:
        ipr = self._iproute()
        name = f"qsgw{if_id}"
        found = ipr.link_lookup(ifname=name)
        if not found:
            ipr.link("add", ifname=name, kind="xfrm", xfrm_if_id=if_id)
            found = ipr.link_lookup(ifname=name)
            ipr.link("set", index=found[0], state="up")
        return int(found[0])

    # -- notifications --------------------------------------------------

    def _read_notifications(self) -> None:
        assert self._monitor is not None
        while not self._stopping.is_set():
            try:
                data = self._monitor.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            for msg_type, _seq, chunk in split_messages(data):
                event = parse_notification(msg_type, chunk)
                if event is not None and self._events is not None:
                    self._events(event)


def parse_notification(msg_type: int, chunk: bytes) -> BackendEvent | None:
    """A BackendEvent for an EXPIRE or ACQUIRE message; None for others."""
    if msg_type == xfrm.XFRM_MSG_EXPIRE:
        msg = xfrm.xfrm_user_expire(chunk)
        msg.decode()
        kind = (
            BackendEventKind.HARD_EXPIRE
            if msg["hard"]
            else BackendEventKind.SOFT_EXPIRE
        )
        destination = xfrm.unpack_address(msg["id_daddr"], msg["family"])
        return BackendEvent(kind, int(msg["id_spi"]), destination, int(msg["reqid"]))
    if msg_type == xfrm.XFRM_MSG_ACQUIRE:
        msg = xfrm.xfrm_user_acquire(chunk)
        msg.decode()
        template = msg.get_attr("XFRMA_TMPL") or {}
        reqid = int(template.get("reqid", 0))
        family = int(template.get("family", socket.AF_INET))
        destination = xfrm.unpack_address(msg["id_daddr"], family)
        return BackendEvent(BackendEventKind.ACQUIRE, 0, destination, reqid)
    return None


def crypto_driver(algorithm: str, proc_crypto: str = "/proc/crypto") -> str:
    """The driver the kernel's crypto API picks for `algorithm`.

    The one with the highest priority among those that passed their self
    test, e.g. "rfc4106-gcm-aesni", or a QAT driver ("qat_aes_gcm...") where
    a QAT device is bound in the kernel. Empty when the kernel has none.
    """
    try:
        with open(proc_crypto) as f:
            text = f.read()
    except OSError:
        return ""
    best, best_priority = "", -1
    for block in text.split("\n\n"):
        fields = dict(
            (k.strip(), v.strip())
            for k, _, v in (line.partition(":") for line in block.splitlines())
        )
        if fields.get("name") != algorithm or fields.get("selftest") == "unknown":
            continue
        priority = int(fields.get("priority", "0"))
        if priority > best_priority:
            best, best_priority = fields.get("driver", ""), priority
    return best
