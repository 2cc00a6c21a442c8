"""The operator against a real apiserver at scale: time until Ready.

    python bench/operator_bench.py [--groups 100] [--tunnels 100] [--nodes 50]
                                   [--replicas 3] [--workers 4]

Starts the test control plane (tests/cluster/testenv.py: etcd,
kube-apiserver, controller manager, scheduler, kwok), creates `--nodes`
kwok nodes with SR-IOV VFs, installs the CRDs, runs the operator as a local
`kopf run` process, then creates `--groups` IPsecTunnelGroups with
`--tunnels` IPsecTunnels each, and prints how long until every group is
Ready with all its tunnels placed. Not a test: figures.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

from testenv import (  # noqa: E402
    ControlPlane,
    ensure_binaries,
    running_control_plane,
    wait_until,
)

NAMESPACE = "bench"


def group(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "ipsec.qsgw.io/v1alpha1",
        "kind": "IPsecTunnelGroup",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "gateway": {
                "replicas": replicas,
                "tunnelsPerPod": 1000,
                "sriov": {"resourceName": "intel.com/intel_sriov_netdevice"},
                "resources": {"cpu": "100m", "memory": "64Mi"},
            },
            "publicAddresses": ["192.0.2.10"],
            "tunnelSelector": {"matchLabels": {"bench.qsgw.io/group": name}},
        },
    }


def tunnel(group_name: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": "ipsec.qsgw.io/v1alpha1",
        "kind": "IPsecTunnel",
        "metadata": {
            "name": f"{group_name}-t{index}",
            "namespace": NAMESPACE,
            "labels": {"bench.qsgw.io/group": group_name},
        },
        "spec": {
            "peerAddress": f"198.51.{index // 250}.{index % 250 + 1}",
            "localId": "gw.example.net",
            "remoteId": f"site-{index}.example.net",
            "ike": {"proposals": ["aes256gcm16-prfsha384-x25519-ke1_mlkem768"]},
            "children": [
                {
                    "name": "lan",
                    "localTs": ["10.0.0.0/16"],
                    "remoteTs": [f"10.{index // 250 + 1}.{index % 250}.0/24"],
                    "espProposals": ["aes256gcm16"],
                }
            ],
            "authentication": {"pskSecretRef": {"name": "psks", "key": "site"}},
        },
    }


def apply_all(
    cp: ControlPlane, objects: list[dict[str, Any]], batch: int = 500
) -> None:
    for start in range(0, len(objects), batch):
        document = yaml.safe_dump_all(objects[start : start + batch])
        cp.kubectl("apply", "--server-side", "-f", "-", stdin=document, timeout=300)


def ready_groups(cp: ControlPlane, expected_tunnels: int) -> int:
    listing = cp.get_json("-n", NAMESPACE, "ipsectunnelgroups")
    count = 0
    for item in listing["items"]:
        status = item.get("status", {})
        ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
        placed = status.get("placedTunnels") == expected_tunnels
        if ready and ready[0]["status"] == "True" and placed:
            count += 1
    return count


def run(args: argparse.Namespace, cp: ControlPlane, workdir: Path) -> None:
    started = time.monotonic()
    cp.create_nodes(args.nodes, timeout=300)
    print(f"{args.nodes} nodes Ready in {time.monotonic() - started:.1f} s")
    cp.kubectl("apply", "-f", str(ROOT / "crds"))
    cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    cp.kubectl("create", "namespace", NAMESPACE)
    cp.kubectl(
        "label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=privileged"
    )
    cp.kubectl(
        "create",
        "secret",
        "generic",
        "psks",
        "-n",
        NAMESPACE,
        "--from-literal=site=bench-only-not-a-real-psk",
    )

    env = dict(cp.env(), QSGW_OPERATOR_WORKERS=str(args.workers))
    kopf = shutil.which("kopf") or "kopf"
    log = (workdir / "operator.log").open("wb")
    operator = subprocess.Popen(
        [
            kopf,
            "run",
            "--standalone",
            "--namespace",
            NAMESPACE,
            "-m",
            "qsgw_operator.handlers",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _measure(args, cp)
    finally:
        operator.terminate()
        operator.wait(timeout=30)
        log.close()


def _measure(args: argparse.Namespace, cp: ControlPlane) -> None:
    names = [f"g{i}" for i in range(args.groups)]
    tunnels = [tunnel(name, i) for name in names for i in range(args.tunnels)]
    started = time.monotonic()
    apply_all(cp, tunnels)
    print(f"{len(tunnels)} tunnels applied in {time.monotonic() - started:.1f} s")
    started = time.monotonic()
    apply_all(cp, [group(name, args.replicas) for name in names])
    print(f"{len(names)} groups applied in {time.monotonic() - started:.1f} s")

    def all_ready() -> bool:
        return bool(ready_groups(cp, args.tunnels) == args.groups)

    wait_until(all_ready, args.timeout, "every group to be Ready", 2.0)
    total = time.monotonic() - started
    print(f"all {args.groups} groups Ready {total:.1f} s after the first group")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--tunnels", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    bin_dir = ensure_binaries()
    with tempfile.TemporaryDirectory(prefix="qsgw-operator-bench-") as tmp:
        workdir = Path(tmp)
        with running_control_plane(workdir, bin_dir) as cp:
            run(args, cp, workdir)


if __name__ == "__main__":
    main()
