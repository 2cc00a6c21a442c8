"""IKE_INTERMEDIATE rounds of additional key exchanges (RFC 9242, RFC 9370).

    HDR, SK { KEi(n) }  -->
                   <--  HDR, SK { KEr(n) }

One round per ADDKE transform the responder chose with a method other than
NONE, in transform type order. Each round is protected with the keys of the
round before; afterwards SKEYSEED(n) = prf(SK_d(n-1), SK(n) | Ni | Nr) and
the seven keys are derived again (RFC 9370 §2.2.2). Both messages of every
round feed IntAuth (RFC 9242 §3.3.2), computed with the keys that protect
the round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qsgw.crypto.api import CryptoError
from qsgw.ike import keymat
from qsgw.ike.constants import ExchangeType, NotifyType
from qsgw.ike.errors import ProtocolError
from qsgw.ike.payloads import KePayload, Message
from qsgw.ike.sa import IkeSa
from qsgw.ike.tasks import wire
from qsgw.ike.tasks.ike_init import key_sizes
from qsgw.ike.tasks.wire import Reply

if TYPE_CHECKING:
    from qsgw.ike.engine import IkeEngine


def _round(sa: IkeSa) -> tuple[int, int] | None:
    """(ADDKE transform type, method) of the next round, if any is left."""
    done = len(sa.ke_methods_done) - 1
    if done < len(sa.addke_rounds):
        return sa.addke_rounds[done]
    return None


def _finish_round(
    sa: IkeSa,
    current: tuple[int, int],
    shared: bytes,
    response: wire.Sealed | wire.Opened,
) -> None:
    """IntAuth_r for this round, then the keys of RFC 9370 §2.2.2."""
    assert sa.prf is not None and sa.keys is not None and sa.context is not None
    a_octets, p_octets = response.intauth_octets()
    sa.intauth_r = keymat.intauth_step(
        sa.prf, sa.keys.sk_pr, sa.intauth_r, a_octets, p_octets
    )
    sa.keys = keymat.update_after_intermediate(
        sa.prf, sa.keys, shared, sa.context, key_sizes(sa)
    )
    sa.ke_methods_done.append(current)
    sa.intermediate_done = True


def start(engine: IkeEngine, sa: IkeSa, now: float) -> None:
    """Send the next round's request."""
    current = _round(sa)
    assert current is not None and sa.prf is not None and sa.keys is not None
    _, method = current
    sa.ke = engine.keys.initiator(method)

    def on_response(message: Message, now: float) -> None:
        _response(engine, sa, current, message, now)

    # IKE_INTERMEDIATE { KEi(n) } -->
    payload = KePayload(method, sa.ke.public_value)
    sealed = engine.send_request(
        sa, ExchangeType.IKE_INTERMEDIATE, [payload], on_response, now
    )
    engine.defer(lambda: _add_intauth_i(sa, sealed))


def _add_intauth_i(sa: IkeSa, request: wire.Sealed | wire.Opened) -> None:
    """IntAuth_i for this round (RFC 9242 §3.3.2)."""
    assert sa.prf is not None and sa.keys is not None
    a_octets, p_octets = request.intauth_octets()
    sa.intauth_i = keymat.intauth_step(
        sa.prf, sa.keys.sk_pi, sa.intauth_i, a_octets, p_octets
    )


def _response(
    engine: IkeEngine, sa: IkeSa, current: tuple[int, int], message: Message, now: float
) -> None:
    from qsgw.ike.tasks import ike_auth

    # <-- IKE_INTERMEDIATE { KEr(n) }
    opened = sa.last_opened
    ke = message.first(KePayload)
    if not isinstance(opened, wire.Opened) or sa.ke is None:
        engine.fail(sa, "internal")
        return
    if not isinstance(ke, KePayload) or ke.method != current[1]:
        engine.fail(sa, "key-exchange", NotifyType.INVALID_SYNTAX)
        return
    try:
        shared = sa.ke.complete(ke.data)
    except CryptoError:
        engine.fail(sa, "key-exchange", NotifyType.INVALID_SYNTAX)
        return

    _finish_round(sa, current, shared, opened)
    if _round(sa) is not None:
        start(engine, sa, now)
    else:
        ike_auth.start(engine, sa, now)


def respond(engine: IkeEngine, sa: IkeSa, opened: wire.Opened, now: float) -> Reply:
    """The responder's half of one round."""
    current = _round(sa)
    if current is None:
        raise ProtocolError(NotifyType.INVALID_SYNTAX, "unexpected-intermediate")
    _, method = current
    ke = opened.message.first(KePayload)
    if not isinstance(ke, KePayload) or ke.method != method:
        raise ProtocolError(NotifyType.INVALID_SYNTAX, "key-exchange")
    try:
        ke_data, shared = engine.keys.respond(method, ke.data)
    except CryptoError:
        raise ProtocolError(NotifyType.INVALID_SYNTAX, "key-exchange") from None

    def after(sealed: wire.Sealed) -> None:
        # the response is sealed with this round's keys: IntAuth and the
        # next keys are for the messages after it
        def finish() -> None:
            _add_intauth_i(sa, opened)
            _finish_round(sa, current, shared, sealed)

        engine.defer(finish)

    # <-- IKE_INTERMEDIATE { KEr(n) }
    return Reply([KePayload(method, ke_data)], after)
