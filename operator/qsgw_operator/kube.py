"""The API calls of a reconcile pass, over the official Python client.

Children are written with server-side apply (one field manager, conflicts
forced: the operator owns what it renders), statuses with merge patches on
the status subresource. Every call carries a timeout, so a hung apiserver
connection fails the pass (it is retried) instead of blocking a worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client, config

from qsgw_operator.models import GROUP, VERSION

Obj = dict[str, Any]

FIELD_MANAGER = "qsgw-operator"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


def load_configuration() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    configuration = client.Configuration.get_default_copy()
    # enough connections for every worker and every parallel status patch
    configuration.connection_pool_maxsize = 64
    return client.ApiClient(configuration)


def label_selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


class ApiKube:
    def __init__(
        self, api: client.ApiClient, timeout: float = 30.0, parallel: int = 8
    ) -> None:
        self.api = api
        self.pool = ThreadPoolExecutor(parallel, thread_name_prefix="status")
        self.timeout = timeout
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.policy = client.PolicyV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def _plain(self, model: Any) -> Obj:
        plain: Obj = self.api.sanitize_for_serialization(model)  # type: ignore[no-untyped-call]
        return plain

    def _missing(self, error: client.ApiException) -> bool:
        return bool(error.status == 404)

    def get_group(self, namespace: str, name: str) -> Obj | None:
        try:
            group: Any = self.custom.get_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                "ipsectunnelgroups",
                name,
                _request_timeout=self.timeout,
            )
        except client.ApiException as error:
            if self._missing(error):
                return None
            raise
        return dict(group)

    def list_groups(self, namespace: str) -> list[Obj]:
        listing: Any = self.custom.list_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "ipsectunnelgroups",
            _request_timeout=self.timeout,
        )
        items: list[Obj] = listing["items"]
        return items

    def list_tunnels(self, namespace: str, labels: Mapping[str, str]) -> list[Obj]:
        listing: Any = self.custom.list_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "ipsectunnels",
            label_selector=label_selector(labels),
            _request_timeout=self.timeout,
        )
        items: list[Obj] = listing["items"]
        return items

    def list_pods(self, namespace: str, labels: Mapping[str, str]) -> list[Obj]:
        listing = self.core.list_namespaced_pod(
            namespace,
            label_selector=label_selector(labels),
            _request_timeout=self.timeout,
        )
        return [self._plain(pod) for pod in listing.items]

    def get_config_map(self, namespace: str, name: str) -> Obj | None:
        try:
            found = self.core.read_namespaced_config_map(
                name, namespace, _request_timeout=self.timeout
            )
        except client.ApiException as error:
            if self._missing(error):
                return None
            raise
        return self._plain(found)

    def delete_config_map(self, namespace: str, name: str) -> None:
        """Deletes a ConfigMap; one already gone is fine."""
        try:
            self.core.delete_namespaced_config_map(
                name, namespace, _request_timeout=self.timeout
            )
        except client.ApiException as error:
            if not self._missing(error):
                raise

    def ready_nodes(self) -> set[str]:
        """Names of the nodes that exist and report Ready."""
        listing = self.core.list_node(_request_timeout=self.timeout)
        ready = set()
        for node in (self._plain(item) for item in listing.items):
            conditions = node.get("status", {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                ready.add(str(node["metadata"]["name"]))
        return ready

    def apply(self, obj: Obj) -> None:
        """Server-side apply of one object of a kind the operator renders."""
        kind = obj["kind"]
        meta = obj["metadata"]
        call = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "Service": self.core.patch_namespaced_service,
            "ConfigMap": self.core.patch_namespaced_config_map,
            "PodDisruptionBudget": self.policy.patch_namespaced_pod_disruption_budget,
        }[kind]
        call(
            meta["name"],
            meta["namespace"],
            obj,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
            _request_timeout=self.timeout,
        )

    def patch_group_status(self, namespace: str, name: str, status: Obj) -> None:
        self._patch_status("ipsectunnelgroups", namespace, name, status)

    def patch_tunnel_statuses(
        self, namespace: str, statuses: Mapping[str, Obj]
    ) -> None:
        """Many small patches, several in flight: one per tunnel that changed."""
        futures = [
            self.pool.submit(
                self._patch_status, "ipsectunnels", namespace, name, status
            )
            for name, status in statuses.items()
        ]
        for future in futures:
            future.result()

    def _patch_status(
        self, plural: str, namespace: str, name: str, status: Obj
    ) -> None:
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                {"status": status},
                _content_type=MERGE,
                _request_timeout=self.timeout,
            )
        except client.ApiException as error:
            if not self._missing(error):  # deleted meanwhile: nothing to say
                raise
