"""The engine's next deadline (a heap of per-IKE SA deadlines) is always the
earliest of what each IKE SA needs, and a timer call acts on the due SAs
only, through setups, retransmissions, liveness checks, rekeys and
deletions of many IKE SAs."""

from __future__ import annotations

from dataclasses import replace

from ike_peers import Link, connection

from qsgw.ike.engine import EngineSettings, IkeEngine
from qsgw.ike.events import IkeSaDeleted, IkeSaEstablished, IkeSaRekeyed
from qsgw.ike.tasks import timers


def _earliest(engine: IkeEngine) -> float | None:
    """The definition: the minimum over every IKE SA of its deadline."""
    deadlines = [timers.deadline(engine, sa) for sa in engine.sas.values()]
    present = [d for d in deadlines if d is not None]
    return min(present) if present else None


def _check(link: Link) -> None:
    for peer in (link.i, link.r):
        assert peer.engine.next_timer() == _earliest(peer.engine)


def test_next_timer_is_the_earliest_deadline_of_all_ike_sas() -> None:
    link = Link(
        connection(initiator=True, dpd_delay=20, rekey_time=300),
        connection(initiator=False, dpd_delay=30, rekey_time=0),
    )
    for round_ in range(6):
        link.initiate()
        _check(link)  # IKE_SA_INIT request in flight
        link.step()
        _check(link)  # half-open on the responder
        link.run()
        _check(link)
        link.now += 7.0 * round_
    for _ in range(40):
        link.advance(5.0)
        link.run()
        _check(link)

    assert link.i.of(IkeSaRekeyed)  # the rekeys ran from the timers
    assert link.i.of(IkeSaDeleted)


def test_next_timer_follows_retransmissions_and_failure() -> None:
    settings = replace(EngineSettings(), retransmit_tries=2)
    link = Link(connection(initiator=True), connection(initiator=False), settings)
    for _ in range(3):
        link.initiate()
    link.take()  # every IKE_SA_INIT request is lost
    _check(link)
    while link.i.engine.sas:
        deadline = link.i.engine.next_timer()
        assert deadline is not None
        link.advance(deadline - link.now)
        link.take()
        _check(link)
    assert link.i.engine.next_timer() is None


def test_timer_acts_on_due_ike_sa_and_leaves_the_others() -> None:
    link = Link(
        connection(initiator=True, dpd_delay=30),
        connection(initiator=False, dpd_delay=0),
    )
    link.initiate()
    link.run()
    link.now = 10.0
    link.initiate()
    link.run()
    first, second = link.i.engine.sas.values()

    link.advance(30.0 - link.now)  # only the first is idle for 30 s
    hops = link.take()

    assert len(hops) == 1 and hops[0].to_responder
    assert hops[0].datagram.data[:8] == first.spi_i
    assert second.pending is None
    assert len(link.i.of(IkeSaEstablished)) == 2
