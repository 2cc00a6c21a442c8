"""Fuzzing: hostile octets only ever raise ProtocolError, never anything else."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ikecodec_strategies import payload_lists
from ikecodec_support import CIPHERS, SAMPLES, CountingIv, header, keys_for

from qsgw.ike.codec import encode_message, parse_message, parse_payloads
from qsgw.ike.constants import ExchangeType
from qsgw.ike.errors import ProtocolError
from qsgw.ike.fragments import Reassembler, fragment_message
from qsgw.ike.payloads import Message, Payload
from qsgw.ike.protection import decrypt_message, encrypt_message
from qsgw.ike.rules import check_message

FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
SEED_MESSAGE = encode_message(header(), list(SAMPLES.values()))


def survives(raw: bytes) -> Message | None:
    """Parse and rule-check `raw`; any rejection must be a ProtocolError."""
    try:
        message = parse_message(raw)
        check_message(message)
    except ProtocolError:
        return None
    return message


@st.composite
def mutations(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "set" and data:
            data[position] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[position : position + draw(st.integers(1, 64))]
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
    # keep the header Length honest half of the time, to get past it
    if len(data) >= 28 and draw(st.booleans()):
        data[24:28] = len(data).to_bytes(4, "big")
    return bytes(data)


@FUZZ
@given(st.binary(max_size=512))
def test_random_octets_only_raise_protocol_error(data: bytes) -> None:
    survives(data)


@FUZZ
@given(st.binary(min_size=28, max_size=28), st.binary(max_size=400))
def test_random_bodies_behind_an_honest_header_only_raise_protocol_error(
    head: bytes, body: bytes
) -> None:
    raw = bytearray(head + body)
    raw[17] = 0x20
    raw[24:28] = len(raw).to_bytes(4, "big")
    survives(bytes(raw))


@FUZZ
@given(mutations(SEED_MESSAGE))
def test_mutated_valid_messages_only_raise_protocol_error(raw: bytes) -> None:
    survives(raw)


@FUZZ
@given(st.integers(0, 255), st.binary(max_size=300))
def test_random_inner_contents_only_raise_protocol_error(
    first: int, data: bytes
) -> None:
    with contextlib.suppress(ProtocolError):
        parse_payloads(first, data)


@settings(max_examples=150, deadline=None)
@given(payload_lists, st.sampled_from(sorted(CIPHERS)))
def test_encrypted_random_payloads_round_trip(
    payloads: list[Payload], name: str
) -> None:
    cipher = CIPHERS[name]
    hdr = header(ExchangeType.INFORMATIONAL, message_id=3)
    raw = encrypt_message(
        hdr, payloads, cipher, *keys_for(cipher), bytes(cipher.iv_size)
    )

    message = decrypt_message(raw, parse_message(raw), cipher, *keys_for(cipher))

    assert message.payloads == tuple(payloads)


ENCRYPTED_SEED = encrypt_message(
    header(ExchangeType.IKE_AUTH, message_id=1),
    [SAMPLES["IDi"], SAMPLES["AUTH"]],
    CIPHERS["aes-cbc-hmac-sha256"],
    *keys_for(CIPHERS["aes-cbc-hmac-sha256"]),
    bytes(16),
)


@FUZZ
@given(mutations(ENCRYPTED_SEED))
def test_mutated_encrypted_messages_only_raise_protocol_error(raw: bytes) -> None:
    cipher = CIPHERS["aes-cbc-hmac-sha256"]
    message = survives(raw)
    if message is None:
        return
    with contextlib.suppress(ProtocolError):
        decrypt_message(raw, message, cipher, *keys_for(cipher))


FRAGMENTS = fragment_message(
    header(ExchangeType.IKE_AUTH, message_id=1),
    [SAMPLES["CERT"]] * 6,
    CIPHERS["aes-gcm-16"],
    *keys_for(CIPHERS["aes-gcm-16"]),
    576,
    4,
    CountingIv(),
)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(FRAGMENTS) - 1),
            st.integers(0, 300),
            st.integers(0, 300),
            st.booleans(),
        ),
        max_size=20,
    )
)
def test_reassembler_survives_any_fragment_sequence(
    events: list[tuple[int, int, int, bool]],
) -> None:
    cipher = CIPHERS["aes-gcm-16"]
    reassembler = Reassembler()
    for index, number, total, renumber in events:
        raw = FRAGMENTS[index]
        if renumber:
            raw = (
                raw[:32]
                + number.to_bytes(2, "big")
                + total.to_bytes(2, "big")
                + raw[36:]
            )
        with contextlib.suppress(ProtocolError):
            reassembler.add_protected(
                raw, parse_message(raw), cipher, *keys_for(cipher)
            )
    assert reassembler.received <= max(reassembler.total_fragments, 0)
