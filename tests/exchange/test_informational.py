"""INFORMATIONAL: DELETE and liveness checks (RFC 7296 §1.4, §2.4)."""

from __future__ import annotations

from typing import Any

from ike_peers import Link, connection

from qsgw.ike.config import DpdAction
from qsgw.ike.events import (
    ChildSaDeleted,
    IkeSaDeleted,
    IkeSaEstablished,
    LivenessFailed,
)


def _established(**options: Any) -> Link:
    responder = connection(initiator=False, dpd_delay=0)
    link = Link(connection(initiator=True, **options), responder)
    link.initiate()
    link.run()
    return link


def test_terminate_ike_deletes_sa_and_children_on_both_sides() -> None:
    link = _established()
    ike_id = link.i.engine.ike_sas()[0].unique_id
    link.i.engine.terminate_ike(ike_id, link.now)
    # INFORMATIONAL { D(IKE) } --> <-- INFORMATIONAL { }
    assert link.run() == 2
    assert link.i.engine.ike_sas() == [] and link.r.engine.ike_sas() == []
    (deleted_i,) = link.i.of(IkeSaDeleted)
    (deleted_r,) = link.r.of(IkeSaDeleted)
    assert isinstance(deleted_i, IkeSaDeleted) and deleted_i.reason == "local"
    assert isinstance(deleted_r, IkeSaDeleted) and deleted_r.reason == "peer"
    assert len(link.i.of(ChildSaDeleted)) == len(link.r.of(ChildSaDeleted)) == 1


def test_idle_sa_sends_liveness_check_and_stays_up_when_answered() -> None:
    link = _established(dpd_delay=30)
    link.advance(30.0)
    # INFORMATIONAL { } --> <-- INFORMATIONAL { }
    assert link.run() == 2
    assert link.i.engine.ike_sas()[0].state == "ESTABLISHED"
    assert not link.i.of(LivenessFailed)


def test_unanswered_liveness_check_clears_sa_after_retransmissions() -> None:
    link = _established(dpd_delay=30, dpd_timeout=1000)
    link.advance(30.0)
    sent = 0
    for _ in range(20):
        while link.drop_next() is not None:  # the peer is gone
            sent += 1
        deadline = link.i.engine.next_timer()
        if deadline is None or not link.i.engine.ike_sas():
            break
        link.advance(deadline - link.now)
    # one check and five retransmissions (4 s, then backoff base 1.8)
    assert sent == 6
    assert link.i.of(LivenessFailed)
    (deleted,) = link.i.of(IkeSaDeleted)
    assert isinstance(deleted, IkeSaDeleted) and deleted.reason == "dead-peer"
    assert link.i.engine.ike_sas() == []


def test_dpd_action_restart_initiates_again() -> None:
    link = _established(dpd_delay=30, dpd_action=DpdAction.RESTART)
    link.advance(30.0)
    for _ in range(20):
        while link.drop_next() is not None:
            pass
        deadline = link.i.engine.next_timer()
        assert deadline is not None
        link.advance(deadline - link.now)
        if link.i.of(LivenessFailed):
            break
    (sa,) = link.i.engine.ike_sas()
    assert sa.state == "CONNECTING"
    # the responder still has the old SA; the new one comes up beside it
    link.run()
    assert len(link.i.of(IkeSaEstablished)) == 2
