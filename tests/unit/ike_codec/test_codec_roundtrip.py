"""Every payload survives encode -> parse -> encode unchanged."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ikecodec_strategies import payload_lists
from ikecodec_support import SAMPLES, header

from qsgw.ike.codec import encode_message, parse_header, parse_message
from qsgw.ike.constants import ExchangeType, HeaderFlag, PayloadType
from qsgw.ike.payloads import Payload


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_payload_round_trips_through_the_wire_format(name: str) -> None:
    payload = SAMPLES[name]
    raw = encode_message(header(), [payload])

    parsed = parse_message(raw)

    assert parsed.payloads == (payload,)
    assert encode_message(parsed.header, parsed.payloads) == raw


def test_all_payloads_chain_in_one_message_in_order() -> None:
    payloads = list(SAMPLES.values())
    raw = encode_message(header(), payloads)

    parsed = parse_message(raw)

    assert parsed.payloads == tuple(payloads)
    assert parsed.header.length == len(raw)


def test_header_fields_are_parsed_as_encoded() -> None:
    sent = header(ExchangeType.CREATE_CHILD_SA, response=True, message_id=0x01020304)
    raw = encode_message(sent, [SAMPLES["Nonce"]])

    received = parse_header(raw)

    assert received.spi_i == sent.spi_i and received.spi_r == sent.spi_r
    assert received.exchange == ExchangeType.CREATE_CHILD_SA
    assert received.flags == HeaderFlag.RESPONSE and received.is_response
    assert received.message_id == 0x01020304
    assert received.next_payload == PayloadType.NONCE
    assert (received.major_version, received.minor_version) == (2, 0)


def test_key_length_attribute_is_encoded_in_tv_format() -> None:
    raw = encode_message(header(), [SAMPLES["SA-ESP"]])

    # RFC 7296 §3.3.5: AF=1, type 14, value 128 follows the ENCR transform
    assert bytes.fromhex("800e0080") in raw


def test_empty_message_round_trips() -> None:
    raw = encode_message(header(), [])

    assert len(raw) == 28
    assert parse_message(raw).payloads == ()


@settings(max_examples=200, deadline=None)
@given(payload_lists)
def test_random_payload_lists_round_trip(payloads: list[Payload]) -> None:
    raw = encode_message(header(), payloads)

    parsed = parse_message(raw)

    assert parsed.payloads == tuple(payloads)
    assert encode_message(parsed.header, parsed.payloads) == raw


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_message_id_round_trips(message_id: int) -> None:
    raw = encode_message(header(message_id=message_id), [])

    assert parse_header(raw).message_id == message_id
