"""INITIAL_CONTACT (RFC 7296 §2.4): sent only when the initiator has no
other IKE SA with the peer, so that further IKE SAs of one connection do
not make the responder delete the earlier ones."""

from __future__ import annotations

from ike_peers import Link, connection

from qsgw.ike.codec import parse_message
from qsgw.ike.constants import ExchangeType, NotifyType
from qsgw.ike.events import IkeSaDeleted, IkeSaEstablished
from qsgw.ike.payloads import NotifyPayload
from qsgw.ike.tasks import wire


def _carries_initial_contact(link: Link) -> bool:
    """Deliver up to the IKE_AUTH request, open it with the responder's
    keys, report whether it has N(INITIAL_CONTACT), then deliver it."""
    for _ in range(10):
        hops = link.collect()
        hop = hops[0] if hops else None
        assert hop is not None, "no IKE_AUTH request was sent"
        message = parse_message(hop.datagram.data)
        if hop.to_responder and message.header.exchange == ExchangeType.IKE_AUTH:
            break
        link.step()
    else:
        raise AssertionError("no IKE_AUTH request was sent")

    spi_r = message.header.spi_r
    sa_r = link.r.engine.by_spi[spi_r]
    opened = wire.open_message(link.r.engine, sa_r, hop.datagram.data, message)
    assert opened is not None
    sa_r.reassembly.clear()
    return any(
        isinstance(p, NotifyPayload) and p.type == NotifyType.INITIAL_CONTACT
        for p in opened.message.payloads
    )


def _deleted(link: Link) -> list[str]:
    return [e.reason for e in link.r.of(IkeSaDeleted) if isinstance(e, IkeSaDeleted)]


def test_first_ike_sa_of_a_connection_carries_initial_contact() -> None:
    link = Link(connection(initiator=True), connection(initiator=False))
    link.initiate()
    assert _carries_initial_contact(link)
    link.run()
    assert len(link.r.of(IkeSaEstablished)) == 1


def test_second_ike_sa_of_a_connection_leaves_the_first_up() -> None:
    link = Link(connection(initiator=True), connection(initiator=False))
    link.initiate()
    link.run()
    link.initiate()
    assert not _carries_initial_contact(link)
    link.run()

    assert _deleted(link) == []
    assert len(link.r.engine.ike_sas()) == 2
    assert [s.state for s in link.i.engine.ike_sas()] == ["ESTABLISHED"] * 2


def test_ike_sas_initiated_together_all_stay_up() -> None:
    link = Link(connection(initiator=True), connection(initiator=False))
    for _ in range(3):
        link.initiate()
    link.run()

    assert _deleted(link) == []
    assert [s.state for s in link.r.engine.ike_sas()] == ["ESTABLISHED"] * 3
    assert [s.state for s in link.i.engine.ike_sas()] == ["ESTABLISHED"] * 3


def test_restarted_peer_sends_initial_contact_in_its_first_ike_sa_only() -> None:
    responder = connection(initiator=False, dpd_delay=0)
    link = Link(connection(initiator=True), responder)
    for _ in range(2):
        link.initiate()
        link.run()
    # the initiator restarts and forgets both IKE SAs
    link.i = Link(connection(initiator=True), responder, seeds=(9, 2)).i
    link.initiate()
    assert _carries_initial_contact(link)
    link.run()
    assert _deleted(link) == ["initial-contact"] * 2

    link.initiate()
    assert not _carries_initial_contact(link)
    link.run()
    assert _deleted(link) == ["initial-contact"] * 2
    assert len(link.r.engine.ike_sas()) == 2
