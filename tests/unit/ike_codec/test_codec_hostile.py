"""Malformed input: each case is rejected with the answer RFC 7296 gives it.

The cases follow the bad-input checklist of the implementations' CVEs
(lying lengths, empty payloads, selectors, notify SPIs, proposals).
"""

from __future__ import annotations

import struct

import pytest
from ikecodec_support import build, header

from qsgw.ike.codec import (
    CodecLimits,
    encode_header,
    encode_message,
    parse_header,
    parse_message,
    parse_payloads,
)
from qsgw.ike.constants import ExchangeType, NotifyType, PayloadType, ProtocolId
from qsgw.ike.errors import ProtocolError
from qsgw.ike.payloads import NoncePayload, SaPayload, UnknownPayload

T = PayloadType
SYNTAX = NotifyType.INVALID_SYNTAX


def rejected(raw: bytes, limits: CodecLimits | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_message(raw, limits) if limits else parse_message(raw)
    return caught.value


def transform(kind: int, ident: int, attrs: bytes = b"", last: int = 0) -> bytes:
    return struct.pack("!BBHBBH", last, 0, 8 + len(attrs), kind, 0, ident) + attrs


def proposal(
    number: int,
    transforms: list[bytes],
    protocol: int = ProtocolId.IKE,
    spi: bytes = b"",
    last: int = 0,
    count: int | None = None,
) -> bytes:
    chained = [
        bytes([3]) + t[1:] if i < len(transforms) - 1 else t
        for i, t in enumerate(transforms)
    ]
    body = spi + b"".join(chained)
    n = len(transforms) if count is None else count
    return (
        struct.pack("!BBHBBBB", last, 0, 8 + len(body), number, protocol, len(spi), n)
        + body
    )


def lengthened(substructure: bytes) -> bytes:
    """`substructure` with a Length field one octet longer than it is."""
    length = int.from_bytes(substructure[2:4], "big") + 1
    return substructure[:2] + length.to_bytes(2, "big") + substructure[4:]


ENCR = transform(1, 20, struct.pack("!HH", 0x800E, 256))
PRF = transform(2, 7)


# ------------------------------------------------------------ header


def test_header_length_not_matching_the_datagram_is_dropped() -> None:
    error = rejected(build([(T.NONCE, b"n" * 32)], length_delta=1))
    assert (error.notify, error.reason) == (None, "bad-length")


def test_datagram_shorter_than_a_header_is_dropped() -> None:
    error = rejected(b"\x01" * 27)
    assert (error.notify, error.reason) == (None, "short-header")


def test_higher_major_version_is_answered_with_invalid_major_version() -> None:
    raw = bytearray(build([]))
    raw[17] = 0x30
    error = rejected(bytes(raw))
    assert error.notify == NotifyType.INVALID_MAJOR_VERSION


def test_ikev1_major_version_is_dropped() -> None:
    raw = bytearray(build([]))
    raw[17] = 0x10
    assert rejected(bytes(raw)).notify is None


def test_zero_initiator_spi_is_dropped() -> None:
    raw = bytes(8) + build([])[8:]
    assert rejected(raw).reason == "zero-spi"


def test_message_over_the_size_limit_is_dropped() -> None:
    raw = build([(T.VENDOR_ID, b"v" * 2000)])
    error = rejected(raw, CodecLimits(max_message_size=1500))
    assert (error.notify, error.reason) == (None, "too-big")


def test_minor_version_and_reserved_flag_bits_are_ignored() -> None:
    raw = bytearray(build([(T.NONCE, b"n" * 32)]))
    raw[17] = 0x2F  # minor version 15
    raw[19] |= 0x01 | 0x40  # reserved flag bits

    message = parse_message(bytes(raw))

    assert message.header.minor_version == 15
    assert message.payloads == (NoncePayload(b"n" * 32),)


# ------------------------------------------------------------ payload chain


def test_payload_length_past_the_end_is_invalid_syntax() -> None:
    raw = bytearray(build([(T.NONCE, b"n" * 32)]))
    raw[30:32] = (200).to_bytes(2, "big")
    error = rejected(bytes(raw))
    assert (error.notify, error.reason) == (SYNTAX, "bad-length")


def test_payload_length_below_the_generic_header_is_invalid_syntax() -> None:
    raw = bytearray(build([(T.NONCE, b"n" * 32)]))
    raw[30:32] = (3).to_bytes(2, "big")
    assert rejected(bytes(raw)).reason == "bad-length"


def test_truncated_generic_header_is_invalid_syntax() -> None:
    raw = encode_header(header(), T.NONCE, 30) + b"\x00\x00"
    assert rejected(raw).reason == "truncated-payload"


def test_octets_after_the_last_payload_are_invalid_syntax() -> None:
    raw = build([(T.NONCE, b"n" * 32)])
    raw = raw[:24] + (len(raw) + 2).to_bytes(4, "big") + raw[28:] + b"\x00\x00"
    assert rejected(raw).reason == "trailing-data"


def test_more_payloads_than_the_cap_is_invalid_syntax() -> None:
    raw = build([(T.VENDOR_ID, b"v")] * 65)
    assert rejected(raw).reason == "too-many-payloads"


def test_payload_cap_is_configurable() -> None:
    raw = build([(T.VENDOR_ID, b"v")] * 5)
    assert rejected(raw, CodecLimits(max_payloads=4)).reason == "too-many-payloads"
    assert len(parse_message(raw).payloads) == 5


def test_errors_outside_sk_of_an_encrypted_exchange_are_dropped() -> None:
    hdr = header(ExchangeType.IKE_AUTH, message_id=1)
    raw = bytearray(build([(T.NONCE, b"n" * 32)], hdr))
    raw[30:32] = (200).to_bytes(2, "big")
    error = rejected(bytes(raw))
    assert (error.notify, error.reason) == (None, "bad-length")


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (T.KE, b""),
        (T.KE, b"\x00\x1f\x00"),
        (T.KE, b"\x00\x1f\x00\x00"),
        (T.IDi, b"\x02\x00"),
        (T.AUTH, b"\x0e\x00\x00\x00"),
        (T.CERT, b""),
        (T.NOTIFY, b"\x00\x00\x40"),
        (T.DELETE, b"\x01\x00"),
        (T.TSi, b""),
        (T.CP, b"\x01"),
        (T.EAP, b"\x01\x01"),
        (T.SA, b""),
    ],
    ids=lambda v: str(v) if isinstance(v, PayloadType) else v.hex() or "empty",
)
def test_payload_shorter_than_its_fixed_part_is_invalid_syntax(
    kind: PayloadType, body: bytes
) -> None:
    assert rejected(build([(kind, body)])).notify == SYNTAX


@pytest.mark.parametrize("size", [0, 15, 257])
def test_nonce_outside_16_to_256_octets_is_invalid_syntax(size: int) -> None:
    assert rejected(build([(T.NONCE, b"n" * size)])).reason == "nonce-size"


def test_eap_length_field_must_match_the_payload() -> None:
    assert rejected(build([(T.EAP, bytes([1, 1, 0, 9, 1]))])).reason == "eap-length"


# ------------------------------------------------------------ unknown payloads


def test_unknown_critical_payload_is_answered_with_its_type() -> None:
    raw = build([(T.NONCE, b"n" * 32), (200, b"x", 0x80)])
    error = rejected(raw)
    assert error.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
    assert error.data == bytes([200])


def test_unknown_non_critical_payload_is_kept_and_skipped() -> None:
    raw = build([(200, b"skip me"), (T.NONCE, b"n" * 32)])

    message = parse_message(raw)

    assert message.payloads == (
        UnknownPayload(200, b"skip me"),
        NoncePayload(b"n" * 32),
    )


def test_critical_bit_on_a_known_payload_is_ignored() -> None:
    raw = build([(T.NONCE, b"n" * 32, 0x80 | 0x7F)])
    assert parse_message(raw).payloads[0].data == b"n" * 32  # type: ignore[union-attr]


# ------------------------------------------------------------ SK / SKF framing


def test_sk_must_be_the_last_payload() -> None:
    raw = build([(T.NONCE, b"n" * 32)], header(ExchangeType.IKE_SA_INIT))
    sk = bytes([T.NONCE, 0, 0, 8]) + b"ivic"
    raw = encode_message(header(), [])[:16] + bytes([T.SK]) + raw[17:24]
    raw += (
        (28 + len(sk) + 36).to_bytes(4, "big") + sk + bytes([0, 0, 0, 36]) + b"n" * 32
    )
    assert rejected(raw).reason == "encrypted-not-last"


def test_sk_inside_decrypted_contents_is_invalid_syntax() -> None:
    inner = bytes([0, 0, 0, 8]) + b"abcd"
    with pytest.raises(ProtocolError) as caught:
        parse_payloads(T.SK, inner)
    assert (caught.value.notify, caught.value.reason) == (SYNTAX, "nested-encrypted")


def test_skf_without_its_number_fields_is_rejected() -> None:
    raw = build([(T.SKF, b"\x00\x01")], header(ExchangeType.IKE_AUTH, message_id=1))
    assert rejected(raw).reason == "bad-length"


# ------------------------------------------------------------ traffic selectors


def selector(
    ts_type: int = 7,
    length: int = 16,
    ports: tuple[int, int] = (0, 65535),
    start: bytes = bytes([10, 0, 0, 0]),
    end: bytes = bytes([10, 0, 0, 255]),
) -> bytes:
    return struct.pack("!BBHHH", ts_type, 0, length, *ports) + start + end


def ts_body(*selectors: bytes, count: int | None = None) -> bytes:
    n = len(selectors) if count is None else count
    return bytes([n, 0, 0, 0]) + b"".join(selectors)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (ts_body(selector(length=20)), "selector-length"),
        (ts_body(selector(ts_type=8, length=16)), "selector-length"),
        (ts_body(selector(ts_type=9)), "ts-type"),
        (ts_body(selector(start=bytes([10, 0, 1, 0]))), "selector-range"),
        (ts_body(selector(ports=(500, 499))), "selector-range"),
        (ts_body(count=0), "no-selectors"),
        (ts_body(selector(), count=2), "truncated-selector"),
        (ts_body(selector(), selector())[:-1], "truncated-selector"),
        (ts_body(selector()) + b"\x00", "trailing-data"),
    ],
    ids=[
        "length-too-long",
        "ipv6-with-ipv4-length",
        "unknown-type",
        "start-after-end",
        "ports-reversed",
        "zero-selectors",
        "count-beyond-body",
        "truncated",
        "trailing",
    ],
)
def test_bad_traffic_selector_is_invalid_syntax(body: bytes, reason: str) -> None:
    error = rejected(build([(T.TSi, body)]))
    assert (error.notify, error.reason) == (SYNTAX, reason)


def test_opaque_ports_are_accepted() -> None:
    # RFC 7296 §3.13.1: start 65535, end 0 means OPAQUE
    message = parse_message(build([(T.TSr, ts_body(selector(ports=(65535, 0))))]))
    ts = message.payloads[0]
    assert ts.selectors[0].start_port == 65535  # type: ignore[union-attr]


# ------------------------------------------------------------ notify and delete


def notify(protocol: int, spi: bytes, kind: int) -> bytes:
    return struct.pack("!BBH", protocol, len(spi), kind) + spi


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (notify(ProtocolId.IKE, b"\x01" * 4, NotifyType.REKEY_SA), "notify-protocol"),
        (notify(ProtocolId.NONE, b"", NotifyType.REKEY_SA), "notify-protocol"),
        (notify(ProtocolId.ESP, b"\x01" * 8, NotifyType.REKEY_SA), "spi-size"),
        (notify(5, b"\x01" * 4, NotifyType.CHILD_SA_NOT_FOUND), "notify-protocol"),
        (notify(ProtocolId.IKE, b"\x01" * 4, 16384), "spi-size"),
        (notify(ProtocolId.ESP, b"\x01" * 8, 16384), "spi-size"),
        (notify(ProtocolId.NONE, b"\x01" * 4, 16384), "spi-size"),
        (notify(ProtocolId.ESP, b"\x01" * 4, 16384)[:-1], "bad-length"),
    ],
    ids=[
        "rekey-sa-for-ike",
        "rekey-sa-without-spi",
        "rekey-sa-8-octet-spi",
        "child-sa-not-found-unknown-protocol",
        "ike-with-4-octet-spi",
        "esp-with-8-octet-spi",
        "spi-without-protocol",
        "spi-beyond-body",
    ],
)
def test_notify_with_wrong_protocol_or_spi_size_is_invalid_syntax(
    body: bytes, reason: str
) -> None:
    error = rejected(build([(T.NOTIFY, body)]))
    assert (error.notify, error.reason) == (SYNTAX, reason)


def test_notify_protocol_without_an_spi_is_ignored() -> None:
    body = notify(ProtocolId.ESP, b"", NotifyType.INITIAL_CONTACT)
    n = parse_message(build([(T.NOTIFY, body)])).payloads[0]
    assert n.protocol == ProtocolId.NONE  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (struct.pack("!BBH", ProtocolId.IKE, 8, 1) + b"\x01" * 8, "spi-size"),
        (struct.pack("!BBH", ProtocolId.ESP, 8, 1) + b"\x01" * 8, "spi-size"),
        (struct.pack("!BBH", ProtocolId.ESP, 4, 2) + b"\x01" * 4, "bad-length"),
        (struct.pack("!BBH", ProtocolId.ESP, 4, 1) + b"\x01" * 5, "bad-length"),
        (struct.pack("!BBH", 7, 4, 1) + b"\x01" * 4, "delete-protocol"),
    ],
    ids=["ike-with-spi", "esp-8-octet", "count-too-high", "extra-octet", "protocol"],
)
def test_bad_delete_is_invalid_syntax(body: bytes, reason: str) -> None:
    assert rejected(build([(T.DELETE, body)])).reason == reason


# ------------------------------------------------------------ proposals


def sa(*proposals: bytes) -> bytes:
    chained = [
        bytes([2]) + p[1:] if i < len(proposals) - 1 else p
        for i, p in enumerate(proposals)
    ]
    return build([(T.SA, b"".join(chained))])


def parsed_sa(raw: bytes) -> SaPayload:
    payload = parse_message(raw).payloads[0]
    assert isinstance(payload, SaPayload)
    return payload


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (sa(proposal(1, [])), "no-transforms"),
        (sa(proposal(1, [ENCR, PRF], count=3)), "transform-count"),
        (sa(proposal(1, [ENCR, PRF], count=1)), "transform-count"),
        (sa(proposal(1, [ENCR]), proposal(3, [ENCR])), "proposal-number"),
        (sa(proposal(0, [ENCR])), "proposal-number"),
        (sa(proposal(1, [ENCR], last=2)), "truncated-proposal"),
        (sa(lengthened(proposal(1, [ENCR]))), "bad-length"),
        (sa(bytes([5]) + proposal(1, [ENCR])[1:]), "proposal-substructure"),
        (sa(proposal(1, [bytes([9]) + ENCR[1:]])), "transform-substructure"),
        (sa(proposal(1, [ENCR[:3] + b"\x40" + ENCR[4:]])), "transform-length"),
        (sa(proposal(1, [ENCR], ProtocolId.ESP, b"\x01" * 8)), "spi-size"),
        (sa(proposal(1, [ENCR], ProtocolId.IKE, b"\x01" * 4)), "spi-size"),
        (
            sa(proposal(1, [transform(1, 12, b"\x00\x0e\x00\x02\x01\x00")])),
            "attribute-format",
        ),
        (
            sa(proposal(1, [transform(1, 12, b"\x80\x0e\x00\x80\x80\x0e\x01\x00")])),
            "duplicate-attribute",
        ),
        (
            sa(proposal(1, [transform(1, 12, b"\x00\x10\x00\x09")])),
            "truncated-attribute",
        ),
        (sa(proposal(1, [transform(1, 12, b"\x80")])), "truncated-attribute"),
    ],
    ids=[
        "no-transforms",
        "more-transforms-announced",
        "fewer-transforms-announced",
        "numbering-gap",
        "number-zero",
        "more-proposals-announced",
        "truncated",
        "bad-last-substruc",
        "bad-transform-last-substruc",
        "transform-length-lies",
        "esp-8-octet-spi",
        "ike-4-octet-spi",
        "key-length-as-tlv",
        "duplicate-key-length",
        "tlv-past-the-end",
        "attribute-truncated",
    ],
)
def test_malformed_proposal_is_invalid_syntax(raw: bytes, reason: str) -> None:
    error = rejected(raw)
    assert (error.notify, error.reason) == (SYNTAX, reason)


def test_unknown_transform_type_is_kept_for_the_proposal_choice() -> None:
    payload = parsed_sa(sa(proposal(1, [ENCR, transform(250, 1)])))
    assert payload.proposals[0].transforms[1].type == 250


def test_proposal_with_an_unknown_attribute_is_dropped_others_kept() -> None:
    unknown_tv = transform(1, 12, b"\x80\x0f\x00\x01")
    unknown_tlv = transform(1, 12, b"\x00\x10\x00\x02\xab\xcd")
    payload = parsed_sa(
        sa(
            proposal(1, [unknown_tv]),
            proposal(2, [ENCR, PRF]),
            proposal(3, [unknown_tlv]),
        )
    )
    assert [p.number for p in payload.proposals] == [2]


def test_proposal_numbers_may_start_above_one_in_a_response() -> None:
    payload = parsed_sa(sa(proposal(4, [ENCR])))
    assert payload.proposals[0].number == 4


def test_parse_header_reads_a_header_alone() -> None:
    raw = encode_message(header(ExchangeType.INFORMATIONAL, True, 7), [])
    assert parse_header(raw + b"extra").message_id == 7
