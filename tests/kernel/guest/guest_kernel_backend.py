"""The kernel backend against a real kernel: runs INSIDE the test VM.

`tests/kernel/test_kernel_backend.py` boots the VM once and runs this file
with pytest there; each case here is reported back as a case of its own.
Two namespaces joined by veth get their SAs, policies and routes from
KernelBackend, and real packets cross the tunnel.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import ip_address, ip_network

import pytest

from netns import (
    Pair,
    Side,
    background_in,
    kernel_backend,
    make_pair,
    run_in,
    sa_counters,
    sh,
    udp_receiver,
    udp_sender,
)
from qsgw.esp.backend import (
    BackendEvent,
    BackendEventKind,
    Direction,
    EspAlgorithm,
    EspIntegrity,
    Lifetime,
    PolicySpec,
    SaSpec,
    UdpEncapsulation,
)
from qsgw.esp.kernel import KernelBackend, available, crypto_driver

SEED = b"kernel-backend-guest"
NO_LIMITS = Lifetime()


def key(label: str, size: int) -> bytes:
    # deterministic per test, never printed
    out = b""
    counter = 0
    import hashlib

    while len(out) < size:
        out += hashlib.sha256(SEED + label.encode() + bytes([counter])).digest()
        counter += 1
    return out[:size]


def sa_pair(
    pair: Pair,
    spi_ab: int,
    spi_ba: int,
    *,
    algorithm: EspAlgorithm = EspAlgorithm.AES_GCM_16,
    encap: bool = False,
    lifetime: Lifetime = NO_LIMITS,
    reqid: int = 1,
) -> tuple[list[SaSpec], list[SaSpec]]:
    """(SAs for side a, SAs for side b): a->b with spi_ab, b->a with spi_ba."""
    out_a, in_b = _sa(pair.a, pair.b, spi_ab, algorithm, encap, lifetime, reqid)
    out_b, in_a = _sa(pair.b, pair.a, spi_ba, algorithm, encap, lifetime, reqid)
    return [out_a, in_a], [out_b, in_b]


def _sa(
    src: Side,
    dst: Side,
    spi: int,
    algorithm: EspAlgorithm,
    encap: bool,
    lifetime: Lifetime,
    reqid: int,
) -> tuple[SaSpec, SaSpec]:
    if algorithm is EspAlgorithm.AES_CBC:
        enc, integ, ikey = (
            key(f"e{spi}", 32),
            EspIntegrity.HMAC_SHA2_256_128,
            key(f"i{spi}", 32),
        )
    else:
        enc, integ, ikey = key(f"e{spi}", 36), EspIntegrity.NONE, b""
    common = {
        "spi": spi,
        "source": ip_address(src.outer),
        "destination": ip_address(dst.outer),
        "algorithm": algorithm,
        "encryption_key": enc,
        "key_bits": 256,
        "integrity": integ,
        "integrity_key": ikey,
        "esn": True,
        "replay_window": 4096,
        "lifetime": lifetime,
        "reqid": reqid,
    }
    out = SaSpec(
        direction=Direction.OUTBOUND,
        encapsulation=UdpEncapsulation(4500, 4500) if encap else None,
        **common,  # type: ignore[arg-type]
    )
    inbound = SaSpec(
        direction=Direction.INBOUND,
        encapsulation=UdpEncapsulation(4500, 4500) if encap else None,
        **common,  # type: ignore[arg-type]
    )
    return out, inbound


def policies(me: Side, peer: Side, reqid: int = 1) -> list[PolicySpec]:
    local, remote = ip_network(me.inner_net), ip_network(peer.inner_net)
    return [
        PolicySpec(
            Direction.OUTBOUND, local, remote,
            ip_address(me.outer), ip_address(peer.outer), reqid,
        ),
        PolicySpec(
            Direction.INBOUND, local, remote,
            ip_address(peer.outer), ip_address(me.outer), reqid,
        ),
    ]  # fmt: skip


def install(side: Side, peer: Side, sas: list[SaSpec]) -> None:
    with kernel_backend() as backend:
        for sa in sas:
            backend.add_sa(sa)
        for policy in policies(side, peer):
            backend.add_policy(policy)
        backend.install_route(ip_network(peer.inner_net), ip_address(side.inner), 0)


def tunnel(pair: Pair, **kwargs: object) -> None:
    sas_a, sas_b = sa_pair(pair, 0x1000, 0x2000, **kwargs)  # type: ignore[arg-type]
    run_in(pair.a.namespace, install, pair.a, pair.b, sas_a)
    run_in(pair.b.namespace, install, pair.b, pair.a, sas_b)


def ping(pair: Pair, count: int = 3) -> str:
    family = "-6" if ":" in pair.b.inner else "-4"
    return sh(
        "ip", "netns", "exec", pair.a.namespace, "ping", family, "-c", str(count),
        "-i", "0.2", "-W", "5", "-I", pair.a.inner, pair.b.inner,
    )  # fmt: skip


@pytest.fixture
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    outer, inner = request.param
    made = make_pair(f"k{os.getpid() % 1000}{outer}{inner}", outer, inner)
    yield made
    made.delete()


FAMILIES = [(4, 4), (6, 6), (6, 4), (4, 6)]
NAMES = ["ipv4_in_ipv4", "ipv6_in_ipv6", "ipv4_in_ipv6", "ipv6_in_ipv4"]


@pytest.mark.parametrize("pair", FAMILIES, ids=NAMES, indirect=True)
def test_ping_crosses_the_tunnel_and_esp_counters_move(pair: Pair) -> None:
    tunnel(pair)
    assert " 0% packet loss" in ping(pair)
    sent = run_in(pair.a.namespace, sa_counters, 0x1000, pair.b.outer)
    received = run_in(pair.b.namespace, sa_counters, 0x1000, pair.b.outer)
    assert sent.packets == 3 and received.packets == 3
    assert sent.sequence == 3 and received.sequence == 3


def udp_encap_socket(port: int, seconds: float) -> None:
    # the kernel decapsulates ESP-in-UDP only on a socket that asks for it
    family = socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.setsockopt(socket.IPPROTO_UDP, 100, 2)  # UDP_ENCAP, UDP_ENCAP_ESPINUDP
    time.sleep(seconds)
    s.close()


@pytest.mark.parametrize("pair", [(4, 4)], ids=["ipv4"], indirect=True)
def test_udp_encapsulated_esp_carries_traffic(pair: Pair) -> None:
    tunnel(pair, encap=True)
    with background_in(pair.a.namespace, udp_encap_socket, 4500, 8), \
         background_in(pair.b.namespace, udp_encap_socket, 4500, 8):  # fmt: skip
        time.sleep(1)
        assert " 0% packet loss" in ping(pair)


@pytest.mark.parametrize("pair", [(4, 4)], ids=["ipv4"], indirect=True)
@pytest.mark.parametrize(
    "algorithm",
    [EspAlgorithm.CHACHA20_POLY1305, EspAlgorithm.AES_CBC],
    ids=["chacha20poly1305", "aescbc"],
)
def test_other_algorithms_carry_traffic(pair: Pair, algorithm: EspAlgorithm) -> None:
    tunnel(pair, algorithm=algorithm)
    assert " 0% packet loss" in ping(pair)


def rekey_side(side: Side, peer: Side, new: list[SaSpec], old_out: SaSpec) -> None:
    with kernel_backend() as backend:
        for sa in new:  # inbound first, then the new outbound
            backend.add_sa(sa)
        backend.delete_sa(old_out.spi, old_out.destination)


def delete_sa(spi: int, destination: str) -> None:
    with kernel_backend() as backend:
        backend.delete_sa(spi, ip_address(destination))


@pytest.mark.parametrize("pair", [(4, 4)], ids=["ipv4"], indirect=True)
def test_child_sa_rekey_under_traffic_loses_nothing(pair: Pair) -> None:
    tunnel(pair)
    old_a, old_b = sa_pair(pair, 0x1000, 0x2000)
    new_a, new_b = sa_pair(pair, 0x3000, 0x4000)
    # make-before-break: inbound first everywhere, then outbound, then old out
    new_a_in_first = [new_a[1], new_a[0]]
    new_b_in_first = [new_b[1], new_b[0]]
    count = 400
    with background_in(
        pair.b.namespace, udp_receiver, pair.b.inner, 5001, count, 20
    ) as received:
        time.sleep(0.5)
        with background_in(
            pair.a.namespace, udp_sender, pair.a.inner, pair.b.inner, 5001,
            count, 0.01,
        ) as sent:  # fmt: skip
            time.sleep(1.0)
            run_in(pair.b.namespace, install_only, new_b_in_first[:1])
            run_in(pair.a.namespace, install_only, new_a_in_first[:1])
            run_in(
                pair.a.namespace,
                rekey_side,
                pair.a,
                pair.b,
                new_a_in_first[1:],
                old_a[0],
            )
            run_in(
                pair.b.namespace,
                rekey_side,
                pair.b,
                pair.a,
                new_b_in_first[1:],
                old_b[0],
            )
            assert sent() == count
        seen = received()
    assert sorted(seen) == list(range(count))
    new_in = run_in(pair.b.namespace, sa_counters, 0x3000, pair.b.outer)
    assert new_in.packets > 0, "traffic never moved to the new SA"
    # the old inbound SAs go last, once nothing uses them
    run_in(pair.b.namespace, delete_sa, 0x1000, pair.b.outer)
    run_in(pair.a.namespace, delete_sa, 0x2000, pair.a.outer)
    assert " 0% packet loss" in ping(pair)


def install_only(sas: list[SaSpec]) -> None:
    with kernel_backend() as backend:
        for sa in sas:
            backend.add_sa(sa)


def collect_events(seconds: float, wanted: int) -> list[BackendEvent]:
    events: list[BackendEvent] = []
    deadline = time.monotonic() + seconds
    with kernel_backend(events.append):
        while time.monotonic() < deadline and len(events) < wanted:
            time.sleep(0.1)
    return events


@pytest.mark.parametrize("pair", [(4, 4)], ids=["ipv4"], indirect=True)
def test_soft_packet_limit_raises_a_soft_expire_event(pair: Pair) -> None:
    lifetime = Lifetime(soft_packets=2, hard_packets=1000)
    with background_in(pair.a.namespace, collect_events, 30, 1) as events:
        time.sleep(1.5)
        tunnel(pair, lifetime=lifetime)
        ping(pair, count=3)
        got = events()
    soft = [e for e in got if e.kind is BackendEventKind.SOFT_EXPIRE]
    assert soft and soft[0].spi in (0x1000, 0x2000)


def install_policies_only(side: Side, peer: Side) -> None:
    with kernel_backend() as backend:
        for policy in policies(side, peer, reqid=7):
            backend.add_policy(policy)
        backend.install_route(ip_network(peer.inner_net), ip_address(side.inner), 0)


@pytest.mark.parametrize("pair", [(4, 4)], ids=["ipv4"], indirect=True)
def test_traffic_on_a_policy_without_sa_raises_an_acquire(pair: Pair) -> None:
    # traffic hits the outbound policy before any SA exists
    with background_in(pair.a.namespace, collect_events, 30, 1) as events:
        time.sleep(1.5)
        run_in(pair.a.namespace, install_policies_only, pair.a, pair.b)
        # the ping itself fails: there is no SA to carry it yet
        subprocess.run(
            ["ip", "netns", "exec", pair.a.namespace, "ping", "-c", "1", "-W", "1",
             "-I", pair.a.inner, pair.b.inner],
            capture_output=True, check=False,
        )  # fmt: skip
        got = events()
    acquires = [e for e in got if e.kind is BackendEventKind.ACQUIRE]
    assert acquires and acquires[0].reqid == 7


def test_crypto_driver_names_the_kernel_implementation() -> None:
    tunnel_probe = make_pair(f"kd{os.getpid() % 1000}", 4, 4)
    try:
        tunnel(tunnel_probe)
        driver = crypto_driver("rfc4106(gcm(aes))")
    finally:
        tunnel_probe.delete()
    assert driver.startswith("rfc4106-gcm-")


def test_kernel_data_plane_reports_itself_available() -> None:
    # the `auto` rule picks the kernel where it accepts an ESP state
    assert available() is None
    assert sh("ip", "xfrm", "state").strip() == "", "the probe left an SA behind"


def test_status_names_the_kernel_driver_for_each_algorithm() -> None:
    # the kernel instantiates an algorithm when a first SA uses it
    for n, algorithm in enumerate(
        (EspAlgorithm.AES_GCM_16, EspAlgorithm.CHACHA20_POLY1305)
    ):
        probe = make_pair(f"ks{n}{os.getpid() % 1000}", 4, 4)
        try:
            tunnel(probe, algorithm=algorithm)
        finally:
            probe.delete()
    drivers = KernelBackend().crypto_drivers()
    assert drivers["aesgcm16"].startswith("rfc4106-gcm-")
    assert "chacha" in drivers["chacha20poly1305"]


def install_tagged(
    me: str,
    local_net: str,
    peer_outer: str,
    my_outer: str,
    sas: list[SaSpec],
    if_id: int,
) -> None:
    local, remote = ip_network(local_net), ip_network("10.2.0.0/16")
    with kernel_backend() as backend:
        for sa in sas:
            backend.add_sa(sa)
        for direction, source, destination in (
            (Direction.OUTBOUND, my_outer, peer_outer),
            (Direction.INBOUND, peer_outer, my_outer),
        ):
            policy = PolicySpec(
                direction, local, remote, ip_address(source),
                ip_address(destination), reqid=if_id, if_id=if_id,
            )  # fmt: skip
            backend.add_policy(policy)
        backend.install_route(remote, ip_address(me), if_id)


def diagnose(namespace: str) -> str:
    """Routes, links, policies and SA counters (keys masked) of a namespace."""
    parts = []
    for args in (
        ["route"],
        ["-d", "link"],
        ["xfrm", "policy"],
        ["-s", "xfrm", "state"],
    ):
        out = subprocess.run(
            ["ip", "-n", namespace, *args], capture_output=True, text=True
        ).stdout
        parts.append(
            "\n".join(
                line
                for line in out.splitlines()
                if "aead" not in line and "enc " not in line and "auth" not in line
            )
        )
    return "\n".join(parts)


def test_overlapping_selectors_are_kept_apart_by_xfrm_interfaces() -> None:
    # A reaches two sites that both number their network 10.2.0.0/16 (the
    # same inner address on each): one tunnel each, told apart by if_id
    tag = f"ko{os.getpid() % 1000}"
    a, b1, b2 = f"{tag}a", f"{tag}b1", f"{tag}b2"
    for ns in (a, b1, b2):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    try:
        for n, (peer, prefix) in enumerate(((b1, "192.0.2"), (b2, "198.51.100"))):
            sh("ip", "link", "add", f"va{n}", "netns", a, "type", "veth",
               "peer", "name", "vb", "netns", peer)  # fmt: skip
            sh("ip", "-n", a, "addr", "add", f"{prefix}.1/24", "dev", f"va{n}")
            sh("ip", "-n", peer, "addr", "add", f"{prefix}.2/24", "dev", "vb")
            sh("ip", "-n", a, "link", "set", f"va{n}", "up")
            sh("ip", "-n", peer, "link", "set", "vb", "up")
            sh("ip", "-n", peer, "addr", "add", "10.2.0.1/32", "dev", "lo")
        sh("ip", "-n", a, "addr", "add", "10.1.0.1/32", "dev", "lo")
        for if_id, peer, prefix in ((1, b1, "192.0.2"), (2, b2, "198.51.100")):
            pair = Pair(
                Side(a, f"{prefix}.1", "10.1.0.1", "10.1.0.0/16"),
                Side(peer, f"{prefix}.2", "10.2.0.1", "10.2.0.0/16"),
            )
            base = 0x1000 * if_id
            sas_a, sas_b = sa_pair(pair, base, base + 1)
            # each site is a host of its own: only A tells its tunnels apart
            tagged = [replace(sa, if_id=if_id, reqid=if_id) for sa in sas_a]
            run_in(a, install_tagged, "10.1.0.1", "10.1.0.0/16",
                   f"{prefix}.2", f"{prefix}.1", tagged, if_id)  # fmt: skip
            run_in(peer, install, pair.b, pair.a, sas_b)
        for if_id in (1, 2):
            ping = subprocess.run(
                ["ip", "netns", "exec", a, "ping", "-c", "2", "-i", "0.2", "-W",
                 "5", "-I", f"qsgw{if_id}", "10.2.0.1"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            assert " 0% packet loss" in ping.stdout, ping.stdout + diagnose(a)
        # each site's own SA carried its pings, and only those
        for if_id, prefix in ((1, "192.0.2"), (2, "198.51.100")):
            sent = run_in(a, sa_counters, 0x1000 * if_id, f"{prefix}.2")
            assert sent.packets == 2
    finally:
        for ns in (a, b1, b2):
            subprocess.run(["ip", "netns", "del", ns], check=False)
