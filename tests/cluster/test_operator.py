"""The operator against a real apiserver, scheduler and controllers (kwok
nodes): installed with its Helm chart, run as a local process with the
chart's ServiceAccount token, so its RBAC is what is exercised.

The scenario is one story told in order (module-scoped state): apply,
scale up, scale down, lose a node, delete a node, delete the group.
"""

from __future__ import annotations

import copy
import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from testenv import ControlPlane, wait_until

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "qsgw-operator"
RELEASE_NAMESPACE = "qsgw-system"
NAMESPACE = "vpn-operator-test"
GROUP = "branches"
NODE_LABEL = {"qsgw-test": "operator"}
TUNNELS = 30
EPSILON = 0.05


# --- fixtures --------------------------------------------------------------


@pytest.fixture(scope="module")
def cp(control_plane: ControlPlane) -> ControlPlane:
    return control_plane


@pytest.fixture(scope="module")
def installed(cp: ControlPlane) -> str:
    """The chart installed (CRDs from its crds/, RBAC, Deployment)."""
    cp.kubectl("create", "namespace", RELEASE_NAMESPACE)
    cp.helm("install", "qsgw", str(CHART), "--namespace", RELEASE_NAMESPACE)
    for plural in ("ipsectunnelgroups", "ipsectunnels"):
        cp.kubectl(
            "wait",
            "--for=condition=Established",
            f"crd/{plural}.ipsec.qsgw.io",
            "--timeout=60s",
        )
    return RELEASE_NAMESPACE


def service_account_kubeconfig(cp: ControlPlane, directory: Path) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount."""
    token = cp.kubectl(
        "create", "token", "qsgw", "-n", RELEASE_NAMESPACE, "--duration=2h"
    ).stdout.strip()
    config = yaml.safe_load(cp.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    path = directory / "operator-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def operator(
    cp: ControlPlane, installed: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    """`kopf run` of the operator, limited to the test namespace."""
    workdir = tmp_path_factory.mktemp("operator")
    cp.kubectl("create", "namespace", NAMESPACE)
    cp.kubectl(
        "label",
        "namespace",
        NAMESPACE,
        "pod-security.kubernetes.io/enforce=privileged",
    )
    env = dict(
        cp.env(),
        KUBECONFIG=str(service_account_kubeconfig(cp, workdir)),
        QSGW_OPERATOR_RESYNC_SECONDS="5",
    )
    kopf = shutil.which("kopf")
    assert kopf, "kopf is a dependency of qsgw"
    log = (workdir / "operator.log").open("wb")
    process = subprocess.Popen(
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
    yield process
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    log.close()
    text = (workdir / "operator.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]


@pytest.fixture(scope="module")
def nodes(cp: ControlPlane) -> list[str]:
    names: list[str] = cp.create_nodes(
        7, zones=("zone-a", "zone-b", "zone-c"), labels=NODE_LABEL, prefix="op-node"
    )
    return names


# --- helpers ---------------------------------------------------------------


def example(kind: str) -> list[dict[str, Any]]:
    text = (ROOT / "examples" / "site-to-site.yaml").read_text()
    return [d for d in yaml.safe_load_all(text) if d and d["kind"] == kind]


def group_object(replicas: int) -> dict[str, Any]:
    (group,) = example("IPsecTunnelGroup")
    gateway = group["spec"]["gateway"]
    gateway.update(replicas=replicas, nodeSelector=NODE_LABEL)
    gateway["resources"] = {"cpu": "1", "memory": "256Mi"}
    return group


def tunnel_objects(count: int) -> list[dict[str, Any]]:
    template = example("IPsecTunnel")[0]
    tunnels = []
    for i in range(count):
        tunnel = copy.deepcopy(template)
        tunnel["metadata"]["name"] = f"site-{i}"
        tunnel["spec"]["peerAddress"] = f"198.51.100.{i + 1}"
        tunnels.append(tunnel)
    return tunnels


def apply(
    cp: ControlPlane, *objects: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    document = yaml.safe_dump_all(objects)
    return cp.kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=document, check=False)


def status(cp: ControlPlane) -> dict[str, Any]:
    group = cp.get_json("-n", NAMESPACE, "ipsectunnelgroup", GROUP)
    found: dict[str, Any] = group.get("status", {})
    return found


def ready_condition(cp: ControlPlane) -> dict[str, Any]:
    conditions = status(cp).get("conditions", [])
    return next((c for c in conditions if c["type"] == "Ready"), {})


def placement(cp: ControlPlane) -> dict[str, tuple[str, list[str]]]:
    """tunnel -> (active pod, backups) as the tunnels' status says."""
    listing = cp.get_json("-n", NAMESPACE, "ipsectunnels")
    return {
        t["metadata"]["name"]: (
            t.get("status", {}).get("activePod", ""),
            t.get("status", {}).get("backupPods", []),
        )
        for t in listing["items"]
    }


def gateway_pods(cp: ControlPlane) -> list[dict[str, Any]]:
    listing = cp.get_json("-n", NAMESPACE, "pods", "-l", f"ipsec.qsgw.io/group={GROUP}")
    return [p for p in listing["items"] if not p["metadata"].get("deletionTimestamp")]


def settled(cp: ControlPlane, replicas: int) -> bool:
    """Ready with `replicas` pods and every tunnel on one of them."""
    now = status(cp)
    if ready_condition(cp).get("status") != "True":
        return False
    if now.get("readyReplicas") != replicas or now.get("placedTunnels") != TUNNELS + 2:
        return False
    pods = {p["metadata"]["name"] for p in gateway_pods(cp)}
    active = {pod for pod, _ in placement(cp).values()}
    return len(pods) == replicas and active <= pods


def wait_settled(cp: ControlPlane, replicas: int, timeout: float = 120.0) -> None:
    wait_until(
        lambda: settled(cp, replicas),
        timeout,
        f"group to be Ready on {replicas} pods",
        1.0,
    )


def moved(
    before: dict[str, tuple[str, list[str]]], after: dict[str, tuple[str, list[str]]]
) -> int:
    return sum(1 for t, (pod, _) in after.items() if before[t][0] != pod)


# --- the chart -------------------------------------------------------------


def test_chart_lints_strict(cp: ControlPlane) -> None:
    result = cp.helm("lint", "--strict", str(CHART), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("delete", "configmaps", "yes"),  # unused configuration shards
        ("patch", "deployments.apps", "yes"),
        ("get", "secrets", "no"),  # pods mount them; the operator never reads
        ("delete", "deployments.apps", "no"),  # owner references do that
    ],
)
def test_chart_rbac_grants_the_operator_what_it_needs_and_no_more(
    cp: ControlPlane, installed: str, verb: str, resource: str, allowed: str
) -> None:
    account = f"system:serviceaccount:{installed}:qsgw"
    result = cp.kubectl(
        "auth", "can-i", verb, resource, "-n", NAMESPACE, "--as", account,
        check=False,
    )  # fmt: skip
    assert result.stdout.strip() == allowed, result.stdout + result.stderr


def test_chart_renders_objects_the_apiserver_accepts(
    cp: ControlPlane, installed: str
) -> None:
    rendered = cp.helm(
        "template", "qsgw-dry", str(CHART), "--namespace", installed
    ).stdout
    result = cp.kubectl(
        "apply", "--dry-run=server", "-f", "-", stdin=rendered, check=False
    )
    assert result.returncode == 0, result.stderr


# --- refusal at kubectl apply ----------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"replicas": None, "minReplicas": 5, "maxReplicas": 2},
            "gateway.minReplicas must not exceed gateway.maxReplicas",
        ),
        ({"replicas": 1}, "ha.backups must be smaller than gateway.replicas"),
        ({"tunnelsPerPod": 0}, "spec.gateway.tunnelsPerPod"),
    ],
)
def test_invalid_group_is_refused_with_what_to_fix(
    cp: ControlPlane,
    operator: subprocess.Popen[bytes],
    change: dict[str, Any],
    message: str,
) -> None:
    group = group_object(3)
    group["metadata"]["name"] = "refused"
    for key, value in change.items():
        if value is None:
            group["spec"]["gateway"].pop(key, None)
        else:
            group["spec"]["gateway"][key] = value
    result = apply(cp, group)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("peerAddress", "2001:db8::1", "peerAddress must be an address of outerFamily"),
        ("innerFamily", "IPv6", "every traffic selector must be of innerFamily"),
    ],
)
def test_invalid_tunnel_is_refused_with_what_to_fix(
    cp: ControlPlane,
    operator: subprocess.Popen[bytes],
    field: str,
    value: str,
    message: str,
) -> None:
    (tunnel,) = tunnel_objects(1)
    tunnel["metadata"]["name"] = "refused"
    tunnel["spec"][field] = value
    result = apply(cp, tunnel)
    assert result.returncode != 0
    assert message in result.stderr


# --- the story -------------------------------------------------------------


def test_group_runs_pods_on_distinct_nodes_with_devices_and_places_tunnels(
    cp: ControlPlane, operator: subprocess.Popen[bytes], nodes: list[str]
) -> None:
    secrets = example("Secret")
    result = apply(cp, *secrets, *example("IPsecTunnel"), *tunnel_objects(TUNNELS))
    assert result.returncode == 0, result.stderr
    started = time.monotonic()
    result = apply(cp, group_object(3))
    assert result.returncode == 0, result.stderr
    wait_settled(cp, 3)
    print(f"group Ready after {time.monotonic() - started:.1f} s")

    pods = gateway_pods(cp)
    assert len({p["spec"]["nodeName"] for p in pods}) == 3
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        assert limits["intel.com/intel_sriov_netdevice"] == "1"
        assert limits["qat.intel.com/cy"] == "1"
    for pod_name, backups in placement(cp).values():
        assert backups and pod_name not in backups


def test_kubectl_get_shows_placement_at_a_glance(
    cp: ControlPlane, operator: subprocess.Popen[bytes]
) -> None:
    groups = cp.kubectl("get", "-n", NAMESPACE, "ipsectunnelgroups").stdout
    header = groups.splitlines()[0].split()
    assert header[:6] == ["NAME", "REPLICAS", "READY", "TUNNELS", "PLACED", "STATUS"]
    assert "AllTunnelsPlaced" in groups
    tunnels = cp.kubectl("get", "-n", NAMESPACE, "ipsectunnels").stdout
    assert "POD" in tunnels.splitlines()[0]
    assert f"{GROUP}-gw-" in tunnels


def test_a_second_group_selecting_the_same_tunnels_leaves_them_where_they_are(
    cp: ControlPlane, operator: subprocess.Popen[bytes]
) -> None:
    before = placement(cp)
    overlap = group_object(1)
    overlap["metadata"]["name"] = "overlap"
    overlap["spec"]["ha"] = {"backups": 0}
    result = apply(cp, overlap)
    assert result.returncode == 0, result.stderr

    def degraded() -> dict[str, Any]:
        group = cp.get_json("-n", NAMESPACE, "ipsectunnelgroup", "overlap")
        conditions = group.get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == "Degraded"), {})

    wait_until(
        lambda: degraded().get("reason") == "OverlappingSelector",
        120,
        "the younger group to report the overlap",
        1.0,
    )
    assert GROUP in degraded()["message"]
    listing = cp.get_json("-n", NAMESPACE, "ipsectunnels")
    assert {t["status"]["group"] for t in listing["items"]} == {GROUP}
    assert placement(cp) == before
    cp.kubectl("delete", "-n", NAMESPACE, "ipsectunnelgroup", "overlap")
    wait_settled(cp, 3)


def test_scale_up_3_to_5_moves_few_tunnels_only_onto_new_pods(
    cp: ControlPlane, operator: subprocess.Popen[bytes]
) -> None:
    before = placement(cp)
    old_pods = {p["metadata"]["name"] for p in gateway_pods(cp)}
    assert apply(cp, group_object(5)).returncode == 0
    wait_settled(cp, 5)
    after = placement(cp)
    n = TUNNELS + 2
    fair_share = math.ceil(n * 2 / 5 * (1 + EPSILON))
    assert moved(before, after) <= fair_share
    for tunnel, (pod, _) in after.items():
        if before[tunnel][0] != pod:
            assert pod not in old_pods
    upper = math.ceil(n / 5 * (1 + EPSILON))
    loads = [row["activeTunnels"] for row in status(cp)["pods"]]
    assert max(loads) <= upper


def test_scale_down_5_to_2_moves_the_removed_pods_tunnels(
    cp: ControlPlane, operator: subprocess.Popen[bytes]
) -> None:
    before = placement(cp)
    assert apply(cp, group_object(2)).returncode == 0
    wait_settled(cp, 2)
    after = placement(cp)
    kept = {p["metadata"]["name"] for p in gateway_pods(cp)}
    on_removed = sum(1 for pod, _ in before.values() if pod not in kept)
    n = TUNNELS + 2
    lower = math.floor(n / 2 * (1 - EPSILON))
    stayed_loads = [sum(1 for p, _ in before.values() if p == pod) for pod in kept]
    pulls = sum(max(0, lower - load) for load in stayed_loads)
    assert moved(before, after) <= on_removed + pulls


def test_node_not_ready_promotes_its_tunnels_to_backups_and_pod_is_replaced(
    cp: ControlPlane, operator: subprocess.Popen[bytes]
) -> None:
    before = placement(cp)
    victim = gateway_pods(cp)[0]
    pod_name, node = victim["metadata"]["name"], victim["spec"]["nodeName"]
    lost = [t for t, (pod, _) in before.items() if pod == pod_name]
    started = time.monotonic()
    cp.set_node_not_ready(node)

    def promoted() -> bool:
        now = placement(cp)
        return all(now[t][0] in before[t][1] for t in lost)

    wait_until(promoted, 90, "tunnels of the lost pod to reach their backups", 0.5)
    seconds = time.monotonic() - started
    print(f"promoted {len(lost)} tunnels {seconds:.1f} s after NotReady")
    wait_settled(cp, 2, timeout=180)
    nodes_now = {p["spec"]["nodeName"] for p in gateway_pods(cp)}
    assert node not in nodes_now


def test_node_deleted_promotes_its_tunnels_and_pod_is_replaced(
    cp: ControlPlane, operator: subprocess.Popen[bytes]
) -> None:
    before = placement(cp)
    victim = gateway_pods(cp)[0]
    pod_name, node = victim["metadata"]["name"], victim["spec"]["nodeName"]
    lost = [t for t, (pod, _) in before.items() if pod == pod_name]
    cp.delete_node(node)

    def promoted() -> bool:
        now = placement(cp)
        return all(now[t][0] in before[t][1] for t in lost)

    wait_until(promoted, 150, "tunnels of the deleted node's pod to reach backups", 1.0)
    wait_settled(cp, 2, timeout=180)


def test_secrets_never_appear_in_status_or_config(
    cp: ControlPlane, operator: subprocess.Popen[bytes]
) -> None:
    values = [v for s in example("Secret") for v in s["stringData"].values()]
    group = cp.kubectl(
        "get", "-n", NAMESPACE, "ipsectunnelgroup", GROUP, "-o", "yaml"
    ).stdout
    selected = ("-n", NAMESPACE, "configmaps", "-l", f"ipsec.qsgw.io/group={GROUP}")
    names = {item["metadata"]["name"] for item in cp.get_json(*selected)["items"]}
    assert {f"{GROUP}-gw-placement", f"{GROUP}-gw-config-0"} <= names
    config = cp.kubectl("get", *selected, "-o", "yaml").stdout
    tunnels = cp.kubectl("get", "-n", NAMESPACE, "ipsectunnels", "-o", "yaml").stdout
    for value in values:
        assert value not in group + config + tunnels


def test_deleting_the_group_removes_everything_it_owns(
    cp: ControlPlane, operator: subprocess.Popen[bytes]
) -> None:
    cp.kubectl("delete", "-n", NAMESPACE, "ipsectunnelgroup", GROUP, "--timeout=60s")

    def gone() -> bool:
        kinds = "deployments,services,poddisruptionbudgets,configmaps,pods"
        listing = cp.get_json(
            "-n", NAMESPACE, kinds, "-l", f"ipsec.qsgw.io/group={GROUP}"
        )
        return not listing["items"]

    wait_until(gone, 120, "the garbage collector to remove the group's children", 1.0)


def test_namespace_deletion_is_not_blocked_by_the_operator(
    cp: ControlPlane, operator: subprocess.Popen[bytes]
) -> None:
    apply(cp, group_object(2))
    operator.terminate()  # even with the operator gone
    operator.wait(timeout=20)
    cp.kubectl("delete", "namespace", NAMESPACE, "--timeout=120s")
    assert cp.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0
