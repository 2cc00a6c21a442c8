"""Errors raised on bad input, each carrying the answer to put on the wire.

Shaped after h11's remote protocol errors: the codec, the SK protection and
the payload rules raise `ProtocolError`, and the engine turns it into a
Notify (or into silence) before any state changes.
"""

from __future__ import annotations

from qsgw.ike.constants import NotifyType


class ProtocolError(Exception):
    """A received message was rejected.

    `notify` is the error notification RFC 7296 prescribes for the answer, or
    None when the message must be dropped silently. `data` is that
    notification's data (e.g. the payload type octet for
    UNSUPPORTED_CRITICAL_PAYLOAD). `reason` is a short, stable, label-safe
    word for the "rejected messages by reason" metric; it never contains key
    material or message contents.

    Whether an answer is actually sent is the engine's decision: a response
    is never answered, and an unauthenticated message only where RFC 7296
    allows it (IKE_SA_INIT).
    """

    def __init__(
        self, notify: NotifyType | None, reason: str, data: bytes = b""
    ) -> None:
        super().__init__(reason)
        self.notify = notify
        self.reason = reason
        self.data = data

    def __repr__(self) -> str:
        notify = self.notify.name if self.notify is not None else "drop"
        return f"ProtocolError({notify}, {self.reason!r})"

    def silent(self) -> ProtocolError:
        """The same rejection, downgraded to a silent drop."""
        return ProtocolError(None, self.reason)


def invalid_syntax(reason: str) -> ProtocolError:
    """INVALID_SYNTAX (RFC 7296 §3.10.1), the answer to a malformed message."""
    return ProtocolError(NotifyType.INVALID_SYNTAX, reason)


def drop(reason: str) -> ProtocolError:
    """A rejection answered by silence (e.g. a failed ICV)."""
    return ProtocolError(None, reason)
