"""ESP packet processing: vectors from RFC 7634 and draft-mcgrew-gcm-test-01,
round trips for every transform, padding, replay, ICV and sequence rules."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from qsgw.crypto import esp_cipher, esp_keymat_size
from qsgw.crypto.api import EspCipher
from qsgw.esp.packet import (
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    MAX_SEQUENCE_32,
    InboundSa,
    IntegrityFailed,
    LifetimeEvent,
    MalformedPacket,
    OutboundSa,
    ReplayedPacket,
    SequenceExhausted,
    VolumeLimits,
    esp_trailer,
    seal_packet,
)

VECTORS = Path(__file__).parents[2] / "vectors"


def _load(name: str) -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads((VECTORS / name).read_text())["vectors"]
    return vectors


def _vector_cases() -> list[Any]:
    cases = []
    for file, algorithm in (
        ("rfc7634_appendix_a_esp.json", "chacha20poly1305"),
        ("draft_mcgrew_gcm_test_01_esp.json", "aesgcm16"),
    ):
        for vector in _load(file):
            case_id = f"{file.removesuffix('.json')}-{vector['name']}"
            cases.append(pytest.param(algorithm, vector, id=case_id))
    return cases


def _vector_cipher(algorithm: str, vector: dict[str, Any]) -> EspCipher:
    keymat = bytes.fromhex(vector["keymat"])
    return esp_cipher(algorithm, vector["key_bits"], "none", keymat)


@pytest.mark.parametrize(("algorithm", "vector"), _vector_cases())
def test_seal_packet_produces_the_published_esp_packet(
    algorithm: str, vector: dict[str, Any]
) -> None:
    payload = bytes.fromhex(vector["payload"])
    trailer = esp_trailer(len(payload), 4, vector["next_header"])
    assert trailer[-2] == vector["pad_length"]

    packet = seal_packet(
        _vector_cipher(algorithm, vector),
        vector["spi"],
        vector["sequence"],
        bytes.fromhex(vector["iv"]),
        payload,
        trailer,
        esn=vector["esn"],
    )

    assert packet.hex() == vector["esp_packet"]


@pytest.mark.parametrize(("algorithm", "vector"), _vector_cases())
def test_decapsulate_recovers_the_published_inner_packet(
    algorithm: str, vector: dict[str, Any]
) -> None:
    inbound = InboundSa(
        vector["spi"],
        _vector_cipher(algorithm, vector),
        esn=vector["esn"],
        replay_window=64,
    )
    # place the window so that the vector's Seq-High is the one inferred
    inbound.window.top = vector["sequence"] - 1 if vector["sequence"] else 0

    next_header, inner = inbound.decapsulate(bytes.fromhex(vector["esp_packet"]))

    assert next_header == vector["next_header"]
    assert bytes(inner).hex() == vector["payload"]
    assert inbound.window.top == vector["sequence"]


SUITES = [
    pytest.param("aesgcm16", 128, "none", id="aes128gcm16"),
    pytest.param("aesgcm16", 256, "none", id="aes256gcm16"),
    pytest.param("chacha20poly1305", 256, "none", id="chacha20poly1305"),
    pytest.param("aescbc", 128, "sha256", id="aes128-sha256"),
    pytest.param("aescbc", 256, "sha512", id="aes256-sha512"),
]


def _pair(
    name: str, bits: int, integrity: str, *, esn: bool = True, window: int = 64
) -> tuple[OutboundSa, InboundSa]:

    rng = random.Random(f"{name}{bits}{integrity}")
    keys = rng.randbytes(esp_keymat_size(name, bits, integrity))
    outbound = OutboundSa(
        0x1234,
        esp_cipher(name, bits, integrity, keys),
        esn=esn,
        random=rng.randbytes,
    )
    inbound = InboundSa(
        0x1234,
        esp_cipher(name, bits, integrity, keys),
        esn=esn,
        replay_window=window,
    )
    return outbound, inbound


def _ipv4_packet(size: int) -> bytes:
    return bytes([0x45]) + bytes(i % 256 for i in range(size - 1))


@pytest.mark.parametrize(("name", "bits", "integrity"), SUITES)
@pytest.mark.parametrize("size", [20, 21, 22, 23, 64, 1399, 1400])
def test_encapsulated_packet_decapsulates_to_the_same_inner_packet(
    name: str, bits: int, integrity: str, size: int
) -> None:
    outbound, inbound = _pair(name, bits, integrity)
    inner = _ipv4_packet(size)

    packet = outbound.encapsulate(inner, IPPROTO_IPIP)

    assert inbound.decapsulate(packet) == (IPPROTO_IPIP, memoryview(inner))
    assert (inbound.packets, inbound.octets) == (1, size)
    assert (outbound.packets, outbound.octets) == (1, size)


@pytest.mark.parametrize("esn", [True, False], ids=["esn", "no-esn"])
@pytest.mark.parametrize(("name", "bits", "integrity"), SUITES)
def test_packet_given_as_a_view_into_a_receive_batch_decapsulates(
    name: str, bits: int, integrity: str, esn: bool
) -> None:
    outbound, inbound = _pair(name, bits, integrity, esn=esn)
    first, second = _ipv4_packet(100), _ipv4_packet(101)
    sealed = outbound.encapsulate(first, IPPROTO_IPIP)
    view = memoryview(sealed + outbound.encapsulate(second, IPPROTO_IPIP))

    head, tail = view[: len(sealed)], view[len(sealed) :]

    assert inbound.decapsulate(head) == (IPPROTO_IPIP, memoryview(first))
    assert inbound.decapsulate(tail) == (IPPROTO_IPIP, memoryview(second))


@pytest.mark.parametrize(("name", "bits", "integrity"), SUITES)
def test_ciphertext_ends_on_the_block_boundary(
    name: str, bits: int, integrity: str
) -> None:
    outbound, _ = _pair(name, bits, integrity)
    cipher = outbound._cipher  # the SA's own transform, for its sizes
    overhead = 8 + cipher.iv_size + cipher.icv_size

    for size in range(40, 60):
        packet = outbound.encapsulate(_ipv4_packet(size), IPPROTO_IPV6)
        assert (len(packet) - overhead) % cipher.block_size == 0


def test_aead_iv_is_the_sequence_number() -> None:
    outbound, _ = _pair("aesgcm16", 128, "none")
    outbound.sequence = 0x0102030405060707

    packet = outbound.encapsulate(_ipv4_packet(40), IPPROTO_IPIP)

    assert packet[4:8] == bytes.fromhex("05060708")
    assert packet[8:16] == bytes.fromhex("0102030405060708")


def test_cbc_iv_differs_between_packets() -> None:
    outbound, _ = _pair("aescbc", 128, "sha256")
    first = outbound.encapsulate(_ipv4_packet(40), IPPROTO_IPIP)
    second = outbound.encapsulate(_ipv4_packet(40), IPPROTO_IPIP)
    assert first[8:24] != second[8:24]


def test_replayed_packet_is_dropped_and_counted() -> None:
    outbound, inbound = _pair("aesgcm16", 128, "none")
    packet = outbound.encapsulate(_ipv4_packet(40), IPPROTO_IPIP)
    inbound.decapsulate(packet)

    with pytest.raises(ReplayedPacket):
        inbound.decapsulate(packet)

    assert inbound.replay_errors == 1
    assert inbound.packets == 1


def test_packet_older_than_the_window_is_dropped_as_replay() -> None:
    outbound, inbound = _pair("aesgcm16", 128, "none", esn=False, window=32)
    old = outbound.encapsulate(_ipv4_packet(40), IPPROTO_IPIP)
    for _ in range(32):
        inbound.decapsulate(outbound.encapsulate(_ipv4_packet(40), IPPROTO_IPIP))

    with pytest.raises(ReplayedPacket):
        inbound.decapsulate(old)
    assert inbound.window.top == 33


def test_late_packet_inside_the_window_is_accepted_once() -> None:
    outbound, inbound = _pair("chacha20poly1305", 256, "none")
    packets = [outbound.encapsulate(_ipv4_packet(30), IPPROTO_IPIP) for _ in range(5)]
    for packet in (packets[4], packets[1], packets[3]):
        inbound.decapsulate(packet)

    inbound.decapsulate(packets[0])

    with pytest.raises(ReplayedPacket):
        inbound.decapsulate(packets[1])
    assert inbound.packets == 4


@pytest.mark.parametrize(("name", "bits", "integrity"), SUITES)
def test_flipped_bit_fails_the_icv_and_does_not_move_the_window(
    name: str, bits: int, integrity: str
) -> None:
    outbound, inbound = _pair(name, bits, integrity)
    packet = bytearray(outbound.encapsulate(_ipv4_packet(100), IPPROTO_IPIP))
    packet[40] ^= 0x01

    with pytest.raises(IntegrityFailed):
        inbound.decapsulate(bytes(packet))

    assert inbound.integrity_errors == 1
    assert inbound.window.top == 0
    assert inbound.packets == 0


def test_forged_sequence_number_does_not_move_the_window() -> None:
    outbound, inbound = _pair("aesgcm16", 128, "none")
    packet = bytearray(outbound.encapsulate(_ipv4_packet(60), IPPROTO_IPIP))
    packet[4:8] = (1000).to_bytes(4, "big")

    with pytest.raises(IntegrityFailed):
        inbound.decapsulate(bytes(packet))
    assert inbound.window.top == 0


def test_truncated_packet_is_malformed() -> None:
    outbound, inbound = _pair("aesgcm16", 128, "none")
    packet = outbound.encapsulate(_ipv4_packet(60), IPPROTO_IPIP)

    with pytest.raises(MalformedPacket):
        inbound.decapsulate(packet[:20])
    assert inbound.malformed == 1


def test_bad_padding_is_malformed_after_the_icv_verified() -> None:
    outbound, inbound = _pair("aesgcm16", 128, "none", esn=False)
    # RFC 4303 §2.4: padding must be 1, 2, 3, ...; here 1, 9
    cipher = outbound._cipher
    packet = seal_packet(
        cipher,
        0x1234,
        1,
        bytes(8),
        _ipv4_packet(22),
        b"\x01\x09\x02\x04",
        esn=False,
    )

    with pytest.raises(MalformedPacket):
        inbound.decapsulate(packet)
    assert inbound.malformed == 1


def test_esn_infers_seq_high_across_a_32_bit_boundary() -> None:
    outbound, inbound = _pair("aesgcm16", 256, "none", window=128)
    outbound.sequence = 2**32 - 3
    inbound.window.top = 2**32 - 4

    packets = [outbound.encapsulate(_ipv4_packet(40), IPPROTO_IPIP) for _ in range(6)]
    for packet in packets[2:]:
        inbound.decapsulate(packet)
    inbound.decapsulate(packets[0])  # late, from the previous subspace

    assert inbound.window.top == 2**32 + 3
    assert inbound.packets == 5


@pytest.mark.parametrize("window", [32, 128])
def test_esn_inbound_sa_accepts_exactly_the_new_packets_of_a_reordered_stream(
    window: int,
) -> None:
    # in order, late, duplicated and too old, across Seq-High 0 -> 1
    outbound, inbound = _pair("aesgcm16", 128, "none", window=window)
    outbound.sequence = 2**32 - 3 * window
    inbound.window.top = outbound.sequence
    packets: dict[int, bytes] = {}
    for _ in range(6 * window):
        packet = outbound.encapsulate(_ipv4_packet(40), IPPROTO_IPIP)
        packets[outbound.sequence] = packet
    rng = random.Random(window)
    order = sorted(packets, key=lambda sequence: sequence + rng.randrange(window * 2))
    order += rng.sample(order, window)  # duplicates, some now far too old
    seen: set[int] = set()

    for sequence in order:
        top = inbound.window.top
        expected = sequence not in seen and (sequence > top or top - sequence < window)
        try:
            inbound.decapsulate(packets[sequence])
            accepted = True
        except (ReplayedPacket, IntegrityFailed):
            accepted = False
        assert accepted == expected, sequence
        if accepted:
            seen.add(sequence)

    assert inbound.window.top == max(packets)
    assert inbound.packets == len(seen)


def test_esn_packets_carry_only_the_low_32_bits() -> None:
    outbound, _ = _pair("aesgcm16", 128, "none")
    outbound.sequence = 0x00000007FFFFFFFF

    packet = outbound.encapsulate(_ipv4_packet(40), IPPROTO_IPIP)

    assert packet[4:8] == bytes(4)


def test_without_esn_the_sender_refuses_to_cycle_the_sequence() -> None:
    events: list[LifetimeEvent] = []
    outbound, _ = _pair("aesgcm16", 128, "none", esn=False)
    outbound = OutboundSa(
        0x1234,
        outbound._cipher,
        esn=False,
        listener=events.append,
        sequence=MAX_SEQUENCE_32 - 5,
        exhaustion_margin=3,
    )
    for _ in range(5):
        outbound.encapsulate(_ipv4_packet(40), IPPROTO_IPIP)

    with pytest.raises(SequenceExhausted):
        outbound.encapsulate(_ipv4_packet(40), IPPROTO_IPIP)

    assert events == [LifetimeEvent.SEQUENCE_EXHAUSTION]
    assert outbound.sequence == MAX_SEQUENCE_32


def test_soft_then_hard_packet_limits_fire_once_each() -> None:
    events: list[LifetimeEvent] = []
    template, _ = _pair("aesgcm16", 128, "none")
    outbound = OutboundSa(
        1,
        template._cipher,
        esn=True,
        listener=events.append,
        limits=VolumeLimits(soft_packets=3, hard_packets=5),
    )

    for _ in range(7):
        outbound.encapsulate(_ipv4_packet(40), IPPROTO_IPIP)

    assert events == [LifetimeEvent.SOFT, LifetimeEvent.HARD]


def test_byte_limit_counts_inner_octets() -> None:
    events: list[LifetimeEvent] = []
    template, _ = _pair("aesgcm16", 128, "none")
    outbound = OutboundSa(
        1,
        template._cipher,
        esn=True,
        listener=events.append,
        limits=VolumeLimits(soft_bytes=250),
    )

    for _ in range(2):
        outbound.encapsulate(_ipv4_packet(100), IPPROTO_IPIP)
    assert events == []
    outbound.encapsulate(_ipv4_packet(100), IPPROTO_IPIP)
    assert events == [LifetimeEvent.SOFT]
