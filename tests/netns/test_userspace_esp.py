"""The userspace ESP backend with real packets between two namespaces.

Every test runs two gateways (see topology.py) with static ESN SAs, sends
traffic through the tunnel and reads the gateways' own counters.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time

import pytest

from .topology import (
    TRAFFIC,
    SaPair,
    Tunnel,
    TunnelFactory,
    python,
    read_line,
    run,
    stop,
)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

COMBINATIONS = [
    pytest.param(4, 4, id="ipv4-in-ipv4"),
    pytest.param(6, 6, id="ipv6-in-ipv6"),
    pytest.param(4, 6, id="ipv4-in-ipv6"),
    pytest.param(6, 4, id="ipv6-in-ipv4"),
]
ENCAPSULATION = [
    pytest.param(True, id="udp-encap"),
    pytest.param(False, id="raw-esp"),
]
FIRST = SaPair(0x1000_0001, 0x2000_0001, 1)


def _ping(tunnel: Tunnel, count: int = 3) -> None:
    destination = tunnel.inner_addresses[1]
    command = "ping" if tunnel.inner == 4 else "ping6"
    run(tunnel.names[0], command, "-c", str(count), "-i", "0.2", "-W", "2", destination)


def _tcp_transfer(tunnel: Tunnel, octets: int) -> tuple[dict[str, str], dict[str, str]]:
    left, right = tunnel.names
    destination = tunnel.inner_addresses[1]
    receiver = python(right, TRAFFIC, "tcp-recv", destination, "5001")
    try:
        assert read_line(receiver).strip() == "ready"
        sent = json.loads(
            run(
                left,
                "python3",
                str(TRAFFIC),
                "tcp-send",
                destination,
                "5001",
                str(octets),
                "7",
            )
        )
        received = json.loads(read_line(receiver, timeout=60))
    finally:
        stop(receiver)
    return sent, received


def _udp_stream(
    tunnel: Tunnel, count: int, rate: int, during: object = None
) -> dict[str, int]:
    """Send `count` numbered datagrams left to right; call `during()` while
    they flow; the receiver's tally."""
    left, right = tunnel.names
    destination = tunnel.inner_addresses[1]
    receiver = python(right, TRAFFIC, "udp-recv", destination, "5002", "2")
    try:
        assert read_line(receiver).strip() == "ready"
        sender = python(
            left, TRAFFIC, "udp-send", destination, "5002", str(count), "200", str(rate)
        )
        if callable(during):
            during()
        assert sender.wait(60) == 0
        tally: dict[str, int] = json.loads(read_line(receiver, timeout=30))
    finally:
        stop(receiver)
    return tally


@pytest.mark.parametrize("encapsulated", ENCAPSULATION)
@pytest.mark.parametrize(("inner", "outer"), COMBINATIONS)
def test_ping_tcp_and_udp_cross_the_tunnel(
    make_tunnel: TunnelFactory, inner: int, outer: int, encapsulated: bool
) -> None:
    tunnel = make_tunnel(inner=inner, outer=outer, encapsulated=encapsulated)
    pair = tunnel.sa_pair(FIRST.left_to_right, FIRST.right_to_left)

    _ping(tunnel)
    sent, received = _tcp_transfer(tunnel, 1 << 20)
    tally = _udp_stream(tunnel, count=300, rate=1000)

    assert received == {"octets": 1 << 20, "sha256": sent["sha256"]}
    assert tally["distinct"] == 300
    counters = tunnel.inbound_counters(pair)
    assert counters["packets"] >= 3 + 300 + (1 << 20) // 1400
    assert counters["integrity_errors"] == counters["replay_errors"] == 0


def test_chacha20_poly1305_and_aes_cbc_sha256_carry_traffic(
    make_tunnel: TunnelFactory,
) -> None:
    for algorithm in ("chacha20poly1305", "aescbc"):
        tunnel = make_tunnel(inner=4, outer=4, encapsulated=True, algorithm=algorithm)
        pair = tunnel.sa_pair(FIRST.left_to_right, FIRST.right_to_left)
        _ping(tunnel)
        assert tunnel.inbound_counters(pair)["packets"] == 3
        tunnel.down()


def test_child_sa_rekey_under_continuous_traffic_loses_no_packet(
    make_tunnel: TunnelFactory,
) -> None:
    tunnel = make_tunnel(inner=4, outer=4, encapsulated=True)
    old = tunnel.sa_pair(FIRST.left_to_right, FIRST.right_to_left)
    new: list[SaPair] = []

    def rekey() -> None:
        time.sleep(1.0)
        # make-before-break: new pair in (inbound first), then old out
        new.append(tunnel.sa_pair(0x1000_0002, 0x2000_0002))
        tunnel.delete_outbound(old)
        time.sleep(0.5)
        tunnel.delete_inbound(old)

    tally = _udp_stream(tunnel, count=3000, rate=1000, during=rekey)

    assert tally["distinct"] == tally["received"] == 3000
    old_packets = 3000 - tunnel.inbound_counters(new[0])["packets"]
    assert 500 < old_packets < 2500  # both SAs carried part of the stream
    with pytest.raises(RuntimeError, match="no SA"):
        tunnel.inbound_counters(old)


def _capture_one_esp_datagram(tunnel: Tunnel) -> bytes:
    capture = python(tunnel.names[0], TRAFFIC, "capture-udp", "vl", "4500", "1", "5")
    try:
        assert read_line(capture).strip() == "ready"
        _ping(tunnel, count=1)
        payloads = json.loads(read_line(capture))["payloads"]
    finally:
        stop(capture)
    assert payloads, "no ESP datagram captured"
    return bytes.fromhex(payloads[0])


def _inject(tunnel: Tunnel, datagram: bytes) -> None:
    destination = tunnel.outer_addresses[1]
    run(
        tunnel.names[0],
        "python3",
        str(TRAFFIC),
        "inject",
        destination,
        "4500",
        datagram.hex(),
    )
    time.sleep(0.3)  # let the gateway's ingress thread take it


@pytest.fixture
def tunnel_v4(make_tunnel: TunnelFactory) -> Tunnel:
    tunnel = make_tunnel(inner=4, outer=4, encapsulated=True)
    tunnel.sa_pair(FIRST.left_to_right, FIRST.right_to_left)
    return tunnel


def test_replayed_esp_packet_is_dropped_and_counted(tunnel_v4: Tunnel) -> None:
    datagram = _capture_one_esp_datagram(tunnel_v4)
    before = tunnel_v4.inbound_counters(FIRST)

    _inject(tunnel_v4, datagram)

    after = tunnel_v4.inbound_counters(FIRST)
    assert after["replay_errors"] == before["replay_errors"] + 1
    assert after["packets"] == before["packets"]


def test_flipped_bit_is_dropped_counted_and_leaves_the_window(
    tunnel_v4: Tunnel,
) -> None:
    datagram = bytearray(_capture_one_esp_datagram(tunnel_v4))
    datagram[4:8] = (2**31).to_bytes(4, "big")  # far ahead of the window
    datagram[-1] ^= 0x80
    before = tunnel_v4.inbound_counters(FIRST)

    _inject(tunnel_v4, bytes(datagram))

    after = tunnel_v4.inbound_counters(FIRST)
    assert after["integrity_errors"] == before["integrity_errors"] + 1
    assert after["sequence"] == before["sequence"]
    _ping(tunnel_v4, count=1)  # the window did not jump: traffic still flows


def test_unknown_spi_is_dropped_and_counted(tunnel_v4: Tunnel) -> None:
    datagram = bytearray(_capture_one_esp_datagram(tunnel_v4))
    datagram[0:4] = (0x0BAD_0001).to_bytes(4, "big")
    before = tunnel_v4.right.call("drops")["unknown_spi"]

    _inject(tunnel_v4, bytes(datagram))

    assert tunnel_v4.right.call("drops")["unknown_spi"] == before + 1


@pytest.mark.parametrize("outer", [4, 6], ids=["ipv4", "ipv6"])
def test_bulk_transfer_leaves_in_gso_runs_and_arrives_in_gro_batches(
    make_tunnel: TunnelFactory, outer: int
) -> None:
    tunnel = make_tunnel(inner=4, outer=outer, encapsulated=True)
    pair = tunnel.sa_pair(FIRST.left_to_right, FIRST.right_to_left)

    sent, received = _tcp_transfer(tunnel, 4 << 20)

    assert received == {"octets": 4 << 20, "sha256": sent["sha256"]}
    left, right = tunnel.left.call("offloads"), tunnel.right.call("offloads")
    assert left["gso_sends"] > 0
    assert left["gso_packets"] > left["gso_sends"]
    assert right["gro_receives"] > 0
    assert right["gro_packets"] > right["gro_receives"]
    counters = tunnel.inbound_counters(pair)
    assert counters["integrity_errors"] == counters["replay_errors"] == 0


def test_esp_through_the_daemons_port_4500_uses_receive_esp(
    make_tunnel: TunnelFactory,
) -> None:
    tunnel = make_tunnel(inner=4, outer=4, encapsulated=True, shell_owns_port=True)
    pair = tunnel.sa_pair(FIRST.left_to_right, FIRST.right_to_left)

    _ping(tunnel)
    tally = _udp_stream(tunnel, count=200, rate=1000)
    _inject(tunnel, bytes(4) + b"ike-message")

    assert tally["distinct"] == 200
    assert tunnel.inbound_counters(pair)["packets"] >= 203
    assert tunnel.right.call("ike") == [b"ike-message".hex()]


def test_backend_owned_port_hands_ike_on_and_drops_nat_keepalives(
    tunnel_v4: Tunnel,
) -> None:
    _inject(tunnel_v4, bytes(4) + b"ike-message")
    _inject(tunnel_v4, b"\xff")

    assert tunnel_v4.right.call("ike") == [b"ike-message".hex()]
    assert tunnel_v4.right.call("drops")["nat_keepalives"] == 1
    assert tunnel_v4.right.call("drops")["unknown_spi"] == 0


def test_packet_lifetimes_raise_soft_then_hard_expire_then_acquire(
    make_tunnel: TunnelFactory,
) -> None:
    tunnel = make_tunnel(inner=4, outer=4, encapsulated=True)
    lifetime = {"soft_packets": 3, "hard_packets": 6}
    tunnel.sa_pair(FIRST.left_to_right, FIRST.right_to_left, lifetime=lifetime)

    _ping(tunnel, count=5)
    with contextlib.suppress(subprocess.CalledProcessError):
        _ping(tunnel, count=3)  # the SA reaches its hard limit on the way

    events = tunnel.left.call("events")
    spi = FIRST.left_to_right
    outbound = [e["kind"] for e in events if e["spi"] == spi]
    assert outbound == ["soft-expire", "hard-expire"]
    assert {"kind": "acquire", "spi": 0, "reqid": 1} in events
    with pytest.raises(RuntimeError, match="no SA"):
        tunnel.left.call("counters", spi=spi, destination=tunnel.outer_addresses[1])


def test_time_lifetimes_raise_soft_then_hard_expire(
    make_tunnel: TunnelFactory,
) -> None:
    tunnel = make_tunnel(inner=4, outer=4, encapsulated=True)
    lifetime = {"soft_seconds": 1, "hard_seconds": 2}
    tunnel.sa_pair(FIRST.left_to_right, FIRST.right_to_left, lifetime=lifetime)

    deadline = time.monotonic() + 10
    kinds: list[str] = []
    while time.monotonic() < deadline and "hard-expire" not in kinds:
        time.sleep(0.25)
        events = tunnel.left.call("events")
        kinds = [e["kind"] for e in events if e["spi"] == FIRST.left_to_right]

    assert kinds == ["soft-expire", "hard-expire"]
