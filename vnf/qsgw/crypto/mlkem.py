"""ML-KEM key exchange (FIPS 203) as IKEv2 Transform Type 4 methods.

draft-ietf-ipsecme-ikev2-mlkem: the initiator sends its encapsulation key
ek, the responder runs Encaps(ek) and returns the ciphertext ct, and both
sides use the 32-octet shared secret.

ML-KEM-768 (36) and ML-KEM-1024 (37) come from `cryptography` (OpenSSL).
ML-KEM-512 (35) is only offered when the liboqs shared library is installed:
the library is probed for *before* `oqs` is imported, because importing
liboqs-python without it starts a download and build and then exits the
process.
"""

from __future__ import annotations

import ctypes.util
import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import mlkem

from qsgw.crypto.api import InvalidPublicValue, Random, UnsupportedAlgorithm

SHARED_SECRET_SIZE = 32
SEED_SIZE = 64  # d | z, FIPS 203 ML-KEM.KeyGen_internal

_PrivateKey = mlkem.MLKEM768PrivateKey | mlkem.MLKEM1024PrivateKey
_PublicKey = mlkem.MLKEM768PublicKey | mlkem.MLKEM1024PublicKey


@dataclass(frozen=True, slots=True)
class MlKemInitiator:
    """The initiator's ML-KEM key pair; only ek is shown."""

    public_value: bytes
    ciphertext_size: int
    _private: _PrivateKey = field(repr=False, compare=False)

    def complete(self, peer_value: bytes) -> bytes:
        if len(peer_value) != self.ciphertext_size:
            raise InvalidPublicValue("ML-KEM ciphertext has the wrong length")
        # FIPS 203: a malformed ciphertext yields the implicit-rejection key
        return self._private.decapsulate(peer_value)


@dataclass(frozen=True, slots=True)
class MlKemMethod:
    """ML-KEM-768 or ML-KEM-1024 through OpenSSL."""

    id: int
    name: str
    initiator_size: int
    responder_size: int
    _private_type: type[_PrivateKey] = field(repr=False)
    _public_type: type[_PublicKey] = field(repr=False)

    def initiate(self, rng: Random) -> MlKemInitiator:
        private = self._private_type.from_seed_bytes(rng(SEED_SIZE))
        ek = private.public_key().public_bytes_raw()
        return MlKemInitiator(ek, self.responder_size, private)

    def respond(self, peer_value: bytes, rng: Random) -> tuple[bytes, bytes]:
        """(ct, shared secret); Encaps randomness comes from OpenSSL."""
        if len(peer_value) != self.initiator_size:
            raise InvalidPublicValue("ML-KEM key has the wrong length")
        try:
            # FIPS 203 §7.2: the modulus check of ek happens here
            ek = self._public_type.from_public_bytes(peer_value)
        except ValueError:
            raise InvalidPublicValue("ML-KEM key is malformed") from None
        shared_secret, ciphertext = ek.encapsulate()
        return ciphertext, shared_secret


ML_KEM_768 = MlKemMethod(
    36, "ML-KEM-768", 1184, 1088, mlkem.MLKEM768PrivateKey, mlkem.MLKEM768PublicKey
)
ML_KEM_1024 = MlKemMethod(
    37,
    "ML-KEM-1024",
    1568,
    1568,
    mlkem.MLKEM1024PrivateKey,
    mlkem.MLKEM1024PublicKey,
)

# ML-KEM-512 through liboqs

ML_KEM_512_ID = 35
_OQS_NAME = "ML-KEM-512"
_EK_512, _CT_512 = 800, 768


def liboqs_available() -> bool:
    """Whether liboqs-python and the liboqs shared library are both present,
    found without importing `oqs`."""
    if importlib.util.find_spec("oqs") is None:
        return False
    return _liboqs_library() is not None


def _liboqs_library() -> str | None:
    install_path = os.environ.get("OQS_INSTALL_PATH")
    if install_path:
        for lib_dir in ("lib", "lib64"):
            found = sorted(Path(install_path, lib_dir).glob("liboqs.so*"))
            if found:
                return str(found[0])
    return ctypes.util.find_library("oqs")


@dataclass(slots=True)
class OqsMlKemInitiator:
    """The initiator's ML-KEM-512 key pair held by liboqs."""

    public_value: bytes
    _kem: Any = field(repr=False)

    def complete(self, peer_value: bytes) -> bytes:
        if len(peer_value) != _CT_512:
            raise InvalidPublicValue("ML-KEM ciphertext has the wrong length")
        try:
            return bytes(self._kem.decap_secret(peer_value))
        finally:
            self._kem.free()  # the secret key lives in liboqs' memory


@dataclass(frozen=True, slots=True)
class OqsMlKemMethod:
    """ML-KEM-512 (35) through liboqs-python; key generation randomness comes
    from liboqs, not from `rng` (the binding takes no seed)."""

    _oqs: Any = field(repr=False)
    id: int = ML_KEM_512_ID
    name: str = _OQS_NAME
    initiator_size: int = _EK_512
    responder_size: int = _CT_512

    def initiate(self, rng: Random) -> OqsMlKemInitiator:
        kem = self._oqs.KeyEncapsulation(_OQS_NAME)
        return OqsMlKemInitiator(bytes(kem.generate_keypair()), kem)

    def respond(self, peer_value: bytes, rng: Random) -> tuple[bytes, bytes]:
        if len(peer_value) != _EK_512:
            raise InvalidPublicValue("ML-KEM key has the wrong length")
        with self._oqs.KeyEncapsulation(_OQS_NAME) as kem:
            try:
                ciphertext, secret = kem.encap_secret(peer_value)
            except RuntimeError:
                raise InvalidPublicValue("ML-KEM key is malformed") from None
        return bytes(ciphertext), bytes(secret)


def ml_kem_512() -> OqsMlKemMethod:
    """ML-KEM-512, or UnsupportedAlgorithm when liboqs is missing."""
    if not liboqs_available():
        raise UnsupportedAlgorithm(
            "ML-KEM-512 needs liboqs: install liboqs-python and the liboqs "
            "shared library (or set OQS_INSTALL_PATH)"
        )
    return OqsMlKemMethod(importlib.import_module("oqs"))
