"""IKE_AUTH: PSK, PPK (RFC 8784), childless (RFC 6023), TS narrowing."""

from __future__ import annotations

from ike_peers import Link, child, connection, fingerprint, ppk

from qsgw.ike.config import Childless, Ppk, Secret
from qsgw.ike.events import (
    ChildSaEstablished,
    IkeSaEstablished,
    IkeSaFailed,
    MessageRejected,
)

HYBRID = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"


def test_ppk_required_on_both_sides_is_used() -> None:
    link = Link(
        connection(initiator=True, proposal=HYBRID, ppks=(ppk(),), ppk_required=True),
        connection(initiator=False, proposal=HYBRID, ppks=(ppk(),), ppk_required=True),
    )
    link.initiate()
    # IKE_SA_INIT { ..., N(USE_PPK) } <--> { ..., N(USE_PPK) }
    # IKE_AUTH { IDi, AUTH, N(PPK_IDENTITY) } --> <-- { IDr, AUTH, N(PPK_IDENTITY) }
    link.run()
    assert link.i.engine.ike_sas()[0].ppk
    assert link.r.engine.ike_sas()[0].ppk
    ci = link.i.of(ChildSaEstablished)[0]
    cr = link.r.of(ChildSaEstablished)[0]
    assert isinstance(ci, ChildSaEstablished) and isinstance(cr, ChildSaEstablished)
    assert fingerprint(ci.keys.encryption_key_out) == fingerprint(
        cr.keys.encryption_key_in
    )


def test_ppk_changes_child_keys() -> None:
    def keys(ppks: tuple[Ppk, ...]) -> bytes:
        link = Link(
            connection(initiator=True, ppks=ppks),
            connection(initiator=False, ppks=ppks),
        )
        link.initiate()
        link.run()
        event = link.i.of(ChildSaEstablished)[0]
        assert isinstance(event, ChildSaEstablished)
        return event.keys.encryption_key_out

    assert fingerprint(keys(())) != fingerprint(keys((ppk(),)))


def test_optional_ppk_falls_back_to_no_ppk_auth_when_responder_lacks_it() -> None:
    link = Link(
        connection(initiator=True, ppks=(ppk(b"ppk-1"),)),
        connection(initiator=False, ppks=(ppk(b"other"),)),
    )
    link.initiate()
    # IKE_AUTH { IDi, AUTH, N(PPK_IDENTITY), N(NO_PPK_AUTH) } -->
    # <-- IKE_AUTH { IDr, AUTH }  (no PPK_IDENTITY: the PPK was not used)
    link.run()
    assert len(link.i.of(IkeSaEstablished)) == 1
    assert len(link.r.of(IkeSaEstablished)) == 1
    assert not link.i.engine.ike_sas()[0].ppk
    assert not link.r.engine.ike_sas()[0].ppk


def test_required_ppk_missing_at_responder_is_refused_on_both_sides() -> None:
    link = Link(
        connection(initiator=True, ppks=(ppk(b"ppk-1"),), ppk_required=True),
        connection(initiator=False, ppks=(ppk(b"other"),), ppk_required=True),
    )
    link.initiate()
    # IKE_AUTH { IDi, AUTH, N(PPK_IDENTITY) } -->
    # <-- IKE_AUTH { N(AUTHENTICATION_FAILED) }
    link.run()
    assert link.i.engine.ike_sas() == []
    assert link.r.engine.ike_sas() == []
    (failed,) = link.i.of(IkeSaFailed)
    assert isinstance(failed, IkeSaFailed)
    assert failed.notify == "AUTHENTICATION_FAILED"
    assert len(link.r.of(IkeSaFailed)) == 1


def test_ppk_required_by_responder_refuses_initiator_without_ppk() -> None:
    link = Link(
        connection(initiator=True),
        connection(initiator=False, ppks=(ppk(),), ppk_required=True),
    )
    link.initiate()
    link.run()
    assert link.i.engine.ike_sas() == [] and link.r.engine.ike_sas() == []
    assert link.i.of(IkeSaFailed) and link.r.of(IkeSaFailed)


def test_wrong_psk_fails_with_authentication_failed_and_leaves_no_sa() -> None:
    link = Link(
        connection(initiator=True, psk=Secret(b"not the right key")),
        connection(initiator=False),
    )
    link.initiate()
    # IKE_AUTH { IDi, AUTH } --> <-- IKE_AUTH { N(AUTHENTICATION_FAILED) }
    link.run()
    assert link.i.engine.ike_sas() == [] and link.r.engine.ike_sas() == []
    failed = link.i.of(IkeSaFailed)[0]
    assert isinstance(failed, IkeSaFailed)
    assert failed.notify == "AUTHENTICATION_FAILED"
    assert not link.i.of(ChildSaEstablished) and not link.r.of(ChildSaEstablished)


def test_childless_ike_sa_comes_up_without_child_sa() -> None:
    link = Link(
        connection(initiator=True, childless=Childless.FORCE),
        connection(initiator=False),
    )
    link.initiate()
    # IKE_AUTH { IDi, IDr, AUTH } --> <-- IKE_AUTH { IDr, AUTH }
    assert link.run() == 4
    assert len(link.i.of(IkeSaEstablished)) == 1
    assert link.r.engine.ike_sas()[0].children == []
    assert not link.i.of(ChildSaEstablished)


def test_childless_request_refused_when_responder_says_never() -> None:
    link = Link(
        connection(initiator=True, childless=Childless.FORCE),
        connection(initiator=False, childless=Childless.NEVER),
    )
    link.initiate()
    link.run()
    # the responder did not announce CHILDLESS_IKEV2_SUPPORTED: the initiator
    # gives up before IKE_AUTH, the responder's half-open SA times out
    assert link.i.engine.ike_sas() == []
    assert link.i.of(IkeSaFailed)
    link.advance(31.0)
    assert link.r.engine.ike_sas() == []
    (failed,) = link.r.of(IkeSaFailed)
    assert isinstance(failed, IkeSaFailed) and failed.reason == "timeout"


def test_responder_narrows_traffic_selectors() -> None:
    wide = child(local=("10.1.0.0/16",), remote=("10.0.0.0/8",))
    narrow = child(local=("10.2.3.0/24",), remote=("10.1.0.0/16",))
    link = Link(
        connection(initiator=True, children=(wide,)),
        connection(initiator=False, children=(narrow,)),
    )
    link.initiate()
    link.run()
    event = link.i.of(ChildSaEstablished)[0]
    assert isinstance(event, ChildSaEstablished)
    assert [str(s.network) for s in event.keys.remote_ts] == ["10.2.3.0/24"]
    assert [str(s.network) for s in event.keys.local_ts] == ["10.1.0.0/16"]
    info = link.i.engine.ike_sas()[0].children[0]
    assert info.remote_ts == ["10.2.3.0/24"]


def test_disjoint_traffic_selectors_give_ts_unacceptable_and_no_child() -> None:
    link = Link(
        connection(initiator=True, children=(child(remote=("10.9.0.0/16",)),)),
        connection(initiator=False),
    )
    link.initiate()
    link.run()
    # the IKE SA stands; only the Child SA failed (RFC 7296 §2.21.3)
    assert len(link.i.of(IkeSaEstablished)) == 1
    assert not link.i.of(ChildSaEstablished) and not link.r.of(ChildSaEstablished)
    rejected = link.i.of(MessageRejected)
    assert any(
        isinstance(e, MessageRejected) and e.reason == "ts-unacceptable"
        for e in rejected
    )
