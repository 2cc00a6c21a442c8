"""Traffic through a qsgw ↔ strongSwan 6.1 tunnel: ping and iperf3.

qsgw runs in the left namespace with its userspace data plane (TUN device
qsgw0, ESP in UDP), charon in the right one with kernel-libipsec (TUN
device ipsec0). The IKE SA is hybrid, X25519 then ML-KEM-768 as ADDKE1
(RFC 9370), with a required PPK (RFC 8784). Every case runs with qsgw as
initiator and as responder, over IPv4 and IPv6 outer addresses, and once
with IPv6 inside IPv4.

The inner addresses live on each namespace's loopback and have no route
but the tunnel, so a reply proves the packets crossed it. Bytes are then
checked on both data planes: qsgw's per-SA counters from its metrics
endpoint (`qsgw_child_sa_bytes_total`, inner packet octets), charon's from
vici's list-sas (`bytes-in`, `bytes-out`). Both count whole inner IP
packets, so each must grow by at least the TCP payload iperf3 moved.

iperf3 runs as a server from the peer root filesystem in charon's
namespace, and as a client from the host in qsgw's namespace, forwards
(qsgw sends) and reversed (`-R`, charon sends). Its figures are printed
(run pytest with `-s` to see them); no assertion depends on speed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from . import strongswan
from .chroot import Bind, Chroot, DaemonProcess
from .peers import (
    ChildConfig,
    IkeSecret,
    NetnsError,
    PpkSecret,
    SitePair,
    StrongswanPeer,
    wait_until,
)
from .qsgw_configs import (
    QsgwChild,
    QsgwConnection,
    QsgwGateway,
    QsgwSecrets,
    site_to_site,
)
from .qsgw_daemon import QsgwDaemon
from .strongswan import Secret

pytestmark = [pytest.mark.interop, pytest.mark.netns, pytest.mark.timeout(60)]

HYBRID = ("aes256gcm16-prfsha384-x25519-ke1_mlkem768",)
ESP_PROPOSALS = ("aes256gcm16",)
PPK_ID = "qsgw-ppk-traffic"
CONNECTION = "net"
METRICS_PORT = 9500
IPERF3_PORT = 5201
IPERF3_SECONDS = 2
IPERF3_CHROOT = "/usr/bin/iperf3"
IPERF3_HOST = "iperf3"
ROLES = ["qsgw_initiates", "strongswan_initiates"]


@dataclass(frozen=True)
class Families:
    """IP versions of the outer (IKE and ESP) and inner (tunnelled) packets."""

    outer: int
    inner: int


FAMILIES = [
    pytest.param(Families(4, 4), id="ipv4"),
    pytest.param(Families(6, 6), id="ipv6"),
    pytest.param(Families(4, 6), id="ipv6-in-ipv4"),
]


@dataclass(frozen=True)
class Octets:
    """Inner octets one data plane counted on the Child SA, per direction."""

    inbound: int
    outbound: int

    def __sub__(self, earlier: Octets) -> Octets:
        return Octets(self.inbound - earlier.inbound, self.outbound - earlier.outbound)


# --- bringing the tunnel up ------------------------------------------------------


def _qsgw_connection(pair: SitePair, families: Families) -> QsgwConnection:
    ours = site_to_site(
        CONNECTION,
        pair.left,
        pair.right,
        families.outer,
        proposals=HYBRID,
        esp_proposals=ESP_PROPOSALS,
        ppk_id=PPK_ID,
    )
    local_ts = (pair.left.inner_net(families.inner),)
    remote_ts = (pair.right.inner_net(families.inner),)
    child = QsgwChild(CONNECTION, local_ts, remote_ts, ESP_PROPOSALS)
    return replace(ours, children=(child,))


def _charon_connection(
    pair: SitePair, families: Families
) -> strongswan.ConnectionConfig:
    theirs = strongswan.site_to_site(
        CONNECTION,
        pair.right,
        pair.left,
        families.outer,
        proposals=HYBRID,
        ppk_id=PPK_ID,
    )
    local_ts = (pair.right.inner_net(families.inner),)
    remote_ts = (pair.left.inner_net(families.inner),)
    child = ChildConfig(CONNECTION, local_ts, remote_ts, ESP_PROPOSALS)
    return replace(theirs, children=(child,))


def _bring_up(
    pair: SitePair,
    gateway: QsgwGateway,
    charon: StrongswanPeer,
    role: str,
    families: Families,
) -> QsgwDaemon:
    """Loads both sides, initiates from ROLE's side, waits for both SAs."""
    psk, ppk = os.urandom(32), os.urandom(32)
    ids = (pair.left.identity, pair.right.identity)
    secrets: list[Secret] = [IkeSecret(ids, psk), PpkSecret(PPK_ID, ppk)]
    charon.load([_charon_connection(pair, families)], secrets)

    gateway.data_plane = "userspace"
    gateway.metrics_port = METRICS_PORT
    ours = _qsgw_connection(pair, families)
    daemon = gateway.start([ours], {CONNECTION: QsgwSecrets(psk, ppk)})

    if role == "qsgw_initiates":
        daemon.initiate(CONNECTION)
    else:
        charon.initiate(child=CONNECTION, ike=CONNECTION)
    assert wait_until(lambda: _qsgw_installed(daemon), timeout=10), daemon.sas()
    assert wait_until(lambda: _charon_installed(charon), timeout=10)
    return daemon


def _qsgw_installed(daemon: QsgwDaemon) -> bool:
    """One established IKE SA that used the PPK, with one installed Child SA."""
    sas = [sa for sa in daemon.sas() if sa["state"] == "ESTABLISHED"]
    if len(sas) != 1 or sas[0]["ppk"] is not True:
        return False
    children = [c for c in sas[0]["children"] if c["state"] == "INSTALLED"]
    return len(children) == 1


def _charon_installed(charon: StrongswanPeer) -> bool:
    sas = charon.established_ike_sas()
    if len(sas) != 1 or not sas[0].ppk:
        return False
    if sas[0].key_exchanges != ("CURVE_25519", "ML_KEM_768"):
        return False
    return [c.state for c in sas[0].child_sas] == ["INSTALLED"]


# --- reading both data planes' counters ------------------------------------------

_SAMPLE = re.compile(r"^(?P<name>\w+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def _qsgw_counter(gateway: QsgwGateway, metric: str) -> Octets:
    """Sums METRIC over the SPIs of Child SA "net", by direction."""
    totals = {"in": 0, "out": 0}
    for line in gateway.scrape_metrics().splitlines():
        sample = _SAMPLE.match(line)
        if sample is None or sample["name"] != metric:
            continue
        labels = dict(_LABEL.findall(sample["labels"]))
        if labels.get("child") == CONNECTION:
            totals[labels["direction"]] += int(float(sample["value"]))
    return Octets(totals["in"], totals["out"])


def _qsgw_octets(gateway: QsgwGateway) -> Octets:
    return _qsgw_counter(gateway, "qsgw_child_sa_bytes_total")


def _qsgw_packets(gateway: QsgwGateway) -> Octets:
    return _qsgw_counter(gateway, "qsgw_child_sa_packets_total")


def _charon_child(charon: StrongswanPeer) -> dict[str, Any]:
    """The one Child SA of the one IKE SA, as vici's list-sas gives it."""
    ((_name, ike_sa),) = [item for entry in charon.raw_sas() for item in entry.items()]
    (child,) = ike_sa["child-sas"].values()
    assert isinstance(child, dict)
    return child


def _charon_counter(charon: StrongswanPeer, kind: str) -> Octets:
    child = _charon_child(charon)
    return Octets(int(child[f"{kind}-in"]), int(child[f"{kind}-out"]))


def _charon_octets(charon: StrongswanPeer) -> Octets:
    return _charon_counter(charon, "bytes")


def _charon_packets(charon: StrongswanPeer) -> Octets:
    return _charon_counter(charon, "packets")


# --- iperf3 -----------------------------------------------------------------------


@dataclass(frozen=True)
class Iperf3Run:
    """What one iperf3 client run reported."""

    received_bytes: int
    sent_bytes: int
    bits_per_second: float


def _iperf3_listening(pair: SitePair) -> bool:
    argv = ["ss", "-H", "-l", "-t", "-n", f"sport = :{IPERF3_PORT}"]
    return bool(pair.right.namespace.run(argv).strip())


@pytest.fixture
def iperf3_right(
    site_pair: SitePair, peer_rootfs: Path, interop_workdir: Path
) -> Iterator[DaemonProcess]:
    """An iperf3 server from the peer root filesystem, in charon's namespace."""
    workdir = interop_workdir / "iperf3"
    scratch = workdir / "tmp"
    scratch.mkdir(parents=True)
    chroot = Chroot(peer_rootfs, (Bind(scratch, "/tmp"),))
    argv = [IPERF3_CHROOT, "--server", "--port", str(IPERF3_PORT)]
    server = DaemonProcess(
        chroot.argv(site_pair.right.namespace, argv), workdir / "iperf3.out"
    )
    try:
        if not wait_until(lambda: _iperf3_listening(site_pair), 10, interval=0.1):
            raise NetnsError("iperf3 server did not listen in 10 s")
        yield server
    finally:
        server.stop()


def _run_iperf3(pair: SitePair, inner: int, reverse: bool) -> Iperf3Run:
    """A TCP run from qsgw's side (host iperf3) to charon's inner address."""
    argv = [IPERF3_HOST, "--client", pair.right.inner(inner)]
    argv += ["--bind", pair.left.inner(inner), "--port", str(IPERF3_PORT)]
    argv += ["--time", str(IPERF3_SECONDS), "--json", "--connect-timeout", "5000"]
    if reverse:
        argv.append("--reverse")
    result = subprocess.run(
        pair.left.namespace.exec_argv(argv),
        capture_output=True,
        text=True,
        timeout=IPERF3_SECONDS + 25,
        check=False,
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    end = json.loads(result.stdout)["end"]
    return Iperf3Run(
        end["sum_received"]["bytes"],
        end["sum_sent"]["bytes"],
        end["sum_received"]["bits_per_second"],
    )


def _report(label: str, run: Iperf3Run) -> None:
    megabits = run.bits_per_second / 1e6
    print(f"iperf3 {label}: {run.received_bytes} octets, {megabits:.1f} Mbit/s")


# --- the tests --------------------------------------------------------------------


@pytest.mark.parametrize("families", FAMILIES)
@pytest.mark.parametrize("role", ROLES)
def test_ping_crosses_hybrid_ppk_tunnel_both_ways_and_both_sides_count_it(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
    role: str,
    families: Families,
) -> None:
    _bring_up(site_pair, qsgw_left, strongswan_right, role, families)
    left, right = site_pair.left, site_pair.right
    assert left.namespace.link_exists("qsgw0")
    assert right.namespace.link_exists("ipsec0")

    # echo requests from each side, replies back through the same Child SA
    inner = families.inner
    assert left.namespace.ping(right.inner(inner), left.inner(inner))
    assert right.namespace.ping(left.inner(inner), right.inner(inner))

    ours, theirs = _qsgw_packets(qsgw_left), _charon_packets(strongswan_right)
    assert ours.inbound >= 2 and ours.outbound >= 2, ours
    assert theirs.inbound >= 2 and theirs.outbound >= 2, theirs


@pytest.mark.parametrize("families", FAMILIES)
@pytest.mark.parametrize("role", ROLES)
def test_iperf3_tcp_both_ways_is_counted_by_both_esp_data_planes(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
    iperf3_right: DaemonProcess,
    role: str,
    families: Families,
) -> None:
    _bring_up(site_pair, qsgw_left, strongswan_right, role, families)
    label = f"{role}, {families.inner}-in-{families.outer}"

    # qsgw sends: its outbound SA and charon's inbound SA carry the data
    ours, theirs = _qsgw_octets(qsgw_left), _charon_octets(strongswan_right)
    sent = _run_iperf3(site_pair, families.inner, reverse=False)
    _report(f"qsgw -> strongSwan ({label})", sent)
    ours_moved = _qsgw_octets(qsgw_left) - ours
    theirs_moved = _charon_octets(strongswan_right) - theirs
    assert sent.received_bytes > 0
    assert ours_moved.outbound >= sent.received_bytes, ours_moved
    assert theirs_moved.inbound >= sent.received_bytes, theirs_moved

    # charon sends (iperf3 --reverse): the other SA of each pair
    ours, theirs = _qsgw_octets(qsgw_left), _charon_octets(strongswan_right)
    received = _run_iperf3(site_pair, families.inner, reverse=True)
    _report(f"strongSwan -> qsgw ({label})", received)
    ours_moved = _qsgw_octets(qsgw_left) - ours
    theirs_moved = _charon_octets(strongswan_right) - theirs
    assert received.received_bytes > 0
    assert ours_moved.inbound >= received.received_bytes, ours_moved
    assert theirs_moved.outbound >= received.received_bytes, theirs_moved
