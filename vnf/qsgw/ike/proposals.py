"""Proposals written the swanctl way, and the choice between two lists.

`parse_ike_proposal("aes256gcm16-prfsha384-x25519-ke1_mlkem768")` gives the
SA payload proposal qsgw sends; `select_proposal` is the responder's choice
(RFC 7296 §2.7, §3.3.6) and `check_chosen` the initiator's check of it.
Additional key exchanges follow RFC 9370: `keN_<method>` is Transform Type
ADDKE<N>, and `keN_none` (ID 0) makes that round optional.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from qsgw.ike.constants import (
    ADDKE_TYPES,
    EncrId,
    EsnId,
    IntegId,
    KeId,
    PrfId,
    ProtocolId,
    TransformType,
)
from qsgw.ike.payloads import Proposal, Transform

_AEAD = {
    "gcm8": EncrId.ENCR_AES_GCM_8,
    "gcm12": EncrId.ENCR_AES_GCM_12,
    "gcm16": EncrId.ENCR_AES_GCM_16,
    "gcm": EncrId.ENCR_AES_GCM_16,
}
_AES = re.compile(r"^aes(128|192|256)(gcm8|gcm12|gcm16|gcm)?$")

_INTEG = {
    "sha256": IntegId.AUTH_HMAC_SHA2_256_128,
    "sha2_256": IntegId.AUTH_HMAC_SHA2_256_128,
    "sha384": IntegId.AUTH_HMAC_SHA2_384_192,
    "sha2_384": IntegId.AUTH_HMAC_SHA2_384_192,
    "sha512": IntegId.AUTH_HMAC_SHA2_512_256,
    "sha2_512": IntegId.AUTH_HMAC_SHA2_512_256,
}
_PRF_OF_INTEG = {
    IntegId.AUTH_HMAC_SHA2_256_128: PrfId.PRF_HMAC_SHA2_256,
    IntegId.AUTH_HMAC_SHA2_384_192: PrfId.PRF_HMAC_SHA2_384,
    IntegId.AUTH_HMAC_SHA2_512_256: PrfId.PRF_HMAC_SHA2_512,
}
_PRF = {
    "prfsha256": PrfId.PRF_HMAC_SHA2_256,
    "prfsha384": PrfId.PRF_HMAC_SHA2_384,
    "prfsha512": PrfId.PRF_HMAC_SHA2_512,
}
_KE = {
    "modp2048": KeId.MODP_2048,
    "modp3072": KeId.MODP_3072,
    "modp4096": KeId.MODP_4096,
    "ecp256": KeId.ECP_256,
    "ecp384": KeId.ECP_384,
    "ecp521": KeId.ECP_521,
    "x25519": KeId.CURVE25519,
    "curve25519": KeId.CURVE25519,
    "x448": KeId.CURVE448,
    "curve448": KeId.CURVE448,
    "mlkem512": KeId.ML_KEM_512,
    "mlkem768": KeId.ML_KEM_768,
    "mlkem1024": KeId.ML_KEM_1024,
}
_ADDKE = re.compile(r"^ke([1-7])_([a-z0-9]+)$")

# Transform types that mean "NONE" when a proposal leaves them out.
_OPTIONAL_TYPES = (TransformType.INTEG, TransformType.KE, *ADDKE_TYPES)


class ProposalError(ValueError):
    """A proposal string that cannot be understood; the message says why."""


def parse_ike_proposal(text: str, number: int = 1) -> Proposal:
    """An IKE SA proposal from a swanctl-style string."""
    transforms = _parse(text, ike=True)
    types = {t.type for t in transforms}
    if TransformType.ENCR not in types:
        raise ProposalError(f"{text!r}: no encryption algorithm (e.g. aes256gcm16)")
    if TransformType.KE not in types:
        raise ProposalError(f"{text!r}: no key exchange method (e.g. x25519)")
    _check_aead_integrity(text, transforms)
    if TransformType.PRF not in types:
        prfs = _prfs_from_integrity(transforms)
        if not prfs:
            raise ProposalError(
                f"{text!r}: an AEAD proposal needs a PRF (e.g. prfsha384)"
            )
        transforms = transforms + prfs
    return Proposal(number, ProtocolId.IKE, b"", _ordered(transforms))


def parse_esp_proposal(text: str, number: int = 1) -> Proposal:
    """An ESP proposal from a swanctl-style string (`esn`/`noesn` allowed)."""
    transforms = _parse(text, ike=False)
    types = {t.type for t in transforms}
    if TransformType.ENCR not in types:
        raise ProposalError(f"{text!r}: no encryption algorithm (e.g. aes256gcm16)")
    if TransformType.PRF in types:
        raise ProposalError(f"{text!r}: ESP proposals take no PRF")
    if TransformType.ESN not in types:
        transforms = (*transforms, Transform(TransformType.ESN, EsnId.NO_ESN))
    _check_aead_integrity(text, transforms)
    return Proposal(number, ProtocolId.ESP, b"", _ordered(transforms))


def parse_proposals(texts: Iterable[str], *, ike: bool) -> tuple[Proposal, ...]:
    parse = parse_ike_proposal if ike else parse_esp_proposal
    return tuple(parse(text, n) for n, text in enumerate(texts, start=1))


def _parse(text: str, *, ike: bool) -> tuple[Transform, ...]:
    tokens = text.strip().lower().split("-")
    if not text.strip() or any(not t for t in tokens):
        raise ProposalError(f"{text!r}: empty algorithm name")
    transforms: list[Transform] = []
    for token in tokens:
        transform = _parse_token(token, ike=ike)
        if transform is None:
            raise ProposalError(f"{text!r}: unknown algorithm {token!r}")
        if transform in transforms:
            raise ProposalError(f"{text!r}: {token!r} appears twice")
        transforms.append(transform)
    return tuple(transforms)


def _parse_token(token: str, *, ike: bool) -> Transform | None:
    if m := _AES.match(token):
        bits = int(m.group(1))
        encr = _AEAD[m.group(2)] if m.group(2) else EncrId.ENCR_AES_CBC
        return Transform(TransformType.ENCR, encr, bits)
    if token == "chacha20poly1305":
        return Transform(TransformType.ENCR, EncrId.ENCR_CHACHA20_POLY1305)
    if token in _INTEG:
        return Transform(TransformType.INTEG, _INTEG[token])
    if token in _PRF:
        return Transform(TransformType.PRF, _PRF[token])
    if token in _KE:
        return Transform(TransformType.KE, _KE[token])
    if m := _ADDKE.match(token):
        round_type = ADDKE_TYPES[int(m.group(1)) - 1]
        name = m.group(2)
        if name == "none":
            return Transform(round_type, KeId.NONE)
        return Transform(round_type, _KE[name]) if name in _KE else None
    if not ike and token in ("esn", "noesn"):
        esn = EsnId.ESN if token == "esn" else EsnId.NO_ESN
        return Transform(TransformType.ESN, esn)
    return None


def _prfs_from_integrity(transforms: Sequence[Transform]) -> tuple[Transform, ...]:
    return tuple(
        Transform(TransformType.PRF, _PRF_OF_INTEG[IntegId(t.id)])
        for t in transforms
        if t.type == TransformType.INTEG
    )


def _check_aead_integrity(text: str, transforms: Sequence[Transform]) -> None:
    encrs = [t for t in transforms if t.type == TransformType.ENCR]
    aead = [t for t in encrs if is_aead(t.id)]
    has_integ = any(t.type == TransformType.INTEG for t in transforms)
    # RFC 7296 §3.3: AEAD and classic ciphers go in separate proposals
    if aead and len(aead) != len(encrs):
        raise ProposalError(
            f"{text!r}: AEAD and non-AEAD ciphers need separate proposals"
        )
    if aead and has_integ:
        raise ProposalError(f"{text!r}: an AEAD cipher takes no integrity algorithm")
    if not aead and not has_integ:
        raise ProposalError(
            f"{text!r}: a non-AEAD cipher needs an integrity algorithm (e.g. sha256)"
        )


def is_aead(encr_id: int) -> bool:
    return encr_id in (
        EncrId.ENCR_AES_GCM_8,
        EncrId.ENCR_AES_GCM_12,
        EncrId.ENCR_AES_GCM_16,
        EncrId.ENCR_CHACHA20_POLY1305,
    )


def _ordered(transforms: Iterable[Transform]) -> tuple[Transform, ...]:
    """Transforms grouped by type in type order, keeping preference order."""
    return tuple(sorted(transforms, key=lambda t: int(t.type)))


def _by_type(proposal: Proposal) -> dict[int, list[Transform]]:
    types: dict[int, list[Transform]] = {}
    for t in proposal.transforms:
        types.setdefault(int(t.type), []).append(t)
    return types


def _offered(types: dict[int, list[Transform]], ttype: int) -> list[Transform]:
    if ttype in types:
        return types[ttype]
    if ttype in _OPTIONAL_TYPES:
        return [Transform(ttype, 0)]
    if ttype == TransformType.ESN:
        return [Transform(ttype, EsnId.NO_ESN)]
    return []


def _same(a: Transform, b: Transform) -> bool:
    return int(a.type) == int(b.type) and a.id == b.id and a.key_length == b.key_length


def _match(ours: Proposal, theirs: Proposal) -> Proposal | None:
    """The single-transform-per-type intersection, our preference first."""
    if int(ours.protocol) != int(theirs.protocol):
        return None
    our_types, their_types = _by_type(ours), _by_type(theirs)
    chosen: list[Transform] = []
    for ttype in sorted(set(our_types) | set(their_types)):
        pick = next(
            (
                o
                for o in _offered(our_types, ttype)
                if any(_same(o, t) for t in _offered(their_types, ttype))
            ),
            None,
        )
        if pick is None:
            return None
        # leave out what the peer did not mention and means NONE anyway
        if ttype in their_types or pick.id != 0:
            chosen.append(pick)
    return Proposal(theirs.number, theirs.protocol, theirs.spi, tuple(chosen))


class _ByIdentity:
    """Answers for pairs of objects, looked up by their identity.

    A connection's proposals are one tuple for its lifetime, and the codec
    hands out the same SA payload for the same octets, so one peer's offers
    and choices come back as the same objects. Entries hold both objects,
    so that their ids cannot be reused while cached; bounded, as the offers
    come from peers."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._entries: dict[tuple[int, int], tuple[object, object, object]] = {}

    def get(self, first: object, second: object) -> tuple[bool, object]:
        entry = self._entries.get((id(first), id(second)))
        if entry is not None and entry[0] is first and entry[1] is second:
            return True, entry[2]
        return False, None

    def put(self, first: object, second: object, answer: object) -> None:
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[(id(first), id(second))] = (first, second, answer)


_SELECTED = _ByIdentity()
_CHECKED = _ByIdentity()
_ACCEPTED = _ByIdentity()


def select_proposal(
    ours: Sequence[Proposal], theirs: Sequence[Proposal]
) -> Proposal | None:
    """The responder's choice (RFC 7296 §2.7): our order of preference wins.

    The result carries the peer's proposal number and SPI, and exactly one
    transform of each type; None means NO_PROPOSAL_CHOSEN.
    """
    known, answer = _SELECTED.get(ours, theirs)
    if known:
        return answer if isinstance(answer, Proposal) else None
    chosen = _select(ours, theirs)
    _SELECTED.put(ours, theirs, chosen)
    return chosen


def _select(ours: Sequence[Proposal], theirs: Sequence[Proposal]) -> Proposal | None:
    for our in ours:
        for their in theirs:
            chosen = _match(our, their)
            if chosen is not None:
                return chosen
    return None


def accepts(ours: Sequence[Proposal], proposal: Proposal) -> bool:
    """Whether we would choose something from `proposal` alone (e.g. the
    one an IKE SA settled on, for another connection in IKE_AUTH)."""
    known, answer = _ACCEPTED.get(ours, proposal)
    if known:
        return answer is True
    accepted = _select(ours, (proposal,)) is not None
    _ACCEPTED.put(ours, proposal, accepted)
    return accepted


def check_chosen(ours: Sequence[Proposal], chosen: Proposal) -> bool:
    """Whether the responder's single proposal is one we could have sent.

    RFC 7296 §3.3.6: it must hold one transform per type, all offered by us.
    """
    known, answer = _CHECKED.get(ours, chosen)
    if known:
        return answer is True
    accepted = _check(ours, chosen)
    _CHECKED.put(ours, chosen, accepted)
    return accepted


def _check(ours: Sequence[Proposal], chosen: Proposal) -> bool:
    types = _by_type(chosen)
    if any(len(ts) != 1 for ts in types.values()):
        return False
    for our in ours:
        if int(our.protocol) != int(chosen.protocol):
            continue
        if chosen.number != our.number:
            continue
        matched = _match(our, chosen)
        if matched is not None and all(
            any(_same(c, m) for m in matched.transforms) for c in chosen.transforms
        ):
            return True
    return False


def without_key_exchange(proposal: Proposal) -> Proposal:
    """The proposal minus KE and ADDKE transforms.

    The Child SA set up inside IKE_AUTH has no KE payload (RFC 7296 §1.2),
    so its offer leaves the PFS methods out; they apply to later rekeys.
    """
    kept = tuple(
        t
        for t in proposal.transforms
        if int(t.type) != TransformType.KE and int(t.type) not in ADDKE_TYPES
    )
    return Proposal(proposal.number, proposal.protocol, proposal.spi, kept)


def transform_of(proposal: Proposal, ttype: int) -> Transform | None:
    return next((t for t in proposal.transforms if int(t.type) == ttype), None)


def additional_ke_methods(proposal: Proposal) -> list[tuple[int, int]]:
    """(ADDKE transform type, method) rounds to run, optional rounds skipped."""
    return [
        (int(t.type), t.id)
        for t in proposal.transforms
        if int(t.type) in ADDKE_TYPES and t.id != 0
    ]


# --- names, swanctl-style, for `qsgw sas` and logs -------------------------

_KE_NAMES: dict[int, str] = {
    KeId.MODP_2048: "modp2048",
    KeId.MODP_3072: "modp3072",
    KeId.MODP_4096: "modp4096",
    KeId.ECP_256: "ecp256",
    KeId.ECP_384: "ecp384",
    KeId.ECP_521: "ecp521",
    KeId.CURVE25519: "x25519",
    KeId.CURVE448: "x448",
    KeId.ML_KEM_512: "mlkem512",
    KeId.ML_KEM_768: "mlkem768",
    KeId.ML_KEM_1024: "mlkem1024",
    KeId.NONE: "none",
}
_INTEG_NAMES: dict[int, str] = {
    v: k for k, v in _INTEG.items() if not k.startswith("sha2_")
}
_PRF_NAMES: dict[int, str] = {v: k for k, v in _PRF.items()}
_AEAD_SUFFIX: dict[int, str] = {
    EncrId.ENCR_AES_GCM_8: "gcm8",
    EncrId.ENCR_AES_GCM_12: "gcm12",
    EncrId.ENCR_AES_GCM_16: "gcm16",
}


def transform_name(t: Transform) -> str:
    ttype = int(t.type)
    if ttype == TransformType.ENCR:
        if t.id == EncrId.ENCR_CHACHA20_POLY1305:
            return "chacha20poly1305"
        suffix = _AEAD_SUFFIX.get(t.id, "")
        return f"aes{t.key_length or ''}{suffix}"
    if ttype == TransformType.INTEG:
        return _INTEG_NAMES.get(t.id, f"integ{t.id}")
    if ttype == TransformType.PRF:
        return _PRF_NAMES.get(t.id, f"prf{t.id}")
    if ttype == TransformType.ESN:
        return "esn" if t.id == EsnId.ESN else "noesn"
    name = _KE_NAMES.get(t.id, f"ke{t.id}")
    if ttype in ADDKE_TYPES:
        return f"ke{ttype - TransformType.ADDKE1 + 1}_{name}"
    return name


def describe(proposal: Proposal) -> str:
    """The proposal written back the swanctl way."""
    return "-".join(transform_name(t) for t in proposal.transforms)


def algorithm_names(proposal: Proposal) -> dict[str, str]:
    """Each negotiated transform by role: encr, integ, prf, ke, ke1..ke7, esn."""
    names: dict[str, str] = {}
    for t in proposal.transforms:
        ttype = int(t.type)
        if ttype in ADDKE_TYPES:
            key = f"ke{ttype - TransformType.ADDKE1 + 1}"
            names[key] = _KE_NAMES.get(t.id, str(t.id))
            continue
        key = {1: "encr", 2: "prf", 3: "integ", 4: "ke", 5: "esn"}[ttype]
        names[key] = transform_name(t)
    return names
