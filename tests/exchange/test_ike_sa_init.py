"""IKE_SA_INIT answers without state: INVALID_KE_PAYLOAD and COOKIE."""

from __future__ import annotations

from ike_peers import Link, connection

from qsgw.ike.codec import parse_message
from qsgw.ike.constants import NotifyType
from qsgw.ike.engine import EngineSettings
from qsgw.ike.events import IkeSaEstablished, MessageRejected
from qsgw.ike.payloads import KePayload, NotifyPayload
from qsgw.ike.tasks import wire


def test_invalid_ke_payload_makes_initiator_retry_with_preferred_method() -> None:
    link = Link(
        connection(initiator=True, proposal="aes256gcm16-prfsha384-x25519-ecp256"),
        connection(initiator=False, proposal="aes256gcm16-prfsha384-ecp256"),
    )
    link.initiate()
    # IKE_SA_INIT { SA, KEi(x25519), Ni } -->
    link.step()
    # <-- IKE_SA_INIT { N(INVALID_KE_PAYLOAD, ecp256) }, no responder state
    (answer,) = link.collect()
    notify = parse_message(answer.datagram.data).payloads[0]
    assert isinstance(notify, NotifyPayload)
    assert notify.type == NotifyType.INVALID_KE_PAYLOAD
    assert notify.data == (19).to_bytes(2, "big")
    assert link.r.engine.ike_sas() == []
    link.step()
    # IKE_SA_INIT { SA, KEi(ecp256), Ni } -->
    (retry,) = link.collect()
    ke = parse_message(retry.datagram.data).first(KePayload)
    assert isinstance(ke, KePayload) and ke.method == 19
    link.run()
    assert link.i.engine.ike_sas()[0].algorithms["ke"] == "ecp256"
    assert link.r.of(IkeSaEstablished)


def test_cookie_is_demanded_above_threshold_and_then_accepted() -> None:
    link = Link(
        connection(initiator=True),
        connection(initiator=False),
        settings=EngineSettings(cookie_threshold=0),
    )
    link.initiate()
    # IKE_SA_INIT { SA, KEi, Ni } -->
    link.step()
    # <-- IKE_SA_INIT { N(COOKIE) }, no responder state
    assert link.r.engine.ike_sas() == []
    assert any(
        isinstance(e, MessageRejected) and e.reason == "cookie-required"
        for e in link.r.drain()
    )
    (answer,) = link.collect()
    notify = parse_message(answer.datagram.data).payloads[0]
    assert isinstance(notify, NotifyPayload) and notify.type == NotifyType.COOKIE
    link.step()
    # IKE_SA_INIT { N(COOKIE), SA, KEi, Ni } -->
    (retry,) = link.collect()
    first = parse_message(retry.datagram.data).payloads[0]
    assert isinstance(first, NotifyPayload) and first.data == notify.data
    link.run()
    assert link.r.of(IkeSaEstablished) and link.i.of(IkeSaEstablished)


def test_no_common_proposal_is_answered_with_no_proposal_chosen() -> None:
    link = Link(
        connection(initiator=True, proposal="aes128gcm16-prfsha256-x25519"),
        connection(initiator=False, proposal="aes256gcm16-prfsha384-x25519"),
    )
    link.initiate()
    link.step()
    (answer,) = link.collect()
    notify = parse_message(answer.datagram.data).payloads[0]
    assert isinstance(notify, NotifyPayload)
    assert notify.type == NotifyType.NO_PROPOSAL_CHOSEN
    link.run()
    assert link.i.engine.ike_sas() == [] and link.r.engine.ike_sas() == []


def test_malformed_key_exchange_data_is_answered_invalid_syntax_without_state() -> None:
    link = Link(connection(initiator=True), connection(initiator=False))
    link.initiate()
    (request,) = link.take()
    message = parse_message(request.datagram.data)
    payloads = tuple(
        KePayload(p.method, p.data[:-1]) if isinstance(p, KePayload) else p
        for p in message.payloads
    )
    data = wire.encode_plain(message.header, payloads)
    dg = request.datagram
    link.r.engine.receive_datagram(data, dg.remote, dg.local, link.now)
    (answer,) = link.r.engine.datagrams_to_send()
    notify = parse_message(answer.data).payloads[0]
    assert isinstance(notify, NotifyPayload)
    assert notify.type == NotifyType.INVALID_SYNTAX
    assert link.r.engine.ike_sas() == []
    assert any(
        isinstance(e, MessageRejected) and e.reason == "key-exchange"
        for e in link.r.drain()
    )


def test_unsolicited_ike_sa_init_response_is_dropped() -> None:
    link = Link(connection(initiator=True), connection(initiator=False))
    link.initiate()
    link.step()
    (response,) = link.take()
    link.deliver(response)
    link.deliver(response)  # a duplicate, after the initiator moved on
    assert any(
        isinstance(e, MessageRejected) and e.reason == "unexpected-response"
        for e in link.i.drain()
    )
    link.run()
    assert link.i.of(IkeSaEstablished)
