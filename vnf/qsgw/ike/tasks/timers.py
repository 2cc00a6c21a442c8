"""Time in the engine: retransmission (RFC 7296 §2.1), half-open timeouts,
liveness checks (§2.4), rekeying and expiry (§2.8).

`deadline` says when an SA next needs attention; `run` does what is due.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qsgw.ike.sa import ChildSaState, IkeSa, IkeSaState
from qsgw.ike.tasks import create_child, informational

if TYPE_CHECKING:
    from qsgw.ike.engine import IkeEngine


def schedule_ike(engine: IkeEngine, sa: IkeSa, now: float) -> None:
    """The IKE SA's rekey time, less some random jitter; its hard end
    `over_time` after the rekey time, should every rekey fail."""
    period = sa.connection.rekey_time
    sa.rekey_at = sa.expire_at = None
    if period:
        fraction = int.from_bytes(engine.rng(2), "big") / 65536
        sa.rekey_at = now + period - period * engine.settings.rekey_jitter * fraction
        sa.expire_at = now + period + sa.connection.over_time


def _liveness_due(sa: IkeSa) -> float | None:
    delay = sa.connection.dpd_delay
    if not delay or sa.state != IkeSaState.ESTABLISHED or sa.pending or sa.queue:
        return None
    return sa.last_received + delay


def _half_open_due(engine: IkeEngine, sa: IkeSa) -> float | None:
    if sa.initiator or sa.state != IkeSaState.CONNECTING:
        return None
    return sa.created + engine.settings.half_open_timeout


def deadline(engine: IkeEngine, sa: IkeSa) -> float | None:
    times = [
        sa.pending.next_retransmit if sa.pending else None,
        _half_open_due(engine, sa),
        _liveness_due(sa),
        sa.rekey_at if sa.state == IkeSaState.ESTABLISHED else None,
        sa.delete_at if sa.state == IkeSaState.REKEYED else None,
        sa.expire_at if sa.state == IkeSaState.ESTABLISHED else None,
    ]
    for child in sa.children.values():
        times += [child.rekey_at, child.expire_at]
    present = [t for t in times if t is not None]
    return min(present) if present else None


def run(engine: IkeEngine, sa: IkeSa, now: float) -> None:
    _retransmission(engine, sa, now)
    if sa.unique_id not in engine.sas:
        return
    half_open = _half_open_due(engine, sa)
    if half_open is not None and now >= half_open:
        engine.fail(sa, "timeout")
        return
    liveness = _liveness_due(sa)
    if liveness is not None and now >= liveness:
        informational.liveness(engine, sa, now)
    _rekeying(engine, sa, now)


def _retransmission(engine: IkeEngine, sa: IkeSa, now: float) -> None:
    pending = sa.pending
    if pending is None or now < pending.next_retransmit:
        return
    settings = engine.settings
    dpd_timeout = sa.connection.dpd_timeout
    timed_out = (
        pending.liveness and dpd_timeout and now - pending.started >= dpd_timeout
    )
    if pending.tries < settings.retransmit_tries and not timed_out:
        engine.retransmit(sa, now)
        return

    # RFC 7296 §2.4: no answer after the retransmissions: the peer is gone
    if sa.state == IkeSaState.CONNECTING:
        engine.fail(sa, "timeout")
    elif sa.state == IkeSaState.DELETING:
        engine.delete(sa, "local")
    else:
        engine.dead_peer(sa, now)


def _rekeying(engine: IkeEngine, sa: IkeSa, now: float) -> None:
    if sa.state == IkeSaState.REKEYED:
        if sa.delete_at is not None and now >= sa.delete_at:
            sa.delete_at = None
            informational.delete_ike(engine, sa, now, reason="rekeyed")
        return
    if sa.state != IkeSaState.ESTABLISHED:
        return
    if sa.expire_at is not None and now >= sa.expire_at:
        sa.expire_at = None
        informational.delete_ike(engine, sa, now, reason="expired")
        return
    if sa.rekey_at is not None and now >= sa.rekey_at:
        sa.rekey_at = None
        create_child.queue_ike_rekey(engine, sa)
    for child in list(sa.children.values()):
        if child.expire_at is not None and now >= child.expire_at:
            child.expire_at = None
            reason = "rekeyed" if child.state == ChildSaState.REKEYED else "expired"
            informational.delete_child(engine, sa, child, now, reason)
        elif child.rekey_at is not None and now >= child.rekey_at:
            child.rekey_at = None
            create_child.queue_child_rekey(engine, sa, child)
