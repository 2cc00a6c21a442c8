"""The API of the operator: pydantic models that ARE the CRD schemas.

`qsgw_operator.crdgen` turns these models into the OpenAPI v3 schemas of
`crds/*.yaml`; cross-field rules travel with them as CEL
(`x-kubernetes-validations`), so the API server refuses a bad resource at
`kubectl apply` with the rule's message. Field names are the camelCase
names users write; Python code uses the snake_case attributes.

Secrets are only ever referenced (`SecretKeyRef`): no model has a field
that could carry key material.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "ipsec.qsgw.io"
VERSION = "v1alpha1"

# Names the API server accepts (RFC 1123 labels/subdomains).
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# swanctl-style proposal: algorithm tokens joined by '-', e.g.
# aes256gcm16-prfsha384-x25519-ke1_mlkem768
PROPOSAL = r"^[a-z0-9_]+(-[a-z0-9_]+)*$"

ShortText = Annotated[str, Field(min_length=1, max_length=253)]
Proposal = Annotated[str, Field(min_length=3, max_length=200, pattern=PROPOSAL)]
# an IPv4 or IPv6 address or prefix; family checks are CEL rules below
TrafficSelector = Annotated[str, Field(min_length=2, max_length=49)]
IpAddress = Annotated[str, Field(min_length=2, max_length=45)]


# the API server fills an omitted object in, so its own defaults apply
DEFAULT_EMPTY: dict[str, Any] = {"default": {}}


def rule(expression: str, message: str) -> dict[str, str]:
    """One CEL validation rule as the API server expects it."""
    return {"rule": expression, "message": message}


def cel(*rules: dict[str, str]) -> ConfigDict:
    """A model config that carries CEL rules into the generated schema."""
    extra: dict[str, Any] = {"x-kubernetes-validations": list(rules)}
    return ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=extra,
    )


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid"
    )


# --- shared pieces ---------------------------------------------------------


class SecretKeyRef(ApiModel):
    """A key in a Secret of the same namespace; the value is never copied."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_LABEL)
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


class LabelSelector(ApiModel):
    match_labels: dict[str, str] = Field(default_factory=dict)


class Condition(ApiModel):
    type: str = Field(max_length=64)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=128)
    message: str = Field(default="", max_length=4096)
    last_transition_time: str = Field(max_length=64)
    observed_generation: int = 0


# --- IPsecTunnelGroup ------------------------------------------------------


class ExtendedResource(ApiModel):
    """A device-plugin resource requested with requests = limits."""

    resource_name: str = Field(
        min_length=3, max_length=253, pattern=r"^[a-z0-9.-]+/[a-zA-Z0-9_.-]+$"
    )
    count: int = Field(default=1, ge=1, le=64)


class NetworkAttachment(ApiModel):
    """A Multus NetworkAttachmentDefinition the gateway pods join."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_LABEL)
    namespace: str | None = Field(default=None, max_length=63, pattern=DNS_LABEL)
    interface: str | None = Field(default=None, max_length=15)


class Toleration(ApiModel):
    key: str | None = Field(default=None, max_length=317)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class GatewayResources(ApiModel):
    cpu: str = Field(default="2", max_length=16, pattern=r"^[0-9]+(\.[0-9]+|m)?$")
    memory: str = Field(
        default="1Gi", max_length=16, pattern=r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$"
    )


class GatewayTemplate(ApiModel):
    """How the gateway pods look and how many there are."""

    model_config = cel(
        rule(
            "has(self.replicas) != (has(self.minReplicas) || has(self.maxReplicas))",
            "set either gateway.replicas, or gateway.minReplicas and "
            "gateway.maxReplicas, not both",
        ),
        rule(
            "has(self.minReplicas) == has(self.maxReplicas)",
            "gateway.minReplicas and gateway.maxReplicas go together",
        ),
        rule(
            "!has(self.minReplicas) || !has(self.maxReplicas) || "
            "self.minReplicas <= self.maxReplicas",
            "gateway.minReplicas must not exceed gateway.maxReplicas",
        ),
    )

    replicas: int | None = Field(default=None, ge=1, le=1000)
    min_replicas: int | None = Field(default=None, ge=1, le=1000)
    max_replicas: int | None = Field(default=None, ge=1, le=1000)
    tunnels_per_pod: int = Field(default=1000, ge=1, le=64000)
    image: str = Field(default="ghcr.io/qsgw/gateway:0.1.0", max_length=512)
    sriov: ExtendedResource | None = None
    networks: list[NetworkAttachment] = Field(default_factory=list, max_length=8)
    qat: ExtendedResource | None = None
    resources: GatewayResources = Field(
        default_factory=GatewayResources, json_schema_extra=DEFAULT_EMPTY
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    topology_spread_keys: list[str] = Field(
        default_factory=lambda: ["topology.kubernetes.io/zone"], max_length=4
    )


class HighAvailability(ApiModel):
    """N:M failover: every tunnel has `backups` standby pods on other nodes."""

    backups: int = Field(default=1, ge=0, le=3)


class TunnelGroupSpec(ApiModel):
    model_config = cel(
        rule(
            "!has(self.gateway.replicas) || self.ha.backups < self.gateway.replicas",
            "ha.backups must be smaller than gateway.replicas (a backup lives "
            "on another pod)",
        ),
        rule(
            "!has(self.gateway.minReplicas) || "
            "self.ha.backups < self.gateway.minReplicas",
            "ha.backups must be smaller than gateway.minReplicas",
        ),
    )

    gateway: GatewayTemplate
    ha: HighAvailability = Field(
        default_factory=HighAvailability, json_schema_extra=DEFAULT_EMPTY
    )
    public_addresses: list[IpAddress] = Field(min_length=1, max_length=8)
    tunnel_selector: LabelSelector


class PodPlacement(ApiModel):
    name: str = Field(max_length=253)
    node: str = Field(default="", max_length=253)
    ready: bool = False
    role: Literal["active", "standby", "lost"] = "active"
    active_tunnels: int = 0
    backup_tunnels: int = 0


class TunnelGroupStatus(ApiModel):
    observed_generation: int = 0
    conditions: list[Condition] = Field(default_factory=list)
    replicas: int = 0
    ready_replicas: int = 0
    tunnels: int = 0
    placed_tunnels: int = 0
    placement: str = Field(default="", max_length=1024)
    pods: list[PodPlacement] = Field(default_factory=list)


class IPsecTunnelGroup(ApiModel):
    spec: TunnelGroupSpec
    status: TunnelGroupStatus | None = None


# --- IPsecTunnel -----------------------------------------------------------


FAMILY_OF_TS = (
    "self.innerFamily == 'dual' || (self.innerFamily == 'IPv6') == ts.contains(':')"
)


class IkeSettings(ApiModel):
    proposals: list[Proposal] = Field(min_length=1, max_length=8)
    rekey_time: int = Field(default=14400, ge=0, le=604800)


class ChildSettings(ApiModel):
    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    local_ts: list[TrafficSelector] = Field(min_length=1, max_length=16)
    remote_ts: list[TrafficSelector] = Field(min_length=1, max_length=16)
    esp_proposals: list[Proposal] = Field(min_length=1, max_length=8)
    rekey_time: int = Field(default=3600, ge=0, le=604800)


class PpkSettings(ApiModel):
    """RFC 8784 post-quantum preshared key, by reference."""

    id: str = Field(min_length=1, max_length=128)
    secret_ref: SecretKeyRef
    required: bool = True


class Authentication(ApiModel):
    psk_secret_ref: SecretKeyRef


class TunnelSpec(ApiModel):
    model_config = cel(
        rule(
            "(self.outerFamily == 'IPv6') == self.peerAddress.contains(':')",
            "peerAddress must be an address of outerFamily",
        ),
        rule(
            "self.children.all(c, c.localTs.all(ts, " + FAMILY_OF_TS + ") && "
            "c.remoteTs.all(ts, " + FAMILY_OF_TS + "))",
            "every traffic selector must be of innerFamily (or set innerFamily "
            "to dual)",
        ),
    )

    peer_address: IpAddress
    local_id: ShortText
    remote_id: ShortText
    ike: IkeSettings
    children: list[ChildSettings] = Field(min_length=1, max_length=8)
    authentication: Authentication
    ppk: PpkSettings | None = None
    inner_family: Literal["IPv4", "IPv6", "dual"] = "IPv4"
    outer_family: Literal["IPv4", "IPv6"] = "IPv4"


class TunnelStatus(ApiModel):
    group: str = ""
    active_pod: str = ""
    backup_pods: list[str] = Field(default_factory=list)
    ready: bool = False
    reason: str = ""


class IPsecTunnel(ApiModel):
    spec: TunnelSpec
    status: TunnelStatus | None = None
