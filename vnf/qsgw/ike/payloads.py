"""IKEv2 payloads as frozen dataclasses (RFC 7296 §3 and its extensions).

These are the values the codec (`qsgw.ike.codec`) parses into and encodes
from. They carry no wire lengths: lengths are computed on encode and checked
on parse. Payload order inside a message is kept as a tuple.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from qsgw.ike.constants import (
    AuthMethod,
    ExchangeType,
    HeaderFlag,
    IdType,
    NotifyType,
    PayloadType,
    ProtocolId,
    TransformType,
    TsType,
)

IPAddress = IPv4Address | IPv6Address

# IkeHeader tests its flags in plain ints: `&` on IntFlag builds a new flag
_RESPONSE = int(HeaderFlag.RESPONSE)
_INITIATOR = int(HeaderFlag.INITIATOR)


@dataclass(frozen=True, slots=True)
class IkeHeader:
    spi_i: bytes  # 8 octets
    spi_r: bytes  # 8 octets
    next_payload: int
    exchange: ExchangeType | int
    flags: HeaderFlag
    message_id: int
    length: int = 0  # filled by the codec on encode; read on parse
    major_version: int = 2
    minor_version: int = 0

    @property
    def is_response(self) -> bool:
        return int(self.flags) & _RESPONSE != 0

    @property
    def is_initiator(self) -> bool:
        return int(self.flags) & _INITIATOR != 0


@dataclass(frozen=True, slots=True)
class Transform:
    type: TransformType | int
    id: int
    key_length: int | None = None  # the Key Length attribute (type 14), in bits


@dataclass(frozen=True, slots=True)
class Proposal:
    number: int
    protocol: ProtocolId | int
    spi: bytes
    transforms: tuple[Transform, ...]


@dataclass(frozen=True, slots=True)
class SaPayload:
    proposals: tuple[Proposal, ...]
    critical: bool = False


@dataclass(frozen=True, slots=True)
class KePayload:
    method: int
    data: bytes
    critical: bool = False


@dataclass(frozen=True, slots=True)
class IdPayload:
    """IDi or IDr, told apart by `initiator`."""

    initiator: bool
    id_type: IdType | int
    data: bytes
    critical: bool = False

    @property
    def body(self) -> bytes:
        """The ID payload body as it enters AUTH's MACedIDFor (RFC 7296 §2.15)."""
        return bytes([int(self.id_type), 0, 0, 0]) + self.data


@dataclass(frozen=True, slots=True)
class CertPayload:
    encoding: int
    data: bytes
    critical: bool = False


@dataclass(frozen=True, slots=True)
class CertReqPayload:
    encoding: int
    data: bytes
    critical: bool = False


@dataclass(frozen=True, slots=True)
class AuthPayload:
    method: AuthMethod | int
    data: bytes
    critical: bool = False


@dataclass(frozen=True, slots=True)
class NoncePayload:
    data: bytes
    critical: bool = False


@dataclass(frozen=True, slots=True)
class NotifyPayload:
    type: NotifyType | int
    protocol: ProtocolId | int = ProtocolId.NONE
    spi: bytes = b""
    data: bytes = b""
    critical: bool = False


@dataclass(frozen=True, slots=True)
class DeletePayload:
    protocol: ProtocolId | int
    spis: tuple[bytes, ...] = ()  # empty for the IKE SA
    critical: bool = False


@dataclass(frozen=True, slots=True)
class VendorIdPayload:
    data: bytes
    critical: bool = False


@dataclass(frozen=True, slots=True)
class TrafficSelector:
    ts_type: TsType | int
    ip_protocol: int
    start_port: int
    end_port: int
    start_address: IPAddress
    end_address: IPAddress


@dataclass(frozen=True, slots=True)
class TsPayload:
    """TSi or TSr, told apart by `initiator`."""

    initiator: bool
    selectors: tuple[TrafficSelector, ...]
    critical: bool = False


@dataclass(frozen=True, slots=True)
class ConfigAttribute:
    type: int
    value: bytes


@dataclass(frozen=True, slots=True)
class ConfigPayload:
    cfg_type: int
    attributes: tuple[ConfigAttribute, ...]
    critical: bool = False


@dataclass(frozen=True, slots=True)
class EapPayload:
    data: bytes
    critical: bool = False


@dataclass(frozen=True, slots=True)
class EncryptedPayload:
    """SK (RFC 7296 §3.14): still encrypted; `first_inner` is its Next Payload."""

    first_inner: int
    body: bytes  # IV | ciphertext | ICV
    critical: bool = False


@dataclass(frozen=True, slots=True)
class EncryptedFragmentPayload:
    """SKF (RFC 7383 §2.5): one encrypted fragment of an SK payload."""

    first_inner: int  # non-zero only in fragment number 1
    fragment_number: int
    total_fragments: int
    body: bytes  # IV | ciphertext | ICV
    critical: bool = False


@dataclass(frozen=True, slots=True)
class UnknownPayload:
    """A payload type this implementation does not know (RFC 7296 §2.5)."""

    type: int
    body: bytes
    critical: bool = False


Payload = (
    SaPayload
    | KePayload
    | IdPayload
    | CertPayload
    | CertReqPayload
    | AuthPayload
    | NoncePayload
    | NotifyPayload
    | DeletePayload
    | VendorIdPayload
    | TsPayload
    | ConfigPayload
    | EapPayload
    | EncryptedPayload
    | EncryptedFragmentPayload
    | UnknownPayload
)


def payload_type(payload: Payload) -> int:
    """The Payload Type number of `payload` as it goes on the wire."""
    found = _PAYLOAD_TYPES.get(type(payload))
    if found is not None:
        return found
    match payload:
        case IdPayload(initiator=True):
            return PayloadType.IDi
        case IdPayload():
            return PayloadType.IDr
        case TsPayload(initiator=True):
            return PayloadType.TSi
        case TsPayload():
            return PayloadType.TSr
        case UnknownPayload(type=t):
            return t
    raise TypeError(f"not a payload: {type(payload).__name__}")


_PAYLOAD_TYPES: dict[type, int] = {
    SaPayload: PayloadType.SA,
    KePayload: PayloadType.KE,
    CertPayload: PayloadType.CERT,
    CertReqPayload: PayloadType.CERTREQ,
    AuthPayload: PayloadType.AUTH,
    NoncePayload: PayloadType.NONCE,
    NotifyPayload: PayloadType.NOTIFY,
    DeletePayload: PayloadType.DELETE,
    VendorIdPayload: PayloadType.VENDOR_ID,
    ConfigPayload: PayloadType.CP,
    EapPayload: PayloadType.EAP,
    EncryptedPayload: PayloadType.SK,
    EncryptedFragmentPayload: PayloadType.SKF,
}


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed IKE message: the header and its top-level payloads, in order.

    After decryption, `payloads` holds the inner payloads and `encrypted` is
    True; the SK payload itself is not kept.
    """

    header: IkeHeader
    payloads: tuple[Payload, ...]
    encrypted: bool = False
    raw: bytes = field(default=b"", compare=False, repr=False)
    # the Notify payloads by type, made on the first `notifies` call
    _notify_index: dict[int, tuple[NotifyPayload, ...]] | None = field(
        default=None, init=False, compare=False, repr=False
    )

    @property
    def exchange(self) -> int:
        return int(self.header.exchange)

    def notifies(self, notify_type: int) -> tuple[NotifyPayload, ...]:
        """The Notify payloads of this type, in message order."""
        index = self._notify_index
        if index is None:
            found: dict[int, list[NotifyPayload]] = {}
            for p in self.payloads:
                if isinstance(p, NotifyPayload):
                    found.setdefault(int(p.type), []).append(p)
            index = {kind: tuple(group) for kind, group in found.items()}
            object.__setattr__(self, "_notify_index", index)
        return index.get(notify_type, ())

    def first(self, kind: type) -> Payload | None:
        for p in self.payloads:
            if isinstance(p, kind):
                return p
        return None
