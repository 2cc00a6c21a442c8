"""ESP packet protection for one SA: AES-GCM, ChaCha20-Poly1305, AES-CBC+HMAC.

The data plane builds one cipher per SA with `esp_cipher` and calls `seal`
and `open` per packet, so the key schedule happens once, here.

Arguments of `seal(iv, aad, plaintext)` and `open(iv, aad, sealed)`:

- `iv`: the 8-octet (AEAD) or 16-octet (AES-CBC) IV carried in the packet.
- `aad`: the RFC 4106 §5 AAD, for every algorithm: SPI | Sequence Number
  (8 octets), or with ESN SPI | Seq-High | Seq-Low (12 octets). For AES-CBC
  with HMAC the ICV is computed over SPI | Seq-Low | IV | ciphertext |
  Seq-High (RFC 4303 §2.8 and §3.3.2.1), rebuilt here from that AAD.
- `plaintext`: the payload with padding, Pad Length and Next Header already
  appended (a multiple of `block_size` octets).

`sealed` and the result of `seal` are ciphertext | ICV.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from qsgw.crypto.api import (
    CryptoError,
    EspCipher,
    IntegrityError,
    UnsupportedAlgorithm,
)
from qsgw.crypto.integrity import (
    INTEGRITY_FAILED,
    HmacIntegrity,
    KeyedHmac,
)
from qsgw.crypto.integrity import integrity as integrity_transform

AEAD_SALT_SIZE = 4  # RFC 4106 §8.1, RFC 7634 §2
AEAD_IV_SIZE = 8  # RFC 4106 §3.1, RFC 7634 §2
AEAD_ICV_SIZE = 16
AES_BLOCK_SIZE = 16
ESP_ALIGNMENT = 4  # RFC 4303 §2.4: the trailer ends on a 4-octet boundary

_AES_KEY_BITS = (128, 192, 256)
_NO_INTEGRITY = ("", "none")
_INTEGRITY_IDS = {"sha256": 12, "sha384": 13, "sha512": 14}


@dataclass(slots=True)
class AeadEspCipher:
    """AES-GCM with a 16-octet ICV (RFC 4106) or ChaCha20-Poly1305 (RFC 7634)."""

    _aead: AESGCM | ChaCha20Poly1305 = field(repr=False)
    _salt: bytes = field(repr=False)
    key_size: int
    iv_size: int = AEAD_IV_SIZE
    block_size: int = ESP_ALIGNMENT
    icv_size: int = AEAD_ICV_SIZE

    def seal(self, iv: bytes, aad: bytes, plaintext: bytes) -> bytes:
        if len(iv) != AEAD_IV_SIZE:
            raise CryptoError("the IV must be 8 octets")
        # RFC 4106 §4, RFC 7634 §2: nonce = salt | IV
        return self._aead.encrypt(self._salt + iv, plaintext, aad)

    def open(self, iv: bytes, aad: bytes, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(self._salt + iv, sealed, aad)
        except InvalidTag:
            raise IntegrityError(INTEGRITY_FAILED) from None


@dataclass(slots=True)
class CbcHmacEspCipher:
    """AES-CBC (RFC 3602) with an HMAC-SHA-2 ICV (RFC 4868), encrypt-then-MAC.

    Decryption reuses one AES-ECB context per SA and applies the CBC chaining
    itself, which saves building a cipher context per packet; an instance is
    therefore for one thread at a time.
    """

    _aes: algorithms.AES = field(repr=False)
    _mac: KeyedHmac = field(repr=False)
    key_size: int
    icv_size: int
    iv_size: int = AES_BLOCK_SIZE
    block_size: int = AES_BLOCK_SIZE
    _blocks: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._blocks = Cipher(self._aes, modes.ECB()).decryptor()

    def seal(self, iv: bytes, aad: bytes, plaintext: bytes) -> bytes:
        if len(plaintext) % AES_BLOCK_SIZE:
            raise CryptoError("plaintext is not a multiple of the block size")
        encryptor = Cipher(self._aes, modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(plaintext) + encryptor.finalize()
        return ciphertext + self._icv(iv, aad, ciphertext)

    def open(self, iv: bytes, aad: bytes, sealed: bytes) -> bytes:
        split = len(sealed) - self.icv_size
        if split < 0 or split % AES_BLOCK_SIZE:
            raise IntegrityError(INTEGRITY_FAILED)
        ciphertext, icv = sealed[:split], sealed[split:]
        if not hmac.compare_digest(self._icv(iv, aad, ciphertext), icv):
            raise IntegrityError(INTEGRITY_FAILED)

        # RFC 3602 §2: P_i = D(C_i) XOR C_(i-1), with C_0 = IV
        decrypted = int.from_bytes(self._blocks.update(ciphertext), "big")
        # join, not +: the arguments may be memoryviews of a receive buffer
        chain = int.from_bytes(b"".join((iv, ciphertext[:-AES_BLOCK_SIZE])), "big")
        return (decrypted ^ chain).to_bytes(len(ciphertext), "big")

    def _icv(self, iv: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        # RFC 4303 §3.3.2.1: with ESN, Seq-High follows the payload
        if len(aad) == 12:
            header, seq_high = b"".join((aad[:4], aad[8:])), aad[4:8]
            return self._mac.compute(header, iv, ciphertext, seq_high)
        return self._mac.compute(aad, iv, ciphertext)


def esp_keymat_size(name: str, key_bits: int, integrity: str) -> int:
    """Octets of Child SA KEYMAT one direction needs (RFC 7296 §2.17)."""
    if name == "aesgcm16":
        _check_aead(name, key_bits, integrity, _AES_KEY_BITS)
        return key_bits // 8 + AEAD_SALT_SIZE
    if name == "chacha20poly1305":
        _check_aead(name, key_bits, integrity, (256,))
        return 32 + AEAD_SALT_SIZE
    if name == "aescbc":
        _check_cbc(key_bits, integrity)
        return key_bits // 8 + _esp_integrity(integrity).key_size
    raise UnsupportedAlgorithm(f"ESP algorithm {name!r} is not supported")


def esp_cipher(name: str, key_bits: int, integrity: str, keys: bytes) -> EspCipher:
    """The cipher for one ESP SA; `keys` is its KEYMAT (key | salt, or
    encryption key | integrity key)."""
    size = esp_keymat_size(name, key_bits, integrity)
    if len(keys) != size:
        raise CryptoError(f"ESP keys must be {size} octets")

    if name == "aescbc":
        split = key_bits // 8
        mac = _esp_integrity(integrity).keyed(keys[split:])
        aes = algorithms.AES(keys[:split])
        return CbcHmacEspCipher(aes, mac, size, mac.icv_size)

    key, salt = keys[:-AEAD_SALT_SIZE], keys[-AEAD_SALT_SIZE:]
    aead = AESGCM(key) if name == "aesgcm16" else ChaCha20Poly1305(key)
    return AeadEspCipher(aead, salt, size)


def _check_aead(
    name: str, key_bits: int, integrity: str, allowed: tuple[int, ...]
) -> None:
    if key_bits not in allowed:
        raise UnsupportedAlgorithm(f"{name} with {key_bits}-bit keys")
    if integrity not in _NO_INTEGRITY:
        raise UnsupportedAlgorithm(f"{name} takes no integrity algorithm")


def _check_cbc(key_bits: int, integrity: str) -> None:
    if key_bits not in _AES_KEY_BITS:
        raise UnsupportedAlgorithm(f"aescbc with {key_bits}-bit keys")
    if integrity in _NO_INTEGRITY:
        raise UnsupportedAlgorithm("aescbc needs an integrity algorithm")


def _esp_integrity(integrity: str) -> HmacIntegrity:
    try:
        transform_id = _INTEGRITY_IDS[integrity]
    except KeyError:
        message = f"ESP integrity algorithm {integrity!r} is not supported"
        raise UnsupportedAlgorithm(message) from None
    return integrity_transform(transform_id)
