"""Messages of one IKE SA on the wire: SK protection and IKE fragmentation.

Sealing encrypts the inner payloads into SK (RFC 7296 §3.14), or into SKF
fragments (RFC 7383 §2.5) when the peer announced
IKEV2_FRAGMENTATION_SUPPORTED and the IP datagram would exceed the
connection's `fragment_size`. Opening verifies and decrypts SK, or collects
SKF fragments until the message is whole (RFC 7383 §2.6). Both also return
the RFC 9242 §3.3.2 "A" and "P" octets that IKE_INTERMEDIATE feeds into
IntAuth.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from qsgw.ike import protection
from qsgw.ike.codec import (
    CodecLimits,
    encode_header,
    encode_message,
    encode_payloads,
    parse_message,
    parse_payloads,
)
from qsgw.ike.constants import (
    GENERIC_PAYLOAD_HEADER_SIZE,
    IKE_HEADER_SIZE,
    NAT_T_PORT,
    ExchangeType,
    PayloadType,
)
from qsgw.ike.errors import drop
from qsgw.ike.payloads import (
    EncryptedFragmentPayload,
    EncryptedPayload,
    IkeHeader,
    Message,
    Payload,
)
from qsgw.ike.sa import IkeSa

if TYPE_CHECKING:
    from qsgw.ike.engine import IkeEngine

UDP_HEADER_SIZE = 8
NON_ESP_MARKER_SIZE = 4
IP_HEADER_SIZE = {4: 20, 6: 40}
# RFC 7383 §2.5: Fragment Number and Total Fragments
FRAGMENT_FIELDS_SIZE = 4
# limits on what a peer may make us collect (strongSwan: 255 fragments)
MAX_FRAGMENTS = 255


@dataclass(frozen=True, slots=True)
class Sealed:
    """A sealed message: its datagrams and its IntAuth A and P octets."""

    datagrams: list[bytes]
    a_octets: bytes
    p_octets: bytes


AfterSeal = Callable[[Sealed], None]


@dataclass(frozen=True, slots=True)
class Reply:
    """A responder's answer and what to do once it is sealed."""

    payloads: list[Payload]
    after: AfterSeal | None = None


def exchange_name(exchange: int | None) -> str:
    if exchange is None:
        return ""
    try:
        return ExchangeType(exchange).name
    except ValueError:
        return str(exchange)


@dataclass(frozen=True, slots=True)
class Opened:
    """A decrypted message (inner payloads) with its IntAuth octets."""

    message: Message
    a_octets: bytes
    p_octets: bytes


@dataclass
class Reassembly:
    """SKF fragments of one message being collected (RFC 7383 §2.6)."""

    message_id: int
    response: bool
    total: int
    first_inner: int = 0
    header: IkeHeader | None = None
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


def parse(engine: IkeEngine, data: bytes) -> Message:
    limits = CodecLimits(max_message_size=engine.settings.max_message_size)
    return parse_message(data, limits)


def encode_plain(header: IkeHeader, payloads: Sequence[Payload]) -> bytes:
    return encode_message(header, payloads)


def intauth_a(header: IkeHeader, first_inner: int, p_size: int) -> bytes:
    """RFC 9242 §3.3.2: the IKE header and SK generic header with the
    lengths of an unfragmented message holding exactly P."""
    sk_length = GENERIC_PAYLOAD_HEADER_SIZE + p_size
    head = encode_header(header, PayloadType.SK, IKE_HEADER_SIZE + sk_length)
    return head + struct.pack("!BBH", first_inner, 0, sk_length)


def _keys_out(sa: IkeSa) -> tuple[bytes, bytes]:
    keys = sa.keys
    assert keys is not None
    if sa.initiator:
        return keys.sk_ei, keys.sk_ai
    return keys.sk_er, keys.sk_ar


def _keys_in(sa: IkeSa) -> tuple[bytes, bytes]:
    keys = sa.keys
    assert keys is not None
    if sa.initiator:
        return keys.sk_er, keys.sk_ar
    return keys.sk_ei, keys.sk_ai


def seal(
    engine: IkeEngine, sa: IkeSa, header: IkeHeader, payloads: Sequence[Payload]
) -> Sealed:
    """The datagrams that carry `payloads` protected under `sa`'s keys."""
    cipher = sa.cipher
    assert cipher is not None
    first_inner, plaintext = encode_payloads(payloads)
    a_octets = intauth_a(header, first_inner, len(plaintext))
    sk_e, sk_a = _keys_out(sa)

    room = _fragment_room(sa)
    if room is not None and len(plaintext) > room:
        datagrams = _fragments(engine, sa, header, first_inner, plaintext, room)
        return Sealed(datagrams, a_octets, plaintext)

    iv = engine.rng(cipher.iv_size)
    data = protection.seal(header, first_inner, plaintext, cipher, sk_e, sk_a, iv)
    return Sealed([data], a_octets, plaintext)


def _fragment_room(sa: IkeSa) -> int | None:
    """Plaintext octets that fit one SKF fragment, or None when we must not
    fragment (RFC 7383 §2.3: only when both sides announced support)."""
    spec = sa.connection
    cipher = sa.cipher
    if not (spec.fragmentation and sa.peer_fragmentation) or cipher is None:
        return None
    overhead = IP_HEADER_SIZE[sa.remote[0].version] + UDP_HEADER_SIZE
    if sa.udp_encapsulation or NAT_T_PORT in (sa.local[1], sa.remote[1]):
        overhead += NON_ESP_MARKER_SIZE
    overhead += IKE_HEADER_SIZE + GENERIC_PAYLOAD_HEADER_SIZE
    overhead += FRAGMENT_FIELDS_SIZE + cipher.iv_size + cipher.icv_size
    # the worst case of padding plus the Pad Length octet
    overhead += cipher.block_size
    return max(spec.fragment_size - overhead, 64)


def _fragments(
    engine: IkeEngine,
    sa: IkeSa,
    header: IkeHeader,
    first_inner: int,
    plaintext: bytes,
    room: int,
) -> list[bytes]:
    """RFC 7383 §2.5: SKF fragments, the first naming the first payload."""
    cipher = sa.cipher
    assert cipher is not None
    sk_e, sk_a = _keys_out(sa)
    chunks = [plaintext[i : i + room] for i in range(0, len(plaintext), room)]
    out: list[bytes] = []
    for number, chunk in enumerate(chunks, start=1):
        inner = first_inner if number == 1 else PayloadType.NONE
        iv = engine.rng(cipher.iv_size)
        fragment = (number, len(chunks))
        out.append(
            protection.seal(
                header, inner, chunk, cipher, sk_e, sk_a, iv, fragment=fragment
            )
        )
    return out


def open_message(
    engine: IkeEngine, sa: IkeSa, raw: bytes, message: Message
) -> Opened | None:
    """The decrypted message, or None while fragments are still missing.

    Raises ProtocolError: silent drops for anything unauthenticated, the
    RFC's notify for errors inside the authenticated contents.
    """
    if len(message.payloads) != 1:
        raise drop("unencrypted-payload")
    payload = message.payloads[0]
    if isinstance(payload, EncryptedPayload):
        return _open_sk(engine, sa, raw, message, payload)
    if isinstance(payload, EncryptedFragmentPayload):
        return _open_skf(engine, sa, raw, message, payload)
    raise drop("not-encrypted")


def _open_sk(
    engine: IkeEngine,
    sa: IkeSa,
    raw: bytes,
    message: Message,
    payload: EncryptedPayload,
) -> Opened:
    cipher = sa.cipher
    if cipher is None or sa.keys is None:
        raise drop("no-keys")
    sk_e, sk_a = _keys_in(sa)
    plaintext = protection.open_encrypted(raw, payload.body, cipher, sk_e, sk_a)
    return _inner(engine, message.header, payload.first_inner, plaintext, raw)


def _inner(
    engine: IkeEngine,
    header: IkeHeader,
    first_inner: int,
    plaintext: bytes,
    raw: bytes,
) -> Opened:
    limits = CodecLimits(max_message_size=engine.settings.max_message_size)
    inner = parse_payloads(first_inner, plaintext, limits)
    message = Message(header=header, payloads=inner, encrypted=True, raw=raw)
    a_octets = intauth_a(header, first_inner, len(plaintext))
    return Opened(message, a_octets, plaintext)


def _open_skf(
    engine: IkeEngine,
    sa: IkeSa,
    raw: bytes,
    message: Message,
    payload: EncryptedFragmentPayload,
) -> Opened | None:
    """RFC 7383 §2.6: verify each fragment, then keep it until all are in."""
    cipher = sa.cipher
    if cipher is None or sa.keys is None:
        raise drop("no-keys")
    if not sa.connection.fragmentation:
        raise drop("fragment-unsupported")
    number, total = payload.fragment_number, payload.total_fragments
    if not 1 <= number <= total or total > MAX_FRAGMENTS:
        raise drop("fragment-number")

    sk_e, sk_a = _keys_in(sa)
    chunk = protection.open_encrypted(raw, payload.body, cipher, sk_e, sk_a)
    collecting = _reassembly(sa, message.header, total)
    if collecting is None:
        raise drop("fragment-total")
    if number in collecting.parts:
        return None  # a duplicate: RFC 7383 §2.6 says ignore it

    collecting.parts[number] = chunk
    collecting.size += len(chunk)
    if number == 1:
        collecting.first_inner = payload.first_inner
        collecting.header = message.header
    if collecting.size > engine.settings.max_message_size:
        sa.reassembly.pop(collecting.response, None)
        raise drop("fragment-size")
    if len(collecting.parts) < collecting.total:
        return None

    sa.reassembly.pop(collecting.response, None)
    plaintext = b"".join(collecting.parts[n] for n in range(1, total + 1))
    header = replace(collecting.header or message.header, next_payload=PayloadType.SK)
    return _inner(engine, header, collecting.first_inner, plaintext, raw)


def _reassembly(sa: IkeSa, header: IkeHeader, total: int) -> Reassembly | None:
    """The collection this fragment belongs to; a fragment of a newer
    message, or with a larger total (RFC 7383 §2.6.2: a retransmission
    fragmented anew), starts over."""
    current = sa.reassembly.get(header.is_response)
    key = (header.message_id, header.is_response)
    if (
        isinstance(current, Reassembly)
        and (current.message_id, current.response) == key
    ):
        if total == current.total:
            return current
        if total < current.total:
            return None
    fresh = Reassembly(header.message_id, header.is_response, total)
    sa.reassembly[header.is_response] = fresh
    return fresh


def is_later_fragment(message: Message) -> bool:
    """Whether this is an SKF fragment other than number 1 (retransmitted
    requests are answered once, on fragment 1)."""
    payload = message.payloads[0] if message.payloads else None
    return (
        isinstance(payload, EncryptedFragmentPayload) and payload.fragment_number != 1
    )
