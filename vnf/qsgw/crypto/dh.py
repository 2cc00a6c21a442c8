"""Diffie-Hellman key exchange methods: X25519/X448, ECP groups, MODP groups.

Wire forms (the data of a KE payload, RFC 7296 §3.4):

- Curve25519 / Curve448 (RFC 8031): the 32 / 56 octet u-coordinate of
  RFC 7748; the shared secret is the X25519 / X448 output.
- ECP-256/384/521 (RFC 5903 §7): x | y, each coordinate zero-padded to the
  field size, with no point-format octet; the shared secret is x alone.
- MODP-2048/3072 (RFC 3526): g^x mod p as a big-endian number padded to the
  size of p (RFC 7296 §3.4); the shared secret is padded the same way.

Private values come from the caller's `rng`, so tests can fix them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519

from qsgw.crypto.api import CryptoError, InvalidPublicValue, Random

# RFC 3526 §3 and §4, generator 2
MODP_2048_PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1"
    "29024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245"
    "E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D"
    "C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D"
    "670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9"
    "DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
MODP_3072_PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1"
    "29024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245"
    "E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D"
    "C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D"
    "670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9"
    "DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64"
    "ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6B"
    "F12FFA06D98A0864D87602733EC86A64521F2B18177B200C"
    "BBE117577A615D6C770988C0BAD946E208E24FA074E5AB31"
    "43DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
    16,
)
MODP_GENERATOR = 2
# A 512-bit exponent is more than twice the strength of either group
# (RFC 3526 §8), and keeps a MODP-3072 exchange in a few milliseconds.
MODP_EXPONENT_OCTETS = 64

# FIPS 186-4 D.1.2: field primes and group orders of the NIST curves
_P256_PRIME = 2**256 - 2**224 + 2**192 + 2**96 - 1
_P384_PRIME = 2**384 - 2**128 - 2**96 + 2**32 - 1
_P521_PRIME = 2**521 - 1
_P256_ORDER = int(
    "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16
)
_P384_ORDER = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
    "C7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
    16,
)
_P521_ORDER = int(
    "01" + "FF" * 32 + "FA51868783BF2F966B7FCC0148F709A5"
    "D03BB5C9B8899C47AEBB6FB71E91386409",
    16,
)
_MAX_SCALAR_DRAWS = 64


@dataclass(frozen=True, slots=True)
class DhExchange:
    """Our half of one Diffie-Hellman exchange: our public value, and the
    private value hidden inside `_agree` (never shown in repr)."""

    public_value: bytes
    _agree: Callable[[bytes], bytes] = field(repr=False, compare=False)

    def complete(self, peer_value: bytes) -> bytes:
        return self._agree(peer_value)


@dataclass(frozen=True, slots=True)
class _DhMethod:
    """Common shape of the DH methods: both sides send the same size."""

    id: int
    name: str
    value_size: int

    @property
    def initiator_size(self) -> int:
        return self.value_size

    @property
    def responder_size(self) -> int:
        return self.value_size

    def initiate(self, rng: Random) -> DhExchange:
        raise NotImplementedError

    def respond(self, peer_value: bytes, rng: Random) -> tuple[bytes, bytes]:
        # check the peer's value before spending a key generation on it
        self._validate(peer_value)
        ours = self.initiate(rng)
        return ours.public_value, ours.complete(peer_value)

    def respond_with(self, ours: DhExchange, peer_value: bytes) -> tuple[bytes, bytes]:
        """`respond` with a key pair made earlier by `initiate` (used once)."""
        self._validate(peer_value)
        return ours.public_value, ours.complete(peer_value)

    def _validate(self, peer_value: bytes) -> None:
        self._check_size(peer_value)

    def _check_size(self, peer_value: bytes) -> None:
        if len(peer_value) != self.value_size:
            raise InvalidPublicValue("key exchange data has the wrong length")


@dataclass(frozen=True, slots=True)
class EcxMethod(_DhMethod):
    """Curve25519 (31) or Curve448 (32), RFC 8031."""

    def initiate(self, rng: Random) -> DhExchange:
        if self.value_size == 32:
            return self._x25519(rng(32))
        return self._x448(rng(56))

    def _x25519(self, scalar: bytes) -> DhExchange:
        private = x25519.X25519PrivateKey.from_private_bytes(scalar)

        def agree(peer_value: bytes) -> bytes:
            self._check_size(peer_value)
            peer = x25519.X25519PublicKey.from_public_bytes(peer_value)
            return _exchange(lambda: private.exchange(peer))

        return DhExchange(private.public_key().public_bytes_raw(), agree)

    def _x448(self, scalar: bytes) -> DhExchange:
        private = x448.X448PrivateKey.from_private_bytes(scalar)

        def agree(peer_value: bytes) -> bytes:
            self._check_size(peer_value)
            peer = x448.X448PublicKey.from_public_bytes(peer_value)
            return _exchange(lambda: private.exchange(peer))

        return DhExchange(private.public_key().public_bytes_raw(), agree)


@dataclass(frozen=True, slots=True)
class EcpMethod(_DhMethod):
    """ECP-256 (19), ECP-384 (20), ECP-521 (21): RFC 5903."""

    curve: ec.EllipticCurve = field(repr=False)
    field_prime: int = field(repr=False)
    order: int = field(repr=False)

    @property
    def coordinate_size(self) -> int:
        return self.value_size // 2

    def initiate(self, rng: Random) -> DhExchange:
        scalar = _draw_scalar(rng, self.order, self.coordinate_size)
        private = ec.derive_private_key(scalar, self.curve)
        ours = private.public_key().public_numbers()

        def agree(peer_value: bytes) -> bytes:
            peer = self._peer_point(peer_value)
            return _exchange(lambda: private.exchange(ec.ECDH(), peer))

        public = self._encode(ours.x) + self._encode(ours.y)
        return DhExchange(public, agree)

    def _validate(self, peer_value: bytes) -> None:
        self._peer_point(peer_value)

    def _peer_point(self, peer_value: bytes) -> ec.EllipticCurvePublicKey:
        """RFC 5903 §7 x | y, checked to be a point of the group.

        The identity has no affine x | y form; the only candidate, (0, 0),
        is not on these curves and fails the curve check.
        """
        self._check_size(peer_value)
        size = self.coordinate_size
        x = int.from_bytes(peer_value[:size], "big")
        y = int.from_bytes(peer_value[size:], "big")
        if x >= self.field_prime or y >= self.field_prime:
            raise InvalidPublicValue("point coordinates out of range")

        numbers = ec.EllipticCurvePublicNumbers(x, y, self.curve)
        try:
            return numbers.public_key()
        except ValueError:
            raise InvalidPublicValue("point is not on the curve") from None

    def _encode(self, coordinate: int) -> bytes:
        return coordinate.to_bytes(self.coordinate_size, "big")


@dataclass(frozen=True, slots=True)
class ModpMethod(_DhMethod):
    """MODP-2048 (14) and MODP-3072 (15), RFC 3526."""

    prime: int = field(repr=False)

    def initiate(self, rng: Random) -> DhExchange:
        exponent = _modp_exponent(rng)
        public = pow(MODP_GENERATOR, exponent, self.prime)

        def agree(peer_value: bytes) -> bytes:
            peer = self._peer_value(peer_value)
            secret = pow(peer, exponent, self.prime)
            return secret.to_bytes(self.value_size, "big")

        return DhExchange(public.to_bytes(self.value_size, "big"), agree)

    def _validate(self, peer_value: bytes) -> None:
        self._peer_value(peer_value)

    def _peer_value(self, peer_value: bytes) -> int:
        self._check_size(peer_value)
        value = int.from_bytes(peer_value, "big")
        # 1 and p-1 generate subgroups of order 1 and 2 (RFC 6989 §2.1)
        if value <= 1 or value >= self.prime - 1:
            raise InvalidPublicValue("public value out of range")
        return value


def _exchange(operation: Callable[[], bytes]) -> bytes:
    # e.g. X25519 of a low-order point: the library refuses an all-zero result
    try:
        return operation()
    except ValueError:
        raise InvalidPublicValue("key exchange failed") from None


def _draw_scalar(rng: Random, order: int, size: int) -> int:
    """A private scalar in [1, order-1] (FIPS 186-4 B.4.2, testing candidates).

    `size` octets are drawn and masked to the bit length of the order, so
    that a known scalar fed through `rng` comes out unchanged.
    """
    mask = (1 << order.bit_length()) - 1
    for _ in range(_MAX_SCALAR_DRAWS):
        candidate = int.from_bytes(rng(size), "big") & mask
        if 1 <= candidate < order:
            return candidate
    raise CryptoError("the random source gave no valid private key")


def _modp_exponent(rng: Random) -> int:
    # the top bit fixes the exponent's length, so it is never tiny
    drawn = int.from_bytes(rng(MODP_EXPONENT_OCTETS), "big")
    return drawn | (1 << (8 * MODP_EXPONENT_OCTETS - 1))


CURVE25519 = EcxMethod(31, "Curve25519", 32)
CURVE448 = EcxMethod(32, "Curve448", 56)
ECP_256 = EcpMethod(19, "ECP-256", 64, ec.SECP256R1(), _P256_PRIME, _P256_ORDER)
ECP_384 = EcpMethod(20, "ECP-384", 96, ec.SECP384R1(), _P384_PRIME, _P384_ORDER)
ECP_521 = EcpMethod(21, "ECP-521", 132, ec.SECP521R1(), _P521_PRIME, _P521_ORDER)
MODP_2048 = ModpMethod(14, "MODP-2048", 256, MODP_2048_PRIME)
MODP_3072 = ModpMethod(15, "MODP-3072", 384, MODP_3072_PRIME)

DH_METHODS: tuple[_DhMethod, ...] = (
    CURVE25519,
    CURVE448,
    ECP_256,
    ECP_384,
    ECP_521,
    MODP_2048,
    MODP_3072,
)
