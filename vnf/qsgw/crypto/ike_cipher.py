"""Protection of the Encrypted (SK/SKF) payload: RFC 7296 §3.14, RFC 5282.

Two shapes behind one `IkeCipher` interface:

- AEAD (RFC 5282, RFC 7634): AES-GCM with an 8, 12 or 16 octet ICV, or
  ChaCha20-Poly1305. SK_e is key | 4-octet salt, the nonce salt | IV, the
  associated data the IKE header through the SK/SKF payload header.
- encrypt-then-MAC (RFC 7296 §3.14): AES-CBC (RFC 3602) with an
  AUTH_HMAC_SHA2_* integrity transform (RFC 4868) whose ICV covers
  aad | IV | ciphertext.
"""

from __future__ import annotations

import functools
import hmac
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from qsgw.crypto.api import (
    CryptoError,
    IkeCipher,
    IntegrityError,
    UnsupportedAlgorithm,
)
from qsgw.crypto.integrity import INTEGRITY_FAILED, HmacIntegrity, integrity

ENCR_AES_CBC = 12
ENCR_AES_GCM_8 = 18
ENCR_AES_GCM_12 = 19
ENCR_AES_GCM_16 = 20
ENCR_CHACHA20_POLY1305 = 28

SALT_SIZE = 4  # RFC 5282 §7.1, RFC 7634 §2
AEAD_IV_SIZE = 8  # RFC 5282 §3.1, RFC 7634 §2
AES_BLOCK_SIZE = 16

_FULL_TAG = 16
_GCM_ICV_SIZES = {ENCR_AES_GCM_8: 8, ENCR_AES_GCM_12: 12, ENCR_AES_GCM_16: 16}
_AES_KEY_BITS = (128, 192, 256)


@dataclass(frozen=True, slots=True)
class AesGcmIkeCipher:
    """ENCR_AES_GCM_8/12/16 for IKEv2 (RFC 5282)."""

    encryption_key_size: int
    icv_size: int
    integrity_key_size: int = 0
    iv_size: int = AEAD_IV_SIZE
    block_size: int = 1

    def seal(
        self, sk_e: bytes, sk_a: bytes, iv: bytes, aad: bytes, plaintext: bytes
    ) -> bytes:
        key, nonce = _split_aead_key(sk_e, iv, self.encryption_key_size)
        if self.icv_size == _FULL_TAG:  # one call instead of a context
            return AESGCM(key).encrypt(nonce, plaintext, aad)
        encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(aad)
        ciphertext = encryptor.update(plaintext) + encryptor.finalize()
        # RFC 5282 §3: shorter ICVs are the leading octets of the tag
        return ciphertext + encryptor.tag[: self.icv_size]

    def open(
        self, sk_e: bytes, sk_a: bytes, iv: bytes, aad: bytes, sealed: bytes
    ) -> bytes:
        key, nonce = _split_aead_key(sk_e, iv, self.encryption_key_size)
        split = len(sealed) - self.icv_size
        if split < 0:
            raise IntegrityError(INTEGRITY_FAILED)
        if self.icv_size == _FULL_TAG:
            try:
                return AESGCM(key).decrypt(nonce, sealed, aad)
            except InvalidTag:
                raise IntegrityError(INTEGRITY_FAILED) from None

        mode = modes.GCM(nonce, sealed[split:], min_tag_length=self.icv_size)
        decryptor = Cipher(algorithms.AES(key), mode).decryptor()
        decryptor.authenticate_additional_data(aad)
        try:
            return decryptor.update(sealed[:split]) + decryptor.finalize()
        except InvalidTag:
            raise IntegrityError(INTEGRITY_FAILED) from None


@dataclass(frozen=True, slots=True)
class ChaChaIkeCipher:
    """ENCR_CHACHA20_POLY1305 for IKEv2 (RFC 7634 §3)."""

    encryption_key_size: int = 32 + SALT_SIZE
    icv_size: int = 16
    integrity_key_size: int = 0
    iv_size: int = AEAD_IV_SIZE
    block_size: int = 1

    def seal(
        self, sk_e: bytes, sk_a: bytes, iv: bytes, aad: bytes, plaintext: bytes
    ) -> bytes:
        key, nonce = _split_aead_key(sk_e, iv, self.encryption_key_size)
        return ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)

    def open(
        self, sk_e: bytes, sk_a: bytes, iv: bytes, aad: bytes, sealed: bytes
    ) -> bytes:
        key, nonce = _split_aead_key(sk_e, iv, self.encryption_key_size)
        try:
            return ChaCha20Poly1305(key).decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise IntegrityError(INTEGRITY_FAILED) from None


@dataclass(frozen=True, slots=True)
class AesCbcHmacIkeCipher:
    """ENCR_AES_CBC with an AUTH_HMAC_SHA2_* transform (RFC 7296 §3.14)."""

    encryption_key_size: int
    mac: HmacIntegrity
    iv_size: int = AES_BLOCK_SIZE
    block_size: int = AES_BLOCK_SIZE

    @property
    def integrity_key_size(self) -> int:
        return self.mac.key_size

    @property
    def icv_size(self) -> int:
        return self.mac.icv_size

    def seal(
        self, sk_e: bytes, sk_a: bytes, iv: bytes, aad: bytes, plaintext: bytes
    ) -> bytes:
        _check_cbc_input(sk_e, iv, plaintext, self.encryption_key_size)
        encryptor = Cipher(algorithms.AES(sk_e), modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(plaintext) + encryptor.finalize()
        return ciphertext + self.mac.compute(sk_a, aad + iv + ciphertext)

    def open(
        self, sk_e: bytes, sk_a: bytes, iv: bytes, aad: bytes, sealed: bytes
    ) -> bytes:
        split = len(sealed) - self.icv_size
        if split < 0 or split % AES_BLOCK_SIZE:
            raise IntegrityError(INTEGRITY_FAILED)
        ciphertext, icv = sealed[:split], sealed[split:]
        expected = self.mac.compute(sk_a, aad + iv + ciphertext)
        if not hmac.compare_digest(expected, icv):
            raise IntegrityError(INTEGRITY_FAILED)

        _check_cbc_input(sk_e, iv, ciphertext, self.encryption_key_size)
        decryptor = Cipher(algorithms.AES(sk_e), modes.CBC(iv)).decryptor()
        return decryptor.update(ciphertext) + decryptor.finalize()


@functools.lru_cache(maxsize=64)
def ike_cipher(encr_id: int, key_bits: int | None, integ_id: int | None) -> IkeCipher:
    """The SK payload protection for an ENCR (+ INTEG) transform choice
    (keyless and immutable: one per choice, made once).

    `integ_id` None or 0 means no integrity transform (required for AEAD,
    refused for AES-CBC).
    """
    has_integrity = integ_id not in (None, 0)
    if encr_id in _GCM_ICV_SIZES:
        _require_no_integrity("AES-GCM", has_integrity)
        bits = _aes_key_bits("AES-GCM", key_bits)
        key_size = bits // 8 + SALT_SIZE
        return AesGcmIkeCipher(key_size, _GCM_ICV_SIZES[encr_id])
    if encr_id == ENCR_CHACHA20_POLY1305:
        _require_no_integrity("ChaCha20-Poly1305", has_integrity)
        if key_bits not in (None, 256):
            raise UnsupportedAlgorithm("ChaCha20-Poly1305 takes 256-bit keys")
        return ChaChaIkeCipher()
    if encr_id == ENCR_AES_CBC:
        bits = _aes_key_bits("AES-CBC", key_bits)
        if integ_id is None or not has_integrity:
            raise UnsupportedAlgorithm("AES-CBC needs an integrity algorithm")
        return AesCbcHmacIkeCipher(bits // 8, integrity(integ_id))
    raise UnsupportedAlgorithm(f"encryption algorithm {encr_id} is not supported")


def _require_no_integrity(name: str, has_integrity: bool) -> None:
    # RFC 5282 §8: AEAD proposals carry no integrity transform
    if has_integrity:
        raise UnsupportedAlgorithm(f"{name} takes no integrity algorithm")


def _aes_key_bits(name: str, key_bits: int | None) -> int:
    if key_bits not in _AES_KEY_BITS:
        raise UnsupportedAlgorithm(f"{name} with key length {key_bits}")
    assert key_bits is not None
    return key_bits


def _split_aead_key(sk_e: bytes, iv: bytes, key_size: int) -> tuple[bytes, bytes]:
    if len(sk_e) != key_size or len(iv) != AEAD_IV_SIZE:
        raise CryptoError("wrong key or IV length")
    return sk_e[:-SALT_SIZE], sk_e[-SALT_SIZE:] + iv


def _check_cbc_input(sk_e: bytes, iv: bytes, data: bytes, key_size: int) -> None:
    if len(sk_e) != key_size or len(iv) != AES_BLOCK_SIZE:
        raise CryptoError("wrong key or IV length")
    if len(data) % AES_BLOCK_SIZE:
        raise CryptoError("data is not a multiple of the block size")
