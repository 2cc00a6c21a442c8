"""IKE SA setup between two in-memory qsgw peers (RFC 7296 §1.2)."""

from __future__ import annotations

from dataclasses import replace

from ike_peers import Link, connection, fingerprint

from qsgw.ike import protection
from qsgw.ike.codec import parse_message
from qsgw.ike.constants import PayloadType
from qsgw.ike.events import (
    ChildSaEstablished,
    IkeSaEstablished,
)
from qsgw.ike.payloads import payload_type
from qsgw.ike.tasks import wire


def _keys(link: Link) -> tuple[ChildSaEstablished, ChildSaEstablished]:
    (ci,) = link.i.of(ChildSaEstablished)
    (cr,) = link.r.of(ChildSaEstablished)
    assert isinstance(ci, ChildSaEstablished) and isinstance(cr, ChildSaEstablished)
    return ci, cr


def test_psk_x25519_brings_up_ike_sa_and_child_sa_with_matching_keys() -> None:
    link = Link(connection(initiator=True), connection(initiator=False))
    link.initiate()
    # IKE_SA_INIT { SA, KEi, Ni, N(NAT_D) } -->
    # <-- IKE_SA_INIT { SA, KEr, Nr, N(NAT_D) }
    # IKE_AUTH { IDi, IDr, AUTH, SAi2, TSi, TSr } -->
    # <-- IKE_AUTH { IDr, AUTH, SAr2, TSi, TSr }
    assert link.run() == 4

    assert len(link.i.of(IkeSaEstablished)) == 1
    assert len(link.r.of(IkeSaEstablished)) == 1
    ci, cr = _keys(link)
    assert ci.keys.outbound_spi == cr.keys.inbound_spi
    assert ci.keys.inbound_spi == cr.keys.outbound_spi
    assert fingerprint(ci.keys.encryption_key_out) == fingerprint(
        cr.keys.encryption_key_in
    )
    assert fingerprint(ci.keys.encryption_key_in) == fingerprint(
        cr.keys.encryption_key_out
    )
    assert fingerprint(ci.keys.encryption_key_in) != fingerprint(
        ci.keys.encryption_key_out
    )
    assert len(ci.keys.encryption_key_out) == 36  # AES-256 key + 4-octet salt


HYBRID = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"


def test_hybrid_x25519_mlkem768_runs_fragmented_ike_intermediate() -> None:
    link = Link(
        connection(initiator=True, proposal=HYBRID, fragment_size=576),
        connection(initiator=False, proposal=HYBRID, fragment_size=576),
    )
    link.initiate()
    # IKE_SA_INIT { SA, KEi(x25519), Ni, N(INTERMEDIATE_EXCHANGE_SUPPORTED) } -->
    assert link.step() is not None
    # <-- IKE_SA_INIT { SA, KEr, Nr, N(INTERMEDIATE_EXCHANGE_SUPPORTED) }
    assert link.step() is not None
    # IKE_INTERMEDIATE { KEi(1) = ML-KEM-768 ek } --> in SKF fragments
    fragments = [h for h in link.collect() if h.to_responder]
    assert len(fragments) >= 3
    assert all(len(h.datagram.data) + 28 <= 576 for h in fragments)
    # <-- IKE_INTERMEDIATE { KEr(1) = ct }, IKE_AUTH both ways
    link.run()

    (ike_i,) = link.i.engine.ike_sas()
    (ike_r,) = link.r.engine.ike_sas()
    assert ike_i.state == ike_r.state == "ESTABLISHED"
    assert ike_i.algorithms["ke"] == "x25519"
    assert ike_i.algorithms["ke1"] == "mlkem768"
    ci, cr = _keys(link)
    assert fingerprint(ci.keys.encryption_key_out) == fingerprint(
        cr.keys.encryption_key_in
    )


def _intermediate_request(fragment_size: int) -> list[bytes]:
    link = Link(
        connection(initiator=True, proposal=HYBRID, fragment_size=fragment_size),
        connection(initiator=False, proposal=HYBRID, fragment_size=fragment_size),
    )
    link.initiate()
    link.step()
    link.step()
    return [hop.datagram.data for hop in link.take()]


def test_message_within_the_datagram_limit_goes_unfragmented() -> None:
    """RFC 7383 §2.5: only a message too large for the limit is fragmented.
    IKE_INTERMEDIATE { KEi(1) = ML-KEM-768 ek } is 1249 octets (IKE header
    28, SK header 4, IV 8, KE payload 8 + 1184, Pad Length 1, ICV 16): in
    IPv4 and UDP on port 500, a 1277-octet datagram."""
    (whole,) = _intermediate_request(1277)
    assert len(whole) == 1249
    assert payload_type(parse_message(whole).payloads[0]) == PayloadType.SK

    fragments = _intermediate_request(1276)
    assert len(fragments) == 2
    assert all(len(f) + 28 <= 1276 for f in fragments)
    assert {payload_type(parse_message(f).payloads[0]) for f in fragments} == {
        PayloadType.SKF
    }


def test_mlkem768_alone_in_ike_sa_init_establishes() -> None:
    proposal = "aes256gcm16-prfsha384-mlkem768"
    link = Link(
        connection(initiator=True, proposal=proposal),
        connection(initiator=False, proposal=proposal),
    )
    link.initiate()
    assert link.run() == 4
    assert link.i.engine.ike_sas()[0].algorithms["ke"] == "mlkem768"
    ci, cr = _keys(link)
    assert fingerprint(ci.keys.integrity_key_out) == fingerprint(
        cr.keys.integrity_key_in
    )


def test_intauth_octets_of_a_fragmented_message_are_those_of_it_unfragmented() -> None:
    """RFC 9242 §3.3.2: A and P are computed as if the IKE_INTERMEDIATE
    message were not fragmented, on the sending and the receiving side."""
    link = Link(
        connection(initiator=True, proposal=HYBRID, fragment_size=1276),
        connection(initiator=False, proposal=HYBRID, fragment_size=1276),
    )
    link.initiate()
    link.step()
    link.step()
    fragments = [hop.datagram.data for hop in link.take()]
    assert len(fragments) == 2  # KEi(mlkem768) does not fit 1276 octets
    (sa_i,) = link.i.engine.sas.values()
    (sa_r,) = link.r.engine.sas.values()

    header = parse_message(fragments[0]).header
    first = wire.open_message(
        link.r.engine, sa_r, fragments[0], parse_message(fragments[0])
    )
    assert first is None  # fragment 2 still missing
    opened = wire.open_message(
        link.r.engine, sa_r, fragments[1], parse_message(fragments[1])
    )
    assert opened is not None
    sa_i.connection = replace(sa_i.connection, fragment_size=4000)
    whole = wire.seal(link.i.engine, sa_i, header, list(opened.message.payloads))

    assert len(whole.datagrams) == 1
    expected = protection.intauth_octets(whole.datagrams[0], whole.plaintext)
    assert opened.intauth_octets() == expected
    assert whole.intauth_octets() == expected
