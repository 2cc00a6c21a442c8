"""The gateway workload as rendered: devices, capabilities, spreading."""

from __future__ import annotations

import json
from typing import Any

from fakekube import example_objects

from qsgw_operator import render
from qsgw_operator.models import TunnelGroupSpec, TunnelSpec


def group_spec(**gateway: Any) -> TunnelGroupSpec:
    (group,) = [o for o in example_objects() if o["kind"] == "IPsecTunnelGroup"]
    group["spec"]["gateway"].update(gateway)
    return TunnelGroupSpec.model_validate(group["spec"])


def tunnels() -> dict[str, TunnelSpec]:
    return {
        o["metadata"]["name"]: TunnelSpec.model_validate(o["spec"])
        for o in example_objects()
        if o["kind"] == "IPsecTunnel"
    }


def pod_spec(spec: TunnelGroupSpec) -> dict[str, Any]:
    secrets = render.secret_refs(tunnels())
    deployment = render.deployment("branches", "vpn", "uid", spec, 3, secrets)
    template: dict[str, Any] = deployment["spec"]["template"]
    return template


def test_device_resources_are_requested_with_requests_equal_to_limits() -> None:
    (container,) = pod_spec(group_spec())["spec"]["containers"]
    resources = container["resources"]
    assert resources["requests"] == resources["limits"]
    assert resources["limits"]["intel.com/intel_sriov_netdevice"] == "1"
    assert resources["limits"]["qat.intel.com/cy"] == "1"


def test_only_the_needed_capabilities_are_added() -> None:
    (container,) = pod_spec(group_spec())["spec"]["containers"]
    context = container["securityContext"]
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["capabilities"]["add"] == [
        "NET_ADMIN",
        "NET_BIND_SERVICE",
        "IPC_LOCK",
    ]
    assert context["allowPrivilegeEscalation"] is False


def test_ipc_lock_is_left_out_without_qat() -> None:
    (container,) = pod_spec(group_spec(qat=None))["spec"]["containers"]
    assert "IPC_LOCK" not in container["securityContext"]["capabilities"]["add"]


def test_multus_annotation_lists_the_network_attachments() -> None:
    annotations = pod_spec(group_spec())["metadata"]["annotations"]
    networks = json.loads(annotations[render.MULTUS_NETWORKS])
    assert networks == [{"name": "sriov-uplink", "interface": "net1"}]


def test_pods_never_share_a_node_and_prefer_spreading_over_zones() -> None:
    spec = pod_spec(group_spec())["spec"]
    (term,) = spec["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"


def test_secrets_are_projected_by_reference_only() -> None:
    volumes = {v["name"]: v for v in pod_spec(group_spec())["spec"]["volumes"]}
    sources = volumes["secrets"]["projected"]["sources"]
    paths = [item["path"] for s in sources for item in s["secret"]["items"]]
    assert paths == [
        "branch-ppks/branch-a",
        "branch-psks/branch-a",
        "branch-psks/branch-b",
    ]


def test_replicas_follow_tunnel_count_within_bounds() -> None:
    spec = group_spec(replicas=None, minReplicas=2, maxReplicas=6, tunnelsPerPod=100)
    assert render.replicas_wanted(spec, 0) == 2
    assert render.replicas_wanted(spec, 250) == 4  # 3 for the load, 1 to fail over
    assert render.replicas_wanted(spec, 10_000) == 6


def test_placement_round_trips_through_the_config_map() -> None:
    from qsgw_operator.placement import Pod, place

    result = place(["a", "b", "c"], [Pod("p0", "n0"), Pod("p1", "n1")], capacity=5)
    specs = dict.fromkeys(["a", "b", "c"], tunnels()["branch-a"])
    config_map = render.config_map("g", "ns", "uid", ["p0", "p1"], specs, result)
    active, backups = render.read_placement(config_map["data"])
    assert active == dict(result.active) and backups == dict(result.backups)
