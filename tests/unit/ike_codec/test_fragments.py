"""IKE fragmentation (RFC 7383): splitting, sizes and reassembly limits."""

from __future__ import annotations

import random

import pytest
from ikecodec_support import CIPHERS, SAMPLES, CountingIv, header, keys_for

from qsgw.ike.codec import encode_payloads, parse_message
from qsgw.ike.constants import ExchangeType, PayloadType
from qsgw.ike.errors import ProtocolError
from qsgw.ike.fragments import (
    Reassembled,
    Reassembler,
    ReassemblyLimits,
    fragment_message,
)
from qsgw.ike.payloads import (
    CertPayload,
    EncryptedFragmentPayload,
    Payload,
)

AUTH = header(ExchangeType.IKE_AUTH, message_id=1)
INNER: list[Payload] = [
    SAMPLES["IDi"],
    CertPayload(4, b"\x30" * 3000),
    SAMPLES["AUTH"],
    SAMPLES["SA-ESP"],
    SAMPLES["TSi"],
    SAMPLES["TSr"],
]
cipher_names = pytest.mark.parametrize("name", sorted(CIPHERS))


def split(
    name: str,
    size: int = 1280,
    ip_version: int = 4,
    marker: bool = False,
    payloads: list[Payload] | None = None,
    hdr: object = None,
) -> list[bytes]:
    cipher = CIPHERS[name]
    return fragment_message(
        hdr or AUTH,  # type: ignore[arg-type]
        INNER if payloads is None else payloads,
        cipher,
        *keys_for(cipher),
        size,
        ip_version,
        CountingIv(),
        non_esp_marker=marker,
    )


def feed(
    name: str, fragments: list[bytes], reassembler: Reassembler | None = None
) -> list[Reassembled | None]:
    reassembler = reassembler or Reassembler()
    cipher = CIPHERS[name]
    return [
        reassembler.add_protected(raw, parse_message(raw), cipher, *keys_for(cipher))
        for raw in fragments
    ]


def fragment_of(raw: bytes) -> EncryptedFragmentPayload:
    payload = parse_message(raw).payloads[0]
    assert isinstance(payload, EncryptedFragmentPayload)
    return payload


@cipher_names
@pytest.mark.parametrize(
    ("size", "ip_version", "marker", "overhead"),
    [(1280, 4, False, 28), (1280, 6, True, 52), (576, 4, True, 32)],
    ids=["ipv4-1280", "ipv6-1280-nat-t", "ipv4-576-nat-t"],
)
def test_every_fragment_fits_the_whole_ip_datagram(
    name: str, size: int, ip_version: int, marker: bool, overhead: int
) -> None:
    fragments = split(name, size, ip_version, marker)
    block = CIPHERS[name].block_size

    assert len(fragments) > 1
    assert all(len(f) + overhead <= size for f in fragments)
    # all but the last are filled to within one cipher block
    assert all(len(f) + overhead > size - block for f in fragments[:-1])


@cipher_names
def test_fragments_are_numbered_and_only_the_first_names_the_inner_type(
    name: str,
) -> None:
    fragments = [fragment_of(raw) for raw in split(name)]
    total = len(fragments)

    assert [f.fragment_number for f in fragments] == list(range(1, total + 1))
    assert {f.total_fragments for f in fragments} == {total}
    assert fragments[0].first_inner == PayloadType.IDi
    assert {f.first_inner for f in fragments[1:]} == {0}


@cipher_names
@pytest.mark.parametrize("order", ["in-order", "reversed", "shuffled"])
def test_fragments_reassemble_in_any_order(name: str, order: str) -> None:
    fragments = split(name)
    if order == "reversed":
        fragments.reverse()
    elif order == "shuffled":
        random.Random(7).shuffle(fragments)

    results = feed(name, fragments)

    assert results[:-1] == [None] * (len(fragments) - 1)
    done = results[-1]
    assert done is not None
    assert done.message().payloads == tuple(INNER)
    assert done.message().encrypted


def test_reassembled_keeps_the_first_fragment_for_intauth() -> None:
    fragments = split("aes-gcm-16")
    done = feed("aes-gcm-16", fragments[::-1])[-1]
    assert done is not None
    assert done.first_fragment == fragments[0]
    assert done.plaintext == encode_payloads(INNER)[1]


def test_small_message_becomes_a_single_fragment() -> None:
    fragments = split("aes-gcm-16", payloads=[SAMPLES["N-status"]])
    assert len(fragments) == 1
    assert fragment_of(fragments[0]).total_fragments == 1


def test_ike_sa_init_is_never_fragmented() -> None:
    with pytest.raises(ValueError):
        split("aes-gcm-16", hdr=header(ExchangeType.IKE_SA_INIT))


def test_datagram_limit_too_small_for_any_content_is_refused() -> None:
    with pytest.raises(ValueError):
        split("aes-cbc-hmac-sha256", size=100)


# ------------------------------------------------------------ reassembly limits


def rejected(name: str, fragments: list[bytes], reassembler: Reassembler) -> str:
    with pytest.raises(ProtocolError) as caught:
        feed(name, fragments, reassembler)
    assert caught.value.notify is None  # RFC 7383 §2.6: silently discarded
    return caught.value.reason


def renumbered(raw: bytes, number: int, total: int) -> bytes:
    """`raw` with other numbers: it no longer authenticates."""
    return raw[:32] + number.to_bytes(2, "big") + total.to_bytes(2, "big") + raw[36:]


@pytest.mark.parametrize(
    ("number", "total"), [(0, 3), (4, 3), (1, 0)], ids=["zero", "beyond", "none"]
)
def test_fragment_number_outside_1_to_total_is_dropped(number: int, total: int) -> None:
    raw = renumbered(split("aes-gcm-16")[0], number, total)
    assert rejected("aes-gcm-16", [raw], Reassembler()) == "fragment-number"


def test_total_above_the_fragment_cap_is_dropped() -> None:
    fragments = split("aes-gcm-16", size=576)
    limits = ReassemblyLimits(max_fragments=len(fragments) - 1)
    assert rejected("aes-gcm-16", fragments[:1], Reassembler(limits)) == (
        "too-many-fragments"
    )


def test_reassembled_size_beyond_the_limit_is_dropped() -> None:
    fragments = split("aes-gcm-16", size=576)
    reassembler = Reassembler(ReassemblyLimits(max_size=1500))
    assert rejected("aes-gcm-16", fragments, reassembler) == "reassembly-size"


def test_forged_fragment_fails_the_icv_and_changes_nothing() -> None:
    fragments = split("aes-gcm-16")
    reassembler = Reassembler()
    feed("aes-gcm-16", fragments[:1], reassembler)
    forged = bytearray(fragments[1])
    forged[-1] ^= 1

    assert rejected("aes-gcm-16", [bytes(forged)], reassembler) == "icv"
    assert reassembler.received == 1
    assert feed("aes-gcm-16", fragments[1:], reassembler)[-1] is not None


def test_forged_larger_total_cannot_restart_the_reassembly() -> None:
    fragments = split("aes-gcm-16")
    reassembler = Reassembler()
    feed("aes-gcm-16", fragments[:2], reassembler)
    forged = renumbered(fragments[0], 1, len(fragments) + 5)

    assert rejected("aes-gcm-16", [forged], reassembler) == "icv"
    assert reassembler.total_fragments == len(fragments)
    assert reassembler.received == 2


def test_duplicate_fragments_are_ignored() -> None:
    fragments = split("aes-gcm-16")
    reassembler = Reassembler()

    results = feed(
        "aes-gcm-16", [fragments[0], fragments[0], fragments[1]], reassembler
    )

    assert results == [None, None, None]
    assert reassembler.received == 2


def test_fragments_of_a_completed_message_are_ignored() -> None:
    fragments = split("aes-gcm-16")
    reassembler = Reassembler()
    feed("aes-gcm-16", fragments, reassembler)

    assert feed("aes-gcm-16", fragments[:1], reassembler) == [None]
    assert reassembler.complete


def test_larger_total_restarts_and_smaller_total_is_dropped() -> None:
    # RFC 7383 §2.6: a retransmission with smaller fragments (more of them)
    # replaces what was collected; fragments of the older one are discarded
    big = split("aes-gcm-16", size=1280)
    small = split("aes-gcm-16", size=576)
    assert len(small) > len(big)
    reassembler = Reassembler()
    feed("aes-gcm-16", big[:-1], reassembler)

    feed("aes-gcm-16", small[:1], reassembler)
    assert reassembler.total_fragments == len(small)
    assert reassembler.received == 1
    assert rejected("aes-gcm-16", big[-1:], reassembler) == "fragment-total"

    done = feed("aes-gcm-16", small[1:], reassembler)[-1]
    assert done is not None and done.message().payloads == tuple(INNER)


def test_fragment_of_another_exchange_is_dropped() -> None:
    reassembler = Reassembler()
    feed("aes-gcm-16", split("aes-gcm-16")[:1], reassembler)
    other = header(ExchangeType.INFORMATIONAL, message_id=1)
    stray = split("aes-gcm-16", hdr=other)[1]
    assert rejected("aes-gcm-16", [stray], reassembler) == "fragment-header"


def test_sk_message_is_not_a_fragment() -> None:
    from qsgw.ike.protection import encrypt_message

    cipher = CIPHERS["aes-gcm-16"]
    raw = encrypt_message(AUTH, INNER[:1], cipher, *keys_for(cipher), bytes(8))
    assert rejected("aes-gcm-16", [raw], Reassembler()) == "not-a-fragment"
