"""From Child SA events to data-plane calls, and the choice of data plane.

`ChildInstaller` turns `ChildSaEstablished`, `ChildSaRekeyed` and
`ChildSaDeleted` into `EspBackend` calls. Policies and routes are shared by
every Child SA of one connection's child (one reqid each, as the kernel
expects) and counted, so that a rekey is make-before-break: the new SA pair
goes in next to the old one under the same policies, and only SAs are
removed when the old pair is deleted. Trap policies (`start_action: trap`)
are counted the same way.

`create_backend(name)` imports the kernel or userspace data plane lazily, so
that a machine without pyroute2 or /dev/net/tun can still run the others.
"""

from __future__ import annotations

import importlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from qsgw.esp.backend import (
    BackendEventSink,
    Direction,
    EspAlgorithm,
    EspBackend,
    EspIntegrity,
    IPAddress,
    IPNetwork,
    Lifetime,
    PolicySpec,
    SaCounters,
    SaSpec,
    UdpEncapsulation,
)
from qsgw.esp.recording import RecordingBackend
from qsgw.ike.config import ChildSpec, ConnectionSpec, StartAction, TrafficSelectorSpec
from qsgw.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaKeys,
    ChildSaRekeyed,
)

logger = logging.getLogger(__name__)

Endpoint = tuple[IPAddress, int]
_T = TypeVar("_T")


class DataPlaneUnavailable(Exception):
    """The data plane asked for cannot run here; the message says why."""


TextEndpoint = tuple[str, int]
UdpSend = Callable[[bytes, TextEndpoint, TextEndpoint], None]


@runtime_checkable
class EspOverUdp(Protocol):
    """A data plane that takes RFC 3948 ESP-in-UDP from the shell.

    The shell owns the port-4500 sockets (IKE and ESP share them) and hands
    every datagram that is not IKE to `receive_esp`; the data plane sends
    through the `UdpSender` it was created with.
    """

    def receive_esp(
        self, datagram: bytes, source: TextEndpoint, destination: TextEndpoint
    ) -> None: ...


class UdpSender:
    """The data plane's way out through the shell's sockets, connected once
    the sockets are open; callable from any thread."""

    def __init__(self) -> None:
        self.target: UdpSend | None = None

    def __call__(
        self, datagram: bytes, source: TextEndpoint, destination: TextEndpoint
    ) -> None:
        target = self.target
        if target is not None:
            target(datagram, source, destination)


# --- choosing a data plane -----------------------------------------------------

_MODULES = {
    "kernel": ("qsgw.esp.kernel", "KernelBackend"),
    "userspace": ("qsgw.esp.userspace", "UserspaceBackend"),
}


def create_backend(name: str, sender: UdpSender) -> EspBackend:
    """`auto`, `kernel`, `userspace` or `recording`; `auto` takes the kernel
    if its module says it can run here, else userspace."""
    if name == "recording":
        return RecordingBackend()
    if name in _MODULES:
        return _load(name, sender)
    if name != "auto":
        raise DataPlaneUnavailable(f"unknown data plane '{name}'")
    reasons = []
    for candidate in ("kernel", "userspace"):
        try:
            return _load(candidate, sender)
        except DataPlaneUnavailable as exc:
            reasons.append(str(exc))
    raise DataPlaneUnavailable("no data plane can run here: " + "; ".join(reasons))


def _load(name: str, sender: UdpSender) -> EspBackend:
    module_name, class_name = _MODULES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        reason = f"the {name} data plane is not available: {exc}"
        raise DataPlaneUnavailable(reason) from None
    available = getattr(module, "available", None)
    if callable(available):
        reason = available()
        if reason:
            raise DataPlaneUnavailable(f"the {name} data plane cannot run: {reason}")
    factory = getattr(module, class_name)
    if name == "userspace":
        # The shell opens port 4500 and hands its sockets over once they are
        # open (`UdpTransport.hand_esp_in_udp_to`): the backend reads and
        # sends ESP in UDP on them itself; `sender` stays as the way out for
        # an SA whose source has no such socket. ESP without NAT goes over
        # the backend's raw IP protocol 50 sockets.
        backend = factory(udp_port=None, datagram_sender=sender, raw_esp=True)
        return cast(EspBackend, backend)
    return cast(EspBackend, factory())


# --- one thread for the data plane -----------------------------------------------


class DataPlaneThread:
    """An `EspBackend` that runs every call on one thread of its own.

    pyroute2's synchronous API runs an asyncio loop of its own and refuses
    to work inside the daemon's running loop; one worker thread keeps the
    calls synchronous, in order (make-before-break holds) and off the loop.
    Exceptions reach the caller as if the call had been direct.
    """

    def __init__(self, backend: EspBackend) -> None:
        self.backend = backend
        self.name = backend.name
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="data-plane")

    def _run(self, method: Callable[..., _T], *args: Any) -> _T:
        return self._worker.submit(method, *args).result()

    def start(self, events: BackendEventSink) -> None:
        self._run(self.backend.start, events)

    def close(self) -> None:
        try:
            self._run(self.backend.close)
        finally:
            self._worker.shutdown(wait=True)

    def allocate_spi(self, source: IPAddress, destination: IPAddress) -> int:
        return self._run(self.backend.allocate_spi, source, destination)

    def add_sa(self, sa: SaSpec) -> None:
        self._run(self.backend.add_sa, sa)

    def update_sa(self, sa: SaSpec) -> None:
        self._run(self.backend.update_sa, sa)

    def delete_sa(self, spi: int, destination: IPAddress) -> None:
        self._run(self.backend.delete_sa, spi, destination)

    def add_policy(self, policy: PolicySpec) -> None:
        self._run(self.backend.add_policy, policy)

    def delete_policy(self, policy: PolicySpec) -> None:
        self._run(self.backend.delete_policy, policy)

    def counters(self, spi: int, destination: IPAddress) -> SaCounters:
        return self._run(self.backend.counters, spi, destination)

    def install_route(self, remote: IPNetwork, source: IPAddress, if_id: int) -> None:
        self._run(self.backend.install_route, remote, source, if_id)

    def remove_route(self, remote: IPNetwork, if_id: int) -> None:
        self._run(self.backend.remove_route, remote, if_id)


# --- installing Child SAs --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstalledChild:
    child_sa: int
    ike_sa: int
    connection: str
    child: str
    reqid: int
    inbound_spi: int
    outbound_spi: int
    local: IPAddress
    remote: IPAddress
    policies: tuple[PolicySpec, ...]
    routes: tuple[tuple[IPNetwork, IPAddress, int], ...]


ChildLookup = Callable[[str, str], ChildSpec | None]


class ChildInstaller:
    """Keeps the data plane in step with the IKE core's Child SAs."""

    def __init__(self, backend: EspBackend, child_spec: ChildLookup) -> None:
        self._backend = backend
        self._child_spec = child_spec
        self._children: dict[int, InstalledChild] = {}
        self._reqids: dict[tuple[str, str], int] = {}
        self._policies: Counter[PolicySpec] = Counter()
        self._routes: Counter[tuple[IPNetwork, int]] = Counter()
        self._traps: dict[str, tuple[PolicySpec, ...]] = {}
        # new outbound SAs of rekeys we answered, by the Child SA they replace
        self._deferred: dict[int, SaSpec] = {}

    @property
    def children(self) -> list[InstalledChild]:
        return list(self._children.values())

    def by_inbound_spi(self, spi: int) -> InstalledChild | None:
        return next((c for c in self._children.values() if c.inbound_spi == spi), None)

    def by_reqid(self, reqid: int) -> tuple[str, str] | None:
        return next((k for k, v in self._reqids.items() if v == reqid), None)

    def reqid(self, connection: str, child: str) -> int:
        key = (connection, child)
        if key not in self._reqids:
            self._reqids[key] = len(self._reqids) + 1
        return self._reqids[key]

    def install(self, event: ChildSaEstablished | ChildSaRekeyed) -> None:
        """A new Child SA, or the new one of a rekey (`ChildSaRekeyed` has the
        same fields): SAs first, then any policy and route not yet there."""
        keys = event.keys
        reqid = self.reqid(event.connection, event.child)
        spec = self._child_spec(event.connection, event.child)
        lifetime = _lifetime(spec)
        inbound, outbound = _sa_pair(keys, reqid, lifetime)
        self._call("add_sa", self._backend.add_sa, inbound)
        if isinstance(event, ChildSaRekeyed) and not event.initiator:
            # make-before-break, RFC 7296 §2.8: the peer may not have the
            # new inbound SA before our answer reaches it; switch when it
            # deletes the old Child SA
            self._deferred[event.old_child_sa] = outbound
        else:
            self._call("add_sa", self._backend.add_sa, outbound)
        policies = tuple(_policies(keys, reqid))
        routes = tuple(_routes(keys))
        self._add_policies(policies)
        self._add_routes(routes)
        self._children[event.child_sa] = InstalledChild(
            event.child_sa,
            event.ike_sa,
            event.connection,
            event.child,
            reqid,
            keys.inbound_spi,
            keys.outbound_spi,
            keys.local_address,
            keys.remote_address,
            policies,
            routes,
        )

    def remove(self, event: ChildSaDeleted) -> None:
        successor = self._deferred.pop(event.child_sa, None)
        if successor is not None:
            self._call("add_sa", self._backend.add_sa, successor)
        installed = self._children.pop(event.child_sa, None)
        if installed is None:
            logger.debug("Child SA %d was not installed", event.child_sa)
            return
        self._remove(installed)

    def _remove(self, installed: InstalledChild) -> None:
        backend = self._backend
        self._call(
            "delete_sa", backend.delete_sa, installed.inbound_spi, installed.local
        )
        self._call(
            "delete_sa", backend.delete_sa, installed.outbound_spi, installed.remote
        )
        self._drop_policies(installed.policies)
        self._drop_routes(installed.routes)

    def remove_all(self) -> None:
        """Shutdown: take every SA, policy and route out of the data plane."""
        for child_sa in list(self._children):
            self._remove(self._children.pop(child_sa))
        for connection in list(self._traps):
            self.remove_traps(connection)

    # trap policies: traffic for a `start_action: trap` child raises an acquire

    def install_traps(self, connection: ConnectionSpec) -> None:
        self.remove_traps(connection.name)
        if not (connection.local_addresses and connection.remote_addresses):
            if _has_traps(connection):
                logger.warning(
                    "connection %s: start_action trap needs local_addrs and "
                    "remote_addrs; no trap installed",
                    connection.name,
                )
            return
        policies: list[PolicySpec] = []
        for child in connection.children:
            if child.start_action == StartAction.TRAP:
                policies.extend(self._trap_policies(connection, child))
        self._traps[connection.name] = tuple(policies)
        self._add_policies(policies)

    def _trap_policies(
        self, connection: ConnectionSpec, child: ChildSpec
    ) -> Iterable[PolicySpec]:
        reqid = self.reqid(connection.name, child.name)
        local = connection.local_addresses[0]
        remote = connection.remote_addresses[0]
        for lts, rts in _ts_pairs(child.local_ts, child.remote_ts):
            yield _policy(
                Direction.OUTBOUND, lts, rts, local, remote, reqid, child.if_id
            )

    def remove_traps(self, connection: str) -> None:
        self._drop_policies(self._traps.pop(connection, ()))

    # counted policies and routes

    def _add_policies(self, policies: Iterable[PolicySpec]) -> None:
        for policy in policies:
            if self._policies[policy] == 0:
                self._call("add_policy", self._backend.add_policy, policy)
            self._policies[policy] += 1

    def _drop_policies(self, policies: Iterable[PolicySpec]) -> None:
        for policy in policies:
            self._policies[policy] -= 1
            if self._policies[policy] <= 0:
                del self._policies[policy]
                self._call("delete_policy", self._backend.delete_policy, policy)

    def _add_routes(self, routes: Iterable[tuple[IPNetwork, IPAddress, int]]) -> None:
        for remote, source, if_id in routes:
            if self._routes[(remote, if_id)] == 0:
                install = self._backend.install_route
                self._call("install_route", install, remote, source, if_id)
            self._routes[(remote, if_id)] += 1

    def _drop_routes(self, routes: Iterable[tuple[IPNetwork, IPAddress, int]]) -> None:
        for remote, _source, if_id in routes:
            self._routes[(remote, if_id)] -= 1
            if self._routes[(remote, if_id)] <= 0:
                del self._routes[(remote, if_id)]
                remove = self._backend.remove_route
                self._call("remove_route", remove, remote, if_id)

    def _call(self, what: str, method: Callable[..., None], *args: Any) -> None:
        # A data-plane failure is a local error: log it and keep serving IKE.
        try:
            method(*args)
        except Exception as exc:
            logger.error("data plane %s failed: %s", what, exc)


def _has_traps(connection: ConnectionSpec) -> bool:
    return any(c.start_action == StartAction.TRAP for c in connection.children)


# The data plane's own clock only backs up the engine's, which rekeys and
# expires Child SAs on time; a margin keeps the two from racing.
HARD_EXPIRY_MARGIN = 30


def _lifetime(spec: ChildSpec | None) -> Lifetime:
    """Volume limits, which only the data plane can count (swanctl's
    defaults: life = rekey + 10%), and a backstop on time."""
    if spec is None:
        return Lifetime()
    life = spec.life_time + HARD_EXPIRY_MARGIN if spec.life_time else 0
    return Lifetime(
        soft_bytes=spec.rekey_bytes,
        hard_bytes=spec.rekey_bytes + spec.rekey_bytes // 10,
        soft_packets=spec.rekey_packets,
        hard_packets=spec.rekey_packets + spec.rekey_packets // 10,
        hard_seconds=life,
    )


def _sa_pair(
    keys: ChildSaKeys, reqid: int, lifetime: Lifetime
) -> tuple[SaSpec, SaSpec]:
    """RFC 7296 §2.17: the engine already sorted keys into in and out."""
    algorithm = EspAlgorithm(keys.encryption)
    integrity = EspIntegrity(keys.integrity)
    common: dict[str, Any] = {
        "algorithm": algorithm,
        "key_bits": keys.key_bits,
        "integrity": integrity,
        "esn": keys.esn,
        "replay_window": keys.replay_window,
        "lifetime": lifetime,
        "reqid": reqid,
        "if_id": keys.if_id,
    }
    inbound = SaSpec(
        spi=keys.inbound_spi,
        direction=Direction.INBOUND,
        source=keys.remote_address,
        destination=keys.local_address,
        encryption_key=keys.encryption_key_in,
        integrity_key=keys.integrity_key_in,
        encapsulation=_encapsulation(keys, inbound=True),
        **common,
    )
    outbound = SaSpec(
        spi=keys.outbound_spi,
        direction=Direction.OUTBOUND,
        source=keys.local_address,
        destination=keys.remote_address,
        encryption_key=keys.encryption_key_out,
        integrity_key=keys.integrity_key_out,
        encapsulation=_encapsulation(keys, inbound=False),
        **common,
    )
    return inbound, outbound


def _encapsulation(keys: ChildSaKeys, *, inbound: bool) -> UdpEncapsulation | None:
    if not keys.udp_encapsulation:
        return None
    if inbound:
        return UdpEncapsulation(keys.remote_port, keys.local_port)
    return UdpEncapsulation(keys.local_port, keys.remote_port)


def _ts_pairs(
    local: Sequence[TrafficSelectorSpec], remote: Sequence[TrafficSelectorSpec]
) -> Iterable[tuple[TrafficSelectorSpec, TrafficSelectorSpec]]:
    """Selector pairs of one address family and a compatible protocol."""
    for lts in local:
        for rts in remote:
            same_family = lts.network.version == rts.network.version
            protocols = {lts.ip_protocol, rts.ip_protocol} - {0}
            if same_family and len(protocols) <= 1:
                yield lts, rts


def _policy(
    direction: Direction,
    lts: TrafficSelectorSpec,
    rts: TrafficSelectorSpec,
    local: IPAddress,
    remote: IPAddress,
    reqid: int,
    if_id: int,
) -> PolicySpec:
    inbound = direction == Direction.INBOUND
    return PolicySpec(
        direction=direction,
        local=lts.network,
        remote=rts.network,
        tunnel_source=remote if inbound else local,
        tunnel_destination=local if inbound else remote,
        reqid=reqid,
        ip_protocol=lts.ip_protocol or rts.ip_protocol,
        local_ports=lts.ports,
        remote_ports=rts.ports,
        if_id=if_id,
    )


def _policies(keys: ChildSaKeys, reqid: int) -> Iterable[PolicySpec]:
    for lts, rts in _ts_pairs(keys.local_ts, keys.remote_ts):
        for direction in (Direction.OUTBOUND, Direction.INBOUND):
            yield _policy(
                direction,
                lts,
                rts,
                keys.local_address,
                keys.remote_address,
                reqid,
                keys.if_id,
            )


def _routes(keys: ChildSaKeys) -> Iterable[tuple[IPNetwork, IPAddress, int]]:
    seen: set[IPNetwork] = set()
    for rts in keys.remote_ts:
        source = _inner_source(keys, rts.network.version)
        if rts.network in seen or source is None:
            continue
        seen.add(rts.network)
        yield rts.network, source, keys.if_id


def _inner_source(keys: ChildSaKeys, version: int) -> IPAddress | None:
    """The inner source address for traffic into the tunnel.

    The outer local address if our selectors include it, else the first
    host of our first selector of that family (a gateway usually owns it).
    """
    for lts in keys.local_ts:
        if keys.local_address in lts.network:
            return keys.local_address
    for lts in keys.local_ts:
        network = lts.network
        if network.version == version:
            hosts = network.num_addresses > 2
            return network.network_address + 1 if hosts else network.network_address
    return None
