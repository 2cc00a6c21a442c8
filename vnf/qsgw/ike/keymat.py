"""Every IKEv2 key derivation, as pure functions over a `Prf`.

Sources: RFC 7296 §2.13-2.18 (SKEYSEED, the seven IKE SA keys, Child SA
KEYMAT, IKE SA rekey), RFC 9370 §2.2.2 and §2.2.4 (additional key
exchanges), RFC 8784 §3 (PPK), RFC 9242 §3.3.2 (IntAuth) and RFC 7296 §2.15
(the AUTH payload for a shared key).

Key values live in `IkeKeys` and `ChildKeymat`, whose reprs hide them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from qsgw.crypto.api import Prf

# RFC 7296 §2.15: the pad that turns a shared secret into an AUTH key
KEY_PAD = b"Key Pad for IKEv2"


@dataclass(frozen=True, slots=True)
class IkeKeys:
    """{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} (RFC 7296 §2.14)."""

    sk_d: bytes
    sk_ai: bytes
    sk_ar: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes

    def __repr__(self) -> str:
        return "IkeKeys(<hidden>)"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class KeySizes:
    """Octets of SK_a and SK_e per direction; SK_d/SK_p follow the PRF."""

    integrity: int
    encryption: int


@dataclass(frozen=True, slots=True)
class SaContext:
    """The IKE_SA_INIT values every derivation of one IKE SA reuses."""

    ni: bytes
    nr: bytes
    spi_i: bytes
    spi_r: bytes

    @property
    def seed(self) -> bytes:
        """Ni | Nr | SPIi | SPIr, the prf+ seed of RFC 7296 §2.14."""
        return self.ni + self.nr + self.spi_i + self.spi_r


def skeyseed(prf: Prf, ni: bytes, nr: bytes, shared_secret: bytes) -> bytes:
    """RFC 7296 §2.14: SKEYSEED = prf(Ni | Nr, g^ir)."""
    return prf(ni + nr, shared_secret)


def expand_ike_keys(
    prf: Prf, seed_key: bytes, context: SaContext, sizes: KeySizes
) -> IkeKeys:
    """RFC 7296 §2.14: the seven keys = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)."""
    p = prf.key_size
    integrity, encryption = sizes.integrity, sizes.encryption
    lengths = (p, integrity, integrity, encryption, encryption, p, p)
    stream = prf.plus(seed_key, context.seed, sum(lengths))

    parts: list[bytes] = []
    offset = 0
    for length in lengths:
        parts.append(stream[offset : offset + length])
        offset += length
    return IkeKeys(*parts)


def derive_ike_keys(
    prf: Prf, shared_secret: bytes, context: SaContext, sizes: KeySizes
) -> IkeKeys:
    """The keys of a new IKE SA from its IKE_SA_INIT exchange."""
    seed_key = skeyseed(prf, context.ni, context.nr, shared_secret)
    return expand_ike_keys(prf, seed_key, context, sizes)


def update_after_intermediate(
    prf: Prf, keys: IkeKeys, shared_secret: bytes, context: SaContext, sizes: KeySizes
) -> IkeKeys:
    """RFC 9370 §2.2.2: SKEYSEED(n) = prf(SK_d(n-1), SK(n) | Ni | Nr), then
    the seven keys again with the IKE_SA_INIT nonces and SPIs."""
    data = shared_secret + context.ni + context.nr
    seed_key = prf(keys.sk_d, data)
    return expand_ike_keys(prf, seed_key, context, sizes)


def apply_ppk(prf: Prf, keys: IkeKeys, ppk: bytes) -> IkeKeys:
    """RFC 8784 §3: SK_d, SK_pi and SK_pr become prf+(PPK, SK_x'); the
    encryption and integrity keys stay. Call on the unmodified keys."""

    def mix(key: bytes) -> bytes:
        return prf.plus(ppk, key, len(key))

    return replace(
        keys, sk_d=mix(keys.sk_d), sk_pi=mix(keys.sk_pi), sk_pr=mix(keys.sk_pr)
    )


def rekey_skeyseed(
    prf: Prf, old_sk_d: bytes, shared_secrets: list[bytes], ni: bytes, nr: bytes
) -> bytes:
    """RFC 7296 §2.18 and RFC 9370 §2.2.4 for the IKE SA rekey:
    SKEYSEED = prf(SK_d(old), SK(0) | Ni | Nr | SK(1) | ... | SK(n))."""
    first, rest = shared_secrets[0], b"".join(shared_secrets[1:])
    return prf(old_sk_d, first + ni + nr + rest)


def child_keymat(
    prf: Prf, sk_d: bytes, shared_secrets: list[bytes], ni: bytes, nr: bytes, size: int
) -> bytes:
    """RFC 7296 §2.17 and RFC 9370 §2.2.4: KEYMAT = prf+(SK_d, Ni | Nr)
    without PFS, prf+(SK_d, SK(0) | Ni | Nr | SK(1) | ... | SK(n)) with it."""
    if not shared_secrets:
        return prf.plus(sk_d, ni + nr, size)
    first, rest = shared_secrets[0], b"".join(shared_secrets[1:])
    return prf.plus(sk_d, first + ni + nr + rest, size)


@dataclass(frozen=True, slots=True)
class ChildKeymat:
    """KEYMAT split per RFC 7296 §2.17: initiator-to-responder keys first."""

    encryption_i: bytes
    integrity_i: bytes
    encryption_r: bytes
    integrity_r: bytes

    def __repr__(self) -> str:
        return "ChildKeymat(<hidden>)"

    __str__ = __repr__


def split_child_keymat(keymat: bytes, encryption: int, integrity: int) -> ChildKeymat:
    """Encryption key then integrity key, per direction (RFC 7296 §2.17)."""
    per_direction = encryption + integrity
    first, second = keymat[:per_direction], keymat[per_direction:]
    return ChildKeymat(
        encryption_i=first[:encryption],
        integrity_i=first[encryption:],
        encryption_r=second[:encryption],
        integrity_r=second[encryption:],
    )


def intauth_step(
    prf: Prf, sk_p: bytes, previous: bytes, a_octets: bytes, p_octets: bytes
) -> bytes:
    """RFC 9242 §3.3.2: IntAuth_N = prf(SK_pN, IntAuth_N-1 | IntAuth_NA |
    IntAuth_NP), with an empty IntAuth_0."""
    return prf(sk_p, previous + a_octets + p_octets)


def intauth_value(intauth_i: bytes, intauth_r: bytes, ike_auth_mid: int) -> bytes:
    """RFC 9242 §3.3.2: IntAuth = IntAuth_iN | IntAuth_rN | IKE_AUTH_MID."""
    return intauth_i + intauth_r + ike_auth_mid.to_bytes(4, "big")


def signed_octets(
    prf: Prf,
    real_message: bytes,
    peer_nonce: bytes,
    sk_p: bytes,
    id_body: bytes,
    intauth: bytes = b"",
) -> bytes:
    """RFC 7296 §2.15 (and RFC 9242 §3.3.2 for IntAuth):
    RealMessage | NonceData | prf(SK_p, RestOfIDPayload) [| IntAuth]."""
    maced_id = prf(sk_p, id_body)
    return real_message + peer_nonce + maced_id + intauth


def psk_auth(prf: Prf, shared_secret: bytes, octets: bytes) -> bytes:
    """RFC 7296 §2.15: AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"),
    <SignedOctets>)."""
    return prf(prf(shared_secret, KEY_PAD), octets)
