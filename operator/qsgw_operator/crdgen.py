"""Writes crds/*.yaml from the pydantic models: one source of truth.

    python -m qsgw_operator.crdgen            # write crds/ (and the chart's)
    python -m qsgw_operator.crdgen --check    # exit 1 if any file is stale

pydantic emits JSON Schema; the API server wants a *structural* OpenAPI v3
schema: no `$ref`, no `anyOf` with null, no titles. This module inlines and
prunes, and keeps the CEL rules the models carry.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from qsgw_operator import models

Schema = dict[str, Any]

KEEP = {
    "type",
    "properties",
    "required",
    "items",
    "description",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "enum",
    "additionalProperties",
    "x-kubernetes-validations",
}

GROUP_COLUMNS = [
    ("Replicas", "integer", ".status.replicas", "pods wanted"),
    ("Ready", "integer", ".status.readyReplicas", "pods ready"),
    ("Tunnels", "integer", ".status.tunnels", "tunnels selected"),
    ("Placed", "integer", ".status.placedTunnels", "tunnels on a pod"),
    ("Status", "string", '.status.conditions[?(@.type=="Ready")].reason', ""),
    ("Placement", "string", ".status.placement", "load summary"),
]
TUNNEL_COLUMNS = [
    ("Peer", "string", ".spec.peerAddress", "remote gateway"),
    ("Group", "string", ".status.group", "IPsecTunnelGroup"),
    ("Pod", "string", ".status.activePod", "pod carrying the tunnel"),
    ("Backups", "string", ".status.backupPods", "standby pods"),
    ("Reason", "string", ".status.reason", ""),
]


def _inline(node: Any, defs: Schema) -> Any:
    """Resolve `$ref`s and drop what a structural schema may not hold."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _inline(merged, defs)
    if "anyOf" in node:
        return _inline(_without_null(node), defs)
    out: Schema = {}
    for key, value in node.items():
        if key == "x-kubernetes-validations":
            out[key] = value
        elif key == "properties":
            out[key] = {name: _inline(sub, defs) for name, sub in value.items()}
        elif key in KEEP:
            out[key] = _inline(value, defs)
    if "const" in node:
        out["enum"] = [node["const"]]
    if out.get("default", 0) is None:
        del out["default"]
    # structural schemas prune unknown fields; `false` is not allowed
    if out.get("additionalProperties") is False:
        del out["additionalProperties"]
    return out


def _without_null(node: Schema) -> Schema:
    """`X | None` becomes an optional X (the field is simply left out)."""
    options = [o for o in node["anyOf"] if o.get("type") != "null"]
    if len(options) != 1:
        raise ValueError(f"cannot express a union in a CRD: {node}")
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    return {**options[0], **rest}


def openapi_schema(model: type[BaseModel]) -> Schema:
    """The structural schema of one model, with its CEL rules."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: Schema = _inline(raw, defs)
    return schema


def _columns(columns: list[tuple[str, str, str, str]]) -> list[Schema]:
    out = [
        {"name": name, "type": kind, "jsonPath": path, "description": text}
        for name, kind, path, text in columns
    ]
    out.append(
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    )
    return out


def _crd(
    kind: str,
    plural: str,
    short: str,
    model: type[BaseModel],
    columns: list[tuple[str, str, str, str]],
) -> Schema:
    body = openapi_schema(model)
    body["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        **body["properties"],
    }
    version = {
        "name": models.VERSION,
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
        "additionalPrinterColumns": _columns(columns),
        "schema": {"openAPIV3Schema": body},
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{models.GROUP}"},
        "spec": {
            "group": models.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["qsgw"],
            },
            "versions": [version],
        },
    }


def crds() -> dict[str, Schema]:
    """File name -> CRD document, for every kind the operator serves."""
    group = _crd(
        "IPsecTunnelGroup",
        "ipsectunnelgroups",
        "itg",
        models.IPsecTunnelGroup,
        GROUP_COLUMNS,
    )
    tunnel = _crd(
        "IPsecTunnel", "ipsectunnels", "itun", models.IPsecTunnel, TUNNEL_COLUMNS
    )
    return {
        "ipsec.qsgw.io_ipsectunnelgroups.yaml": group,
        "ipsec.qsgw.io_ipsectunnels.yaml": tunnel,
    }


HEADER = "# Generated by `python -m qsgw_operator.crdgen` from qsgw_operator.models.\n"


def render(doc: Schema) -> str:
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=88)


def repository_root() -> Path:
    return Path(__file__).resolve().parents[2]


def targets(root: Path) -> list[Path]:
    """Both places the CRDs live: top-level crds/ and the chart's crds/."""
    return [root / "crds", root / "charts" / "qsgw-operator" / "crds"]


def stale_files(root: Path) -> list[Path]:
    stale = []
    for folder in targets(root):
        for name, doc in crds().items():
            path = folder / name
            if not path.exists() or path.read_text() != render(doc):
                stale.append(path)
    return stale


def write(root: Path) -> None:
    for folder in targets(root):
        folder.mkdir(parents=True, exist_ok=True)
        for name, doc in crds().items():
            (folder / name).write_text(render(doc))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if stale")
    parser.add_argument("--root", type=Path, default=repository_root())
    args = parser.parse_args(argv)
    if not args.check:
        write(args.root)
        return 0
    stale = stale_files(args.root)
    for path in stale:
        print(f"stale: {path} (run python -m qsgw_operator.crdgen)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
