"""IKE_SA_INIT (RFC 7296 §1.2), both halves.

    HDR, [N(COOKIE)], SAi1, KEi, Ni, N(NAT_DETECTION_*), [N(...)]  -->
                              <--  HDR, SAr1, KEr, Nr, N(NAT_DETECTION_*), ...

Also the stateless answers of §2.6 (COOKIE) and §2.7 (INVALID_KE_PAYLOAD),
NAT detection (§2.23) and the capabilities each side announces:
IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383), INTERMEDIATE_EXCHANGE_SUPPORTED
(RFC 9242), USE_PPK (RFC 8784), CHILDLESS_IKEV2_SUPPORTED (RFC 6023) and
SIGNATURE_HASH_ALGORITHMS (RFC 7427).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
from collections.abc import Iterable
from ipaddress import ip_address
from typing import TYPE_CHECKING

from qsgw import crypto
from qsgw.crypto.api import CryptoError
from qsgw.ike import keymat, proposals, rules
from qsgw.ike.candidates import Candidates
from qsgw.ike.config import Childless, ConnectionSpec
from qsgw.ike.constants import (
    ExchangeType,
    HashAlgorithm,
    HeaderFlag,
    NotifyType,
    TransformType,
)
from qsgw.ike.errors import ProtocolError
from qsgw.ike.events import ExchangeCompleted, MessageReceived, MessageSent
from qsgw.ike.payloads import (
    IkeHeader,
    KePayload,
    Message,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
)
from qsgw.ike.sa import CachedResponse, Endpoint, IkeSa
from qsgw.ike.tasks import wire

if TYPE_CHECKING:
    from qsgw.ike.engine import IkeEngine

_log = logging.getLogger(__name__)

# RFC 6023 §3: the IANA value (not in qsgw.ike.constants yet)
CHILDLESS_IKEV2_SUPPORTED = NotifyType.CHILDLESS_IKEV2_SUPPORTED
# how often we follow a COOKIE or an INVALID_KE_PAYLOAD before giving up
MAX_RETRIES = 3
COOKIE_VERSION = b"\x01"


def initiate(
    engine: IkeEngine, spec: ConnectionSpec, child: str | None, now: float
) -> int:
    """Create an IKE SA as initiator and send its IKE_SA_INIT request."""
    if not spec.remote_addresses:
        raise ValueError(f"connection {spec.name!r} has no remote address")
    remote_address = spec.remote_addresses[0]
    local_address = (
        spec.local_addresses[0]
        if spec.local_addresses
        else ip_address("::" if remote_address.version == 6 else "0.0.0.0")
    )
    sa = IkeSa(
        unique_id=engine.new_id(),
        connection=spec,
        initiator=True,
        spi_i=engine.new_ike_spi(),
        spi_r=bytes(8),
        local=(local_address, engine.settings.ike_port),
        remote=(remote_address, spec.remote_port),
        created=now,
    )
    sa.wanted_child = child
    sa.ni = engine.rng(engine.settings.nonce_size)
    sa.ke_method = _first_ke(spec.ike_proposals)
    engine.register(sa)
    sa.log.info("initiating")
    send_request(engine, sa, now)
    return sa.unique_id


def _first_ke(offered: tuple[Proposal, ...]) -> int:
    for proposal in offered:
        ke = proposals.transform_of(proposal, TransformType.KE)
        if ke is not None:
            return ke.id
    raise ValueError("no key exchange method in the IKE proposals")


def _offered_ke(offered: tuple[Proposal, ...]) -> set[int]:
    return {
        t.id for p in offered for t in p.transforms if int(t.type) == TransformType.KE
    }


def _uses_addke(offered: tuple[Proposal, ...]) -> bool:
    return any(proposals.additional_ke_methods(p) for p in offered)


def send_request(engine: IkeEngine, sa: IkeSa, now: float) -> None:
    """(Re)build and send the request, e.g. after a COOKIE or INVALID_KE."""
    spec = sa.connection
    sa.ke = engine.keys.initiator(sa.ke_method)

    payloads: list[Payload] = []
    if sa.cookie:
        # RFC 7296 §2.6: the COOKIE notify goes first
        payloads.append(NotifyPayload(NotifyType.COOKIE, data=sa.cookie))
    payloads += [
        SaPayload(spec.ike_proposals),
        KePayload(sa.ke_method, sa.ke.public_value),
        NoncePayload(sa.ni),
    ]
    header = engine.header(sa, ExchangeType.IKE_SA_INIT, 0, response=False)
    payloads += nat_detection(header, sa.local, sa.remote)
    payloads += announcements(spec, addke=_uses_addke(spec.ike_proposals))
    sa.init_request = engine.send_plain_request(sa, payloads, _ignore, now)


def _ignore(message: Message, now: float) -> None:
    """IKE_SA_INIT responses are routed by `receive_response`."""


def announcements(
    spec: ConnectionSpec, *, addke: bool, peer: Message | None = None
) -> list[Payload]:
    """The capability notifies we send in IKE_SA_INIT; as responder only
    those the initiator announced too."""

    def offered(notify: int) -> bool:
        return peer is None or bool(peer.notifies(notify))

    fragmentation = spec.fragmentation and offered(
        NotifyType.IKEV2_FRAGMENTATION_SUPPORTED
    )
    intermediate = addke and offered(NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED)
    use_ppk = bool(spec.ppks) and offered(NotifyType.USE_PPK)
    childless = spec.childless != Childless.NEVER
    return list(_announced(fragmentation, intermediate, use_ppk, childless))


_SIGNATURE_HASHES = b"".join(
    int(h).to_bytes(2, "big")
    for h in (HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512)
)


@functools.cache
def _announced(
    fragmentation: bool, intermediate: bool, use_ppk: bool, childless: bool
) -> tuple[Payload, ...]:
    """The notifies for one combination of capabilities, made once."""
    out: list[Payload] = []
    if fragmentation:
        out.append(NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))
    data = _SIGNATURE_HASHES
    out.append(NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, data=data))
    if intermediate:
        out.append(NotifyPayload(NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED))
    if use_ppk:
        out.append(NotifyPayload(NotifyType.USE_PPK))
    if childless:
        out.append(NotifyPayload(CHILDLESS_IKEV2_SUPPORTED))
    return tuple(out)


# ---------------------------------------------------------------- NAT-D


def nat_hash(spi_i: bytes, spi_r: bytes, endpoint: Endpoint) -> bytes:
    """RFC 7296 §2.23: SHA-1(SPIi | SPIr | IP | Port)."""
    address, port = endpoint
    data = spi_i + spi_r + address.packed + port.to_bytes(2, "big")
    return hashlib.sha1(data, usedforsecurity=False).digest()


def nat_detection(
    header: IkeHeader, local: Endpoint, remote: Endpoint
) -> list[Payload]:
    source = nat_hash(header.spi_i, header.spi_r, local)
    destination = nat_hash(header.spi_i, header.spi_r, remote)
    return [
        NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, data=source),
        NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, data=destination),
    ]


def detect_nat(sa: IkeSa, message: Message, local: Endpoint, remote: Endpoint) -> None:
    """Compare the peer's NAT-D hashes with the addresses we see."""
    header = message.header
    sources = message.notifies(NotifyType.NAT_DETECTION_SOURCE_IP)
    destinations = message.notifies(NotifyType.NAT_DETECTION_DESTINATION_IP)
    if sources:
        seen = nat_hash(header.spi_i, header.spi_r, remote)
        sa.nat_remote = all(n.data != seen for n in sources)
    if destinations:
        seen = nat_hash(header.spi_i, header.spi_r, local)
        sa.nat_local = all(n.data != seen for n in destinations)


def capabilities(sa: IkeSa, message: Message) -> None:
    sa.peer_fragmentation = bool(
        message.notifies(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED)
    )
    sa.peer_use_ppk = bool(message.notifies(NotifyType.USE_PPK))
    sa.peer_childless = bool(message.notifies(CHILDLESS_IKEV2_SUPPORTED))


# ---------------------------------------------------------------- keys


def setup_cipher(sa: IkeSa) -> None:
    """The PRF and SK cipher of the chosen proposal."""
    proposal = sa.proposal
    assert proposal is not None
    encr = proposals.transform_of(proposal, TransformType.ENCR)
    prf_t = proposals.transform_of(proposal, TransformType.PRF)
    integ = proposals.transform_of(proposal, TransformType.INTEG)
    assert encr is not None and prf_t is not None
    integ_id = integ.id if integ is not None and integ.id != 0 else None
    sa.prf = crypto.prf(prf_t.id)
    sa.cipher = crypto.ike_cipher(encr.id, encr.key_length, integ_id)


def setup_keys(engine: IkeEngine, sa: IkeSa, shared_secret: bytes) -> None:
    """RFC 7296 §2.14 keys for the chosen proposal."""
    _setup_algorithms(sa)
    _derive_keys(sa, shared_secret)


def _setup_algorithms(sa: IkeSa) -> None:
    setup_cipher(sa)
    assert sa.proposal is not None
    sa.context = keymat.SaContext(sa.ni, sa.nr, sa.spi_i, sa.spi_r)
    sa.addke_rounds = proposals.additional_ke_methods(sa.proposal)
    sa.ke_methods_done = [(int(TransformType.KE), sa.ke_method)]


def _derive_keys(sa: IkeSa, shared_secret: bytes) -> None:
    assert sa.prf is not None and sa.context is not None
    sizes = key_sizes(sa)
    sa.keys = keymat.derive_ike_keys(sa.prf, shared_secret, sa.context, sizes)


def key_sizes(sa: IkeSa) -> keymat.KeySizes:
    assert sa.cipher is not None
    return keymat.KeySizes(sa.cipher.integrity_key_size, sa.cipher.encryption_key_size)


# ---------------------------------------------------------------- initiator


def receive_response(
    engine: IkeEngine, message: Message, raw: bytes, remote: Endpoint, now: float
) -> None:
    header = message.header
    sa = engine.by_spi.get(header.spi_i)
    pending = sa.pending if sa is not None else None
    if (
        sa is None
        or not sa.initiator
        or pending is None
        or pending.exchange != ExchangeType.IKE_SA_INIT
        or header.message_id != 0
    ):
        engine.reject("unexpected-response", header.exchange)
        return
    engine.touch(sa)
    try:
        rules.check_message(message)
    except ProtocolError as error:
        engine.reject(error.reason, header.exchange)
        return

    engine.emit(MessageReceived("IKE_SA_INIT", True))
    if _retry(engine, sa, message, now):
        return
    try:
        _accept(engine, sa, message, raw)
    except (ProtocolError, CryptoError) as error:
        reason = error.reason if isinstance(error, ProtocolError) else "key-exchange"
        engine.reject(reason, header.exchange)
        return
    engine.complete_exchange(sa, message, now)
    _after_init(engine, sa, now)


def _retry(engine: IkeEngine, sa: IkeSa, message: Message, now: float) -> bool:
    """COOKIE (RFC 7296 §2.6), INVALID_KE_PAYLOAD (§2.7) or another error."""
    cookies = message.notifies(NotifyType.COOKIE)
    invalid_ke = message.notifies(NotifyType.INVALID_KE_PAYLOAD)
    if cookies and sa.retries < MAX_RETRIES:
        sa.retries += 1
        sa.cookie = cookies[0].data
        send_request(engine, sa, now)
        return True
    if invalid_ke and sa.retries < MAX_RETRIES and len(invalid_ke[0].data) == 2:
        wanted = int.from_bytes(invalid_ke[0].data, "big")
        if (
            wanted in _offered_ke(sa.connection.ike_proposals)
            and wanted != sa.ke_method
        ):
            sa.retries += 1
            sa.ke_method = wanted
            send_request(engine, sa, now)
            return True
    errors = [
        p
        for p in message.payloads
        if isinstance(p, NotifyPayload) and int(p.type) < 16384
    ]
    if errors or cookies or invalid_ke:
        notify = errors[0].type if errors else NotifyType.INVALID_KE_PAYLOAD
        engine.fail(sa, "peer-refused", _notify_type(notify))
        return True
    return False


def _notify_type(value: int) -> NotifyType | None:
    try:
        return NotifyType(value)
    except ValueError:
        return None


def _accept(engine: IkeEngine, sa: IkeSa, message: Message, raw: bytes) -> None:
    """The responder's choice: check it and derive the keys."""
    sa_payload = message.first(SaPayload)
    ke = message.first(KePayload)
    nonce = message.first(NoncePayload)
    if not isinstance(sa_payload, SaPayload) or len(sa_payload.proposals) != 1:
        raise ProtocolError(None, "proposal")
    chosen = sa_payload.proposals[0]
    if not proposals.check_chosen(sa.connection.ike_proposals, chosen):
        raise ProtocolError(None, "proposal")
    chosen_ke = proposals.transform_of(chosen, TransformType.KE)
    if not isinstance(ke, KePayload) or chosen_ke is None:
        raise ProtocolError(None, "key-exchange")
    if ke.method != sa.ke_method or chosen_ke.id != sa.ke_method:
        raise ProtocolError(None, "key-exchange")
    if not isinstance(nonce, NoncePayload) or sa.ke is None:
        raise ProtocolError(None, "nonce")

    shared = sa.ke.complete(ke.data)
    sa.proposal = chosen
    sa.nr = nonce.data
    sa.spi_r = message.header.spi_r
    sa.init_response = raw
    setup_keys(engine, sa, shared)
    capabilities(sa, message)
    detect_nat(sa, message, sa.local, sa.remote)


def _after_init(engine: IkeEngine, sa: IkeSa, now: float) -> None:
    from qsgw.ike.tasks import ike_auth, intermediate

    # RFC 7296 §2.23: move to port 4500 once a NAT is detected
    if sa.udp_encapsulation:
        sa.local = (sa.local[0], engine.settings.natt_port)
        sa.remote = (sa.remote[0], engine.settings.natt_port)
    if sa.addke_rounds:
        intermediate.start(engine, sa, now)
    else:
        ike_auth.start(engine, sa, now)


# ---------------------------------------------------------------- responder


def receive_request(
    engine: IkeEngine,
    message: Message,
    raw: bytes,
    local: Endpoint,
    remote: Endpoint,
    now: float,
) -> None:
    header = message.header
    existing = engine.half_open.get((header.spi_i, remote))
    if existing is not None or header.spi_r != bytes(8) or header.message_id != 0:
        # a retransmission: answer from the cache (RFC 7296 §2.1)
        if existing is not None and existing.init_request == raw:
            if existing.cached is not None and existing.cached.message_id == 0:
                engine.resend_cached(existing)
        else:
            engine.reject("message-id", header.exchange)
        return
    engine.emit(MessageReceived("IKE_SA_INIT", False))

    try:
        rules.check_message(message)
        answer = _respond(engine, message, raw, local, remote, now)
    except ProtocolError as error:
        engine.reject(error.reason, header.exchange)
        if error.notify is not None:
            notify = NotifyPayload(error.notify, data=error.data)
            _send_stateless(engine, header, [notify], local, remote)
        return
    if answer is not None:
        _send_stateless(engine, header, answer, local, remote)


def _send_stateless(
    engine: IkeEngine,
    request: IkeHeader,
    payloads: list[Payload],
    local: Endpoint,
    remote: Endpoint,
) -> None:
    """An answer that keeps no state: SPIr stays zero (RFC 7296 §2.6)."""
    header = IkeHeader(
        spi_i=request.spi_i,
        spi_r=bytes(8),
        next_payload=0,
        exchange=ExchangeType.IKE_SA_INIT,
        flags=HeaderFlag.RESPONSE,
        message_id=0,
    )
    engine.send(wire.encode_plain(header, payloads), local, remote)


def cookie_for(engine: IkeEngine, message: Message, remote: Endpoint) -> bytes:
    """RFC 7296 §2.6: <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>)."""
    nonce = message.first(NoncePayload)
    ni = nonce.data if isinstance(nonce, NoncePayload) else b""
    data = ni + remote[0].packed + message.header.spi_i + engine.cookie_secret
    return COOKIE_VERSION + hashlib.sha256(data).digest()


def _cookie_check(
    engine: IkeEngine, message: Message, remote: Endpoint
) -> list[Payload] | None:
    """Above the threshold, a request without our COOKIE gets one back."""
    if engine.half_open_count() < engine.settings.cookie_threshold:
        return None
    expected = cookie_for(engine, message, remote)
    first = message.payloads[0] if message.payloads else None
    if (
        isinstance(first, NotifyPayload)
        and first.type == NotifyType.COOKIE
        and hmac.compare_digest(first.data, expected)
    ):
        return None
    engine.reject("cookie-required", ExchangeType.IKE_SA_INIT)
    return [NotifyPayload(NotifyType.COOKIE, data=expected)]


def candidates(engine: IkeEngine, local: Endpoint, remote: Endpoint) -> Candidates:
    """Connections that accept this pair of addresses."""
    return engine.candidates(local[0], remote[0])


def _choose(
    specs: Iterable[ConnectionSpec], offered: tuple[Proposal, ...]
) -> tuple[ConnectionSpec, Proposal] | None:
    for spec in specs:
        chosen = proposals.select_proposal(spec.ike_proposals, offered)
        if chosen is not None:
            return spec, chosen
    return None


def _respond(
    engine: IkeEngine,
    message: Message,
    raw: bytes,
    local: Endpoint,
    remote: Endpoint,
    now: float,
) -> list[Payload] | None:
    """Our answer; None when we answered and kept a new half-open IKE SA."""
    cookie = _cookie_check(engine, message, remote)
    if cookie is not None:
        return cookie

    specs = candidates(engine, local, remote)
    sa_payload = message.first(SaPayload)
    offered = sa_payload.proposals if isinstance(sa_payload, SaPayload) else ()
    choice = _choose(specs.specs, offered)
    if choice is None:
        raise ProtocolError(NotifyType.NO_PROPOSAL_CHOSEN, "no-proposal-chosen")
    spec, chosen = choice

    # RFC 7296 §2.7: a KEi of another method gets the one we want
    ke = message.first(KePayload)
    chosen_ke = proposals.transform_of(chosen, TransformType.KE)
    assert chosen_ke is not None and isinstance(ke, KePayload)
    if ke.method != chosen_ke.id:
        data = chosen_ke.id.to_bytes(2, "big")
        raise ProtocolError(NotifyType.INVALID_KE_PAYLOAD, "invalid-ke", data)
    try:
        ke_data, shared = engine.keys.respond(ke.method, ke.data)
    except CryptoError:
        raise ProtocolError(NotifyType.INVALID_SYNTAX, "key-exchange") from None

    sa = _new_responder_sa(engine, spec, message, local, remote, now)
    sa.proposal = chosen
    sa.ke_method = ke.method
    _setup_algorithms(sa)
    sa.candidates = specs
    _reply(engine, sa, message, raw, ke_data)
    # the response carries no key: derive them while it travels
    engine.defer(lambda: _derive_keys(sa, shared))
    return None


def _new_responder_sa(
    engine: IkeEngine,
    spec: ConnectionSpec,
    message: Message,
    local: Endpoint,
    remote: Endpoint,
    now: float,
) -> IkeSa:
    nonce = message.first(NoncePayload)
    assert isinstance(nonce, NoncePayload)
    sa = IkeSa(
        unique_id=engine.new_id(),
        connection=spec,
        initiator=False,
        spi_i=message.header.spi_i,
        spi_r=engine.new_ike_spi(),
        local=local,
        remote=remote,
        created=now,
    )
    sa.ni = nonce.data
    sa.nr = engine.rng(engine.settings.nonce_size)
    sa.last_received = now
    capabilities(sa, message)
    detect_nat(sa, message, local, remote)
    return sa


def _reply(
    engine: IkeEngine, sa: IkeSa, request: Message, raw: bytes, ke_data: bytes
) -> None:
    proposal = sa.proposal
    assert proposal is not None
    spec = sa.connection
    header = engine.header(sa, ExchangeType.IKE_SA_INIT, 0, response=True)
    payloads: list[Payload] = [
        SaPayload((proposal,)),
        KePayload(sa.ke_method, ke_data),
        NoncePayload(sa.nr),
    ]
    payloads += nat_detection(header, sa.local, sa.remote)
    addke = bool(sa.addke_rounds)
    payloads += announcements(spec, addke=addke, peer=request)

    data = wire.encode_plain(header, payloads)
    sa.init_request, sa.init_response = raw, data
    sa.recv_mid = 1
    engine.register(sa)
    engine.half_open[(sa.spi_i, sa.remote)] = sa
    sa.cached = CachedResponse(0, [data])
    engine.send(data, sa.local, sa.remote)
    engine.emit(MessageSent("IKE_SA_INIT", True))
    engine.emit(ExchangeCompleted("IKE_SA_INIT", False, 0.0))
