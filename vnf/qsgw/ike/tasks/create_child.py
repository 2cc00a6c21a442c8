"""CREATE_CHILD_SA (RFC 7296 §1.3) and IKE_FOLLOWUP_KE (RFC 9370 §2.2.4).

New Child SA, or Child SA rekey (with N(REKEY_SA)):

    HDR, SK { [N(REKEY_SA)], SA, Ni, [KEi], TSi, TSr }  -->
                  <--  HDR, SK { SA, Nr, [KEr], TSi, TSr, [N(ADDITIONAL_KEY_EXCHANGE)] }

IKE SA rekey:

    HDR, SK { SA, Ni, KEi }  -->
                  <--  HDR, SK { SA, Nr, KEr, [N(ADDITIONAL_KEY_EXCHANGE)] }

then one IKE_FOLLOWUP_KE per additional key exchange the responder chose:

    HDR, SK { N(ADDITIONAL_KEY_EXCHANGE)(link), KEi(n) }  -->
                  <--  HDR, SK { KEr(n), [N(ADDITIONAL_KEY_EXCHANGE)(link)] }

Keys: Child SA KEYMAT = prf+(SK_d, SK(0) | Ni | Nr | SK(1) | ... | SK(n));
new IKE SA SKEYSEED = prf(SK_d(old), SK(0) | Ni | Nr | SK(1) | ... | SK(n))
with the old IKE SA's PRF, the seven keys with the new PRF and SPIs
(RFC 7296 §2.17, §2.18; RFC 9370 §2.2.4).

Simultaneous rekeying (RFC 7296 §2.8.1, §2.8.2): when both ends rekeyed the
same SA, the new SA created with the lowest of the four nonces is
redundant; its creator deletes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from qsgw.crypto.api import CryptoError, KeyExchangeInitiator
from qsgw.ike import keymat, proposals
from qsgw.ike.constants import (
    ExchangeType,
    NotifyType,
    ProtocolId,
    TransformType,
)
from qsgw.ike.errors import ProtocolError
from qsgw.ike.events import IkeSaRekeyed
from qsgw.ike.payloads import (
    KePayload,
    Message,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
)
from qsgw.ike.sa import ChildSa, ChildSaState, IkeSa, IkeSaState
from qsgw.ike.tasks import child_sa, informational, timers
from qsgw.ike.tasks.wire import Reply, Sealed

if TYPE_CHECKING:
    from qsgw.ike.engine import IkeEngine

_log = logging.getLogger(__name__)

LINK_SIZE = 8  # octets of our ADDITIONAL_KEY_EXCHANGE link data


@dataclass
class Negotiation:
    """One CREATE_CHILD_SA exchange and its IKE_FOLLOWUP_KE rounds."""

    initiator: bool  # we sent the CREATE_CHILD_SA request
    ni: bytes
    nr: bytes = b""
    proposal: Proposal | None = None
    secrets: list[bytes] = field(default_factory=list)
    rounds: list[tuple[int, int]] = field(default_factory=list)
    link: bytes = b""
    ke: KeyExchangeInitiator | None = None
    child: ChildSa | None = None  # the new Child SA
    old_child: ChildSa | None = None  # the Child SA it replaces
    new_spi: bytes = b""  # our SPI of the new IKE SA
    peer_spi: bytes = b""
    ike_rekey: bool = False
    retried: bool = False  # after an INVALID_KE_PAYLOAD

    @property
    def lowest_nonce(self) -> bytes:
        return min(self.ni, self.nr)


# ---------------------------------------------------------------- queueing


def queue_new_child(
    engine: IkeEngine, sa: IkeSa, name: str, unique_id: int | None = None
) -> None:
    """CREATE_CHILD_SA for child `name` once nothing else is in flight.

    With `unique_id` (reserved with `engine.new_id()`), the Child SA gets
    that id and counts as queued (`sa.queued_children`) until it starts."""
    specs = [c for c in sa.connection.children if c.name == name]
    if not specs:
        raise ValueError(f"connection {sa.connection.name!r} has no child {name!r}")
    spec = specs[0]
    if unique_id is not None:
        sa.queued_children.add(unique_id)

    def start(now: float) -> None:
        if unique_id is not None:
            sa.queued_children.discard(unique_id)
        if sa.state == IkeSaState.ESTABLISHED:
            child_id = engine.new_id() if unique_id is None else unique_id
            child = ChildSa(child_id, spec, inbound_spi=engine.new_spi())
            _start_child(engine, sa, child, None, now)

    sa.queue.append(start)
    engine.touch(sa)


def negotiating(sa: IkeSa, child_sa: int) -> bool:
    """Whether Child SA `child_sa` is queued or in a CREATE_CHILD_SA now."""
    if child_sa in sa.queued_children:
        return True
    return any(
        n.child is not None and n.child.unique_id == child_sa for n in sa.negotiations
    )


def queue_child_rekey(engine: IkeEngine, sa: IkeSa, old: ChildSa) -> None:
    if old.state != ChildSaState.INSTALLED:
        return
    old.state = ChildSaState.REKEYING

    def start(now: float) -> None:
        if old.state != ChildSaState.REKEYING:
            return  # the peer's rekey won meanwhile
        if sa.state != IkeSaState.ESTABLISHED or old.unique_id not in sa.children:
            # e.g. the IKE SA was rekeyed meanwhile: try again from the
            # timers of whichever IKE SA holds the Child SA now
            old.state = ChildSaState.INSTALLED
            old.rekey_at = now
            return
        child = ChildSa(engine.new_id(), old.spec, inbound_spi=engine.new_spi())
        _start_child(engine, sa, child, old, now)

    sa.queue.append(start)
    engine.touch(sa)


def queue_ike_rekey(engine: IkeEngine, sa: IkeSa) -> None:
    if sa.state != IkeSaState.ESTABLISHED:
        return

    def start(now: float) -> None:
        if sa.state == IkeSaState.ESTABLISHED:
            _start_ike_rekey(engine, sa, now)

    sa.queue.append(start)
    engine.touch(sa)


# ---------------------------------------------------------------- helpers


def _ke_of(proposal: Proposal) -> int:
    ke = proposals.transform_of(proposal, TransformType.KE)
    return ke.id if ke is not None else 0


def _key_exchange(
    engine: IkeEngine, method: int
) -> tuple[KeyExchangeInitiator | None, list[Payload]]:
    if not method:
        return None, []
    ke = engine.keys.initiator(method)
    return ke, [KePayload(method, ke.public_value)]


def _rounds_done(state: Negotiation) -> int:
    """Additional key exchanges completed (SK(0) is the KE payload's)."""
    first = 1 if state.proposal is not None and _ke_of(state.proposal) else 0
    return len(state.secrets) - first


def _link_of(message: Message) -> bytes:
    links = message.notifies(NotifyType.ADDITIONAL_KEY_EXCHANGE)
    return links[0].data if links else b""


def _error_of(message: Message) -> NotifyPayload | None:
    for payload in message.payloads:
        if isinstance(payload, NotifyPayload) and int(payload.type) < 16384:
            return payload
    return None


def _respond_ke(
    engine: IkeEngine, method: int, message: Message
) -> tuple[bytes, bytes]:
    """Our KE data and the shared secret; INVALID_KE_PAYLOAD (RFC 7296
    §1.3) when the peer's KEi is not of the chosen method."""
    ke = message.first(KePayload)
    if not isinstance(ke, KePayload) or ke.method != method:
        data = method.to_bytes(2, "big")
        raise ProtocolError(NotifyType.INVALID_KE_PAYLOAD, "invalid-ke", data)
    try:
        return engine.keys.respond(method, ke.data)
    except CryptoError:
        raise ProtocolError(NotifyType.INVALID_SYNTAX, "key-exchange") from None


# ---------------------------------------------------------------- initiator


def _start_child(
    engine: IkeEngine,
    sa: IkeSa,
    child: ChildSa,
    old: ChildSa | None,
    now: float,
    method: int | None = None,
) -> None:
    offered = child_sa.offered(child.spec, child.inbound_spi, with_ke=True)
    if method is None:
        method = _ke_of(offered[0]) if offered else 0
    state = Negotiation(True, engine.rng(engine.settings.nonce_size))
    state.retried = method != (_ke_of(offered[0]) if offered else 0)
    state.child, state.old_child = child, old
    state.ke, ke_payloads = _key_exchange(engine, method)

    payloads: list[Payload] = []
    if old is not None:
        spi = old.inbound_spi
        payloads.append(NotifyPayload(NotifyType.REKEY_SA, ProtocolId.ESP, spi))
    payloads += [SaPayload(offered), NoncePayload(state.ni), *ke_payloads]
    payloads += child_sa.request_payloads(sa, child, with_ke=True)[1:]
    sa.negotiations.append(state)

    def on_response(message: Message, now: float) -> None:
        _child_response(engine, sa, state, message, now)

    # CREATE_CHILD_SA { [N(REKEY_SA)], SA, Ni, [KEi], TSi, TSr } -->
    engine.send_request(sa, ExchangeType.CREATE_CHILD_SA, payloads, on_response, now)


def _abandon(engine: IkeEngine, sa: IkeSa, state: Negotiation, reason: str) -> None:
    sa.log.info("CREATE_CHILD_SA failed: %s", reason)
    engine.reject(reason, ExchangeType.CREATE_CHILD_SA)
    if state in sa.negotiations:
        sa.negotiations.remove(state)
    if state.ike_rekey:
        if sa.state == IkeSaState.REKEYING:
            sa.state = IkeSaState.ESTABLISHED
        sa.rekey_at = engine.now + engine.settings.rekey_retry
    old = state.old_child
    if old is not None and old.state == ChildSaState.REKEYING:
        old.state = ChildSaState.INSTALLED
        old.rekey_at = engine.now + engine.settings.rekey_retry


def _child_response(
    engine: IkeEngine, sa: IkeSa, state: Negotiation, message: Message, now: float
) -> None:
    # <-- CREATE_CHILD_SA { SA, Nr, [KEr], TSi, TSr }
    child = state.child
    assert child is not None
    error = _error_of(message)
    wanted = _retry_method(state, error, _offered_ke(child))
    if wanted is not None:
        # RFC 7296 §1.3: INVALID_KE_PAYLOAD names the method to use instead
        sa.negotiations.remove(state)
        _start_child(engine, sa, child, state.old_child, now, wanted)
        return
    if error is not None:
        _abandon(engine, sa, state, _reason(error))
        return
    problem = child_sa.accept_response(sa, child, message, with_ke=True)
    nonce = message.first(NoncePayload)
    if problem is not None or not isinstance(nonce, NoncePayload):
        _abandon(engine, sa, state, problem or "nonce")
        return
    state.nr = nonce.data
    assert child.proposal is not None
    state.proposal = child.proposal
    state.rounds = proposals.additional_ke_methods(child.proposal)
    if not _complete_first_ke(state, message):
        _abandon(engine, sa, state, "key-exchange")
        return
    _continue(engine, sa, state, message, now)


def _offered_ke(child: ChildSa) -> set[int]:
    return {
        t.id
        for p in child.spec.esp_proposals
        for t in p.transforms
        if int(t.type) == TransformType.KE
    }


def _retry_method(
    state: Negotiation, error: NotifyPayload | None, offered: set[int]
) -> int | None:
    """The method an INVALID_KE_PAYLOAD asks for, if we offered it and have
    not retried yet."""
    if error is None or error.type != NotifyType.INVALID_KE_PAYLOAD:
        return None
    if state.retried or len(error.data) != 2:
        return None
    wanted = int.from_bytes(error.data, "big")
    return wanted if wanted in offered else None


def _reason(error: NotifyPayload) -> str:
    try:
        return NotifyType(error.type).name.lower().replace("_", "-")
    except ValueError:
        return "error-notify"


def _complete_first_ke(state: Negotiation, message: Message) -> bool:
    assert state.proposal is not None
    method = _ke_of(state.proposal)
    if not method:
        return state.ke is None
    ke = message.first(KePayload)
    if state.ke is None or not isinstance(ke, KePayload) or ke.method != method:
        return False
    try:
        state.secrets.append(state.ke.complete(ke.data))
    except CryptoError:
        return False
    return True


def _continue(
    engine: IkeEngine, sa: IkeSa, state: Negotiation, message: Message, now: float
) -> None:
    """Next IKE_FOLLOWUP_KE round, or the end of the negotiation."""
    if _rounds_done(state) < len(state.rounds):
        link = _link_of(message)
        if not link:
            _abandon(engine, sa, state, "additional-key-exchange")
            return
        _followup(engine, sa, state, link, now)
        return
    _finish(engine, sa, state, now)


def _followup(
    engine: IkeEngine, sa: IkeSa, state: Negotiation, link: bytes, now: float
) -> None:
    _, method = state.rounds[_rounds_done(state)]
    state.ke, ke_payloads = _key_exchange(engine, method)
    notify = NotifyPayload(NotifyType.ADDITIONAL_KEY_EXCHANGE, data=link)

    def on_response(message: Message, now: float) -> None:
        ke = message.first(KePayload)
        if state.ke is None or not isinstance(ke, KePayload) or ke.method != method:
            _abandon(engine, sa, state, "key-exchange")
            return
        try:
            state.secrets.append(state.ke.complete(ke.data))
        except CryptoError:
            _abandon(engine, sa, state, "key-exchange")
            return
        _continue(engine, sa, state, message, now)

    # IKE_FOLLOWUP_KE { N(ADDITIONAL_KEY_EXCHANGE), KEi(n) } -->
    engine.send_request(
        sa, ExchangeType.IKE_FOLLOWUP_KE, [notify, *ke_payloads], on_response, now
    )


def _finish(engine: IkeEngine, sa: IkeSa, state: Negotiation, now: float) -> None:
    if state in sa.negotiations:
        sa.negotiations.remove(state)
    if state.ike_rekey:
        _finish_ike_rekey(engine, sa, state, now)
    else:
        _finish_child(engine, sa, state, now)


def _finish_child(engine: IkeEngine, sa: IkeSa, state: Negotiation, now: float) -> None:
    child, old = state.child, state.old_child
    assert child is not None and sa.keys is not None
    child.initiator = state.initiator
    child_sa.derive(sa, child, sa.keys.sk_d, state.secrets, state.ni, state.nr)
    child.ke_methods = tuple(m for _, m in state.rounds)
    child.nonces = (state.ni, state.nr)
    if old is not None:
        child.replaces = old.unique_id
        child.rekeys = old.rekeys + 1
        old.state = ChildSaState.REKEYED
        old.rekey_at = None
        if not state.initiator:
            # the rekey's initiator deletes it; if that never comes, we do
            old.expire_at = now + engine.settings.delete_rekeyed_delay
    child_sa.install(engine, sa, child, now, replaces=old)
    if old is None:
        return

    twins = [c for c in sa.children.values() if c.replaces == old.unique_id]
    if len(twins) > 1:
        _resolve_child_collision(engine, sa, old, twins, now)
    elif state.initiator:
        # RFC 7296 §1.3.3: the rekey's initiator deletes the old Child SA
        informational.delete_child(engine, sa, old, now, "rekeyed")


def _resolve_child_collision(
    engine: IkeEngine, sa: IkeSa, old: ChildSa, twins: list[ChildSa], now: float
) -> None:
    """RFC 7296 §2.8.1: both ends rekeyed `old`. The new Child SA whose
    exchange had the lowest nonce is redundant: its initiator deletes it;
    the initiator of the other deletes `old`."""
    loser = min(twins, key=lambda c: min(c.nonces))
    winner = next(c for c in twins if c is not loser)
    sa.log.info("Child SA rekey collision, %d stays", winner.unique_id)
    loser.replaces = 0
    if loser.initiator:
        informational.delete_child(engine, sa, loser, now, "rekey-collision")
    if winner.initiator and old.unique_id in sa.children:
        informational.delete_child(engine, sa, old, now, "rekeyed")


def _start_ike_rekey(engine: IkeEngine, sa: IkeSa, now: float) -> None:
    assert sa.proposal is not None
    state = Negotiation(True, engine.rng(engine.settings.nonce_size))
    state.ike_rekey = True
    state.new_spi = engine.new_ike_spi()
    offered = tuple(replace(p, spi=state.new_spi) for p in sa.connection.ike_proposals)
    # the method of the current IKE SA is the one the peer accepted before
    state.ke, ke_payloads = _key_exchange(engine, _ke_of(sa.proposal))
    payloads: list[Payload] = [SaPayload(offered), NoncePayload(state.ni)]
    payloads += ke_payloads
    sa.state = IkeSaState.REKEYING
    sa.negotiations.append(state)

    def on_response(message: Message, now: float) -> None:
        _ike_rekey_response(engine, sa, state, message, now)

    # CREATE_CHILD_SA { SA, Ni, KEi } -->
    engine.send_request(sa, ExchangeType.CREATE_CHILD_SA, payloads, on_response, now)


def _ike_rekey_response(
    engine: IkeEngine, sa: IkeSa, state: Negotiation, message: Message, now: float
) -> None:
    # <-- CREATE_CHILD_SA { SA, Nr, KEr }
    if sa.state == IkeSaState.REKEYING:
        sa.state = IkeSaState.ESTABLISHED
    sa_payload = message.first(SaPayload)
    nonce = message.first(NoncePayload)
    error = _error_of(message)
    if error is not None or not isinstance(sa_payload, SaPayload):
        _abandon(engine, sa, state, _reason(error) if error else "proposal")
        return
    chosen = sa_payload.proposals[0]
    ours = sa.connection.ike_proposals
    if len(chosen.spi) != 8 or not proposals.check_chosen(ours, chosen):
        _abandon(engine, sa, state, "proposal")
        return
    if not isinstance(nonce, NoncePayload):
        _abandon(engine, sa, state, "nonce")
        return
    state.proposal, state.nr, state.peer_spi = chosen, nonce.data, chosen.spi
    state.rounds = proposals.additional_ke_methods(chosen)
    if not _complete_first_ke(state, message) or not state.secrets:
        _abandon(engine, sa, state, "key-exchange")
        return
    _continue(engine, sa, state, message, now)


def _finish_ike_rekey(
    engine: IkeEngine, old: IkeSa, state: Negotiation, now: float
) -> None:
    """RFC 7296 §2.18: the new IKE SA takes over the Child SAs."""
    from qsgw.ike.tasks import ike_init

    assert old.prf is not None and old.keys is not None
    assert state.proposal is not None
    spi_i, spi_r = (
        (state.new_spi, state.peer_spi)
        if state.initiator
        else (state.peer_spi, state.new_spi)
    )
    new = IkeSa(
        unique_id=engine.new_id(),
        connection=old.connection,
        initiator=state.initiator,
        spi_i=spi_i,
        spi_r=spi_r,
        local=old.local,
        remote=old.remote,
        created=now,
    )
    _inherit(new, old, state)

    # SKEYSEED with the old PRF, the seven keys with the new one
    seed = keymat.rekey_skeyseed(
        old.prf, old.keys.sk_d, state.secrets, state.ni, state.nr
    )
    ike_init.setup_cipher(new)
    assert new.prf is not None
    new.context = keymat.SaContext(state.ni, state.nr, spi_i, spi_r)
    new.keys = keymat.expand_ike_keys(
        new.prf, seed, new.context, ike_init.key_sizes(new)
    )
    _take_over(engine, old, new, now, state.initiator)


def _inherit(new: IkeSa, old: IkeSa, state: Negotiation) -> None:
    assert state.proposal is not None
    new.proposal = replace(state.proposal, spi=b"")
    new.ni, new.nr = state.ni, state.nr
    new.ke_method = _ke_of(state.proposal)
    new.ke_methods_done = [(int(TransformType.KE), new.ke_method), *state.rounds]
    new.peer_fragmentation = old.peer_fragmentation
    new.peer_use_ppk, new.peer_childless = old.peer_use_ppk, old.peer_childless
    new.nat_local, new.nat_remote = old.nat_local, old.nat_remote
    new.ppk_used, new.ppk_id = old.ppk_used, old.ppk_id
    new.local_id, new.remote_id = old.local_id, old.remote_id
    new.rekeys = old.rekeys + 1
    new.last_received = old.last_received
    new.rekey_nonce = state.lowest_nonce


def _take_over(
    engine: IkeEngine, old: IkeSa, new: IkeSa, now: float, initiator: bool
) -> None:
    new.state = IkeSaState.ESTABLISHED
    new.established = now
    new.children = old.children
    old.children = {}
    old.state = IkeSaState.REKEYED
    old.delete_at = now + engine.settings.delete_rekeyed_delay
    old.rekeyed_to.append(new.unique_id)
    engine.register(new)
    timers.schedule_ike(engine, new, now)
    old.log.info("IKE SA rekeyed, replaced by %d", new.unique_id)
    engine.emit(IkeSaRekeyed(old.unique_id, new.unique_id, old.connection.name))

    twins = [engine.sas[i] for i in old.rekeyed_to if i in engine.sas]
    if len(twins) > 1:
        _resolve_ike_collision(engine, old, twins, now)
    elif initiator:
        # RFC 7296 §1.3.2: the rekey's initiator deletes the old IKE SA
        informational.delete_ike(engine, old, now, reason="rekeyed")


def _resolve_ike_collision(
    engine: IkeEngine, old: IkeSa, twins: list[IkeSa], now: float
) -> None:
    """RFC 7296 §2.8.2: both ends rekeyed `old`. The new IKE SA whose
    exchange had the lowest nonce is deleted by its initiator; the Child SAs
    move to the other, whose initiator deletes `old`."""
    loser = min(twins, key=lambda s: s.rekey_nonce)
    winner = next(s for s in twins if s is not loser)
    engine.touch(winner)
    engine.touch(loser)
    old.log.info("IKE SA rekey collision, %d stays", winner.unique_id)
    winner.children.update(loser.children)
    loser.children = {}
    old.rekeyed_to = [winner.unique_id]
    if loser.initiator:
        informational.delete_ike(engine, loser, now, reason="rekey-collision")
    if winner.initiator:
        informational.delete_ike(engine, old, now, reason="rekeyed")


# ---------------------------------------------------------------- responder


def respond(engine: IkeEngine, sa: IkeSa, message: Message, now: float) -> Reply:
    if message.exchange == ExchangeType.IKE_FOLLOWUP_KE:
        return _respond_followup(engine, sa, message, now)
    sa_payload = message.first(SaPayload)
    nonce = message.first(NoncePayload)
    if not isinstance(sa_payload, SaPayload) or not isinstance(nonce, NoncePayload):
        raise ProtocolError(NotifyType.INVALID_SYNTAX, "create-child")
    if sa_payload.proposals and int(sa_payload.proposals[0].protocol) == ProtocolId.IKE:
        return _respond_ike_rekey(engine, sa, message, sa_payload, nonce.data, now)
    return _respond_child(engine, sa, message, nonce.data, now)


def _rekeyed_child(sa: IkeSa, message: Message) -> ChildSa | None:
    """The Child SA named by N(REKEY_SA): the peer's inbound SPI is our
    outbound one (RFC 7296 §1.3.3)."""
    notifies = message.notifies(NotifyType.REKEY_SA)
    if not notifies:
        return None
    notify = notifies[0]
    if int(notify.protocol) != ProtocolId.ESP:
        raise ProtocolError(NotifyType.INVALID_SYNTAX, "rekey-protocol")
    for child in sa.children.values():
        if child.outbound_spi == notify.spi and child.state != ChildSaState.DELETING:
            return child
    raise ProtocolError(NotifyType.CHILD_SA_NOT_FOUND, "child-sa-not-found")


def _respond_child(
    engine: IkeEngine, sa: IkeSa, message: Message, ni: bytes, now: float
) -> Reply:
    old = _rekeyed_child(sa, message)
    spec_name = old.spec.name if old is not None else None
    offer = child_sa.respond(engine, sa, message, spec_name=spec_name, with_ke=True)
    child = offer.child
    if child is None or child.proposal is None:
        return Reply(offer.payloads)

    method = _ke_of(child.proposal)
    state = Negotiation(False, ni, engine.rng(engine.settings.nonce_size))
    ke_payloads: list[Payload] = []
    if method:
        ke_data, shared = _respond_ke(engine, method, message)
        state.secrets.append(shared)
        ke_payloads.append(KePayload(method, ke_data))
    state.child, state.old_child, state.proposal = child, old, child.proposal
    state.rounds = proposals.additional_ke_methods(child.proposal)

    sa_answer, tsi, tsr = offer.payloads
    payloads = [sa_answer, NoncePayload(state.nr), *ke_payloads, tsi, tsr]
    return _respond_or_wait(engine, sa, state, payloads, now)


def _respond_or_wait(
    engine: IkeEngine,
    sa: IkeSa,
    state: Negotiation,
    payloads: list[Payload],
    now: float,
) -> Reply:
    """Finish now, or ask for the next IKE_FOLLOWUP_KE round."""
    if _rounds_done(state) < len(state.rounds):
        state.link = engine.rng(LINK_SIZE)
        link = NotifyPayload(NotifyType.ADDITIONAL_KEY_EXCHANGE, data=state.link)
        if state not in sa.negotiations:
            sa.negotiations.append(state)
        # <-- { ..., N(ADDITIONAL_KEY_EXCHANGE)(link) }
        return Reply([*payloads, link])

    def after(sealed: Sealed) -> None:
        _finish(engine, sa, state, now)

    return Reply(payloads, after)


def _respond_followup(
    engine: IkeEngine, sa: IkeSa, message: Message, now: float
) -> Reply:
    link = _link_of(message)
    state = next(
        (s for s in sa.negotiations if not s.initiator and s.link == link and link),
        None,
    )
    if state is None:
        raise ProtocolError(NotifyType.STATE_NOT_FOUND, "state-not-found")
    _, method = state.rounds[_rounds_done(state)]
    ke_data, shared = _respond_ke(engine, method, message)
    state.secrets.append(shared)
    state.link = b""
    # <-- IKE_FOLLOWUP_KE { KEr(n), [N(ADDITIONAL_KEY_EXCHANGE)] }
    return _respond_or_wait(engine, sa, state, [KePayload(method, ke_data)], now)


def _respond_ike_rekey(
    engine: IkeEngine,
    sa: IkeSa,
    message: Message,
    sa_payload: SaPayload,
    ni: bytes,
    now: float,
) -> Reply:
    offered = sa_payload.proposals
    if any(len(p.spi) != 8 for p in offered):
        raise ProtocolError(NotifyType.INVALID_SYNTAX, "ike-spi")
    chosen = proposals.select_proposal(sa.connection.ike_proposals, offered)
    if chosen is None:
        raise ProtocolError(NotifyType.NO_PROPOSAL_CHOSEN, "no-proposal-chosen")
    method = _ke_of(chosen)
    ke_data, shared = _respond_ke(engine, method, message)

    state = Negotiation(False, ni, engine.rng(engine.settings.nonce_size))
    state.ike_rekey = True
    state.secrets.append(shared)
    state.peer_spi, state.new_spi = chosen.spi, engine.new_ike_spi()
    state.proposal = chosen
    state.rounds = proposals.additional_ke_methods(chosen)
    answer = replace(chosen, spi=state.new_spi)
    payloads: list[Payload] = [
        SaPayload((answer,)),
        NoncePayload(state.nr),
        KePayload(method, ke_data),
    ]
    # <-- CREATE_CHILD_SA { SA, Nr, KEr }
    return _respond_or_wait(engine, sa, state, payloads, now)
