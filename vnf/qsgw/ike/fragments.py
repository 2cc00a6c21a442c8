"""IKE message fragmentation and reassembly (RFC 7383).

`fragment_message` splits a message's inner payload octets into Encrypted
Fragment (SKF) messages, each protected on its own, so that every whole IP
datagram stays within a size limit. `Reassembler` collects the fragments of
one message (one per IKE SA and Message ID) and hands back the inner payload
octets once all have arrived.

Every violation is a silent drop (RFC 7383 §2.6): fragments carry no answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from qsgw.crypto.api import IkeCipher, Random
from qsgw.ike.codec import DEFAULT_LIMITS, CodecLimits, encode_payloads, parse_payloads
from qsgw.ike.constants import (
    GENERIC_PAYLOAD_HEADER_SIZE,
    IKE_HEADER_SIZE,
    NON_ESP_MARKER,
    ExchangeType,
)
from qsgw.ike.errors import drop
from qsgw.ike.payloads import EncryptedFragmentPayload, IkeHeader, Message, Payload
from qsgw.ike.protection import encrypted_payload, open_encrypted, seal

UDP_HEADER_SIZE = 8
IP_HEADER_SIZES = {4: 20, 6: 40}
SKF_OVERHEAD = GENERIC_PAYLOAD_HEADER_SIZE + 4  # + Fragment Number, Total
MAX_FRAGMENTS = 255  # strongSwan's cap; the field allows 65535
MAX_REASSEMBLED_SIZE = 65536


def fragment_message(
    header: IkeHeader,
    inner_payloads: Iterable[Payload],
    cipher: IkeCipher,
    sk_e: bytes,
    sk_a: bytes,
    max_datagram_size: int,
    ip_version: int,
    iv_source: Random,
    *,
    non_esp_marker: bool = False,
    pad_rng: Random | None = None,
) -> list[bytes]:
    """The SKF messages (without non-ESP marker) carrying `inner_payloads`.

    `max_datagram_size` bounds the whole IP datagram: IP and UDP headers,
    the non-ESP marker when sent on port 4500, and the IKE message (as
    strongSwan counts its `fragment_size`). `iv_source(n)` gives each
    fragment's IV; for AEAD ciphers it must never repeat under a key.
    """
    if header.exchange == ExchangeType.IKE_SA_INIT:
        raise ValueError("IKE_SA_INIT cannot be fragmented (RFC 7383 §2.5)")
    first_inner, plaintext = encode_payloads(inner_payloads)
    room = fragment_room(cipher, max_datagram_size, ip_version, non_esp_marker)
    chunks = [plaintext[i : i + room] for i in range(0, len(plaintext), room)]
    chunks = chunks or [b""]
    if len(chunks) > MAX_FRAGMENTS:
        raise ValueError("message needs more than 255 fragments")

    total = len(chunks)
    return [
        seal(
            header,
            first_inner if number == 1 else 0,
            chunk,
            cipher,
            sk_e,
            sk_a,
            iv_source(cipher.iv_size),
            pad_rng,
            fragment=(number, total),
        )
        for number, chunk in enumerate(chunks, start=1)
    ]


def fragment_room(
    cipher: IkeCipher, max_datagram_size: int, ip_version: int, non_esp_marker: bool
) -> int:
    """How many inner payload octets fit in one fragment."""
    room = _room(cipher, max_datagram_size, ip_version, non_esp_marker, SKF_OVERHEAD)
    if room < 1:
        raise ValueError("datagram size too small for a fragment")
    return room


def message_room(
    cipher: IkeCipher, max_datagram_size: int, ip_version: int, non_esp_marker: bool
) -> int:
    """How many inner payload octets fit in one unfragmented SK message.

    RFC 7383 §2.5: only a message that does not fit is fragmented; an SK
    payload has no Fragment Number and Total, so it holds 4 octets more.
    """
    overhead = GENERIC_PAYLOAD_HEADER_SIZE
    return _room(cipher, max_datagram_size, ip_version, non_esp_marker, overhead)


def _room(
    cipher: IkeCipher,
    max_datagram_size: int,
    ip_version: int,
    non_esp_marker: bool,
    encrypted_header_size: int,
) -> int:
    overhead = IP_HEADER_SIZES[ip_version] + UDP_HEADER_SIZE
    overhead += len(NON_ESP_MARKER) if non_esp_marker else 0
    overhead += IKE_HEADER_SIZE + encrypted_header_size
    overhead += cipher.iv_size + cipher.icv_size
    # RFC 7296 §3.14: content | padding | Pad Length fill whole blocks.
    blocks = (max_datagram_size - overhead) // cipher.block_size
    return blocks * cipher.block_size - 1


@dataclass(frozen=True, slots=True)
class ReassemblyLimits:
    """Caps on what one fragmented message may make us keep."""

    max_fragments: int = MAX_FRAGMENTS
    max_size: int = MAX_REASSEMBLED_SIZE


@dataclass(frozen=True, slots=True)
class Reassembled:
    """A complete message: its inner payload octets and first payload type.

    `first_fragment` is the raw fragment number 1, which IntAuth needs
    (`qsgw.ike.protection.intauth_octets`).
    """

    header: IkeHeader
    first_inner: int
    plaintext: bytes
    first_fragment: bytes = field(repr=False)

    def message(self, limits: CodecLimits = DEFAULT_LIMITS) -> Message:
        """The decrypted message; its header is fragment 1's."""
        payloads = parse_payloads(self.first_inner, self.plaintext, limits)
        return Message(
            header=self.header,
            payloads=payloads,
            encrypted=True,
            raw=self.first_fragment,
        )


class Reassembler:
    """The fragments of one message (one IKE SA, one Message ID).

    RFC 7383 §2.6: each fragment's ICV is verified before it is stored
    (`add_protected`); a Fragment Number outside 1..Total Fragments is
    dropped; a larger Total Fragments than the one being collected starts
    the reassembly over (the sender retransmitted with smaller fragments),
    a smaller one is dropped; duplicates are ignored.
    """

    def __init__(self, limits: ReassemblyLimits | None = None) -> None:
        self._limits = limits or ReassemblyLimits()
        self._total = 0
        self._parts: dict[int, bytes] = {}
        self._size = 0
        self._first: tuple[IkeHeader, int, bytes] | None = None
        self._key: tuple[int, int, bool] | None = None
        self._done = False

    @property
    def complete(self) -> bool:
        return self._done

    @property
    def total_fragments(self) -> int:
        return self._total

    @property
    def received(self) -> int:
        return len(self._parts)

    def add_protected(
        self,
        raw: bytes,
        message: Message,
        cipher: IkeCipher,
        sk_e: bytes,
        sk_a: bytes,
    ) -> Reassembled | None:
        """Verify and decrypt one fragment message, then `add` it."""
        fragment = _only_fragment(message)
        self._check_numbers(message.header, fragment)
        if self._is_duplicate(fragment):
            return None
        plaintext = open_encrypted(raw, fragment.body, cipher, sk_e, sk_a)
        return self.add(message.header, fragment, plaintext, raw)

    def add(
        self,
        header: IkeHeader,
        fragment: EncryptedFragmentPayload,
        plaintext: bytes,
        raw: bytes = b"",
    ) -> Reassembled | None:
        """Store an already verified fragment; the message once complete.

        Returns None while fragments are missing, for duplicates and for
        fragments of a message already reassembled.
        """
        self._check_numbers(header, fragment)
        if self._is_duplicate(fragment):
            return None
        if fragment.total_fragments > self._total:
            self._restart(fragment.total_fragments)
        self._key = _key(header)

        self._size += len(plaintext)
        if self._size > self._limits.max_size:
            self._restart(0)
            raise drop("reassembly-size")
        self._parts[fragment.fragment_number] = plaintext
        if fragment.fragment_number == 1:
            self._first = (header, fragment.first_inner, raw)
        return self._finish()

    def _check_numbers(
        self, header: IkeHeader, fragment: EncryptedFragmentPayload
    ) -> None:
        number, total = fragment.fragment_number, fragment.total_fragments
        if not 1 <= number <= total:
            raise drop("fragment-number")
        if total > self._limits.max_fragments:
            raise drop("too-many-fragments")
        if total < self._total:
            raise drop("fragment-total")
        if self._key is not None and _key(header) != self._key:
            raise drop("fragment-header")

    def _is_duplicate(self, fragment: EncryptedFragmentPayload) -> bool:
        if self._done:
            return True
        same_total = fragment.total_fragments == self._total
        return same_total and fragment.fragment_number in self._parts

    def _restart(self, total: int) -> None:
        self._total = total
        self._parts.clear()
        self._size = 0
        self._first = None

    def _finish(self) -> Reassembled | None:
        if len(self._parts) < self._total or self._first is None:
            return None
        header, first_inner, raw = self._first
        plaintext = b"".join(self._parts[n] for n in range(1, self._total + 1))
        self._done = True
        self._parts.clear()
        return Reassembled(header, first_inner, plaintext, raw)


def _key(header: IkeHeader) -> tuple[int, int, bool]:
    return int(header.exchange), header.message_id, header.is_response


def _only_fragment(message: Message) -> EncryptedFragmentPayload:
    fragment = encrypted_payload(message)
    if not isinstance(fragment, EncryptedFragmentPayload):
        raise drop("not-a-fragment")
    return fragment
