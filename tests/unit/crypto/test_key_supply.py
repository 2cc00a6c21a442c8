"""KeySupply: key pairs made ahead are the ones used, each once, and give
the same results as pairs made on the spot (RFC 7748 §6 vectors)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from crypto_vectors import load, octets

from qsgw.crypto import ke_method
from qsgw.crypto.api import InvalidPublicValue
from qsgw.crypto.supply import KeySupply

CURVE25519, ML_KEM_768 = 31, 36
X25519_VECTOR = next(
    v.values[0]
    for v in load("rfc7748_x25519_x448.json", "diffie_hellman")
    if v.values[0]["ke_method"] == CURVE25519
)


class CountingRng:
    """os.urandom that counts its calls, or hands out fixed chunks first."""

    def __init__(self, *chunks: bytes) -> None:
        self.calls = 0
        self._chunks = list(chunks)

    def __call__(self, n: int, /) -> bytes:
        self.calls += 1
        if self._chunks:
            chunk = self._chunks.pop(0)
            assert len(chunk) == n
            return chunk
        return os.urandom(n)


def _take_all(supply: KeySupply) -> None:
    while supply.wanted:
        supply.make_one()


def test_depth_zero_makes_nothing_ahead_and_draws_like_the_method() -> None:
    vector = X25519_VECTOR
    supply = KeySupply(CountingRng(octets(vector, "alice_private")))

    alice = supply.initiator(CURVE25519)
    supply.make_one()

    assert alice.public_value == octets(vector, "alice_public")
    assert not supply.wanted


@pytest.mark.parametrize("vector", load("rfc7748_x25519_x448.json", "diffie_hellman"))
def test_responder_uses_the_pair_made_ahead(vector: dict[str, Any]) -> None:
    method = vector["ke_method"]
    rng = CountingRng()
    supply = KeySupply(rng, depth=1)
    supply.respond(method, ke_method(method).initiate(os.urandom).public_value)
    assert supply.wanted
    rng._chunks.append(octets(vector, "bob_private"))
    _take_all(supply)
    calls = rng.calls

    reply = supply.respond(method, octets(vector, "alice_public"))

    assert reply == (octets(vector, "bob_public"), octets(vector, "shared"))
    assert rng.calls == calls  # nothing drawn: the pair was ready
    assert supply.wanted  # and it is gone


def test_initiator_pairs_made_ahead_are_used_once_each() -> None:
    rng = CountingRng()
    supply = KeySupply(rng, depth=2)
    first = supply.initiator(ML_KEM_768)
    _take_all(supply)
    calls = rng.calls

    taken = [supply.initiator(ML_KEM_768) for _ in range(3)]

    assert rng.calls == calls + 1  # two were ready, the third made on the spot
    values = {first.public_value} | {ke.public_value for ke in taken}
    assert len(values) == 4
    # each still completes an exchange with its peer
    for ke in taken:
        ct, secret = ke_method(ML_KEM_768).respond(ke.public_value, os.urandom)
        assert ke.complete(ct) == secret


def test_a_bad_peer_value_is_refused_with_a_pair_made_ahead() -> None:
    supply = KeySupply(os.urandom, depth=1)
    supply.respond(CURVE25519, ke_method(CURVE25519).initiate(os.urandom).public_value)
    _take_all(supply)

    # u = 0 is of order 1 (RFC 7748 §6); 31 octets is the wrong size
    for bad in (bytes(32), bytes(31)):
        with pytest.raises(InvalidPublicValue):
            supply.respond(CURVE25519, bad)


def test_ml_kem_responses_are_never_made_ahead() -> None:
    supply = KeySupply(os.urandom, depth=2)
    ours = ke_method(ML_KEM_768).initiate(os.urandom)

    ct, secret = supply.respond(ML_KEM_768, ours.public_value)

    assert ours.complete(ct) == secret
    assert not supply.wanted  # Encaps needs the peer's key


def test_only_methods_in_use_are_made_ahead() -> None:
    made: list[int] = []

    def rng(n: int, /) -> bytes:
        made.append(n)
        return os.urandom(n)

    supply = KeySupply(rng, depth=3)

    supply.make_one()
    assert made == [] and not supply.wanted

    supply.initiator(CURVE25519)
    _take_all(supply)
    assert made == [32] * 4  # the one taken and three ahead
