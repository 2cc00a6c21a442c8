"""Loading of the crypto test vectors kept under tests/vectors/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def load(file_name: str, key: str = "vectors") -> list[Any]:
    """One pytest case per vector in `file_name`, named by the vector."""
    with (VECTORS / file_name).open() as vector_file:
        document = json.load(vector_file)
    return [pytest.param(vector, id=vector["name"]) for vector in document[key]]


def octets(vector: dict[str, Any], field: str) -> bytes:
    return bytes.fromhex(vector[field])
