"""ML-KEM key generation against the NIST ACVP known answers for FIPS 203.

The vectors are ACVP-Server's ML-KEM-keyGen-FIPS203 test cases at the
commit named in the data file. FIPS 203 Algorithm 16,
ML-KEM.KeyGen_internal(d, z), turns the two 32-octet inputs into (ek, dk);
the initiator draws its 64-octet seed d | z from the random source, so a
source that hands out the vector's d | z must give exactly its ek.

ACVP decapsulation cases are not run here: they give only the expanded dk,
and the library behind ML-KEM-768 and ML-KEM-1024 imports a private key
from its seed alone. ML-KEM-512 runs on liboqs, which takes no seed.
"""

from __future__ import annotations

from typing import Any

import pytest
from crypto_vectors import load, octets

from qsgw.crypto import ke_method
from qsgw.crypto.api import Random

VECTORS = "nist_acvp_ml_kem_keygen_fips203.json"

# IKEv2 Transform Type 4 identifiers, by ACVP parameterSet
KE_METHOD = {"ML-KEM-768": 36, "ML-KEM-1024": 37}


def seed_source(seed: bytes) -> Random:
    """A random source that hands out `seed` once, asked for all of it."""
    pending = [seed]

    def rng(n: int, /) -> bytes:
        assert n == len(seed), f"asked for {n} octets, the seed has {len(seed)}"
        return pending.pop()

    return rng


@pytest.mark.parametrize("vector", load(VECTORS))
def test_initiator_ek_from_seed_d_z_matches_nist_acvp_keygen(
    vector: dict[str, Any],
) -> None:
    method = ke_method(KE_METHOD[vector["parameterSet"]])
    seed = octets(vector, "d") + octets(vector, "z")

    ours = method.initiate(seed_source(seed))

    assert ours.public_value == octets(vector, "ek")
