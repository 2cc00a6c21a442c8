"""A reconcile pass against an in-memory API: children, placement, status."""

from __future__ import annotations

import json
import math
from typing import Any

import yaml
from fakekube import FakeKube, example_objects

from qsgw.daemon.config import Document
from qsgw_operator import render
from qsgw_operator.reconcile import reconcile

NOW = "2026-12-03T17:00:00Z"
LATER = "2026-12-03T17:05:00Z"


def scene(pods: int = 3, tunnels: int = 0) -> FakeKube:
    kube = FakeKube()
    for obj in example_objects():
        kube.add(obj)
    template = kube.tunnels["branch-a"]
    for i in range(tunnels):
        extra = json.loads(json.dumps(template))
        extra["metadata"] = {"name": f"t-{i}", "labels": template["metadata"]["labels"]}
        kube.add(extra)
    for i in range(pods):
        kube.add_pod(f"branches-gw-{i}", "branches", f"node-{i}")
    return kube


def condition(kube: FakeKube, kind: str) -> dict[str, Any]:
    conditions = kube.groups["branches"]["status"]["conditions"]
    found: dict[str, Any] = next(c for c in conditions if c["type"] == kind)
    return found


def mounted(kube: FakeKube) -> dict[str, str]:
    """/etc/qsgw/config as the kubelet builds it: the sources of the pod
    template's projected volume, in order, missing optional ones skipped."""
    deployment = kube.applied[("Deployment", "branches-gw")]
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    (config,) = [v for v in volumes if v["name"] == "config"]
    files: dict[str, str] = {}
    for source in config["projected"]["sources"]:
        found = kube.applied.get(("ConfigMap", source["configMap"]["name"]))
        assert found is not None or source["configMap"]["optional"] is True
        for key, value in (found or {}).get("data", {}).items():
            assert key not in files, f"{key} is in two sources"
            files[key] = value
    return files


def assert_promoted(kube: FakeKube, before: dict[str, Any], lost: str) -> None:
    """Each lost tunnel is on its backup, unless that backup was full."""
    status = kube.groups["branches"]["status"]
    upper = math.ceil(status["placedTunnels"] / status["readyReplicas"] * 1.05)
    loads = {row["name"]: row["activeTunnels"] for row in status["pods"]}
    for name, old in before.items():
        new = kube.tunnels[name]["status"]
        assert new["activePod"] != lost
        if old["activePod"] == lost:
            (backup,) = old["backupPods"]
            assert new["activePod"] == backup or loads[backup] == upper


def test_pass_applies_workload_service_budget_and_config_owned_by_the_group() -> None:
    kube = scene()
    reconcile(kube, "vpn", "branches", NOW)
    kinds = {kind for kind, _ in kube.applied}
    assert kinds == {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"}
    for obj in kube.applied.values():
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner["kind"] == "IPsecTunnelGroup" and owner["uid"] == "uid-branches"
        assert owner["controller"] is True


def test_every_tunnel_is_carried_by_one_ready_pod_and_backed_up_on_another() -> None:
    kube = scene(pods=3, tunnels=40)
    reconcile(kube, "vpn", "branches", NOW)
    for tunnel in kube.tunnels.values():
        status = tunnel["status"]
        assert status["activePod"] in kube.pods
        assert status["backupPods"] and status["activePod"] not in status["backupPods"]
    assert kube.groups["branches"]["status"]["placedTunnels"] == 42
    assert condition(kube, "Ready")["status"] == "True"


def test_each_pod_config_is_valid_gateway_yaml_naming_secrets_by_file_only() -> None:
    kube = scene()
    reconcile(kube, "vpn", "branches", NOW)
    data = mounted(kube)
    seen = set()
    for key, text in data.items():
        if not key.endswith(".yaml"):
            continue
        assert "replace-me" not in text
        document = Document.model_validate(yaml.safe_load(text))
        for name, connection in document.connections.items():
            seen.add(name)
            assert str(connection.psk_file).startswith("/etc/qsgw/secrets/branch-psks/")
    assert seen == {"branch-a", "branch-b"}


def test_a_second_pass_with_nothing_changed_writes_no_status_or_config() -> None:
    kube = scene(tunnels=10)
    reconcile(kube, "vpn", "branches", NOW)
    writes, applies = kube.status_writes, kube.apply_calls
    reconcile(kube, "vpn", "branches", LATER)
    assert kube.status_writes == writes
    assert kube.apply_calls == applies + 3  # Service, budget, Deployment only


def test_a_starting_pod_gets_an_empty_config_file_until_it_is_ready() -> None:
    kube = scene(pods=3)
    kube.add_pod("branches-gw-new", "branches", "node-9", ready=False)
    reconcile(kube, "vpn", "branches", NOW)
    data = mounted(kube)
    assert yaml.safe_load(data["branches-gw-new.yaml"])["connections"] == {}


def test_lost_pod_tunnels_move_to_their_backups_and_status_says_so() -> None:
    kube = scene(pods=3, tunnels=60)
    reconcile(kube, "vpn", "branches", NOW)
    before = {n: t["status"] for n, t in kube.tunnels.items()}
    kube.add_pod("branches-gw-1", "branches", "node-1", ready=False)
    reconcile(kube, "vpn", "branches", LATER)
    assert_promoted(kube, before, "branches-gw-1")
    assert condition(kube, "Degraded")["reason"] == "PodsLost"
    rows = {row["name"]: row for row in kube.groups["branches"]["status"]["pods"]}
    assert rows["branches-gw-1"]["role"] == "lost"


def test_pods_of_a_deleted_node_count_as_lost_though_they_say_ready() -> None:
    kube = scene(pods=3, tunnels=30)
    reconcile(kube, "vpn", "branches", NOW)
    before = {n: t["status"] for n, t in kube.tunnels.items()}
    del kube.nodes["node-2"]
    reconcile(kube, "vpn", "branches", LATER)
    assert_promoted(kube, before, "branches-gw-2")
    assert kube.groups["branches"]["status"]["readyReplicas"] == 2


def test_a_tunnel_with_an_unknown_algorithm_is_refused_with_a_reason() -> None:
    kube = scene()
    kube.tunnels["branch-b"]["spec"]["ike"]["proposals"] = [
        "aes256gcm16-prfsha384-nope"
    ]
    reconcile(kube, "vpn", "branches", NOW)
    status = kube.tunnels["branch-b"]["status"]
    assert status["activePod"] == "" and "nope" in status["reason"]
    assert condition(kube, "Degraded")["reason"] == "InvalidTunnels"


def test_too_little_capacity_leaves_tunnels_unplaced_and_degraded() -> None:
    kube = scene(pods=2, tunnels=8)
    kube.groups["branches"]["spec"]["gateway"].update(replicas=2, tunnelsPerPod=3)
    reconcile(kube, "vpn", "branches", NOW)
    assert kube.groups["branches"]["status"]["placedTunnels"] == 6
    assert condition(kube, "Ready")["reason"] == "TunnelsUnplaced"
    assert condition(kube, "Degraded")["reason"] == "InsufficientCapacity"


def test_unchanged_condition_keeps_its_transition_time() -> None:
    kube = scene()
    reconcile(kube, "vpn", "branches", NOW)
    reconcile(kube, "vpn", "branches", LATER)
    assert condition(kube, "Ready")["lastTransitionTime"] == NOW


def test_no_ready_pod_yet_reads_as_pods_not_ready_not_as_capacity() -> None:
    kube = scene(pods=0, tunnels=5)
    reconcile(kube, "vpn", "branches", NOW)
    assert condition(kube, "Ready")["reason"] == "PodsNotReady"
    assert condition(kube, "Degraded")["status"] == "False"
    assert all("status" not in tunnel for tunnel in kube.tunnels.values())


def test_a_pod_file_beyond_one_config_map_is_reported_not_applied() -> None:
    kube = scene(pods=3, tunnels=7498)  # 2,500 a pod, about 490 octets each
    kube.groups["branches"]["spec"]["gateway"]["tunnelsPerPod"] = 2500
    reconcile(kube, "vpn", "branches", NOW)
    assert not [name for kind, name in kube.applied if kind == "ConfigMap"]
    degraded = condition(kube, "Degraded")
    assert degraded["reason"] == "ConfigTooLarge"
    octets = int(degraded["message"].split(" takes ")[1].split(" ")[0])
    assert octets > 3 * render.CONFIG_MAP_LIMIT


def shard_names(kube: FakeKube) -> list[str]:
    return sorted(
        name
        for kind, name in kube.applied
        if kind == "ConfigMap" and "-config-" in name
    )


def test_ten_thousand_tunnels_are_sharded_and_each_on_exactly_one_pod() -> None:
    kube = scene(pods=12, tunnels=9998)  # plus the example's two
    kube.groups["branches"]["spec"]["gateway"].update(replicas=12)
    reconcile(kube, "vpn", "branches", NOW)
    assert condition(kube, "Ready")["reason"] == "AllTunnelsPlaced"
    assert condition(kube, "Degraded")["status"] == "False"
    assert len(shard_names(kube)) > 1
    for (kind, _), obj in kube.applied.items():
        if kind == "ConfigMap":
            assert render.data_size(obj) <= render.CONFIG_MAP_LIMIT
    carried: dict[str, str] = {}
    for key, text in mounted(kube).items():
        if key.endswith(".yaml"):
            for tunnel in yaml.safe_load(text)["connections"]:
                assert tunnel not in carried
                carried[tunnel] = key.removesuffix(".yaml")
    assert len(carried) == 10_000
    assert all(kube.tunnels[t]["status"]["activePod"] == p for t, p in carried.items())


def test_shards_no_longer_used_are_deleted() -> None:
    kube = scene(pods=3, tunnels=2998)
    reconcile(kube, "vpn", "branches", NOW)
    before = shard_names(kube)
    assert len(before) >= 2
    kube.groups["branches"]["spec"]["gateway"]["replicas"] = 1
    del kube.pods["branches-gw-1"], kube.pods["branches-gw-2"]
    reconcile(kube, "vpn", "branches", LATER)
    assert shard_names(kube) == ["branches-gw-config-0"]
    assert sorted(name for _, name in kube.deleted) == before[1:]
    assert set(mounted(kube)) == {"branches-gw-0.yaml", "placement.json", "shards.json"}


def test_an_unsharded_config_map_seeds_the_placement_then_is_deleted() -> None:
    kube = scene(pods=3, tunnels=30)
    reconcile(kube, "vpn", "branches", NOW)
    before = {n: t["status"]["activePod"] for n, t in kube.tunnels.items()}
    placement = kube.applied.pop(("ConfigMap", "branches-gw-placement"))
    legacy_record = {
        tunnel: {"active": pod, "backups": []} for tunnel, pod in before.items()
    }
    legacy = dict(placement, data={"placement.json": json.dumps(legacy_record)})
    legacy["metadata"] = dict(placement["metadata"], name="branches-gw-config")
    kube.applied[("ConfigMap", "branches-gw-config")] = legacy
    for tunnel in kube.tunnels.values():
        del tunnel["status"]
    reconcile(kube, "vpn", "branches", LATER)
    after = {n: t["status"]["activePod"] for n, t in kube.tunnels.items()}
    assert after == before
    assert kube.deleted == [("ConfigMap", "branches-gw-config")]
    assert ("ConfigMap", "branches-gw-placement") in kube.applied


def test_a_deleted_group_is_left_alone() -> None:
    kube = scene()
    kube.groups["branches"]["metadata"]["deletionTimestamp"] = NOW
    assert reconcile(kube, "vpn", "branches", NOW) is None
    assert kube.apply_calls == 0


def second_group(kube: FakeKube, name: str, pods: int = 2) -> None:
    """Another group selecting the same tunnels, created after `branches`."""
    group = json.loads(json.dumps(kube.groups["branches"]))
    group["metadata"] = {"name": name}
    group["spec"]["gateway"]["replicas"] = pods
    kube.add(group)
    for i in range(pods):
        kube.add_pod(f"{name}-gw-{i}", name, f"node-{name}-{i}")


def connections_of(kube: FakeKube, group: str) -> set[str]:
    shard = kube.applied.get(("ConfigMap", render.shard_name(group, 0)), {})
    names: set[str] = set()
    for text in shard.get("data", {}).values():
        names |= set(yaml.safe_load(text)["connections"])
    return names


def test_a_tunnel_selected_by_two_groups_is_carried_by_the_older_one_only() -> None:
    kube = scene(pods=3, tunnels=5)
    second_group(kube, "backbone")
    reconcile(kube, "vpn", "backbone", NOW)  # the younger group's pass first
    reconcile(kube, "vpn", "branches", NOW)
    reconcile(kube, "vpn", "backbone", LATER)

    assert {t["status"]["group"] for t in kube.tunnels.values()} == {"branches"}
    assert connections_of(kube, "branches") == set(kube.tunnels)
    assert connections_of(kube, "backbone") == set()
    degraded = next(
        c
        for c in kube.groups["backbone"]["status"]["conditions"]
        if c["type"] == "Degraded"
    )
    assert degraded["status"] == "True"
    assert degraded["reason"] == "OverlappingSelector"
    assert "branches" in degraded["message"]
    assert condition(kube, "Degraded")["reason"] == "AsExpected"


def test_the_younger_group_takes_shared_tunnels_over_when_the_older_one_goes() -> None:
    kube = scene(pods=3, tunnels=5)
    second_group(kube, "backbone")
    reconcile(kube, "vpn", "branches", NOW)
    reconcile(kube, "vpn", "backbone", NOW)
    assert connections_of(kube, "backbone") == set()
    kube.groups["branches"]["metadata"]["deletionTimestamp"] = LATER

    reconcile(kube, "vpn", "backbone", LATER)
    statuses = [t["status"] for t in kube.tunnels.values()]
    assert {s["group"] for s in statuses} == {"backbone"}
    assert {s["activePod"] for s in statuses} <= {"backbone-gw-0", "backbone-gw-1"}
    assert connections_of(kube, "backbone") == set(kube.tunnels)
