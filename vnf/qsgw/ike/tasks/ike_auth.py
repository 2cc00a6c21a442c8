"""IKE_AUTH with a shared key (RFC 7296 §1.2, §2.15), PPK (RFC 8784) and
IntAuth (RFC 9242 §3.3.2).

    HDR, SK { IDi, [IDr,] AUTH, [N(INITIAL_CONTACT),]
              [N(PPK_IDENTITY), [N(NO_PPK_AUTH)],] [SAi2, TSi, TSr] }  -->
                  <--  HDR, SK { IDr, AUTH, [N(PPK_IDENTITY)],
                                 [SAr2, TSi, TSr] }

Without SAi2/TSi/TSr the IKE SA comes up childless (RFC 6023).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qsgw.ike import keymat, proposals
from qsgw.ike.config import Childless, ConnectionSpec, Identity, Ppk, StartAction
from qsgw.ike.constants import (
    AuthMethod,
    ExchangeType,
    IdType,
    NotifyType,
    PpkIdType,
)
from qsgw.ike.errors import ProtocolError
from qsgw.ike.events import IkeSaEstablished
from qsgw.ike.payloads import (
    AuthPayload,
    IdPayload,
    Message,
    NotifyPayload,
    Payload,
    SaPayload,
)
from qsgw.ike.sa import ChildSa, IkeSa, IkeSaState
from qsgw.ike.tasks import child_sa
from qsgw.ike.tasks.ike_init import CHILDLESS_IKEV2_SUPPORTED
from qsgw.ike.tasks.wire import Reply

if TYPE_CHECKING:
    from qsgw.ike.engine import IkeEngine

_log = logging.getLogger(__name__)

_PSK = AuthMethod.SHARED_KEY_MESSAGE_INTEGRITY_CODE


def _auth_failed(reason: str) -> ProtocolError:
    return ProtocolError(NotifyType.AUTHENTICATION_FAILED, reason)


def _id_payload(identity: Identity, *, initiator: bool) -> IdPayload:
    return IdPayload(initiator, identity.id_type, identity.data)


def _ppk_identity(ppk: Ppk) -> NotifyPayload:
    """RFC 8784 §3: PPK_IDENTITY with PPK_ID_FIXED, as strongSwan sends."""
    data = bytes([PpkIdType.PPK_ID_FIXED]) + ppk.id
    return NotifyPayload(NotifyType.PPK_IDENTITY, data=data)


def _intauth(sa: IkeSa, ike_auth_mid: int) -> bytes:
    """RFC 9242 §3.3.2: only when an IKE_INTERMEDIATE exchange happened."""
    if not sa.intermediate_done:
        return b""
    return keymat.intauth_value(sa.intauth_i, sa.intauth_r, ike_auth_mid)


def _auth_data(
    sa: IkeSa, psk: bytes, sk_p: bytes, id_payload: IdPayload, intauth: bytes
) -> bytes:
    """RFC 7296 §2.15: our AUTH, or the peer's expected one; the role
    follows `id_payload.initiator`."""
    assert sa.prf is not None
    if id_payload.initiator:
        real_message, nonce = sa.init_request, sa.nr
    else:
        real_message, nonce = sa.init_response, sa.ni
    octets = keymat.signed_octets(
        sa.prf, real_message, nonce, sk_p, id_payload.body, intauth
    )
    return keymat.psk_auth(sa.prf, psk, octets)


# ---------------------------------------------------------------- initiator


def start(engine: IkeEngine, sa: IkeSa, now: float) -> None:
    """Send our IKE_AUTH request."""
    spec = sa.connection
    use_ppk = bool(sa.peer_use_ppk and spec.ppks)
    if spec.psk is None:
        engine.fail(sa, "no-psk")
        return
    if spec.ppk_required and not use_ppk:
        engine.fail(sa, "ppk-required")
        return
    child = _first_child(engine, sa)
    if child is False:
        engine.fail(sa, "childless-unsupported")
        return

    def on_response(message: Message, now: float) -> None:
        _response(engine, sa, message, now)

    contact = spec.send_initial_contact and not _has_contact(engine, sa)
    payloads = _request(sa, spec, use_ppk, spec.psk.reveal(), sa.send_mid, contact)
    if isinstance(child, ChildSa):
        sa.first_child = child
        payloads += child_sa.request_payloads(sa, child)
    # IKE_AUTH { IDi, [IDr], AUTH, [N(PPK_IDENTITY)], [SAi2, TSi, TSr] } -->
    engine.send_request(sa, ExchangeType.IKE_AUTH, payloads, on_response, now)


def _first_child(engine: IkeEngine, sa: IkeSa) -> ChildSa | bool | None:
    """The Child SA to create with IKE_AUTH; None for a childless IKE SA;
    False when childless is forced but the peer does not support it."""
    spec = sa.connection
    if spec.childless == Childless.FORCE:
        return None if sa.peer_childless else False
    wanted = [c for c in spec.children if c.name == sa.wanted_child]
    chosen = wanted or list(spec.children[:1])
    if not chosen:
        return None if sa.peer_childless else False
    return ChildSa(engine.new_id(), chosen[0], inbound_spi=engine.new_spi())


def _has_contact(engine: IkeEngine, sa: IkeSa) -> bool:
    """RFC 7296 §2.4: whether another IKE SA with this peer exists (one of
    the same connection that is up, or already in its IKE_AUTH exchange)."""
    for other in engine.ike_sas_of(sa.connection.name):
        if other is sa:
            continue
        pending = other.pending
        if other.state != IkeSaState.CONNECTING or (
            pending is not None and pending.exchange == ExchangeType.IKE_AUTH
        ):
            return True
    return False


def _request(
    sa: IkeSa,
    spec: ConnectionSpec,
    use_ppk: bool,
    psk: bytes,
    mid: int,
    initial_contact: bool,
) -> list[Payload]:
    assert sa.keys is not None and sa.prf is not None
    sa.ike_auth_mid = mid
    intauth = _intauth(sa, mid)
    idi = _id_payload(spec.local_id, initiator=True)
    payloads: list[Payload] = [idi]
    if spec.remote_id is not None:
        payloads.append(_id_payload(spec.remote_id, initiator=False))

    keys = sa.keys
    if use_ppk:
        ppk = spec.ppks[0]
        sa.ppk_keys = keymat.apply_ppk(sa.prf, sa.keys, ppk.secret.reveal())
        keys = sa.ppk_keys
    payloads.append(AuthPayload(_PSK, _auth_data(sa, psk, keys.sk_pi, idi, intauth)))
    if initial_contact:
        payloads.append(NotifyPayload(NotifyType.INITIAL_CONTACT))
    if use_ppk:
        payloads.append(_ppk_identity(spec.ppks[0]))
    if use_ppk and not spec.ppk_required:
        # RFC 8784 §3: the Authentication Data computed with SK_pi' (as
        # strongSwan and Libreswan send it: the MAC alone, no method octet)
        plain = _auth_data(sa, psk, sa.keys.sk_pi, idi, intauth)
        payloads.append(NotifyPayload(NotifyType.NO_PPK_AUTH, data=plain))
    return payloads


def _response(engine: IkeEngine, sa: IkeSa, message: Message, now: float) -> None:
    # <-- IKE_AUTH { IDr, AUTH, [N(PPK_IDENTITY)], [SAr2, TSi, TSr] }
    spec = sa.connection
    auth = message.first(AuthPayload)
    idr = _peer_id(message, initiator=False)
    if not isinstance(auth, AuthPayload) or idr is None:
        notify = _first_error(message)
        reason = (
            "auth-failed"
            if notify == NotifyType.AUTHENTICATION_FAILED
            else ("peer-refused")
        )
        engine.fail(sa, reason, notify)
        return

    keys, reason = _responder_keys(sa, message)
    if keys is None or spec.psk is None:
        _local_failure(engine, sa, reason, now)
        return
    if not _identity_ok(spec.remote_id, idr):
        _local_failure(engine, sa, "identity", now)
        return
    expected = _auth_data(
        sa, spec.psk.reveal(), keys.sk_pr, idr, _intauth(sa, sa.ike_auth_mid)
    )
    if auth.method != _PSK or not hmac.compare_digest(expected, auth.data):
        _local_failure(engine, sa, "auth-failed", now)
        return

    sa.remote_id = str(_identity(idr))
    _establish(engine, sa, keys, now)
    child = sa.first_child
    sa.first_child = None
    if child is not None:
        _child_response(engine, sa, child, message, now)
    _start_other_children(engine, sa, child)


def _start_other_children(engine: IkeEngine, sa: IkeSa, first: ChildSa | None) -> None:
    """Children with start_action START beyond the one of IKE_AUTH."""
    from qsgw.ike.tasks import create_child

    for spec in sa.connection.children:
        if spec.start_action != StartAction.START:
            continue
        if first is not None and spec.name == first.spec.name:
            continue
        create_child.queue_new_child(engine, sa, spec.name)


def _first_error(message: Message) -> NotifyType | None:
    for payload in message.payloads:
        if isinstance(payload, NotifyPayload) and int(payload.type) < 16384:
            try:
                return NotifyType(payload.type)
            except ValueError:
                return None
    return None


def _responder_keys(sa: IkeSa, message: Message) -> tuple[keymat.IkeKeys | None, str]:
    """The keys the responder chose: with the PPK when it sent
    PPK_IDENTITY (empty from strongSwan and Libreswan; we take any data)."""
    spec = sa.connection
    confirmed = message.notifies(NotifyType.PPK_IDENTITY)
    if sa.ppk_keys is not None and confirmed:
        sa.ppk_used = True
        sa.ppk_id = spec.ppks[0].id
        return sa.ppk_keys, ""
    if spec.ppk_required:
        return None, "ppk-required"
    return sa.keys, ""


def _local_failure(engine: IkeEngine, sa: IkeSa, reason: str, now: float) -> None:
    """RFC 7296 §2.21.2: tell the responder, then give the SA up."""
    notify = NotifyPayload(NotifyType.AUTHENTICATION_FAILED)
    try:
        engine.send_request(
            sa, ExchangeType.INFORMATIONAL, [notify], lambda m, t: None, now
        )
    finally:
        engine.fail(sa, reason, NotifyType.AUTHENTICATION_FAILED)


def _child_response(
    engine: IkeEngine, sa: IkeSa, child: ChildSa, message: Message, now: float
) -> None:
    problem = child_sa.accept_response(sa, child, message)
    if problem is not None:
        sa.log.info("no Child SA: %s", problem)
        engine.reject(problem, ExchangeType.IKE_AUTH)
        return
    assert sa.keys is not None
    child.initiator = True
    child_sa.derive(sa, child, sa.keys.sk_d, [], sa.ni, sa.nr)
    child_sa.install(engine, sa, child, now)


def _establish(engine: IkeEngine, sa: IkeSa, keys: keymat.IkeKeys, now: float) -> None:
    from qsgw.ike.tasks import timers

    sa.keys_without_ppk = sa.keys
    sa.keys = keys
    sa.ppk_keys = None
    sa.state = IkeSaState.ESTABLISHED
    sa.established = now
    sa.local_id = str(sa.connection.local_id)
    timers.schedule_ike(engine, sa, now)
    # at DEBUG: listeners log the event (the daemon at INFO)
    sa.log.debug("IKE SA established (PPK: %s)", sa.ppk_used)
    engine.emit(
        IkeSaEstablished(
            sa.unique_id, sa.connection.name, sa.initiator, now - sa.created
        )
    )


# ---------------------------------------------------------------- responder


def _peer_id(message: Message, *, initiator: bool) -> IdPayload | None:
    for payload in message.payloads:
        if isinstance(payload, IdPayload) and payload.initiator == initiator:
            return payload
    return None


def _identity(payload: IdPayload) -> Identity:
    try:
        id_type = IdType(payload.id_type)
    except ValueError:
        raise _auth_failed("identity") from None
    return Identity(id_type, payload.data)


def _identity_ok(expected: Identity | None, payload: IdPayload) -> bool:
    if expected is None:
        return True
    return int(expected.id_type) == int(payload.id_type) and (
        expected.data == payload.data
    )


def _connection(sa: IkeSa, idi: IdPayload) -> ConnectionSpec:
    """The connection for this peer among those that matched its address
    and accept the proposal already chosen."""
    first = sa.connection
    if _acceptable(sa, first, idi):
        return first
    others = sa.candidates.accepting(int(idi.id_type), idi.data)
    for spec in others:
        if spec.name != first.name and _acceptable(sa, spec, idi):
            return spec
    raise _auth_failed("identity")


def _acceptable(sa: IkeSa, spec: ConnectionSpec, idi: IdPayload) -> bool:
    assert sa.proposal is not None
    if spec.psk is None or not _identity_ok(spec.remote_id, idi):
        return False
    return proposals.accepts(spec.ike_proposals, sa.proposal)


@dataclass
class _Verified:
    keys: keymat.IkeKeys
    ppk: Ppk | None


def _verify(sa: IkeSa, spec: ConnectionSpec, message: Message) -> _Verified:
    """RFC 7296 §2.15 and RFC 8784 §3 on the responder: use the PPK if we
    have it; fall back to NO_PPK_AUTH only when the PPK is not required."""
    assert sa.keys is not None and sa.prf is not None and spec.psk is not None
    idi = _peer_id(message, initiator=True)
    auth = message.first(AuthPayload)
    if idi is None or not isinstance(auth, AuthPayload) or auth.method != _PSK:
        raise _auth_failed("auth-method")
    psk = spec.psk.reveal()
    intauth = _intauth(sa, message.header.message_id)

    identities = message.notifies(NotifyType.PPK_IDENTITY)
    fallback = message.notifies(NotifyType.NO_PPK_AUTH)
    ppk = _our_ppk(spec, identities) if sa.peer_use_ppk else None
    if ppk is not None:
        keys = keymat.apply_ppk(sa.prf, sa.keys, ppk.secret.reveal())
        expected, received = _auth_data(sa, psk, keys.sk_pi, idi, intauth), auth.data
    elif spec.ppk_required:
        raise _auth_failed("ppk-missing")
    elif identities and fallback:
        keys = sa.keys
        expected = _auth_data(sa, psk, keys.sk_pi, idi, intauth)
        received = fallback[0].data
    else:
        keys = sa.keys
        expected, received = _auth_data(sa, psk, keys.sk_pi, idi, intauth), auth.data
    if not hmac.compare_digest(expected, received):
        raise _auth_failed("auth-failed")
    return _Verified(keys, ppk)


def _our_ppk(spec: ConnectionSpec, identities: Sequence[NotifyPayload]) -> Ppk | None:
    for notify in identities:
        for ppk in spec.ppks:
            if notify.data == _ppk_identity(ppk).data:
                return ppk
    return None


def _initial_contact(engine: IkeEngine, sa: IkeSa) -> None:
    """RFC 7296 §2.4: the peer restarted; its older IKE SAs are stale."""
    for other in engine.ike_sas_of(sa.connection.name):
        if other is sa:
            continue
        if other.remote_id == sa.remote_id and other.state != IkeSaState.CONNECTING:
            engine.delete(other, "initial-contact")


def respond(engine: IkeEngine, sa: IkeSa, message: Message, now: float) -> Reply:
    """Verify the initiator and answer; the IKE SA is up once sent."""
    if sa.addke_rounds and len(sa.ke_methods_done) - 1 < len(sa.addke_rounds):
        raise ProtocolError(NotifyType.INVALID_SYNTAX, "intermediate-missing")
    idi = _peer_id(message, initiator=True)
    if idi is None:
        raise ProtocolError(NotifyType.INVALID_SYNTAX, "identity-missing")
    spec = _connection(sa, idi)
    verified = _verify(sa, spec, message)
    has_child = isinstance(message.first(SaPayload), SaPayload)
    if not has_child and spec.childless == Childless.NEVER:
        raise _auth_failed("childless")

    # from here on the IKE SA is ours: switch to the final keys
    engine.bind_connection(sa, spec)
    sa.remote_id = str(_identity(idi))
    if message.notifies(NotifyType.INITIAL_CONTACT):
        _initial_contact(engine, sa)
    if verified.ppk is not None:
        sa.ppk_used, sa.ppk_id = True, verified.ppk.id
    _establish(engine, sa, verified.keys, now)

    assert spec.psk is not None
    idr = _id_payload(spec.local_id, initiator=False)
    intauth = _intauth(sa, message.header.message_id)
    auth = _auth_data(sa, spec.psk.reveal(), verified.keys.sk_pr, idr, intauth)
    payloads: list[Payload] = [idr, AuthPayload(_PSK, auth)]
    if verified.ppk is not None:
        # RFC 8784 §3: an empty PPK_IDENTITY says the PPK was used (as
        # strongSwan and Libreswan send it)
        payloads.append(NotifyPayload(NotifyType.PPK_IDENTITY))

    if has_child:
        offer = child_sa.respond(engine, sa, message)
        payloads += offer.payloads
        if offer.child is not None:
            child_sa.derive(sa, offer.child, verified.keys.sk_d, [], sa.ni, sa.nr)
            child_sa.install(engine, sa, offer.child, now)
    # <-- IKE_AUTH { IDr, AUTH, [N(PPK_IDENTITY)], [SAr2, TSi, TSr] }
    return Reply(payloads)


__all__ = ["CHILDLESS_IKEV2_SUPPORTED", "respond", "start"]
