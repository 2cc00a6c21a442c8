"""Which payloads each exchange may carry: one table per exchange and direction.

Sources: RFC 7296 §1.2-§1.5 and Appendix C (IKE_SA_INIT, IKE_AUTH,
CREATE_CHILD_SA, INFORMATIONAL), RFC 6023 (IKE_AUTH without a Child SA),
RFC 9242 (IKE_INTERMEDIATE), RFC 9370 (IKE_INTERMEDIATE and
IKE_FOLLOWUP_KE carrying additional key exchanges).

The engine calls `check_message` before any state changes: once on the
parsed message as received, and again on the decrypted message. Notify and
Vendor ID payloads may appear in any number, as may unknown non-critical
payloads (the codec already rejected unknown critical ones).
"""

from __future__ import annotations

from dataclasses import dataclass

from qsgw.ike.constants import ExchangeType, NotifyType, PayloadType
from qsgw.ike.errors import drop, invalid_syntax
from qsgw.ike.payloads import (
    Message,
    NotifyPayload,
    SaPayload,
    UnknownPayload,
    VendorIdPayload,
    payload_type,
)

MAX_CERTS = 8
MAX_CERTREQS = 8
MAX_DELETES = 20

_ENCRYPTED = frozenset({PayloadType.SK, PayloadType.SKF})
_FREE = (NotifyPayload, VendorIdPayload, UnknownPayload)


@dataclass(frozen=True, slots=True)
class PayloadRule:
    """`type` may appear between `min` and `max` times."""

    type: PayloadType
    min: int = 0
    max: int = 1


@dataclass(frozen=True, slots=True)
class ExchangeRules:
    """The payloads of one exchange in one direction.

    `encrypted`: the payloads travel inside SK (every exchange but
    IKE_SA_INIT). `together`: groups present either completely or not at
    all. `error_response`: a response of notifies only is accepted in
    place of the regular payloads (e.g. INVALID_KE_PAYLOAD, COOKIE).
    """

    exchange: ExchangeType
    response: bool
    encrypted: bool
    payloads: tuple[PayloadRule, ...]
    together: tuple[frozenset[PayloadType], ...] = ()
    required_notifies: tuple[NotifyType, ...] = ()
    error_response: bool = False


def _one(kind: PayloadType) -> PayloadRule:
    return PayloadRule(kind, 1, 1)


def _optional(kind: PayloadType, most: int = 1) -> PayloadRule:
    return PayloadRule(kind, 0, most)


_T = PayloadType
_CHILD_SA = frozenset({_T.SA, _T.TSi, _T.TSr})
_SELECTORS = frozenset({_T.TSi, _T.TSr})
_INIT, _AUTH = ExchangeType.IKE_SA_INIT, ExchangeType.IKE_AUTH
_CREATE, _INFO = ExchangeType.CREATE_CHILD_SA, ExchangeType.INFORMATIONAL
_INTERMEDIATE = ExchangeType.IKE_INTERMEDIATE
_FOLLOWUP = ExchangeType.IKE_FOLLOWUP_KE

RULES: dict[tuple[ExchangeType, bool], ExchangeRules] = {
    # RFC 7296 §1.2: HDR, SAi1, KEi, Ni -->  <-- HDR, SAr1, KEr, Nr, [CERTREQ]
    (_INIT, False): ExchangeRules(
        _INIT, False, False, (_one(_T.SA), _one(_T.KE), _one(_T.NONCE))
    ),
    (_INIT, True): ExchangeRules(
        _INIT,
        True,
        False,
        (
            _one(_T.SA),
            _one(_T.KE),
            _one(_T.NONCE),
            _optional(_T.CERTREQ, MAX_CERTREQS),
        ),
        error_response=True,
    ),
    # RFC 7296 §1.2, §2.16 (EAP rounds carry no IDi/AUTH), RFC 6023.
    (_AUTH, False): ExchangeRules(
        _AUTH,
        False,
        True,
        (
            _optional(_T.IDi),
            _optional(_T.CERT, MAX_CERTS),
            _optional(_T.CERTREQ, MAX_CERTREQS),
            _optional(_T.IDr),
            _optional(_T.AUTH),
            _optional(_T.EAP),
            _optional(_T.CP),
            _optional(_T.SA),
            _optional(_T.TSi),
            _optional(_T.TSr),
        ),
        together=(_CHILD_SA,),
    ),
    (_AUTH, True): ExchangeRules(
        _AUTH,
        True,
        True,
        (
            _optional(_T.IDr),
            _optional(_T.CERT, MAX_CERTS),
            _optional(_T.AUTH),
            _optional(_T.EAP),
            _optional(_T.CP),
            _optional(_T.SA),
            _optional(_T.TSi),
            _optional(_T.TSr),
        ),
        together=(_CHILD_SA,),
        error_response=True,
    ),
    # RFC 7296 §1.3: SA, Ni, [KEi], [TSi, TSr] and the same back.
    (_CREATE, False): ExchangeRules(
        _CREATE,
        False,
        True,
        (
            _one(_T.SA),
            _one(_T.NONCE),
            _optional(_T.KE),
            _optional(_T.TSi),
            _optional(_T.TSr),
        ),
        together=(_SELECTORS,),
    ),
    (_CREATE, True): ExchangeRules(
        _CREATE,
        True,
        True,
        (
            _one(_T.SA),
            _one(_T.NONCE),
            _optional(_T.KE),
            _optional(_T.TSi),
            _optional(_T.TSr),
        ),
        together=(_SELECTORS,),
        error_response=True,
    ),
    # RFC 7296 §1.4: [N], [D], [CP] in both directions, possibly none.
    (_INFO, False): ExchangeRules(
        _INFO,
        False,
        True,
        (_optional(_T.DELETE, MAX_DELETES), _optional(_T.CP)),
    ),
    (_INFO, True): ExchangeRules(
        _INFO,
        True,
        True,
        (_optional(_T.DELETE, MAX_DELETES), _optional(_T.CP)),
    ),
    # RFC 9242 §3, RFC 9370 §2.2.1: one additional key exchange per round.
    (_INTERMEDIATE, False): ExchangeRules(
        _INTERMEDIATE, False, True, (_optional(_T.KE),)
    ),
    (_INTERMEDIATE, True): ExchangeRules(
        _INTERMEDIATE, True, True, (_optional(_T.KE),), error_response=True
    ),
    # RFC 9370 §2.2.4: SK {KEi(n), N(ADDITIONAL_KEY_EXCHANGE)(link)}
    (_FOLLOWUP, False): ExchangeRules(
        _FOLLOWUP,
        False,
        True,
        (_one(_T.KE),),
        required_notifies=(NotifyType.ADDITIONAL_KEY_EXCHANGE,),
    ),
    (_FOLLOWUP, True): ExchangeRules(
        _FOLLOWUP, True, True, (_one(_T.KE),), error_response=True
    ),
}

# the same tables by plain (exchange, response) keys, and each one's types
_RULES: dict[tuple[int, bool], ExchangeRules] = dict(RULES.items())
_ALLOWED = {
    key: frozenset(rule.type for rule in rules.payloads) for key, rules in RULES.items()
}


def rules_for(message: Message) -> ExchangeRules:
    """The table for `message`'s exchange and direction; unknown: dropped."""
    try:
        exchange = ExchangeType(message.exchange)
    except ValueError:
        raise drop("unknown-exchange") from None
    return RULES[exchange, message.header.is_response]


def check_message(message: Message) -> None:
    """Raise ProtocolError unless `message` obeys its exchange's table.

    For an encrypted exchange not yet decrypted, only the framing is
    checked: an SK or SKF payload, preceded by nothing but unknown
    non-critical payloads, else the message is dropped.
    Violations in a decrypted or IKE_SA_INIT message raise INVALID_SYNTAX.
    """
    rules = _RULES.get((message.exchange, message.header.is_response))
    if rules is None:
        rules = rules_for(message)
    if rules.encrypted and not message.encrypted:
        _check_framing(message)
        return
    if _is_error_response(message, rules):
        return

    counts = _counts(message)
    _check_counts(counts, rules)
    _check_groups(counts, rules)
    _check_notifies(message, rules)
    _check_proposals(message, rules)


def _counts(message: Message) -> dict[int, int]:
    """How often each payload type appears, Notify, Vendor ID and unknown
    payloads left out."""
    counts: dict[int, int] = {}
    for payload in message.payloads:
        if not isinstance(payload, _FREE):
            kind = payload_type(payload)
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def _check_framing(message: Message) -> None:
    # RFC 7296 §3.14: all payloads of these exchanges travel inside SK;
    # unknown non-critical payloads may be skipped wherever they are.
    if not message.payloads or payload_type(message.payloads[-1]) not in _ENCRYPTED:
        raise drop("not-encrypted")
    if not all(isinstance(p, UnknownPayload) for p in message.payloads[:-1]):
        raise drop("unencrypted-payload")


def _is_error_response(message: Message, rules: ExchangeRules) -> bool:
    if not (rules.error_response and message.header.is_response):
        return False
    has_notify = any(isinstance(p, NotifyPayload) for p in message.payloads)
    only_free = all(isinstance(p, _FREE) for p in message.payloads)
    return has_notify and only_free


def _check_counts(counts: dict[int, int], rules: ExchangeRules) -> None:
    allowed = _ALLOWED[rules.exchange, rules.response]
    if any(kind not in allowed for kind in counts):
        raise invalid_syntax("unexpected-payload")
    for rule in rules.payloads:
        count = counts.get(rule.type, 0)
        if count < rule.min:
            raise invalid_syntax("missing-payload")
        if count > rule.max:
            raise invalid_syntax("repeated-payload")


def _check_groups(counts: dict[int, int], rules: ExchangeRules) -> None:
    for group in rules.together:
        present = sum(1 for kind in group if counts.get(kind))
        if 0 < present < len(group):
            raise invalid_syntax("incomplete-payload-group")


def _check_notifies(message: Message, rules: ExchangeRules) -> None:
    for notify in rules.required_notifies:
        if not message.notifies(notify):
            raise invalid_syntax("missing-notify")


def _check_proposals(message: Message, rules: ExchangeRules) -> None:
    # RFC 7296 §3.3.1: a response carries the one proposal it accepted.
    sa = message.first(SaPayload)
    if rules.response and isinstance(sa, SaPayload) and len(sa.proposals) != 1:
        raise invalid_syntax("proposal-count")
