"""The IKEv2 engine: one sans-I/O object that runs every IKE SA.

The daemon feeds it datagrams, time and randomness; it answers with
datagrams to send, events and its next deadline (docs/architecture.md).
Exchanges follow RFC 7296 (IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA,
INFORMATIONAL), RFC 9242 and RFC 9370 (IKE_INTERMEDIATE, additional key
exchanges), RFC 8784 (PPK), RFC 7383 (fragmentation) and RFC 6023
(childless IKE SAs). The exchanges themselves live in `qsgw.ike.tasks`;
this module owns the SA table, message IDs, retransmission and timers.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qsgw.crypto.api import Random
from qsgw.crypto.supply import KeySupply
from qsgw.ike import info
from qsgw.ike.candidates import Candidates, for_addresses
from qsgw.ike.config import ConnectionSpec, DpdAction
from qsgw.ike.constants import ExchangeType, HeaderFlag, NotifyType
from qsgw.ike.events import (
    Event,
    ExchangeCompleted,
    IkeSaDeleted,
    IkeSaFailed,
    LivenessFailed,
    MessageRejected,
    MessageSent,
)
from qsgw.ike.payloads import IkeHeader, IPAddress, Message, Payload
from qsgw.ike.sa import (
    CachedResponse,
    ChildSa,
    Endpoint,
    IkeSa,
    IkeSaState,
    PendingRequest,
    ResponseHandler,
)
from qsgw.ike.tasks import (
    child_sa,
    create_child,
    dispatch,
    ike_init,
    informational,
    timers,
    wire,
)
from qsgw.ike.tasks.wire import Reply, exchange_name

_log = logging.getLogger(__name__)

_CANDIDATE_CACHE_SIZE = 4096
_SPI_PRUNE_MINIMUM = 4096  # new_spi: SPIs remembered before the first pruning


# RFC 7296 §3.1: the Initiator and Response bits, by (our role, response);
# made once, as `|` on IntFlag builds a new member each time
_HEADER_FLAGS = {
    (initiator, response): (HeaderFlag.INITIATOR if initiator else HeaderFlag.NONE)
    | (HeaderFlag.RESPONSE if response else HeaderFlag.NONE)
    for initiator in (False, True)
    for response in (False, True)
}


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Engine-wide tunables; defaults follow strongSwan's charon.opt."""

    retransmit_timeout: float = 4.0
    retransmit_base: float = 1.8
    retransmit_tries: int = 5
    cookie_threshold: int = 30  # half-open IKE SAs before COOKIEs
    half_open_timeout: float = 30.0
    ike_port: int = 500
    natt_port: int = 4500
    max_message_size: int = 65535
    rekey_jitter: float = 0.1  # fraction of rekey_time taken off at random
    rekey_retry: float = 30.0  # after a failed rekey
    delete_rekeyed_delay: float = 5.0  # then we delete a replaced SA ourselves
    nonce_size: int = 32
    # key pairs per key exchange method made ahead in idle time (KeySupply)
    keys_ahead: int = 0


@dataclass(frozen=True, slots=True)
class Datagram:
    """One IKE message to send; the shell adds the non-ESP marker on 4500."""

    data: bytes
    local: Endpoint
    remote: Endpoint


class IkeEngine:
    """All IKE SAs of one gateway (RFC 7296), driven from outside."""

    def __init__(
        self,
        connections: Sequence[ConnectionSpec],
        rng: Random,
        settings: EngineSettings | None = None,
    ) -> None:
        self.rng = rng
        self.settings = settings or EngineSettings()
        self.connections: dict[str, ConnectionSpec] = {c.name: c for c in connections}
        self.sas: dict[int, IkeSa] = {}
        self.by_spi: dict[bytes, IkeSa] = {}
        self.half_open: dict[tuple[bytes, Endpoint], IkeSa] = {}
        self.cookie_secret = rng(32)
        self.keys = KeySupply(rng, self.settings.keys_ahead)
        self._next_id = 1
        self.now = 0.0  # the time of the current call
        self._datagrams: list[Datagram] = []
        self._events: list[Event] = []
        # deadlines: a heap of (deadline, IKE SA id) with lazy invalidation;
        # an entry counts only while it equals the SA's entry in _scheduled
        self._heap: list[tuple[float, int]] = []
        self._scheduled: dict[int, float] = {}
        # IKE SAs changed since their deadline was last computed
        self._touched: dict[int, IkeSa] = {}
        self._by_connection: dict[str, dict[int, IkeSa]] = {}
        # ike_init.candidates by (local, remote) address, while connections stay
        self._candidates: dict[tuple[IPAddress, IPAddress], Candidates]
        self._candidates = {}
        # responder IKE SAs that were still CONNECTING when last looked at
        self._connecting: dict[int, IkeSa] = {}
        # inbound ESP SPIs handed out: a superset of our Child SAs' (new_spi)
        self._spis: set[bytes] = set()
        self._spis_limit = _SPI_PRUNE_MINIMUM
        # derivations no datagram waits for (`defer`)
        self._deferred: list[Callable[[], None]] = []

    # ------------------------------------------------------------ public API

    def receive_datagram(
        self, data: bytes, local: Endpoint, remote: Endpoint, now: float
    ) -> None:
        """One IKE message (without non-ESP marker) as received."""
        self.now = now
        self.run_deferred()
        try:
            dispatch.receive(self, data, local, remote, now)
            self._run_queues(now)
        except Exception:
            # a bug must not take the gateway down with it; the event makes
            # it visible (metrics, tests)
            _log.exception("internal error on a received message")
            self.reject("internal-error")

    def initiate(self, connection: str, now: float, child: str | None = None) -> int:
        """Start an IKE SA (and its first Child SA); returns its unique id."""
        self.now = now
        self.run_deferred()
        spec = self.connection(connection)
        return ike_init.initiate(self, spec, child, now)

    def terminate_ike(self, ike_sa_id: int, now: float) -> None:
        self.now = now
        self.run_deferred()
        sa = self.sas.get(ike_sa_id)
        if sa is not None:
            informational.delete_ike(self, sa, now)
            self._run_queues(now)

    def terminate_connection(self, connection: str, now: float) -> None:
        self.now = now
        for sa in list(self.sas.values()):
            if sa.connection.name == connection:
                self.terminate_ike(sa.unique_id, now)

    def rekey_ike(self, ike_sa_id: int, now: float) -> None:
        self.now = now
        self.run_deferred()
        sa = self.sas.get(ike_sa_id)
        if sa is not None and sa.state == IkeSaState.ESTABLISHED:
            create_child.queue_ike_rekey(self, sa)
            self._run_queues(now)

    def rekey_child(self, child_sa_id: int, now: float) -> None:
        self.now = now
        self.run_deferred()
        found = self.find_child(child_sa_id)
        if found is not None:
            sa, child = found
            create_child.queue_child_rekey(self, sa, child)
            self._run_queues(now)

    def child_expired(self, inbound_spi: int, hard: bool, now: float) -> None:
        """A data-plane lifetime ran out: rekey on soft, delete on hard."""
        self.now = now
        self.run_deferred()
        spi = inbound_spi.to_bytes(4, "big")
        for sa in list(self.sas.values()):
            for child in list(sa.children.values()):
                if child.inbound_spi != spi:
                    continue
                self.touch(sa)
                if hard:
                    informational.delete_child(self, sa, child, now, "expired")
                else:
                    create_child.queue_child_rekey(self, sa, child)
        self._run_queues(now)

    def acquire(self, connection: str, child: str, now: float) -> None:
        """Traffic hit a trap policy: bring the Child SA up."""
        self.now = now
        self.run_deferred()
        spec = self.connection(connection)
        for sa in self.sas.values():
            if sa.connection.name != connection:
                continue
            if any(c.spec.name == child for c in sa.children.values()):
                return
            if sa.state == IkeSaState.ESTABLISHED:
                create_child.queue_new_child(self, sa, child)
                self._run_queues(now)
            return
        self.initiate(spec.name, now, child)

    def create_child(self, ike_sa_id: int, child: str, now: float) -> int:
        """A new Child SA `child` over an established IKE SA (CREATE_CHILD_SA,
        RFC 7296 §1.3.1); returns its unique id. `child_pending` tells
        whether it is still on its way; `ChildSaEstablished` says it came."""
        self.now = now
        self.run_deferred()
        sa = self.sas.get(ike_sa_id)
        if sa is None or sa.state != IkeSaState.ESTABLISHED:
            raise ValueError(f"IKE SA #{ike_sa_id} is not established")
        child_sa = self.new_id()
        create_child.queue_new_child(self, sa, child, child_sa)
        self._run_queues(now)
        return child_sa

    def child_pending(self, ike_sa_id: int, child_sa_id: int) -> bool:
        """Whether a Child SA from `create_child` is queued or negotiating."""
        sa = self.sas.get(ike_sa_id)
        return sa is not None and create_child.negotiating(sa, child_sa_id)

    def set_connections(
        self, connections: Sequence[ConnectionSpec], now: float
    ) -> None:
        """Reload: SAs of unchanged connections stay; others are deleted."""
        self.now = now
        self.run_deferred()
        new = {c.name: c for c in connections}
        for sa in list(self.sas.values()):
            if new.get(sa.connection.name) != sa.connection:
                self.terminate_ike(sa.unique_id, now)
        self.connections = new
        self._candidates.clear()

    def handle_timer(self, now: float) -> None:
        self.now = now
        self.run_deferred()
        try:
            due = self._due(now)
            for sa in due:
                self.touch(sa)  # back into the heap even if a run fails
            for sa in due:
                if sa.unique_id in self.sas:
                    timers.run(self, sa, now)
            self._run_queues(now)
        except Exception:
            _log.exception("internal error in a timer")
            self.reject("internal-error")

    def next_timer(self) -> float | None:
        self._reschedule()
        heap, scheduled = self._heap, self._scheduled
        while heap:
            deadline, unique_id = heap[0]
            if scheduled.get(unique_id) == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def run_deferred(self) -> None:
        """Do the work `defer` put aside. The shell calls this right after
        sending `datagrams_to_send`; every other entry point calls it first,
        so no exchange ever sees an SA with its work still pending."""
        while self._deferred:
            work, self._deferred = self._deferred, []
            for item in work:
                try:
                    item()
                except Exception:
                    _log.exception("internal error in deferred work")
                    self.reject("internal-error")

    def datagrams_to_send(self) -> list[Datagram]:
        out, self._datagrams = self._datagrams, []
        return out

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def ike_sas(self) -> list[info.IkeSaInfo]:
        self.run_deferred()
        return [info.snapshot(sa) for sa in self.sas.values()]

    # ------------------------------------------------------------ for tasks

    def connection(self, name: str) -> ConnectionSpec:
        try:
            return self.connections[name]
        except KeyError:
            raise ValueError(f"no connection named {name!r}") from None

    def candidates(self, local: IPAddress, remote: IPAddress) -> Candidates:
        """The connections that accept this pair of addresses, in order;
        kept until the connections change."""
        key = (local, remote)
        found = self._candidates.get(key)
        if found is None:
            if len(self._candidates) >= _CANDIDATE_CACHE_SIZE:
                self._candidates.clear()  # spoofed sources must not grow it
            found = for_addresses(self.connections.values(), local, remote)
            self._candidates[key] = found
        return found

    def new_id(self) -> int:
        unique = self._next_id
        self._next_id += 1
        return unique

    def defer(self, work: Callable[[], None]) -> None:
        """Put aside work that the datagrams to send do not wait for (the
        key derivations for the next message) until `run_deferred`: the
        peer is already working on our message while we do it."""
        self._deferred.append(work)

    def emit(self, event: Event) -> None:
        self._events.append(event)

    def reject(self, reason: str, exchange: int | None = None) -> None:
        _log.debug("message rejected: %s (%s)", reason, exchange_name(exchange))
        self.emit(MessageRejected(reason, exchange_name(exchange)))

    def send(self, data: bytes, local: Endpoint, remote: Endpoint) -> None:
        self._datagrams.append(Datagram(data, local, remote))

    def new_spi(self) -> bytes:
        """A fresh inbound ESP SPI (>= 256, unique among our Child SAs).

        Unique also among the SPIs handed out since the last pruning, so
        among Child SAs still being negotiated too.
        """
        if len(self._spis) >= self._spis_limit:
            self._prune_spis()
        while True:
            spi = self.rng(4)
            if int.from_bytes(spi, "big") >= 256 and spi not in self._spis:
                self._spis.add(spi)
                return spi

    def _prune_spis(self) -> None:
        """Forget SPIs no Child SA holds any more (amortised: the limit doubles)."""
        self._spis = {
            c.inbound_spi for sa in self.sas.values() for c in sa.children.values()
        }
        self._spis_limit = max(2 * len(self._spis), _SPI_PRUNE_MINIMUM)

    def new_ike_spi(self) -> bytes:
        while True:
            spi = self.rng(8)
            if spi != bytes(8) and spi not in self.by_spi:
                return spi

    def register(self, sa: IkeSa) -> None:
        self.sas[sa.unique_id] = sa
        self.by_spi[sa.local_spi] = sa
        self._by_connection.setdefault(sa.connection.name, {})[sa.unique_id] = sa
        if not sa.initiator and sa.state == IkeSaState.CONNECTING:
            self._connecting[sa.unique_id] = sa
        self.touch(sa)

    def bind_connection(self, sa: IkeSa, spec: ConnectionSpec) -> None:
        """The responder settled on `spec` for `sa` (RFC 7296 §2.15)."""
        self._unbind(sa)
        sa.connection = spec
        if sa.unique_id in self.sas:
            self._by_connection.setdefault(spec.name, {})[sa.unique_id] = sa

    def ike_sas_of(self, connection: str) -> list[IkeSa]:
        """The IKE SAs of one connection, oldest first."""
        return list(self._by_connection.get(connection, {}).values())

    def touch(self, sa: IkeSa) -> None:
        """`sa` changed: recompute its deadline, run its queue."""
        self._touched[sa.unique_id] = sa

    def find_child(self, child_sa_id: int) -> tuple[IkeSa, ChildSa] | None:
        for sa in self.sas.values():
            child = sa.children.get(child_sa_id)
            if child is not None:
                return sa, child
        return None

    def half_open_count(self) -> int:
        """Responder IKE SAs still in their handshake (RFC 7296 §2.6)."""
        done = [
            unique_id
            for unique_id, sa in self._connecting.items()
            if sa.state != IkeSaState.CONNECTING
        ]
        for unique_id in done:
            del self._connecting[unique_id]
        return len(self._connecting)

    # ------------------------------------------------------------ requests

    def send_request(
        self,
        sa: IkeSa,
        exchange: ExchangeType,
        payloads: list[Payload],
        on_response: ResponseHandler,
        now: float,
        *,
        liveness: bool = False,
    ) -> wire.Sealed:
        """Seal and send a request with the next message ID, and keep it for
        retransmission until its response arrives."""
        header = self.header(sa, exchange, sa.send_mid, response=False)
        sealed = wire.seal(self, sa, header, payloads)
        self.touch(sa)
        sa.pending = PendingRequest(
            exchange=exchange,
            message_id=sa.send_mid,
            datagrams=sealed.datagrams,
            on_response=on_response,
            started=now,
            next_retransmit=now + self.settings.retransmit_timeout,
            liveness=liveness,
        )
        self._transmit(sa, sealed.datagrams, exchange, response=False)
        return sealed

    def send_plain_request(
        self,
        sa: IkeSa,
        payloads: list[Payload],
        on_response: ResponseHandler,
        now: float,
    ) -> bytes:
        """The IKE_SA_INIT request: unencrypted, message ID 0."""
        header = self.header(sa, ExchangeType.IKE_SA_INIT, 0, response=False)
        data = wire.encode_plain(header, payloads)
        self.touch(sa)
        sa.pending = PendingRequest(
            exchange=ExchangeType.IKE_SA_INIT,
            message_id=0,
            datagrams=[data],
            on_response=on_response,
            started=now,
            next_retransmit=now + self.settings.retransmit_timeout,
        )
        self._transmit(sa, [data], ExchangeType.IKE_SA_INIT, response=False)
        return data

    def send_reply(self, sa: IkeSa, request: IkeHeader, reply: Reply) -> None:
        """Seal our response to `request`, cache it and send it."""
        self.touch(sa)
        exchange = int(request.exchange)
        header = self.header(sa, exchange, request.message_id, response=True)
        sealed = wire.seal(self, sa, header, reply.payloads)
        requests = frozenset(sa.request_datagrams)
        sa.request_datagrams = []
        sa.cached = CachedResponse(request.message_id, sealed.datagrams, requests)
        sa.recv_mid = request.message_id + 1
        self._transmit(sa, sealed.datagrams, exchange, response=True)
        self.emit(ExchangeCompleted(exchange_name(exchange), False, 0.0))
        if reply.after is not None:
            reply.after(sealed)

    def header(
        self, sa: IkeSa, exchange: int, message_id: int, *, response: bool
    ) -> IkeHeader:
        flags = _HEADER_FLAGS[sa.initiator, response]
        return IkeHeader(sa.spi_i, sa.spi_r, 0, exchange, flags, message_id)

    def _transmit(
        self, sa: IkeSa, datagrams: list[bytes], exchange: int, *, response: bool
    ) -> None:
        for data in datagrams:
            self.send(data, sa.local, sa.remote)
        kind = "response" if response else "request"
        sa.log.debug(
            "sending %s %s in %d datagram(s)",
            exchange_name(exchange),
            kind,
            len(datagrams),
        )
        self.emit(MessageSent(exchange_name(exchange), response))

    def retransmit(self, sa: IkeSa, now: float) -> None:
        """RFC 7296 §2.1: resend the same octets, with exponential backoff."""
        pending = sa.pending
        if pending is None:
            return
        self.touch(sa)
        pending.tries += 1
        backoff = self.settings.retransmit_base**pending.tries
        pending.next_retransmit = now + self.settings.retransmit_timeout * backoff
        for data in pending.datagrams:
            self.send(data, sa.local, sa.remote)
        self.emit(MessageSent(exchange_name(pending.exchange), False))

    def resend_cached(self, sa: IkeSa) -> None:
        if sa.cached is not None:
            for data in sa.cached.datagrams:
                self.send(data, sa.local, sa.remote)

    def complete_exchange(self, sa: IkeSa, message: Message, now: float) -> None:
        """The response to our pending request arrived: advance and hand it on."""
        pending = sa.pending
        if pending is None:
            return
        self.touch(sa)
        sa.pending = None
        sa.send_mid += 1
        name = exchange_name(pending.exchange)
        self.emit(ExchangeCompleted(name, True, now - pending.started))
        pending.on_response(message, now)

    def _run_queues(self, now: float) -> None:
        """Start queued exchanges on SAs with nothing in flight; only an
        SA touched since the last run can have become ready."""
        done: set[int] = set()
        while True:
            ready = [
                sa
                for sa in list(self._touched.values())
                if sa.unique_id not in done and sa.pending is None and sa.queue
            ]
            if not ready:
                return
            for sa in ready:
                done.add(sa.unique_id)
                while sa.pending is None and sa.queue and sa.unique_id in self.sas:
                    task = sa.queue.pop(0)
                    task(now)

    # ------------------------------------------------------------ deadlines

    def _reschedule(self) -> None:
        """Bring the deadlines of the touched IKE SAs into the heap."""
        touched, self._touched = self._touched, {}
        for unique_id, sa in touched.items():
            if unique_id not in self.sas:
                continue
            if sa.pending is None and sa.queue:
                self._touched[unique_id] = sa  # still to run
            deadline = timers.deadline(self, sa)
            if deadline == self._scheduled.get(unique_id):
                continue
            if deadline is None:
                del self._scheduled[unique_id]
                continue
            self._scheduled[unique_id] = deadline
            heapq.heappush(self._heap, (deadline, unique_id))
        if len(self._heap) > 4 * len(self._scheduled) + 64:
            self._heap = [(d, i) for i, d in self._scheduled.items()]
            heapq.heapify(self._heap)

    def _due(self, now: float) -> list[IkeSa]:
        """The IKE SAs whose deadline has come, in the order they were
        created; each leaves the heap until it is touched again."""
        self._reschedule()
        heap, scheduled = self._heap, self._scheduled
        due: list[int] = []
        while heap and heap[0][0] <= now:
            deadline, unique_id = heapq.heappop(heap)
            if scheduled.get(unique_id) == deadline:
                del scheduled[unique_id]
                due.append(unique_id)
        return [self.sas[i] for i in sorted(due) if i in self.sas]

    # ------------------------------------------------------------ endings

    def destroy(self, sa: IkeSa) -> None:
        """Forget an IKE SA (events are the caller's)."""
        sa.state = IkeSaState.DESTROYED
        sa.pending = None
        sa.queue.clear()
        self.sas.pop(sa.unique_id, None)
        self._scheduled.pop(sa.unique_id, None)
        self._touched.pop(sa.unique_id, None)
        self._unbind(sa)
        if self.by_spi.get(sa.local_spi) is sa:
            del self.by_spi[sa.local_spi]
        self._connecting.pop(sa.unique_id, None)
        key = (sa.spi_i, sa.remote)
        if self.half_open.get(key) is sa:
            del self.half_open[key]
        elif not sa.initiator:
            # the peer moved (RFC 7296 §2.23) after the entry was made
            for key, value in list(self.half_open.items()):
                if value is sa:
                    del self.half_open[key]

    def _unbind(self, sa: IkeSa) -> None:
        name = sa.connection.name
        of_connection = self._by_connection.get(name)
        if of_connection is None:
            return
        of_connection.pop(sa.unique_id, None)
        if not of_connection:
            del self._by_connection[name]

    def fail(self, sa: IkeSa, reason: str, notify: NotifyType | None = None) -> None:
        """An IKE SA that never came up."""
        sa.log.info("IKE SA failed: %s", reason)
        name = notify.name if notify is not None else ""
        self.emit(IkeSaFailed(sa.unique_id, sa.connection.name, reason, name))
        self.destroy(sa)

    def delete(self, sa: IkeSa, reason: str) -> None:
        """An established IKE SA and all its Child SAs are gone."""
        for child in list(sa.children.values()):
            child_sa.forget(self, sa, child, reason)
        # at DEBUG: listeners log the event (the daemon at INFO)
        sa.log.debug("IKE SA deleted: %s", reason)
        self.emit(IkeSaDeleted(sa.unique_id, sa.connection.name, reason))
        self.destroy(sa)

    def dead_peer(self, sa: IkeSa, now: float) -> None:
        """RFC 7296 §2.4: retransmissions ran out on an established SA."""
        self.emit(LivenessFailed(sa.unique_id, sa.connection.name))
        self.delete(sa, "dead-peer")
        if sa.connection.dpd_action == DpdAction.RESTART:
            self.initiate(sa.connection.name, now)
