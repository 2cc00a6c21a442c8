"""The CRDs in crds/ are generated from the models and must not drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from qsgw_operator import crdgen

ROOT = Path(__file__).resolve().parents[3]


def walk(node: Any) -> list[dict[str, Any]]:
    """Every schema object inside a CRD schema."""
    if isinstance(node, list):
        return [found for item in node for found in walk(item)]
    if not isinstance(node, dict):
        return []
    found = [node]
    for key, value in node.items():
        if key != "x-kubernetes-validations":
            found.extend(walk(value))
    return found


def test_committed_crds_match_the_models() -> None:
    stale = crdgen.stale_files(ROOT)
    assert stale == [], "run: python -m qsgw_operator.crdgen"


def test_check_mode_fails_on_a_stale_file(tmp_path: Path) -> None:
    crdgen.write(tmp_path)
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 0
    target = tmp_path / "crds" / "ipsec.qsgw.io_ipsectunnels.yaml"
    target.write_text(target.read_text().replace("peerAddress", "peer"))
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 1


def test_chart_crds_are_identical_to_top_level_crds() -> None:
    top = sorted((ROOT / "crds").glob("*.yaml"))
    chart = ROOT / "charts" / "qsgw-operator" / "crds"
    assert [p.name for p in top] == sorted(p.name for p in chart.glob("*.yaml"))
    for path in top:
        assert (chart / path.name).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("name", sorted(crdgen.crds()))
def test_schema_is_structural(name: str) -> None:
    doc = crdgen.crds()[name]
    schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for node in walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node
        if "properties" in node:
            assert node.get("type") == "object"
            assert "additionalProperties" not in node


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ipsec.qsgw.io_ipsectunnelgroups.yaml", "must not exceed gateway.maxReplicas"),
        ("ipsec.qsgw.io_ipsectunnelgroups.yaml", "ha.backups must be smaller"),
        ("ipsec.qsgw.io_ipsectunnels.yaml", "peerAddress must be an address of"),
        ("ipsec.qsgw.io_ipsectunnels.yaml", "traffic selector must be of innerFamily"),
    ],
)
def test_cross_field_rules_travel_as_cel(name: str, message: str) -> None:
    text = (ROOT / "crds" / name).read_text()
    rules = [
        rule
        for node in walk(yaml.safe_load(text))
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert any(message in rule["message"] for rule in rules)


def test_no_field_can_hold_key_material() -> None:
    for doc in crdgen.crds().values():
        schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        names = {
            key.lower() for node in walk(schema) for key in node.get("properties", {})
        }
        assert not {"psk", "ppk_value", "secret", "key_material", "privatekey"} & names


def test_status_subresource_and_printer_columns() -> None:
    for doc in crdgen.crds().values():
        version = doc["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        columns = {c["name"] for c in version["additionalPrinterColumns"]}
        assert "Age" in columns
    tunnel = crdgen.crds()["ipsec.qsgw.io_ipsectunnels.yaml"]
    paths = [
        c["jsonPath"] for c in tunnel["spec"]["versions"][0]["additionalPrinterColumns"]
    ]
    assert ".status.activePod" in paths
