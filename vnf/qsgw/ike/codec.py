"""The IKEv2 wire codec: octets to `qsgw.ike.payloads` dataclasses and back.

RFC 7296 §3 (header and payload formats), RFC 7383 §2.5 (SKF), RFC 5282.
Pure functions, no I/O. Every malformed input raises `ProtocolError`, and
nothing else: lengths that lie, truncated structures, payloads shorter than
their fixed part, too many payloads, bad selector lengths, bad SPI sizes,
unknown critical payloads.

Reserved fields and reserved flag bits are sent as zero and ignored on
receipt, as RFC 7296 §3.1-§3.2 require ("MUST be ignored on receipt").

Errors in a message of any exchange but IKE_SA_INIT are turned into silent
drops by `parse_message`: its payloads are not authenticated yet, so nothing
may be answered (RFC 7296 §2.21). Errors inside decrypted contents keep
their notify.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address
from typing import Any, TypeVar

from qsgw.ike.constants import (
    GENERIC_PAYLOAD_HEADER_SIZE,
    IKE_HEADER_SIZE,
    AuthMethod,
    ExchangeType,
    HeaderFlag,
    IdType,
    NotifyType,
    PayloadType,
    ProtocolId,
    TransformAttribute,
    TransformType,
    TsType,
)
from qsgw.ike.errors import ProtocolError, drop, invalid_syntax
from qsgw.ike.payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    ConfigAttribute,
    ConfigPayload,
    DeletePayload,
    EapPayload,
    EncryptedFragmentPayload,
    EncryptedPayload,
    IdPayload,
    IkeHeader,
    KePayload,
    Message,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    TrafficSelector,
    Transform,
    TsPayload,
    UnknownPayload,
    VendorIdPayload,
    payload_type,
)

CRITICAL = 0x80
MIN_NONCE_SIZE = 16  # RFC 7296 §3.9
MAX_NONCE_SIZE = 256
SKF_FIELDS_SIZE = 4  # Fragment Number, Total Fragments (RFC 7383 §2.5)
MAX_PAYLOAD_LENGTH = 0xFFFF

_HEADER = struct.Struct("!8s8sBBBBII")
_GENERIC = struct.Struct("!BBH")
_PROPOSAL = struct.Struct("!BBHBBBB")
_TRANSFORM = struct.Struct("!BBHBBH")
_ATTRIBUTE = struct.Struct("!HH")
_SELECTOR = struct.Struct("!BBHHH")
_NOTIFY = struct.Struct("!BBH")
_DELETE = struct.Struct("!BBH")
_KE = struct.Struct("!HH")  # Key Exchange Method Num, RESERVED
_SKF_FIELDS = struct.Struct("!HH")  # Fragment Number, Total Fragments

_LAST = 0
_MORE_PROPOSALS = 2  # RFC 7296 §3.3.1 "Last Substruc"
_MORE_TRANSFORMS = 3  # RFC 7296 §3.3.2
_ATTRIBUTE_FORMAT_TV = 0x8000  # RFC 7296 §3.3.5 "AF"

_SPI_SIZES: dict[int, tuple[int, ...]] = {
    ProtocolId.IKE: (0, 8),  # 0 in IKE_SA_INIT, 8 when rekeying the IKE SA
    ProtocolId.AH: (4,),
    ProtocolId.ESP: (4,),
}
_SELECTOR_ADDRESS_SIZES = {TsType.TS_IPV4_ADDR_RANGE: 4, TsType.TS_IPV6_ADDR_RANGE: 16}

# RFC 7296 §3.10: the notifications whose SPI field names a Child SA.
_CHILD_SA_NOTIFIES = frozenset(
    {NotifyType.INVALID_SELECTORS, NotifyType.REKEY_SA, NotifyType.CHILD_SA_NOT_FOUND}
)
_OPAQUE_PORTS = (0xFFFF, 0)  # RFC 7296 §3.13.1


@dataclass(frozen=True, slots=True)
class CodecLimits:
    """Bounds on what a peer may make us parse."""

    max_message_size: int = 65535
    max_payloads: int = 64


DEFAULT_LIMITS = CodecLimits()


# ---------------------------------------------------------------- header


def parse_header(data: bytes) -> IkeHeader:
    """The IKE header (RFC 7296 §3.1) at the start of `data`."""
    if len(data) < IKE_HEADER_SIZE:
        raise drop("short-header")
    fields = _HEADER.unpack_from(data)
    spi_i, spi_r, next_payload, version, exchange, flags, mid, length = fields
    major, minor = version >> 4, version & 0x0F

    # RFC 7296 §2.5: drop a higher major version and answer
    # INVALID_MAJOR_VERSION; anything older is IKEv1 or garbage.
    if major > 2:
        raise ProtocolError(NotifyType.INVALID_MAJOR_VERSION, "ike-version")
    if major < 2:
        raise drop("ike-version")
    if spi_i == bytes(8):
        raise drop("zero-spi")

    return IkeHeader(
        spi_i=spi_i,
        spi_r=spi_r,
        next_payload=next_payload,
        exchange=_enum_or_int(_EXCHANGE_TYPES, exchange),
        flags=_HEADER_FLAGS[flags],
        message_id=mid,
        length=length,
        major_version=major,
        minor_version=minor,
    )


def encode_header(header: IkeHeader, next_payload: int, length: int) -> bytes:
    """The 28 header octets, with the given Next Payload and Length."""
    if len(header.spi_i) != 8 or len(header.spi_r) != 8:
        raise ValueError("IKE SPIs are 8 octets")
    version = (header.major_version << 4) | (header.minor_version & 0x0F)
    return _HEADER.pack(
        header.spi_i,
        header.spi_r,
        next_payload,
        version,
        int(header.exchange),
        int(header.flags),
        header.message_id,
        length,
    )


# ---------------------------------------------------------------- messages


def parse_message(data: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> Message:
    """A whole IKE message (without the non-ESP marker).

    SK or SKF, if present, is the last payload and keeps its body raw;
    decrypt it with `qsgw.ike.protection` or `qsgw.ike.fragments`.
    """
    if len(data) > limits.max_message_size:
        raise drop("too-big")
    header = parse_header(data)
    if header.length != len(data):
        raise drop("bad-length")
    try:
        payloads = parse_payloads(
            header.next_payload, data[IKE_HEADER_SIZE:], limits, outer=True
        )
    except ProtocolError as error:
        if header.exchange != ExchangeType.IKE_SA_INIT:
            raise error.silent() from None
        raise
    return Message(header=header, payloads=payloads, raw=data)


def encode_message(header: IkeHeader, payloads: Iterable[Payload]) -> bytes:
    """The message octets: lengths and Next Payload chaining computed here."""
    first_type, body = encode_payloads(payloads)
    length = IKE_HEADER_SIZE + len(body)
    return encode_header(header, first_type, length) + body


# ---------------------------------------------------------------- payload chain


def parse_payloads(
    first_type: int,
    data: bytes,
    limits: CodecLimits = DEFAULT_LIMITS,
    *,
    outer: bool = False,
) -> tuple[Payload, ...]:
    """The chain of payloads in `data`, the first of type `first_type`.

    With `outer` (a message's top level) the chain may end in SK or SKF;
    inside decrypted contents, an SK or SKF is malformed (RFC 7296 §3.14:
    an Encrypted payload MUST NOT contain another).
    """
    payloads: list[Payload] = []
    offset, current = 0, first_type
    while current != PayloadType.NONE:
        if len(payloads) >= limits.max_payloads:
            raise invalid_syntax("too-many-payloads")
        next_type, critical, body = _generic_payload(data, offset)
        offset += GENERIC_PAYLOAD_HEADER_SIZE + len(body)

        if current in (PayloadType.SK, PayloadType.SKF):
            if not outer:
                raise invalid_syntax("nested-encrypted")
            # RFC 7296 §3.14: SK is last; its Next Payload is the first inner.
            if offset != len(data):
                raise invalid_syntax("encrypted-not-last")
            payloads.append(_parse_encrypted(current, next_type, critical, body))
            return tuple(payloads)

        payloads.append(_parse_one(current, critical, body))
        current = next_type

    if offset != len(data):
        raise invalid_syntax("trailing-data")
    return tuple(payloads)


def encode_payloads(payloads: Iterable[Payload]) -> tuple[int, bytes]:
    """(type of the first payload, the chained payload octets)."""
    items = list(payloads)
    if not items:
        return PayloadType.NONE, b""
    types = [payload_type(p) for p in items]
    # each generic header names the next payload's type; the last names none
    following = [*types[1:], PayloadType.NONE]
    chunks: list[bytes] = []
    for payload, next_type in zip(items, following, strict=True):
        if isinstance(payload, EncryptedPayload | EncryptedFragmentPayload):
            if next_type != PayloadType.NONE:
                raise ValueError("SK/SKF must be the last payload")
            next_type = payload.first_inner
        body = _body(payload)
        chunks.append(encode_generic_header(next_type, payload.critical, len(body)))
        chunks.append(body)
    return types[0], b"".join(chunks)


def encode_generic(next_type: int, critical: bool, body: bytes) -> bytes:
    """A generic payload header (RFC 7296 §3.2) followed by `body`."""
    return encode_generic_header(next_type, critical, len(body)) + body


def encode_generic_header(next_type: int, critical: bool, body_size: int) -> bytes:
    """The 4-octet generic payload header of a payload with a body this long."""
    length = GENERIC_PAYLOAD_HEADER_SIZE + body_size
    if length > MAX_PAYLOAD_LENGTH:
        raise ValueError("payload longer than 65535 octets")
    flags = CRITICAL if critical else 0
    return _GENERIC.pack(next_type, flags, length)


def _generic_payload(data: bytes, offset: int) -> tuple[int, bool, bytes]:
    if len(data) - offset < GENERIC_PAYLOAD_HEADER_SIZE:
        raise invalid_syntax("truncated-payload")
    next_type, flags, length = _GENERIC.unpack_from(data, offset)
    if length < GENERIC_PAYLOAD_HEADER_SIZE or offset + length > len(data):
        raise invalid_syntax("bad-length")
    body = data[offset + GENERIC_PAYLOAD_HEADER_SIZE : offset + length]
    return next_type, bool(flags & CRITICAL), body


# ---------------------------------------------------------------- one payload


def _parse_one(kind: int, critical: bool, body: bytes) -> Payload:
    parser = _PARSERS.get(kind)
    if parser is not None:
        return parser(kind, critical, body)
    # RFC 7296 §2.5: an unknown payload with the critical bit rejects the
    # whole message; without it, the payload is skipped.
    if critical:
        raise ProtocolError(
            NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD,
            "unknown-critical-payload",
            data=bytes([kind & 0xFF]),
        )
    return UnknownPayload(type=kind, body=body)


def _parse_encrypted(
    kind: int, first_inner: int, critical: bool, body: bytes
) -> Payload:
    if kind == PayloadType.SK:
        return EncryptedPayload(first_inner=first_inner, body=body, critical=critical)
    if len(body) < SKF_FIELDS_SIZE:
        raise invalid_syntax("bad-length")
    number, total = struct.unpack_from("!HH", body)
    return EncryptedFragmentPayload(
        first_inner=first_inner,
        fragment_number=number,
        total_fragments=total,
        body=body[SKF_FIELDS_SIZE:],
        critical=critical,
    )


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise invalid_syntax(reason)


_Enum = TypeVar("_Enum", bound=IntEnum)


def _members(enum: type[_Enum]) -> dict[int, _Enum]:
    """Each value of `enum` to its (canonical) member, built once."""
    return {member.value: member for member in enum}


# Parsing makes about a hundred enum values per IKE SA set-up; calling the
# enum class each time costs far more than these dictionary lookups.
_EXCHANGE_TYPES = _members(ExchangeType)
_PROTOCOL_IDS = _members(ProtocolId)
_TRANSFORM_TYPES = _members(TransformType)
_ID_TYPES = _members(IdType)
_AUTH_METHODS = _members(AuthMethod)
_NOTIFY_TYPES = _members(NotifyType)
_TS_TYPES = _members(TsType)
# every octet value, reserved bits kept as IntFlag keeps them
_HEADER_FLAGS = {value: HeaderFlag(value) for value in range(0x100)}


def _enum_or_int(members: dict[int, _Enum], value: int) -> _Enum | int:
    """The enum member for `value` if it has one, else the plain int."""
    return members.get(value, value)


# RFC 7296 §3.3: Security Association payload


def _parse_sa(kind: int, critical: bool, body: bytes) -> Payload:
    if len(body) <= _SA_KEPT_SIZE:
        return _parse_kept_sa(critical, body)
    return _parse_sa_body(critical, body)


# IKE_SA_INIT offers and answers of one peer are the same octets each time
# (no SPIs): parsed once; the payload is immutable, and `proposals` keeps
# decisions about it by identity. Malformed ones raise, so are not kept;
# neither are large ones, so that 256 entries stay small.
_SA_KEPT_SIZE = 512


@functools.lru_cache(maxsize=256)
def _parse_kept_sa(critical: bool, body: bytes) -> SaPayload:
    return _parse_sa_body(critical, body)


def _parse_sa_body(critical: bool, body: bytes) -> SaPayload:
    _require(len(body) > 0, "empty-sa")
    proposals: list[Proposal] = []
    offset, last, previous = 0, _MORE_PROPOSALS, 0
    while last == _MORE_PROPOSALS:
        _require(len(body) - offset >= _PROPOSAL.size, "truncated-proposal")
        last, _, length, number = struct.unpack_from("!BBHB", body, offset)
        _require(last in (_LAST, _MORE_PROPOSALS), "proposal-substructure")
        _require(_PROPOSAL.size <= length <= len(body) - offset, "bad-length")
        # RFC 7296 §3.3.1: each Proposal Num is one more than the previous
        # (a response's single proposal keeps the number it accepted).
        _require(number >= 1 and previous in (0, number - 1), "proposal-number")
        proposal = _parse_proposal(body[offset : offset + length])
        if proposal is not None:
            proposals.append(proposal)
        offset, previous = offset + length, number
    _require(offset == len(body), "trailing-data")
    return SaPayload(proposals=tuple(proposals), critical=critical)


def _parse_proposal(data: bytes) -> Proposal | None:
    """One proposal; None when it must be rejected for an unknown attribute."""
    number, protocol, spi_size, count = _PROPOSAL.unpack_from(data)[3:]
    allowed = _SPI_SIZES.get(protocol)
    _require(allowed is None or spi_size in allowed, "spi-size")
    _require(_PROPOSAL.size + spi_size <= len(data), "bad-length")
    _require(count > 0, "no-transforms")
    spi = data[_PROPOSAL.size : _PROPOSAL.size + spi_size]

    transforms, understood = _parse_transforms(data[_PROPOSAL.size + spi_size :])
    _require(len(transforms) == count, "transform-count")
    if not understood:
        # RFC 7296 §3.3.6: a proposal with attributes we do not understand
        # is rejected; dropping it lets the others still be chosen.
        return None
    return Proposal(
        number=number,
        protocol=_enum_or_int(_PROTOCOL_IDS, protocol),
        spi=spi,
        transforms=tuple(transforms),
    )


def _parse_transforms(data: bytes) -> tuple[list[Transform], bool]:
    transforms: list[Transform] = []
    understood = True
    offset, last = 0, _MORE_TRANSFORMS
    while last == _MORE_TRANSFORMS:
        _require(len(data) - offset >= _TRANSFORM.size, "truncated-transform")
        last, _, length, kind, _, ident = _TRANSFORM.unpack_from(data, offset)
        _require(last in (_LAST, _MORE_TRANSFORMS), "transform-substructure")
        _require(_TRANSFORM.size <= length <= len(data) - offset, "transform-length")
        attributes = data[offset + _TRANSFORM.size : offset + length]
        key_length, known = _parse_attributes(attributes)
        understood = understood and known
        transforms.append(
            Transform(_enum_or_int(_TRANSFORM_TYPES, kind), ident, key_length)
        )
        offset += length
    _require(offset == len(data), "trailing-data")
    return transforms, understood


def _parse_attributes(data: bytes) -> tuple[int | None, bool]:
    """(Key Length or None, whether every attribute was understood)."""
    key_length: int | None = None
    understood = True
    offset = 0
    while offset < len(data):
        _require(len(data) - offset >= _ATTRIBUTE.size, "truncated-attribute")
        type_field, value = _ATTRIBUTE.unpack_from(data, offset)
        offset += _ATTRIBUTE.size
        attribute = type_field & ~_ATTRIBUTE_FORMAT_TV
        if not type_field & _ATTRIBUTE_FORMAT_TV:
            # TLV: `value` is a length; Key Length is only ever TV (§3.3.5).
            _require(attribute != TransformAttribute.KEY_LENGTH, "attribute-format")
            _require(value <= len(data) - offset, "truncated-attribute")
            offset += value
            understood = False
        elif attribute == TransformAttribute.KEY_LENGTH:
            _require(key_length is None, "duplicate-attribute")
            key_length = value
        else:
            understood = False
    return key_length, understood


def _encode_sa(payload: SaPayload) -> bytes:
    chunks = []
    for index, proposal in enumerate(payload.proposals):
        more = index < len(payload.proposals) - 1
        chunks.append(_encode_proposal(proposal, more))
    return b"".join(chunks)


# a connection offers and accepts the same few proposals again and again
@functools.lru_cache(maxsize=256)
def _encode_proposal(proposal: Proposal, more: bool) -> bytes:
    transforms = proposal.transforms
    body = b"".join(
        _encode_transform(t, index < len(transforms) - 1)
        for index, t in enumerate(transforms)
    )
    length = _PROPOSAL.size + len(proposal.spi) + len(body)
    fields = _PROPOSAL.pack(
        _MORE_PROPOSALS if more else _LAST,
        0,
        length,
        proposal.number,
        int(proposal.protocol),
        len(proposal.spi),
        len(transforms),
    )
    return fields + proposal.spi + body


def _encode_transform(transform: Transform, more: bool) -> bytes:
    attributes = b""
    if transform.key_length is not None:
        type_field = _ATTRIBUTE_FORMAT_TV | TransformAttribute.KEY_LENGTH
        attributes = _ATTRIBUTE.pack(type_field, transform.key_length)
    length = _TRANSFORM.size + len(attributes)
    last = _MORE_TRANSFORMS if more else _LAST
    kind = int(transform.type)
    return _TRANSFORM.pack(last, 0, length, kind, 0, transform.id) + attributes


# RFC 7296 §3.4-§3.9, §3.12, §3.16: payloads with a small fixed part


def _parse_ke(kind: int, critical: bool, body: bytes) -> Payload:
    # every Key Exchange Method has key exchange data: an empty one is malformed
    _require(len(body) > 4, "bad-length")
    (method,) = struct.unpack_from("!H", body)
    return KePayload(method=method, data=body[4:], critical=critical)


def _parse_id(kind: int, critical: bool, body: bytes) -> Payload:
    _require(len(body) >= 4, "bad-length")
    return IdPayload(
        initiator=kind == PayloadType.IDi,
        id_type=_enum_or_int(_ID_TYPES, body[0]),
        data=body[4:],
        critical=critical,
    )


def _parse_cert(kind: int, critical: bool, body: bytes) -> Payload:
    _require(len(body) >= 1, "bad-length")
    if kind == PayloadType.CERT:
        return CertPayload(encoding=body[0], data=body[1:], critical=critical)
    return CertReqPayload(encoding=body[0], data=body[1:], critical=critical)


def _parse_auth(kind: int, critical: bool, body: bytes) -> Payload:
    _require(len(body) > 4, "bad-length")
    method = _enum_or_int(_AUTH_METHODS, body[0])
    return AuthPayload(method=method, data=body[4:], critical=critical)


def _parse_nonce(kind: int, critical: bool, body: bytes) -> Payload:
    _require(MIN_NONCE_SIZE <= len(body) <= MAX_NONCE_SIZE, "nonce-size")
    return NoncePayload(data=body, critical=critical)


def _parse_vendor_id(kind: int, critical: bool, body: bytes) -> Payload:
    return VendorIdPayload(data=body, critical=critical)


def _parse_eap(kind: int, critical: bool, body: bytes) -> Payload:
    # RFC 3748 §4: Code, Identifier, Length (the whole EAP message).
    _require(len(body) >= 4, "bad-length")
    (eap_length,) = struct.unpack_from("!H", body, 2)
    _require(eap_length == len(body), "eap-length")
    return EapPayload(data=body, critical=critical)


# RFC 7296 §3.10: Notify


def _parse_notify(kind: int, critical: bool, body: bytes) -> Payload:
    _require(len(body) >= _NOTIFY.size, "bad-length")
    protocol, spi_size, notify = _NOTIFY.unpack_from(body)
    _require(len(body) >= _NOTIFY.size + spi_size, "bad-length")
    spi = body[_NOTIFY.size : _NOTIFY.size + spi_size]
    _check_notify_spi(notify, protocol, spi_size)
    if spi_size == 0:
        protocol = ProtocolId.NONE  # "MUST be ignored on receipt"
    return NotifyPayload(
        type=_enum_or_int(_NOTIFY_TYPES, notify),
        protocol=_enum_or_int(_PROTOCOL_IDS, protocol),
        spi=spi,
        data=body[_NOTIFY.size + spi_size :],
        critical=critical,
    )


def _check_notify_spi(notify: int, protocol: int, spi_size: int) -> None:
    # RFC 7296 §3.10: Child SA notifications name AH or ESP with a 4-octet
    # SPI; other SPIs must match their protocol's size.
    if notify in _CHILD_SA_NOTIFIES:
        _require(protocol in (ProtocolId.AH, ProtocolId.ESP), "notify-protocol")
        _require(spi_size == 4, "spi-size")
    elif spi_size != 0:
        allowed = _SPI_SIZES.get(protocol, ())
        _require(protocol != ProtocolId.NONE and spi_size in allowed, "spi-size")


def _encode_notify(payload: NotifyPayload) -> bytes:
    fields = _NOTIFY.pack(int(payload.protocol), len(payload.spi), int(payload.type))
    return fields + payload.spi + payload.data


# RFC 7296 §3.11: Delete


def _parse_delete(kind: int, critical: bool, body: bytes) -> Payload:
    _require(len(body) >= _DELETE.size, "bad-length")
    protocol, spi_size, count = _DELETE.unpack_from(body)
    spis = body[_DELETE.size :]
    if protocol == ProtocolId.IKE:
        _require(spi_size == 0 and count == 0, "spi-size")
    else:
        _require(protocol in (ProtocolId.AH, ProtocolId.ESP), "delete-protocol")
        _require(spi_size == 4, "spi-size")
    _require(len(spis) == spi_size * count, "bad-length")
    return DeletePayload(
        protocol=_PROTOCOL_IDS[protocol],
        spis=tuple(spis[i * spi_size : (i + 1) * spi_size] for i in range(count)),
        critical=critical,
    )


def _encode_delete(payload: DeletePayload) -> bytes:
    spi_size = 0 if payload.protocol == ProtocolId.IKE else 4
    if any(len(spi) != spi_size for spi in payload.spis):
        raise ValueError("Delete SPIs must all have the protocol's SPI size")
    fields = _DELETE.pack(int(payload.protocol), spi_size, len(payload.spis))
    return fields + b"".join(payload.spis)


# RFC 7296 §3.13: Traffic Selector


def _parse_ts(kind: int, critical: bool, body: bytes) -> Payload:
    _require(len(body) >= 4, "bad-length")
    count = body[0]
    _require(count > 0, "no-selectors")
    selectors: list[TrafficSelector] = []
    offset = 4
    for _ in range(count):
        selector, offset = _parse_selector(body, offset)
        selectors.append(selector)
    _require(offset == len(body), "trailing-data")
    initiator = kind == PayloadType.TSi
    return TsPayload(initiator=initiator, selectors=tuple(selectors), critical=critical)


def _parse_selector(data: bytes, offset: int) -> tuple[TrafficSelector, int]:
    _require(len(data) - offset >= _SELECTOR.size, "truncated-selector")
    ts_type, protocol, length, start_port, end_port = _SELECTOR.unpack_from(
        data, offset
    )
    size = _SELECTOR_ADDRESS_SIZES.get(ts_type)
    # RFC 7296 §3.13.1: we know the two address-range types only; a selector
    # we cannot narrow is an error (TS_UNACCEPTABLE is the engine's call).
    if size is None:
        raise invalid_syntax("ts-type")
    _require(length == _SELECTOR.size + 2 * size, "selector-length")
    _require(offset + length <= len(data), "truncated-selector")

    start = offset + _SELECTOR.size
    first, last = data[start : start + size], data[start + size : start + 2 * size]
    _require(first <= last, "selector-range")
    ports_ok = start_port <= end_port or (start_port, end_port) == _OPAQUE_PORTS
    _require(ports_ok, "selector-range")
    address = IPv4Address if size == 4 else IPv6Address
    selector = TrafficSelector(
        ts_type=_TS_TYPES[ts_type],
        ip_protocol=protocol,
        start_port=start_port,
        end_port=end_port,
        start_address=address(first),
        end_address=address(last),
    )
    return selector, offset + length


def _encode_ts(payload: TsPayload) -> bytes:
    if not 0 < len(payload.selectors) <= 0xFF:
        raise ValueError("a TS payload holds 1..255 selectors")
    return bytes([len(payload.selectors), 0, 0, 0]) + b"".join(
        _encode_selector(s) for s in payload.selectors
    )


def _encode_selector(selector: TrafficSelector) -> bytes:
    addresses = selector.start_address.packed + selector.end_address.packed
    fields = _SELECTOR.pack(
        int(selector.ts_type),
        selector.ip_protocol,
        _SELECTOR.size + len(addresses),
        selector.start_port,
        selector.end_port,
    )
    return fields + addresses


# RFC 7296 §3.15: Configuration


def _parse_cp(kind: int, critical: bool, body: bytes) -> Payload:
    _require(len(body) >= 4, "bad-length")
    attributes: list[ConfigAttribute] = []
    offset = 4
    while offset < len(body):
        _require(len(body) - offset >= 4, "truncated-attribute")
        type_field, length = struct.unpack_from("!HH", body, offset)
        offset += 4
        _require(length <= len(body) - offset, "truncated-attribute")
        value = body[offset : offset + length]
        attributes.append(ConfigAttribute(type=type_field & 0x7FFF, value=value))
        offset += length
    return ConfigPayload(
        cfg_type=body[0], attributes=tuple(attributes), critical=critical
    )


def _encode_cp(payload: ConfigPayload) -> bytes:
    attributes = b"".join(
        struct.pack("!HH", a.type & 0x7FFF, len(a.value)) + a.value
        for a in payload.attributes
    )
    return bytes([payload.cfg_type, 0, 0, 0]) + attributes


_PARSERS: dict[int, Callable[[int, bool, bytes], Payload]] = {
    PayloadType.SA: _parse_sa,
    PayloadType.KE: _parse_ke,
    PayloadType.IDi: _parse_id,
    PayloadType.IDr: _parse_id,
    PayloadType.CERT: _parse_cert,
    PayloadType.CERTREQ: _parse_cert,
    PayloadType.AUTH: _parse_auth,
    PayloadType.NONCE: _parse_nonce,
    PayloadType.NOTIFY: _parse_notify,
    PayloadType.DELETE: _parse_delete,
    PayloadType.VENDOR_ID: _parse_vendor_id,
    PayloadType.TSi: _parse_ts,
    PayloadType.TSr: _parse_ts,
    PayloadType.CP: _parse_cp,
    PayloadType.EAP: _parse_eap,
}


def _body(payload: Payload) -> bytes:
    """The payload's octets after its generic header."""
    encoder = _BODY_ENCODERS.get(type(payload))
    if encoder is None:
        raise TypeError(f"not a payload: {type(payload).__name__}")
    return encoder(payload)


def _encode_ke(payload: KePayload) -> bytes:
    return _KE.pack(payload.method, 0) + payload.data


def _encode_id(payload: IdPayload) -> bytes:
    return payload.body


def _encode_cert(payload: CertPayload | CertReqPayload) -> bytes:
    return bytes([payload.encoding]) + payload.data


def _encode_auth(payload: AuthPayload) -> bytes:
    return bytes([int(payload.method), 0, 0, 0]) + payload.data


def _encode_fragment(payload: EncryptedFragmentPayload) -> bytes:
    numbers = _SKF_FIELDS.pack(payload.fragment_number, payload.total_fragments)
    return numbers + payload.body


def _encode_data(payload: NoncePayload | VendorIdPayload | EapPayload) -> bytes:
    return payload.data


def _encode_raw(payload: EncryptedPayload | UnknownPayload) -> bytes:
    return payload.body


# by class: one dictionary lookup per payload instead of a match on classes
_BODY_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    SaPayload: _encode_sa,
    KePayload: _encode_ke,
    IdPayload: _encode_id,
    CertPayload: _encode_cert,
    CertReqPayload: _encode_cert,
    AuthPayload: _encode_auth,
    NotifyPayload: _encode_notify,
    DeletePayload: _encode_delete,
    TsPayload: _encode_ts,
    ConfigPayload: _encode_cp,
    EncryptedFragmentPayload: _encode_fragment,
    NoncePayload: _encode_data,
    VendorIdPayload: _encode_data,
    EapPayload: _encode_data,
    EncryptedPayload: _encode_raw,
    UnknownPayload: _encode_raw,
}
