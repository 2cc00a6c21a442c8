"""The engine's API around the exchanges: NAT traversal, acquire, reload,
snapshots, and what must never leak."""

from __future__ import annotations

import json

import pytest
from ike_peers import (
    ADDRESS_I,
    NAT_PORT_BASE,
    NAT_PUBLIC,
    PPK_SECRET,
    PSK,
    Link,
    child,
    connection,
    ppk,
)

from qsgw.ike.config import StartAction
from qsgw.ike.constants import ExchangeType
from qsgw.ike.events import (
    ChildSaEstablished,
    ExchangeCompleted,
    IkeSaDeleted,
    IkeSaEstablished,
    MessageRejected,
)
from qsgw.ike.tasks import wire

HYBRID = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"


def test_each_side_reports_the_exchanges_it_completed_and_their_durations() -> None:
    link = Link(
        connection(initiator=True, proposal=HYBRID),
        connection(initiator=False, proposal=HYBRID),
    )
    link.initiate()
    for _ in range(3):
        link.step()  # a request -->
        link.advance(0.125)
        link.step()  # <-- its response, 0.125 s later
    link.run()

    ours = [e for e in link.i.seen if isinstance(e, ExchangeCompleted)]
    theirs = [e for e in link.r.seen if isinstance(e, ExchangeCompleted)]
    names = ["IKE_SA_INIT", "IKE_INTERMEDIATE", "IKE_AUTH"]
    assert [(e.exchange, e.initiator, e.duration) for e in ours] == [
        (name, True, 0.125) for name in names
    ]
    assert [(e.exchange, e.initiator) for e in theirs] == [
        (name, False) for name in names
    ]


def _deliver_without_deferred_work(link: Link, to_responder: bool) -> None:
    """Hand the next datagram over as the daemon does, but leave the work
    the sender put aside undone (as if it had not got to it yet)."""
    sender = link.i if to_responder else link.r
    receiver = link.r if to_responder else link.i
    for datagram in sender.engine.datagrams_to_send():
        receiver.engine.receive_datagram(
            datagram.data, datagram.remote, datagram.local, link.now
        )


def test_responder_answers_ike_sa_init_before_deriving_its_keys() -> None:
    link = Link(
        connection(initiator=True, proposal=HYBRID),
        connection(initiator=False, proposal=HYBRID),
    )
    link.initiate()
    # IKE_SA_INIT { SA, KEi, Ni } -->
    _deliver_without_deferred_work(link, to_responder=True)

    (sa_r,) = link.r.engine.sas.values()
    assert sa_r.keys is None  # put aside: the response does not need them
    answer = link.r.engine.datagrams_to_send()
    assert len(answer) == 1
    link.r.engine.run_deferred()
    assert sa_r.keys is not None


def test_work_put_aside_is_done_before_the_next_message_of_the_sa() -> None:
    """Neither side runs `run_deferred`: each entry point does it first."""
    link = Link(
        connection(initiator=True, proposal=HYBRID, ppks=(ppk(),)),
        connection(initiator=False, proposal=HYBRID, ppks=(ppk(),)),
    )
    link.initiate()
    # IKE_SA_INIT, IKE_INTERMEDIATE (ML-KEM-768) and IKE_AUTH, both ways
    for _ in range(3):
        _deliver_without_deferred_work(link, to_responder=True)
        _deliver_without_deferred_work(link, to_responder=False)

    (ike_i,) = link.i.engine.ike_sas()
    (ike_r,) = link.r.engine.ike_sas()
    assert ike_i.state == ike_r.state == "ESTABLISHED"
    assert ike_i.ppk and ike_r.ppk


def test_nat_is_detected_and_both_float_to_port_4500() -> None:
    # a responder for peers from anywhere, as behind a NAT
    responder = connection(initiator=False, remote_addresses=())
    link = Link(connection(initiator=True), responder, nat=True)
    link.initiate()
    link.step()  # IKE_SA_INIT { ..., N(NAT_DETECTION_SOURCE_IP) } -->
    link.step()  # <-- IKE_SA_INIT { ..., N(NAT_DETECTION_*) }
    # IKE_AUTH --> now from port 4500 to port 4500 (RFC 7296 §2.23)
    (auth,) = link.collect()
    assert auth.datagram.local == (ADDRESS_I, 4500)
    assert auth.datagram.remote[1] == 4500
    link.run()

    (sa_i,) = link.i.engine.ike_sas()
    (sa_r,) = link.r.engine.ike_sas()
    assert sa_i.nat_local and not sa_i.nat_remote
    assert sa_r.nat_remote and not sa_r.nat_local
    assert (sa_r.remote_address, sa_r.remote_port) == (
        str(NAT_PUBLIC),
        NAT_PORT_BASE + 4500,
    )
    (ci,) = link.i.of(ChildSaEstablished)
    (cr,) = link.r.of(ChildSaEstablished)
    assert isinstance(ci, ChildSaEstablished) and isinstance(cr, ChildSaEstablished)
    assert ci.keys.udp_encapsulation and cr.keys.udp_encapsulation
    assert cr.keys.remote_port == NAT_PORT_BASE + 4500


def test_no_nat_keeps_port_500() -> None:
    link = Link(connection(initiator=True), connection(initiator=False))
    link.initiate()
    link.run()
    (ci,) = link.i.of(ChildSaEstablished)
    assert isinstance(ci, ChildSaEstablished)
    assert not ci.keys.udp_encapsulation
    assert ci.keys.local_port == ci.keys.remote_port == 500


def _two_children() -> tuple[Link, str]:
    second = child("db", local=("10.1.5.0/24",), remote=("10.2.5.0/24",))
    responder_second = child("db", local=("10.2.5.0/24",), remote=("10.1.5.0/24",))
    link = Link(
        connection(initiator=True, children=(child(), second)),
        connection(
            initiator=False,
            children=(
                child(local=("10.2.0.0/16",), remote=("10.1.0.0/16",)),
                responder_second,
            ),
        ),
    )
    link.initiate()
    link.run()
    return link, "db"


def test_acquire_creates_another_child_sa_over_the_existing_ike_sa() -> None:
    link, name = _two_children()
    link.i.engine.acquire("site", name, link.now)
    # CREATE_CHILD_SA { SA, Ni, TSi, TSr } --> <-- { SA, Nr, TSi, TSr }
    assert link.run() == 2
    events = [
        e for e in link.i.of(ChildSaEstablished) if isinstance(e, ChildSaEstablished)
    ]
    assert [e.child for e in events] == ["net", "db"]
    (sa,) = link.r.engine.ike_sas()
    assert sorted(c.name for c in sa.children) == ["db", "net"]
    assert len(link.i.engine.ike_sas()) == 1


def test_create_child_is_pending_until_create_child_sa_completes() -> None:
    link, name = _two_children()
    (ike,) = link.i.engine.ike_sas()
    child_sa = link.i.engine.create_child(ike.unique_id, name, link.now)
    assert link.i.engine.child_pending(ike.unique_id, child_sa)
    # CREATE_CHILD_SA { SA, Ni, TSi, TSr } --> <-- { SA, Nr, TSi, TSr }
    assert link.run() == 2

    assert not link.i.engine.child_pending(ike.unique_id, child_sa)
    *_, last = link.i.of(ChildSaEstablished)
    assert isinstance(last, ChildSaEstablished)
    assert (last.child_sa, last.child) == (child_sa, name)
    assert len(link.i.engine.ike_sas()) == 1


def test_create_child_refused_by_the_peer_is_no_longer_pending() -> None:
    # no child of the responder covers these selectors: TS_UNACCEPTABLE
    second = child("db", local=("10.9.0.0/24",), remote=("10.8.0.0/24",))
    link = Link(
        connection(initiator=True, children=(child(), second)),
        connection(
            initiator=False,
            children=(child(local=("10.2.0.0/16",), remote=("10.1.0.0/16",)),),
        ),
    )
    link.initiate()
    link.run()
    (ike,) = link.i.engine.ike_sas()
    child_sa = link.i.engine.create_child(ike.unique_id, "db", link.now)
    link.run()

    assert not link.i.engine.child_pending(ike.unique_id, child_sa)
    (sa,) = link.i.engine.ike_sas()
    assert [c.name for c in sa.children] == ["net"]


def test_create_child_needs_an_established_ike_sa() -> None:
    link = Link(connection(initiator=True), connection(initiator=False))
    ike_sa = link.i.engine.initiate("site", link.now)
    with pytest.raises(ValueError, match="not established"):
        link.i.engine.create_child(ike_sa, "net", link.now)


def test_acquire_without_ike_sa_initiates_one_with_that_child() -> None:
    link, _ = _two_children()
    link.i.engine.terminate_connection("site", link.now)
    link.run()
    link.i.engine.acquire("site", "db", link.now)
    link.run()
    (sa,) = link.i.engine.ike_sas()
    assert [c.name for c in sa.children] == ["db"]


def test_start_action_start_children_follow_ike_auth() -> None:
    second = child(
        "db",
        local=("10.1.5.0/24",),
        remote=("10.2.5.0/24",),
        start_action=StartAction.START,
    )
    link = Link(
        connection(initiator=True, children=(child(), second)),
        connection(
            initiator=False,
            children=(
                child(local=("10.2.0.0/16",), remote=("10.1.0.0/16",)),
                child("db", local=("10.2.5.0/24",), remote=("10.1.5.0/24",)),
            ),
        ),
    )
    link.initiate()
    link.run()
    names = [
        e.child
        for e in link.r.of(ChildSaEstablished)
        if isinstance(e, ChildSaEstablished)
    ]
    assert names == ["net", "db"]


def test_reload_keeps_sas_of_unchanged_connections_and_deletes_changed() -> None:
    spec = connection(initiator=True)
    link = Link(spec, connection(initiator=False))
    link.initiate()
    link.run()
    link.i.engine.set_connections([spec], link.now)
    assert link.run() == 0
    assert len(link.i.engine.ike_sas()) == 1

    changed = connection(initiator=True, dpd_delay=10)
    link.i.engine.set_connections([changed], link.now)
    # INFORMATIONAL { D(IKE) } --> <-- { }
    link.run()
    assert link.i.engine.ike_sas() == []
    assert link.i.of(IkeSaDeleted)


def test_snapshot_names_algorithms_and_serialises_to_json() -> None:
    link = Link(
        connection(initiator=True, proposal=HYBRID, ppks=(ppk(),)),
        connection(initiator=False, proposal=HYBRID, ppks=(ppk(),)),
    )
    link.initiate()
    link.run()
    (info,) = link.i.engine.ike_sas()
    data = json.loads(json.dumps(info.to_dict()))
    assert data["state"] == "ESTABLISHED"
    assert data["algorithms"] == {
        "encr": "aes256gcm16",
        "prf": "prfsha384",
        "ke": "x25519",
        "ke1": "mlkem768",
    }
    assert data["ppk"] is True
    assert data["local_id"] == "gw-a.example.org"
    assert data["remote_id"] == "gw-b.example.org"
    assert len(data["spi_i"]) == 16 and len(data["children"][0]["inbound_spi"]) == 8
    assert data["children"][0]["local_ts"] == ["10.1.0.0/16"]


def test_no_secret_reaches_snapshots_reprs_or_events() -> None:
    link = Link(
        connection(initiator=True, ppks=(ppk(),)),
        connection(initiator=False, ppks=(ppk(),)),
    )
    link.initiate()
    link.run()
    (sa,) = link.i.engine.sas.values()
    assert sa.keys is not None
    (established,) = link.i.of(ChildSaEstablished)
    assert isinstance(established, ChildSaEstablished)
    secrets = [
        PSK.reveal(),
        PPK_SECRET.reveal(),
        sa.keys.sk_d,
        sa.keys.sk_ei,
        sa.keys.sk_pi,
        established.keys.encryption_key_out,
        established.keys.encryption_key_in,
    ]
    texts = [
        json.dumps([i.to_dict() for i in link.i.engine.ike_sas()]),
        repr(sa),
        repr(sa.keys),
        repr(list(sa.children.values())),
        repr(link.i.seen),
        repr(link.r.seen),
        repr(sa.connection),
    ]
    # report only which secret leaked where, never the secret itself
    leaks = [
        (which, where)
        for which, secret in enumerate(secrets)
        for where, text in enumerate(texts)
        if secret.hex() in text or repr(secret) in text
    ]
    assert leaks == []


def test_encrypted_informational_before_ike_auth_is_dropped() -> None:
    """CVE-2019-12312: nothing but the handshake before the IKE SA is up."""
    link = Link(connection(initiator=True), connection(initiator=False))
    link.initiate()
    link.step()
    link.step()
    link.take()  # the IKE_AUTH request never arrives
    (sa_i,) = link.i.engine.sas.values()
    header = link.i.engine.header(sa_i, ExchangeType.INFORMATIONAL, 1, response=False)
    sealed = wire.seal(link.i.engine, sa_i, header, [])
    link.r.engine.receive_datagram(sealed.datagrams[0], sa_i.remote, sa_i.local, 0.0)
    assert link.r.engine.datagrams_to_send() == []
    assert link.r.engine.ike_sas()[0].state == "CONNECTING"
    assert any(
        isinstance(e, MessageRejected) and e.reason in ("state", "message-id")
        for e in link.r.drain()
    )


def test_initial_contact_replaces_stale_ike_sa_of_restarted_peer() -> None:
    responder = connection(initiator=False, dpd_delay=0)
    link = Link(connection(initiator=True), responder)
    link.initiate()
    link.run()
    # the initiator restarts and forgets everything
    fresh = Link(connection(initiator=True), responder, seeds=(9, 2))
    link.i = fresh.i
    link.initiate()
    link.run()
    assert len(link.r.engine.ike_sas()) == 1
    deleted = [e for e in link.r.of(IkeSaDeleted) if isinstance(e, IkeSaDeleted)]
    assert [e.reason for e in deleted] == ["initial-contact"]
    assert len(link.r.of(IkeSaEstablished)) == 2
