"""The connections a responder may pick for an IKE SA (RFC 7296 §2.15).

IKE_SA_INIT narrows the connections down to those that accept the pair of
addresses; IKE_AUTH picks among them by the initiator's identity (IDi). With
many connections on one pair of addresses (one per remote site behind a
single peer, say) both steps are lookups here instead of scans.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from qsgw.ike.config import ConnectionSpec
from qsgw.ike.payloads import IPAddress

IdentityKey = tuple[int, bytes]  # ID Type and Identification Data


class Candidates:
    """Connections in configuration order, indexed by remote identity."""

    def __init__(self, specs: Iterable[ConnectionSpec]) -> None:
        self.specs: tuple[ConnectionSpec, ...] = tuple(specs)
        self._by_identity: dict[IdentityKey, list[int]] = {}
        self._any_identity: list[int] = []
        for position, spec in enumerate(self.specs):
            if spec.remote_id is None:
                self._any_identity.append(position)
                continue
            key = (int(spec.remote_id.id_type), spec.remote_id.data)
            self._by_identity.setdefault(key, []).append(position)

    def __len__(self) -> int:
        return len(self.specs)

    def accepting(self, id_type: int, data: bytes) -> Iterator[ConnectionSpec]:
        """The connections that accept this remote identity, in order."""
        named = self._by_identity.get((id_type, data), [])
        for position in heapq.merge(named, self._any_identity):
            yield self.specs[position]


def for_addresses(
    connections: Iterable[ConnectionSpec], local: IPAddress, remote: IPAddress
) -> Candidates:
    """The connections that accept this pair of addresses."""
    return Candidates(
        spec
        for spec in connections
        if (not spec.local_addresses or local in spec.local_addresses)
        and (not spec.remote_addresses or remote in spec.remote_addresses)
    )


NO_CANDIDATES = Candidates(())
