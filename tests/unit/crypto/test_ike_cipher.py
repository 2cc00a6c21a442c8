"""SK payload protection against RFC 7634 Appendix B, GCM and CBC vectors."""

from __future__ import annotations

import hmac
from typing import Any

import pytest
from crypto_vectors import load, octets

from qsgw.crypto import ike_cipher
from qsgw.crypto.api import (
    CryptoError,
    IkeCipher,
    IntegrityError,
    UnsupportedAlgorithm,
)

ENCR_AES_CBC, ENCR_AES_GCM_8, ENCR_AES_GCM_12, ENCR_AES_GCM_16 = 12, 18, 19, 20
ENCR_CHACHA20_POLY1305 = 28
AUTH_SHA256, AUTH_SHA384, AUTH_SHA512 = 12, 13, 14


@pytest.mark.parametrize("vector", load("rfc7634_chacha20_poly1305.json", "ike"))
def test_chacha20_poly1305_matches_rfc7634_ikev2_example(
    vector: dict[str, Any],
) -> None:
    cipher = ike_cipher(ENCR_CHACHA20_POLY1305, None, None)
    sk_e = octets(vector, "key") + octets(vector, "salt")
    iv, aad = octets(vector, "iv"), octets(vector, "aad")
    expected = octets(vector, "ciphertext") + octets(vector, "icv")

    assert cipher.seal(sk_e, b"", iv, aad, octets(vector, "plaintext")) == expected
    assert cipher.open(sk_e, b"", iv, aad, expected) == octets(vector, "plaintext")


@pytest.mark.parametrize("vector", load("draft_mcgrew_gcm_test_01_aead.json"))
@pytest.mark.parametrize(
    ("encr_id", "icv_size"),
    [(ENCR_AES_GCM_16, 16), (ENCR_AES_GCM_12, 12), (ENCR_AES_GCM_8, 8)],
)
def test_aes_gcm_icv_is_the_leading_octets_of_the_gcm_tag(
    vector: dict[str, Any], encr_id: int, icv_size: int
) -> None:
    cipher = ike_cipher(encr_id, vector["key_bits"], None)
    sk_e = octets(vector, "key") + octets(vector, "salt")
    iv, aad = octets(vector, "iv"), octets(vector, "aad")
    expected = octets(vector, "ciphertext") + octets(vector, "icv")[:icv_size]

    assert cipher.seal(sk_e, b"", iv, aad, octets(vector, "plaintext")) == expected
    assert cipher.open(sk_e, b"", iv, aad, expected) == octets(vector, "plaintext")


@pytest.mark.parametrize("vector", load("rfc3602_aes_cbc.json"))
def test_aes_cbc_encrypts_per_rfc3602_and_macs_header_iv_ciphertext(
    vector: dict[str, Any],
) -> None:
    cipher = ike_cipher(ENCR_AES_CBC, 128, AUTH_SHA256)
    sk_a, aad = bytes(range(32)), b"IKE header | SK payload header"
    iv, ciphertext = octets(vector, "iv"), octets(vector, "ciphertext")

    sealed = cipher.seal(
        octets(vector, "key"), sk_a, iv, aad, octets(vector, "plaintext")
    )

    # RFC 7296 §3.14: the ICV covers the message up to the ICV
    icv = hmac.digest(sk_a, aad + iv + ciphertext, "sha256")[:16]
    assert sealed == ciphertext + icv
    opened = cipher.open(octets(vector, "key"), sk_a, iv, aad, sealed)
    assert opened == octets(vector, "plaintext")


@pytest.mark.parametrize(
    ("encr_id", "key_bits", "integ_id", "sizes"),
    [
        (ENCR_AES_GCM_16, 128, None, (20, 0, 8, 16)),
        (ENCR_AES_GCM_16, 256, 0, (36, 0, 8, 16)),
        (ENCR_AES_GCM_8, 192, None, (28, 0, 8, 8)),
        (ENCR_AES_GCM_12, 256, None, (36, 0, 8, 12)),
        (ENCR_CHACHA20_POLY1305, None, None, (36, 0, 8, 16)),
        (ENCR_AES_CBC, 128, AUTH_SHA256, (16, 32, 16, 16)),
        (ENCR_AES_CBC, 192, AUTH_SHA384, (24, 48, 16, 24)),
        (ENCR_AES_CBC, 256, AUTH_SHA512, (32, 64, 16, 32)),
    ],
)
def test_key_iv_and_icv_sizes(
    encr_id: int,
    key_bits: int | None,
    integ_id: int | None,
    sizes: tuple[int, int, int, int],
) -> None:
    cipher = ike_cipher(encr_id, key_bits, integ_id)

    shown = (
        cipher.encryption_key_size,
        cipher.integrity_key_size,
        cipher.iv_size,
        cipher.icv_size,
    )
    assert shown == sizes


def _round_trip_args(
    encr_id: int, key_bits: int | None, integ_id: int | None
) -> tuple[IkeCipher, bytes, bytes, bytes]:
    cipher = ike_cipher(encr_id, key_bits, integ_id)
    sk_e = bytes(range(cipher.encryption_key_size))
    sk_a = bytes(range(cipher.integrity_key_size))
    return cipher, sk_e, sk_a, bytes(cipher.iv_size)


CIPHERS = [
    (ENCR_AES_GCM_16, 256, None),
    (ENCR_AES_GCM_8, 128, None),
    (ENCR_CHACHA20_POLY1305, None, None),
    (ENCR_AES_CBC, 256, AUTH_SHA256),
]


@pytest.mark.parametrize(("encr_id", "key_bits", "integ_id"), CIPHERS)
def test_tampered_icv_raises_integrity_error(
    encr_id: int, key_bits: int | None, integ_id: int | None
) -> None:
    cipher, sk_e, sk_a, iv = _round_trip_args(encr_id, key_bits, integ_id)
    sealed = bytearray(cipher.seal(sk_e, sk_a, iv, b"header", bytes(32)))
    sealed[-1] ^= 0x01

    with pytest.raises(IntegrityError, match=r"^integrity check failed$"):
        cipher.open(sk_e, sk_a, iv, b"header", bytes(sealed))


@pytest.mark.parametrize(("encr_id", "key_bits", "integ_id"), CIPHERS)
def test_changed_header_raises_integrity_error(
    encr_id: int, key_bits: int | None, integ_id: int | None
) -> None:
    cipher, sk_e, sk_a, iv = _round_trip_args(encr_id, key_bits, integ_id)
    sealed = cipher.seal(sk_e, sk_a, iv, b"header", bytes(32))

    with pytest.raises(IntegrityError):
        cipher.open(sk_e, sk_a, iv, b"Header", sealed)


@pytest.mark.parametrize(("encr_id", "key_bits", "integ_id"), CIPHERS)
def test_too_short_sealed_data_raises_integrity_error(
    encr_id: int, key_bits: int | None, integ_id: int | None
) -> None:
    cipher, sk_e, sk_a, iv = _round_trip_args(encr_id, key_bits, integ_id)

    with pytest.raises(IntegrityError):
        cipher.open(sk_e, sk_a, iv, b"header", bytes(cipher.icv_size - 1))


def test_wrong_key_length_is_refused() -> None:
    cipher = ike_cipher(ENCR_AES_GCM_16, 128, None)

    with pytest.raises(CryptoError):
        cipher.seal(bytes(16), b"", bytes(8), b"", b"data")


@pytest.mark.parametrize(
    ("encr_id", "key_bits", "integ_id"),
    [
        (ENCR_AES_GCM_16, 128, AUTH_SHA256),
        (ENCR_AES_GCM_16, None, None),
        (ENCR_AES_GCM_16, 160, None),
        (ENCR_CHACHA20_POLY1305, 128, None),
        (ENCR_CHACHA20_POLY1305, None, AUTH_SHA256),
        (ENCR_AES_CBC, 128, None),
        (ENCR_AES_CBC, 128, 0),
        (ENCR_AES_CBC, 128, 2),
        (ENCR_AES_CBC, None, AUTH_SHA256),
        (3, None, 2),
        (14, 128, None),
    ],
)
def test_unsupported_combination_raises_unsupported_algorithm(
    encr_id: int, key_bits: int | None, integ_id: int | None
) -> None:
    with pytest.raises(UnsupportedAlgorithm):
        ike_cipher(encr_id, key_bits, integ_id)
