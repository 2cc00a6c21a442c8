"""The crypto suite's interfaces: one per kind of algorithm.

The IKE core and the data plane depend on these Protocols and on the lookup
functions in `qsgw.crypto` (`ke_method`, `prf`, `ike_cipher`, `esp_cipher`);
implementations live beside this module. Randomness is always passed in, so
that tests can seed it.

Errors: every failure here raises `CryptoError` or a subclass, whose message
tells an attacker nothing beyond "failed".
"""

from __future__ import annotations

from typing import Protocol


class CryptoError(Exception):
    """A cryptographic operation failed; the message never names a reason."""


class IntegrityError(CryptoError):
    """An ICV or authentication tag did not verify."""


class InvalidPublicValue(CryptoError):
    """A peer's key exchange data has the wrong size or is not a valid point."""


class UnsupportedAlgorithm(CryptoError):
    """The algorithm is not available in this build (e.g. ML-KEM-512 without
    liboqs). Its message may name the algorithm: that is not a secret."""


class Random(Protocol):
    """A source of random octets; `os.urandom` in production, seeded in tests."""

    def __call__(self, n: int, /) -> bytes: ...


class KeyExchangeInitiator(Protocol):
    """The initiating side of one key exchange (sends first)."""

    @property
    def public_value(self) -> bytes:
        """What goes in our KE payload: a DH public value or an ML-KEM ek."""
        ...

    def complete(self, peer_value: bytes) -> bytes:
        """The shared secret from the peer's KE data (DH value or ML-KEM ct).

        Raises InvalidPublicValue for bad sizes or points off the curve.
        """
        ...


class KeyExchangeMethod(Protocol):
    """A Transform Type 4 method: ECDH, X25519/X448, MODP or ML-KEM."""

    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def initiator_size(self) -> int:
        """Octets of the initiator's KE data (e.g. 32 for X25519, 1184 for
        ML-KEM-768)."""
        ...

    @property
    def responder_size(self) -> int: ...

    def initiate(self, rng: Random) -> KeyExchangeInitiator: ...

    def respond(self, peer_value: bytes, rng: Random) -> tuple[bytes, bytes]:
        """(our KE data, shared secret) for a peer's initiator KE data.

        For DH methods our data is a fresh public value, for ML-KEM it is the
        ciphertext from Encaps(ek). Raises InvalidPublicValue.
        """
        ...


class Prf(Protocol):
    """A pseudo-random function for IKE (RFC 7296 §2.13)."""

    @property
    def id(self) -> int: ...

    @property
    def key_size(self) -> int:
        """The preferred key length, in octets (the size of SK_d, SK_pi, SK_pr)."""
        ...

    @property
    def output_size(self) -> int: ...

    def __call__(self, key: bytes, data: bytes) -> bytes: ...

    def plus(self, key: bytes, seed: bytes, length: int) -> bytes:
        """prf+ (RFC 7296 §2.13), `length` octets."""
        ...


class IkeCipher(Protocol):
    """Protection of the Encrypted (SK/SKF) payload (RFC 7296 §3.14, RFC 5282).

    One object covers both the AEAD case and the encrypt-then-MAC case
    (AES-CBC plus an HMAC integrity transform). Keys:
    `encryption_key_size` octets of SK_e (for AEAD this includes the salt:
    4 octets for AES-GCM and ChaCha20-Poly1305) and `integrity_key_size`
    octets of SK_a (0 for AEAD).
    """

    @property
    def encryption_key_size(self) -> int: ...

    @property
    def integrity_key_size(self) -> int: ...

    @property
    def iv_size(self) -> int: ...

    @property
    def block_size(self) -> int:
        """Padding is to a multiple of this (1 for stream-like AEADs)."""
        ...

    @property
    def icv_size(self) -> int: ...

    def seal(
        self, sk_e: bytes, sk_a: bytes, iv: bytes, aad: bytes, plaintext: bytes
    ) -> bytes:
        """ciphertext | ICV. `plaintext` already holds padding and Pad Length.

        `aad` is the IKE header through the SK/SKF payload header (with the
        SKF Fragment Number and Total Fragments fields). For AEAD it is the
        associated data; for encrypt-then-MAC the ICV covers aad | iv |
        ciphertext.
        """
        ...

    def open(
        self, sk_e: bytes, sk_a: bytes, iv: bytes, aad: bytes, sealed: bytes
    ) -> bytes:
        """The padded plaintext, or IntegrityError."""
        ...


class EspCipher(Protocol):
    """ESP packet protection for one SA (RFC 4303, 4106, 7634, 4868).

    Keys come from the Child SA KEYMAT in RFC 7296 §2.17 order: encryption
    key (with salt for AEAD) then integrity key.
    """

    @property
    def key_size(self) -> int:
        """Octets of KEYMAT per direction (encryption + salt + integrity)."""
        ...

    @property
    def iv_size(self) -> int: ...

    @property
    def block_size(self) -> int: ...

    @property
    def icv_size(self) -> int: ...

    def seal(self, iv: bytes, aad: bytes, plaintext: bytes) -> bytes:
        """ciphertext | ICV.

        `aad` is laid out as RFC 4106 §5 says: SPI | Sequence Number, or
        with ESN SPI | Seq-High | Seq-Low.
        """
        ...

    def open(self, iv: bytes, aad: bytes, sealed: bytes) -> bytes: ...
