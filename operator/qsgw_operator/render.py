"""Pure functions from a group, its tunnels and a placement to the objects
the operator applies: the gateway Deployment, its headless Service, its
PodDisruptionBudget and the ConfigMap holding each pod's gateway
configuration (the YAML `qsgw run --config` reads, `qsgw.daemon.config`).

No API calls here: every function returns plain dicts, ready for
server-side apply, so tests can read them and the handlers stay thin.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

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
METRICS_PORT = 9500
MULTUS_NETWORKS = "k8s.v1.cni.cncf.io/networks"
# the apiserver refuses a ConfigMap whose data exceeds 1 MiB; keep a margin
CONFIG_MAP_LIMIT = 1_000_000


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
    return f"{group}-gw-config"


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
        {"name": "config", "configMap": {"name": config_map_name(group)}},
        {"name": "secrets", "projected": {"sources": sources}},
        {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]


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


def config_map(
    group: str,
    namespace: str,
    uid: str,
    pods: Sequence[str],
    tunnels: Mapping[str, TunnelSpec],
    placement: Placement,
) -> Obj:
    """`<pod>.yaml` per pod, and `placement.json`: who carries and who
    stands by for every tunnel (read back by the operator after a restart,
    and by the gateways' state sync)."""
    per_pod: dict[str, list[str]] = {pod: [] for pod in pods}
    for tunnel, pod in placement.active.items():
        per_pod.setdefault(pod, []).append(tunnel)
    data = {
        f"{pod}.yaml": yaml.safe_dump(gateway_config(tunnels, names), sort_keys=False)
        for pod, names in sorted(per_pod.items())
    }
    record = {
        tunnel: {"active": pod, "backups": list(placement.backups.get(tunnel, ()))}
        for tunnel, pod in sorted(placement.active.items())
    }
    data[PLACEMENT_KEY] = json.dumps(record, separators=(",", ":"))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(config_map_name(group), namespace, group, uid),
        "data": data,
    }


def data_size(config_map: Obj) -> int:
    """Octets of a ConfigMap's data, as the apiserver counts them."""
    data: dict[str, str] = config_map["data"]
    return sum(len(key) + len(value.encode()) for key, value in data.items())


def read_placement(
    data: Mapping[str, str] | None,
) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """The previous placement from a ConfigMap's data; empty if absent."""
    try:
        record = json.loads((data or {}).get(PLACEMENT_KEY, "{}"))
    except ValueError:
        return {}, {}
    if not isinstance(record, dict):
        return {}, {}
    active = {
        t: str(e.get("active", "")) for t, e in record.items() if isinstance(e, dict)
    }
    backups = {
        t: tuple(str(b) for b in e.get("backups", ()))
        for t, e in record.items()
        if isinstance(e, dict)
    }
    return active, backups
