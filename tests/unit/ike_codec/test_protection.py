"""SK protection (RFC 7296 §3.14, RFC 5282) and IntAuth octets (RFC 9242)."""

from __future__ import annotations

import struct

import pytest
from ikecodec_support import CIPHERS, SAMPLES, CountingIv, header, keys_for

from qsgw.ike.codec import encode_header, encode_payloads, parse_message
from qsgw.ike.constants import ExchangeType, NotifyType, PayloadType
from qsgw.ike.errors import ProtocolError
from qsgw.ike.fragments import fragment_message
from qsgw.ike.payloads import (
    IdPayload,
    NoncePayload,
    Payload,
    UnknownPayload,
)
from qsgw.ike.protection import (
    decrypt_message,
    encrypt_message,
    intauth_octets,
    pad,
)

AUTH = header(ExchangeType.IKE_AUTH, message_id=1)
INNER: list[Payload] = [
    SAMPLES["IDi"],
    SAMPLES["AUTH"],
    SAMPLES["SA-ESP"],
    SAMPLES["TSi"],
    SAMPLES["TSr"],
    SAMPLES["N-status"],
]
cipher_names = pytest.mark.parametrize("name", sorted(CIPHERS))


def protect(name: str, payloads: list[Payload], iv: bytes | None = None) -> bytes:
    cipher = CIPHERS[name]
    sk_e, sk_a = keys_for(cipher)
    iv = iv if iv is not None else b"\x07" * cipher.iv_size
    return encrypt_message(AUTH, payloads, cipher, sk_e, sk_a, iv)


def unprotect(name: str, raw: bytes) -> tuple[Payload, ...]:
    cipher = CIPHERS[name]
    sk_e, sk_a = keys_for(cipher)
    return decrypt_message(raw, parse_message(raw), cipher, sk_e, sk_a).payloads


def dropped(name: str, raw: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        unprotect(name, raw)
    return caught.value


@cipher_names
@pytest.mark.parametrize("count", [0, 1, len(INNER)])
def test_inner_payloads_survive_encryption(name: str, count: int) -> None:
    raw = protect(name, INNER[:count])

    message = decrypt_message(
        raw, parse_message(raw), CIPHERS[name], *keys_for(CIPHERS[name])
    )

    assert message.encrypted
    assert message.payloads == tuple(INNER[:count])
    assert message.header.message_id == 1


@cipher_names
def test_sk_is_the_only_outer_payload_and_hides_the_plaintext(name: str) -> None:
    raw = protect(name, INNER)

    outer = parse_message(raw)

    assert [type(p).__name__ for p in outer.payloads] == ["EncryptedPayload"]
    assert outer.header.next_payload == PayloadType.SK
    assert b"gw1.example.net" not in raw


@cipher_names
def test_padding_is_minimal_to_the_block_size(name: str) -> None:
    cipher = CIPHERS[name]
    _, plain = encode_payloads(INNER)
    raw = protect(name, INNER)

    ciphertext = len(raw) - 28 - 4 - cipher.iv_size - cipher.icv_size

    assert ciphertext % cipher.block_size == 0
    assert len(plain) + 1 <= ciphertext < len(plain) + 1 + cipher.block_size


@cipher_names
@pytest.mark.parametrize("where", ["header", "sk-header", "iv", "ciphertext", "icv"])
def test_any_flipped_octet_fails_the_icv_silently(name: str, where: str) -> None:
    cipher = CIPHERS[name]
    raw = bytearray(protect(name, INNER))
    position = {
        "header": 20,  # Message ID
        "sk-header": 28,  # SK's Next Payload
        "iv": 32,
        "ciphertext": 32 + cipher.iv_size + 3,
        "icv": len(raw) - 1,
    }[where]
    raw[position] ^= 0x01

    error = dropped(name, bytes(raw))

    assert (error.notify, error.reason) == (None, "icv")


@cipher_names
def test_wrong_key_fails_the_icv_silently(name: str) -> None:
    cipher = CIPHERS[name]
    raw = protect(name, INNER)
    sk_e, sk_a = keys_for(cipher)
    wrong_e = bytes(len(sk_e)) if not sk_a else sk_e

    with pytest.raises(ProtocolError) as caught:
        decrypt_message(raw, parse_message(raw), cipher, wrong_e, bytes(len(sk_a)))

    assert caught.value.reason == "icv"
    assert sk_e.hex() not in repr(caught.value) + str(caught.value)


@cipher_names
def test_sk_shorter_than_iv_and_icv_is_dropped(name: str) -> None:
    cipher = CIPHERS[name]
    body = b"\x00" * (cipher.iv_size + cipher.icv_size)
    raw = sk_message(body)
    assert dropped(name, raw).reason == "bad-length"


def test_cbc_ciphertext_not_a_block_multiple_is_dropped() -> None:
    cipher = CIPHERS["aes-cbc-hmac-sha256"]
    raw = sk_message(b"\x00" * (cipher.iv_size + 17 + cipher.icv_size))
    assert dropped("aes-cbc-hmac-sha256", raw).reason == "bad-length"


@cipher_names
def test_pad_length_longer_than_the_plaintext_is_dropped(name: str) -> None:
    cipher = CIPHERS[name]
    padded = b"\x00" * (cipher.block_size - 1) + b"\xff"
    raw = seal_plaintext(name, padded)
    assert dropped(name, raw).reason == "padding"


@cipher_names
def test_non_minimal_random_padding_is_accepted(name: str) -> None:
    # RFC 7296 §3.14: the recipient MUST accept any length that aligns
    cipher = CIPHERS[name]
    first, plain = encode_payloads([NoncePayload(b"\x01" * 16)])
    extra = 2 * cipher.block_size - 1 - (len(plain) % cipher.block_size)
    padded = plain + b"\xa5" * extra + bytes([extra])
    assert len(padded) % cipher.block_size == 0

    raw = seal_plaintext(name, padded, first)

    assert unprotect(name, raw) == (NoncePayload(b"\x01" * 16),)


def test_pad_uses_the_given_padding_octets() -> None:
    padded = pad(b"abc", 8, lambda n: b"\xee" * n)
    assert padded == b"abc" + b"\xee" * 4 + b"\x04"


@cipher_names
def test_unknown_critical_payload_inside_sk_is_answered(name: str) -> None:
    critical = UnknownPayload(type=201, body=b"x", critical=True)
    raw = protect(name, [SAMPLES["IDi"], critical])

    error = dropped(name, raw)

    assert error.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
    assert error.data == bytes([201])


@cipher_names
def test_unknown_non_critical_payload_inside_sk_is_kept(name: str) -> None:
    raw = protect(name, [UnknownPayload(type=201, body=b"x"), SAMPLES["IDi"]])
    assert unprotect(name, raw)[1] == SAMPLES["IDi"]


@cipher_names
def test_malformed_inner_payload_is_invalid_syntax(name: str) -> None:
    first, plain = encode_payloads([NoncePayload(b"\x01" * 16)])
    broken = plain[:3] + b"\xff" + plain[4:]  # Nonce Length past the end
    cipher = CIPHERS[name]
    raw = seal_plaintext(name, pad(broken, cipher.block_size), first)
    error = dropped(name, raw)
    assert (error.notify, error.reason) == (NotifyType.INVALID_SYNTAX, "bad-length")


@cipher_names
def test_payload_before_sk_is_dropped(name: str) -> None:
    raw = protect(name, INNER)
    nonce = bytes([PayloadType.SK, 0, 0, 20]) + b"\x01" * 16
    hdr = encode_header(AUTH, PayloadType.NONCE, len(raw) + len(nonce))
    forged = hdr + nonce + raw[28:]
    assert dropped(name, forged).reason == "unencrypted-payload"


def test_message_without_sk_is_not_decrypted() -> None:
    raw = encode_header(AUTH, 0, 28)
    error = dropped("aes-gcm-16", raw)
    assert (error.notify, error.reason) == (None, "not-encrypted")


@cipher_names
def test_unknown_non_critical_payload_before_sk_is_skipped(name: str) -> None:
    # RFC 7296 §2.5; the ICV covers it, so it is there before sealing
    cipher = CIPHERS[name]
    iv = b"\x05" * cipher.iv_size
    first, inner = encode_payloads(INNER)
    unknown = bytes([PayloadType.SK, 0, 0, 11]) + b"ignored"
    padded = pad(inner, cipher.block_size)
    sk_size = 4 + len(iv) + len(padded) + cipher.icv_size
    aad = encode_header(AUTH, 200, 28 + len(unknown) + sk_size) + unknown
    aad += bytes([first, 0]) + struct.pack("!H", sk_size)
    raw = aad + iv + cipher.seal(*keys_for(cipher), iv, aad, padded)

    assert unprotect(name, raw) == tuple(INNER)


# ------------------------------------------------------------ IntAuth


def test_intauth_a_is_the_header_and_sk_header_with_adjusted_lengths() -> None:
    inter = header(ExchangeType.IKE_INTERMEDIATE, message_id=1)
    ke = [SAMPLES["KE-mlkem768"]]
    cipher = CIPHERS["aes-gcm-16"]
    raw = encrypt_message(inter, ke, cipher, *keys_for(cipher), b"\x01" * 8)
    first, plain = encode_payloads(ke)

    a, p = intauth_octets(raw, plain)

    assert p == plain
    assert a[:24] == raw[:24]
    assert struct.unpack("!I", a[24:28])[0] == 28 + 4 + len(plain)
    assert a[28:32] == bytes([first, 0]) + struct.pack("!H", 4 + len(plain))
    assert len(a) == 32


@cipher_names
def test_intauth_a_of_a_fragmented_message_equals_the_unfragmented_one(
    name: str,
) -> None:
    # RFC 9242 §3.3.2: computed as if the message had not been fragmented
    cipher = CIPHERS[name]
    inter = header(ExchangeType.IKE_INTERMEDIATE, message_id=1)
    ke = [SAMPLES["KE-mlkem768"], SAMPLES["N-status"]]
    iv = b"\x01" * cipher.iv_size
    whole = encrypt_message(inter, ke, cipher, *keys_for(cipher), iv)
    fragments = fragment_message(
        inter, ke, cipher, *keys_for(cipher), 576, 4, CountingIv()
    )
    _, plain = encode_payloads(ke)

    assert len(fragments) > 1
    assert intauth_octets(fragments[0], plain) == intauth_octets(whole, plain)


@cipher_names
def test_intauth_a_includes_unencrypted_payloads_and_renames_skf(name: str) -> None:
    # RFC 9242 §3.3.2: A runs from the header through the SK header
    cipher = CIPHERS[name]
    inter = header(ExchangeType.IKE_INTERMEDIATE, message_id=1)
    ke = [SAMPLES["KE-mlkem768"]]
    iv = b"\x01" * cipher.iv_size
    whole = encrypt_message(inter, ke, cipher, *keys_for(cipher), iv)
    fragments = fragment_message(
        inter, ke, cipher, *keys_for(cipher), 576, 4, CountingIv()
    )
    _, plain = encode_payloads(ke)

    a_whole, _ = intauth_octets(insert_unknown(whole), plain)
    a_fragment, _ = intauth_octets(insert_unknown(fragments[0]), plain)

    assert a_whole == a_fragment
    assert a_whole[16] == 200 and a_whole[28] == PayloadType.SK
    assert a_whole[28 + 11 :] == bytes([PayloadType.KE, 0]) + struct.pack(
        "!H", 4 + len(plain)
    )


def test_intauth_needs_the_first_fragment() -> None:
    cipher = CIPHERS["aes-gcm-16"]
    inter = header(ExchangeType.IKE_INTERMEDIATE, message_id=1)
    ke = [SAMPLES["KE-mlkem768"]]
    fragments = fragment_message(
        inter, ke, cipher, *keys_for(cipher), 576, 4, CountingIv()
    )
    with pytest.raises(ProtocolError):
        intauth_octets(fragments[1], b"")


def test_intauth_keeps_the_id_payload_bytes_in_p() -> None:
    inner = [IdPayload(True, 2, b"peer")]
    _, plain = encode_payloads(inner)
    cipher = CIPHERS["aes-gcm-16"]
    raw = encrypt_message(
        header(ExchangeType.IKE_INTERMEDIATE, message_id=2),
        inner,
        cipher,
        *keys_for(cipher),
        b"\x02" * 8,
    )
    assert intauth_octets(raw, plain)[1].endswith(b"peer")


# ------------------------------------------------------------ helpers


def insert_unknown(raw: bytes) -> bytes:
    """`raw` with an unknown non-critical payload before its SK or SKF."""
    unknown = bytes([raw[16], 0, 0, 11]) + b"ignored"
    head = bytearray(raw[:28])
    head[16] = 200
    head[24:28] = (len(raw) + len(unknown)).to_bytes(4, "big")
    return bytes(head) + unknown + raw[28:]


def sk_message(body: bytes, first: int = PayloadType.NONCE) -> bytes:
    sk = bytes([first, 0]) + struct.pack("!H", 4 + len(body)) + body
    return encode_header(AUTH, PayloadType.SK, 28 + len(sk)) + sk


def seal_plaintext(name: str, padded: bytes, first: int = PayloadType.NONCE) -> bytes:
    """An SK message around `padded` exactly as given (padding included)."""
    cipher = CIPHERS[name]
    sk_e, sk_a = keys_for(cipher)
    iv = b"\x03" * cipher.iv_size
    size = 4 + len(iv) + len(padded) + cipher.icv_size
    aad = encode_header(AUTH, PayloadType.SK, 28 + size)
    aad += bytes([first, 0]) + struct.pack("!H", size)
    return aad + iv + cipher.seal(sk_e, sk_a, iv, aad, padded)
