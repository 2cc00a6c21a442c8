"""Self-tests of the control plane: the real scheduler, controllers and
apiserver behave as the operator's cluster tests will rely on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testenv import BUILD_SCRIPT, K8S_VERSION, ControlPlane, wait_until

pytestmark = pytest.mark.cluster

SRIOV = "intel.com/intel_sriov_netdevice"
QAT = "qat.intel.com/cy"
HELM_VERSION = "v4.3.2"


@pytest.fixture
def namespace(
    control_plane: ControlPlane, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A namespace of the test's own, deleted afterwards."""
    words = re.findall(r"[a-z0-9]+", request.node.name.lower().removeprefix("test_"))
    name = "-".join(words)[:63].strip("-")
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


def group_label(namespace: str) -> dict[str, str]:
    return {"testenv.qsgw.io/group": namespace}


def anti_affine_deployment(
    name: str,
    namespace: str,
    replicas: int,
    group: dict[str, str],
    resources: dict[str, str],
) -> dict[str, Any]:
    """A Deployment whose pods require distinct hosts and the given
    extended resources, kept on the nodes carrying ``group``."""
    labels = {"app": name}
    term = {
        "labelSelector": {"matchLabels": labels},
        "topologyKey": "kubernetes.io/hostname",
    }
    container = {
        "name": "gateway",
        "image": "registry.invalid/qsgw:test",
        "resources": {"limits": resources},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": group,
                    "affinity": {
                        "podAntiAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": [term]
                        }
                    },
                    "containers": [container],
                },
            },
        },
    }


def pods(cp: ControlPlane, namespace: str, app: str) -> list[dict[str, Any]]:
    found = cp.get_json("pods", "-n", namespace, "-l", f"app={app}")
    items: list[dict[str, Any]] = found["items"]
    return items


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return ready and pod["status"].get("phase") == "Running"


def live_pods(cp: ControlPlane, namespace: str, app: str) -> list[dict[str, Any]]:
    return [
        p for p in pods(cp, namespace, app) if "deletionTimestamp" not in p["metadata"]
    ]


def ready_pods_on(
    cp: ControlPlane, namespace: str, app: str
) -> dict[str, dict[str, Any]]:
    """Ready pods of ``app`` by node name (one per node: anti-affinity)."""
    ready = [p for p in live_pods(cp, namespace, app) if pod_ready(p)]
    return {p["spec"]["nodeName"]: p for p in ready}


def events_for(cp: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.name={name}"
    found = cp.get_json("events", "-n", namespace, "--field-selector", selector)
    items: list[dict[str, Any]] = found["items"]
    return items


def test_control_plane_starts_within_a_minute(control_plane: ControlPlane) -> None:
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)

    assert version["serverVersion"]["gitVersion"] == K8S_VERSION
    assert 0 < control_plane.startup_seconds < 60


def test_anti_affine_deployment_runs_ready_on_three_distinct_nodes(
    control_plane: ControlPlane, namespace: str
) -> None:
    group = group_label(namespace)
    nodes = control_plane.create_nodes(3, labels=group)
    deployment = anti_affine_deployment(
        "gw", namespace, 3, group, {SRIOV: "2", QAT: "1"}
    )

    control_plane.apply(deployment)
    wait_until(
        lambda: len(ready_pods_on(control_plane, namespace, "gw")) == 3,
        60,
        "3 Running and Ready pods",
    )

    placed = ready_pods_on(control_plane, namespace, "gw")
    assert sorted(placed) == sorted(nodes)


def test_replica_beyond_the_nodes_of_its_anti_affinity_stays_pending(
    control_plane: ControlPlane, namespace: str
) -> None:
    group = group_label(namespace)
    control_plane.create_nodes(2, labels=group)
    deployment = anti_affine_deployment("gw", namespace, 3, group, {SRIOV: "1"})

    control_plane.apply(deployment)
    wait_until(
        lambda: len(ready_pods_on(control_plane, namespace, "gw")) == 2,
        60,
        "2 Running and Ready pods",
    )
    pending = [p for p in pods(control_plane, namespace, "gw") if not pod_ready(p)]
    assert len(pending) == 1
    name = pending[0]["metadata"]["name"]
    wait_until(
        lambda: any(
            e["reason"] == "FailedScheduling"
            for e in events_for(control_plane, namespace, name)
        ),
        30,
        f"a FailedScheduling event for {name}",
    )

    messages = [e["message"] for e in events_for(control_plane, namespace, name)]
    assert any("anti-affinity" in m for m in messages), messages


def test_pod_requesting_more_than_any_node_has_stays_pending(
    control_plane: ControlPlane, namespace: str
) -> None:
    group = group_label(namespace)
    control_plane.create_nodes(2, labels=group)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "greedy", "namespace": namespace},
        "spec": {
            "nodeSelector": group,
            "containers": [
                {
                    "name": "gateway",
                    "image": "registry.invalid/qsgw:test",
                    "resources": {"limits": {QAT: "5"}},
                }
            ],
        },
    }

    control_plane.apply(pod)
    wait_until(
        lambda: any(
            e["reason"] == "FailedScheduling"
            for e in events_for(control_plane, namespace, "greedy")
        ),
        30,
        "a FailedScheduling event",
    )

    found = control_plane.get_json("pod", "-n", namespace, "greedy")
    scheduled = [
        c for c in found["status"]["conditions"] if c["type"] == "PodScheduled"
    ]
    assert found["status"]["phase"] == "Pending"
    assert "nodeName" not in found["spec"]
    assert scheduled[0]["reason"] == "Unschedulable"
    assert f"Insufficient {QAT}" in scheduled[0]["message"]


def test_not_ready_node_is_tainted_and_its_pod_recreated_elsewhere(
    control_plane: ControlPlane, namespace: str
) -> None:
    group = group_label(namespace)
    nodes = control_plane.create_nodes(3, labels=group)
    deployment = anti_affine_deployment("gw", namespace, 2, group, {SRIOV: "1"})
    control_plane.apply(deployment)
    wait_until(
        lambda: len(ready_pods_on(control_plane, namespace, "gw")) == 2,
        60,
        "2 Running and Ready pods",
    )
    failed = sorted(ready_pods_on(control_plane, namespace, "gw"))[0]
    started = time.monotonic()

    control_plane.set_node_not_ready(failed)

    def tainted() -> bool:
        node = control_plane.get_json("node", failed)
        taints = node["spec"].get("taints", [])
        return any(
            t["key"] == "node.kubernetes.io/not-ready" and t["effect"] == "NoExecute"
            for t in taints
        )

    wait_until(tainted, 30, f"the not-ready taint on {failed}")
    assert not control_plane.node_ready(failed)

    def moved() -> bool:
        placed = ready_pods_on(control_plane, namespace, "gw")
        on_failed = [
            p
            for p in live_pods(control_plane, namespace, "gw")
            if p["spec"].get("nodeName") == failed
        ]
        return len(placed) == 2 and not on_failed

    wait_until(moved, 60, f"the pod on {failed} to be recreated elsewhere")
    elapsed = time.monotonic() - started
    placed = ready_pods_on(control_plane, namespace, "gw")
    assert set(placed) == set(nodes) - {failed}
    print(f"failover of a pod off a NotReady node took {elapsed:.1f} s")


def test_helm_client_is_v4_and_reaches_the_apiserver(
    control_plane: ControlPlane, namespace: str
) -> None:
    version = control_plane.helm("version", "--short").stdout.strip()
    releases = control_plane.helm("list", "-n", namespace, "-o", "json")

    assert version.startswith(HELM_VERSION)
    assert json.loads(releases.stdout) == []


def test_helm_installs_a_chart_whose_pods_become_ready(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    group = group_label(namespace)
    control_plane.create_nodes(1, labels=group)
    control_plane.helm("create", str(tmp_path / "demo"))

    control_plane.helm(
        "install",
        "demo",
        str(tmp_path / "demo"),
        "--namespace",
        namespace,
        "--set",
        f"nodeSelector.testenv\\.qsgw\\.io/group={namespace}",
        "--wait",
        "--timeout",
        "90s",
        timeout=120,
    )

    status = json.loads(
        control_plane.helm("status", "demo", "-n", namespace, "-o", "json").stdout
    )
    assert status["info"]["status"] == "deployed"


@pytest.mark.parametrize(
    ("manifest", "error"),
    [
        pytest.param(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "Not_A_DNS_Name"},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            },
            "metadata.name: Invalid value",
            id="pod-with-invalid-name",
        ),
        pytest.param(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "no-selector"},
                "spec": {
                    "template": {
                        "metadata": {"labels": {"app": "x"}},
                        "spec": {"containers": [{"name": "c", "image": "x"}]},
                    }
                },
            },
            "spec.selector: Required value",
            id="deployment-without-selector",
        ),
        pytest.param(
            {
                "apiVersion": "k8s.cni.cncf.io/v1",
                "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": "sriov-net"},
                "spec": {"config": 42},
            },
            "spec.config: Invalid value",
            id="network-attachment-with-non-string-config",
        ),
    ],
)
def test_apiserver_refuses_invalid_object(
    control_plane: ControlPlane,
    namespace: str,
    manifest: dict[str, Any],
    error: str,
) -> None:
    document = json.dumps(manifest)

    result = control_plane.kubectl(
        "create",
        "--validate=false",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=document,
        check=False,
    )

    assert result.returncode != 0
    assert error in result.stderr
    kind = manifest["kind"].lower()
    name = manifest["metadata"]["name"]
    found = control_plane.kubectl("get", kind, name, "-n", namespace, check=False)
    assert found.returncode != 0


def test_network_attachment_definition_with_cni_config_is_accepted(
    control_plane: ControlPlane, namespace: str
) -> None:
    config = json.dumps({"cniVersion": "1.0.0", "type": "sriov", "vlan": 100})
    nad = {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "sriov-net", "namespace": namespace},
        "spec": {"config": config},
    }

    control_plane.apply(nad)

    stored = control_plane.get_json("net-attach-def", "-n", namespace, "sriov-net")
    assert json.loads(stored["spec"]["config"]) == json.loads(config)


def test_pods_of_a_deleted_node_are_recreated_elsewhere(
    control_plane: ControlPlane, namespace: str
) -> None:
    group = group_label(namespace)
    nodes = control_plane.create_nodes(3, labels=group)
    deployment = anti_affine_deployment("gw", namespace, 2, group, {SRIOV: "1"})
    control_plane.apply(deployment)
    wait_until(
        lambda: len(ready_pods_on(control_plane, namespace, "gw")) == 2,
        60,
        "2 Running and Ready pods",
    )
    deleted = sorted(ready_pods_on(control_plane, namespace, "gw"))[0]

    control_plane.delete_node(deleted)

    # the pod garbage collector waits a fixed 40 s before deleting the
    # pods of a node that is gone, and looks every 20 s
    wait_until(
        lambda: (
            set(ready_pods_on(control_plane, namespace, "gw")) == set(nodes) - {deleted}
        ),
        120,
        f"the pod of {deleted} to be recreated elsewhere",
        interval=1.0,
    )


def test_build_script_is_a_no_op_when_every_binary_exists(
    control_plane: ControlPlane,
) -> None:
    binaries = sorted(control_plane.bin_dir.iterdir())
    before = {p: p.stat().st_mtime_ns for p in binaries}
    started = time.monotonic()

    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        env=dict(os.environ, K8S_VERSION=K8S_VERSION),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert time.monotonic() - started < 10
    assert result.stdout.splitlines()[-1] == str(control_plane.bin_dir)
    assert {p: p.stat().st_mtime_ns for p in binaries} == before
