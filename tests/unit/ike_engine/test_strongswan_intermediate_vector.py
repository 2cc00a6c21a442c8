"""A real strongSwan 6.1 IKE_INTERMEDIATE exchange against our reassembly,
IntAuth and AUTH (RFC 7383, RFC 9242 §3.3.2, RFC 7296 §2.15).

The vector file holds the messages of one strongSwan-to-strongSwan IKE SA
with X25519 then ML-KEM-768 (ADDKE1), whose IKE_INTERMEDIATE request came
in two IKE fragments, with the keys, IntAuth values and AUTH values that
charon logged. Each case takes strongSwan's octets through the functions
the engine uses (`Reassembler`, `intauth_octets`, `keymat`) and expects
strongSwan's own values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qsgw import crypto
from qsgw.crypto.api import IkeCipher, Prf
from qsgw.ike import keymat
from qsgw.ike.codec import parse_message
from qsgw.ike.constants import ExchangeType
from qsgw.ike.fragments import Reassembled, Reassembler
from qsgw.ike.payloads import (
    AuthPayload,
    EncryptedPayload,
    IdPayload,
    KePayload,
    Message,
    NoncePayload,
)
from qsgw.ike.protection import decrypt_message, intauth_octets, open_encrypted

VECTORS = (
    Path(__file__).parents[2]
    / "vectors"
    / "strongswan_6_1_ike_intermediate_fragments.json"
)
ML_KEM_768 = 36
ML_KEM_768_EK_SIZE = 1184


def _vectors() -> list[dict[str, Any]]:
    return list(json.loads(VECTORS.read_text())["vectors"])


vectors = pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v["name"])


def _h(value: str) -> bytes:
    return bytes.fromhex(value)


def _suite(vector: dict[str, Any]) -> tuple[IkeCipher, Prf]:
    cipher = crypto.ike_cipher(vector["encr"], vector["key_bits"], None)
    return cipher, crypto.prf(vector["prf"])


def _reassemble(vector: dict[str, Any]) -> Reassembled:
    cipher, _ = _suite(vector)
    sk_ei = _h(vector["keys_after_ike_sa_init"]["ei"])
    reassembler = Reassembler()
    whole = None
    for fragment in vector["ike_intermediate_request_fragments"]:
        raw = _h(fragment)
        whole = reassembler.add_protected(raw, parse_message(raw), cipher, sk_ei, b"")
    assert whole is not None
    return whole


def _open(vector: dict[str, Any], name: str, keys: str, key: str) -> Message:
    cipher, _ = _suite(vector)
    raw = _h(vector[name])
    sk_e = _h(vector[keys][key])
    return decrypt_message(raw, parse_message(raw), cipher, sk_e, b"")


def _nonce(vector: dict[str, Any], name: str) -> bytes:
    nonce = parse_message(_h(vector[name])).first(NoncePayload)
    assert isinstance(nonce, NoncePayload)
    return nonce.data


def _intauth(vector: dict[str, Any]) -> bytes:
    auth_request = parse_message(_h(vector["ike_auth_request"]))
    mid = auth_request.header.message_id
    return keymat.intauth_value(_h(vector["intauth_i1"]), _h(vector["intauth_r1"]), mid)


@vectors
def test_strongswan_fragments_reassemble_into_its_ml_kem_768_ke_payload(
    vector: dict[str, Any],
) -> None:
    whole = _reassemble(vector)

    message = whole.message()
    assert message.header.exchange == ExchangeType.IKE_INTERMEDIATE
    (ke,) = message.payloads
    assert isinstance(ke, KePayload)
    assert ke.method == ML_KEM_768 and len(ke.data) == ML_KEM_768_EK_SIZE


@vectors
def test_intauth_i1_over_strongswan_fragments_equals_strongswan_value(
    vector: dict[str, Any],
) -> None:
    _, prf = _suite(vector)
    whole = _reassemble(vector)
    sk_pi = _h(vector["keys_after_ike_sa_init"]["pi"])

    a_octets, p_octets = intauth_octets(whole.first_fragment, whole.plaintext)
    intauth_i1 = keymat.intauth_step(prf, sk_pi, b"", a_octets, p_octets)

    assert intauth_i1 == _h(vector["intauth_i1"])


@vectors
def test_intauth_r1_over_strongswan_response_equals_strongswan_value(
    vector: dict[str, Any],
) -> None:
    cipher, prf = _suite(vector)
    raw = _h(vector["ike_intermediate_response"])
    keys = vector["keys_after_ike_sa_init"]
    message = parse_message(raw)
    (encrypted,) = message.payloads
    plaintext = _plaintext(raw, encrypted, cipher, _h(keys["er"]))

    a_octets, p_octets = intauth_octets(raw, plaintext)
    intauth_r1 = keymat.intauth_step(prf, _h(keys["pr"]), b"", a_octets, p_octets)

    assert intauth_r1 == _h(vector["intauth_r1"])


def _plaintext(raw: bytes, encrypted: object, cipher: IkeCipher, sk_e: bytes) -> bytes:
    assert isinstance(encrypted, EncryptedPayload)
    return open_encrypted(raw, encrypted.body, cipher, sk_e, b"")


@vectors
@pytest.mark.parametrize("role", ["initiator", "responder"])
def test_psk_auth_with_intauth_equals_strongswan_auth_payload(
    vector: dict[str, Any], role: str
) -> None:
    _, prf = _suite(vector)
    keys = "keys_after_ike_intermediate"
    if role == "initiator":
        message = _open(vector, "ike_auth_request", keys, "ei")
        real_message = _h(vector["ike_sa_init_request"])
        peer_nonce = _nonce(vector, "ike_sa_init_response")
        sk_p, logged = _h(vector[keys]["pi"]), vector["auth_i"]
    else:
        message = _open(vector, "ike_auth_response", keys, "er")
        real_message = _h(vector["ike_sa_init_response"])
        peer_nonce = _nonce(vector, "ike_sa_init_request")
        sk_p, logged = _h(vector[keys]["pr"]), vector["auth_r"]
    identity, auth = message.first(IdPayload), message.first(AuthPayload)
    assert isinstance(identity, IdPayload) and isinstance(auth, AuthPayload)

    octets = keymat.signed_octets(
        prf, real_message, peer_nonce, sk_p, identity.body, _intauth(vector)
    )
    expected = keymat.psk_auth(prf, _h(vector["psk"]), octets)

    assert expected == auth.data == _h(logged)
