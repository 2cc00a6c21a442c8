"""The gateway workload as rendered: devices, capabilities, spreading."""

from __future__ import annotations

import json
from typing import Any

from fakekube import example_objects

from qsgw_operator import render
from qsgw_operator.models import TunnelGroupSpec, TunnelSpec
from qsgw_operator.placement import Pod, place


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


def test_placement_round_trips_through_the_placement_config_map() -> None:
    result = place(["a", "b", "c"], [Pod("p0", "n0"), Pod("p1", "n1")], capacity=5)
    record = render.placement_map("g", "ns", "uid", result, {}, [])
    active, backups = render.read_placement(record["data"])
    assert active == dict(result.active) and backups == dict(result.backups)


def test_placement_of_ten_thousand_tunnels_fits_one_config_map_with_room() -> None:
    names = [f"tunnel-{i:05d}-of-a-branch-office" for i in range(10_000)]
    pods = [Pod(f"branches-gw-7d9f8c6b5-{i:05d}", f"node-{i}") for i in range(12)]
    result = place(names, pods, capacity=1000, backups=1)
    record = render.placement_map("g", "ns", "uid", result, {}, [])
    size = render.data_size(record)
    assert size < render.CONFIG_MAP_LIMIT // 2, size
    active, _ = render.read_placement(record["data"])
    assert active == dict(result.active)


def sized(sizes: dict[str, int]) -> dict[str, str]:
    """Files whose data-map entries take exactly the given octets."""
    return {key: "x" * (size - len(key)) for key, size in sizes.items()}


def shard_loads(files: dict[str, str], where: dict[str, int]) -> list[int]:
    loads = [0] * render.CONFIG_SHARDS
    for key, index in where.items():
        loads[index] += render.entry_size(key, files[key])
    return loads


def test_files_go_first_fit_in_key_order_and_no_shard_exceeds_the_limit() -> None:
    files = sized({f"p{i:02d}.yaml": 300 + 37 * i for i in range(40)})
    where = render.assign_shards(files, {}, shards=16, limit=4000)
    assert where is not None and set(where) == set(files)
    assert max(shard_loads(files, where)) <= 4000
    assert where["p00.yaml"] == 0 and where["p01.yaml"] == 0


def test_files_keep_their_shard_while_it_has_room() -> None:
    files = sized({f"p{i}.yaml": 600 for i in range(6)})
    first = render.assign_shards(files, {}, limit=1300)
    assert first is not None
    files["p1.yaml"] = "x" * 900  # no longer fits beside p0
    files["p9.yaml"] = "x" * 10
    second = render.assign_shards(files, first, limit=1300)
    assert second is not None
    moved = {key for key in first if first[key] != second[key]}
    assert moved == {"p1.yaml"}
    assert max(shard_loads(files, second)) <= 1300


def test_assignment_depends_only_on_the_inputs() -> None:
    files = sized({f"p{i}.yaml": 100 * (i % 7 + 1) for i in range(30)})
    reordered = dict(reversed(list(files.items())))
    assert render.assign_shards(files, {}, limit=1500) == render.assign_shards(
        reordered, {}, limit=1500
    )


def test_files_beyond_every_shard_do_not_fit() -> None:
    files = sized({f"p{i}.yaml": 1000 for i in range(17)})
    assert render.assign_shards(files, {}, shards=16, limit=1000) is None
    assert render.assign_shards(files, {}, shards=17, limit=1000) is not None


def test_a_file_larger_than_one_shard_does_not_fit() -> None:
    files = sized({"p0.yaml": 1001})
    assert render.assign_shards(files, {}, limit=1000) is None


def test_config_volume_projects_placement_and_every_shard_optionally() -> None:
    volumes = {v["name"]: v for v in pod_spec(group_spec())["spec"]["volumes"]}
    sources = volumes["config"]["projected"]["sources"]
    names = [source["configMap"]["name"] for source in sources]
    assert names == ["branches-gw-placement"] + [
        f"branches-gw-config-{i}" for i in range(render.CONFIG_SHARDS)
    ]
    assert all(source["configMap"]["optional"] is True for source in sources)
    (container,) = pod_spec(group_spec())["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["config"] == render.CONFIG_DIR
