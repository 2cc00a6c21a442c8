"""Two qsgw daemons with the kernel data plane: runs INSIDE the test VM.

`tests/kernel/test_qsgw_kernel.py` boots the VM and runs this file there.
The daemons start once for the module (Python starts slowly under the VM's
emulated CPU): gateway A and gateway B in two namespaces joined by veth, one
IKE SA over IPv4 and one over IPv6, each carrying an IPv4 and an IPv6 Child
SA, so that all four inner/outer combinations cross the kernel's ESP.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from netns import (
    background_in,
    run_in,
    sa_counters,
    sh,
    udp_receiver,
    udp_sender,
)
from qsgw.daemon import control

IKE = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
ESP = "aes256gcm16-esn"
WAIT = 240.0  # seconds: the emulated CPU is slow

# (child, outer family, local inner net, remote inner net) from A's side
CHILDREN = {
    "v4-in-v4": (4, "10.1.0.0/16", "10.2.0.0/16"),
    "v6-in-v4": (4, "fd00:3::/64", "fd00:4::/64"),
    "v6-in-v6": (6, "fd00:1::/64", "fd00:2::/64"),
    "v4-in-v6": (6, "10.3.0.0/16", "10.4.0.0/16"),
}
OUTER = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8:1::1", "2001:db8:1::2")}
CONNECTION = {4: "over-ipv4", 6: "over-ipv6"}


def first_host(net: str) -> str:
    from ipaddress import ip_network

    return str(next(ip_network(net).hosts()))


@dataclass(frozen=True)
class Gateway:
    name: str
    namespace: str
    socket: Path
    log: Path
    process: subprocess.Popen[bytes]

    def request(self, command: str, args: dict[str, Any] | None = None) -> Any:
        return control.request(self.socket, command, args or {}, timeout=WAIT)

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-30:])
        except OSError:
            return "(no log)"


def topology(tag: str) -> tuple[str, str]:
    a, b = f"{tag}a", f"{tag}b"
    for ns in (a, b):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "link", "add", "va", "netns", a, "type", "veth",
       "peer", "name", "vb", "netns", b)  # fmt: skip
    for ns, dev, index in ((a, "va", 0), (b, "vb", 1)):
        sh("ip", "-n", ns, "addr", "add", f"{OUTER[4][index]}/24", "dev", dev)
        sh("ip", "-n", ns, "addr", "add", f"{OUTER[6][index]}/64", "dev", dev,
           "nodad")  # fmt: skip
        sh("ip", "-n", ns, "link", "set", dev, "up")
        for _family, local, remote in CHILDREN.values():
            net = local if index == 0 else remote
            plen = "32" if "." in net else "128"
            sh("ip", "-n", ns, "addr", "add", f"{first_host(net)}/{plen}", "dev", "lo")
    return a, b


def config(side: int, workdir: Path, psk: Path, ppk: Path) -> dict[str, Any]:
    connections: dict[str, Any] = {}
    for family in (4, 6):
        local, remote = OUTER[family][side], OUTER[family][1 - side]
        children: dict[str, Any] = {}
        for name, (outer, a_net, b_net) in CHILDREN.items():
            if outer != family:
                continue
            mine, theirs = (a_net, b_net) if side == 0 else (b_net, a_net)
            children[name] = {
                "local_ts": [mine],
                "remote_ts": [theirs],
                "esp_proposals": [ESP],
                "start_action": "start" if side == 0 else "none",
            }
        me, peer = ("gw-a", "gw-b") if side == 0 else ("gw-b", "gw-a")
        connections[CONNECTION[family]] = {
            "local_addrs": [local],
            "remote_addrs": [remote],
            "local": {"id": f"{me}.v{family}.example.org", "auth": "psk"},
            "remote": {"id": f"{peer}.v{family}.example.org", "auth": "psk"},
            "proposals": [IKE],
            "psk_file": str(psk),
            "ppk": {"id": "vm-ppk", "file": str(ppk), "required": True},
            "children": children,
        }
    return {
        "gateway": {
            "listen": [OUTER[4][side], OUTER[6][side]],
            "control_socket": str(workdir / f"gw{side}.sock"),
            "data_plane": "kernel",
            "log": {"level": "info", "format": "text"},
        },
        "connections": connections,
    }


def start(side: int, namespace: str, workdir: Path, psk: Path, ppk: Path) -> Gateway:
    path = workdir / f"gw{side}.yaml"
    path.write_text(json.dumps(config(side, workdir, psk, ppk)))  # JSON is YAML
    log = workdir / f"gw{side}.log"
    process = subprocess.Popen(
        ["ip", "netns", "exec", namespace, str(Path(sys.executable).parent / "qsgw"),
         "run", "--config", str(path)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    return Gateway("AB"[side], namespace, workdir / f"gw{side}.sock", log, process)


def wait_for(what: str, gateway: Gateway, check: Any) -> Any:
    deadline = time.monotonic() + WAIT
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, control.CommandError, control.DaemonUnreachable):
            pass
        time.sleep(1)
    raise AssertionError(f"{what} within {WAIT:.0f} s; log:\n{gateway.log_tail()}")


def installed_children(gateway: Gateway) -> dict[str, dict[str, Any]]:
    children: dict[str, dict[str, Any]] = {}
    for ike in gateway.request("sas"):
        if ike.get("state") != "ESTABLISHED":
            continue
        for child in ike.get("children", []):
            if child.get("state") == "INSTALLED":
                children[child["name"]] = child
    return children


@pytest.fixture(scope="module")
def gateways() -> Iterator[tuple[Gateway, Gateway]]:
    tag = f"q{os.getpid() % 1000}"
    a, b = topology(tag)
    workdir = Path(tempfile.mkdtemp(prefix="qsgw-vm-"))
    psk, ppk = workdir / "psk", workdir / "ppk"
    for path in (psk, ppk):
        path.write_text("0x" + secrets.token_hex(32) + "\n")
        path.chmod(0o400)
    started = [start(0, a, workdir, psk, ppk), start(1, b, workdir, psk, ppk)]
    try:
        for gateway in started:
            wait_for("the control socket answers", gateway, lambda g=gateway: (
                g.request("status")))  # fmt: skip
        wait_for(
            "all four Child SAs are installed",
            started[0],
            lambda: (
                len(installed_children(started[0])) == 4
                and len(installed_children(started[1])) == 4
            ),
        )
        yield started[0], started[1]
    finally:
        for gateway in started:
            gateway.process.terminate()
        for gateway in started:
            try:
                gateway.process.wait(60)
            except subprocess.TimeoutExpired:
                gateway.process.kill()
                gateway.process.wait()
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def listing(gateway: Gateway) -> str:
    """Every Child SA both the daemon and the kernel know, SPIs only."""
    lines = [f"gateway {gateway.name}:"]
    for ike in gateway.request("sas"):
        for child in ike.get("children", []):
            lines.append(
                f"  IKE #{ike['unique_id']} {ike['state']} child {child['name']} "
                f"#{child['unique_id']} {child['state']} "
                f"in {child['inbound_spi']} out {child['outbound_spi']}"
            )
    states = sh("ip", "-n", gateway.namespace, "xfrm", "state")
    lines += [f"  kernel: {line.strip()}" for line in states.splitlines()
              if line.startswith("src") or "spi" in line]  # fmt: skip
    return "\n".join(lines) + "\n"


def ping(namespace: str, source: str, target: str) -> str:
    family = "-6" if ":" in target else "-4"
    return sh("ip", "netns", "exec", namespace, "ping", family, "-c", "3", "-i",
              "0.2", "-W", "5", "-I", source, target)  # fmt: skip


@pytest.mark.parametrize("child", list(CHILDREN))
def test_traffic_crosses_the_kernel_tunnel(
    gateways: tuple[Gateway, Gateway], child: str
) -> None:
    a, b = gateways
    _outer, a_net, b_net = CHILDREN[child]
    assert " 0% packet loss" in ping(a.namespace, first_host(a_net), first_host(b_net))
    # both daemons read the same SPIs, crosswise, and the kernel counted
    mine, theirs = installed_children(a)[child], installed_children(b)[child]
    assert mine["inbound_spi"] == theirs["outbound_spi"]
    assert mine["outbound_spi"] == theirs["inbound_spi"]
    spi = int(mine["outbound_spi"], 16)
    sent = run_in(a.namespace, sa_counters, spi, OUTER[_outer][1])
    assert sent.packets >= 3, listing(a) + listing(b)


def test_child_sa_rekey_under_traffic_loses_nothing(
    gateways: tuple[Gateway, Gateway],
) -> None:
    a, b = gateways
    child = "v4-in-v4"
    _outer, a_net, b_net = CHILDREN[child]
    before = installed_children(a)[child]
    count = 600
    with background_in(
        b.namespace, udp_receiver, first_host(b_net), 5001, count, 90
    ) as received:
        time.sleep(1)
        with background_in(
            a.namespace, udp_sender, first_host(a_net), first_host(b_net), 5001,
            count, 0.02,
        ) as sent:  # fmt: skip
            time.sleep(2)
            a.request("rekey", {"child": before["unique_id"]})
            assert sent() == count
        seen = received()
    after = wait_for(
        "the rekeyed Child SA is installed",
        a,
        lambda: (
            (c := installed_children(a).get(child))
            and c["outbound_spi"] != before["outbound_spi"]
            and c
        ),
    )
    assert after["rekeys"] >= 1 or after["unique_id"] != before["unique_id"]
    missing = sorted(set(range(count)) - set(seen))
    assert not missing, f"{len(missing)} packets lost during the rekey"
    assert " 0% packet loss" in ping(a.namespace, first_host(a_net), first_host(b_net))
