"""Key pairs made ahead of the exchanges that use them.

An IKE SA set-up waits for each key generation on its path: the
initiator's X25519 and ML-KEM key pairs, the responder's X25519 key pair
(ML-KEM's Encaps needs the peer's key, so the responder's half of it
cannot be made ahead). A daemon that is idle between messages can make
them beforehand: `initiator` and `respond` take a pair made ahead when
there is one and make a fresh one otherwise, and `make_one` adds a pair
for a method that has been used, until each has `depth` waiting. A pair
is used once and dropped, as one made on the spot would be.

With `depth` 0 (the default) nothing is made ahead and each call draws
from `rng` exactly as the method's own `initiate` and `respond` do.
"""

from __future__ import annotations

from qsgw.crypto.api import KeyExchangeInitiator, Random
from qsgw.crypto.dh import DhExchange, _DhMethod
from qsgw.crypto.key_exchange import ke_method


class KeySupply:
    """Key exchange halves for the IKE core, made ahead where `depth` > 0."""

    def __init__(self, rng: Random, depth: int = 0) -> None:
        self._rng = rng
        self.depth = depth
        self._ready: dict[int, list[KeyExchangeInitiator]] = {}

    def initiator(self, method_id: int) -> KeyExchangeInitiator:
        """Our first half of an exchange (KEi): a DH key pair or ML-KEM ek."""
        method = ke_method(method_id)
        ready = self._ready_for(method_id)
        return ready.pop() if ready else method.initiate(self._rng)

    def respond(self, method_id: int, peer_value: bytes) -> tuple[bytes, bytes]:
        """(our KE data, shared secret) for the peer's KEi; raises
        InvalidPublicValue as the method's `respond` does."""
        method = ke_method(method_id)
        if isinstance(method, _DhMethod):
            ready = self._ready_for(method_id)
            if ready:
                ours = ready.pop()
                assert isinstance(ours, DhExchange)
                return method.respond_with(ours, peer_value)
        return method.respond(peer_value, self._rng)

    def waiting(self, method_id: int) -> int:
        """Pairs of this method made ahead and not yet taken."""
        return len(self._ready.get(method_id, ()))

    @property
    def wanted(self) -> bool:
        """Whether a method in use has fewer than `depth` pairs waiting."""
        return any(len(r) < self.depth for r in self._ready.values())

    def make_one(self) -> None:
        """Make one pair for the method in use that has the fewest waiting."""
        if not self._ready:
            return
        method_id, ready = min(self._ready.items(), key=lambda item: len(item[1]))
        if len(ready) < self.depth:
            ready.append(ke_method(method_id).initiate(self._rng))

    def _ready_for(self, method_id: int) -> list[KeyExchangeInitiator]:
        if self.depth <= 0:
            return []
        return self._ready.setdefault(method_id, [])
