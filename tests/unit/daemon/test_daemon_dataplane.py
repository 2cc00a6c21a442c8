"""Child SA events become data-plane calls, make-before-break on rekey."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, ip_network

import pytest

from qsgw.daemon.dataplane import (
    ChildInstaller,
    DataPlaneUnavailable,
    UdpSender,
    create_backend,
)
from qsgw.esp.backend import Direction, EspAlgorithm, PolicySpec
from qsgw.esp.recording import RecordingBackend
from qsgw.ike.config import (
    ChildSpec,
    ConnectionSpec,
    Identity,
    StartAction,
    TrafficSelectorSpec,
)
from qsgw.ike.constants import IdType
from qsgw.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaKeys,
    ChildSaRekeyed,
)

LOCAL = IPv4Address("192.0.2.1")
REMOTE = IPv4Address("198.51.100.1")
LOCAL_TS = (TrafficSelectorSpec(IPv4Network("10.1.0.0/16")),)
REMOTE_TS = (TrafficSelectorSpec(IPv4Network("10.2.0.0/16")),)


def keys(inbound: int, outbound: int, *, udp: bool = False) -> ChildSaKeys:
    return ChildSaKeys(
        inbound_spi=inbound,
        outbound_spi=outbound,
        encryption="aesgcm16",
        key_bits=256,
        integrity="none",
        esn=False,
        encryption_key_in=b"\x01" * 36,
        integrity_key_in=b"",
        encryption_key_out=b"\x02" * 36,
        integrity_key_out=b"",
        local_address=LOCAL,
        remote_address=REMOTE,
        local_port=4500 if udp else 500,
        remote_port=4500 if udp else 500,
        udp_encapsulation=udp,
        local_ts=LOCAL_TS,
        remote_ts=REMOTE_TS,
        replay_window=128,
        if_id=0,
    )


CHILD = ChildSpec("net", LOCAL_TS, REMOTE_TS, (), rekey_bytes=1000, life_time=3960)


def installer() -> tuple[ChildInstaller, RecordingBackend]:
    backend = RecordingBackend()
    return ChildInstaller(backend, lambda conn, child: CHILD), backend


def established(child_sa: int, k: ChildSaKeys) -> ChildSaEstablished:
    return ChildSaEstablished(1, child_sa, "site", "net", k)


def deleted(child_sa: int, k: ChildSaKeys) -> ChildSaDeleted:
    return ChildSaDeleted(
        1,
        child_sa,
        "site",
        "net",
        k.inbound_spi,
        k.outbound_spi,
        LOCAL,
        REMOTE,
        "local",
    )


def test_established_child_installs_sa_pair_policies_and_route() -> None:
    child, backend = installer()

    child.install(established(2, keys(0x1001, 0x2002)))

    assert backend.methods() == [
        "add_sa",
        "add_sa",
        "add_policy",
        "add_policy",
        "install_route",
    ]
    inbound = backend.sas[(0x1001, LOCAL)]
    outbound = backend.sas[(0x2002, REMOTE)]
    assert (inbound.direction, inbound.source) == (Direction.INBOUND, REMOTE)
    assert (outbound.direction, outbound.source) == (Direction.OUTBOUND, LOCAL)
    assert inbound.encryption_key == b"\x01" * 36
    assert outbound.encryption_key == b"\x02" * 36
    assert inbound.algorithm == EspAlgorithm.AES_GCM_16
    assert inbound.reqid == outbound.reqid == 1
    assert backend.routes[(ip_network("10.2.0.0/16"), 0)].source == IPv4Address(
        "10.1.0.1"
    )


def test_policies_point_each_way_with_tunnel_endpoints() -> None:
    child, backend = installer()

    child.install(established(2, keys(0x1001, 0x2002)))

    by_direction = {p.direction: p for p in backend.policies}
    out = by_direction[Direction.OUTBOUND]
    inbound = by_direction[Direction.INBOUND]
    assert (out.tunnel_source, out.tunnel_destination) == (LOCAL, REMOTE)
    assert (inbound.tunnel_source, inbound.tunnel_destination) == (REMOTE, LOCAL)
    assert out.local == inbound.local == IPv4Network("10.1.0.0/16")


def test_lifetime_takes_volume_limits_from_child_spec() -> None:
    child, backend = installer()

    child.install(established(2, keys(0x1001, 0x2002)))

    lifetime = backend.sas[(0x1001, LOCAL)].lifetime
    assert (lifetime.soft_bytes, lifetime.hard_bytes) == (1000, 1100)
    assert lifetime.hard_seconds > CHILD.life_time


def test_udp_encapsulation_ports_seen_from_each_sa_source() -> None:
    child, backend = installer()
    k = keys(0x1001, 0x2002, udp=True)

    child.install(established(2, k))

    inbound = backend.sas[(0x1001, LOCAL)].encapsulation
    outbound = backend.sas[(0x2002, REMOTE)].encapsulation
    assert inbound is not None and outbound is not None
    assert (inbound.source_port, inbound.destination_port) == (4500, 4500)


def test_rekey_adds_new_sas_before_old_ones_go_and_keeps_policies() -> None:
    child, backend = installer()
    old, new = keys(0x1001, 0x2002), keys(0x1003, 0x2004)
    child.install(established(2, old))
    policies = set(backend.policies)
    backend.calls.clear()

    child.install(ChildSaRekeyed(1, 2, 3, "site", "net", new))
    child.remove(deleted(2, old))

    assert [(c.method, c.args[0]) for c in backend.calls if c.method != "add_sa"] == [
        ("delete_sa", 0x1001),
        ("delete_sa", 0x2002),
    ]
    assert backend.methods()[:2] == ["add_sa", "add_sa"]
    assert backend.policies == policies
    assert set(backend.sas) == {(0x1003, LOCAL), (0x2004, REMOTE)}


def test_rekey_we_answered_sends_on_the_new_sa_only_after_the_old_goes() -> None:
    child, backend = installer()
    old, new = keys(0x1001, 0x2002), keys(0x1003, 0x2004)
    child.install(established(2, old))
    backend.calls.clear()

    # CREATE_CHILD_SA <-- { SA, Ni, [KEi], TSi, TSr, N(REKEY_SA) } answered
    child.install(ChildSaRekeyed(1, 2, 3, "site", "net", new, initiator=False))
    assert [(c.method, c.args[0].spi) for c in backend.calls] == [("add_sa", 0x1003)]
    assert (0x2004, REMOTE) not in backend.sas

    # INFORMATIONAL <-- { D(old) }: the peer has switched, so do we
    child.remove(deleted(2, old))
    calls = [(c.method, c.args[0] if c.method == "delete_sa" else c.args[0].spi)
             for c in backend.calls[1:]]  # fmt: skip
    assert calls == [
        ("add_sa", 0x2004),
        ("delete_sa", 0x1001),
        ("delete_sa", 0x2002),
    ]
    assert set(backend.sas) == {(0x1003, LOCAL), (0x2004, REMOTE)}


def test_last_child_deleted_removes_policies_and_route() -> None:
    child, backend = installer()
    k = keys(0x1001, 0x2002)
    child.install(established(2, k))

    child.remove(deleted(2, k))

    assert backend.sas == {} and backend.policies == set() and backend.routes == {}


def test_remove_all_clears_the_data_plane() -> None:
    child, backend = installer()
    child.install(established(2, keys(0x1001, 0x2002)))
    child.install(established(4, keys(0x1005, 0x2006)))

    child.remove_all()

    assert backend.sas == {} and backend.policies == set() and backend.routes == {}


def test_unknown_child_deletion_changes_nothing() -> None:
    child, backend = installer()

    child.remove(deleted(9, keys(0x1001, 0x2002)))

    assert backend.calls == []


def test_data_plane_failure_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    child, _ = installer()
    k = keys(0x1001, 0x2002)
    child.install(established(2, k))

    child.install(established(3, k))  # the same SPIs again: refused

    assert "data plane add_sa failed" in caplog.text


def trap_connection() -> ConnectionSpec:
    trap = ChildSpec("net", LOCAL_TS, REMOTE_TS, (), start_action=StartAction.TRAP)
    return ConnectionSpec(
        name="site",
        local_addresses=(LOCAL,),
        remote_addresses=(REMOTE,),
        local_id=Identity(IdType.ID_FQDN, b"a"),
        remote_id=None,
        ike_proposals=(),
        children=(trap,),
    )


def test_trap_installs_outbound_policy_and_maps_reqid_back() -> None:
    child, backend = installer()

    child.install_traps(trap_connection())

    (policy,) = backend.policies
    assert policy.direction == Direction.OUTBOUND
    assert child.by_reqid(policy.reqid) == ("site", "net")


def test_trap_policy_outlives_the_child_sa_that_shares_it() -> None:
    child, backend = installer()
    child.install_traps(trap_connection())
    k = keys(0x1001, 0x2002)
    child.install(established(2, k))

    child.remove(deleted(2, k))

    assert [p.direction for p in backend.policies] == [Direction.OUTBOUND]
    child.remove_traps("site")
    assert backend.policies == set()


def test_recording_data_plane_is_created_by_name() -> None:
    assert create_backend("recording", UdpSender()).name == "recording"


def test_unknown_data_plane_is_refused() -> None:
    with pytest.raises(DataPlaneUnavailable, match="unknown data plane 'dpdk'"):
        create_backend("dpdk", UdpSender())


def test_recording_backend_spis_are_unique_and_in_order() -> None:
    backend = RecordingBackend(first_spi=0x100)

    spis = [backend.allocate_spi(LOCAL, REMOTE) for _ in range(3)]

    assert spis == [0x100, 0x101, 0x102]


def test_recording_backend_refuses_unknown_policy_removal() -> None:
    backend = RecordingBackend()
    policy = PolicySpec(
        Direction.OUTBOUND, LOCAL_TS[0].network, REMOTE_TS[0].network, LOCAL, REMOTE, 1
    )
    with pytest.raises(Exception, match="no such policy"):
        backend.delete_policy(policy)
