"""PRFs and integrity transforms against RFC 4231 and RFC 4868 §2.7."""

from __future__ import annotations

import hmac
from typing import Any

import pytest
from crypto_vectors import load, octets

from qsgw.crypto import integrity, prf
from qsgw.crypto.api import CryptoError, IntegrityError, UnsupportedAlgorithm


@pytest.mark.parametrize("vector", load("rfc4231_hmac_sha2.json"))
def test_prf_matches_rfc4231_case(vector: dict[str, Any]) -> None:
    output = prf(vector["prf"])(octets(vector, "key"), octets(vector, "data"))

    expected = octets(vector, "output")
    assert output[: vector.get("truncated_to", len(output))] == expected


@pytest.mark.parametrize("vector", load("rfc4868_hmac_sha2.json", "prf"))
def test_prf_matches_rfc4868_prf_vector(vector: dict[str, Any]) -> None:
    output = prf(vector["prf"])(octets(vector, "key"), octets(vector, "data"))

    assert output == octets(vector, "output")


@pytest.mark.parametrize("vector", load("rfc4868_hmac_sha2.json", "integrity"))
def test_integrity_icv_matches_rfc4868_truncated_vector(
    vector: dict[str, Any],
) -> None:
    transform = integrity(vector["integrity"])
    key, data = octets(vector, "key"), octets(vector, "data")

    assert transform.compute(key, data) == octets(vector, "icv")
    transform.verify(key, data, octets(vector, "icv"))


@pytest.mark.parametrize("vector", load("rfc4868_hmac_sha2.json", "integrity"))
def test_integrity_key_is_the_rfc4868_key_length(vector: dict[str, Any]) -> None:
    transform = integrity(vector["integrity"])

    assert transform.key_size == len(octets(vector, "key"))
    assert transform.icv_size == len(octets(vector, "icv"))


def test_integrity_verify_rejects_a_changed_icv() -> None:
    transform = integrity(12)
    icv = bytearray(transform.compute(bytes(32), b"message"))
    icv[0] ^= 0x80

    with pytest.raises(IntegrityError, match=r"^integrity check failed$"):
        transform.verify(bytes(32), b"message", bytes(icv))


@pytest.mark.parametrize(("prf_id", "size"), [(5, 32), (6, 48), (7, 64)])
def test_prf_preferred_key_size_is_its_output_size(prf_id: int, size: int) -> None:
    function = prf(prf_id)

    assert (function.key_size, function.output_size) == (size, size)


def _prf_plus_by_definition(key: bytes, seed: bytes, length: int) -> bytes:
    # RFC 7296 §2.13, spelled out with the standard library as the oracle
    stream, block, counter = b"", b"", 1
    while len(stream) < length:
        block = hmac.digest(key, block + seed + bytes((counter,)), "sha256")
        stream += block
        counter += 1
    return stream[:length]


@pytest.mark.parametrize("length", [0, 1, 32, 33, 100, 255 * 32])
def test_prf_plus_follows_rfc7296_iteration(length: int) -> None:
    key, seed = bytes(range(32)), b"Ni | Nr | SPIi | SPIr"

    output = prf(5).plus(key, seed, length)

    assert output == _prf_plus_by_definition(key, seed, length)


def test_prf_plus_first_block_is_prf_of_seed_and_counter_one() -> None:
    key, seed = b"k" * 48, b"seed"

    first = prf(6).plus(key, seed, 48)

    assert first == hmac.digest(key, seed + b"\x01", "sha384")


def test_prf_plus_refuses_more_than_255_iterations() -> None:
    with pytest.raises(CryptoError):
        prf(5).plus(bytes(32), b"seed", 255 * 32 + 1)


@pytest.mark.parametrize("prf_id", [1, 2, 4, 8, 99])
def test_unknown_prf_raises_unsupported_algorithm(prf_id: int) -> None:
    with pytest.raises(UnsupportedAlgorithm, match=str(prf_id)):
        prf(prf_id)


@pytest.mark.parametrize("integ_id", [0, 1, 2, 5, 99])
def test_unknown_integrity_raises_unsupported_algorithm(integ_id: int) -> None:
    with pytest.raises(UnsupportedAlgorithm):
        integrity(integ_id)
