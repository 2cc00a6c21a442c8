"""Pure functions from a group, its tunnels and a placement to the objects
the operator applies: the gateway Deployment, its headless Service, its
PodDisruptionBudget, the shard ConfigMaps holding each pod's gateway
configuration (the file `qsgw run --config` reads, `qsgw.daemon.config`,
written as compact JSON, which is YAML too)
and the placement ConfigMap.

No API calls here: every function returns plain dicts, ready for
server-side apply, so tests can read them and the handlers stay thin.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from qsgw_operator.models import (
    GROUP,
    VERSION,
    GatewayTemplate,
    SecretKeyRef,
    TunnelGroupSpec,
    TunnelSpec,
)
from qsgw_operator.placement import Placement

Obj = dict[str, Any]

GROUP_LABEL = f"{GROUP}/group"
CONFIG_DIR = "/etc/qsgw/config"
SECRET_DIR = "/etc/qsgw/secrets"
PLACEMENT_KEY = "placement.json"
SHARDS_KEY = "shards.json"
METRICS_PORT = 9500
MULTUS_NETWORKS = "k8s.v1.cni.cncf.io/networks"
# the apiserver refuses a ConfigMap whose data exceeds 1 MiB; keep a margin
CONFIG_MAP_LIMIT = 1_000_000
# shard ConfigMaps the pod template always mounts (optional sources), so the
# number in use can change without touching the template
CONFIG_SHARDS = 16


def labels(group: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "qsgw-gateway",
        "app.kubernetes.io/instance": group,
        "app.kubernetes.io/managed-by": "qsgw-operator",
        GROUP_LABEL: group,
    }


def selector(group: str) -> dict[str, str]:
    return {GROUP_LABEL: group, "app.kubernetes.io/name": "qsgw-gateway"}


def owner_reference(group: str, uid: str) -> Obj:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "IPsecTunnelGroup",
        "name": group,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(name: str, namespace: str, group: str, uid: str) -> Obj:
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels(group),
        "ownerReferences": [owner_reference(group, uid)],
    }


def replicas_wanted(spec: TunnelGroupSpec, tunnels: int) -> int:
    """Fixed replicas, or enough pods for the tunnels plus one to fail over
    onto, kept within [minReplicas, maxReplicas]."""
    gateway = spec.gateway
    if gateway.replicas is not None:
        return gateway.replicas
    needed = math.ceil(tunnels / gateway.tunnels_per_pod)
    needed += 1 if spec.ha.backups else 0
    low = gateway.min_replicas or 1
    high = gateway.max_replicas or low
    return max(low, min(high, needed))


def workload_name(group: str) -> str:
    return f"{group}-gw"


def config_map_name(group: str) -> str:
    """The single ConfigMap of operator versions before sharding; read once
    for the placement it holds, then deleted."""
    return f"{group}-gw-config"


def shard_name(group: str, index: int) -> str:
    return f"{group}-gw-config-{index}"


def placement_map_name(group: str) -> str:
    return f"{group}-gw-placement"


# --- the Deployment --------------------------------------------------------


def deployment(
    group: str,
    namespace: str,
    uid: str,
    spec: TunnelGroupSpec,
    replicas: int,
    secrets: Sequence[SecretKeyRef],
) -> Obj:
    """The gateway workload; why a Deployment: docs/operator.md."""
    name = workload_name(group)
    template = {
        "metadata": {"labels": labels(group), "annotations": _pod_annotations(spec)},
        "spec": _pod_spec(group, spec.gateway, secrets),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, namespace, group, uid),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(group)},
            # one gateway per node: a surge pod would have nowhere to go
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "template": template,
        },
    }


def _pod_annotations(spec: TunnelGroupSpec) -> dict[str, str]:
    networks = [
        {
            key: value
            for key, value in (
                ("name", net.name),
                ("namespace", net.namespace),
                ("interface", net.interface),
            )
            if value
        }
        for net in spec.gateway.networks
    ]
    return {MULTUS_NETWORKS: json.dumps(networks)} if networks else {}


def _pod_spec(
    group: str, gateway: GatewayTemplate, secrets: Sequence[SecretKeyRef]
) -> Obj:
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 5,
        "containers": [_container(gateway)],
        "volumes": _volumes(group, secrets),
        "nodeSelector": dict(gateway.node_selector),
        "tolerations": [
            t.model_dump(by_alias=True, exclude_none=True) for t in gateway.tolerations
        ],
        "affinity": _anti_affinity(group),
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector(group)},
            }
            for key in gateway.topology_spread_keys
        ],
    }


def _anti_affinity(group: str) -> Obj:
    """Required: never two gateways of a group on one node."""
    term = {
        "labelSelector": {"matchLabels": selector(group)},
        "topologyKey": "kubernetes.io/hostname",
    }
    return {
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
    }


def _container(gateway: GatewayTemplate) -> Obj:
    resources: dict[str, str] = {
        "cpu": gateway.resources.cpu,
        "memory": gateway.resources.memory,
    }
    for device in (gateway.sriov, gateway.qat):
        if device is not None:
            resources[device.resource_name] = str(device.count)
    return {
        "name": "gateway",
        "image": gateway.image,
        "args": ["run", "--config", f"{CONFIG_DIR}/$(POD_NAME).yaml"],
        "env": [_field_env("POD_NAME", "metadata.name")],
        "ports": [
            {"name": "ike", "containerPort": 500, "protocol": "UDP"},
            {"name": "ike-natt", "containerPort": 4500, "protocol": "UDP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        # extended resources must have requests == limits
        "resources": {"requests": resources, "limits": dict(resources)},
        "securityContext": _security_context(gateway),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "secrets", "mountPath": SECRET_DIR, "readOnly": True},
            {"name": "run", "mountPath": "/run/qsgw"},
        ],
    }


def _field_env(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _security_context(gateway: GatewayTemplate) -> Obj:
    """Only what the data plane needs; the reasons are in docs/operator.md."""
    add = ["NET_ADMIN", "NET_BIND_SERVICE"]
    if gateway.qat is not None:
        add.append("IPC_LOCK")
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": add},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _volumes(group: str, secrets: Sequence[SecretKeyRef]) -> list[Obj]:
    by_secret: dict[str, list[str]] = {}
    for ref in secrets:
        by_secret.setdefault(ref.name, []).append(ref.key)
    sources = [
        {
            "secret": {
                "name": name,
                "items": [
                    {"key": key, "path": f"{name}/{key}", "mode": 0o400}
                    for key in sorted(set(keys))
                ],
            }
        }
        for name, keys in sorted(by_secret.items())
    ]
    return [
        {"name": "config", "projected": {"sources": _config_sources(group)}},
        {"name": "secrets", "projected": {"sources": sources}},
        {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]


def _config_sources(group: str) -> list[Obj]:
    """The placement ConfigMap and every shard, all optional: the template
    is the same whatever the number of shards in use."""
    names = [placement_map_name(group)]
    names += [shard_name(group, index) for index in range(CONFIG_SHARDS)]
    return [{"configMap": {"name": name, "optional": True}} for name in names]


def secret_refs(tunnels: Mapping[str, TunnelSpec]) -> list[SecretKeyRef]:
    """Every Secret key the group's tunnels reference, once, sorted."""
    refs: dict[tuple[str, str], SecretKeyRef] = {}
    for spec in tunnels.values():
        found = [spec.authentication.psk_secret_ref]
        if spec.ppk is not None:
            found.append(spec.ppk.secret_ref)
        for ref in found:
            refs[(ref.name, ref.key)] = ref
    return [refs[key] for key in sorted(refs)]


# --- Service and PodDisruptionBudget ---------------------------------------


def headless_service(group: str, namespace: str, uid: str) -> Obj:
    """Pod-to-pod DNS for HA state sync; not-ready pods stay resolvable so a
    standby can still reach a pod that is failing."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(f"{group}-gw-sync", namespace, group, uid),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector(group),
            "ports": [{"name": "metrics", "port": METRICS_PORT, "protocol": "TCP"}],
        },
    }


def disruption_budget(group: str, namespace: str, uid: str) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(f"{group}-gw", namespace, group, uid),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(group)},
        },
    }


# --- per-pod gateway configuration -----------------------------------------


def secret_path(ref: SecretKeyRef) -> str:
    return f"{SECRET_DIR}/{ref.name}/{ref.key}"


def connection(spec: TunnelSpec) -> Obj:
    """One tunnel as a `connections:` entry of the gateway's YAML."""
    entry: Obj = {
        "remote_addrs": [spec.peer_address],
        "local": {"id": spec.local_id, "auth": "psk"},
        "remote": {"id": spec.remote_id, "auth": "psk"},
        "proposals": list(spec.ike.proposals),
        "psk_file": secret_path(spec.authentication.psk_secret_ref),
        "rekey_time": spec.ike.rekey_time,
        "children": {
            child.name: {
                "local_ts": list(child.local_ts),
                "remote_ts": list(child.remote_ts),
                "esp_proposals": list(child.esp_proposals),
                "rekey_time": child.rekey_time,
            }
            for child in spec.children
        },
    }
    if spec.ppk is not None:
        entry["ppk"] = {
            "id": spec.ppk.id,
            "file": secret_path(spec.ppk.secret_ref),
            "required": spec.ppk.required,
        }
    return entry


def gateway_config(tunnels: Mapping[str, TunnelSpec], names: Sequence[str]) -> Obj:
    """The whole file for one pod: its active tunnels as connections."""
    return {
        "gateway": {
            "metrics": {"address": "0.0.0.0", "port": METRICS_PORT},
            "log": {"level": "info", "format": "json"},
            # the kubelet swaps the mounted ConfigMap in place: follow it
            "watch_config": "10s",
        },
        "connections": {name: connection(tunnels[name]) for name in sorted(names)},
    }


def pod_files(
    pods: Sequence[str], tunnels: Mapping[str, TunnelSpec], placement: Placement
) -> dict[str, str]:
    """`<pod>.yaml` for every pod: its active tunnels as connections.

    Compact JSON: 15 % smaller than block YAML, so more tunnels fit in the
    shards, written in a fraction of the time, and the gateway reads it
    with the json module, about a hundred times faster than PyYAML builds
    the same objects."""
    per_pod: dict[str, list[str]] = {pod: [] for pod in pods}
    for tunnel, pod in placement.active.items():
        per_pod.setdefault(pod, []).append(tunnel)
    return {
        f"{pod}.yaml": json.dumps(gateway_config(tunnels, names), separators=(",", ":"))
        for pod, names in sorted(per_pod.items())
    }


def entry_size(key: str, value: str) -> int:
    """Octets one key takes in a ConfigMap's data, as the apiserver counts."""
    return len(key.encode()) + len(value.encode())


def assign_shards(
    files: Mapping[str, str],
    previous: Mapping[str, int],
    shards: int = CONFIG_SHARDS,
    limit: int = CONFIG_MAP_LIMIT,
) -> dict[str, int] | None:
    """Each file's shard index, or None if the files do not fit.

    Stable: a file stays in its previous shard while that shard has room
    (files keep their place in key order); the others go, in key order, to
    the first shard with room. The result depends only on the inputs.
    """
    used = [0] * shards
    where: dict[str, int] = {}
    moving = []
    for key in sorted(files):
        size = entry_size(key, files[key])
        index = previous.get(key, -1)
        if 0 <= index < shards and used[index] + size <= limit:
            used[index] += size
            where[key] = index
        else:
            moving.append(key)
    for key in moving:
        size = entry_size(key, files[key])
        index = next((i for i in range(shards) if used[i] + size <= limit), -1)
        if index < 0:
            return None
        used[index] += size
        where[key] = index
    return where


def shard_data(
    files: Mapping[str, str], where: Mapping[str, int]
) -> list[dict[str, str]]:
    """The data of shards 0 .. highest index in use (gaps stay empty)."""
    count = max(where.values(), default=-1) + 1
    data: list[dict[str, str]] = [{} for _ in range(count)]
    for key in sorted(files):
        data[where[key]][key] = files[key]
    return data


def digest(data: Mapping[str, str]) -> str:
    """A fingerprint of a ConfigMap's data, to skip applying unchanged shards."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def config_shard(
    group: str, namespace: str, uid: str, index: int, data: Mapping[str, str]
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(shard_name(group, index), namespace, group, uid),
        "data": dict(data),
    }


def placement_record(placement: Placement) -> str:
    """`placement.json`, compact enough for 10,000s of tunnels: the pods once,
    then per tunnel the indices of its active pod and its backups, e.g.
    `{"pods":["p0","p1"],"tunnels":{"t":[0,1]}}`."""
    pods = sorted(
        set(placement.active.values())
        | {b for backups in placement.backups.values() for b in backups}
    )
    number = {pod: index for index, pod in enumerate(pods)}
    record = {
        tunnel: [number[pod]] + [number[b] for b in placement.backups.get(tunnel, ())]
        for tunnel, pod in sorted(placement.active.items())
    }
    return json.dumps({"pods": pods, "tunnels": record}, separators=(",", ":"))


def placement_map(
    group: str,
    namespace: str,
    uid: str,
    placement: Placement,
    where: Mapping[str, int],
    digests: Sequence[str],
) -> Obj:
    """`placement.json` (who carries and who stands by for every tunnel, read
    back by the operator after a restart and by the gateways' state sync) and
    `shards.json` (which shard holds which pod's file, and a digest of each
    shard's data as last applied)."""
    shards = {"files": dict(sorted(where.items())), "digests": list(digests)}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(placement_map_name(group), namespace, group, uid),
        "data": {
            PLACEMENT_KEY: placement_record(placement),
            SHARDS_KEY: json.dumps(shards, separators=(",", ":")),
        },
    }


def data_size(config_map: Obj) -> int:
    """Octets of a ConfigMap's data, as the apiserver counts them."""
    data: dict[str, str] = config_map["data"]
    return sum(entry_size(key, value) for key, value in data.items())


def read_shards(data: Mapping[str, str] | None) -> tuple[dict[str, int], list[str]]:
    """The previous file-to-shard map and shard digests; empty if absent."""
    try:
        record = json.loads((data or {}).get(SHARDS_KEY, "{}"))
    except ValueError:
        return {}, []
    if not isinstance(record, dict):
        return {}, []
    files = record.get("files", {})
    digests = record.get("digests", [])
    if not isinstance(files, dict) or not isinstance(digests, list):
        return {}, []
    where = {str(k): v for k, v in files.items() if isinstance(v, int)}
    return where, [str(d) for d in digests]


def read_placement(
    data: Mapping[str, str] | None,
) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """The previous placement from a ConfigMap's data; empty if absent.
    Reads the compact record and the per-tunnel one of the unsharded
    ConfigMap of earlier operator versions."""
    try:
        record = json.loads((data or {}).get(PLACEMENT_KEY, "{}"))
    except ValueError:
        return {}, {}
    if not isinstance(record, dict):
        return {}, {}
    if isinstance(record.get("pods"), list) and isinstance(record.get("tunnels"), dict):
        return _read_compact(record["pods"], record["tunnels"])
    active = {
        t: str(e.get("active", "")) for t, e in record.items() if isinstance(e, dict)
    }
    backups = {
        t: tuple(str(b) for b in e.get("backups", ()))
        for t, e in record.items()
        if isinstance(e, dict)
    }
    return active, backups


def _read_compact(
    pods: list[Any], tunnels: dict[str, Any]
) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    names = [str(pod) for pod in pods]
    active: dict[str, str] = {}
    backups: dict[str, tuple[str, ...]] = {}
    for tunnel, indices in tunnels.items():
        if not isinstance(indices, list) or not indices:
            continue
        if not all(isinstance(i, int) and 0 <= i < len(names) for i in indices):
            continue
        active[tunnel] = names[indices[0]]
        backups[tunnel] = tuple(names[i] for i in indices[1:])
    return active, backups
