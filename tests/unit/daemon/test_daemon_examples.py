"""Every example configuration under examples/gateway/ is valid."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from qsgw.daemon.config import load_config

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "gateway"


@pytest.mark.parametrize(
    "example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name
)
def test_example_configuration_loads(tmp_path: Path, example: Path) -> None:
    config = tmp_path / example.name
    shutil.copy(example, config)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("site-b.psk", "ppk-1.key", "branch-7.psk", "edge.psk"):
        (secrets / name).write_text("0x" + "42" * 32 + "\n")
        os.chmod(secrets / name, 0o600)

    loaded = load_config(config)

    assert loaded.connections
