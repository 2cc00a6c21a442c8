"""Snapshots of IKE and Child SAs for `qsgw sas`, metrics and HA status.

Plain frozen values built from the engine's records: SPIs, addresses,
identities, algorithm names and times, never key material.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from qsgw.ike import proposals, ts
from qsgw.ike.constants import ADDKE_TYPES, TransformType
from qsgw.ike.sa import ChildSa, IkeSa


@dataclass(frozen=True, slots=True)
class ChildSaInfo:
    unique_id: int
    name: str
    state: str
    inbound_spi: str  # hex
    outbound_spi: str
    algorithms: dict[str, str]  # encr, integ, esn, ke, ke1..ke7
    local_ts: list[str]
    remote_ts: list[str]
    established: float
    rekey_time: float | None
    life_time: float | None
    rekeys: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class IkeSaInfo:
    unique_id: int
    connection: str
    state: str
    initiator: bool
    spi_i: str  # hex
    spi_r: str
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    local_id: str
    remote_id: str
    algorithms: dict[str, str]  # encr, integ, prf, ke, ke1..ke7
    ppk: bool
    nat_local: bool
    nat_remote: bool
    established: float
    rekey_time: float | None
    rekeys: int
    children: list[ChildSaInfo]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ike_algorithms(sa: IkeSa) -> dict[str, str]:
    if sa.proposal is None:
        return {}
    names = proposals.algorithm_names(sa.proposal)
    # optional rounds that were not run
    for ttype in ADDKE_TYPES:
        key = f"ke{ttype - TransformType.ADDKE1 + 1}"
        if names.get(key) == "none":
            del names[key]
    return names


def child_snapshot(child: ChildSa) -> ChildSaInfo:
    algorithms = proposals.algorithm_names(child.proposal) if child.proposal else {}
    return ChildSaInfo(
        unique_id=child.unique_id,
        name=child.spec.name,
        state=child.state.value,
        inbound_spi=child.inbound_spi.hex(),
        outbound_spi=child.outbound_spi.hex(),
        algorithms=algorithms,
        local_ts=ts.describe(child.local_ts),
        remote_ts=ts.describe(child.remote_ts),
        established=child.established,
        rekey_time=child.rekey_at,
        life_time=child.expire_at,
        rekeys=child.rekeys,
    )


def snapshot(sa: IkeSa) -> IkeSaInfo:
    return IkeSaInfo(
        unique_id=sa.unique_id,
        connection=sa.connection.name,
        state=sa.state.value,
        initiator=sa.initiator,
        spi_i=sa.spi_i.hex(),
        spi_r=sa.spi_r.hex(),
        local_address=str(sa.local[0]),
        local_port=sa.local[1],
        remote_address=str(sa.remote[0]),
        remote_port=sa.remote[1],
        local_id=sa.local_id or str(sa.connection.local_id),
        remote_id=sa.remote_id,
        algorithms=_ike_algorithms(sa),
        ppk=sa.ppk_used,
        nat_local=sa.nat_local,
        nat_remote=sa.nat_remote,
        established=sa.established,
        rekey_time=sa.rekey_at,
        rekeys=sa.rekeys,
        children=[child_snapshot(c) for c in sa.children.values()],
    )
