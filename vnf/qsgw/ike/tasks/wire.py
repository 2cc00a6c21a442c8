"""Messages of one IKE SA on the wire: SK protection and IKE fragmentation.

Sealing encrypts the inner payloads into SK (RFC 7296 §3.14), or into SKF
fragments (RFC 7383 §2.5, `qsgw.ike.fragments`) when the peer announced
IKEV2_FRAGMENTATION_SUPPORTED and the IP datagram would exceed the
connection's `fragment_size`. Opening verifies and decrypts SK, or hands
SKF fragments to the IKE SA's `Reassembler` until the message is whole
(RFC 7383 §2.6). Both keep what IKE_INTERMEDIATE needs for the RFC 9242
§3.3.2 "A" and "P" octets of IntAuth, which
`qsgw.ike.protection.intauth_octets` cuts from the raw octets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qsgw.ike import fragments, protection
from qsgw.ike.codec import (
    CodecLimits,
    encode_message,
    encode_payloads,
    parse_message,
    parse_payloads,
)
from qsgw.ike.constants import NAT_T_PORT, ExchangeType
from qsgw.ike.errors import drop
from qsgw.ike.fragments import Reassembler, ReassemblyLimits
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


@dataclass(frozen=True, slots=True)
class Sealed:
    """A sealed message: its datagrams and its inner payload octets."""

    datagrams: list[bytes]
    plaintext: bytes = field(repr=False)

    def intauth_octets(self) -> tuple[bytes, bytes]:
        """RFC 9242 §3.3.2: A and P, as if the message were not fragmented."""
        return protection.intauth_octets(self.datagrams[0], self.plaintext)


AfterSeal = Callable[[Sealed], None]


@dataclass(frozen=True, slots=True)
class Reply:
    """A responder's answer and what to do once it is sealed."""

    payloads: list[Payload]
    after: AfterSeal | None = None


def exchange_name(exchange: int | None) -> str:
    if exchange is None:
        return ""
    name = _EXCHANGE_NAMES.get(exchange)
    return name if name is not None else str(exchange)


# several events per message name their exchange: no enum call each time
_EXCHANGE_NAMES = {int(e): e.name for e in ExchangeType}


@dataclass(frozen=True, slots=True)
class Opened:
    """A decrypted message (inner payloads), with what IntAuth needs: the
    raw message, or fragment number 1, and the inner payload octets."""

    message: Message
    first_datagram: bytes = field(repr=False)
    plaintext: bytes = field(repr=False)

    def intauth_octets(self) -> tuple[bytes, bytes]:
        """RFC 9242 §3.3.2: A and P, as if the message were not fragmented."""
        return protection.intauth_octets(self.first_datagram, self.plaintext)


def _limits(engine: IkeEngine) -> CodecLimits:
    return CodecLimits(max_message_size=engine.settings.max_message_size)


def parse(engine: IkeEngine, data: bytes) -> Message:
    return parse_message(data, _limits(engine))


def encode_plain(header: IkeHeader, payloads: Sequence[Payload]) -> bytes:
    return encode_message(header, payloads)


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


# ------------------------------------------------------------------ sealing


def seal(
    engine: IkeEngine, sa: IkeSa, header: IkeHeader, payloads: Sequence[Payload]
) -> Sealed:
    """The datagrams that carry `payloads` protected under `sa`'s keys."""
    cipher = sa.cipher
    assert cipher is not None
    sk_e, sk_a = _keys_out(sa)
    first_inner, plaintext = encode_payloads(payloads)
    datagrams = _fragments(engine, sa, header, payloads, len(plaintext))
    if datagrams is None:
        iv = engine.rng(cipher.iv_size)
        message = protection.seal(
            header, first_inner, plaintext, cipher, sk_e, sk_a, iv
        )
        datagrams = [message]
    return Sealed(datagrams, plaintext)


def _fragments(
    engine: IkeEngine,
    sa: IkeSa,
    header: IkeHeader,
    payloads: Sequence[Payload],
    size: int,
) -> list[bytes] | None:
    """RFC 7383 §2.5: SKF fragments when both sides support them and the
    `size` octets of inner payloads would not fit `fragment_size`; None
    for a single SK message."""
    spec, cipher = sa.connection, sa.cipher
    if not (spec.fragmentation and sa.peer_fragmentation) or cipher is None:
        return None
    marker = sa.udp_encapsulation or NAT_T_PORT in (sa.local[1], sa.remote[1])
    ip_version = sa.remote[0].version
    room = fragments.message_room(cipher, spec.fragment_size, ip_version, marker)
    if size <= room:
        return None
    sk_e, sk_a = _keys_out(sa)
    return fragments.fragment_message(
        header,
        payloads,
        cipher,
        sk_e,
        sk_a,
        spec.fragment_size,
        ip_version,
        engine.rng,
        non_esp_marker=marker,
    )


# ------------------------------------------------------------------ opening


def open_message(
    engine: IkeEngine, sa: IkeSa, raw: bytes, message: Message
) -> Opened | None:
    """The decrypted message, or None while fragments are still missing.

    Raises ProtocolError: silent drops for anything unauthenticated, the
    RFC's notify for errors inside the authenticated contents.
    """
    if len(message.payloads) != 1:
        raise drop("unencrypted-payload")
    if sa.cipher is None or sa.keys is None:
        raise drop("no-keys")
    payload = message.payloads[0]
    if isinstance(payload, EncryptedPayload):
        return _open_sk(engine, sa, raw, message, payload)
    if isinstance(payload, EncryptedFragmentPayload):
        return _open_skf(engine, sa, raw, message)
    raise drop("not-encrypted")


def _open_sk(
    engine: IkeEngine,
    sa: IkeSa,
    raw: bytes,
    message: Message,
    payload: EncryptedPayload,
) -> Opened:
    cipher = sa.cipher
    assert cipher is not None
    sk_e, sk_a = _keys_in(sa)
    plaintext = protection.open_encrypted(raw, payload.body, cipher, sk_e, sk_a)
    inner = parse_payloads(payload.first_inner, plaintext, _limits(engine))
    opened = Message(header=message.header, payloads=inner, encrypted=True, raw=raw)
    return Opened(opened, raw, plaintext)


def _open_skf(
    engine: IkeEngine, sa: IkeSa, raw: bytes, message: Message
) -> Opened | None:
    """RFC 7383 §2.6: each fragment is verified before it is kept."""
    if not sa.connection.fragmentation:
        raise drop("fragment-unsupported")
    cipher = sa.cipher
    assert cipher is not None
    sk_e, sk_a = _keys_in(sa)
    reassembler = _reassembler(engine, sa, message.header)
    whole = reassembler.add_protected(raw, message, cipher, sk_e, sk_a)
    if whole is None:
        return None

    opened = whole.message(_limits(engine))
    return Opened(opened, whole.first_fragment, whole.plaintext)


def _reassembler(engine: IkeEngine, sa: IkeSa, header: IkeHeader) -> Reassembler:
    """The collection for this direction; a fragment of another Message ID
    starts a new one (only one message per direction is ever in flight).
    A completed collection stays until then, so that late duplicates of
    its fragments are ignored (RFC 7383 §2.6)."""
    current = sa.reassembly.get(header.is_response)
    if current is not None and current[0] == header.message_id:
        return current[1]
    limits = ReassemblyLimits(max_size=engine.settings.max_message_size)
    fresh = Reassembler(limits)
    sa.reassembly[header.is_response] = (header.message_id, fresh)
    return fresh


def is_later_fragment(message: Message) -> bool:
    """Whether this is an SKF fragment other than number 1 (retransmitted
    requests are answered once, on fragment 1)."""
    payload = message.payloads[0] if message.payloads else None
    return (
        isinstance(payload, EncryptedFragmentPayload) and payload.fragment_number != 1
    )
