"""One level-triggered pass over one IPsecTunnelGroup.

`reconcile(kube, namespace, name, now)` reads the group, its tunnels, its
pods and the previous placement (the placement ConfigMap), applies
the children with server-side apply, and writes the statuses that changed.
It holds no state between passes: after an operator restart, an apiserver
restart or a missed watch event, the next pass computes the same answer
from what is stored, so nothing is duplicated or lost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from qsgw.ike.proposals import ProposalError, parse_esp_proposal, parse_ike_proposal
from qsgw_operator import render
from qsgw_operator.models import (
    Condition,
    PodPlacement,
    TunnelGroupSpec,
    TunnelGroupStatus,
    TunnelSpec,
    TunnelStatus,
)
from qsgw_operator.placement import Placement, Pod, place

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
Role = Literal["active", "standby", "lost"]


class Kube(Protocol):
    """The API calls a pass makes (`qsgw_operator.kube.ApiKube`)."""

    def get_group(self, namespace: str, name: str) -> Obj | None: ...
    def list_groups(self, namespace: str) -> list[Obj]: ...
    def list_tunnels(self, namespace: str, labels: Mapping[str, str]) -> list[Obj]: ...
    def list_pods(self, namespace: str, labels: Mapping[str, str]) -> list[Obj]: ...
    def get_config_map(self, namespace: str, name: str) -> Obj | None: ...
    def delete_config_map(self, namespace: str, name: str) -> None: ...
    def ready_nodes(self) -> set[str]: ...
    def apply(self, obj: Obj) -> None: ...
    def patch_group_status(self, namespace: str, name: str, status: Obj) -> None: ...
    def patch_tunnel_statuses(
        self, namespace: str, statuses: Mapping[str, Obj]
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a pass did, for logs and tests."""

    replicas: int
    ready: int
    placed: int
    unplaced: int
    invalid: int
    lost_pods: tuple[str, ...]
    config_too_large: bool = False
    config_size: int = 0
    claimed: tuple[tuple[str, str], ...] = ()  # (tunnel, the older group)


def group_age(group: Obj) -> tuple[str, str]:
    """Sorts groups oldest first; the name breaks ties of the same second."""
    meta = group["metadata"]
    return str(meta.get("creationTimestamp") or ""), str(meta["name"])


def _match_labels(group: Obj) -> Mapping[str, str] | None:
    """A group's tunnel selector, or None for a group that selects nothing
    (being deleted, or a spec this pass cannot read)."""
    if group["metadata"].get("deletionTimestamp"):
        return None
    selector = (group.get("spec") or {}).get("tunnelSelector")
    labels = (selector or {}).get("matchLabels", {})
    return labels if isinstance(labels, dict) else None


def claimed_elsewhere(
    groups: Sequence[Obj], name: str, tunnel_objs: Sequence[Obj]
) -> dict[str, str]:
    """Tunnels of `tunnel_objs` that an older group of the namespace selects
    too, with that group: a tunnel is carried by the oldest group selecting
    it, never by two (two gateways would both bring it up)."""
    older = [
        (g["metadata"]["name"], labels)
        for g in sorted(groups, key=group_age)
        if (labels := _match_labels(g)) is not None
    ]
    claimed: dict[str, str] = {}
    for obj in tunnel_objs:
        tunnel_labels = obj["metadata"].get("labels") or {}
        for group, labels in older:
            if group == name:
                break
            if all(tunnel_labels.get(k) == v for k, v in labels.items()):
                claimed[obj["metadata"]["name"]] = group
                break
    return claimed


def proposal_problem(spec: TunnelSpec) -> str | None:
    """Checks the proposal strings the CRD pattern cannot judge."""
    try:
        for text in spec.ike.proposals:
            parse_ike_proposal(text)
        for child in spec.children:
            for text in child.esp_proposals:
                parse_esp_proposal(text)
    except ProposalError as error:
        return str(error)
    return None


def _tunnels(objs: Sequence[Obj]) -> tuple[dict[str, TunnelSpec], dict[str, str]]:
    """Valid tunnel specs by name, and a reason for each invalid one."""
    valid: dict[str, TunnelSpec] = {}
    invalid: dict[str, str] = {}
    for obj in objs:
        name = obj["metadata"]["name"]
        try:
            spec = TunnelSpec.model_validate(obj.get("spec", {}))
        except ValidationError as error:
            invalid[name] = f"invalid spec: {error.error_count()} problem(s)"
            continue
        problem = proposal_problem(spec)
        if problem:
            invalid[name] = problem
        else:
            valid[name] = spec
    return valid, invalid


def _pod_ready(pod: Obj, nodes: set[str]) -> bool:
    """Ready, not being deleted, and on a node that exists and is Ready (a
    deleted node's pods keep saying Ready until the pod GC removes them)."""
    if pod["metadata"].get("deletionTimestamp"):
        return False
    if pod.get("spec", {}).get("nodeName") not in nodes:
        return False
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def reconcile(kube: Kube, namespace: str, name: str, now: str) -> Outcome | None:
    """One pass; `now` is the RFC 3339 time used for condition transitions."""
    group = kube.get_group(namespace, name)
    if group is None or group["metadata"].get("deletionTimestamp"):
        return None
    uid = group["metadata"]["uid"]
    spec = TunnelGroupSpec.model_validate(group["spec"])

    tunnel_objs = kube.list_tunnels(namespace, spec.tunnel_selector.match_labels)
    claimed = claimed_elsewhere(kube.list_groups(namespace), name, tunnel_objs)
    if claimed:  # the older group writes their statuses
        tunnel_objs = [o for o in tunnel_objs if o["metadata"]["name"] not in claimed]
    tunnels, invalid = _tunnels(tunnel_objs)
    replicas = render.replicas_wanted(spec, len(tunnels))
    _apply_workload(kube, namespace, name, uid, spec, replicas, tunnels)

    pods = kube.list_pods(namespace, render.selector(name))
    nodes = kube.ready_nodes()
    ready = [p for p in pods if _pod_ready(p, nodes)]
    slots = [Pod(p["metadata"]["name"], p["spec"].get("nodeName", "")) for p in ready]
    stored = kube.get_config_map(namespace, render.placement_map_name(name))
    legacy = None
    if stored is None:  # written by an operator before sharding, if at all
        legacy = kube.get_config_map(namespace, render.config_map_name(name))
    data = (stored or legacy or {}).get("data")
    previous, previous_backups = render.read_placement(data)

    placement = place(
        tunnels,
        slots,
        capacity=spec.gateway.tunnels_per_pod,
        backups=spec.ha.backups,
        previous=previous,
        previous_backups=previous_backups,
    )
    # every pod gets its file, so a starting gateway finds one (empty until
    # the pod is Ready and carries tunnels)
    alive = [
        p["metadata"]["name"]
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
    ]
    files = render.pod_files(alive, tunnels, placement)
    size = _apply_config(kube, namespace, name, uid, files, placement, data)
    too_large = size > 0
    if too_large:
        logger.warning(
            "group %s/%s: pod configuration of %d octets exceeds %d shards",
            namespace,
            name,
            size,
            render.CONFIG_SHARDS,
        )
    elif legacy is not None:
        kube.delete_config_map(namespace, render.config_map_name(name))

    lost = tuple(sorted(set(previous.values()) - {slot.name for slot in slots}))
    if lost:
        logger.info(
            "group %s/%s: promoted backups of lost pods %s",
            namespace,
            name,
            ", ".join(lost),
        )
    if slots or invalid:  # with no pod up yet, there is nothing to report
        _write_tunnel_statuses(kube, namespace, name, tunnel_objs, placement, invalid)
    outcome = Outcome(
        replicas,
        len(ready),
        len(placement.active),
        len(placement.unplaced),
        len(invalid),
        lost,
        too_large,
        size,
        tuple(sorted(claimed.items())),
    )
    selected = len(tunnel_objs)
    status = _group_status(group, outcome, pods, nodes, placement, selected, now)
    if status != group.get("status"):
        kube.patch_group_status(namespace, name, status)
    logger.debug("group %s/%s: pass done, %s", namespace, name, outcome)
    return outcome


def _apply_workload(
    kube: Kube,
    namespace: str,
    name: str,
    uid: str,
    spec: TunnelGroupSpec,
    replicas: int,
    tunnels: Mapping[str, TunnelSpec],
) -> None:
    secrets = render.secret_refs(tunnels)
    kube.apply(render.headless_service(name, namespace, uid))
    kube.apply(render.disruption_budget(name, namespace, uid))
    kube.apply(render.deployment(name, namespace, uid, spec, replicas, secrets))


def _apply_config(
    kube: Kube,
    namespace: str,
    name: str,
    uid: str,
    files: Mapping[str, str],
    placement: Placement,
    stored: Mapping[str, str] | None,
) -> int:
    """Applies the shards that changed, deletes the shards no longer used,
    then applies the placement ConfigMap. Returns 0, or the octets of
    configuration if it does not fit (then nothing is applied)."""
    previous, digests = render.read_shards(stored)
    where = render.assign_shards(files, previous)
    shards = render.shard_data(files, where) if where is not None else []
    wanted = [render.digest(data) for data in shards]
    record = render.placement_map(name, namespace, uid, placement, where or {}, wanted)
    if where is None or render.data_size(record) > render.CONFIG_MAP_LIMIT:
        total = sum(render.entry_size(key, value) for key, value in files.items())
        return total + render.data_size(record)
    # highest first: a file moving to a lower shard still in use leaves
    # before it arrives; one moving higher is briefly in both, and the later
    # source (the new copy) wins in the projected volume
    for index in reversed(range(len(shards))):
        if index >= len(digests) or digests[index] != wanted[index]:
            kube.apply(render.config_shard(name, namespace, uid, index, shards[index]))
    # before the record that forgets them: a failed delete is retried
    for index in range(len(shards), len(digests)):
        kube.delete_config_map(namespace, render.shard_name(name, index))
    if (stored or {}) != record["data"]:
        kube.apply(record)
    return 0


def _write_tunnel_statuses(
    kube: Kube,
    namespace: str,
    group: str,
    objs: Sequence[Obj],
    placement: Placement,
    invalid: Mapping[str, str],
) -> None:
    changed = {}
    for obj in objs:
        tunnel = obj["metadata"]["name"]
        status = _tunnel_status(group, tunnel, placement, invalid)
        wanted = status.model_dump(by_alias=True)
        if obj.get("status") != wanted:
            changed[tunnel] = wanted
    if changed:
        kube.patch_tunnel_statuses(namespace, changed)


def _tunnel_status(
    group: str, tunnel: str, placement: Placement, invalid: Mapping[str, str]
) -> TunnelStatus:
    if tunnel in invalid:
        return TunnelStatus(group=group, reason=invalid[tunnel][:200])
    if tunnel not in placement.active:
        return TunnelStatus(group=group, reason="NoPodWithRoom")
    return TunnelStatus(
        group=group,
        active_pod=placement.active[tunnel],
        backup_pods=list(placement.backups.get(tunnel, ())),
        ready=True,
        reason="Placed",
    )


# --- group status ----------------------------------------------------------


def _group_status(
    group: Obj,
    outcome: Outcome,
    pods: Sequence[Obj],
    nodes: set[str],
    placement: Placement,
    tunnels: int,
    now: str,
) -> Obj:
    old = {c.get("type"): c for c in (group.get("status") or {}).get("conditions", [])}
    conditions = [
        _condition(old, kind, status, reason, message, now, group)
        for kind, status, reason, message in _judge(outcome, tunnels)
    ]
    status = TunnelGroupStatus(
        observed_generation=group["metadata"].get("generation", 0),
        conditions=conditions,
        replicas=outcome.replicas,
        ready_replicas=outcome.ready,
        tunnels=tunnels,
        placed_tunnels=outcome.placed,
        placement=_summary(placement),
        pods=_pod_rows(pods, nodes, placement),
    )
    return status.model_dump(by_alias=True)


def _judge(outcome: Outcome, tunnels: int) -> list[tuple[str, str, str, str]]:
    """(type, status, reason, message) for Ready, Progressing, Degraded."""
    scaling = outcome.ready < outcome.replicas
    if scaling:
        ready = (
            "False",
            "PodsNotReady",
            f"{outcome.ready} of {outcome.replicas} pods ready",
        )
    elif outcome.unplaced:
        ready = (
            "False",
            "TunnelsUnplaced",
            f"{outcome.unplaced} tunnel(s) have no pod with room",
        )
    else:
        ready = ("True", "AllTunnelsPlaced", f"{outcome.placed} of {tunnels} placed")
    progressing = (
        (
            "True",
            "ScalingPods",
            f"waiting for {outcome.replicas - outcome.ready} pod(s)",
        )
        if scaling
        else ("False", "Stable", "")
    )
    return [
        ("Ready", *ready),
        ("Progressing", *progressing),
        ("Degraded", *_degraded(outcome, scaling)),
    ]


def _degraded(outcome: Outcome, scaling: bool) -> tuple[str, str, str]:
    if outcome.config_too_large:
        return (
            "True",
            "ConfigTooLarge",
            f"the pods' configuration takes {outcome.config_size} octets, over "
            f"{render.CONFIG_SHARDS} ConfigMaps of {render.CONFIG_MAP_LIMIT} "
            "(or one pod's file over one); split the tunnels over more groups",
        )
    if outcome.invalid:
        return (
            "True",
            "InvalidTunnels",
            f"{outcome.invalid} tunnel(s) refused; see their status.reason",
        )
    if outcome.claimed:
        return (
            "True",
            "OverlappingSelector",
            f"{len(outcome.claimed)} selected tunnel(s) are carried by older "
            f"group(s) {', '.join(sorted({group for _, group in outcome.claimed}))}, "
            "which select them too; make the tunnel selectors disjoint",
        )
    if outcome.unplaced and not scaling:
        return (
            "True",
            "InsufficientCapacity",
            "raise gateway.tunnelsPerPod or the number of pods",
        )
    if outcome.lost_pods:
        return (
            "True",
            "PodsLost",
            "tunnels of " + ", ".join(outcome.lost_pods) + " moved to backups",
        )
    return ("False", "AsExpected", "")


def _condition(
    old: Mapping[str, Obj],
    kind: str,
    status: str,
    reason: str,
    message: str,
    now: str,
    group: Obj,
) -> Condition:
    previous = old.get(kind, {})
    unchanged = previous.get("status") == status
    return Condition(
        type=kind,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        message=message,
        last_transition_time=previous.get("lastTransitionTime", now)
        if unchanged
        else now,
        observed_generation=group["metadata"].get("generation", 0),
    )


def _summary(placement: Placement) -> str:
    if not placement.loads:
        return "no ready pods"
    loads = placement.loads.values()
    return (
        f"{len(placement.active)} on {len(placement.loads)} pods, "
        f"load {min(loads)}..{max(loads)} (bounds {placement.lower}..{placement.upper})"
    )


def _pod_rows(
    pods: Sequence[Obj], nodes: set[str], placement: Placement
) -> list[PodPlacement]:
    standby: dict[str, int] = {}
    for backups in placement.backups.values():
        for backup in backups:
            standby[backup] = standby.get(backup, 0) + 1
    rows = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        name = pod["metadata"]["name"]
        ready = _pod_ready(pod, nodes)
        active = placement.loads.get(name, 0)
        role: Role = "lost" if not ready else ("active" if active else "standby")
        rows.append(
            PodPlacement(
                name=name,
                node=pod["spec"].get("nodeName", ""),
                ready=ready,
                role=role,
                active_tunnels=active,
                backup_tunnels=standby.get(name, 0),
            )
        )
    return rows
