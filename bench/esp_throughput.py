"""Throughput of the userspace ESP data plane, side by side with strongSwan.

    . scripts/env.sh   # as root
    python bench/esp_throughput.py [--sizes 1400 512] [--runs 5] [--seconds 5]
                                   [--rate 200M] [--peer strongswan|none]

qsgw: two gateways (tests/netns/topology.py) with static AES-GCM-256 ESN
SAs and UDP encapsulation. strongSwan 6.1: two charons with kernel-libipsec
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

from common import Series, print_rows, ratio, use_repository_imports

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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


@contextmanager
def qsgw_tunnel(algorithm: str) -> Iterator[tuple[Path_, Tunnel]]:
    tunnel = Tunnel(inner=4, outer=4, encapsulated=True, algorithm=algorithm)
    try:
        tunnel.up()
        tunnel.sa_pair(PAIR.left_to_right, PAIR.right_to_left)
        source, destination = tunnel.inner_addresses
        left, right = tunnel.names
        yield Path_(left, right, source, destination), tunnel
    finally:
        tunnel.down()


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
    with qsgw_tunnel(args.algorithm) as (path, tunnel):
        rounds: list[Callable[[], None]] = []

        def qsgw_round() -> None:
            before = gateway_work(tunnel)
            sample = iperf(path, size, args.seconds, args.rate)
            after = gateway_work(tunnel)
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
    args = parser.parse_args()

    rows = [[
        "size", "qsgw Gb/s", "kpps", "loss %", "egress µs/pkt", "ingress µs/pkt",
        "strongSwan Gb/s", "loss %", "qsgw/strongSwan",
    ]]  # fmt: skip
    for size in args.sizes:
        qsgw, peer = measure(args, size, args.peer == "strongswan")
        rows += report(size, qsgw, peer)
    print(f"offered {args.rate} bit/s of UDP, median of {args.runs} rounds")
    print_rows(rows)


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as error:
        sys.exit(f"command failed: {error.cmd}: {error.stderr}")
