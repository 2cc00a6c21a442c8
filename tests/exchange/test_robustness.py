"""Lost, late, doubled and hostile messages (RFC 7296 §2.1-§2.3, §2.21).

Each hostile message must be answered as the RFC says (or dropped), leave
both peers' state as it was, consume no message ID and be reported as a
MessageRejected event.
"""

from __future__ import annotations

import pytest
from ike_peers import Hop, Link, connection

from qsgw.ike.codec import parse_message
from qsgw.ike.constants import ExchangeType, HeaderFlag, NotifyType
from qsgw.ike.engine import Datagram, EngineSettings
from qsgw.ike.events import (
    ChildSaEstablished,
    IkeSaEstablished,
    MessageRejected,
)
from qsgw.ike.payloads import IkeHeader, NotifyPayload, UnknownPayload
from qsgw.ike.tasks import wire

HYBRID = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"


def _established() -> Link:
    link = Link(connection(initiator=True), connection(initiator=False, dpd_delay=0))
    link.initiate()
    link.run()
    return link


def _rejections(link: Link) -> list[str]:
    return [
        e.reason
        for e in link.i.of(MessageRejected) + link.r.of(MessageRejected)
        if isinstance(e, MessageRejected)
    ]


def _snapshot(link: Link) -> list[object]:
    return [link.i.engine.ike_sas(), link.r.engine.ike_sas()]


def test_dropped_ike_sa_init_request_is_retransmitted() -> None:
    link = Link(connection(initiator=True), connection(initiator=False))
    link.initiate()
    # IKE_SA_INIT { SA, KEi, Ni } --> lost
    assert link.drop_next() is not None
    link.advance(4.0)
    # IKE_SA_INIT { SA, KEi, Ni } --> again, after 4 s
    link.run()
    assert link.i.of(IkeSaEstablished) and link.r.of(IkeSaEstablished)


def test_dropped_ike_auth_response_is_resent_from_cache() -> None:
    link = Link(connection(initiator=True), connection(initiator=False))
    link.initiate()
    link.step()  # IKE_SA_INIT request
    link.step()  # IKE_SA_INIT response
    link.step()  # IKE_AUTH request
    # <-- IKE_AUTH { IDr, AUTH, SAr2, TSi, TSr } lost
    assert link.drop_next() is not None
    assert len(link.r.of(ChildSaEstablished)) == 1
    link.advance(4.0)
    # IKE_AUTH --> retransmitted; <-- the same response, from the cache
    link.run()
    assert len(link.i.of(ChildSaEstablished)) == 1
    assert len(link.r.of(ChildSaEstablished)) == 1  # nothing was redone


def test_duplicated_request_is_answered_from_cache_without_state_change() -> None:
    link = Link(connection(initiator=True), connection(initiator=False))
    link.initiate()
    link.step()
    link.step()
    (auth_request,) = link.take()
    link.deliver(auth_request)
    first = [h.datagram.data for h in link.collect()]
    # IKE_AUTH --> delivered a second time
    link.deliver(auth_request)
    hops = link.collect()
    assert [h.datagram.data for h in hops] == first * 2
    link.run()
    assert len(link.r.of(IkeSaEstablished)) == 1
    assert len(link.i.of(IkeSaEstablished)) == 1
    assert "message-id" in _rejections(link)  # the stale second response


def test_duplicated_ike_sa_init_request_gets_the_same_response() -> None:
    link = Link(connection(initiator=True), connection(initiator=False))
    link.initiate()
    (request,) = link.take()
    link.deliver(request)
    link.deliver(request)
    hops = [h for h in link.collect() if not h.to_responder]
    assert len(hops) == 2 and hops[0].datagram.data == hops[1].datagram.data
    assert len(link.r.engine.ike_sas()) == 1


def test_reordered_fragments_are_reassembled() -> None:
    link = Link(
        connection(initiator=True, proposal=HYBRID, fragment_size=576),
        connection(initiator=False, proposal=HYBRID, fragment_size=576),
    )
    link.initiate()
    link.step()
    link.step()
    fragments = link.take()
    for hop in reversed(fragments):
        link.deliver(hop)
    link.run()
    assert link.i.of(IkeSaEstablished) and link.r.of(IkeSaEstablished)


def _tamper(hop: Hop, position: int) -> Hop:
    data = bytearray(hop.datagram.data)
    data[position] ^= 0x01
    dg = hop.datagram
    return Hop(Datagram(bytes(data), dg.local, dg.remote), hop.to_responder)


def test_bad_icv_is_dropped_and_consumes_no_message_id() -> None:
    link = Link(connection(initiator=True), connection(initiator=False))
    link.initiate()
    link.step()
    link.step()
    (auth_request,) = link.take()
    before = _snapshot(link)
    # IKE_AUTH with one ICV bit flipped -->
    link.deliver(_tamper(auth_request, -1))
    assert link.collect() == []
    assert _snapshot(link) == before
    assert "icv" in _rejections(link)
    # the genuine request still gets through with the same message ID
    link.deliver(auth_request)
    link.run()
    assert link.r.of(IkeSaEstablished) and link.i.of(IkeSaEstablished)


def test_encrypted_message_for_half_open_sa_before_ike_sa_init_is_dropped() -> None:
    link = Link(connection(initiator=True), connection(initiator=False))
    link.initiate()
    (request,) = link.collect()
    header = parse_message(request.datagram.data).header
    # an IKE_AUTH-shaped message for an SPI the responder has not seen
    forged = IkeHeader(
        header.spi_i, b"\x01" * 8, 0, ExchangeType.IKE_AUTH, HeaderFlag.INITIATOR, 1
    )
    data = wire.encode_plain(forged, [NotifyPayload(NotifyType.INITIAL_CONTACT)])
    dg = request.datagram
    link.r.engine.receive_datagram(data, dg.remote, dg.local, link.now)
    assert link.r.engine.datagrams_to_send() == []
    assert link.r.engine.ike_sas() == []
    assert "unknown-spi" in _rejections(link)


@pytest.mark.parametrize("offset", [-1, 1, 5])
def test_out_of_window_message_ids_are_dropped(offset: int) -> None:
    link = _established()
    (sa_i,) = link.i.engine.sas.values()
    before = _snapshot(link)
    header = link.i.engine.header(
        sa_i, ExchangeType.INFORMATIONAL, sa_i.send_mid + offset, response=False
    )
    sealed = wire.seal(link.i.engine, sa_i, header, [])
    dg = Datagram(sealed.datagrams[0], sa_i.local, sa_i.remote)
    link.r.engine.receive_datagram(dg.data, dg.remote, dg.local, link.now)
    assert link.r.engine.datagrams_to_send() == []
    assert _snapshot(link) == before
    assert "message-id" in _rejections(link)


def test_unknown_critical_payload_inside_sk_gets_unsupported_critical_payload() -> None:
    link = _established()
    (sa_i,) = link.i.engine.sas.values()
    header = link.i.engine.header(
        sa_i, ExchangeType.INFORMATIONAL, sa_i.send_mid, response=False
    )
    bogus = UnknownPayload(type=200, body=b"\x00" * 4, critical=True)
    sealed = wire.seal(link.i.engine, sa_i, header, [bogus])
    link.r.engine.receive_datagram(
        sealed.datagrams[0], sa_i.remote, sa_i.local, link.now
    )
    (answer,) = link.r.engine.datagrams_to_send()
    # <-- INFORMATIONAL { N(UNSUPPORTED_CRITICAL_PAYLOAD, 200) }
    opened = wire.open_message(
        link.i.engine, sa_i, answer.data, parse_message(answer.data)
    )
    assert opened is not None
    (notify,) = opened.message.payloads
    assert isinstance(notify, NotifyPayload)
    assert notify.type == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
    assert notify.data == bytes([200])
    assert link.r.engine.ike_sas()[0].state == "ESTABLISHED"
    assert "unknown-critical-payload" in _rejections(link)


def _hybrid_link() -> Link:
    return Link(
        connection(initiator=True, proposal=HYBRID, fragment_size=576),
        connection(initiator=False, proposal=HYBRID, fragment_size=576),
    )


def test_retransmitted_fragmented_request_is_answered_once_from_cache() -> None:
    link = _hybrid_link()
    link.initiate()
    link.step()
    link.step()
    fragments = link.take()
    for hop in fragments:
        link.deliver(hop)
    answer = [h.datagram.data for h in link.take()]
    assert answer
    # IKE_INTERMEDIATE fragments --> all again (a retransmission)
    for hop in fragments:
        link.deliver(hop)
    again = [h.datagram.data for h in link.take()]
    assert again == answer  # answered once, on fragment 1, from the cache


def test_lost_first_fragment_is_recovered_by_the_retransmission() -> None:
    link = _hybrid_link()
    link.initiate()
    link.step()
    link.step()
    # IKE_INTERMEDIATE { SKF(1/n) } is lost, the later fragments -->
    fragments = link.take()
    assert len(fragments) > 1
    for hop in fragments[1:]:
        link.deliver(hop)
    assert link.take() == []  # nothing to answer yet

    # RFC 7296 §2.1: the initiator resends every fragment, the same octets
    link.advance(EngineSettings().retransmit_timeout)
    again = link.take()
    assert [h.datagram for h in again] == [h.datagram for h in fragments]
    for hop in again:
        link.deliver(hop)
    link.run()
    assert link.i.of(IkeSaEstablished) and link.r.of(IkeSaEstablished)


def test_fragment_with_bad_icv_is_dropped_and_the_message_still_completes() -> None:
    link = _hybrid_link()
    link.initiate()
    link.step()
    link.step()
    fragments = link.take()
    link.deliver(_tamper(fragments[1], -1))
    assert "icv" in _rejections(link)
    for hop in fragments:
        link.deliver(hop)
    link.run()
    assert link.i.of(IkeSaEstablished) and link.r.of(IkeSaEstablished)


def test_bad_icv_in_intermediate_response_changes_no_keys() -> None:
    link = _hybrid_link()
    link.initiate()
    link.step()
    link.step()
    for hop in link.take():
        link.deliver(hop)
    responses = link.take()
    (sa_i,) = link.i.engine.sas.values()
    keys_before = sa_i.keys
    link.deliver(_tamper(responses[0], -1))
    assert sa_i.keys is keys_before
    assert sa_i.pending is not None  # still waiting for the real response
    for hop in responses:
        link.deliver(hop)
    link.run()
    assert link.i.of(IkeSaEstablished)
