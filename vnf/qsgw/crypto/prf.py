"""PRF_HMAC_SHA2_256/384/512 for IKEv2 (RFC 4868 §2.1) and prf+ (RFC 7296 §2.13)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from qsgw.crypto.api import CryptoError, Prf, UnsupportedAlgorithm

# RFC 7296 §2.13: the counter octet runs from 0x01 to 0xff
PRF_PLUS_MAX_ITERATIONS = 255


@dataclass(frozen=True, slots=True)
class HmacPrf:
    """One PRF_HMAC_SHA2_* transform (Transform Type 2)."""

    id: int
    name: str
    hash_name: str
    key_size: int
    output_size: int

    def __call__(self, key: bytes, data: bytes) -> bytes:
        return hmac.digest(key, data, self.hash_name)

    def plus(self, key: bytes, seed: bytes, length: int) -> bytes:
        """prf+ (RFC 7296 §2.13): T1 | T2 | ... cut to `length` octets.

        T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n).
        """
        iterations = -(-length // self.output_size)
        if iterations > PRF_PLUS_MAX_ITERATIONS:
            raise CryptoError("prf+ cannot produce that many octets")

        if iterations == 1:
            return self(key, seed + b"\x01")[:length]

        # one keyed HMAC state, copied per block: the key is set up once
        keyed = hmac.new(key, digestmod=self.hash_name)
        stream = bytearray()
        block = b""
        for counter in range(1, iterations + 1):
            step = keyed.copy()
            step.update(block + seed + bytes((counter,)))
            block = step.digest()
            stream += block
        return bytes(stream[:length])


# RFC 4868 §2.1.2: the preferred key size is the output size
_PRFS = {
    5: HmacPrf(5, "PRF_HMAC_SHA2_256", "sha256", 32, 32),
    6: HmacPrf(6, "PRF_HMAC_SHA2_384", "sha384", 48, 48),
    7: HmacPrf(7, "PRF_HMAC_SHA2_512", "sha512", 64, 64),
}


def prf(transform_id: int) -> Prf:
    """The PRF with this Transform Type 2 ID."""
    try:
        return _PRFS[transform_id]
    except KeyError:
        message = f"PRF {transform_id} is not supported"
        raise UnsupportedAlgorithm(message) from None


def available_prfs() -> tuple[int, ...]:
    return tuple(_PRFS)
