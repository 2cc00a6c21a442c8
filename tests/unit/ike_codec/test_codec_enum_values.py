"""Parsed numbers are enum members when the registry knows them, plain
ints when it does not, and header flags keep reserved bits (RFC 7296 §3.1:
ignored on receipt, not lost)."""

from __future__ import annotations

import struct

import pytest

from qsgw.ike.codec import parse_header
from qsgw.ike.constants import ExchangeType, HeaderFlag

SPI_I = bytes(range(1, 9))


def header_octets(exchange: int, flags: int) -> bytes:
    return struct.pack("!8s8sBBBBII", SPI_I, bytes(8), 0, 0x20, exchange, flags, 0, 28)


def test_known_exchange_type_parses_as_its_member() -> None:
    header = parse_header(header_octets(35, 0x08))

    assert header.exchange is ExchangeType.IKE_AUTH


def test_unknown_exchange_type_parses_as_plain_int() -> None:
    header = parse_header(header_octets(200, 0x08))

    assert type(header.exchange) is int
    assert header.exchange == 200


@pytest.mark.parametrize(
    ("flags", "response", "initiator"),
    [
        (0x00, False, False),
        (0x08, False, True),
        (0x20, True, False),
        (0xFF, True, True),
    ],
)
def test_header_flags_keep_every_bit_and_answer_role_questions(
    flags: int, response: bool, initiator: bool
) -> None:
    header = parse_header(header_octets(34, flags))

    assert isinstance(header.flags, HeaderFlag)
    assert int(header.flags) == flags
    assert (header.is_response, header.is_initiator) == (response, initiator)
