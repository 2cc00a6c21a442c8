"""The ML-KEM-512 adapter over liboqs-python.

liboqs is an external library that this machine does not have, so these
unit tests drive the adapter with a fake `oqs` module at that boundary; a
real liboqs is exercised by the interop images that build it.
"""

from __future__ import annotations

import types
from typing import Any, ClassVar

import pytest

from qsgw.crypto.api import InvalidPublicValue
from qsgw.crypto.mlkem import OqsMlKemMethod

EK, CT, SECRET = b"e" * 800, b"c" * 768, b"s" * 32


class FakeKeyEncapsulation:
    """Just enough of oqs.KeyEncapsulation: fixed outputs, records calls."""

    calls: ClassVar[list[str]] = []

    def __init__(self, name: str) -> None:
        assert name == "ML-KEM-512"

    def __enter__(self) -> FakeKeyEncapsulation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.calls.append("free")

    def generate_keypair(self) -> bytes:
        return EK

    def encap_secret(self, public_key: bytes) -> tuple[bytes, bytes]:
        if public_key == b"\xff" * 800:
            raise RuntimeError("Can not encapsulate secret")
        return CT, SECRET

    def decap_secret(self, ciphertext: bytes) -> bytes:
        self.calls.append("decap")
        return SECRET

    def free(self) -> None:
        self.calls.append("free")


@pytest.fixture
def method() -> OqsMlKemMethod:
    FakeKeyEncapsulation.calls = []
    fake_oqs: Any = types.SimpleNamespace(KeyEncapsulation=FakeKeyEncapsulation)
    return OqsMlKemMethod(fake_oqs)


def test_ml_kem_512_sizes_are_fips203(method: OqsMlKemMethod) -> None:
    assert (method.id, method.initiator_size, method.responder_size) == (35, 800, 768)


def test_initiator_sends_ek_and_decapsulates_once(method: OqsMlKemMethod) -> None:
    ours = method.initiate(lambda n: bytes(n))

    assert ours.public_value == EK
    assert ours.complete(CT) == SECRET
    assert FakeKeyEncapsulation.calls == ["decap", "free"]


def test_responder_returns_ciphertext_and_secret(method: OqsMlKemMethod) -> None:
    assert method.respond(EK, lambda n: bytes(n)) == (CT, SECRET)


def test_rejected_encapsulation_key_is_an_invalid_public_value(
    method: OqsMlKemMethod,
) -> None:
    with pytest.raises(InvalidPublicValue):
        method.respond(b"\xff" * 800, lambda n: bytes(n))


@pytest.mark.parametrize("size", [0, 799, 801, 1184])
def test_wrong_ek_size_is_an_invalid_public_value(
    method: OqsMlKemMethod, size: int
) -> None:
    with pytest.raises(InvalidPublicValue):
        method.respond(bytes(size), lambda n: bytes(n))


@pytest.mark.parametrize("size", [0, 767, 769, 1088])
def test_wrong_ciphertext_size_is_an_invalid_public_value(
    method: OqsMlKemMethod, size: int
) -> None:
    ours = method.initiate(lambda n: bytes(n))

    with pytest.raises(InvalidPublicValue):
        ours.complete(bytes(size))


def test_repr_does_not_show_the_liboqs_object(method: OqsMlKemMethod) -> None:
    shown = repr(method) + repr(method.initiate(lambda n: bytes(n)))

    assert "FakeKeyEncapsulation" not in shown and "namespace" not in shown
