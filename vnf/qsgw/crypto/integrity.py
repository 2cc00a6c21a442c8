"""HMAC-SHA-2 integrity transforms with truncated ICVs (RFC 4868).

AUTH_HMAC_SHA2_256_128, AUTH_HMAC_SHA2_384_192 and AUTH_HMAC_SHA2_512_256:
the key is as long as the hash output and the ICV is its first half
(RFC 4868 §2.1 and §2.3).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from qsgw.crypto.api import IntegrityError, UnsupportedAlgorithm

INTEGRITY_FAILED = "integrity check failed"


@dataclass(frozen=True, slots=True)
class HmacIntegrity:
    """One AUTH_HMAC_SHA2_* transform (Transform Type 3)."""

    id: int
    name: str
    hash_name: str
    key_size: int
    icv_size: int

    def compute(self, key: bytes, data: bytes) -> bytes:
        """The truncated ICV of `data`."""
        digest = hmac.digest(key, data, self.hash_name)
        return digest[: self.icv_size]

    def verify(self, key: bytes, data: bytes, icv: bytes) -> None:
        """Raise IntegrityError unless `icv` is the ICV of `data`."""
        if not hmac.compare_digest(self.compute(key, data), icv):
            raise IntegrityError(INTEGRITY_FAILED)

    def keyed(self, key: bytes) -> KeyedHmac:
        """A reusable, keyed instance for the data plane."""
        algorithm = _HASHES[self.hash_name]()
        return KeyedHmac(crypto_hmac.HMAC(key, algorithm), self.icv_size)


@dataclass(slots=True)
class KeyedHmac:
    """An HMAC with its key already absorbed; copied once per packet."""

    _template: crypto_hmac.HMAC = field(repr=False)
    icv_size: int

    def compute(self, *parts: bytes) -> bytes:
        mac = self._template.copy()
        for part in parts:
            mac.update(part)
        return mac.finalize()[: self.icv_size]


_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


# RFC 4868 §2.1: key length = output length, ICV = half of it.
_TRANSFORMS = {
    12: HmacIntegrity(12, "AUTH_HMAC_SHA2_256_128", "sha256", 32, 16),
    13: HmacIntegrity(13, "AUTH_HMAC_SHA2_384_192", "sha384", 48, 24),
    14: HmacIntegrity(14, "AUTH_HMAC_SHA2_512_256", "sha512", 64, 32),
}


def integrity(transform_id: int) -> HmacIntegrity:
    """The integrity transform with this Transform Type 3 ID."""
    try:
        return _TRANSFORMS[transform_id]
    except KeyError:
        message = f"integrity algorithm {transform_id} is not supported"
        raise UnsupportedAlgorithm(message) from None


def available_integrity() -> tuple[int, ...]:
    return tuple(_TRANSFORMS)
