"""Test ciphers and sample payloads for the IKE codec tests.

The ciphers implement `qsgw.crypto.api.IkeCipher` directly on
`cryptography` (AES-GCM-16 per RFC 5282, AES-CBC with HMAC-SHA-256-128 per
RFC 7296 §3.14 and RFC 4868): a stand-in at the crypto boundary while the
suite's own `qsgw.crypto.ike_cipher` is being written.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from hashlib import sha256
from ipaddress import IPv4Address, IPv6Address

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qsgw.crypto.api import IkeCipher, IntegrityError
from qsgw.ike.constants import (
    AuthMethod,
    ExchangeType,
    HeaderFlag,
    IdType,
    NotifyType,
    ProtocolId,
    TransformType,
    TsType,
)
from qsgw.ike.payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    ConfigAttribute,
    ConfigPayload,
    DeletePayload,
    EapPayload,
    IdPayload,
    IkeHeader,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    TrafficSelector,
    Transform,
    TsPayload,
    UnknownPayload,
    VendorIdPayload,
)


class AesGcm16:
    """ENCR_AES_GCM_16 with a 128-bit key for SK (RFC 5282)."""

    encryption_key_size = 20
    integrity_key_size = 0
    iv_size = 8
    block_size = 1
    icv_size = 16

    def seal(
        self, sk_e: bytes, sk_a: bytes, iv: bytes, aad: bytes, plaintext: bytes
    ) -> bytes:
        return AESGCM(sk_e[:16]).encrypt(sk_e[16:] + iv, plaintext, aad)

    def open(
        self, sk_e: bytes, sk_a: bytes, iv: bytes, aad: bytes, sealed: bytes
    ) -> bytes:
        try:
            return AESGCM(sk_e[:16]).decrypt(sk_e[16:] + iv, sealed, aad)
        except InvalidTag:
            raise IntegrityError("failed") from None


class AesCbcHmacSha256:
    """ENCR_AES_CBC-128 with AUTH_HMAC_SHA2_256_128 (encrypt-then-MAC)."""

    encryption_key_size = 16
    integrity_key_size = 32
    iv_size = 16
    block_size = 16
    icv_size = 16

    def seal(
        self, sk_e: bytes, sk_a: bytes, iv: bytes, aad: bytes, plaintext: bytes
    ) -> bytes:
        encryptor = Cipher(algorithms.AES(sk_e), modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(plaintext) + encryptor.finalize()
        return ciphertext + self._icv(sk_a, aad + iv + ciphertext)

    def open(
        self, sk_e: bytes, sk_a: bytes, iv: bytes, aad: bytes, sealed: bytes
    ) -> bytes:
        ciphertext, icv = sealed[: -self.icv_size], sealed[-self.icv_size :]
        if not hmac.compare_digest(icv, self._icv(sk_a, aad + iv + ciphertext)):
            raise IntegrityError("failed")
        decryptor = Cipher(algorithms.AES(sk_e), modes.CBC(iv)).decryptor()
        return decryptor.update(ciphertext) + decryptor.finalize()

    def _icv(self, sk_a: bytes, data: bytes) -> bytes:
        return hmac.new(sk_a, data, sha256).digest()[: self.icv_size]


CIPHERS: dict[str, IkeCipher] = {
    "aes-gcm-16": AesGcm16(),
    "aes-cbc-hmac-sha256": AesCbcHmacSha256(),
}
SK_E = bytes(range(1, 21))
SK_A = bytes(range(100, 132))


def keys_for(cipher: IkeCipher) -> tuple[bytes, bytes]:
    """(SK_e, SK_a) of the sizes `cipher` wants."""
    return SK_E[: cipher.encryption_key_size], SK_A[: cipher.integrity_key_size]


class CountingIv:
    """Distinct IVs from a counter, as an AEAD sender must produce them."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, n: int) -> bytes:
        self.count += 1
        return self.count.to_bytes(n, "big")


def header(
    exchange: ExchangeType = ExchangeType.IKE_SA_INIT,
    response: bool = False,
    message_id: int = 0,
) -> IkeHeader:
    flags = HeaderFlag.RESPONSE if response else HeaderFlag.INITIATOR
    return IkeHeader(
        spi_i=bytes.fromhex("0123456789abcdef"),
        spi_r=bytes(8) if exchange == ExchangeType.IKE_SA_INIT else b"\x42" * 8,
        next_payload=0,
        exchange=exchange,
        flags=flags,
        message_id=message_id,
    )


def ike_proposal(number: int = 1) -> Proposal:
    return Proposal(
        number=number,
        protocol=ProtocolId.IKE,
        spi=b"",
        transforms=(
            Transform(TransformType.ENCR, 20, 256),
            Transform(TransformType.PRF, 7),
            Transform(TransformType.KE, 31),
            Transform(TransformType.ADDKE1, 36),
        ),
    )


def esp_proposal(number: int = 1) -> Proposal:
    return Proposal(
        number=number,
        protocol=ProtocolId.ESP,
        spi=b"\xc0\x01\x02\x03",
        transforms=(
            Transform(TransformType.ENCR, 20, 128),
            Transform(TransformType.ESN, 0),
        ),
    )


def ts(initiator: bool) -> TsPayload:
    return TsPayload(
        initiator=initiator,
        selectors=(
            TrafficSelector(
                TsType.TS_IPV4_ADDR_RANGE,
                0,
                0,
                65535,
                IPv4Address("10.0.0.0"),
                IPv4Address("10.0.0.255"),
            ),
            TrafficSelector(
                TsType.TS_IPV6_ADDR_RANGE,
                6,
                443,
                443,
                IPv6Address("2001:db8::"),
                IPv6Address("2001:db8::ffff"),
            ),
        ),
    )


SAMPLES: dict[str, Payload] = {
    "SA-IKE": SaPayload(proposals=(ike_proposal(1), ike_proposal(2))),
    "SA-ESP": SaPayload(proposals=(esp_proposal(1),)),
    "SA-IKE-rekey": SaPayload(
        proposals=(Proposal(1, ProtocolId.IKE, b"\x11" * 8, ike_proposal().transforms),)
    ),
    "KE-mlkem768": KePayload(method=36, data=b"\x5a" * 1184),
    "IDi": IdPayload(True, IdType.ID_FQDN, b"gw1.example.net"),
    "IDr": IdPayload(False, IdType.ID_IPV4_ADDR, bytes([192, 0, 2, 1])),
    "IDi-null": IdPayload(True, IdType.ID_NULL, b""),
    "CERT": CertPayload(encoding=4, data=b"\x30\x82" + b"\x01" * 300),
    "CERTREQ": CertReqPayload(encoding=4, data=b"\x07" * 40),
    "AUTH": AuthPayload(AuthMethod.DIGITAL_SIGNATURE, b"\x0b" * 64),
    "Nonce": NoncePayload(b"\x99" * 32),
    "N-status": NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, data=b"\x01" * 20),
    "N-error": NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, data=b"\x00\x1f"),
    "N-rekey-sa": NotifyPayload(
        NotifyType.REKEY_SA, protocol=ProtocolId.ESP, spi=b"\xc0\x00\x00\x01"
    ),
    "N-ike-spi": NotifyPayload(
        NotifyType.INITIAL_CONTACT, protocol=ProtocolId.IKE, spi=b"\x01" * 8
    ),
    "N-unknown-type": NotifyPayload(type=40000, data=b"x"),
    "D-IKE": DeletePayload(ProtocolId.IKE),
    "D-ESP": DeletePayload(ProtocolId.ESP, (b"\xc0\x00\x00\x01", b"\xc0\x00\x00\x02")),
    "V": VendorIdPayload(b"qsgw-test-vendor"),
    "TSi": ts(True),
    "TSr": ts(False),
    "CP": ConfigPayload(
        cfg_type=1,
        attributes=(ConfigAttribute(1, b""), ConfigAttribute(8, b"")),
    ),
    "EAP": EapPayload(bytes([1, 7, 0, 9, 1]) + b"user"),
    "unknown-noncritical": UnknownPayload(type=200, body=b"ignored"),
}


def build(
    chain: Sequence[tuple[int, bytes] | tuple[int, bytes, int]],
    hdr: IkeHeader | None = None,
    length_delta: int = 0,
) -> bytes:
    """A message from raw payload bodies: (type, body[, flags octet]).

    Lets tests put any octets in a body, with correct generic headers.
    """
    from qsgw.ike.codec import encode_header

    parts = []
    for index, item in enumerate(chain):
        body = item[1]
        flags = item[2] if len(item) == 3 else 0
        following = chain[index + 1][0] if index + 1 < len(chain) else 0
        size = 4 + len(body)
        parts.append(bytes([following, flags]) + size.to_bytes(2, "big") + body)
    body = b"".join(parts)
    first = chain[0][0] if chain else 0
    total = 28 + len(body) + length_delta
    return encode_header(hdr or header(), first, total) + body
