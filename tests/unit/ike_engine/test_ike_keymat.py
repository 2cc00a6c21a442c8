"""qsgw.ike.keymat against vectors and against the RFC formulas.

The vector file holds an SP 800-135 IKEv2 KDF run (HMAC-SHA-1); the other
cases compute the RFC 8784, RFC 9370 and RFC 9242 formulas independently
with the standard library's HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from qsgw.crypto import prf as prf_of
from qsgw.crypto.prf import HmacPrf
from qsgw.ike import keymat

VECTORS = Path(__file__).parents[2] / "vectors" / "libreswan_ikev2_cavs_sha1.json"
SHA1_PRF = HmacPrf(2, "PRF_HMAC_SHA1", "sha1", 20, 20)
SHA384 = prf_of(6)


def _vectors() -> list[dict[str, Any]]:
    data = json.loads(VECTORS.read_text())
    return list(data["vectors"])


def _h(value: str) -> bytes:
    return bytes.fromhex(value)


def _hmac384(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, hashlib.sha384)


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v["name"])
def test_skeyseed_and_seven_keys_match_kdf_vector(vector: dict[str, Any]) -> None:
    ni, nr = _h(vector["ni"]), _h(vector["nr"])
    context = keymat.SaContext(ni, nr, _h(vector["spi_i"]), _h(vector["spi_r"]))
    seed = keymat.skeyseed(SHA1_PRF, ni, nr, _h(vector["gir"]))
    assert seed.hex() == vector["skeyseed"]

    # 3 x 20 (SK_d, SK_pi, SK_pr) + 2 x 20 (SK_a) + 2 x 16 (SK_e) = 132
    sizes = keymat.KeySizes(integrity=20, encryption=16)
    keys = keymat.expand_ike_keys(SHA1_PRF, seed, context, sizes)
    joined = (
        (keys.sk_d + keys.sk_ai + keys.sk_ar + keys.sk_ei + keys.sk_er)
        + keys.sk_pi
        + keys.sk_pr
    )
    assert len(joined) == vector["dkm_length"]
    assert joined.hex() == vector["dkm"]


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v["name"])
def test_child_keymat_and_rekey_skeyseed_match_kdf_vector(
    vector: dict[str, Any],
) -> None:
    ni, nr = _h(vector["ni"]), _h(vector["nr"])
    sk_d = _h(vector["dkm"])[:20]
    size = vector["dkm_length"]
    plain = keymat.child_keymat(SHA1_PRF, sk_d, [], ni, nr, size)
    assert plain.hex() == vector["dkm_child_sa"]
    pfs = keymat.child_keymat(SHA1_PRF, sk_d, [_h(vector["gir_new"])], ni, nr, size)
    assert pfs.hex() == vector["dkm_child_sa_dh"]
    rekey = keymat.rekey_skeyseed(SHA1_PRF, sk_d, [_h(vector["gir_new"])], ni, nr)
    assert rekey.hex() == vector["skeyseed_rekey"]


def _keys() -> keymat.IkeKeys:
    context = keymat.SaContext(b"N" * 32, b"n" * 32, b"I" * 8, b"R" * 8)
    sizes = keymat.KeySizes(integrity=0, encryption=36)
    return keymat.derive_ike_keys(SHA384, b"g^ir" * 8, context, sizes)


def test_ppk_mixes_only_sk_d_sk_pi_and_sk_pr() -> None:
    keys = _keys()
    ppk = bytes(range(32))
    mixed = keymat.apply_ppk(SHA384, keys, ppk)
    # RFC 8784 §3: SK_x = prf+(PPK, SK_x'); 48 octets is one prf block
    assert mixed.sk_d == _hmac384(ppk, keys.sk_d + b"\x01")
    assert mixed.sk_pi == _hmac384(ppk, keys.sk_pi + b"\x01")
    assert mixed.sk_pr == _hmac384(ppk, keys.sk_pr + b"\x01")
    assert (mixed.sk_ei, mixed.sk_er) == (keys.sk_ei, keys.sk_er)
    assert (mixed.sk_ai, mixed.sk_ar) == (keys.sk_ai, keys.sk_ar)


def test_intermediate_update_follows_rfc_9370() -> None:
    keys = _keys()
    context = keymat.SaContext(b"N" * 32, b"n" * 32, b"I" * 8, b"R" * 8)
    sizes = keymat.KeySizes(integrity=0, encryption=36)
    shared = b"\x42" * 32
    updated = keymat.update_after_intermediate(SHA384, keys, shared, context, sizes)
    # SKEYSEED(1) = prf(SK_d(0), SK(1) | Ni | Nr); keys = prf+(SKEYSEED(1), ...)
    seed = _hmac384(keys.sk_d, shared + context.ni + context.nr)
    first_block = _hmac384(seed, context.seed + b"\x01")
    assert updated.sk_d == first_block
    assert updated.sk_ei != keys.sk_ei


def test_additional_secrets_follow_nonces_in_child_keymat() -> None:
    sk_d = b"d" * 48
    secrets = [b"s0" * 16, b"s1" * 16, b"s2" * 16]
    out = keymat.child_keymat(SHA384, sk_d, secrets, b"Ni", b"Nr", 48)
    # RFC 9370 §2.2.4: prf+(SK_d, SK(0) | Ni | Nr | SK(1) | SK(2))
    seed = secrets[0] + b"Ni" + b"Nr" + secrets[1] + secrets[2]
    assert out == _hmac384(sk_d, seed + b"\x01")


def test_intauth_chains_and_ends_with_ike_auth_message_id() -> None:
    first = keymat.intauth_step(SHA384, b"k1", b"", b"A1", b"P1")
    second = keymat.intauth_step(SHA384, b"k2", first, b"A2", b"P2")
    assert first == _hmac384(b"k1", b"A1P1")
    assert second == _hmac384(b"k2", first + b"A2P2")
    value = keymat.intauth_value(b"i", b"r", 3)
    assert value == b"ir\x00\x00\x00\x03"


def test_psk_auth_uses_key_pad() -> None:
    octets = keymat.signed_octets(SHA384, b"MSG", b"NONCE", b"skp", b"IDBODY")
    assert octets == b"MSGNONCE" + _hmac384(b"skp", b"IDBODY")
    auth = keymat.psk_auth(SHA384, b"secret", octets)
    assert auth == _hmac384(_hmac384(b"secret", b"Key Pad for IKEv2"), octets)


def test_key_objects_hide_their_values() -> None:
    keys = _keys()
    assert keys.sk_d.hex() not in repr(keys)
    assert "hidden" in repr(keys) and "hidden" in str(keys)
    split = keymat.split_child_keymat(bytes(range(72)), 36, 0)
    assert "hidden" in repr(split)
    assert split.encryption_i == bytes(range(36))
    assert split.encryption_r == bytes(range(36, 72))
