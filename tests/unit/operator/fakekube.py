"""An in-memory stand-in for the Kubernetes API: the operator's one
external boundary, faked for unit tests only (cluster tests use a real
apiserver)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
ROOT = Path(__file__).resolve().parents[3]


def example_objects() -> list[Obj]:
    text = (ROOT / "examples" / "site-to-site.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


class FakeKube:
    def __init__(self, namespace: str = "vpn") -> None:
        self.namespace = namespace
        self.groups: dict[str, Obj] = {}
        self.tunnels: dict[str, Obj] = {}
        self.pods: dict[str, Obj] = {}
        self.applied: dict[tuple[str, str], Obj] = {}
        self.nodes: dict[str, bool] = {}
        self.status_writes = 0
        self.apply_calls = 0
        self.deleted: list[tuple[str, str]] = []
        self.created = 0

    # --- setting the scene -------------------------------------------------

    def add(self, obj: Obj) -> None:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("generation", 1)
        # one second apart, in the order added: the apiserver's precision
        self.created += 1
        minutes, seconds = divmod(self.created, 60)
        meta.setdefault(
            "creationTimestamp", f"2026-12-03T17:{minutes:02d}:{seconds:02d}Z"
        )
        kind = obj["kind"]
        if kind == "IPsecTunnelGroup":
            self.groups[meta["name"]] = obj
        elif kind == "IPsecTunnel":
            self.tunnels[meta["name"]] = obj

    def add_pod(self, name: str, group: str, node: str, ready: bool = True) -> None:
        self.nodes.setdefault(node, True)
        self.pods[name] = {
            "metadata": {
                "name": name,
                "labels": {
                    "ipsec.qsgw.io/group": group,
                    "app.kubernetes.io/name": "qsgw-gateway",
                },
            },
            "spec": {"nodeName": node},
            "status": {
                "conditions": [{"type": "Ready", "status": str(ready)}],
            },
        }

    # --- the Kube protocol -------------------------------------------------

    def get_group(self, namespace: str, name: str) -> Obj | None:
        found = self.groups.get(name)
        return copy.deepcopy(found) if found else None

    def list_groups(self, namespace: str) -> list[Obj]:
        return [copy.deepcopy(g) for g in self.groups.values()]

    def list_tunnels(self, namespace: str, labels: Mapping[str, str]) -> list[Obj]:
        return [
            copy.deepcopy(t)
            for t in self.tunnels.values()
            if all(
                t["metadata"].get("labels", {}).get(k) == v for k, v in labels.items()
            )
        ]

    def list_pods(self, namespace: str, labels: Mapping[str, str]) -> list[Obj]:
        return [
            copy.deepcopy(p)
            for p in self.pods.values()
            if all(p["metadata"]["labels"].get(k) == v for k, v in labels.items())
        ]

    def get_config_map(self, namespace: str, name: str) -> Obj | None:
        found = self.applied.get(("ConfigMap", name))
        return copy.deepcopy(found) if found else None

    def delete_config_map(self, namespace: str, name: str) -> None:
        self.deleted.append(("ConfigMap", name))
        self.applied.pop(("ConfigMap", name), None)

    def ready_nodes(self) -> set[str]:
        return {name for name, ready in self.nodes.items() if ready}

    def apply(self, obj: Obj) -> None:
        self.apply_calls += 1
        self.applied[(obj["kind"], obj["metadata"]["name"])] = copy.deepcopy(obj)

    def patch_group_status(self, namespace: str, name: str, status: Obj) -> None:
        self.status_writes += 1
        self.groups[name]["status"] = copy.deepcopy(status)

    def patch_tunnel_statuses(
        self, namespace: str, statuses: Mapping[str, Obj]
    ) -> None:
        for name, status in statuses.items():
            self.status_writes += 1
            self.tunnels[name]["status"] = copy.deepcopy(status)
