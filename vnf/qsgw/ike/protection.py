"""Protection of IKE messages by the Encrypted payload (SK).

RFC 7296 §3.14 (SK, padding, integrity), RFC 5282 (AEAD ciphers in SK,
whose associated data runs from the IKE header through the SK generic
header), RFC 9242 §3.3.2 (the IntAuth "A" and "P" octets). The cipher is a
`qsgw.crypto.api.IkeCipher`; this module only frames its input and output.

A failed ICV, a bad length or bad padding is a silent drop
(`ProtocolError(None, ...)`): nothing in an unauthenticated message may be
answered. Errors inside authenticated contents keep their notify.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from qsgw.crypto.api import CryptoError, IkeCipher, Random
from qsgw.ike.codec import (
    DEFAULT_LIMITS,
    CodecLimits,
    encode_generic_header,
    encode_header,
    encode_payloads,
    parse_payloads,
)
from qsgw.ike.constants import GENERIC_PAYLOAD_HEADER_SIZE, IKE_HEADER_SIZE, PayloadType
from qsgw.ike.errors import drop
from qsgw.ike.payloads import (
    EncryptedPayload,
    IkeHeader,
    Message,
    Payload,
    UnknownPayload,
)

_NEXT_PAYLOAD_OFFSET = 16  # the IKE header's fields (RFC 7296 §3.1)
_LENGTH_OFFSET = 24


def encrypt_message(
    header: IkeHeader,
    inner_payloads: Iterable[Payload],
    cipher: IkeCipher,
    sk_e: bytes,
    sk_a: bytes,
    iv: bytes,
    pad_rng: Random | None = None,
) -> bytes:
    """The whole message: `header` and an SK payload holding the payloads.

    `iv` must have `cipher.iv_size` octets and, for AEAD ciphers, never
    repeat under a key. Padding is the minimum; its octets come from
    `pad_rng` or are zero (RFC 7296 §3.14 lets the sender choose them).
    """
    first_inner, plaintext = encode_payloads(inner_payloads)
    return seal(header, first_inner, plaintext, cipher, sk_e, sk_a, iv, pad_rng)


def seal(
    header: IkeHeader,
    first_inner: int,
    plaintext: bytes,
    cipher: IkeCipher,
    sk_e: bytes,
    sk_a: bytes,
    iv: bytes,
    pad_rng: Random | None = None,
    fragment: tuple[int, int] | None = None,
) -> bytes:
    """A message whose single payload is SK, or SKF when `fragment` is
    (Fragment Number, Total Fragments), protecting `plaintext`."""
    if len(iv) != cipher.iv_size:
        raise ValueError("IV size does not match the cipher")
    padded = pad(plaintext, cipher.block_size, pad_rng)
    fields = b"" if fragment is None else struct.pack("!HH", *fragment)
    kind = PayloadType.SK if fragment is None else PayloadType.SKF

    body_size = len(fields) + len(iv) + len(padded) + cipher.icv_size
    message_size = IKE_HEADER_SIZE + GENERIC_PAYLOAD_HEADER_SIZE + body_size
    generic = encode_generic_header(first_inner, False, body_size)
    aad = encode_header(header, kind, message_size) + generic + fields

    sealed = cipher.seal(sk_e, sk_a, iv, aad, padded)
    if len(sealed) != len(padded) + cipher.icv_size:
        raise ValueError("cipher output size does not match its ICV size")
    return aad + iv + sealed


def pad(plaintext: bytes, block_size: int, pad_rng: Random | None = None) -> bytes:
    """Payloads | Padding | Pad Length, a multiple of `block_size` octets."""
    pad_length = -(len(plaintext) + 1) % block_size
    padding = pad_rng(pad_length) if pad_rng is not None else bytes(pad_length)
    return plaintext + padding + bytes([pad_length])


def decrypt_message(
    raw: bytes,
    message: Message,
    cipher: IkeCipher,
    sk_e: bytes,
    sk_a: bytes,
    limits: CodecLimits = DEFAULT_LIMITS,
) -> Message:
    """`message` (parsed from `raw`) with its SK contents decrypted.

    The result holds the inner payloads and has `encrypted=True`. Before
    SK, only unknown non-critical payloads (skipped, RFC 7296 §2.5) are
    tolerated: no exchange defines other unencrypted payloads beside SK.
    """
    encrypted = encrypted_payload(message)
    if not isinstance(encrypted, EncryptedPayload):
        raise drop("not-encrypted")
    plaintext = open_encrypted(raw, encrypted.body, cipher, sk_e, sk_a)
    inner = parse_payloads(encrypted.first_inner, plaintext, limits)
    return Message(header=message.header, payloads=inner, encrypted=True, raw=raw)


def encrypted_payload(message: Message) -> Payload:
    """The SK or SKF payload ending `message`, after ignorable payloads only."""
    if not message.payloads:
        raise drop("not-encrypted")
    *leading, last = message.payloads
    if not all(isinstance(p, UnknownPayload) for p in leading):
        raise drop("unencrypted-payload")
    return last


def open_encrypted(
    raw: bytes, body: bytes, cipher: IkeCipher, sk_e: bytes, sk_a: bytes
) -> bytes:
    """The inner payload octets of the SK/SKF payload ending `raw`.

    `body` is that payload's IV | ciphertext | ICV; everything in `raw`
    before it is the associated data.
    """
    ciphertext_size = len(body) - cipher.iv_size - cipher.icv_size
    if ciphertext_size < 1 or ciphertext_size % cipher.block_size:
        raise drop("bad-length")
    aad = raw[: len(raw) - len(body)]
    iv, sealed = body[: cipher.iv_size], body[cipher.iv_size :]
    try:
        padded = cipher.open(sk_e, sk_a, iv, aad, sealed)
    except CryptoError:
        raise drop("icv") from None

    # RFC 7296 §3.14: accept any Pad Length that fits.
    pad_length = padded[-1] if padded else len(padded)
    if pad_length + 1 > len(padded):
        raise drop("padding")
    return padded[: len(padded) - pad_length - 1]


def intauth_octets(raw: bytes, inner_plaintext: bytes) -> tuple[bytes, bytes]:
    """(A, P) of one IKE_INTERMEDIATE message for IntAuth (RFC 9242 §3.3.2).

    `raw` is the message as sent or received without the non-ESP marker;
    when it was fragmented, `raw` is fragment number 1. `inner_plaintext`
    is the decrypted (reassembled) inner payload octets, without IV,
    padding, Pad Length or ICV.

    A runs from the IKE header through the Encrypted payload's generic
    header, with the header's Length set to len(A) + len(P) and the
    Encrypted payload's Length to len(P) + 4; an SKF becomes SK and loses
    its Fragment Number and Total Fragments. P is `inner_plaintext`.
    """
    field, offset = _encrypted_payload_offset(raw)
    if raw[field] == PayloadType.SKF:
        number = int.from_bytes(raw[offset + 4 : offset + 6], "big")
        if number != 1:
            raise drop("not-first-fragment")

    head = bytearray(raw[:offset])
    head[field] = PayloadType.SK
    sk_length = GENERIC_PAYLOAD_HEADER_SIZE + len(inner_plaintext)
    total = offset + sk_length
    head[_LENGTH_OFFSET:IKE_HEADER_SIZE] = struct.pack("!I", total)
    sk_header = bytes([raw[offset], raw[offset + 1]])
    sk_header += struct.pack("!H", sk_length)
    return bytes(head) + sk_header, inner_plaintext


def _encrypted_payload_offset(raw: bytes) -> tuple[int, int]:
    """(where the Next Payload field naming it sits, where it starts) of the
    SK or SKF payload: a walk along the generic payload headers, which a
    parse of the message has checked (RFC 7296 §3.14: it is the last)."""
    field, offset = _NEXT_PAYLOAD_OFFSET, IKE_HEADER_SIZE
    while offset + GENERIC_PAYLOAD_HEADER_SIZE <= len(raw):
        if raw[field] in (PayloadType.SK, PayloadType.SKF):
            return field, offset
        length = int.from_bytes(raw[offset + 2 : offset + 4], "big")
        if length < GENERIC_PAYLOAD_HEADER_SIZE:
            break
        field, offset = offset, offset + length
    raise drop("not-encrypted")
