"""Hypothesis strategies producing valid payloads."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import strategies as st

from qsgw.ike.constants import (
    AuthMethod,
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

_blob = st.binary(max_size=64)
_u16 = st.integers(0, 0xFFFF)

transforms = st.builds(
    Transform,
    type=st.sampled_from(list(TransformType)),
    id=_u16,
    key_length=st.none() | _u16,
)


@st.composite
def proposal_lists(draw: st.DrawFn) -> tuple[Proposal, ...]:
    count = draw(st.integers(1, 4))
    first = draw(st.integers(1, 250))
    out = []
    for number in range(first, first + count):
        protocol = draw(st.sampled_from([ProtocolId.IKE, ProtocolId.ESP]))
        sizes = [0, 8] if protocol == ProtocolId.IKE else [4]
        spi = draw(st.binary(min_size=0, max_size=8).filter(lambda b: True))
        spi = (spi + bytes(8))[: draw(st.sampled_from(sizes))]
        chosen = tuple(draw(st.lists(transforms, min_size=1, max_size=6)))
        out.append(Proposal(number, protocol, spi, chosen))
    return tuple(out)


@st.composite
def selectors(draw: st.DrawFn) -> TrafficSelector:
    v6 = draw(st.booleans())
    bits = 128 if v6 else 32
    a, b = sorted(draw(st.lists(st.integers(0, 2**bits - 1), min_size=2, max_size=2)))
    p, q = sorted(draw(st.lists(_u16, min_size=2, max_size=2)))
    address = IPv6Address if v6 else IPv4Address
    ts_type = TsType.TS_IPV6_ADDR_RANGE if v6 else TsType.TS_IPV4_ADDR_RANGE
    protocol = draw(st.integers(0, 255))
    return TrafficSelector(ts_type, protocol, p, q, address(a), address(b))


@st.composite
def notifies(draw: st.DrawFn) -> NotifyPayload:
    kind = draw(st.sampled_from(list(NotifyType)) | _u16)
    child = kind in (
        NotifyType.REKEY_SA,
        NotifyType.INVALID_SELECTORS,
        NotifyType.CHILD_SA_NOT_FOUND,
    )
    if child or draw(st.booleans()):
        if child or draw(st.booleans()):
            protocol = draw(st.sampled_from([ProtocolId.ESP, ProtocolId.AH]))
            spi = draw(st.binary(min_size=4, max_size=4))
        else:
            protocol, spi = ProtocolId.IKE, draw(st.binary(min_size=8, max_size=8))
        return NotifyPayload(kind, protocol, spi, draw(_blob))
    return NotifyPayload(kind, ProtocolId.NONE, b"", draw(_blob))


@st.composite
def eap(draw: st.DrawFn) -> EapPayload:
    rest = draw(st.binary(max_size=40))
    code, ident = draw(st.integers(1, 4)), draw(st.integers(0, 255))
    length = 4 + len(rest)
    return EapPayload(bytes([code, ident]) + length.to_bytes(2, "big") + rest)


_unknown_types = st.integers(1, 255).filter(
    lambda t: t not in range(33, 49) and t != 53
)

single_payloads: st.SearchStrategy[Payload] = st.one_of(
    st.builds(SaPayload, proposals=proposal_lists()),
    st.builds(KePayload, method=_u16, data=st.binary(min_size=1, max_size=64)),
    st.builds(
        IdPayload,
        initiator=st.booleans(),
        id_type=st.sampled_from(list(IdType)),
        data=_blob,
    ),
    st.builds(CertPayload, encoding=st.integers(0, 255), data=_blob),
    st.builds(CertReqPayload, encoding=st.integers(0, 255), data=_blob),
    st.builds(
        AuthPayload,
        method=st.sampled_from(list(AuthMethod)),
        data=st.binary(min_size=1, max_size=64),
    ),
    st.builds(NoncePayload, data=st.binary(min_size=16, max_size=256)),
    notifies(),
    st.builds(DeletePayload, protocol=st.just(ProtocolId.IKE)),
    st.builds(
        DeletePayload,
        protocol=st.sampled_from([ProtocolId.ESP, ProtocolId.AH]),
        spis=st.lists(st.binary(min_size=4, max_size=4), max_size=5).map(tuple),
    ),
    st.builds(VendorIdPayload, data=_blob),
    st.builds(
        TsPayload,
        initiator=st.booleans(),
        selectors=st.lists(selectors(), min_size=1, max_size=4).map(tuple),
    ),
    st.builds(
        ConfigPayload,
        cfg_type=st.integers(1, 4),
        attributes=st.lists(
            st.builds(ConfigAttribute, type=st.integers(0, 0x7FFF), value=_blob),
            max_size=4,
        ).map(tuple),
    ),
    eap(),
    st.builds(UnknownPayload, type=_unknown_types, body=_blob),
)

payload_lists = st.lists(single_payloads, max_size=8)
