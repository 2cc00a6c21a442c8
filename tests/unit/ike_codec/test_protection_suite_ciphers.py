"""SK protection with the crypto suite's own IKE ciphers (qsgw.crypto)."""

from __future__ import annotations

import pytest
from ikecodec_support import SAMPLES, header

import qsgw.crypto
from qsgw.ike.codec import parse_message
from qsgw.ike.constants import EncrId, ExchangeType, IntegId
from qsgw.ike.fragments import Reassembler, fragment_message
from qsgw.ike.protection import decrypt_message, encrypt_message

ike_cipher = getattr(qsgw.crypto, "ike_cipher", None)
pytestmark = pytest.mark.skipif(
    ike_cipher is None, reason="qsgw.crypto.ike_cipher is not available yet"
)

SUITES = [
    (EncrId.ENCR_AES_GCM_16, 256, IntegId.NONE),
    (EncrId.ENCR_AES_CBC, 128, IntegId.AUTH_HMAC_SHA2_256_128),
    (EncrId.ENCR_CHACHA20_POLY1305, None, IntegId.NONE),
]
AUTH = header(ExchangeType.IKE_AUTH, message_id=1)
INNER = [SAMPLES["IDi"], SAMPLES["CERT"], SAMPLES["AUTH"], SAMPLES["SA-ESP"]]


@pytest.mark.parametrize(("encr", "bits", "integ"), SUITES)
def test_suite_cipher_protects_and_fragments(
    encr: EncrId, bits: int | None, integ: IntegId
) -> None:
    assert ike_cipher is not None
    cipher = ike_cipher(encr, bits, integ)
    sk_e = bytes(range(cipher.encryption_key_size))
    sk_a = bytes(range(cipher.integrity_key_size))

    raw = encrypt_message(AUTH, INNER, cipher, sk_e, sk_a, b"\x01" * cipher.iv_size)
    message = decrypt_message(raw, parse_message(raw), cipher, sk_e, sk_a)
    assert message.payloads == tuple(INNER)

    counter = iter(range(1, 1000))
    fragments = fragment_message(
        AUTH,
        INNER,
        cipher,
        sk_e,
        sk_a,
        200,
        4,
        lambda n: next(counter).to_bytes(n, "big"),
    )
    reassembler = Reassembler()
    results = [
        reassembler.add_protected(f, parse_message(f), cipher, sk_e, sk_a)
        for f in fragments
    ]
    assert len(fragments) > 1
    assert results[-1] is not None
    assert results[-1].message().payloads == tuple(INNER)
