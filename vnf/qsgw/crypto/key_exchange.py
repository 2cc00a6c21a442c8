"""The Transform Type 4 registry: key exchange methods by IANA ID."""

from __future__ import annotations

from qsgw.crypto.api import KeyExchangeMethod, UnsupportedAlgorithm
from qsgw.crypto.dh import DH_METHODS
from qsgw.crypto.mlkem import (
    ML_KEM_512_ID,
    ML_KEM_768,
    ML_KEM_1024,
    liboqs_available,
    ml_kem_512,
)

_ALL: tuple[KeyExchangeMethod, ...] = (*DH_METHODS, ML_KEM_768, ML_KEM_1024)
_METHODS = {method.id: method for method in _ALL}


def ke_method(transform_id: int) -> KeyExchangeMethod:
    """The key exchange method with this Transform Type 4 ID."""
    if transform_id == ML_KEM_512_ID:
        return ml_kem_512()
    try:
        return _METHODS[transform_id]
    except KeyError:
        message = f"key exchange method {transform_id} is not supported"
        raise UnsupportedAlgorithm(message) from None


def available_ke_methods() -> tuple[int, ...]:
    """IDs of every method this build can run, in ascending order."""
    ids = set(_METHODS)
    if liboqs_available():
        ids.add(ML_KEM_512_ID)
    return tuple(sorted(ids))
