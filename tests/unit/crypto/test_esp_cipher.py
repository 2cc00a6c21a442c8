"""ESP ciphers against RFC 4106 / RFC 7634 packet vectors and RFC 3602."""

from __future__ import annotations

import hmac
from typing import Any

import pytest
from crypto_vectors import load, octets

from qsgw.crypto import esp_cipher, esp_keymat_size
from qsgw.crypto.api import CryptoError, IntegrityError, UnsupportedAlgorithm

GCM_VECTORS = load("draft_mcgrew_gcm_test_01_aead.json")
CHACHA_VECTORS = load("rfc7634_chacha20_poly1305.json", "esp")
CBC_VECTORS = load("rfc3602_aes_cbc.json")


@pytest.mark.parametrize("vector", GCM_VECTORS)
def test_aes_gcm_seal_matches_mcgrew_viega_esp_vector(vector: dict[str, Any]) -> None:
    keys = octets(vector, "key") + octets(vector, "salt")
    cipher = esp_cipher("aesgcm16", vector["key_bits"], "none", keys)

    sealed = cipher.seal(
        octets(vector, "iv"), octets(vector, "aad"), octets(vector, "plaintext")
    )

    assert sealed == octets(vector, "ciphertext") + octets(vector, "icv")


@pytest.mark.parametrize("vector", GCM_VECTORS)
def test_aes_gcm_open_recovers_mcgrew_viega_plaintext(vector: dict[str, Any]) -> None:
    keys = octets(vector, "key") + octets(vector, "salt")
    cipher = esp_cipher("aesgcm16", vector["key_bits"], "", keys)
    sealed = octets(vector, "ciphertext") + octets(vector, "icv")

    opened = cipher.open(octets(vector, "iv"), octets(vector, "aad"), sealed)

    assert opened == octets(vector, "plaintext")


@pytest.mark.parametrize("vector", CHACHA_VECTORS)
def test_chacha20_poly1305_matches_rfc7634_esp_example(
    vector: dict[str, Any],
) -> None:
    keys = octets(vector, "key") + octets(vector, "salt")
    cipher = esp_cipher("chacha20poly1305", 256, "none", keys)
    iv, aad = octets(vector, "iv"), octets(vector, "aad")
    expected = octets(vector, "ciphertext") + octets(vector, "icv")

    assert cipher.seal(iv, aad, octets(vector, "plaintext")) == expected
    assert cipher.open(iv, aad, expected) == octets(vector, "plaintext")


@pytest.mark.parametrize("vector", CBC_VECTORS)
def test_aes_cbc_ciphertext_matches_rfc3602_case(vector: dict[str, Any]) -> None:
    integrity_key = bytes(range(32))
    keys = octets(vector, "key") + integrity_key
    cipher = esp_cipher("aescbc", 128, "sha256", keys)
    iv, aad = octets(vector, "iv"), bytes(8)

    sealed = cipher.seal(iv, aad, octets(vector, "plaintext"))

    ciphertext = octets(vector, "ciphertext")
    # RFC 4303 §2.8: the ICV covers SPI | seq | IV | ciphertext
    icv = hmac.digest(integrity_key, aad + iv + ciphertext, "sha256")[:16]
    assert sealed == ciphertext + icv
    assert cipher.open(iv, aad, sealed) == octets(vector, "plaintext")


def _cbc_cipher(integrity: str = "sha256") -> Any:
    key_bits = 256
    size = esp_keymat_size("aescbc", key_bits, integrity)
    return esp_cipher("aescbc", key_bits, integrity, bytes(range(size)))


@pytest.mark.parametrize(
    ("integrity", "icv_size", "key_size"),
    [("sha256", 16, 32 + 32), ("sha384", 24, 32 + 48), ("sha512", 32, 32 + 64)],
)
def test_aes_cbc_uses_rfc4868_truncated_icv_sizes(
    integrity: str, icv_size: int, key_size: int
) -> None:
    cipher = _cbc_cipher(integrity)

    sealed = cipher.seal(bytes(16), bytes(8), bytes(32))

    assert (cipher.icv_size, cipher.key_size) == (icv_size, key_size)
    assert len(sealed) == 32 + icv_size


def test_aes_cbc_with_esn_authenticates_seq_high_after_the_payload() -> None:
    integrity_key = bytes(range(100, 132))
    cipher = esp_cipher("aescbc", 128, "sha256", bytes(16) + integrity_key)
    spi, seq_high, seq_low = (
        b"\x00\x00\x10\x01",
        b"\x00\x00\x00\x02",
        b"\x00\x00\x00\x03",
    )
    iv = bytes(16)

    sealed = cipher.seal(iv, spi + seq_high + seq_low, bytes(16))

    # RFC 4303 §3.3.2.1: ICV over SPI | seq-low | IV | ciphertext | seq-high
    ciphertext = sealed[:16]
    covered = spi + seq_low + iv + ciphertext + seq_high
    assert sealed[16:] == hmac.digest(integrity_key, covered, "sha256")[:16]


@pytest.mark.parametrize(
    ("name", "key_bits", "integrity", "size"),
    [
        ("aesgcm16", 128, "none", 20),
        ("aesgcm16", 192, "none", 28),
        ("aesgcm16", 256, "none", 36),
        ("chacha20poly1305", 256, "none", 36),
        ("aescbc", 128, "sha256", 48),
        ("aescbc", 256, "sha512", 96),
    ],
)
def test_keymat_size_per_direction(
    name: str, key_bits: int, integrity: str, size: int
) -> None:
    assert esp_keymat_size(name, key_bits, integrity) == size


@pytest.mark.parametrize("name", ["aesgcm16", "chacha20poly1305", "aescbc"])
def test_tampered_icv_raises_integrity_error(name: str) -> None:
    integrity = "sha256" if name == "aescbc" else "none"
    size = esp_keymat_size(name, 256, integrity)
    cipher = esp_cipher(name, 256, integrity, bytes(size))
    iv, aad = bytes(cipher.iv_size), b"\x00\x00\x00\x01\x00\x00\x00\x07"
    sealed = bytearray(cipher.seal(iv, aad, bytes(32)))
    sealed[-1] ^= 0x01

    with pytest.raises(IntegrityError, match=r"^integrity check failed$"):
        cipher.open(iv, aad, bytes(sealed))


@pytest.mark.parametrize("name", ["aesgcm16", "chacha20poly1305", "aescbc"])
def test_changed_aad_raises_integrity_error(name: str) -> None:
    integrity = "sha384" if name == "aescbc" else "none"
    size = esp_keymat_size(name, 256, integrity)
    cipher = esp_cipher(name, 256, integrity, bytes(size))
    iv = bytes(cipher.iv_size)
    sealed = cipher.seal(iv, b"\x00\x00\x00\x01\x00\x00\x00\x07", bytes(32))

    with pytest.raises(IntegrityError):
        cipher.open(iv, b"\x00\x00\x00\x01\x00\x00\x00\x08", sealed)


def test_aes_cbc_rejects_truncated_packet_as_integrity_failure() -> None:
    cipher = _cbc_cipher()

    with pytest.raises(IntegrityError):
        cipher.open(bytes(16), bytes(8), bytes(10))


def test_aes_cbc_refuses_plaintext_not_a_multiple_of_the_block() -> None:
    with pytest.raises(CryptoError):
        _cbc_cipher().seal(bytes(16), bytes(8), bytes(15))


@pytest.mark.parametrize(
    ("name", "key_bits", "integrity"),
    [
        ("aesccm16", 128, "none"),
        ("aesgcm16", 160, "none"),
        ("aesgcm16", 128, "sha256"),
        ("chacha20poly1305", 128, "none"),
        ("aescbc", 128, "none"),
        ("aescbc", 128, "md5"),
    ],
)
def test_unsupported_combination_raises_unsupported_algorithm(
    name: str, key_bits: int, integrity: str
) -> None:
    with pytest.raises(UnsupportedAlgorithm):
        esp_keymat_size(name, key_bits, integrity)


def test_wrong_key_length_is_refused_without_showing_the_key() -> None:
    secret = bytes([0xA5]) * 19

    with pytest.raises(CryptoError) as raised:
        esp_cipher("aesgcm16", 128, "none", secret)

    assert "a5" not in str(raised.value).lower()
    assert "20" in str(raised.value)


def test_cipher_repr_shows_no_key_material() -> None:
    keys = bytes([0x5A]) * 36
    cipher = esp_cipher("aesgcm16", 256, "none", keys)

    shown = repr(cipher)

    assert "5a5a" not in shown.lower()
    assert "ZZZZ" not in shown


def test_aes_cbc_cipher_opens_many_packets_in_a_row() -> None:
    vectors = [param.values[0] for param in CBC_VECTORS]
    integrity_key = bytes(32)
    cipher = esp_cipher("aescbc", 128, "sha256", bytes(16) + integrity_key)
    sender = esp_cipher("aescbc", 128, "sha256", bytes(16) + integrity_key)
    packets = [
        (
            octets(v, "iv"),
            sender.seal(octets(v, "iv"), bytes(8), octets(v, "plaintext")),
        )
        for v in vectors * 2
    ]

    opened = [cipher.open(iv, bytes(8), sealed) for iv, sealed in packets]

    assert opened == [octets(v, "plaintext") for v in vectors * 2]
