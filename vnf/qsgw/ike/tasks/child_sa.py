"""Child SAs: the SA/TSi/TSr payloads, narrowing, KEYMAT and events.

Shared by IKE_AUTH (RFC 7296 §1.2) and CREATE_CHILD_SA (§1.3.1). KEYMAT
follows §2.17 (with RFC 9370 §2.2.4 for additional key exchanges);
narrowing follows §2.9.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from qsgw.ike import keymat, proposals, ts
from qsgw.ike.config import ChildSpec, TrafficSelectorSpec
from qsgw.ike.constants import EncrId, EsnId, IntegId, NotifyType, TransformType
from qsgw.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaKeys,
    ChildSaRekeyed,
)
from qsgw.ike.payloads import (
    Message,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    TrafficSelector,
    TsPayload,
)
from qsgw.ike.sa import ChildSa, ChildSaState, IkeSa

if TYPE_CHECKING:
    from qsgw.ike.engine import IkeEngine

_log = logging.getLogger(__name__)

_INTEGRITY = {
    IntegId.AUTH_HMAC_SHA2_256_128: ("sha256", 32),
    IntegId.AUTH_HMAC_SHA2_384_192: ("sha384", 48),
    IntegId.AUTH_HMAC_SHA2_512_256: ("sha512", 64),
}
_AEAD_SALT = 4  # RFC 4106 §8.1, RFC 7634 §2


@dataclass(frozen=True, slots=True)
class EspAlgorithms:
    """What the data plane needs to know of a chosen ESP proposal."""

    encryption: str
    key_bits: int
    integrity: str
    esn: bool
    encryption_size: int  # KEYMAT octets per direction, salt included
    integrity_size: int


def esp_algorithms(proposal: Proposal) -> EspAlgorithms:
    encr = proposals.transform_of(proposal, TransformType.ENCR)
    integ = proposals.transform_of(proposal, TransformType.INTEG)
    esn = proposals.transform_of(proposal, TransformType.ESN)
    assert encr is not None
    integrity, integrity_size = "none", 0
    if integ is not None and integ.id in _INTEGRITY:
        integrity, integrity_size = _INTEGRITY[IntegId(integ.id)]
    with_esn = esn is not None and esn.id == EsnId.ESN

    if encr.id == EncrId.ENCR_CHACHA20_POLY1305:
        return EspAlgorithms(
            "chacha20poly1305", 256, integrity, with_esn, 32 + _AEAD_SALT, 0
        )
    bits = encr.key_length or 128
    if encr.id == EncrId.ENCR_AES_GCM_16:
        size = bits // 8 + _AEAD_SALT
        return EspAlgorithms("aesgcm16", bits, integrity, with_esn, size, 0)
    if encr.id == EncrId.ENCR_AES_CBC:
        return EspAlgorithms(
            "aescbc", bits, integrity, with_esn, bits // 8, integrity_size
        )
    raise ValueError("ESP encryption algorithm not supported by the data plane")


def offered(spec: ChildSpec, spi: bytes, *, with_ke: bool) -> tuple[Proposal, ...]:
    """Our ESP proposals with our inbound SPI; the Child SA of IKE_AUTH
    carries no KE methods (RFC 7296 §1.2)."""
    out = []
    for proposal in spec.esp_proposals:
        if not with_ke:
            proposal = proposals.without_key_exchange(proposal)
        out.append(replace(proposal, spi=spi))
    return tuple(out)


def request_payloads(
    sa: IkeSa, child: ChildSa, *, with_ke: bool = False
) -> list[Payload]:
    """SA, TSi, TSr of a request for `child`."""
    spec = child.spec
    return [
        SaPayload(offered(spec, child.inbound_spi, with_ke=with_ke)),
        TsPayload(True, ts.to_selectors(spec.local_ts)),
        TsPayload(False, ts.to_selectors(spec.remote_ts)),
    ]


@dataclass
class ChildOffer:
    """A responder's decision on a Child SA request."""

    payloads: list[Payload]
    child: ChildSa | None


def _selectors(message: Message) -> tuple[TsPayload | None, TsPayload | None]:
    tsi = tsr = None
    for payload in message.payloads:
        if isinstance(payload, TsPayload):
            if payload.initiator:
                tsi = payload
            else:
                tsr = payload
    return tsi, tsr


def _span(specs: tuple[TrafficSelectorSpec, ...]) -> int:
    return sum(spec.network.num_addresses for spec in specs)


def _best_child(
    sa: IkeSa, tsi: TsPayload, tsr: TsPayload, spec_name: str | None
) -> tuple[ChildSpec, tuple[TrafficSelector, ...], tuple[TrafficSelector, ...]] | None:
    """RFC 7296 §2.9: the child config whose selectors fit the proposal best:
    one that takes it unnarrowed first, then the most specific."""
    best = None
    best_rank: tuple[bool, int] | None = None
    for spec in sa.connection.children:
        if spec_name is not None and spec.name != spec_name:
            continue
        narrowed_i = ts.narrow(tsi.selectors, spec.remote_ts)
        narrowed_r = ts.narrow(tsr.selectors, spec.local_ts)
        if not (narrowed_i and narrowed_r):
            continue
        exact = narrowed_i == tsi.selectors and narrowed_r == tsr.selectors
        rank = (exact, -_span(spec.local_ts) - _span(spec.remote_ts))
        if best_rank is None or rank > best_rank:
            best, best_rank = (spec, narrowed_i, narrowed_r), rank
    return best


def respond(
    engine: IkeEngine,
    sa: IkeSa,
    message: Message,
    *,
    spec_name: str | None = None,
    with_ke: bool = False,
) -> ChildOffer:
    """Choose a child config, narrow TS and pick a proposal; the SA payload
    answer carries a new inbound SPI. Nothing is installed yet."""
    sa_payload = message.first(SaPayload)
    tsi, tsr = _selectors(message)
    if not isinstance(sa_payload, SaPayload) or tsi is None or tsr is None:
        return ChildOffer([NotifyPayload(NotifyType.INVALID_SYNTAX)], None)

    best = _best_child(sa, tsi, tsr, spec_name)
    if best is None:
        return ChildOffer([NotifyPayload(NotifyType.TS_UNACCEPTABLE)], None)
    chosen_spec, narrowed_i, narrowed_r = best

    ours = offered(chosen_spec, b"", with_ke=with_ke)
    chosen = proposals.select_proposal(ours, sa_payload.proposals)
    if chosen is None or len(chosen.spi) != 4:
        return ChildOffer([NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)], None)

    child = ChildSa(
        unique_id=engine.new_id(),
        spec=chosen_spec,
        inbound_spi=engine.new_spi(),
        outbound_spi=chosen.spi,
        proposal=chosen,
        local_ts=ts.specs_of(narrowed_r),
        remote_ts=ts.specs_of(narrowed_i),
    )
    answer = replace(chosen, spi=child.inbound_spi)
    payloads: list[Payload] = [
        SaPayload((answer,)),
        TsPayload(True, narrowed_i),
        TsPayload(False, narrowed_r),
    ]
    return ChildOffer(payloads, child)


def accept_response(
    sa: IkeSa, child: ChildSa, message: Message, *, with_ke: bool = False
) -> str | None:
    """The initiator's check of the responder's answer; None when good,
    else a reason."""
    if message.notifies(NotifyType.TS_UNACCEPTABLE):
        return "ts-unacceptable"
    if message.notifies(NotifyType.NO_PROPOSAL_CHOSEN):
        return "no-proposal-chosen"
    sa_payload = message.first(SaPayload)
    tsi, tsr = _selectors(message)
    if not isinstance(sa_payload, SaPayload) or tsi is None or tsr is None:
        return "child-missing"
    if len(sa_payload.proposals) != 1:
        return "proposal"
    chosen = sa_payload.proposals[0]
    ours = offered(child.spec, b"", with_ke=with_ke)
    if len(chosen.spi) != 4 or not proposals.check_chosen(ours, chosen):
        return "proposal"
    if not ts.covered(tsi.selectors, child.spec.local_ts):
        return "ts-unacceptable"
    if not ts.covered(tsr.selectors, child.spec.remote_ts):
        return "ts-unacceptable"

    child.proposal = chosen
    child.outbound_spi = chosen.spi
    child.local_ts = ts.specs_of(tsi.selectors)
    child.remote_ts = ts.specs_of(tsr.selectors)
    return None


def derive(
    sa: IkeSa,
    child: ChildSa,
    sk_d: bytes,
    shared_secrets: list[bytes],
    ni: bytes,
    nr: bytes,
) -> None:
    """RFC 7296 §2.17 KEYMAT, split into the four keys."""
    assert sa.prf is not None and child.proposal is not None
    algorithms = esp_algorithms(child.proposal)
    size = 2 * (algorithms.encryption_size + algorithms.integrity_size)
    material = keymat.child_keymat(sa.prf, sk_d, shared_secrets, ni, nr, size)
    child.keymat = keymat.split_child_keymat(
        material, algorithms.encryption_size, algorithms.integrity_size
    )


def schedule(engine: IkeEngine, child: ChildSa, now: float) -> None:
    """Rekey and expiry times, the rekey time less some random jitter."""
    spec = child.spec
    child.established = now
    child.rekey_at = None
    if spec.rekey_time:
        jitter = _jitter(engine, spec.rekey_time)
        child.rekey_at = now + spec.rekey_time - jitter
    child.expire_at = now + spec.life_time if spec.life_time else None


def _jitter(engine: IkeEngine, period: float) -> float:
    fraction = int.from_bytes(engine.rng(2), "big") / 65536
    return period * engine.settings.rekey_jitter * fraction


def install(
    engine: IkeEngine,
    sa: IkeSa,
    child: ChildSa,
    now: float,
    replaces: ChildSa | None = None,
) -> None:
    """Add `child` to `sa` and tell the daemon (ChildSaEstablished, or
    ChildSaRekeyed when it replaces another)."""
    sa.children[child.unique_id] = child
    schedule(engine, child, now)
    # at DEBUG: listeners log the event (the daemon at INFO)
    sa.log.debug(
        "Child SA %d (%s) established, SPIs %s_i %s_o",
        child.unique_id,
        child.spec.name,
        child.inbound_spi.hex(),
        child.outbound_spi.hex(),
    )
    if replaces is not None:
        event: ChildSaEstablished | ChildSaRekeyed = ChildSaRekeyed(
            ike_sa=sa.unique_id,
            old_child_sa=replaces.unique_id,
            child_sa=child.unique_id,
            connection=sa.connection.name,
            child=child.spec.name,
            keys=keys_of(sa, child),
            initiator=child.initiator,
        )
    else:
        event = ChildSaEstablished(
            ike_sa=sa.unique_id,
            child_sa=child.unique_id,
            connection=sa.connection.name,
            child=child.spec.name,
            keys=keys_of(sa, child),
        )
    engine.emit(event)


def keys_of(sa: IkeSa, child: ChildSa) -> ChildSaKeys:
    """The event form, keys mapped to inbound/outbound for the daemon."""
    assert child.keymat is not None and child.proposal is not None
    material = child.keymat
    algorithms = esp_algorithms(child.proposal)
    # RFC 7296 §2.17: "initiator" is the one that sent the creating request
    if child.initiator:
        enc_out, int_out = material.encryption_i, material.integrity_i
        enc_in, int_in = material.encryption_r, material.integrity_r
    else:
        enc_out, int_out = material.encryption_r, material.integrity_r
        enc_in, int_in = material.encryption_i, material.integrity_i
    return ChildSaKeys(
        inbound_spi=int.from_bytes(child.inbound_spi, "big"),
        outbound_spi=int.from_bytes(child.outbound_spi, "big"),
        encryption=algorithms.encryption,
        key_bits=algorithms.key_bits,
        integrity=algorithms.integrity,
        esn=algorithms.esn,
        encryption_key_in=enc_in,
        integrity_key_in=int_in,
        encryption_key_out=enc_out,
        integrity_key_out=int_out,
        local_address=sa.local[0],
        remote_address=sa.remote[0],
        local_port=sa.local[1],
        remote_port=sa.remote[1],
        udp_encapsulation=sa.udp_encapsulation,
        local_ts=child.local_ts,
        remote_ts=child.remote_ts,
        replay_window=child.spec.replay_window,
        if_id=child.spec.if_id,
    )


def forget(engine: IkeEngine, sa: IkeSa, child: ChildSa, reason: str) -> None:
    """Remove `child` and tell the daemon (ChildSaDeleted)."""
    if sa.children.pop(child.unique_id, None) is None:
        return
    child.state = ChildSaState.DELETING
    engine.emit(
        ChildSaDeleted(
            ike_sa=sa.unique_id,
            child_sa=child.unique_id,
            connection=sa.connection.name,
            child=child.spec.name,
            inbound_spi=int.from_bytes(child.inbound_spi, "big"),
            outbound_spi=int.from_bytes(child.outbound_spi or bytes(4), "big"),
            local_address=sa.local[0],
            remote_address=sa.remote[0],
            reason=reason,
        )
    )
