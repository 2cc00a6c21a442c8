"""ESP packet processing for one SA (RFC 4303), free of sockets and clocks.

`OutboundSa.encapsulate` turns an inner packet into an ESP packet,
`InboundSa.decapsulate` turns one back. Both work on the ESP packet alone
(SPI through ICV): the outer IP or UDP header belongs to the caller.

    SPI | Sequence Number | IV | ciphertext(payload | padding |
    Pad Length | Next Header) | ICV

The IV of the AEAD transforms (RFC 4106 §3.1, RFC 7634 §2) is the 64-bit
sequence number, which never repeats under one key; AES-CBC takes a fresh
random IV per packet (RFC 3602 §2.3). With ESN (RFC 4303 §2.2.1) only the
low 32 bits travel; the receiver infers the high 32 bits (Appendix A2.2)
and both enter the AAD. The anti-replay window moves only after the ICV has
verified (RFC 4303 §3.4.3).
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from qsgw.crypto.api import EspCipher, IntegrityError, Random

IPPROTO_IPIP = 4  # IPv4 in ESP (tunnel mode)
IPPROTO_IPV6 = 41  # IPv6 in ESP (tunnel mode)
ESP_HEADER_SIZE = 8  # SPI and Sequence Number
MAX_SEQUENCE_32 = 2**32 - 1
MAX_SEQUENCE_64 = 2**64 - 1
MAX_REPLAY_WINDOW = 65536

_HEADER = struct.Struct(">II")
_ESN_AAD = struct.Struct(">III")
_IV64 = struct.Struct(">Q")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from
_pack_esn_aad = _ESN_AAD.pack
_pack_iv64 = _IV64.pack
_LOW32 = 0xFFFFFFFF
_HIGH32 = _LOW32 << 32
_PADDING = bytes(range(1, 256))
_PADDINGS = tuple(_PADDING[:n] for n in range(256))  # by Pad Length


class EspError(Exception):
    """A received ESP packet was dropped; the message names no secret."""


class MalformedPacket(EspError):
    """Too short, bad padding or Pad Length, or an unexpected Next Header."""


class ReplayedPacket(EspError):
    """Seen before, or older than the anti-replay window (RFC 4303 §3.4.3)."""


class IntegrityFailed(EspError):
    """The ICV did not verify (RFC 4303 §3.4.4)."""


class SequenceExhausted(EspError):
    """The outbound counter would cycle (RFC 4303 §3.3.3): rekey first."""


class LifetimeEvent(enum.Enum):
    SOFT = "soft"
    HARD = "hard"
    SEQUENCE_EXHAUSTION = "sequence-exhaustion"


LifetimeListener = Callable[[LifetimeEvent], None]


@dataclass(frozen=True, slots=True)
class VolumeLimits:
    """Soft and hard byte and packet limits of one SA; 0 means none."""

    soft_bytes: int = 0
    hard_bytes: int = 0
    soft_packets: int = 0
    hard_packets: int = 0


class _Volume:
    """Counts packets and bytes and reports each limit once."""

    __slots__ = (
        "_hard_fired",
        "_limits",
        "_listener",
        "_soft_fired",
        "bytes",
        "next_bytes",
        "next_packets",
        "packets",
    )

    def __init__(self, limits: VolumeLimits, listener: LifetimeListener) -> None:
        self._limits = limits
        self._listener = listener
        self._soft_fired = False
        self._hard_fired = False
        self.bytes = 0
        self.packets = 0
        self._arm()

    def limit_reached(self) -> None:
        """Called by the hot path when a threshold may have been crossed."""
        limits = self._limits
        if not self._soft_fired and _crossed(
            self, limits.soft_bytes, limits.soft_packets
        ):
            self._soft_fired = True
            self._listener(LifetimeEvent.SOFT)
        if not self._hard_fired and _crossed(
            self, limits.hard_bytes, limits.hard_packets
        ):
            self._hard_fired = True
            self._listener(LifetimeEvent.HARD)
        self._arm()

    def _arm(self) -> None:
        limits = self._limits
        pending_bytes = [limits.hard_bytes] if not self._hard_fired else []
        pending_packets = [limits.hard_packets] if not self._hard_fired else []
        if not self._soft_fired:
            pending_bytes.append(limits.soft_bytes)
            pending_packets.append(limits.soft_packets)
        self.next_bytes = _lowest_limit(pending_bytes, self.bytes)
        self.next_packets = _lowest_limit(pending_packets, self.packets)


def _crossed(volume: _Volume, byte_limit: int, packet_limit: int) -> bool:
    over_bytes = byte_limit and volume.bytes >= byte_limit
    over_packets = packet_limit and volume.packets >= packet_limit
    return bool(over_bytes or over_packets)


def _lowest_limit(limits: list[int], current: int) -> int:
    future = [limit for limit in limits if limit > current]
    return min(future) if future else 2**63


def _no_listener(event: LifetimeEvent) -> None:
    del event


class ReplayWindow:
    """The RFC 4303 §3.4.3 sliding window, with ESN inference (Appendix A).

    `top` is the highest sequence number verified so far (T in Appendix A);
    bit i of the bitmap stands for sequence number `top - i`.
    """

    __slots__ = ("_bitmap", "_mask", "esn", "size", "top")

    def __init__(self, size: int, *, esn: bool) -> None:
        if not 0 <= size <= MAX_REPLAY_WINDOW:
            raise ValueError(f"replay window must be 0..{MAX_REPLAY_WINDOW}")
        if esn and size == 0:
            # RFC 4303 §2.2.1: inferring Seq-High needs the window
            raise ValueError("ESN needs an anti-replay window")
        self.size = size
        self.esn = esn
        self.top = 0
        self._bitmap = 0
        self._mask = (1 << size) - 1

    def infer(self, low: int) -> int:
        """The full sequence number for the 32 transmitted bits."""
        if not self.esn:
            return low
        top_low, top_high = self.top & _LOW32, self.top >> 32
        bottom_low = (top_low - self.size + 1) & _LOW32

        # RFC 4303 A2.2, Case A: the window lies within one subspace
        if top_low >= self.size - 1:
            high = top_high if low >= bottom_low else top_high + 1
            return (high << 32) | low

        # Case B: the window spans two subspaces
        if low >= bottom_low:
            return ((top_high - 1) << 32) | low if top_high else low
        return (top_high << 32) | low

    def check(self, sequence: int) -> bool:
        """True if `sequence` is new and inside or ahead of the window."""
        if self.size == 0:
            return True
        if sequence > self.top:
            return True
        offset = self.top - sequence
        if offset >= self.size or sequence == 0:
            return False
        return not (self._bitmap >> offset) & 1

    def advance(self) -> None:
        """`update(top + 1)`: the next packet in order (size > 0)."""
        self._bitmap = ((self._bitmap << 1) | 1) & self._mask
        self.top += 1

    def update(self, sequence: int) -> None:
        """Mark `sequence` as received; call only after the ICV verified."""
        if self.size == 0:
            self.top = max(self.top, sequence)
            return
        if sequence > self.top:
            shift = sequence - self.top
            bitmap = 1 if shift >= self.size else (self._bitmap << shift) | 1
            self._bitmap = bitmap & self._mask
            self.top = sequence
            return
        self._bitmap |= 1 << (self.top - sequence)


def esp_trailer(length: int, block_size: int, next_header: int) -> bytes:
    """Padding | Pad Length | Next Header for a `length`-octet payload: the
    least padding that aligns the trailer's end to `block_size` (RFC 4303
    §2.4: padding octets are 1, 2, 3, ...)."""
    pad_length = (-(length + 2)) % block_size
    return _PADDING[:pad_length] + bytes((pad_length, next_header))


def _trailers(block_size: int, next_header: int) -> list[bytes]:
    """The trailers indexed by payload length modulo the block size."""
    return [esp_trailer(n, block_size, next_header) for n in range(block_size)]


def seal_packet(
    cipher: EspCipher,
    spi: int,
    sequence: int,
    iv: bytes,
    payload: bytes,
    trailer: bytes,
    *,
    esn: bool,
) -> bytes:
    """SPI | Seq-Low | IV | ciphertext | ICV for an already padded payload."""
    header = _HEADER.pack(spi, sequence & _LOW32)
    aad = _aad(spi, sequence, esn=esn)
    return header + iv + cipher.seal(iv, aad, payload + trailer)


def _aad(spi: int, sequence: int, *, esn: bool) -> bytes:
    # RFC 4106 §5: SPI | Seq-High | Seq-Low with ESN, else SPI | Seq
    if esn:
        return _ESN_AAD.pack(spi, sequence >> 32, sequence & _LOW32)
    return _HEADER.pack(spi, sequence)


def parse_spi(packet: bytes) -> int:
    """The SPI of an ESP packet (the caller checked its length)."""
    spi: int = _HEADER.unpack_from(packet)[0]
    return spi


class OutboundSa:
    """The sending half of one ESP SA: sequence numbers, IVs, padding."""

    __slots__ = (
        "_aead_iv",
        "_cipher",
        "_iv_size",
        "_limit",
        "_listener",
        "_random",
        "_seal",
        "_seq_warning",
        "_trailers",
        "_volume",
        "block_size",
        "esn",
        "sequence",
        "spi",
    )

    def __init__(
        self,
        spi: int,
        cipher: EspCipher,
        *,
        esn: bool,
        limits: VolumeLimits = VolumeLimits(),
        listener: LifetimeListener = _no_listener,
        random: Random = os.urandom,
        sequence: int = 0,
        exhaustion_margin: int = 2**24,
    ) -> None:
        self.spi = spi
        self.esn = esn
        self.sequence = sequence  # the last one sent
        self.block_size = cipher.block_size
        self._cipher = cipher
        self._iv_size = cipher.iv_size
        self._aead_iv = cipher.iv_size == _IV64.size  # the sequence number
        self._seal = cipher.seal
        self._random = random
        self._listener = listener
        self._volume = _Volume(limits, listener)
        self._limit = MAX_SEQUENCE_64 if esn else MAX_SEQUENCE_32
        self._seq_warning = max(self._limit - exhaustion_margin, 1)
        self._trailers = {
            header: _trailers(self.block_size, header)
            for header in (IPPROTO_IPIP, IPPROTO_IPV6)
        }

    @property
    def packets(self) -> int:
        return self._volume.packets

    @property
    def octets(self) -> int:
        """Inner packet octets protected or verified so far."""
        return self._volume.bytes

    def encapsulate(self, inner: bytes, next_header: int) -> bytes:
        """The ESP packet carrying `inner`; SequenceExhausted rather than a
        sequence number that cycles (RFC 4303 §3.3.3)."""
        sequence = self.sequence + 1
        if sequence >= self._seq_warning:
            self._near_exhaustion(sequence)
        self.sequence = sequence

        # the hot path: seal_packet and _aad, inlined
        spi = self.spi
        low = sequence & _LOW32
        header = _pack_header(spi, low)
        aad = _pack_esn_aad(spi, sequence >> 32, low) if self.esn else header
        iv = _pack_iv64(sequence) if self._aead_iv else self._iv()
        trailer = self._trailers[next_header][len(inner) % self.block_size]
        packet = header + iv + self._seal(iv, aad, inner + trailer)

        volume = self._volume
        packets = volume.packets = volume.packets + 1
        octets = volume.bytes = volume.bytes + len(inner)
        if octets >= volume.next_bytes or packets >= volume.next_packets:
            volume.limit_reached()
        return packet

    def _iv(self) -> bytes:
        # RFC 3602 §2.3: an unpredictable IV per packet for AES-CBC
        return self._random(self._iv_size)

    def _near_exhaustion(self, sequence: int) -> None:
        if sequence > self._limit:
            raise SequenceExhausted("sequence number would cycle")
        if sequence == self._seq_warning:
            self._listener(LifetimeEvent.SEQUENCE_EXHAUSTION)


class InboundSa:
    """The receiving half of one ESP SA: ICV, anti-replay, padding."""

    __slots__ = (
        "_cipher",
        "_min_size",
        "_open",
        "_seal_offset",
        "_volume",
        "esn",
        "integrity_errors",
        "malformed",
        "replay_errors",
        "spi",
        "window",
    )

    def __init__(
        self,
        spi: int,
        cipher: EspCipher,
        *,
        esn: bool,
        replay_window: int,
        limits: VolumeLimits = VolumeLimits(),
        listener: LifetimeListener = _no_listener,
    ) -> None:
        self.spi = spi
        self.esn = esn
        self.window = ReplayWindow(replay_window, esn=esn)
        self.replay_errors = 0
        self.integrity_errors = 0
        self.malformed = 0
        self._cipher = cipher
        self._open = cipher.open
        self._volume = _Volume(limits, listener)
        self._seal_offset = ESP_HEADER_SIZE + cipher.iv_size
        self._min_size = self._seal_offset + cipher.icv_size + 2

    @property
    def packets(self) -> int:
        return self._volume.packets

    @property
    def octets(self) -> int:
        """Inner packet octets protected or verified so far."""
        return self._volume.bytes

    def decapsulate(self, packet: bytes | memoryview) -> tuple[int, memoryview]:
        """(Next Header, inner packet) of a verified ESP packet; raises
        ReplayedPacket, IntegrityFailed or MalformedPacket, and counts it.

        One function on purpose: this is the receive hot path, and each
        Python call costs about as much as the AEAD itself. `packet` may be
        a view into a larger receive buffer (a GRO batch): the ciphers take
        any buffer, and nothing here copies it."""
        if len(packet) < self._min_size:
            self.malformed += 1
            raise MalformedPacket("ESP packet too short")

        # RFC 4303 §3.4.3: the cheap replay check comes before the ICV
        low = _unpack_header(packet)[1]
        window = self.window
        top = window.top
        if not self.esn:
            sequence = low
        elif low >= (top & _LOW32) - window.size + 1 >= 0:
            # Appendix A2.2 Case A with Seq-High unchanged, the usual case
            sequence = (top & _HIGH32) | low
        else:
            sequence = window.infer(low)
        if sequence <= top and not window.check(sequence):
            self.replay_errors += 1
            raise ReplayedPacket("replayed or too old")

        offset = self._seal_offset
        data = cast(bytes, packet)  # a buffer, as the cipher takes it
        if self.esn:
            aad = _pack_esn_aad(self.spi, sequence >> 32, low)
        else:
            aad = data[:ESP_HEADER_SIZE]
        try:
            plaintext = self._open(data[ESP_HEADER_SIZE:offset], aad, data[offset:])
        except IntegrityError:
            self.integrity_errors += 1
            raise IntegrityFailed("integrity check failed") from None
        if sequence == top + 1 and window.size:
            window.advance()  # in order: the cheap case of update
        else:
            window.update(sequence)

        # RFC 4303 §2.4: the receiver inspects the default padding
        pad_length = plaintext[-2]
        end = len(plaintext) - 2 - pad_length
        if pad_length and (
            end < 0 or not plaintext.startswith(_PADDINGS[pad_length], end)
        ):
            self.malformed += 1
            raise MalformedPacket("bad ESP padding")

        volume = self._volume
        packets = volume.packets = volume.packets + 1
        octets = volume.bytes = volume.bytes + end
        if octets >= volume.next_bytes or packets >= volume.next_packets:
            volume.limit_reached()
        return plaintext[-1], memoryview(plaintext)[:end]
