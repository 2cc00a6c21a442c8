"""Routing of a received datagram to its IKE SA, window and exchange.

Order of checks, each before any state changes (RFC 7296 §2.2, §2.21):
parse; find the IKE SA by our SPI; role flag; message ID against the
window (a retransmitted request gets our cached response, nothing else);
decrypt or reassemble; payload rules; only then the exchange's handler.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from qsgw.ike import rules
from qsgw.ike.constants import ExchangeType, NotifyType
from qsgw.ike.errors import ProtocolError
from qsgw.ike.events import MessageReceived
from qsgw.ike.payloads import Message, NotifyPayload
from qsgw.ike.sa import Endpoint, IkeSa, IkeSaState
from qsgw.ike.tasks import (
    create_child,
    ike_auth,
    ike_init,
    informational,
    intermediate,
    wire,
)
from qsgw.ike.tasks.wire import Reply

if TYPE_CHECKING:
    from qsgw.ike.engine import IkeEngine

_log = logging.getLogger(__name__)


def receive(
    engine: IkeEngine, data: bytes, local: Endpoint, remote: Endpoint, now: float
) -> None:
    try:
        message = wire.parse(engine, data)
    except ProtocolError as error:
        engine.reject(error.reason)
        return

    header = message.header
    if header.exchange == ExchangeType.IKE_SA_INIT:
        if header.is_response:
            ike_init.receive_response(engine, message, data, remote, now)
        else:
            ike_init.receive_request(engine, message, data, local, remote, now)
        return

    our_spi = header.spi_r if header.is_initiator else header.spi_i
    sa = engine.by_spi.get(our_spi)
    if sa is None or sa.spi_r != header.spi_r or sa.spi_i != header.spi_i:
        engine.reject("unknown-spi", header.exchange)
        return
    if header.is_initiator == sa.initiator:
        engine.reject("role", header.exchange)
        return
    _receive_protected(engine, sa, message, data, local, remote, now)


def _receive_protected(
    engine: IkeEngine,
    sa: IkeSa,
    message: Message,
    data: bytes,
    local: Endpoint,
    remote: Endpoint,
    now: float,
) -> None:
    header = message.header
    engine.touch(sa)
    if not _in_window(engine, sa, message):
        return

    try:
        opened = wire.open_message(engine, sa, data, message)
    except ProtocolError as error:
        # only errors inside verified contents carry a notify
        if error.notify is not None:
            sa.request_datagrams.append(data)
        _rejected(engine, sa, message, error, authenticated=True)
        return
    if not header.is_response:
        sa.request_datagrams.append(data)
    if opened is None:
        return  # more fragments to come

    try:
        rules.check_message(opened.message)
    except ProtocolError as error:
        _rejected(engine, sa, message, error, authenticated=True)
        return

    # RFC 7296 §2.23: follow the peer's address and port once authenticated
    sa.last_received = now
    if not sa.initiator and remote != sa.remote:
        sa.remote, sa.local = remote, local
    engine.emit(
        MessageReceived(wire.exchange_name(header.exchange), header.is_response)
    )
    if header.is_response:
        _check_response(engine, sa, opened, now)
    else:
        _handle_request(engine, sa, opened, now)


def _in_window(engine: IkeEngine, sa: IkeSa, message: Message) -> bool:
    """RFC 7296 §2.3 with a window of one in each direction."""
    header = message.header
    mid = header.message_id
    if header.is_response:
        pending = sa.pending
        if pending is None or pending.message_id != mid:
            engine.reject("message-id", header.exchange)
            return False
        if pending.exchange != header.exchange:
            engine.reject("exchange-type", header.exchange)
            return False
        return True

    cached = sa.cached
    if cached is not None and cached.message_id == mid:
        # a retransmitted request: answer from the cache, change nothing
        if message.raw not in cached.requests:
            engine.reject("message-id", header.exchange)
        elif not wire.is_later_fragment(message):
            engine.resend_cached(sa)
        return False
    if mid != sa.recv_mid:
        engine.reject("message-id", header.exchange)
        return False
    return True


def _rejected(
    engine: IkeEngine,
    sa: IkeSa,
    message: Message,
    error: ProtocolError,
    *,
    authenticated: bool,
) -> None:
    """A bad message: answer a request's authenticated contents with the
    RFC's notify (RFC 7296 §2.21.2); drop everything else."""
    header = message.header
    engine.reject(error.reason, header.exchange)
    if header.is_response or error.notify is None or not authenticated:
        return
    notify = NotifyPayload(error.notify, data=error.data)
    engine.send_reply(sa, header, Reply([notify]))
    if header.exchange == ExchangeType.IKE_AUTH and not sa.initiator:
        engine.fail(sa, error.reason, error.notify)


def _check_response(
    engine: IkeEngine, sa: IkeSa, opened: wire.Opened, now: float
) -> None:
    sa.last_opened = opened
    engine.complete_exchange(sa, opened.message, now)


_REQUEST_STATES = {
    ExchangeType.IKE_INTERMEDIATE: (IkeSaState.CONNECTING,),
    ExchangeType.IKE_AUTH: (IkeSaState.CONNECTING,),
    ExchangeType.CREATE_CHILD_SA: (IkeSaState.ESTABLISHED, IkeSaState.REKEYING),
    ExchangeType.IKE_FOLLOWUP_KE: (IkeSaState.ESTABLISHED, IkeSaState.REKEYING),
    ExchangeType.INFORMATIONAL: (
        IkeSaState.ESTABLISHED,
        IkeSaState.REKEYING,
        IkeSaState.REKEYED,
        IkeSaState.DELETING,
    ),
}


def _handle_request(
    engine: IkeEngine, sa: IkeSa, opened: wire.Opened, now: float
) -> None:
    message = opened.message
    exchange = message.exchange
    states = _REQUEST_STATES.get(ExchangeType(exchange), ())
    # CVE-2019-12312: nothing but the handshake before the SA is up
    if sa.initiator and exchange in (
        ExchangeType.IKE_INTERMEDIATE,
        ExchangeType.IKE_AUTH,
    ):
        states = ()
    if sa.state not in states:
        engine.reject("state", exchange)
        return

    try:
        reply = _answer(engine, sa, opened, now)
    except ProtocolError as error:
        _rejected(engine, sa, message, error, authenticated=True)
        return
    engine.send_reply(sa, message.header, reply)


def _answer(engine: IkeEngine, sa: IkeSa, opened: wire.Opened, now: float) -> Reply:
    exchange = opened.message.exchange
    if exchange == ExchangeType.IKE_INTERMEDIATE:
        return intermediate.respond(engine, sa, opened, now)
    if exchange == ExchangeType.IKE_AUTH:
        return ike_auth.respond(engine, sa, opened.message, now)
    if exchange == ExchangeType.INFORMATIONAL:
        return informational.respond(engine, sa, opened.message, now)
    if exchange in (ExchangeType.CREATE_CHILD_SA, ExchangeType.IKE_FOLLOWUP_KE):
        return create_child.respond(engine, sa, opened.message, now)
    raise ProtocolError(NotifyType.INVALID_SYNTAX, "exchange-type")
