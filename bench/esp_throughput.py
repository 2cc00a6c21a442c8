"""Throughput of the userspace ESP data plane, side by side with strongSwan.

    . scripts/env.sh   # as root
    python bench/esp_throughput.py [--sizes 1400 512] [--runs 5] [--seconds 5]
                                   [--rate 200M] [--peer strongswan|none]
                                   [--qsgw daemon|backend]

qsgw, `--qsgw daemon` (the default): `qsgw run` in two namespaces (the
interop harness's site pair, tests/interop/qsgw_configs.py), the Child SA
negotiated by IKE with AES-GCM-256 and carried by the userspace data plane.
A source-port NAT on the left site's IKE port 500 (nftables, nothing else
tracked) makes NAT detection (RFC 7296 §2.23) move both sides to ESP in
UDP on port 4500, as strongSwan's `encap = yes` does. `--qsgw backend`:
the data plane alone, two backends driven by tests/netns/topology.py with
static AES-GCM-256 ESN SAs and UDP encapsulation, each owning its sockets.
strongSwan 6.1: two charons with kernel-libipsec
(userspace ESP over TUN, also UDP-encapsulated) from the interop harness
(tests/interop/peers.py, root filesystem built by scripts/build-peers.sh),
negotiating aes256gcm16. In both, iperf3 sends UDP at `--rate` from the left
site's inner address to the right one's; the two data planes are measured
in alternating rounds and each figure is the median of `--runs` rounds.

Sizes are inner IP packet lengths; Gb/s and kpps count inner packets that
reached the receiver. For qsgw the CPU time each gateway process spent per
packet it protected (egress) or verified (ingress) is reported too: on a
shared machine it is steadier than the rate, and 1e6 / µs is the packet
rate one core could sustain for that direction.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import Series, cpu_seconds, print_rows, ratio, use_repository_imports

use_repository_imports()

from tests.netns.topology import SaPair, Tunnel, spawn, stop  # noqa: E402

IP_UDP_HEADERS = 28  # IPv4 + UDP headers around the iperf3 payload
PAIR = SaPair(0x1000_0001, 0x2000_0001, 1)


@dataclass(frozen=True)
class Path_:
    """Where traffic enters and leaves one tunnel under test."""

    left: str  # namespace names
    right: str
    source: str  # inner addresses
    destination: str


@dataclass(frozen=True)
class Sample:
    gbps: float
    kpps: float
    loss_percent: float


def iperf(path: Path_, size: int, seconds: int, rate: str) -> Sample:
    """One iperf3 UDP run through the tunnel, as seen by the receiver."""
    server = spawn(path.right, "iperf3", "-s", "-1", "-B", path.destination, "-J")
    client = [
        "ip", "netns", "exec", path.left, "iperf3", "-c", path.destination,
        "-B", path.source, "-u", "-b", rate, "-l", str(size - IP_UDP_HEADERS),
        "-t", str(seconds), "-w", "4M", "-J",
    ]  # fmt: skip
    try:
        subprocess.run(["sleep", "0.3"], check=True)
        subprocess.run(client, capture_output=True, check=True, timeout=seconds + 30)
        report = json.loads(server.communicate(timeout=30)[0])
    finally:
        stop(server)
    total = report["end"]["sum"]
    packets = total["packets"] - total["lost_packets"]
    duration = total["seconds"]
    return Sample(
        packets * size * 8 / duration / 1e9,
        packets / duration / 1e3,
        total["lost_percent"],
    )


# --- qsgw -------------------------------------------------------------------


def gateway_work(tunnel: Tunnel) -> tuple[float, float, int, int]:
    """CPU seconds of both gateways and the packets each one handled."""
    right_outer = tunnel.outer_addresses[1]
    sent = tunnel.left.call("counters", spi=PAIR.left_to_right, destination=right_outer)
    received = tunnel.inbound_counters(PAIR)
    return (
        cpu_seconds(tunnel.left.process.pid),
        cpu_seconds(tunnel.right.process.pid),
        sent["packets"],
        received["packets"],
    )


Work = Callable[[], tuple[float, float, int, int]]


@contextmanager
def qsgw_tunnel(algorithm: str) -> Iterator[tuple[Path_, Work]]:
    """Two backends with static SAs (`--qsgw backend`)."""
    tunnel = Tunnel(inner=4, outer=4, encapsulated=True, algorithm=algorithm)
    try:
        tunnel.up()
        tunnel.sa_pair(PAIR.left_to_right, PAIR.right_to_left)
        source, destination = tunnel.inner_addresses
        left, right = tunnel.names
        yield Path_(left, right, source, destination), lambda: gateway_work(tunnel)
    finally:
        tunnel.down()


ESP_PROPOSALS = {"aesgcm16": "aes256gcm16", "chacha20poly1305": "chacha20poly1305"}
# the left site looks as if behind a NAT to IKE, and only to IKE: port 500
# leaves as 1500, nothing else is tracked (no conntrack on the ESP path)
_IKE_BEHIND_NAT = """
table ip qsgw_bench {{
    chain raw_out {{
        type filter hook output priority raw;
        udp sport 500 return
        udp dport 1500 return
        notrack
    }}
    chain raw_in {{
        type filter hook prerouting priority raw;
        udp dport 1500 return
        udp sport 500 return
        notrack
    }}
    chain nat_out {{
        type nat hook postrouting priority srcnat;
        udp sport 500 snat to {address}:1500
    }}
}}
"""


@contextmanager
def qsgw_daemon_tunnel(algorithm: str) -> Iterator[tuple[Path_, Work]]:
    """`qsgw run` on both sites, the Child SA negotiated (`--qsgw daemon`)."""
    from tests.interop.netns import create_site_pair
    from tests.interop.qsgw_configs import QsgwGateway, QsgwSecrets, site_to_site

    pair = create_site_pair("qsgw-bench")
    gateways: list[QsgwGateway] = []
    try:
        with tempfile.TemporaryDirectory(prefix="qsgw-bench-") as workdir:
            rules = _IKE_BEHIND_NAT.format(address=pair.left.outer4)
            subprocess.run(
                pair.left.namespace.exec_argv(["nft", "-f", "-"]),
                input=rules, text=True, check=True, capture_output=True,
            )  # fmt: skip
            secrets = {"net": QsgwSecrets(os.urandom(32))}
            proposals = (ESP_PROPOSALS[algorithm],)
            for name, local, remote in (
                ("left", pair.left, pair.right),
                ("right", pair.right, pair.left),
            ):
                gateway = QsgwGateway(name, local, Path(workdir) / name)
                gateway.data_plane = "userspace"
                connection = site_to_site("net", local, remote, esp_proposals=proposals)
                gateway.start([connection], secrets)
                gateways.append(gateway)
            daemons = [g.daemon for g in gateways if g.daemon is not None]
            daemons[0].initiate("net", child="net")
            yield (
                Path_(
                    pair.left.namespace.name, pair.right.namespace.name,
                    pair.left.inner4, pair.right.inner4,
                ),
                lambda: daemon_work(daemons[0], daemons[1]),
            )  # fmt: skip
    finally:
        for gateway in gateways:
            gateway.stop()
        pair.delete()


def daemon_work(left: Any, right: Any) -> tuple[float, float, int, int]:
    """CPU seconds of both daemons, packets the left one protected and the
    right one verified (their Child SAs' counters from `qsgw sas`)."""
    return (
        cpu_seconds(left.process.pid),
        cpu_seconds(right.process.pid),
        _child_counter(left.sas(), "packets_out"),
        _child_counter(right.sas(), "packets_in"),
    )


def _child_counter(value: Any, key: str) -> int:
    """The sum of `key` over every Child SA in a `qsgw sas --json` answer."""
    if isinstance(value, dict):
        own = value.get(key, 0) if isinstance(value.get(key), int) else 0
        return own + sum(_child_counter(v, key) for k, v in value.items() if k != key)
    if isinstance(value, list):
        return sum(_child_counter(v, key) for v in value)
    return 0


# --- strongSwan kernel-libipsec ---------------------------------------------


@contextmanager
def strongswan_tunnel() -> Iterator[Path_]:
    from tests.interop.peers import (
        IkeSecret,
        StrongswanPeer,
        build_peers,
        create_site_pair,
        peers_dir,
    )
    from tests.interop.strongswan import site_to_site

    build_peers()
    rootfs = peers_dir() / "rootfs"
    pair = create_site_pair()
    peers: list[StrongswanPeer] = []
    try:
        with tempfile.TemporaryDirectory(prefix="qsgw-bench-") as workdir:
            for name, site in (("left", pair.left), ("right", pair.right)):
                peer = StrongswanPeer(
                    name, site.namespace, rootfs, Path(workdir) / name
                )
                peer.start()
                peers.append(peer)
            psk = IkeSecret((pair.left.identity, pair.right.identity), os.urandom(32))
            peers[0].load([site_to_site("net", pair.left, pair.right)], [psk])
            peers[1].load([site_to_site("net", pair.right, pair.left)], [psk])
            peers[0].initiate(child="net", ike="net")
            yield Path_(
                pair.left.namespace.name, pair.right.namespace.name,
                pair.left.inner4, pair.right.inner4,
            )  # fmt: skip
    finally:
        for peer in peers:
            peer.stop()
        pair.delete()


# --- the run ------------------------------------------------------------------


@dataclass
class Results:
    rate: dict[str, list[Sample]]
    egress_us: list[float]
    ingress_us: list[float]


def measure(
    args: argparse.Namespace, size: int, with_peer: bool
) -> tuple[Results, list[Sample]]:
    qsgw = Results({}, [], [])
    peer: list[Sample] = []
    tunnel = qsgw_daemon_tunnel if args.qsgw == "daemon" else qsgw_tunnel
    with tunnel(args.algorithm) as (path, work):
        rounds: list[Callable[[], None]] = []

        def qsgw_round() -> None:
            before = work()
            sample = iperf(path, size, args.seconds, args.rate)
            after = work()
            cpu_l, cpu_r, sent, verified = (
                b - a for a, b in zip(before, after, strict=True)
            )
            qsgw.rate.setdefault("qsgw", []).append(sample)
            qsgw.egress_us.append(cpu_l / max(sent, 1) * 1e6)
            qsgw.ingress_us.append(cpu_r / max(verified, 1) * 1e6)

        rounds.append(qsgw_round)
        with _maybe_strongswan(with_peer) as peer_path:
            if peer_path is not None:
                rounds.append(
                    lambda: peer.append(iperf(peer_path, size, args.seconds, args.rate))
                )
            for _ in range(args.runs):
                for round_ in rounds:
                    round_()
    return qsgw, peer


@contextmanager
def _maybe_strongswan(wanted: bool) -> Iterator[Path_ | None]:
    if not wanted:
        yield None
        return
    with strongswan_tunnel() as path:
        yield path


def report(size: int, qsgw: Results, peer: list[Sample]) -> list[list[str]]:
    samples = qsgw.rate["qsgw"]
    gbps = Series("qsgw", "Gb/s", tuple(s.gbps for s in samples))
    kpps = Series("qsgw", "kpps", tuple(s.kpps for s in samples))
    loss = Series("qsgw", "%", tuple(s.loss_percent for s in samples))
    egress = Series("egress", "µs", tuple(qsgw.egress_us))
    ingress = Series("ingress", "µs", tuple(qsgw.ingress_us))
    peer_gbps = Series("strongSwan", "Gb/s", tuple(s.gbps for s in peer))
    peer_loss = Series("strongSwan", "%", tuple(s.loss_percent for s in peer))
    return [[
        str(size), f"{gbps.median:.3f}", f"{kpps.median:.1f}", f"{loss.median:.1f}",
        f"{egress.median:.2f}", f"{ingress.median:.2f}",
        f"{peer_gbps.median:.3f}", f"{peer_loss.median:.1f}",
        f"{ratio(gbps, peer_gbps):.2f}",
    ]]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1400, 512])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rate", default="200M", help="iperf3 -b (0: unpaced)")
    parser.add_argument("--algorithm", default="aesgcm16")
    parser.add_argument("--peer", choices=["strongswan", "none"], default="strongswan")
    parser.add_argument(
        "--qsgw",
        choices=["daemon", "backend"],
        default="daemon",
        help="qsgw run with IKE (default), or the data plane alone with static SAs",
    )
    args = parser.parse_args()

    rows = [[
        "size", "qsgw Gb/s", "kpps", "loss %", "egress µs/pkt", "ingress µs/pkt",
        "strongSwan Gb/s", "loss %", "qsgw/strongSwan",
    ]]  # fmt: skip
    for size in args.sizes:
        qsgw, peer = measure(args, size, args.peer == "strongswan")
        rows += report(size, qsgw, peer)
    print(
        f"qsgw as {args.qsgw}, offered {args.rate} bit/s of UDP,"
        f" median of {args.runs} rounds"
    )
    print_rows(rows)


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as error:
        sys.exit(f"command failed: {error.cmd}: {error.stderr}")
