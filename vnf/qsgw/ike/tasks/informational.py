"""INFORMATIONAL exchanges (RFC 7296 §1.4): DELETE, liveness, errors.

    HDR, SK { [N,] [D,] ... }  -->
                  <--  HDR, SK { [N,] [D,] ... }

A Child SA DELETE is answered with a DELETE of our own inbound SPIs of the
same pairs (§1.4.1); an IKE SA DELETE with an empty response; an empty
request is a liveness check (§2.4).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from qsgw.ike.constants import ExchangeType, NotifyType, ProtocolId
from qsgw.ike.payloads import DeletePayload, Message, Payload
from qsgw.ike.sa import ChildSa, ChildSaState, IkeSa, IkeSaState
from qsgw.ike.tasks import child_sa
from qsgw.ike.tasks.wire import Reply, Sealed

if TYPE_CHECKING:
    from qsgw.ike.engine import IkeEngine

_log = logging.getLogger(__name__)


def delete_ike(engine: IkeEngine, sa: IkeSa, now: float, reason: str = "local") -> None:
    """Send INFORMATIONAL { D(IKE) }; the SA goes when answered or timed out."""
    if sa.state == IkeSaState.CONNECTING:
        engine.fail(sa, "local")
        return
    if sa.state in (IkeSaState.DELETING, IkeSaState.DESTROYED):
        return

    def start(now: float) -> None:
        if sa.state == IkeSaState.DESTROYED:
            return
        sa.state = IkeSaState.DELETING

        def on_response(message: Message, now: float) -> None:
            engine.delete(sa, reason)

        # INFORMATIONAL { D(IKE) } -->
        payload = DeletePayload(ProtocolId.IKE)
        engine.send_request(sa, ExchangeType.INFORMATIONAL, [payload], on_response, now)

    # a delete goes ahead of anything else waiting
    sa.queue.insert(0, start)
    engine.touch(sa)


def delete_child(
    engine: IkeEngine, sa: IkeSa, child: ChildSa, now: float, reason: str
) -> None:
    """Send INFORMATIONAL { D(ESP, our inbound SPI) } and forget the child
    once answered."""

    def start(now: float) -> None:
        if child.unique_id not in sa.children or sa.state == IkeSaState.DESTROYED:
            return
        child.state = ChildSaState.DELETING

        def on_response(message: Message, now: float) -> None:
            child_sa.forget(engine, sa, child, reason)

        # INFORMATIONAL { D(ESP, SPI) } -->
        payload = DeletePayload(ProtocolId.ESP, (child.inbound_spi,))
        engine.send_request(sa, ExchangeType.INFORMATIONAL, [payload], on_response, now)

    sa.queue.append(start)
    engine.touch(sa)


def liveness(engine: IkeEngine, sa: IkeSa, now: float) -> None:
    """RFC 7296 §2.4: an empty INFORMATIONAL request."""

    def on_response(message: Message, now: float) -> None:
        return None

    # INFORMATIONAL { } -->
    engine.send_request(
        sa, ExchangeType.INFORMATIONAL, [], on_response, now, liveness=True
    )


def respond(engine: IkeEngine, sa: IkeSa, message: Message, now: float) -> Reply:
    deletes = [p for p in message.payloads if isinstance(p, DeletePayload)]
    if any(int(d.protocol) == ProtocolId.IKE for d in deletes) or message.notifies(
        NotifyType.AUTHENTICATION_FAILED
    ):
        # <-- INFORMATIONAL { }, then the IKE SA and its children are gone
        def after(sealed: Sealed) -> None:
            engine.delete(sa, "peer")

        return Reply([], after)

    answer: list[Payload] = []
    ours = _delete_children(engine, sa, deletes)
    if ours:
        answer.append(DeletePayload(ProtocolId.ESP, tuple(ours)))
    # <-- INFORMATIONAL { [D(ESP, our SPIs)] }
    return Reply(answer)


def _delete_children(
    engine: IkeEngine, sa: IkeSa, deletes: list[DeletePayload]
) -> list[bytes]:
    """The peer's inbound SPIs name our outbound SAs; answer with ours."""
    ours: list[bytes] = []
    for payload in deletes:
        if int(payload.protocol) != ProtocolId.ESP:
            continue
        for spi in payload.spis:
            child = _by_outbound(sa, spi)
            if child is None:
                continue
            # RFC 7296 §1.4.1: a pair we are deleting ourselves is not
            # named in our answer
            if child.state != ChildSaState.DELETING:
                ours.append(child.inbound_spi)
            child_sa.forget(engine, sa, child, "peer")
    return ours


def _by_outbound(sa: IkeSa, spi: bytes) -> ChildSa | None:
    for child in sa.children.values():
        if child.outbound_spi == spi:
            return child
    return None
