"""Key exchange methods against RFC 7748, RFC 5903, FIPS 203 (Wycheproof)
and RFC 3526, plus the validation of a peer's KE data."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from crypto_vectors import load, octets

from qsgw.crypto import available_ke_methods, dh, ke_method
from qsgw.crypto.api import CryptoError, InvalidPublicValue, UnsupportedAlgorithm
from qsgw.crypto.mlkem import liboqs_available

CURVE25519, CURVE448 = 31, 32
ECP_256, ECP_384, ECP_521 = 19, 20, 21
MODP_2048, MODP_3072 = 14, 15
ML_KEM_512, ML_KEM_768, ML_KEM_1024 = 35, 36, 37


def fixed_rng(*chunks: bytes) -> Callable[[int], bytes]:
    """A random source that hands out `chunks` in order, each exactly as
    large as the caller asks for."""
    pending = list(chunks)

    def rng(n: int, /) -> bytes:
        chunk = pending.pop(0)
        assert len(chunk) == n, f"asked for {n} octets, vector has {len(chunk)}"
        return chunk

    return rng


# RFC 7748


@pytest.mark.parametrize(
    "vector", load("rfc7748_x25519_x448.json", "scalar_multiplication")
)
def test_x25519_x448_scalar_multiplication_matches_rfc7748_5_2(
    vector: dict[str, Any],
) -> None:
    method = ke_method(vector["ke_method"])
    ours = method.initiate(fixed_rng(octets(vector, "scalar")))

    assert ours.complete(octets(vector, "u")) == octets(vector, "output")


@pytest.mark.parametrize("vector", load("rfc7748_x25519_x448.json", "diffie_hellman"))
def test_initiator_matches_rfc7748_6_alice(vector: dict[str, Any]) -> None:
    method = ke_method(vector["ke_method"])
    alice = method.initiate(fixed_rng(octets(vector, "alice_private")))

    assert alice.public_value == octets(vector, "alice_public")
    assert alice.complete(octets(vector, "bob_public")) == octets(vector, "shared")


@pytest.mark.parametrize("vector", load("rfc7748_x25519_x448.json", "diffie_hellman"))
def test_responder_matches_rfc7748_6_bob(vector: dict[str, Any]) -> None:
    method = ke_method(vector["ke_method"])
    rng = fixed_rng(octets(vector, "bob_private"))

    reply = method.respond(octets(vector, "alice_public"), rng)

    assert reply == (octets(vector, "bob_public"), octets(vector, "shared"))


@pytest.mark.parametrize(("method_id", "size"), [(CURVE25519, 32), (CURVE448, 56)])
def test_low_order_point_is_an_invalid_public_value(method_id: int, size: int) -> None:
    # u = 0 has order 1: the shared secret would be all zeros (RFC 7748 §6)
    ours = ke_method(method_id).initiate(os.urandom)

    with pytest.raises(InvalidPublicValue):
        ours.complete(bytes(size))


# RFC 5903


@pytest.mark.parametrize("vector", load("rfc5903_ecp_ikev2.json"))
def test_ecp_initiator_matches_rfc5903_8(vector: dict[str, Any]) -> None:
    method = ke_method(vector["ke_method"])
    ours = method.initiate(fixed_rng(octets(vector, "i")))

    assert ours.public_value == octets(vector, "gi")
    assert ours.complete(octets(vector, "gr")) == octets(vector, "girx")


@pytest.mark.parametrize("vector", load("rfc5903_ecp_ikev2.json"))
def test_ecp_responder_matches_rfc5903_8(vector: dict[str, Any]) -> None:
    method = ke_method(vector["ke_method"])

    reply = method.respond(octets(vector, "gi"), fixed_rng(octets(vector, "r")))

    assert reply == (octets(vector, "gr"), octets(vector, "girx"))


@pytest.mark.parametrize("vector", load("rfc5903_ecp_ikev2.json"))
def test_ecp_point_off_the_curve_is_an_invalid_public_value(
    vector: dict[str, Any],
) -> None:
    off_curve = bytearray(octets(vector, "gr"))
    off_curve[-1] ^= 0x01
    ours = ke_method(vector["ke_method"]).initiate(os.urandom)

    with pytest.raises(InvalidPublicValue):
        ours.complete(bytes(off_curve))


@pytest.mark.parametrize("method_id", [ECP_256, ECP_384, ECP_521])
def test_ecp_all_zero_value_is_an_invalid_public_value(method_id: int) -> None:
    # (0, 0) is how an identity would have to be written in x | y
    method = ke_method(method_id)

    with pytest.raises(InvalidPublicValue):
        method.respond(bytes(method.initiator_size), os.urandom)


def test_ecp_coordinate_not_reduced_modulo_p_is_an_invalid_public_value() -> None:
    vector = load("rfc5903_ecp_ikev2.json")[2].values[0]
    size = 66
    gr = octets(vector, "gr")
    x = int.from_bytes(gr[:size], "big") + (2**521 - 1)
    unreduced = x.to_bytes(size, "big") + gr[size:]
    ours = ke_method(ECP_521).initiate(os.urandom)

    with pytest.raises(InvalidPublicValue):
        ours.complete(unreduced)


@pytest.mark.parametrize("method_id", [ECP_256, ECP_384, ECP_521])
def test_group_order_minus_one_gives_the_negated_generator(method_id: int) -> None:
    method = {ECP_256: dh.ECP_256, ECP_384: dh.ECP_384, ECP_521: dh.ECP_521}[method_id]
    size = method.coordinate_size
    one = method.initiate(fixed_rng((1).to_bytes(size, "big")))
    minus_one = method.initiate(fixed_rng((method.order - 1).to_bytes(size, "big")))

    g_x, g_y = one.public_value[:size], one.public_value[size:]
    y = int.from_bytes(g_y, "big")
    negated = g_x + (method.field_prime - y).to_bytes(size, "big")
    assert minus_one.public_value == negated


def test_ecp_scalar_out_of_range_is_drawn_again() -> None:
    method = ke_method(ECP_256)
    too_big, one = b"\xff" * 32, (1).to_bytes(32, "big")

    redrawn = method.initiate(fixed_rng(too_big, one))

    assert redrawn.public_value == method.initiate(fixed_rng(one)).public_value


def test_ecp_random_source_that_never_gives_a_scalar_fails() -> None:
    with pytest.raises(CryptoError):
        ke_method(ECP_256).initiate(lambda n: bytes(n))


# ML-KEM (FIPS 203)


@pytest.mark.parametrize("vector", load("wycheproof_mlkem_fips203.json"))
def test_mlkem_key_generation_from_seed_matches_wycheproof(
    vector: dict[str, Any],
) -> None:
    method = ke_method(vector["ke_method"])

    ours = method.initiate(fixed_rng(octets(vector, "seed")))

    assert ours.public_value == octets(vector, "ek")


@pytest.mark.parametrize("vector", load("wycheproof_mlkem_fips203.json"))
def test_mlkem_decapsulation_matches_wycheproof(vector: dict[str, Any]) -> None:
    ours = ke_method(vector["ke_method"]).initiate(fixed_rng(octets(vector, "seed")))

    assert ours.complete(octets(vector, "c")) == octets(vector, "K")


@pytest.mark.parametrize(
    ("method_id", "ek_size", "ct_size"),
    [(ML_KEM_768, 1184, 1088), (ML_KEM_1024, 1568, 1568)],
)
def test_mlkem_round_trip_agrees_on_a_32_octet_secret(
    method_id: int, ek_size: int, ct_size: int
) -> None:
    method = ke_method(method_id)
    initiator = method.initiate(os.urandom)

    ciphertext, responder_secret = method.respond(initiator.public_value, os.urandom)

    assert (len(initiator.public_value), len(ciphertext)) == (ek_size, ct_size)
    assert (method.initiator_size, method.responder_size) == (ek_size, ct_size)
    assert len(responder_secret) == 32
    assert initiator.complete(ciphertext) == responder_secret


@pytest.mark.parametrize("method_id", [ML_KEM_768, ML_KEM_1024])
def test_mlkem_malformed_encapsulation_key_is_an_invalid_public_value(
    method_id: int,
) -> None:
    # FIPS 203 §7.2: coefficients of 0xfff exceed q = 3329
    method = ke_method(method_id)

    with pytest.raises(InvalidPublicValue):
        method.respond(b"\xff" * method.initiator_size, os.urandom)


@pytest.mark.parametrize("method_id", [ML_KEM_768, ML_KEM_1024])
def test_mlkem_wrong_ciphertext_size_is_an_invalid_public_value(
    method_id: int,
) -> None:
    method = ke_method(method_id)
    ours = method.initiate(os.urandom)

    with pytest.raises(InvalidPublicValue):
        ours.complete(bytes(method.responder_size - 1))


def test_mlkem_512_without_liboqs_is_unsupported_and_never_imports_oqs() -> None:
    if liboqs_available():
        pytest.skip("liboqs is installed here")
    # a fresh interpreter: importing `oqs` without liboqs would exit it
    code = (
        "import sys\n"
        "from qsgw.crypto import ke_method, available_ke_methods\n"
        "from qsgw.crypto.api import UnsupportedAlgorithm\n"
        "assert 35 not in available_ke_methods()\n"
        "try:\n"
        "    ke_method(35)\n"
        "except UnsupportedAlgorithm as error:\n"
        "    print(error)\n"
        "print('oqs' in sys.modules)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )

    assert run.returncode == 0, run.stderr
    message, imported = run.stdout.strip().splitlines()
    assert "ML-KEM-512" in message and "liboqs" in message
    assert imported == "False"


# MODP (RFC 3526)


@pytest.mark.parametrize("group", load("rfc3526_modp_groups.json", "groups"))
def test_modp_prime_is_the_rfc3526_published_prime(group: dict[str, Any]) -> None:
    prime = {MODP_2048: dh.MODP_2048_PRIME, MODP_3072: dh.MODP_3072_PRIME}[
        group["ke_method"]
    ]

    assert prime == int(group["prime"], 16)
    assert group["generator"] == dh.MODP_GENERATOR


def _probably_prime(n: int) -> bool:
    # Miller-Rabin with fixed bases: an independent check of the constant
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for base in (2, 3, 5, 7):
        x = pow(base, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


@pytest.mark.parametrize("group", load("rfc3526_modp_groups.json", "groups"))
def test_modp_published_prime_is_a_safe_prime(group: dict[str, Any]) -> None:
    prime = int(group["prime"], 16)

    assert _probably_prime(prime)
    assert _probably_prime((prime - 1) // 2)


@pytest.mark.parametrize(("method_id", "size"), [(MODP_2048, 256), (MODP_3072, 384)])
def test_modp_exchange_agrees_with_fixed_size_values(method_id: int, size: int) -> None:
    method = ke_method(method_id)
    initiator = method.initiate(os.urandom)

    reply, responder_secret = method.respond(initiator.public_value, os.urandom)

    assert len(initiator.public_value) == len(reply) == size
    assert initiator.complete(reply) == responder_secret
    assert len(responder_secret) == size


def test_modp_public_value_is_two_to_the_drawn_exponent() -> None:
    group = load("rfc3526_modp_groups.json", "groups")[0].values[0]
    prime = int(group["prime"], 16)
    drawn = bytes(range(1, 65))

    ours = ke_method(MODP_2048).initiate(fixed_rng(drawn))

    exponent = int.from_bytes(drawn, "big") | (1 << 511)
    assert ours.public_value == pow(2, exponent, prime).to_bytes(256, "big")


@pytest.mark.parametrize("method_id", [MODP_2048, MODP_3072])
@pytest.mark.parametrize("bad", ["zero", "one", "p-1", "p", "all-ones"])
def test_modp_degenerate_public_value_is_invalid(method_id: int, bad: str) -> None:
    prime = {MODP_2048: dh.MODP_2048_PRIME, MODP_3072: dh.MODP_3072_PRIME}[method_id]
    size = (prime.bit_length() + 7) // 8
    value = {"zero": 0, "one": 1, "p-1": prime - 1, "p": prime}.get(
        bad, 2 ** (8 * size) - 1
    )

    with pytest.raises(InvalidPublicValue):
        ke_method(method_id).respond(value.to_bytes(size, "big"), os.urandom)


# every method


ALL_METHODS = [
    CURVE25519,
    CURVE448,
    ECP_256,
    ECP_384,
    ECP_521,
    MODP_2048,
    MODP_3072,
    ML_KEM_768,
    ML_KEM_1024,
]


@pytest.mark.parametrize("method_id", ALL_METHODS)
@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_size_initiator_data_is_an_invalid_public_value(
    method_id: int, delta: int
) -> None:
    method = ke_method(method_id)

    with pytest.raises(InvalidPublicValue):
        method.respond(bytes(method.initiator_size + delta), os.urandom)


@pytest.mark.parametrize("method_id", ALL_METHODS)
def test_empty_responder_data_is_an_invalid_public_value(method_id: int) -> None:
    ours = ke_method(method_id).initiate(os.urandom)

    with pytest.raises(InvalidPublicValue):
        ours.complete(b"")


@pytest.mark.parametrize("method_id", ALL_METHODS)
def test_key_exchange_repr_shows_no_private_key(method_id: int) -> None:
    drawn: list[bytes] = []

    def recording_rng(n: int, /) -> bytes:
        drawn.append(os.urandom(n))
        return drawn[-1]

    method = ke_method(method_id)
    shown = repr(method.initiate(recording_rng)) + repr(method)

    assert drawn and all(chunk.hex() not in shown for chunk in drawn)
    assert "PrivateKey" not in shown and "_agree" not in shown


def test_available_methods_lists_every_supported_id() -> None:
    available = available_ke_methods()

    assert set(ALL_METHODS) <= set(available)
    assert (ML_KEM_512 in available) == liboqs_available()
    assert list(available) == sorted(available)


@pytest.mark.parametrize("method_id", [0, 1, 2, 5, 16, 17, 18, 22, 30, 33, 38])
def test_unknown_method_raises_unsupported_algorithm(method_id: int) -> None:
    with pytest.raises(UnsupportedAlgorithm, match=str(method_id)):
        ke_method(method_id)
