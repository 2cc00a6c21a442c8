"""The CEL rules of the CRDs, evaluated here with a CEL interpreter on the
objects the apiserver would see (defaults filled in), so a wrong rule fails
fast; the cluster tests check the apiserver's own verdicts."""

from __future__ import annotations

import copy
from typing import Any

import celpy
import pytest
from fakekube import example_objects
from pydantic import BaseModel

from qsgw_operator import crdgen
from qsgw_operator.models import TunnelGroupSpec, TunnelSpec

Obj = dict[str, Any]


def schema_of(kind: str) -> Obj:
    for doc in crdgen.crds().values():
        if doc["spec"]["names"]["kind"] == kind:
            schema: Obj = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(kind)


def failures(schema: Obj, value: Any) -> list[str]:
    """Messages of every rule that does not hold, anywhere in `value`."""
    found = []
    environment = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations", []):
        program = environment.program(environment.compile(rule["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(value)}):
            found.append(rule["message"])
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                found.extend(failures(sub, value[name]))
    if isinstance(value, list) and "items" in schema:
        for item in value:
            found.extend(failures(schema["items"], item))
    return found


def with_defaults(model: type[BaseModel], spec: Obj) -> Obj:
    dumped: Obj = model.model_validate(spec).model_dump(
        by_alias=True, exclude_none=True
    )
    return dumped


def example(kind: str, index: int = 0) -> Obj:
    found = [o for o in example_objects() if o["kind"] == kind]
    return copy.deepcopy(found[index])


def group_failures(**gateway: Any) -> list[str]:
    group = example("IPsecTunnelGroup")
    for key, value in gateway.items():
        if value is None:
            group["spec"]["gateway"].pop(key, None)
        else:
            group["spec"]["gateway"][key] = value
    group["spec"] = with_defaults(TunnelGroupSpec, group["spec"])
    return failures(schema_of("IPsecTunnelGroup"), group)


def tunnel_failures(index: int = 0, **spec: Any) -> list[str]:
    tunnel = example("IPsecTunnel", index)
    tunnel["spec"].update(spec)
    tunnel["spec"] = with_defaults(TunnelSpec, tunnel["spec"])
    return failures(schema_of("IPsecTunnel"), tunnel)


def test_example_group_passes_every_rule() -> None:
    assert group_failures() == []


def test_min_and_max_replicas_instead_of_replicas_pass() -> None:
    assert group_failures(replicas=None, minReplicas=2, maxReplicas=4) == []


@pytest.mark.parametrize(
    ("gateway", "message"),
    [
        ({"replicas": None, "minReplicas": 5, "maxReplicas": 2}, "must not exceed"),
        ({"minReplicas": 2, "maxReplicas": 4}, "not both"),
        ({"replicas": None, "minReplicas": 2}, "go together"),
        ({"replicas": None}, "set either gateway.replicas"),
        ({"replicas": 1}, "ha.backups must be smaller than gateway.replicas"),
        (
            {"replicas": None, "minReplicas": 1, "maxReplicas": 3},
            "than gateway.minReplicas",
        ),
    ],
)
def test_group_rule_refuses_with_its_message(gateway: Obj, message: str) -> None:
    assert any(message in failure for failure in group_failures(**gateway))


@pytest.mark.parametrize("index", [0, 1])
def test_example_tunnels_pass_every_rule(index: int) -> None:
    assert tunnel_failures(index) == []


def test_ipv6_peer_with_ipv4_outer_family_is_refused() -> None:
    (failure,) = tunnel_failures(peerAddress="2001:db8::1")
    assert "peerAddress must be an address of outerFamily" in failure


def test_ipv6_selector_in_an_ipv4_inner_family_is_refused() -> None:
    children = [
        {
            "name": "lan",
            "localTs": ["10.0.0.0/8"],
            "remoteTs": ["2001:db8::/32"],
            "espProposals": ["aes256gcm16"],
        }
    ]
    (failure,) = tunnel_failures(children=children)
    assert "traffic selector must be of innerFamily" in failure


def test_dual_inner_family_accepts_both_families() -> None:
    children = [
        {
            "name": "lan",
            "localTs": ["10.0.0.0/8", "fd00::/8"],
            "remoteTs": ["2001:db8::/32"],
            "espProposals": ["aes256gcm16"],
        }
    ]
    assert tunnel_failures(children=children, innerFamily="dual") == []
